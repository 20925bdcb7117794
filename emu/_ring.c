/* emu/_ring.c: split-virtqueue data path (placeholder until the engine lands). */
#include "_ring.h"
int emu_ring_abi_version(void) { return 0; }
