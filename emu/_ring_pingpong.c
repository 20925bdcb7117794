/* emu/_ring_pingpong.c: one ping-pong round trip in C (see _ring_pingpong.h).
 * Built in the same unit as _ring.c, after it; uses only its public calls. */
#include "_ring_pingpong.h"

/* spins between two clock reads while polling: a clock read costs ~20 ns,
 * a used-index load on a line the peer writes ~100; 64 keeps the deadline
 * check off the critical path without overshooting it by more than ~10 us */
#define PP_SPINS_PER_CLOCK 64

static inline void pp_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Sleep on the interrupt eventfd until it fires or `deadline` passes;
 * consume its counter (the fd is the guest's own, read only here). */
static void pp_wait_irq(int irq_fd, uint64_t deadline)
{
    uint64_t now = emu_now_ns();
    if (now >= deadline)
        return;
    uint64_t ms = (deadline - now + 999999u) / 1000000u;
    struct pollfd p = {.fd = irq_fd, .events = POLLIN};
    if (poll(&p, 1, ms > 1000 ? 1000 : (int)ms) > 0 && (p.revents & POLLIN)) {
        uint64_t v;
        if (read(irq_fd, &v, sizeof v) < 0) {
            /* EAGAIN: another reader took it; the ring is re-checked anyway */
        }
    }
}

int64_t emu_drv_pingpong(struct emu_drvq *tx, struct emu_drvq *rx, const uint8_t *frame,
                         uint32_t len, uint64_t seq, struct emu_sink *sink, uint32_t flags,
                         int irq_fd, uint64_t timeout_ns)
{
    struct emu_burst res;
    sink->next_seq = seq;
    uint64_t t0 = emu_now_ns();
    uint64_t deadline = t0 + timeout_ns;
    int rc = emu_drv_tx_post(tx, frame, &len, 1, &res);
    if (tx->broken)
        return -(int64_t)(rc ? rc : EMU_E_BROKEN);
    for (;;) {
        uint32_t spins = 0;
        while (!emu_drv_has_used(rx)) {
            if (irq_fd >= 0) {
                /* re-arm (used_event = our position), re-check, then sleep */
                emu_drv_irq_enable(rx, 1);
                if (emu_drv_has_used(rx))
                    break;
                pp_wait_irq(irq_fd, deadline);
                if (emu_now_ns() >= deadline && !emu_drv_has_used(rx))
                    return 0;
            } else {
                pp_relax();
                if (++spins % PP_SPINS_PER_CLOCK == 0 && emu_now_ns() >= deadline)
                    return 0;
            }
        }
        rc = emu_drv_rx_sink(rx, 4, flags, sink, &res);
        if (rx->broken)
            return -(int64_t)(rc ? rc : EMU_E_BROKEN);
        uint64_t now = emu_now_ns();
        if (res.packets && sink->next_seq == seq + 1)
            return (int64_t)(now - t0);
        if (now >= deadline)       /* only stale echoes came back */
            return 0;
    }
}
