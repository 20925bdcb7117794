/* emu/_ring_pingpong.h: one ping-pong round trip in C, for the guest's
 * ``pingpong`` latency app (engine "c", emu.guest.apps.PINGPONG_ENGINES).
 *
 * The Python engine drives the ring with two cffi calls and a poll loop per
 * round trip (1-2 us of its own); this one posts the frame, waits for the
 * echo and checks it in one call with the GIL released, timing inside C.
 * The text between the CDEF markers is fed to cffi verbatim.
 */
#ifndef EMU_RING_PINGPONG_H
#define EMU_RING_PINGPONG_H
#include <stdint.h>
/* CDEF-BEGIN */
/* ``frame`` (``len`` bytes, already stamped ``seq``) out on ``tx``; wait
 * for an echo stamped ``seq`` on ``rx``, busy-polling its used ring, or, if
 * irq_fd >= 0, re-arming rx's interrupt and sleeping on irq_fd (poll(2),
 * never longer than the deadline).  ``sink`` checks stamps (and the
 * pattern with EMU_CF_VERIFY in flags); its next_seq is set to seq here.
 * Returns the round trip in ns (> 0), 0 if no echo of seq came back
 * within timeout_ns (late, stale echoes are consumed and ignored), or
 * -EMU_E_* if either ring is broken. */
int64_t emu_drv_pingpong(struct emu_drvq *tx, struct emu_drvq *rx, const uint8_t *frame,
                         uint32_t len, uint64_t seq, struct emu_sink *sink, uint32_t flags,
                         int irq_fd, uint64_t timeout_ns);
/* CDEF-END */
#endif
