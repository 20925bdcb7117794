/* emu/_ring.h: the C data path's public interface (split virtqueues). */
#ifndef EMU_RING_H
#define EMU_RING_H
#include <stdint.h>
/* CDEF-BEGIN */
int emu_ring_abi_version(void);
/* CDEF-END */
#endif
