/* emu/_ring_packed.c: packed virtqueues (VIRTIO 1.2 §2.8), both sides.
 *
 * Compiled in the same unit as _ring.c (after it), whose primitives switch
 * here when a queue's `packed` is set: chains are resolved with the same
 * checks and typed errors, bursts, jobs and captures are the split
 * engine's.  What is the packed ring's own:
 *
 *  - a descriptor is available when its AVAIL bit equals the ring's wrap
 *    counter and its USED bit does not, used when both equal it (§2.8.1);
 *    the `flags` store is the publication point, so it is one aligned
 *    16-bit store with release semantics after the rest of the descriptor
 *    (§2.8.21: "the driver MUST perform a suitable memory barrier before
 *    the flags are written"; the same for the device's used descriptors),
 *    and flags are read with acquire before the rest;
 *  - a batch is published by its first descriptor: the flags of the rest
 *    are stored as they are written, the first one's at the flush, so the
 *    other side sees the batch at once;
 *  - a chain is consecutive ring descriptors linked by NEXT, its buffer id
 *    in the last one (§2.8.6); one whose end cannot be found (longer than
 *    the ring, or running into a descriptor that is not available) leaves
 *    the device no way to find the next chain: the ring is marked broken;
 *  - the device completes chains in the order it took them (IN_ORDER is
 *    honoured by construction), so a used descriptor goes where its chain
 *    began and the used position skips the chain's descriptors (§2.8.6);
 *  - notifications follow the event suppression structures, one 32-bit
 *    access each {off_wrap, flags} (§2.8.10).
 */

#define PK_NONE 0xffffu
#define PK_AVAIL EMU_PRING_DESC_F_AVAIL
#define PK_USED EMU_PRING_DESC_F_USED

struct pdesc { uint64_t addr; uint32_t len; uint16_t id; uint16_t flags; };
_Static_assert(sizeof(struct pdesc) == EMU_PRING_DESC_SIZE, "pvirtq_desc layout");

#define PDESC(ring, i)        ((ring) + EMU_PRING_DESC_SIZE * (size_t)(i))
#define PDESC_LEN(p)          ((uint32_t *)((uint8_t *)(p) + 8))
#define PDESC_ID(p)           ((uint16_t *)((uint8_t *)(p) + 12))
#define PDESC_FLAGS(p)        ((uint16_t *)((uint8_t *)(p) + 14))

/* inflight area, packed format (docs/interop/vhost-user.rst, QueueRegionPacked) */
#define INF_FREE_HEAD(r)      ((uint16_t *)((r) + 12))
#define INF_OLD_FREE_HEAD(r)  ((uint16_t *)((r) + 14))
#define INF_USED_IDX(r)       ((uint16_t *)((r) + 16))
#define INF_OLD_USED_IDX(r)   ((uint16_t *)((r) + 18))
#define INF_USED_WRAP(r)      ((r) + 20)
#define INF_OLD_USED_WRAP(r)  ((r) + 21)
#define INF_DESC(r, i)        ((r) + EMU_PRING_INFLIGHT_HEADER + EMU_PRING_INFLIGHT_DESC * (size_t)(i))
/* DescStatePacked: inflight u8, pad, next u16, last u16, num u16, counter u64,
 * id u16, flags u16, len u32, addr u64 */

static inline int pk_is_avail(uint16_t flags, uint16_t wrap)
{
    return !!(flags & PK_AVAIL) == wrap && !!(flags & PK_USED) != wrap;
}

static inline int pk_is_used(uint16_t flags, uint16_t wrap)
{
    return !!(flags & PK_AVAIL) == wrap && !!(flags & PK_USED) == wrap;
}

/* the AVAIL/USED bits a descriptor gets in the lap of wrap counter `wrap` */
static inline uint16_t pk_avail_flags(uint16_t wrap)
{
    return wrap ? PK_AVAIL : PK_USED;
}

static inline uint16_t pk_used_flags(uint16_t wrap)
{
    return wrap ? (PK_AVAIL | PK_USED) : 0;
}

/* Move a ring position n (<= num) descriptors on; a wrap flips the counter.
 * Queue sizes need not be powers of two (§2.8), so no masking. */
static inline void pk_advance(uint16_t *pos, uint16_t *wrap, uint32_t n, uint16_t num)
{
    uint32_t p = (uint32_t)*pos + n;
    if (p >= num) {
        p -= num;
        *wrap ^= 1;
    }
    *pos = (uint16_t)p;
}

/* Copy a descriptor out of guest memory once (see desc_fetch). */
static inline void pdesc_fetch(struct pdesc *d, const uint8_t *p)
{
    memcpy(d, p, sizeof *d);
    __asm__ __volatile__("" ::: "memory");
}

/* Should the other side be notified?  `ev` is its event suppression
 * structure read as one 32-bit load; `new`/`wrap` our position now,
 * `since` the descriptors moved since the last decision (§2.8.10: with
 * EVENT_IDX and flags DESC, notify when the descriptor at off_wrap was
 * passed -- Linux's and DPDK's arithmetic, with the wrap counter saying
 * which lap the offset belongs to). */
static inline int pk_want(uint32_t ev, int event_idx, uint16_t new_pos, uint16_t wrap,
                          uint32_t since, uint16_t num)
{
    uint16_t flags = (uint16_t)(ev >> 16);
    if (!event_idx || flags != EMU_PRING_EVENT_FLAG_DESC)
        return flags != EMU_PRING_EVENT_FLAG_DISABLE;
    if (since >= num)          /* a lap or more: every offset was passed */
        return 1;
    uint16_t off_wrap = (uint16_t)ev;
    uint16_t event = off_wrap & 0x7fff;
    if ((off_wrap >> EMU_PRING_EVENT_F_WRAP_CTR) != wrap)
        event = (uint16_t)(event - num);
    return need_event(event, new_pos, (uint16_t)(new_pos - since));
}

static inline uint32_t pk_event(uint16_t flags, uint16_t pos, uint16_t wrap)
{
    return (uint32_t)flags << 16 | pos | (uint32_t)wrap << EMU_PRING_EVENT_F_WRAP_CTR;
}

/* ---- device side --------------------------------------------------------- */

static inline void pdev_reset(struct emu_devq *q)
{
    struct emu_pring *pk = q->packed;
    pk->avail_wrap &= 1;
    q->used_idx = q->last_avail_idx;      /* nothing in flight at a (re)start */
    pk->used_wrap = pk->avail_wrap;
    q->signalled_used = q->used_idx;
    pk->signalled_wrap = pk->used_wrap;
    pk->first_pos = PK_NONE;
    pk->since = 0;
    q->avail_idx_cache = q->last_avail_idx;
    q->broken = q->last_avail_idx >= q->num;   /* the caller checks; never index past it */
    q->last_error = EMU_OK;
}

HOT uint32_t pdev_avail(struct emu_devq *q, int *first_err)
{
    (void)first_err;
    if (unlikely(q->broken))
        return 0;
    return pk_is_avail(LOAD_ACQ16(PDESC_FLAGS(PDESC(q->desc, q->last_avail_idx))),
                       q->packed->avail_wrap);
}

/* Chains available in full (for looking only). */
static inline uint32_t pdev_count_avail(struct emu_devq *q)
{
    uint16_t pos = q->last_avail_idx, wrap = q->packed->avail_wrap;
    uint32_t seen = 0, chains = 0;
    while (seen < q->num) {
        uint16_t f = LOAD_ACQ16(PDESC_FLAGS(PDESC(q->desc, pos)));
        if (!pk_is_avail(f, wrap))
            break;
        seen++;
        pk_advance(&pos, &wrap, 1, q->num);
        if (!(f & EMU_VRING_DESC_F_NEXT))
            chains++;
    }
    return chains;
}

/* The chain at the device's position, as a token for resolve / used /
 * unpop: position | wrap << 15.  pdev_resolve takes it. */
HOT uint16_t pdev_pop(struct emu_devq *q)
{
    return (uint16_t)(q->last_avail_idx | q->packed->avail_wrap << 15);
}

/* Inflight area: record ring descriptor d, the n-th of chain ch
 * (vhost-user.rst, the packed queue region's "When receiving available
 * buffers").  Every index read back from the area is checked: the
 * front-end shares it. */
static inline void pk_inflight_take(struct emu_devq *q, struct emu_pchain *ch,
                                    const struct pdesc *d, uint32_t n, int last)
{
    uint8_t *r = q->inflight;
    const uint16_t num = q->num;
    if (n == 1) {
        ch->ent = READ_ONCE(*INF_OLD_FREE_HEAD(r));
        if (ch->ent >= num) {
            ch->ent = PK_NONE;
            return;
        }
        uint8_t *e = INF_DESC(r, ch->ent);
        WRITE_ONCE(*(uint16_t *)(e + 6), 0);
        WRITE_ONCE(*(uint64_t *)(e + 8), ++q->inflight_counter);
        WRITE_ONCE(*e, 1);
    }
    if (ch->ent == PK_NONE)
        return;
    uint16_t fh = READ_ONCE(*INF_FREE_HEAD(r));
    if (fh >= num) {
        ch->ent = PK_NONE;
        return;
    }
    uint8_t *f = INF_DESC(r, fh);
    WRITE_ONCE(*(uint16_t *)(f + 16), d->id);
    WRITE_ONCE(*(uint16_t *)(f + 18), d->flags);
    WRITE_ONCE(*(uint32_t *)(f + 20), d->len);
    WRITE_ONCE(*(uint64_t *)(f + 24), d->addr);
    WRITE_ONCE(*INF_FREE_HEAD(r), READ_ONCE(*(uint16_t *)(f + 2)));
    uint8_t *e = INF_DESC(r, ch->ent);
    WRITE_ONCE(*(uint16_t *)(e + 6), (uint16_t)(READ_ONCE(*(uint16_t *)(e + 6)) + 1));
    if (last) {
        WRITE_ONCE(*(uint16_t *)(e + 4), fh);
        ch->last = fh;
        WRITE_ONCE(*INF_OLD_FREE_HEAD(r), READ_ONCE(*INF_FREE_HEAD(r)));
    }
}

/* One translated buffer into the chain's segments (split across regions
 * that are adjacent in guest-physical space). */
static inline int pk_seg_add(const struct emu_mem *m, struct chain *c, uint64_t addr,
                             uint32_t len, uint32_t *hint)
{
    if (len == 0)
        return EMU_E_ZERO_LEN;
    if ((uint64_t)c->total + len > UINT32_MAX)
        return EMU_E_LEN_OVERFLOW;
    uint8_t *h = xlate(m, addr, len, hint);
    if (likely(h != NULL)) {
        if (c->nsegs >= EMU_MAX_SEGS)
            return EMU_E_TOO_MANY_SEGS;
        c->segs[c->nsegs++] = (struct seg){h, len, addr};
    } else {
        uint64_t a = addr, left = len;
        if (a + left - 1 < a)
            return EMU_E_ADDR;
        while (left) {
            uint64_t got = 0;
            h = xlate_prefix(m, a, left, &got);
            if (!h)
                return EMU_E_ADDR;
            if (c->nsegs >= EMU_MAX_SEGS)
                return EMU_E_TOO_MANY_SEGS;
            c->segs[c->nsegs++] = (struct seg){h, (uint32_t)got, a};
            a += got;
            left -= got;
        }
    }
    c->total += len;
    return EMU_OK;
}

/* The buffers of ring descriptor d, the n-th of its chain. */
static int pk_desc(struct emu_devq *q, const struct pdesc *d, uint32_t n, int write,
                   struct chain *c, uint32_t *hint)
{
    if (d->flags & EMU_VRING_DESC_F_INDIRECT) {
        /* (§2.8.18: "A driver MUST NOT write direct descriptors with
         * VIRTQ_DESC_F_INDIRECT set in a scatter-gather list linked by
         * VIRTQ_DESC_F_NEXT") */
        if (n != 1)
            return EMU_E_NESTED_INDIRECT;
        if (!(q->features & EMU_QF_INDIRECT))
            return EMU_E_INDIRECT_NOT_NEG;
        if (d->flags & EMU_VRING_DESC_F_NEXT)
            return EMU_E_INDIRECT_NEXT;
        if (d->len == 0 || d->len % EMU_PRING_DESC_SIZE || d->len / EMU_PRING_DESC_SIZE > q->num)
            return EMU_E_INDIRECT_LEN;
        const uint8_t *t = xlate(q->mem, d->addr, d->len, hint);
        if (!t)
            return EMU_E_ADDR;
        /* the table's descriptors follow each other; only WRITE is valid in
         * their flags, the rest (NEXT, the id) is ignored -- but a nested
         * table is refused as in a split ring */
        for (uint32_t i = 0; i < d->len / EMU_PRING_DESC_SIZE; i++) {
            struct pdesc e;
            pdesc_fetch(&e, PDESC(t, i));
            if (e.flags & EMU_VRING_DESC_F_INDIRECT)
                return EMU_E_NESTED_INDIRECT;
            if (!!(e.flags & EMU_VRING_DESC_F_WRITE) != write)
                return EMU_E_DIRECTION;
            int err = pk_seg_add(q->mem, c, e.addr, e.len, hint);
            if (err)
                return err;
        }
        return EMU_OK;
    }
    if (!!(d->flags & EMU_VRING_DESC_F_WRITE) != write)
        return EMU_E_DIRECTION;
    return pk_seg_add(q->mem, c, d->addr, d->len, hint);
}

/* Take the chain at the device's position (token `head` from pdev_pop):
 * walk it to its end, translating every buffer until the first fault,
 * record it for its completion and move past it.  A chain with a fault
 * is still taken (completed with length 0 by the caller); one whose end
 * cannot be found breaks the ring. */
static inline int pdev_resolve(struct emu_devq *q, uint16_t head, int write, struct chain *c,
                               uint32_t *hint)
{
    struct emu_pring *pk = q->packed;
    const uint16_t num = q->num, start = q->last_avail_idx;
    uint16_t pos = start, wrap = pk->avail_wrap;
    struct emu_pchain *ch = &pk->chains[start];
    uint32_t n = 0;
    int err = EMU_OK;
    (void)head;
    c->nsegs = 0;
    c->total = 0;
    ch->ent = PK_NONE;
    for (;;) {
        if (n == num) {
            /* (§2.8.17: "A driver MUST NOT create a descriptor list longer
             * than allowed by the device") -- and its end is nowhere */
            err = EMU_E_CHAIN_LONG;
            goto broken;
        }
        const uint8_t *p = PDESC(q->desc, pos);
        uint16_t f = LOAD_ACQ16(PDESC_FLAGS(p));
        if (unlikely(!pk_is_avail(f, wrap))) {
            /* (§2.8.6: the driver makes the first descriptor of a list
             * available after the rest): the rest is not the driver's any
             * more, or never was */
            err = EMU_E_DESC_NOT_AVAIL;
            goto broken;
        }
        struct pdesc d;
        pdesc_fetch(&d, p);
        d.flags = f;                      /* the value checked, not a second read */
        n++;
        if (err == EMU_OK)
            err = pk_desc(q, &d, n, write, c, hint);
        if (q->inflight)
            pk_inflight_take(q, ch, &d, n, !(f & EMU_VRING_DESC_F_NEXT));
        pk_advance(&pos, &wrap, 1, num);
        if (!(f & EMU_VRING_DESC_F_NEXT)) {
            ch->id = d.id;                /* (§2.8.6: the buffer id is in the last one) */
            break;
        }
    }
    ch->n = (uint16_t)n;
    ch->write = (uint16_t)write;
    q->last_avail_idx = pos;
    pk->avail_wrap = wrap;
    return err;
broken:
    ch->n = 0;
    q->broken = 1;
    return err;
}

/* Complete the chain of token `head`: one used descriptor {id, len} at the
 * used position, which then skips the chain's descriptors.  Its flags wait
 * for the flush when it is the first of the batch. */
HOT void pdev_used(struct emu_devq *q, uint16_t head, uint32_t len)
{
    struct emu_pring *pk = q->packed;
    const struct emu_pchain *ch = &pk->chains[head & 0x7fff];
    if (unlikely(!ch->n))
        return;                          /* the ring broke on it */
    const uint16_t pos = q->used_idx;
    uint8_t *p = PDESC(q->desc, pos);
    WRITE_ONCE(*PDESC_LEN(p), len);
    WRITE_ONCE(*PDESC_ID(p), ch->id);
    /* WRITE set: the length is valid (§2.8.4), as DPDK marks RX completions */
    uint16_t fl = pk_used_flags(pk->used_wrap) | (ch->write ? EMU_VRING_DESC_F_WRITE : 0);
    if (pk->first_pos == PK_NONE) {
        pk->first_pos = pos;
        pk->first_flags = fl;
    } else {
        STORE_REL16(PDESC_FLAGS(p), fl);
    }
    if (q->features & EMU_QF_LOG)
        log_range(q->mem, &q->st, pk->desc_gpa + EMU_PRING_DESC_SIZE * (uint64_t)pos,
                  EMU_PRING_DESC_SIZE);
    pk_advance(&q->used_idx, &pk->used_wrap, ch->n, q->num);
    pk->since += ch->n;
    if (q->inflight && ch->ent < q->num && ch->last < q->num) {
        /* (the packed region's "When supplying used buffers": the chain's
         * entries go back to the free list; inflight cleared at the flush,
         * once the flags are out) */
        uint8_t *r = q->inflight;
        WRITE_ONCE(*(uint16_t *)(INF_DESC(r, ch->last) + 2), READ_ONCE(*INF_FREE_HEAD(r)));
        WRITE_ONCE(*INF_FREE_HEAD(r), ch->ent);
        WRITE_ONCE(*INF_USED_IDX(r), q->used_idx);
        WRITE_ONCE(*INF_USED_WRAP(r), (uint8_t)pk->used_wrap);
    }
}

/* Give back chains taken but not used (a packet that did not fit): they
 * are the last ones taken, heads[0] the first of them. */
static inline void pdev_unpop(struct emu_devq *q, const uint16_t *heads, uint32_t n)
{
    struct emu_pring *pk = q->packed;
    if (!n)
        return;
    if (q->inflight) {
        uint8_t *r = q->inflight;
        for (uint32_t i = 0; i < n; i++) {
            uint16_t ent = pk->chains[heads[i] & 0x7fff].ent;
            if (ent < q->num)
                WRITE_ONCE(*INF_DESC(r, ent), 0);
        }
        uint16_t ent = pk->chains[heads[0] & 0x7fff].ent;
        if (ent < q->num) {
            WRITE_ONCE(*INF_FREE_HEAD(r), ent);
            WRITE_ONCE(*INF_OLD_FREE_HEAD(r), ent);
        }
    }
    q->last_avail_idx = heads[0] & 0x7fff;
    pk->avail_wrap = heads[0] >> 15;
}

/* Used descriptors dev_flush has not published or counted yet (the
 * position alone cannot say: a whole lap brings it back to the same slot). */
static inline int pdev_unflushed(const struct emu_devq *q)
{
    return q->packed->first_pos != PK_NONE || q->packed->since != 0;
}

/* Publish the batch (its first descriptor's flags), then decide whether
 * the driver wants an interrupt. */
static int pdev_flush(struct emu_devq *q)
{
    struct emu_pring *pk = q->packed;
    if (pk->first_pos != PK_NONE) {
        STORE_REL16(PDESC_FLAGS(PDESC(q->desc, pk->first_pos)), pk->first_flags);
        pk->first_pos = PK_NONE;
    }
    uint32_t since = pk->since;
    if (!since)
        return 0;
    pk->since = 0;
    if (q->inflight) {
        uint8_t *r = q->inflight;
        uint16_t pos = q->signalled_used, wrap = pk->signalled_wrap;
        uint32_t left = since;
        while (left) {                   /* the batch's chains, by where they began */
            const struct emu_pchain *ch = &pk->chains[pos];
            if (!ch->n || ch->n > left)
                break;
            if (ch->ent < q->num)
                WRITE_ONCE(*INF_DESC(r, ch->ent), 0);
            left -= ch->n;
            pk_advance(&pos, &wrap, ch->n, q->num);
        }
        WRITE_ONCE(*INF_OLD_FREE_HEAD(r), READ_ONCE(*INF_FREE_HEAD(r)));
        WRITE_ONCE(*INF_OLD_USED_IDX(r), q->used_idx);
        WRITE_ONCE(*INF_OLD_USED_WRAP(r), (uint8_t)pk->used_wrap);
    }
    q->signalled_used = q->used_idx;
    pk->signalled_wrap = pk->used_wrap;
    FULL_FENCE();   /* used flags before reading the driver's event suppression */
    uint32_t ev = READ_ONCE(*(uint32_t *)q->avail);
    if (!pk_want(ev, q->features & EMU_QF_EVENT_IDX, q->used_idx, pk->used_wrap, since, q->num)) {
        q->st.suppressed++;
        return 0;
    }
    return emu_dev_signal(q);
}

/* Ask for (or stop asking for) kicks: the device event suppression
 * structure, one 32-bit store; with EVENT_IDX "kick me when you make the
 * descriptor at my position available". */
static void pdev_notify_enable(struct emu_devq *q, int enable)
{
    struct emu_pring *pk = q->packed;
    uint32_t v;
    if (!enable)
        v = pk_event(EMU_PRING_EVENT_FLAG_DISABLE, 0, 0);
    else if (q->features & EMU_QF_EVENT_IDX)
        v = pk_event(EMU_PRING_EVENT_FLAG_DESC, q->last_avail_idx, pk->avail_wrap);
    else
        v = pk_event(EMU_PRING_EVENT_FLAG_ENABLE, 0, 0);
    WRITE_ONCE(*(uint32_t *)q->used, v);
    if (q->features & EMU_QF_LOG)
        log_range(q->mem, &q->st, pk->event_gpa, EMU_PRING_EVENT_SIZE);
    FULL_FENCE();   /* the request before re-reading the ring */
}

/* ---- the one-copy burst with a packed ring on either side ---------------- */

struct pfast {
    const uint8_t *in;
    uint8_t *out;
    uint64_t out_gpa;
    uint32_t frame_len;
    uint16_t src_head, dst_head;   /* split: head index; packed: position | wrap << 15 */
    uint16_t src_id, dst_id;       /* packed: buffer ids */
};

/* Look ahead (taking nothing) for up to n TX chains of one direct
 * descriptor in one region: a packed ring ... */
static inline uint32_t pk_gather_tx(struct emu_devq *q, uint32_t n, struct rcache *rc_io,
                                    struct pfast *pk)
{
    const uint8_t *ring = q->desc;
    const struct emu_mem *m = q->mem;
    const uint16_t num = q->num;
    const uint32_t hl = q->hdr_len;
    uint16_t pos = q->last_avail_idx, wrap = q->packed->avail_wrap;
    struct rcache rc = *rc_io;
    uint32_t k;
    for (k = 0; k < n; k++) {
        const uint8_t *p = PDESC(ring, pos);
        uint16_t f = LOAD_ACQ16(PDESC_FLAGS(p));
        if (!pk_is_avail(f, wrap))
            break;
        struct pdesc d;
        pdesc_fetch(&d, p);
        if (unlikely((f & (EMU_VRING_DESC_F_NEXT | EMU_VRING_DESC_F_INDIRECT |
                           EMU_VRING_DESC_F_WRITE)) || d.len < hl))
            break;
        const uint8_t *in = rc_xlate(&rc, m, d.addr, d.len);
        if (unlikely(!in))
            break;
        __builtin_prefetch(in);
        pk[k].in = in;
        pk[k].frame_len = d.len - hl;
        pk[k].src_head = (uint16_t)(pos | wrap << 15);
        pk[k].src_id = d.id;
        pk_advance(&pos, &wrap, 1, num);
    }
    *rc_io = rc;
    return k;
}

/* ... or a split ring (n no more than its available entries). */
static inline uint32_t sp_gather_tx(struct emu_devq *q, uint32_t n, struct rcache *rc_io,
                                    struct pfast *pk)
{
    const uint16_t *ring = AVAIL_RING(q->avail, 0);
    const struct emu_mem *m = q->mem;
    const uint16_t num = q->num;
    const uint32_t hl = q->hdr_len;
    uint16_t idx = q->last_avail_idx;
    struct rcache rc = *rc_io;
    uint32_t k;
    for (k = 0; k < n; k++, idx++) {
        struct vdesc d;
        uint16_t head = READ_ONCE(ring[idx & (num - 1)]);
        if (unlikely(head >= num))
            break;
        desc_fetch(&d, DESC_AT(q->desc, head));
        if (unlikely((d.flags & (EMU_VRING_DESC_F_NEXT | EMU_VRING_DESC_F_INDIRECT |
                                 EMU_VRING_DESC_F_WRITE)) || d.len < hl))
            break;
        const uint8_t *in = rc_xlate(&rc, m, d.addr, d.len);
        if (unlikely(!in))
            break;
        __builtin_prefetch(in);
        pk[k].in = in;
        pk[k].frame_len = d.len - hl;
        pk[k].src_head = head;
    }
    *rc_io = rc;
    return k;
}

/* RX chains for the first n gathered frames, each one writable
 * descriptor the frame fits: a packed ring ... */
static inline uint32_t pk_gather_rx(struct emu_devq *q, uint32_t n, struct rcache *rc_io,
                                    struct pfast *pk)
{
    const uint8_t *ring = q->desc;
    const struct emu_mem *m = q->mem;
    const uint16_t num = q->num;
    const uint32_t hl = q->hdr_len;
    uint16_t pos = q->last_avail_idx, wrap = q->packed->avail_wrap;
    struct rcache rc = *rc_io;
    uint32_t k;
    for (k = 0; k < n; k++) {
        const uint8_t *p = PDESC(ring, pos);
        uint16_t f = LOAD_ACQ16(PDESC_FLAGS(p));
        if (!pk_is_avail(f, wrap))
            break;
        struct pdesc d;
        pdesc_fetch(&d, p);
        if (unlikely((f & (EMU_VRING_DESC_F_NEXT | EMU_VRING_DESC_F_INDIRECT |
                           EMU_VRING_DESC_F_WRITE)) != EMU_VRING_DESC_F_WRITE ||
                     d.len < (uint64_t)hl + pk[k].frame_len))
            break;
        uint8_t *out = rc_xlate(&rc, m, d.addr, d.len);
        if (unlikely(!out))
            break;
        pk[k].out = out;
        pk[k].out_gpa = d.addr;
        pk[k].dst_head = (uint16_t)(pos | wrap << 15);
        pk[k].dst_id = d.id;
        pk_advance(&pos, &wrap, 1, num);
    }
    *rc_io = rc;
    return k;
}

/* ... or a split ring (n no more than its available entries). */
static inline uint32_t sp_gather_rx(struct emu_devq *q, uint32_t n, struct rcache *rc_io,
                                    struct pfast *pk)
{
    const uint16_t *ring = AVAIL_RING(q->avail, 0);
    const struct emu_mem *m = q->mem;
    const uint16_t num = q->num;
    const uint32_t hl = q->hdr_len;
    uint16_t idx = q->last_avail_idx;
    struct rcache rc = *rc_io;
    uint32_t k;
    for (k = 0; k < n; k++, idx++) {
        struct vdesc d;
        uint16_t head = READ_ONCE(ring[idx & (num - 1)]);
        if (unlikely(head >= num))
            break;
        desc_fetch(&d, DESC_AT(q->desc, head));
        if (unlikely((d.flags & (EMU_VRING_DESC_F_NEXT | EMU_VRING_DESC_F_INDIRECT |
                                 EMU_VRING_DESC_F_WRITE)) != EMU_VRING_DESC_F_WRITE ||
                     d.len < (uint64_t)hl + pk[k].frame_len))
            break;
        uint8_t *out = rc_xlate(&rc, m, d.addr, d.len);
        if (unlikely(!out))
            break;
        pk[k].out = out;
        pk[k].out_gpa = d.addr;
        pk[k].dst_head = head;
    }
    *rc_io = rc;
    return k;
}

/* Take and complete a gathered one-descriptor chain. */
static inline void any_complete(struct emu_devq *q, uint16_t head, uint16_t id, uint32_t len,
                                int write)
{
    if (q->packed) {
        struct emu_pring *pk = q->packed;
        struct emu_pchain *ch = &pk->chains[head & 0x7fff];
        ch->id = id;
        ch->n = 1;
        ch->write = (uint16_t)write;
        ch->ent = PK_NONE;               /* no inflight area on this path */
        pk_advance(&q->last_avail_idx, &pk->avail_wrap, 1, q->num);
        pdev_used(q, head, len);
    } else {
        dev_take(q, head);
        dev_used(q, head, len);
    }
}

/* A packed ring's used side for one batch of one-descriptor chains, kept
 * in registers: at a batch's start everything the device took is used
 * (used == avail position), and each chain moves both by one. */
struct pcursor {
    uint8_t *ring;
    uint16_t pos, wrap, num, first_pos, first_flags;
};

HOT void pc_begin(struct pcursor *c, const struct emu_devq *q)
{
    const struct emu_pring *pk = q->packed;
    *c = (struct pcursor){q->desc, q->used_idx, pk->used_wrap, q->num, pk->first_pos,
                          pk->first_flags};
}

HOT void pc_used(struct pcursor *c, uint16_t id, uint32_t len, uint16_t w)
{
    uint8_t *p = PDESC(c->ring, c->pos);
    WRITE_ONCE(*PDESC_LEN(p), len);
    WRITE_ONCE(*PDESC_ID(p), id);
    const uint16_t fl = pk_used_flags(c->wrap) | w;
    if (c->first_pos == PK_NONE) {
        c->first_pos = c->pos;
        c->first_flags = fl;
    } else {
        STORE_REL16(PDESC_FLAGS(p), fl);
    }
    pk_advance(&c->pos, &c->wrap, 1, c->num);
}

HOT void pc_end(const struct pcursor *c, struct emu_devq *q, uint32_t n)
{
    struct emu_pring *pk = q->packed;
    q->used_idx = q->last_avail_idx = c->pos;
    pk->used_wrap = pk->avail_wrap = c->wrap;
    pk->first_pos = c->first_pos;
    pk->first_flags = c->first_flags;
    pk->since += n;
}

/* Move the gathered packets: header (first 10 bytes carry over,
 * num_buffers 1, the rest zero), frame, both completions.  `plain` (no
 * dirty log) completes packed sides through cursors in registers. */
HOT uint64_t any_batch_as(struct emu_devq *src, struct emu_devq *dst, const struct pfast *pk,
                          uint32_t n, int swap_mac, const int plain)
{
    const uint32_t shl = src->hdr_len, dhl = dst->hdr_len;
    const int sp = src->packed != NULL, dp = dst->packed != NULL;
    struct pcursor sc = {0}, dc = {0};
    if (plain && sp)
        pc_begin(&sc, src);
    if (plain && dp)
        pc_begin(&dc, dst);
    uint64_t bytes = 0;
    for (uint32_t k = 0; k < n; k++) {
        const uint8_t *in = pk[k].in;
        uint8_t *out = pk[k].out;
        uint32_t len = pk[k].frame_len, pl = 0;
        uint8_t h[20] = {0};
        memcpy(h, in, 10);
        h[10] = 1;                      /* num_buffers, little endian */
        if (likely(dhl == 12))
            memcpy(out, h, 12);
        else
            memcpy(out, h, dhl);
        if (swap_mac && len >= 12) {
            uint8_t mac[12];
            memcpy(mac, in + shl, 12);
            memcpy(out + dhl, mac + 6, 6);
            memcpy(out + dhl + 6, mac, 6);
            pl = 12;
        }
        guest_copy(out + dhl + pl, in + shl + pl, len - pl);
        if (plain && dp) {
            pc_used(&dc, pk[k].dst_id, dhl + len, EMU_VRING_DESC_F_WRITE);
        } else {
            if (dst->features & EMU_QF_LOG)
                log_range(dst->mem, &dst->st, pk[k].out_gpa, dhl + len);
            any_complete(dst, pk[k].dst_head, pk[k].dst_id, dhl + len, 1);
        }
        if (plain && sp)
            pc_used(&sc, pk[k].src_id, 0, 0);
        else
            any_complete(src, pk[k].src_head, pk[k].src_id, 0, 0);
        bytes += len;
    }
    if (plain && sp)
        pc_end(&sc, src, n);
    if (plain && dp)
        pc_end(&dc, dst, n);
    return bytes;
}

static inline uint64_t any_batch(struct emu_devq *src, struct emu_devq *dst,
                                 const struct pfast *pk, uint32_t n, int swap_mac)
{
    if (!((src->features | dst->features) & EMU_QF_LOG))
        return any_batch_as(src, dst, pk, n, swap_mac, 1);
    return any_batch_as(src, dst, pk, n, swap_mac, 0);
}

/* emu_dev_copy when either ring is packed: the same burst (the general
 * path is the split engine's, through the primitives that switch on the
 * format), with a fast path that gathers from either format. */
static int emu_pdev_copy(struct emu_devq *src, struct emu_devq *dst, uint32_t max,
                         uint32_t flags, struct emu_burst *res)
{
    struct copy_scratch *s = scratch_get();
    int first = EMU_OK;
    uint32_t hint_s = 0, hint_d = 0;
    memset(res, 0, sizeof *res);
    if (src->broken || dst->broken || src->hdr_len < 10 || src->hdr_len > 20 ||
        dst->hdr_len < 10 || dst->hdr_len > 20) {
        res->error = EMU_E_BROKEN;
        return EMU_E_BROKEN;
    }
    const int swap_mac = !!(flags & EMU_CF_SWAP_MAC);
    /* a capture, or a packed ring's inflight area, takes the general path */
    const int fast = !src->cap && !dst->cap && !(src->packed && src->inflight) &&
                     !(dst->packed && dst->inflight);
    struct rcache rs = {0, 0, NULL}, rd = {0, 0, NULL};
    struct pfast batch[COPY_BATCH];
    uint64_t bytes = 0;
    while (res->packets + res->drops + res->errors < max) {
        uint32_t avail = dev_avail(src, &first);
        if (!avail)
            break;
        uint32_t n = min_u32(max - res->packets - res->drops - res->errors, COPY_BATCH);
        uint32_t k = 0;
        if (fast) {
            k = src->packed ? pk_gather_tx(src, n, &rs, batch)
                            : sp_gather_tx(src, min_u32(n, avail), &rs, batch);
            if (k)
                k = dst->packed ? pk_gather_rx(dst, k, &rd, batch)
                                : sp_gather_rx(dst, min_u32(k, dev_avail_peek(dst)), &rd, batch);
        }
        if (k) {
            bytes += any_batch(src, dst, batch, k, swap_mac);
            res->packets += k;
            continue;
        }
        /* the general way, as emu_dev_copy */
        uint16_t head = dev_pop(src);
        int err = resolve_chain(src, head, 0, &s->src, &hint_s);
        if (!err && s->src.total < src->hdr_len)
            err = EMU_E_SHORT_HDR;
        if (unlikely(err)) {
            set_error(&src->last_error, &src->st, &first, err);
            dev_used(src, head, 0);
            res->errors++;
            continue;
        }
        struct pkt_src ps;
        pkt_from_chain(&ps, &s->src, src->hdr_len, swap_mac);
        int dropped;
        err = rx_fill(dst, &ps, &s->dst, &s->pk, &first, &hint_d, &dropped);
        if (err == EMU_E_NOBUF) {
            if (flags & EMU_CF_DROP_FULL) {
                dropped = 1;
            } else {
                dev_unpop(src, &head, 1);
                res->blocked = 1;
                break;
            }
        }
        dev_used(src, head, 0);
        if (dropped) {
            src->st.drops++;
            res->drops++;
        } else {
            res->packets++;
            bytes += ps.len;
            if (unlikely(src->cap != NULL))
                cap_frame(src->cap, ps.flat, ps.cur, ps.len, NULL, 0);
            if (unlikely(dst->cap != NULL))
                cap_frame(dst->cap, ps.flat, ps.cur, ps.len, ps.prefix, ps.prefix_len);
        }
    }
    src->st.packets += res->packets;
    dst->st.packets += res->packets;
    src->st.bytes += bytes;
    dst->st.bytes += bytes;
    res->bytes_lo = (uint32_t)bytes;
    res->dst_notified = dev_flush(dst);
    res->src_notified = dev_flush(src);
    res->error = first;
    return first;
}

/* ---- driver side --------------------------------------------------------- */

/* Both wrap counters start at 1 (§2.8.1); a zeroed descriptor is then
 * neither available nor used. */
static void pdrv_init(struct emu_drvq *q)
{
    struct emu_pring *pk = q->packed;
    pk->avail_wrap = pk->used_wrap = pk->signalled_wrap = 1;
    pk->first_pos = PK_NONE;
    pk->since = 0;
    pk->skipped = 0;
    for (uint32_t i = 0; i < q->num; i++)
        WRITE_ONCE(*PDESC_FLAGS(PDESC(q->desc, i)), 0);
    WRITE_ONCE(*(uint32_t *)q->avail, pk_event(EMU_PRING_EVENT_FLAG_ENABLE, 0, 0));
}

HOT void pdrv_begin(struct drv *d)
{
    const struct emu_pring *pk = d->pk;
    d->pkr = (struct pdrv_regs){pk->avail_wrap, pk->used_wrap, pk->first_pos, pk->first_flags};
}

HOT void pdrv_end(const struct drv *d)
{
    struct emu_pring *pk = d->pk;
    pk->avail_wrap = d->pkr.avail_wrap;
    pk->used_wrap = d->pkr.used_wrap;
    pk->first_pos = d->pkr.first_pos;
    pk->first_flags = d->pkr.first_flags;
}

/* addr, len, id of a ring descriptor (its flags are stored apart) */
static inline void pdesc_put(uint8_t *p, uint64_t addr, uint32_t len, uint16_t id)
{
    WRITE_ONCE(*(uint64_t *)p, addr);
    WRITE_ONCE(*PDESC_LEN(p), len);
    WRITE_ONCE(*PDESC_ID(p), id);
}

/* An indirect table entry: only WRITE is valid in its flags (§2.8.18);
 * the table may sit at any address, hence memcpy. */
static inline void ptable_put(uint8_t *p, uint64_t addr, uint32_t len, uint16_t flags)
{
    struct pdesc want = {addr, len, 0, flags}, have;
    memcpy(&have, p, sizeof have);
    if (have.addr != want.addr || have.len != want.len || have.id != want.id ||
        have.flags != want.flags)
        memcpy(p, &want, sizeof want);
}

/* Make slot s available: its descriptors at the driver's position, the
 * buffer id s in each (the spec reads the last one, QEMU the first). */
HOT void pdrv_post(struct drv *d, uint16_t s, uint32_t len, int rx)
{
    const uint64_t gpa = d->buf_gpa + (uint64_t)s * d->buf_size;
    const uint16_t w = rx ? EMU_VRING_DESC_F_WRITE : 0, num = d->num;
    uint16_t pos = d->avail_idx, wrap = d->pkr.avail_wrap;
    const uint16_t head = pos;
    uint16_t hflags;
    if (likely(d->layout == 0)) {
        pdesc_put(PDESC(d->desc, pos), gpa, len, s);
        hflags = pk_avail_flags(wrap) | w;
        pk_advance(&pos, &wrap, 1, num);
    } else if (d->layout == 1) {                 /* header + data */
        const uint32_t h = d->hdr_len;
        pdesc_put(PDESC(d->desc, pos), gpa, h, s);
        hflags = pk_avail_flags(wrap) | w | EMU_VRING_DESC_F_NEXT;
        pk_advance(&pos, &wrap, 1, num);
        pdesc_put(PDESC(d->desc, pos), gpa + h, len - h, s);
        STORE_REL16(PDESC_FLAGS(PDESC(d->desc, pos)), pk_avail_flags(wrap) | w);
        pk_advance(&pos, &wrap, 1, num);
    } else {                                      /* an indirect table of those two */
        const uint32_t h = d->hdr_len, tsize = 2 * EMU_PRING_DESC_SIZE;
        uint8_t *t = d->q->ind_host + tsize * (size_t)s;
        ptable_put(t, gpa, h, w);
        ptable_put(t + EMU_PRING_DESC_SIZE, gpa + h, len - h, w);
        pdesc_put(PDESC(d->desc, pos), d->q->ind_gpa + tsize * (uint64_t)s, tsize, s);
        hflags = pk_avail_flags(wrap) | EMU_VRING_DESC_F_INDIRECT;
        pk_advance(&pos, &wrap, 1, num);
    }
    if (d->pkr.first_pos == PK_NONE) {
        d->pkr.first_pos = head;
        d->pkr.first_flags = hflags;
    } else {
        STORE_REL16(PDESC_FLAGS(PDESC(d->desc, head)), hflags);
    }
    d->avail_idx = pos;
    d->pkr.avail_wrap = wrap;
}

/* Publish the batch, then kick if the device asked for it. */
static int pdrv_flush(struct emu_drvq *q)
{
    struct emu_pring *pk = q->packed;
    if (pk->first_pos != PK_NONE) {
        STORE_REL16(PDESC_FLAGS(PDESC(q->desc, pk->first_pos)), pk->first_flags);
        pk->first_pos = PK_NONE;
    }
    /* descriptors made available since the last decision: at most a ring's
     * worth (they are all still the device's), so the positions say it */
    uint32_t since = (uint32_t)q->avail_idx - q->kicked_avail +
                     (pk->avail_wrap != pk->signalled_wrap ? q->num : 0);
    if (!since)
        return 0;
    q->kicked_avail = q->avail_idx;
    pk->signalled_wrap = pk->avail_wrap;
    FULL_FENCE();   /* flags before reading the device's event suppression */
    uint32_t ev = READ_ONCE(*(uint32_t *)q->used);
    if (!pk_want(ev, q->features & EMU_QF_EVENT_IDX, q->avail_idx, pk->avail_wrap, since,
                 q->num)) {
        q->st.suppressed++;
        return 0;
    }
    return emu_drv_kick(q);
}

static void pdrv_irq_enable(struct emu_drvq *q, int enable)
{
    struct emu_pring *pk = q->packed;
    uint32_t v;
    if (!enable)
        v = pk_event(EMU_PRING_EVENT_FLAG_DISABLE, 0, 0);
    else if (q->features & EMU_QF_EVENT_IDX)
        v = pk_event(EMU_PRING_EVENT_FLAG_DESC, q->last_used_idx, pk->used_wrap);
    else
        v = pk_event(EMU_PRING_EVENT_FLAG_ENABLE, 0, 0);
    WRITE_ONCE(*(uint32_t *)q->avail, v);
    FULL_FENCE();   /* the request before re-reading the ring */
}

/* How far, in the order buffers went out, the buffer `id` is from the
 * oldest one in flight (0: it is the oldest), or -1 if it is not in
 * flight within `left`.  The free ring's far part holds the buffers in
 * flight in the order they were posted while completions come in order. */
static inline int32_t pk_in_order_distance(const struct drv *d, uint16_t oldest,
                                           uint16_t left, uint16_t id)
{
    const uint16_t mask = (uint16_t)(d->nslots - 1);
    for (uint16_t j = 0; j < left; j++)
        if (d->free_slots[(uint16_t)(oldest + j) & mask] == id)
            return j;
    return -1;
}

/* Used descriptors ready at the driver's position, each standing for one
 * buffer -- or, with IN_ORDER, for every buffer up to its id (§2.8.8:
 * the driver "needs to look up the used Buffer ID and calculate the batch
 * size to be able to advance to where the next used descriptor will be
 * written by the device"). */
HOT uint16_t pdrv_used_ready(struct drv *d, int *first)
{
    const uint16_t ndesc = d->layout == 1 ? 2 : 1, num = d->num;
    const int in_order = !!(d->features & EMU_QF_IN_ORDER);
    uint16_t left = (uint16_t)(d->nslots - d->num_free);
    uint16_t pos = d->last_used_idx, wrap = d->pkr.used_wrap, n = 0;
    uint16_t oldest = (uint16_t)(d->free_head + d->num_free);
    (void)first;
    while (left) {
        const uint8_t *p = PDESC(d->desc, pos);
        if (!pk_is_used(LOAD_ACQ16(PDESC_FLAGS(p)), wrap))
            break;
        uint16_t k = 1;
        if (in_order) {
            int32_t j = pk_in_order_distance(d, oldest, left, READ_ONCE(*PDESC_ID(p)));
            if (j > 0)
                k = (uint16_t)(j + 1);
        }
        n++;
        left = (uint16_t)(left - k);
        oldest = (uint16_t)(oldest + k);
        pk_advance(&pos, &wrap, (uint32_t)k * ndesc, num);
    }
    return n;
}

/* Take the used descriptor at the driver's position: the slot (after the
 * older ones an in-order batch completed), or -1 for a bad id. */
HOT int pdrv_take(struct drv *d, uint32_t *len, int *first)
{
    struct emu_pring *pk = d->pk;
    const uint16_t ndesc = d->layout == 1 ? 2 : 1, num = d->num;
    const uint8_t *p = PDESC(d->desc, d->last_used_idx);
    uint32_t id = READ_ONCE(*PDESC_ID(p));
    *len = READ_ONCE(*PDESC_LEN(p));
    if (unlikely(id >= d->nslots || !d->busy[id])) {
        set_error(&d->q->last_error, &d->q->st, first, EMU_E_USED_ID);
        pk_advance(&d->last_used_idx, &d->pkr.used_wrap, ndesc, num);
        return -1;
    }
    if (d->features & EMU_QF_IN_ORDER) {
        uint16_t oldest = (uint16_t)(d->free_head + d->num_free);
        int32_t j = pk_in_order_distance(d, oldest, (uint16_t)(d->nslots - d->num_free),
                                         (uint16_t)id);
        if (unlikely(j < 0)) {           /* busy, yet not where the order says */
            set_error(&d->q->last_error, &d->q->st, first, EMU_E_USED_ID);
            pk_advance(&d->last_used_idx, &d->pkr.used_wrap, ndesc, num);
            return -1;
        }
        for (; j > 0; j--) {             /* completed by this one: back to the free ring */
            uint16_t s = d->free_slots[(uint16_t)(d->free_head + d->num_free) &
                                       (uint16_t)(d->nslots - 1)];
            drv_free(d, s);
            pk->skipped++;
            pk_advance(&d->last_used_idx, &d->pkr.used_wrap, ndesc, num);
        }
    }
    pk_advance(&d->last_used_idx, &d->pkr.used_wrap, ndesc, num);
    return (int)id;
}

HOT uint32_t pdrv_peek_slot(const struct drv *d)
{
    return READ_ONCE(*PDESC_ID(PDESC(d->desc, d->last_used_idx)));
}

int emu_drv_has_used(struct emu_drvq *q)
{
    if (!q->packed)
        return LOAD_ACQ16(USED_IDX(q->used)) != q->last_used_idx;
    if (q->num_free == q->nslots)
        return 0;
    return pk_is_used(LOAD_ACQ16(PDESC_FLAGS(PDESC(q->desc, q->last_used_idx))),
                      q->packed->used_wrap);
}
