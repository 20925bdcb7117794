/* emu/_ring_net.c: virtio-net's data path inside emu (see _ring_net.h).
 *
 * Compiled in one unit after _ring.c (emu/_ring_build.py), whose chain
 * walker, RX fill and notification code it reuses: every guest address
 * still goes through the queue's region table, every chain is bounded and
 * checked as elsewhere in the engine.
 *
 * The stream (QEMU's net/socket.c framing, both ways: a 4-byte big-endian
 * length, then the frame):
 *   TX: a chain's frame (the virtio-net header stripped) is copied into
 *       txbuf behind its length and the chain completed; txbuf is written
 *       with non-blocking sends.  A full socket leaves the rest in txbuf
 *       and TX stops taking chains until POLLOUT: nothing blocks, nothing
 *       is dropped half-written.  A frame over max_frame is dropped with
 *       its chain completed (QEMU's qemu_sendv_packet_async), and so is a
 *       chain whose length overflows 32 bits.
 *   RX: reads fill rxbuf; each whole frame goes into RX chains; with none
 *       available it is held and the socket is not read again until the
 *       driver adds buffers (the peer's stream back-pressures).  A length
 *       over max_frame ends the stream, as QEMU's net_fill_rstate does
 *       ("oversized packet received, connection terminated").
 *   EOF or an error marks the link down (event_fd tells Python); from then
 *   on the job touches neither the socket nor the staging buffers, and TX
 *   chains are completed and dropped.
 * Frames Python injects (announce) enter txbuf between whole frames.
 */
#include <sys/socket.h>

#include "_ring_net.h"

_Static_assert(sizeof(((struct emu_netport *)0)->inj_len) / sizeof(uint32_t) ==
               EMU_NET_INJECT_SLOTS, "inj_len size");
_Static_assert(sizeof(((struct emu_netport *)0)->inj[0]) == EMU_NET_INJECT_MAX, "inj slot size");
_Static_assert(sizeof(((struct emu_hub *)0)->ports) / sizeof(void *) == EMU_HUB_MAX_PORTS,
               "hub ports");

#define NET_ARMED_TX 1
#define NET_ARMED_RX 2
#define NET_READS_PER_RUN 4

static inline uint32_t load_acq32(const uint32_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static void net_signal(int fd)
{
    if (fd >= 0) {
        uint64_t one = 1;
        ssize_t r = write(fd, &one, sizeof one);
        (void)r;   /* EAGAIN: already signalled */
    }
}

/* The link goes down: the job lets go of the socket and says so. */
static void net_down(struct emu_netport *p, uint32_t why, int err)
{
    p->last_errno = err;
    if (why == EMU_NET_EOF)
        p->st.eof++;
    else if (why == EMU_NET_ERROR)
        p->st.errors++;
    p->st.tx_lost_bytes += p->tx_tail - p->tx_head;
    __atomic_store_n(&p->link, why, __ATOMIC_RELEASE);
    net_signal(p->event_fd);
}

static inline int net_up(const struct emu_netport *p)
{
    return load_acq32(&p->link) == EMU_NET_UP && p->fd >= 0;
}

/* The rings handshake (as the pump's pause, per port): Python stores
 * rings_paused then waits for in_rings 0; the job stores in_rings then
 * loads rings_paused.  Sequentially consistent on both sides. */
static int net_enter(struct emu_netport *p)
{
    __atomic_store_n(&p->in_rings, 1, __ATOMIC_SEQ_CST);
    if (!__atomic_load_n(&p->rings_paused, __ATOMIC_SEQ_CST))
        return 1;
    __atomic_store_n(&p->in_rings, 0, __ATOMIC_SEQ_CST);
    return 0;
}

int emu_net_check(const struct emu_netport *p)
{
    if (!p->txbuf || !p->rxbuf || p->max_frame == 0 || p->max_frame > EMU_NET_BUFSIZE ||
        p->txcap < EMU_NET_LEN_SIZE + p->max_frame ||
        p->rxcap < 2 * (EMU_NET_LEN_SIZE + p->max_frame))
        return EMU_E_NOBUF;
    return EMU_OK;
}

/* ---- TX: guest -> stream ------------------------------------------------ */

/* Room for n more bytes at the tail of txbuf (moving the pending bytes to
 * the front if that makes it). */
static int tx_room(struct emu_netport *p, uint32_t n)
{
    if (p->tx_head == p->tx_tail)
        p->tx_head = p->tx_tail = 0;
    if (p->txcap - p->tx_tail >= n)
        return 1;
    if (p->tx_head && p->txcap - (p->tx_tail - p->tx_head) >= n) {
        memmove(p->txbuf, p->txbuf + p->tx_head, p->tx_tail - p->tx_head);
        p->tx_tail -= p->tx_head;
        p->tx_head = 0;
        return 1;
    }
    return 0;
}

static inline void put_be32(uint8_t *d, uint32_t v)
{
    d[0] = (uint8_t)(v >> 24);
    d[1] = (uint8_t)(v >> 16);
    d[2] = (uint8_t)(v >> 8);
    d[3] = (uint8_t)v;
}

/* Write what txbuf holds; returns 1 if bytes went out.  A full socket
 * (EAGAIN) leaves them for POLLOUT. */
static int tx_flush(struct emu_netport *p)
{
    int moved = 0;
    while (p->tx_head != p->tx_tail) {
        ssize_t n = send(p->fd, p->txbuf + p->tx_head, p->tx_tail - p->tx_head,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                p->st.write_blocked++;
                return moved;
            }
            net_down(p, EMU_NET_ERROR, errno);
            return moved;
        }
        moved = 1;
        p->tx_head += (uint32_t)n;
        if (p->tx_head != p->tx_tail)
            p->st.partial_writes++;
    }
    p->tx_head = p->tx_tail = 0;
    return moved;
}

/* Python's frames, in the order given, between whole frames of the stream. */
static int tx_inject(struct emu_netport *p)
{
    int moved = 0;
    for (;;) {
        uint32_t head = p->inj_head;
        if (head == load_acq32(&p->inj_tail))
            return moved;
        uint32_t slot = head % EMU_NET_INJECT_SLOTS;
        uint32_t len = p->inj_len[slot];
        if (!net_up(p)) {
            p->st.inject_dropped++;
        } else {
            if (!tx_room(p, EMU_NET_LEN_SIZE + len))
                return moved;
            put_be32(p->txbuf + p->tx_tail, len);
            memcpy(p->txbuf + p->tx_tail + EMU_NET_LEN_SIZE, p->inj[slot], len);
            p->tx_tail += EMU_NET_LEN_SIZE + len;
            p->st.injected++;
        }
        __atomic_store_n(&p->inj_head, head + 1, __ATOMIC_RELEASE);
        moved = 1;
    }
}

/* Pop the next TX chain and resolve it.  Returns 1 with *flen set for a
 * frame to send, 0 for a chain dealt with here (refused or oversize:
 * completed with length 0), -1 when the ring is empty. */
static int tx_take(struct emu_netport *p, struct chain *c, uint16_t *head_out,
                   uint32_t *flen, int *first, uint32_t *hint)
{
    struct emu_devq *q = p->tx;
    if (!dev_avail(q, first))
        return -1;
    uint16_t head = dev_pop(q);
    int err = resolve_chain(q, head, 0, c, hint);
    if (!err && c->total < q->hdr_len)
        err = EMU_E_SHORT_HDR;
    if (unlikely(err)) {
        set_error(&q->last_error, &q->st, first, err);
        dev_used(q, head, 0);
        /* (VIRTIO 1.2, 2.7.5.2: "Drivers MUST NOT add a descriptor chain
         * longer than 2^32 bytes in total"): too long, as QEMU counts it */
        if (err == EMU_E_LEN_OVERFLOW)
            p->st.tx_oversize++;
        else
            p->st.tx_errors++;
        return 0;
    }
    uint32_t len = c->total - q->hdr_len;
    if (len > p->max_frame) {
        /* QEMU's qemu_sendv_packet_async: "if (size > NET_BUFSIZE) return
         * size" -- dropped, the chain given back */
        dev_used(q, head, 0);
        p->st.tx_oversize++;
        return 0;
    }
    *head_out = head;
    *flen = len;
    return 1;
}

/* Guest TX chains into txbuf while they fit; returns 1 on progress. */
static int tx_from_ring(struct emu_netport *p, uint32_t burst, int *first)
{
    struct chain *c = &scratch_get()->src;
    struct emu_devq *q = p->tx;
    uint32_t hint = 0, n = 0;
    int progress = 0;
    while (n < burst) {
        uint16_t head;
        uint32_t len;
        int r = tx_take(p, c, &head, &len, first, &hint);
        if (r < 0)
            break;
        if (r == 0) {           /* refused or oversize: completed, counted */
            n++;
            progress = 1;
            continue;
        }
        if (!net_up(p)) {
            dev_used(q, head, 0);
            p->st.tx_dropped++;
            n++;
            progress = 1;
            continue;
        }
        if (!tx_room(p, EMU_NET_LEN_SIZE + len)) {
            dev_unpop(q, &head, 1);     /* the stream is full: wait for POLLOUT */
            break;
        }
        n++;
        progress = 1;
        uint8_t *d = p->txbuf + p->tx_tail;
        put_be32(d, len);
        struct cursor cur = {c, 0, 0};
        cursor_skip(&cur, q->hdr_len);
        cursor_read(&cur, d + EMU_NET_LEN_SIZE, len);
        if (unlikely(q->cap != NULL))
            cap_flat(q->cap, d + EMU_NET_LEN_SIZE, len);
        p->tx_tail += EMU_NET_LEN_SIZE + len;
        dev_used(q, head, 0);
        p->st.tx_frames++;
        p->st.tx_bytes += len;
        q->st.packets++;
        q->st.bytes += len;
    }
    if (n)
        dev_flush(q);
    return progress;
}

/* ---- RX: stream -> guest ------------------------------------------------ */

/* One frame into the guest's RX chains.  Returns EMU_OK (delivered or
 * dropped), or EMU_E_NOBUF (no chain: try again once the driver adds some). */
static int rx_deliver(struct emu_netport *p, const uint8_t *frame, uint32_t len, int *first)
{
    struct copy_scratch *sc = scratch_get();
    struct emu_devq *q = p->rx;
    struct pkt_src ps = {.len = len, .flat = frame};
    uint32_t hint = 0;
    int dropped = 0;
    uint64_t errs = q->st.errors;
    int err = rx_fill(q, &ps, &sc->dst, &sc->pk, first, &hint, &dropped);
    p->st.rx_errors += q->st.errors - errs;
    if (err == EMU_E_NOBUF)
        return EMU_E_NOBUF;
    if (dropped) {
        q->st.drops++;
        p->st.rx_dropped++;
        return EMU_OK;
    }
    if (unlikely(q->cap != NULL))
        cap_flat(q->cap, frame, len);
    q->st.packets++;
    q->st.bytes += len;
    p->st.rx_frames++;
    p->st.rx_bytes += len;
    return EMU_OK;
}

static inline uint32_t get_be32(const uint8_t *s)
{
    return ((uint32_t)s[0] << 24) | ((uint32_t)s[1] << 16) | ((uint32_t)s[2] << 8) | s[3];
}

/* Deliver the whole frames rxbuf holds; returns 1 on progress.  Stops at a
 * frame the ring has no room for (held), or at a partial one. */
static int rx_parse(struct emu_netport *p, uint32_t *budget, int *first)
{
    int progress = 0;
    while (*budget && p->rx_tail - p->rx_head >= EMU_NET_LEN_SIZE) {
        const uint8_t *s = p->rxbuf + p->rx_head;
        uint32_t len = get_be32(s);
        if (len > p->max_frame) {
            p->st.rx_oversize++;
            net_down(p, EMU_NET_OVERSIZE, 0);
            return 1;
        }
        if (p->rx_tail - p->rx_head - EMU_NET_LEN_SIZE < len)
            break;
        if (rx_deliver(p, s + EMU_NET_LEN_SIZE, len, first) == EMU_E_NOBUF) {
            if (!p->rx_held)
                p->st.rx_waits++;
            p->rx_held = 1;
            break;
        }
        p->rx_held = 0;
        p->rx_head += EMU_NET_LEN_SIZE + len;
        (*budget)--;
        progress = 1;
    }
    if (p->rx_head == p->rx_tail)
        p->rx_head = p->rx_tail = 0;
    return progress;
}

/* Read what the socket has (a few reads at most); returns 1 if bytes came. */
static int rx_read(struct emu_netport *p)
{
    if (p->rx_head && p->rxcap - p->rx_tail < EMU_NET_LEN_SIZE + p->max_frame) {
        memmove(p->rxbuf, p->rxbuf + p->rx_head, p->rx_tail - p->rx_head);
        p->rx_tail -= p->rx_head;
        p->rx_head = 0;
    }
    if (p->rx_tail == p->rxcap)
        return 0;      /* cannot happen: rxcap holds two whole frames */
    ssize_t n = recv(p->fd, p->rxbuf + p->rx_tail, p->rxcap - p->rx_tail, MSG_DONTWAIT);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            net_down(p, EMU_NET_ERROR, errno);
        return 0;
    }
    if (n == 0) {
        net_down(p, EMU_NET_EOF, 0);
        return 1;
    }
    p->rx_tail += (uint32_t)n;
    return 1;
}

static int rx_to_ring(struct emu_netport *p, uint32_t burst, int *first)
{
    uint32_t budget = burst;
    int progress = rx_parse(p, &budget, first);
    for (int i = 0; i < NET_READS_PER_RUN && budget && !p->rx_held && net_up(p); i++) {
        if (!rx_read(p))
            break;
        progress = 1;
        rx_parse(p, &budget, first);
        if (p->rx_tail != p->rx_head && !p->rx_held && net_up(p))
            p->st.partial_reads++;     /* the read ended inside a frame */
    }
    if (dev_unflushed(p->rx))
        dev_flush(p->rx);
    return progress;
}

void emu_net_purge_rx(struct emu_netport *p)
{
    /* the held frame goes (a driver reset, as QEMU purges its queue); the
     * stream stays in step: only whole frames are dropped */
    if (p->rx_held && p->rx_tail - p->rx_head >= EMU_NET_LEN_SIZE) {
        uint32_t len = get_be32(p->rxbuf + p->rx_head);
        p->rx_head += EMU_NET_LEN_SIZE + len;
        p->st.rx_dropped++;
    }
    p->rx_held = 0;
}

int emu_net_set_fd(struct emu_netport *p, int fd)
{
    /* only while the link is down: the job then touches neither the old
     * socket nor the staging buffers */
    if (load_acq32(&p->link) == EMU_NET_UP)
        return EMU_E_BROKEN;
    p->tx_head = p->tx_tail = 0;
    p->rx_head = p->rx_tail = 0;
    p->rx_held = 0;
    p->last_errno = 0;
    p->fd = fd;
    __atomic_store_n(&p->link, fd >= 0 ? EMU_NET_UP : EMU_NET_NOSOCK, __ATOMIC_RELEASE);
    net_signal(p->wake_fd);
    return EMU_OK;
}

int emu_net_take_fd(struct emu_netport *p)
{
    /* the socket back from a link the job gave up (down), or -1 */
    if (load_acq32(&p->link) == EMU_NET_UP)
        return -1;
    int fd = p->fd;
    p->fd = -1;
    return fd;
}

int emu_net_inject(struct emu_netport *p, const uint8_t *frame, uint32_t len)
{
    uint32_t tail = p->inj_tail;
    if (len > EMU_NET_INJECT_MAX)
        return EMU_E_NOBUF;
    if (tail - load_acq32(&p->inj_head) >= EMU_NET_INJECT_SLOTS)
        return EMU_E_NOBUF;           /* full: the caller retries */
    uint32_t slot = tail % EMU_NET_INJECT_SLOTS;
    memcpy(p->inj[slot], frame, len);
    p->inj_len[slot] = len;
    __atomic_store_n(&p->inj_tail, tail + 1, __ATOMIC_RELEASE);
    net_signal(p->wake_fd);
    return EMU_OK;
}

/* ---- the stream job -------------------------------------------------------- */

static int net_job_stream(struct emu_job *j, struct emu_burst *r)
{
    struct emu_netport *p = j->net;
    uint32_t burst = j->burst ? j->burst : 64;
    int first = EMU_OK, progress = 0;
    int rings = net_enter(p) && p->tx && p->rx;
    if (net_up(p))
        progress |= tx_flush(p);
    progress |= tx_inject(p);
    if (rings && !p->tx->broken)
        progress |= tx_from_ring(p, burst, &first);
    if (net_up(p))
        progress |= tx_flush(p);
    if (rings && !p->rx->broken && net_up(p))
        progress |= rx_to_ring(p, burst, &first);
    memset(r, 0, sizeof *r);
    r->packets = progress;
    r->error = first;
    return first;
}

/* ---- the hub job ---------------------------------------------------------- */

/* A frame from port `src` to every other live port; returns how many took it. */
static uint32_t hub_forward(struct emu_hub *h, const int *live, uint32_t src,
                            struct pkt_src *ps, int *first)
{
    struct copy_scratch *sc = scratch_get();
    uint32_t took = 0;
    for (uint32_t i = 0; i < h->nports; i++) {
        struct emu_netport *d = h->ports[i];
        if (i == src || !live[i] || d->rx->broken)
            continue;
        uint32_t hint = 0;
        int dropped = 0;
        uint64_t errs = d->rx->st.errors;
        int err = rx_fill(d->rx, ps, &sc->dst, &sc->pk, first, &hint, &dropped);
        d->st.rx_errors += d->rx->st.errors - errs;
        if (err == EMU_E_NOBUF || dropped) {
            /* QEMU's hub queues a little, then drops: emu drops at once */
            d->rx->st.drops++;
            d->st.rx_dropped++;
            continue;
        }
        d->rx->st.packets++;
        d->rx->st.bytes += ps->len;
        d->st.rx_frames++;
        d->st.rx_bytes += ps->len;
        took++;
    }
    return took;
}

static int net_job_hub(struct emu_job *j, struct emu_burst *r)
{
    struct emu_hub *h = j->hub;
    uint32_t burst = j->burst ? j->burst : 64;
    int first = EMU_OK, progress = 0, live[EMU_HUB_MAX_PORTS];
    uint32_t n = h->nports < EMU_HUB_MAX_PORTS ? h->nports : EMU_HUB_MAX_PORTS;
    for (uint32_t i = 0; i < n; i++) {
        struct emu_netport *p = h->ports[i];
        live[i] = net_enter(p) && p->tx && p->rx;
    }
    struct chain *c = &scratch_get()->src;
    for (uint32_t i = 0; i < n; i++) {
        struct emu_netport *p = h->ports[i];
        /* Python's frames: from this port to the others */
        while (p->inj_head != load_acq32(&p->inj_tail)) {
            uint32_t slot = p->inj_head % EMU_NET_INJECT_SLOTS;
            struct pkt_src ps = {.len = p->inj_len[slot], .flat = p->inj[slot]};
            if (hub_forward(h, live, i, &ps, &first))
                p->st.injected++;
            else
                p->st.inject_dropped++;
            __atomic_store_n(&p->inj_head, p->inj_head + 1, __ATOMIC_RELEASE);
            progress = 1;
        }
        if (!live[i] || p->tx->broken)
            continue;
        uint32_t hint = 0, k = 0;
        while (k < burst) {
            uint16_t head;
            uint32_t len;
            int t = tx_take(p, c, &head, &len, &first, &hint);
            if (t < 0)
                break;
            k++;
            if (t == 0)
                continue;
            struct pkt_src ps;
            pkt_from_chain(&ps, c, p->tx->hdr_len, 0);
            memset(ps.hdr, 0, sizeof ps.hdr);    /* no virtio-net header crosses a hub */
            if (unlikely(p->tx->cap != NULL))
                cap_frame(p->tx->cap, ps.flat, ps.cur, ps.len, NULL, 0);
            if (hub_forward(h, live, i, &ps, &first)) {
                p->st.tx_frames++;
                p->st.tx_bytes += len;
                p->tx->st.packets++;
                p->tx->st.bytes += len;
            } else {
                p->st.tx_dropped++;              /* a lone port: nowhere to go */
                p->tx->st.drops++;
            }
            dev_used(p->tx, head, 0);
        }
        if (k) {
            progress = 1;
            dev_flush(p->tx);
        }
    }
    for (uint32_t i = 0; i < n; i++)
        if (live[i] && dev_unflushed(h->ports[i]->rx))
            dev_flush(h->ports[i]->rx);
    memset(r, 0, sizeof *r);
    r->packets = progress;
    r->error = first;
    return first;
}

/* ---- what the pump calls (_ring.c) ---------------------------------------- */

static int net_job_run(struct emu_job *j, struct emu_burst *r)
{
    return j->kind == EMU_JOB_HUB ? net_job_hub(j, r) : net_job_stream(j, r);
}

static int net_port_ready(struct emu_netport *p, int stream)
{
    if (p->inj_head != load_acq32(&p->inj_tail))
        return 1;
    if (!p->in_rings || !p->tx || !p->rx)
        return 0;
    if (!p->tx->broken && emu_dev_avail(p->tx) &&
        (!stream || !net_up(p) || p->tx_head == p->tx_tail))
        return 1;
    return stream && p->rx_held && !p->rx->broken && emu_dev_avail(p->rx);
}

static int net_job_ready(struct emu_job *j)
{
    if (j->kind == EMU_JOB_NET)
        return net_port_ready(j->net, 1);
    for (uint32_t i = 0; i < j->hub->nports && i < EMU_HUB_MAX_PORTS; i++)
        if (net_port_ready(j->hub->ports[i], 0))
            return 1;
    return 0;
}

static int net_wait_add(struct pollfd *pfd, struct emu_stats **owner, uint8_t *drain, int n,
                        int max, int fd, short events, struct emu_stats *st, int is_eventfd)
{
    if (fd < 0 || n >= max)
        return n;
    pfd[n] = (struct pollfd){fd, events, 0};
    owner[n] = st;
    drain[n] = (uint8_t)is_eventfd;
    return n + 1;
}

/* Arm a port for sleeping: the guest's kicks where the job waits for
 * them, the socket for what the job can do next. */
static int net_port_arm(struct emu_netport *p, int stream, struct pollfd *pfd,
                        struct emu_stats **owner, uint8_t *drain, int n, int max)
{
    int rings = p->in_rings && p->tx && p->rx;
    p->armed = 0;
    if (rings && !p->tx->broken && (!stream || !net_up(p) || p->tx_head == p->tx_tail)) {
        emu_dev_notify_enable(p->tx, 1);
        p->armed |= NET_ARMED_TX;
        n = net_wait_add(pfd, owner, drain, n, max, p->tx->kick_fd, POLLIN, &p->tx->st, 1);
    }
    if (!stream)
        return n;
    if (rings && p->rx_held && !p->rx->broken) {
        emu_dev_notify_enable(p->rx, 1);
        p->armed |= NET_ARMED_RX;
        n = net_wait_add(pfd, owner, drain, n, max, p->rx->kick_fd, POLLIN, &p->rx->st, 1);
    }
    if (net_up(p)) {
        short ev = 0;
        if (p->tx_head != p->tx_tail)
            ev |= POLLOUT;
        if (rings && !p->rx_held)
            ev |= POLLIN;
        if (ev)
            n = net_wait_add(pfd, owner, drain, n, max, p->fd, ev, &p->wake_st, 0);
    }
    return net_wait_add(pfd, owner, drain, n, max, p->wake_fd, POLLIN, &p->wake_st, 1);
}

static int net_job_arm(struct emu_job *j, struct pollfd *pfd, struct emu_stats **owner,
                       uint8_t *drain, int max)
{
    if (j->kind == EMU_JOB_NET)
        return net_port_arm(j->net, 1, pfd, owner, drain, 0, max);
    int n = 0;
    for (uint32_t i = 0; i < j->hub->nports && i < EMU_HUB_MAX_PORTS; i++)
        n = net_port_arm(j->hub->ports[i], 0, pfd, owner, drain, n, max);
    if (j->hub->nports)
        n = net_wait_add(pfd, owner, drain, n, max, j->hub->wake_fd, POLLIN,
                         &j->hub->ports[0]->wake_st, 1);
    return n;
}

static void net_port_disarm(struct emu_netport *p)
{
    if ((p->armed & NET_ARMED_TX) && p->tx)
        emu_dev_notify_enable(p->tx, 0);
    if ((p->armed & NET_ARMED_RX) && p->rx)
        emu_dev_notify_enable(p->rx, 0);
    p->armed = 0;
}

static void net_job_disarm(struct emu_job *j)
{
    if (j->kind == EMU_JOB_NET) {
        net_port_disarm(j->net);
        return;
    }
    for (uint32_t i = 0; i < j->hub->nports && i < EMU_HUB_MAX_PORTS; i++)
        net_port_disarm(j->hub->ports[i]);
}

/* The pump left for good: nothing of this job is in the rings any more. */
static void net_job_leave(struct emu_job *j)
{
    if (j->kind == EMU_JOB_NET) {
        __atomic_store_n(&j->net->in_rings, 0, __ATOMIC_SEQ_CST);
        return;
    }
    for (uint32_t i = 0; i < j->hub->nports && i < EMU_HUB_MAX_PORTS; i++)
        __atomic_store_n(&j->hub->ports[i]->in_rings, 0, __ATOMIC_SEQ_CST);
}
