/* emu/_ring.c: the split-virtqueue data path.
 *
 * Everything the guest or the peer controls (ring indexes, descriptors,
 * indirect tables, lengths, headers) is read once into a local copy and
 * validated before use; every address is translated through the queue's
 * region table and must lie inside mapped memory.  A bad chain is counted
 * and returned to its driver with length 0; a ring whose avail->idx jumps
 * is marked broken.  Ring indexes are single aligned 16-bit atomics:
 * avail->idx read with acquire, used->idx written with release (a torn
 * byte-wise store at 0x..ff crashed DPDK here).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EMU_RING_IMPL
#include "_ring.h"
#include "_ring_packed.h"   /* packed rings: the primitives below switch to them */

#define likely(x)   __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
/* hot-loop helpers: inlined, so the state they take by pointer stays in
 * registers (see struct drv) */
#define HOT static inline __attribute__((always_inline))

#include "_efd.c"    /* efd_signal / efd_drain: never block on a peer's eventfd */

/* ---- shared-memory access ------------------------------------------------ */
#define READ_ONCE(x)      (*(const volatile __typeof__(x) *)&(x))
#define WRITE_ONCE(x, v)  (*(volatile __typeof__(x) *)&(x) = (v))
#define LOAD_ACQ16(p)     __atomic_load_n((uint16_t *)(p), __ATOMIC_ACQUIRE)
#define STORE_REL16(p, v) __atomic_store_n((uint16_t *)(p), (uint16_t)(v), __ATOMIC_RELEASE)
#define FULL_FENCE()      __atomic_thread_fence(__ATOMIC_SEQ_CST)

/* Bytes from one guest buffer to another.  A peer may make an RX buffer
 * alias one of its TX buffers: the ranges may overlap, which memcpy does
 * not allow (ASan caught it while fuzzing); memmove costs the same here. */
#define guest_copy(d, s, n) memmove((d), (s), (n))

struct vdesc { uint64_t addr; uint32_t len; uint16_t flags; uint16_t next; };
struct vused_elem { uint32_t id; uint32_t len; };
_Static_assert(sizeof(struct vdesc) == EMU_VRING_DESC_SIZE, "virtq_desc layout");
_Static_assert(sizeof(struct vused_elem) == EMU_VRING_USED_ELEM_SIZE, "virtq_used_elem layout");

/* split ring layout: avail = flags, idx, ring[num], used_event;
 *                    used  = flags, idx, ring[num]{id,len}, avail_event */
#define AVAIL_FLAGS(a)      ((uint16_t *)(a))
#define AVAIL_IDX(a)        ((uint16_t *)(a) + 1)
#define AVAIL_RING(a, i)    ((uint16_t *)(a) + 2 + (i))
#define USED_EVENT(a, num)  ((uint16_t *)(a) + 2 + (num))
#define USED_FLAGS(u)       ((uint16_t *)(u))
#define USED_IDX(u)         ((uint16_t *)(u) + 1)
#define USED_RING(u, i)     ((struct vused_elem *)((uint8_t *)(u) + EMU_VRING_RING_ENTRIES) + (i))
#define AVAIL_EVENT(u, num) ((uint16_t *)((uint8_t *)(u) + EMU_VRING_RING_ENTRIES + \
                                          EMU_VRING_USED_ELEM_SIZE * (size_t)(num)))
/* descriptor i of a descriptor table (the ring's, or an indirect one) */
#define DESC_AT(table, i)   ((table) + EMU_VRING_DESC_SIZE * (size_t)(i))

static inline int need_event(uint16_t event, uint16_t new_idx, uint16_t old)
{
    return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

int emu_ring_abi(void) { return EMU_RING_ABI; }

const char *emu_strerror(int code)
{
    switch (code) {
    case EMU_OK: return "ok";
    case EMU_E_AVAIL_IDX: return "avail index moved more than the ring size ahead";
    case EMU_E_HEAD: return "chain head index out of range";
    case EMU_E_NEXT: return "descriptor next index out of range";
    case EMU_E_CHAIN_LONG: return "descriptor chain longer than its table (loop?)";
    case EMU_E_INDIRECT_NOT_NEG: return "indirect descriptor without INDIRECT_DESC";
    case EMU_E_INDIRECT_NEXT: return "indirect descriptor with NEXT set";
    case EMU_E_INDIRECT_LEN: return "indirect table length invalid";
    case EMU_E_NESTED_INDIRECT: return "indirect descriptor inside a chain or table";
    case EMU_E_ADDR: return "buffer outside guest memory";
    case EMU_E_ZERO_LEN: return "zero-length descriptor";
    case EMU_E_LEN_OVERFLOW: return "chain length overflows 32 bits";
    case EMU_E_DIRECTION: return "descriptor direction wrong for this queue";
    case EMU_E_SHORT_HDR: return "chain shorter than the virtio-net header";
    case EMU_E_TOO_MANY_SEGS: return "chain has too many segments";
    case EMU_E_USED_IDX: return "used index moved more than the buffers in flight";
    case EMU_E_USED_ID: return "used id is not a buffer in flight";
    case EMU_E_USED_LEN: return "used length larger than the buffer";
    case EMU_E_NUM_BUFFERS: return "bad num_buffers in a merged packet";
    case EMU_E_BROKEN: return "queue is broken and needs a reset";
    case EMU_E_VERIFY: return "payload does not match the generator pattern";
    case EMU_E_NOBUF: return "caller buffer too small";
    case EMU_E_DESC_NOT_AVAIL: return "descriptor of a chain not marked available";
    }
    return "unknown error";
}

uint64_t emu_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- guest memory ------------------------------------------------------- */

/* Host address of [gpa, gpa+len) if it lies inside one region, else NULL.
 * len 0 is treated as 1.  Overflow-safe: no addition on guest values. */
static inline uint8_t *xlate(const struct emu_mem *m, uint64_t gpa, uint64_t len,
                             uint32_t *hint)
{
    if (len == 0)
        len = 1;
    const struct emu_region *r = &m->regions[*hint < m->nregions ? *hint : 0];
    if (likely(m->nregions && gpa - r->gpa < r->size && len <= r->size - (gpa - r->gpa)))
        return r->host + (gpa - r->gpa);
    /* binary search: last region with r->gpa <= gpa */
    uint32_t lo = 0, hi = m->nregions;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (m->regions[mid].gpa <= gpa)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return NULL;
    r = &m->regions[lo - 1];
    if (gpa - r->gpa < r->size && len <= r->size - (gpa - r->gpa)) {
        *hint = lo - 1;
        return r->host + (gpa - r->gpa);
    }
    return NULL;
}

/* Longest prefix of [gpa, gpa+len) inside one region: host address and
 * how many bytes (a buffer may straddle two adjacent regions). */
static inline uint8_t *xlate_prefix(const struct emu_mem *m, uint64_t gpa, uint64_t len,
                                    uint64_t *got)
{
    uint32_t lo = 0, hi = m->nregions;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (m->regions[mid].gpa <= gpa)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return NULL;
    const struct emu_region *r = &m->regions[lo - 1];
    uint64_t off = gpa - r->gpa;
    if (off >= r->size)
        return NULL;
    *got = r->size - off < len ? r->size - off : len;
    return r->host + off;
}

uint8_t *emu_mem_translate(const struct emu_mem *m, uint64_t gpa, uint64_t len)
{
    uint32_t hint = 0;
    return xlate(m, gpa, len, &hint);
}

static inline void log_range(const struct emu_mem *m, struct emu_stats *st,
                             uint64_t gpa, uint64_t len)
{
    if (!m->log || len == 0)
        return;
    uint64_t first = gpa >> 12, last = (gpa + len - 1) >> 12;
    if (gpa + len - 1 < gpa)
        last = UINT64_MAX >> 12;
    for (uint64_t p = first; p <= last; p++) {
        if (p / 8 >= m->log_size) {
            st->log_overflow++;
            return;
        }
        __atomic_fetch_or(&m->log[p / 8], (uint8_t)(1u << (p % 8)), __ATOMIC_RELAXED);
    }
}

/* ---- frame capture (filter-dump) ---------------------------------------- */

#define CAP_IOV 64

/* iov[0] is filled here with the pcap record header; iov[1..n) hold the
 * frame's bytes, already cut at snaplen. */
static __attribute__((noinline)) void cap_write(struct emu_capture *c, struct iovec *iov,
                                                int n, uint32_t orig_len)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint32_t caplen = 0;
    for (int i = 1; i < n; i++)
        caplen += (uint32_t)iov[i].iov_len;
    uint32_t hdr[4] = {(uint32_t)ts.tv_sec, (uint32_t)(ts.tv_nsec / 1000), caplen, orig_len};
    iov[0].iov_base = hdr;
    iov[0].iov_len = sizeof hdr;
    ssize_t r = writev(c->fd, iov, n);
    if (r != (ssize_t)(sizeof hdr + caplen)) {
        __atomic_fetch_add(&c->errors, 1, __ATOMIC_RELAXED);
        return;
    }
    __atomic_fetch_add(&c->frames, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&c->bytes, caplen, __ATOMIC_RELAXED);
}

/* Append [p, p+n) (clipped to what is left of the snap length). */
static inline int cap_add(struct iovec *iov, int k, uint32_t *room, const uint8_t *p, uint32_t n)
{
    if (n > *room)
        n = *room;
    if (!n || k >= CAP_IOV)
        return k;
    iov[k].iov_base = (void *)p;
    iov[k].iov_len = n;
    *room -= n;
    return k + 1;
}

static void cap_flat(struct emu_capture *c, const uint8_t *p, uint32_t len)
{
    struct iovec iov[2];
    uint32_t room = c->snaplen;
    int k = cap_add(iov, 1, &room, p, len);
    cap_write(c, iov, k, len);
}

/* ---- chains ------------------------------------------------------------- */

struct seg {
    uint8_t *host;
    uint32_t len;
    uint64_t gpa;
};

struct chain {
    struct seg segs[EMU_MAX_SEGS];
    uint32_t nsegs;
    uint32_t total;
};

static inline void set_error(int32_t *last, struct emu_stats *st, int *first, int code)
{
    *last = code;
    st->errors++;
    if (*first == EMU_OK)
        *first = code;
}

/* Copy one descriptor out of guest memory.  An indirect table may sit at
 * any guest address (the spec asks no alignment of it), so this is a byte
 * copy, not typed loads that would be misaligned (undefined behaviour);
 * the barrier keeps the compiler from reading guest memory again instead
 * of the copy (no double fetch). */
static inline void desc_fetch(struct vdesc *d, const uint8_t *p)
{
    memcpy(d, p, sizeof *d);
    __asm__ __volatile__("" ::: "memory");
}

/* The general walk, from the chain's first descriptor d (already fetched
 * from the ring's table at index head). */
static int resolve_chain_slow(struct emu_devq *q, struct vdesc d, int write,
                              struct chain *c, uint32_t *hint)
{
    const struct emu_mem *m = q->mem;
    const uint8_t *table = q->desc;
    uint32_t table_size = q->num, steps = 0;
    int in_table = 0;

    for (;;) {
        if (++steps > table_size)
            return EMU_E_CHAIN_LONG;
        if (d.flags & EMU_VRING_DESC_F_INDIRECT) {
            if (in_table || steps != 1)
                return EMU_E_NESTED_INDIRECT;
            if (!(q->features & EMU_QF_INDIRECT))
                return EMU_E_INDIRECT_NOT_NEG;
            if (d.flags & EMU_VRING_DESC_F_NEXT)
                return EMU_E_INDIRECT_NEXT;
            if (d.len == 0 || d.len % EMU_VRING_DESC_SIZE ||
                d.len / EMU_VRING_DESC_SIZE > q->num)
                return EMU_E_INDIRECT_LEN;
            table = xlate(m, d.addr, d.len, hint);
            if (!table)
                return EMU_E_ADDR;
            table_size = d.len / EMU_VRING_DESC_SIZE;
            in_table = 1;
            steps = 0;
            desc_fetch(&d, table);
            continue;
        }
        if (!!(d.flags & EMU_VRING_DESC_F_WRITE) != write)
            return EMU_E_DIRECTION;
        if (d.len == 0)
            return EMU_E_ZERO_LEN;
        if ((uint64_t)c->total + d.len > UINT32_MAX)
            return EMU_E_LEN_OVERFLOW;
        uint8_t *h = xlate(m, d.addr, d.len, hint);
        if (likely(h != NULL)) {
            if (c->nsegs >= EMU_MAX_SEGS)
                return EMU_E_TOO_MANY_SEGS;
            c->segs[c->nsegs++] = (struct seg){h, d.len, d.addr};
        } else {
            /* maybe it straddles adjacent regions: split it */
            uint64_t a = d.addr, left = d.len;
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
        c->total += d.len;
        if (!(d.flags & EMU_VRING_DESC_F_NEXT))
            return EMU_OK;
        if (d.next >= table_size)
            return EMU_E_NEXT;
        desc_fetch(&d, DESC_AT(table, d.next));
    }
}

/* Walk the chain at head, translating every buffer.  write: 1 for a
 * device-writable (RX) chain, 0 for a device-readable (TX) chain.  The
 * chain nearly every driver posts -- one direct descriptor inside one
 * region -- takes the short way, with the same checks. */
static inline int resolve_chain(struct emu_devq *q, uint16_t head, int write,
                                struct chain *c, uint32_t *hint)
{
    struct vdesc d;
    if (q->packed)
        return pdev_resolve(q, head, write, c, hint);
    c->nsegs = 0;
    c->total = 0;
    if (unlikely(head >= q->num))
        return EMU_E_HEAD;
    desc_fetch(&d, DESC_AT(q->desc, head));
    const uint16_t want = write ? EMU_VRING_DESC_F_WRITE : 0;
    if (likely((d.flags & (EMU_VRING_DESC_F_NEXT | EMU_VRING_DESC_F_INDIRECT |
                           EMU_VRING_DESC_F_WRITE)) == want && d.len)) {
        uint8_t *h = xlate(q->mem, d.addr, d.len, hint);
        if (likely(h != NULL)) {
            c->segs[0] = (struct seg){h, d.len, d.addr};
            c->nsegs = 1;
            c->total = d.len;
            return EMU_OK;
        }
    }
    return resolve_chain_slow(q, d, write, c, hint);
}

/* cursor over a resolved chain */
struct cursor { const struct chain *c; uint32_t seg, off; };

static inline uint32_t cursor_read(struct cursor *cur, uint8_t *dst, uint32_t n)
{
    uint32_t done = 0;
    while (done < n && cur->seg < cur->c->nsegs) {
        const struct seg *s = &cur->c->segs[cur->seg];
        uint32_t take = s->len - cur->off;
        if (take > n - done)
            take = n - done;
        guest_copy(dst + done, s->host + cur->off, take);
        done += take;
        cur->off += take;
        if (cur->off == s->len) {
            cur->seg++;
            cur->off = 0;
        }
    }
    return done;
}

static inline void cursor_skip(struct cursor *cur, uint32_t n)
{
    while (n && cur->seg < cur->c->nsegs) {
        const struct seg *s = &cur->c->segs[cur->seg];
        uint32_t take = s->len - cur->off;
        if (take > n)
            take = n;
        n -= take;
        cur->off += take;
        if (cur->off == s->len) {
            cur->seg++;
            cur->off = 0;
        }
    }
}

/* Capture a frame: the first pl bytes from prefix (swapped MACs), the rest
 * from flat or from the chain at cur (positioned at the frame's start). */
static __attribute__((noinline)) void cap_frame(struct emu_capture *c, const uint8_t *flat,
                                                struct cursor cur, uint32_t len,
                                                const uint8_t *prefix, uint32_t pl)
{
    struct iovec iov[CAP_IOV];
    uint32_t room = c->snaplen;
    int k = 1;
    if (pl > len)
        pl = len;
    if (pl)
        k = cap_add(iov, k, &room, prefix, pl);
    if (flat) {
        k = cap_add(iov, k, &room, flat + pl, len - pl);
    } else {
        uint32_t left = len - pl;
        cursor_skip(&cur, pl);
        while (left && cur.seg < cur.c->nsegs) {
            const struct seg *sg = &cur.c->segs[cur.seg];
            uint32_t take = sg->len - cur.off;
            if (take > left)
                take = left;
            k = cap_add(iov, k, &room, sg->host + cur.off, take);
            left -= take;
            cur.seg++;
            cur.off = 0;
        }
    }
    cap_write(c, iov, k, len);
}

/* ---- device side -------------------------------------------------------- */

void emu_devq_reset(struct emu_devq *q)
{
    if (q->packed) {
        pdev_reset(q);
        return;
    }
    q->used_idx = q->used ? LOAD_ACQ16(USED_IDX(q->used)) : 0;
    q->avail_idx_cache = q->last_avail_idx;
    q->signalled_used = q->used_idx;
    q->broken = 0;
    q->last_error = EMU_OK;
}

/* Entries available to pop; marks the queue broken on an index jump. */
static inline uint32_t dev_avail(struct emu_devq *q, int *first_err)
{
    if (q->packed)
        return pdev_avail(q, first_err);
    uint16_t n = (uint16_t)(q->avail_idx_cache - q->last_avail_idx);
    if (n)
        return n;
    if (unlikely(q->broken))    /* counted once, when it broke */
        return 0;
    uint16_t idx = LOAD_ACQ16(AVAIL_IDX(q->avail));
    n = (uint16_t)(idx - q->last_avail_idx);
    if (unlikely(n > q->num)) {
        q->broken = 1;
        set_error(&q->last_error, &q->st, first_err, EMU_E_AVAIL_IDX);
        return 0;
    }
    q->avail_idx_cache = idx;
    return n;
}

/* Entries available, for looking ahead only: a bad avail->idx reads as
 * none here; whoever pops next finds it and marks the ring broken. */
static inline uint32_t dev_avail_peek(struct emu_devq *q)
{
    if (q->broken)
        return 0;
    uint16_t n = (uint16_t)(q->avail_idx_cache - q->last_avail_idx);
    if (n)
        return n;
    uint16_t idx = LOAD_ACQ16(AVAIL_IDX(q->avail));
    n = (uint16_t)(idx - q->last_avail_idx);
    if (unlikely(n > q->num))
        return 0;
    q->avail_idx_cache = idx;
    return n;
}

static inline uint32_t min_u32(uint32_t a, uint32_t b)
{
    return a < b ? a : b;
}

uint32_t emu_dev_avail(struct emu_devq *q)
{
    int e = EMU_OK;
    if (q->broken)
        return 0;
    if (q->packed)
        return pdev_count_avail(q);
    q->avail_idx_cache = q->last_avail_idx;   /* force a fresh read */
    return dev_avail(q, &e);
}

/* Take the next avail entry, whose head the caller has read (once). */
static inline void dev_take(struct emu_devq *q, uint16_t head)
{
    q->last_avail_idx++;
    if (q->inflight && head < q->num) {
        uint8_t *d = q->inflight + 16 + 16 * (size_t)head;
        WRITE_ONCE(*(uint64_t *)(d + 8), ++q->inflight_counter);
        WRITE_ONCE(*d, 1);
    }
}

static inline uint16_t dev_pop(struct emu_devq *q)
{
    if (q->packed)
        return pdev_pop(q);
    uint16_t head = READ_ONCE(*AVAIL_RING(q->avail, q->last_avail_idx & (q->num - 1)));
    dev_take(q, head);
    return head;
}

/* Put popped heads back (the packet could not be placed): they are in the
 * avail ring again, so the inflight region must not also list them, or a
 * reconnecting back-end would resubmit them and then pop them again. */
static inline void dev_unpop(struct emu_devq *q, const uint16_t *heads, uint32_t n)
{
    if (q->packed) {
        pdev_unpop(q, heads, n);
        return;
    }
    q->last_avail_idx = (uint16_t)(q->last_avail_idx - n);
    if (q->inflight)
        for (uint32_t i = 0; i < n; i++)
            if (heads[i] < q->num)
                WRITE_ONCE(*(q->inflight + 16 + 16 * (size_t)heads[i]), 0);
}

/* An element that already holds (id, len) is not rewritten: the driver
 * only reads the used ring, and with in-order completions each lap writes
 * the same elements, so the line can stay shared with the driver's core
 * instead of moving to ours and back once per packet. */
static inline void used_put(uint8_t *used, uint16_t slot, uint32_t id, uint32_t len)
{
    struct vused_elem *e = USED_RING(used, slot);
    if (READ_ONCE(e->id) != id)
        WRITE_ONCE(e->id, id);
    if (READ_ONCE(e->len) != len)
        WRITE_ONCE(e->len, len);
}

static inline void dev_used(struct emu_devq *q, uint32_t id, uint32_t len)
{
    if (q->packed) {
        pdev_used(q, (uint16_t)id, len);
        return;
    }
    used_put(q->used, q->used_idx & (q->num - 1), id, len);
    if (q->features & EMU_QF_LOG)
        log_range(q->mem, &q->st, q->used_gpa + EMU_VRING_RING_ENTRIES + EMU_VRING_USED_ELEM_SIZE *
                  (uint64_t)(q->used_idx & (q->num - 1)), EMU_VRING_USED_ELEM_SIZE);
    q->used_idx++;
    if (q->inflight && id < q->num)
        WRITE_ONCE(*(q->inflight + 16 + 16 * (size_t)id), 0);
}

/* Completions dev_flush would publish (either format). */
static inline int dev_unflushed(const struct emu_devq *q)
{
    if (q->packed)
        return pdev_unflushed(q);
    return q->used_idx != q->signalled_used;
}

/* Publish used->idx, then decide whether the driver wants an interrupt. */
static int dev_flush(struct emu_devq *q)
{
    if (q->packed)
        return pdev_flush(q);
    uint16_t old = q->signalled_used, new_idx = q->used_idx;
    if (old == new_idx)
        return 0;
    STORE_REL16(USED_IDX(q->used), new_idx);
    if (q->features & EMU_QF_LOG)
        log_range(q->mem, &q->st, q->used_gpa + 2, 2);
    if (q->inflight)
        WRITE_ONCE(*(uint16_t *)(q->inflight + 14), new_idx);
    q->signalled_used = new_idx;
    FULL_FENCE();   /* used->idx store before reading used_event/flags */
    int want;
    if (q->features & EMU_QF_EVENT_IDX)
        want = need_event(READ_ONCE(*USED_EVENT(q->avail, q->num)), new_idx, old);
    else
        want = !(READ_ONCE(*AVAIL_FLAGS(q->avail)) & EMU_VRING_AVAIL_F_NO_INTERRUPT);
    if (!want) {
        q->st.suppressed++;
        return 0;
    }
    return emu_dev_signal(q);
}

int emu_dev_signal(struct emu_devq *q)
{
    q->st.notifies++;
    if (q->call_fd >= 0)
        efd_signal(q->call_fd);   /* the peer's: 0 = counter full, the driver runs anyway */
    return 1;
}

/* Ask for (or stop asking for) kicks on this ring.  With EVENT_IDX the
 * avail_event field says "kick me when you pass last_avail_idx". */
void emu_dev_notify_enable(struct emu_devq *q, int enable)
{
    if (q->packed) {
        pdev_notify_enable(q, enable);
        return;
    }
    if (q->features & EMU_QF_EVENT_IDX) {
        if (enable)
            WRITE_ONCE(*AVAIL_EVENT(q->used, q->num), q->last_avail_idx);
    } else {
        WRITE_ONCE(*USED_FLAGS(q->used), enable ? 0 : EMU_VRING_USED_F_NO_NOTIFY);
    }
    if (q->features & EMU_QF_LOG)
        log_range(q->mem, &q->st, q->used_gpa,
                  EMU_VRING_RING_ENTRIES + EMU_VRING_USED_ELEM_SIZE * (uint64_t)q->num + 2);
    FULL_FENCE();   /* notification request before re-reading avail->idx */
}

/* RX side of one packet: where it is going.  Holds the chains a merged
 * packet uses until the whole packet fits. */
struct rx_pkt {
    uint16_t heads[EMU_MAX_MRG_BUFS];
    uint32_t lens[EMU_MAX_MRG_BUFS];
    uint32_t nbufs;
    uint8_t *nb_ptr[2];      /* where num_buffers lives (may straddle two segments) */
};

/* One packet on its way into RX chains: the destination's virtio-net
 * header, then `len` frame bytes read from `flat` or, when flat is NULL,
 * through `cur`; the first prefix_len of them replaced by `prefix`. */
struct pkt_src {
    uint8_t hdr[20];         /* num_buffers (bytes 10, 11) is rx_fill's to set */
    uint8_t prefix[12];
    uint32_t prefix_len;
    uint32_t len;
    const uint8_t *flat;
    struct cursor cur;
};

static inline void pkt_read(struct pkt_src *ps, struct cursor *cur, uint32_t fo,
                            uint8_t *dst, uint32_t n)
{
    if (ps->flat)
        guest_copy(dst, ps->flat + fo, n);
    else
        cursor_read(cur, dst, n);
}

/* The general fill: chains of several segments, merged buffers, bad
 * chains.  head/err are the first chain, already popped and resolved into
 * c by rx_fill. */
static __attribute__((noinline)) int
rx_fill_slow(struct emu_devq *dst, struct pkt_src *ps, uint16_t head, int err,
             struct chain *c, struct rx_pkt *pk, int *first_err, uint32_t *hint,
             int *dropped)
{
    const int mrg = !!(dst->features & EMU_QF_MRG_RXBUF);
    const uint32_t hlen = dst->hdr_len;
    const uint32_t need = hlen + ps->len;
    struct cursor cur = ps->cur;
    int have = 1;

restart:
    pk->nbufs = 0;
    pk->nb_ptr[0] = pk->nb_ptr[1] = NULL;
    uint32_t written = 0;
    cur = ps->cur;
    *dropped = 0;
    while (written < need) {
        if (!have) {
            if (!dev_avail(dst, first_err)) {
                /* every head popped since the restart is in pk->heads */
                dev_unpop(dst, pk->heads, pk->nbufs);
                return EMU_E_NOBUF;
            }
            head = dev_pop(dst);
            err = resolve_chain(dst, head, 1, c, hint);
        }
        have = 0;
        if (unlikely(err)) {
            /* return this chain (and the packet's earlier ones) empty */
            set_error(&dst->last_error, &dst->st, first_err, err);
            for (uint32_t i = 0; i < pk->nbufs; i++)
                dev_used(dst, pk->heads[i], 0);
            dev_used(dst, head, 0);
            goto restart;
        }
        uint32_t in_this = 0;
        for (uint32_t s = 0; s < c->nsegs && written < need; s++) {
            struct seg *sg = &c->segs[s];
            uint32_t off = 0;
            while (off < sg->len && written < need) {
                uint32_t take;
                if (written < hlen) {            /* header bytes */
                    take = hlen - written;
                    if (take > sg->len - off)
                        take = sg->len - off;
                    memcpy(sg->host + off, ps->hdr + written, take);
                    /* where num_buffers (header bytes 10, 11) landed */
                    for (uint32_t pos = 10; pos < 12; pos++)
                        if (written <= pos && pos < written + take)
                            pk->nb_ptr[pos - 10] = sg->host + off + (pos - written);
                } else if (written - hlen < ps->prefix_len) {   /* replaced frame bytes */
                    uint32_t fo = written - hlen;
                    take = ps->prefix_len - fo;
                    if (take > sg->len - off)
                        take = sg->len - off;
                    memcpy(sg->host + off, ps->prefix + fo, take);
                    if (!ps->flat)
                        cursor_skip(&cur, take);
                } else {                          /* frame bytes */
                    take = need - written;
                    if (take > sg->len - off)
                        take = sg->len - off;
                    pkt_read(ps, &cur, written - hlen, sg->host + off, take);
                }
                if (dst->features & EMU_QF_LOG)
                    log_range(dst->mem, &dst->st, sg->gpa + off, take);
                off += take;
                written += take;
                in_this += take;
            }
        }
        pk->heads[pk->nbufs] = head;
        pk->lens[pk->nbufs] = in_this;
        pk->nbufs++;
        if (written < need && (!mrg || pk->nbufs == EMU_MAX_MRG_BUFS)) {
            /* does not fit: drop it, give the buffers back empty */
            for (uint32_t i = 0; i < pk->nbufs; i++)
                dev_used(dst, pk->heads[i], 0);
            *dropped = 1;
            return EMU_OK;
        }
    }
    if (hlen >= 12) {
        uint16_t nb = mrg ? (uint16_t)pk->nbufs : 1;   /* little endian */
        if (pk->nb_ptr[0]) WRITE_ONCE(*pk->nb_ptr[0], (uint8_t)(nb & 0xff));
        if (pk->nb_ptr[1]) WRITE_ONCE(*pk->nb_ptr[1], (uint8_t)(nb >> 8));
    }
    for (uint32_t i = 0; i < pk->nbufs; i++)
        dev_used(dst, pk->heads[i], pk->lens[i]);
    return EMU_OK;
}

/* Write one packet into RX chains of dst.  Returns EMU_OK (*dropped set
 * if it could never fit), or EMU_E_NOBUF when the ring ran dry (dst's
 * last_avail_idx rolled back: nothing consumed but chains found bad,
 * which are completed with length 0).  The packet that fits the first
 * chain's one buffer -- nearly all of them -- is written right here. */
static inline int rx_fill(struct emu_devq *dst, struct pkt_src *ps, struct chain *c,
                          struct rx_pkt *pk, int *first_err, uint32_t *hint, int *dropped)
{
    const uint32_t hlen = dst->hdr_len;
    *dropped = 0;
    if (!dev_avail(dst, first_err))
        return EMU_E_NOBUF;
    uint16_t head = dev_pop(dst);
    int err = resolve_chain(dst, head, 1, c, hint);
    if (unlikely(err || c->nsegs != 1 || c->segs[0].len < (uint64_t)hlen + ps->len))
        return rx_fill_slow(dst, ps, head, err, c, pk, first_err, hint, dropped);
    uint8_t *p = c->segs[0].host;
    const uint32_t pl = ps->prefix_len;
    ps->hdr[10] = 1;                     /* num_buffers, little endian */
    ps->hdr[11] = 0;
    if (likely(hlen == 12))
        memcpy(p, ps->hdr, 12);
    else
        memcpy(p, ps->hdr, hlen);
    if (pl)
        memcpy(p + hlen, ps->prefix, pl);
    if (likely(ps->flat != NULL)) {
        guest_copy(p + hlen + pl, ps->flat + pl, ps->len - pl);
    } else {
        struct cursor cur = ps->cur;
        cursor_skip(&cur, pl);
        cursor_read(&cur, p + hlen + pl, ps->len - pl);
    }
    if (dst->features & EMU_QF_LOG)
        log_range(dst->mem, &dst->st, c->segs[0].gpa, hlen + ps->len);
    dev_used(dst, head, hlen + ps->len);
    return EMU_OK;
}

struct copy_scratch {
    struct chain src;
    struct chain dst;
    struct rx_pkt pk;
};
static __thread struct copy_scratch scratch;

/* The thread's scratch, looked up once per burst: each use of a __thread
 * variable in a shared object is a __tls_get_addr call. */
static __attribute__((noinline)) struct copy_scratch *scratch_get(void)
{
    return &scratch;
}

/* The packet a resolved TX chain carries, as rx_fill takes it: the first
 * 10 header bytes (flags, gso, csum) carry over, num_buffers is the
 * destination's, the rest of a 20-byte header is zero.  Every byte of
 * the guest's header and MACs is read once, into ps. */
static inline void pkt_from_chain(struct pkt_src *ps, const struct chain *c, uint32_t hdr_len,
                                  int swap_mac)
{
    uint8_t mac[12];
    memset(ps->hdr, 0, sizeof ps->hdr);
    ps->len = c->total - hdr_len;
    ps->prefix_len = 0;
    if (likely(c->nsegs == 1)) {
        const uint8_t *in = c->segs[0].host;
        memcpy(ps->hdr, in, 10);
        ps->flat = in + hdr_len;
        if (swap_mac && ps->len >= 12)
            memcpy(mac, ps->flat, 12);
    } else {
        uint8_t in[20];
        ps->cur = (struct cursor){c, 0, 0};
        cursor_read(&ps->cur, in, hdr_len);
        memcpy(ps->hdr, in, 10);
        ps->flat = NULL;
        if (swap_mac && ps->len >= 12) {
            struct cursor mc = ps->cur;
            cursor_read(&mc, mac, 12);
        }
    }
    if (swap_mac && ps->len >= 12) {
        memcpy(ps->prefix, mac + 6, 6);
        memcpy(ps->prefix + 6, mac, 6);
        ps->prefix_len = 12;
    }
}

/* ---- the copy burst's fast path ---------------------------------------- */

#define COPY_BATCH 32

/* The last region a ring's buffers were found in, held for one burst:
 * nearly every buffer of a ring lies in the same region. */
struct rcache {
    uint64_t gpa, size;
    uint8_t *host;
};

/* The region holding [gpa, gpa+len), or size 0 if no region holds it all. */
static __attribute__((noinline)) struct rcache rc_find(const struct emu_mem *m, uint64_t gpa,
                                                       uint32_t len)
{
    uint32_t hint = 0;
    if (!xlate(m, gpa, len, &hint))
        return (struct rcache){0, 0, NULL};
    const struct emu_region *r = &m->regions[hint];   /* xlate left hint on it */
    return (struct rcache){r->gpa, r->size, r->host};
}

/* Host address of [gpa, gpa+len) (len >= 1), or NULL if it does not lie
 * inside one region. */
HOT uint8_t *rc_xlate(struct rcache *rc, const struct emu_mem *m, uint64_t gpa, uint32_t len)
{
    uint64_t off = gpa - rc->gpa;
    if (unlikely(off >= rc->size || len > rc->size - off)) {
        *rc = rc_find(m, gpa, len);
        if (!rc->size)
            return NULL;
        off = gpa - rc->gpa;
    }
    return rc->host + off;
}

/* One packet the fast path will move: both chains are a single direct
 * descriptor in one region and the frame fits the RX buffer. */
struct fast_pkt {
    const uint8_t *in;      /* TX buffer (virtio-net header first) */
    uint8_t *out;           /* RX buffer */
    uint64_t out_gpa;
    uint32_t frame_len;
    uint16_t src_head, dst_head;
};

/* Look ahead in both avail rings, without taking anything, for up to n
 * packets the fast path can move: stop at the first chain that is not a
 * single valid descriptor, whose frame would not fit, or when dst has no
 * more buffers.  The general path then handles that packet, rereading
 * both rings itself; nothing read here is used for it.  The TX side goes
 * first, prefetching the TX buffers (written on the producer's core) so
 * their misses overlap with each other and with the RX side's work; two
 * short loops also keep their values in registers. */
static inline uint32_t copy_gather(struct emu_devq *src, struct emu_devq *dst, uint32_t n,
                                   struct rcache *rs_io, struct rcache *rd_io,
                                   struct fast_pkt *pk)
{
    const uint16_t *ring = AVAIL_RING(src->avail, 0);
    const uint8_t *table = src->desc;
    const struct emu_mem *m = src->mem;
    uint16_t num = src->num, idx = src->last_avail_idx;
    uint32_t hl = src->hdr_len, k;
    struct rcache rc = *rs_io;   /* in registers across the stores to pk */
    for (k = 0; k < n; k++, idx++) {
        struct vdesc d;
        uint16_t head = READ_ONCE(ring[idx & (num - 1)]);
        if (unlikely(head >= num))
            break;
        desc_fetch(&d, DESC_AT(table, head));
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
    *rs_io = rc;
    n = k;
    ring = AVAIL_RING(dst->avail, 0);
    table = dst->desc;
    m = dst->mem;
    num = dst->num;
    idx = dst->last_avail_idx;
    hl = dst->hdr_len;
    rc = *rd_io;
    for (k = 0; k < n; k++, idx++) {
        struct vdesc d;
        uint16_t head = READ_ONCE(ring[idx & (num - 1)]);
        if (unlikely(head >= num))
            break;
        desc_fetch(&d, DESC_AT(table, head));
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
    *rd_io = rc;
    return k;
}

/* Move the gathered packets: header (its first 10 bytes carry over,
 * num_buffers 1, the rest zero), frame, both used elements.  `plain`
 * (no inflight region, no dirty log on either queue) keeps the ring
 * indexes in registers: stores into guest memory may alias any field of
 * the queue structs, so the compiler would reload them after each one. */
HOT uint64_t copy_batch_as(struct emu_devq *src, struct emu_devq *dst,
                           const struct fast_pkt *pk, uint32_t n, int swap_mac, const int plain)
{
    const uint32_t shl = src->hdr_len, dhl = dst->hdr_len;
    uint8_t *const sused = src->used, *const dused = dst->used;
    const uint16_t smask = src->num - 1, dmask = dst->num - 1;
    uint16_t su = src->used_idx, du = dst->used_idx;
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
        if (plain) {
            used_put(dused, du++ & dmask, pk[k].dst_head, dhl + len);
            used_put(sused, su++ & smask, pk[k].src_head, 0);
        } else {
            if (dst->features & EMU_QF_LOG)
                log_range(dst->mem, &dst->st, pk[k].out_gpa, dhl + len);
            dev_take(src, pk[k].src_head);
            dev_take(dst, pk[k].dst_head);
            dev_used(dst, pk[k].dst_head, dhl + len);
            dev_used(src, pk[k].src_head, 0);
        }
        bytes += len;
    }
    if (plain) {
        src->last_avail_idx = (uint16_t)(src->last_avail_idx + n);
        dst->last_avail_idx = (uint16_t)(dst->last_avail_idx + n);
        src->used_idx = su;
        dst->used_idx = du;
    }
    return bytes;
}

static inline uint64_t copy_batch(struct emu_devq *src, struct emu_devq *dst,
                                  const struct fast_pkt *pk, uint32_t n, int swap_mac)
{
    if (!src->inflight && !dst->inflight && !((src->features | dst->features) & EMU_QF_LOG))
        return copy_batch_as(src, dst, pk, n, swap_mac, 1);
    return copy_batch_as(src, dst, pk, n, swap_mac, 0);
}

int emu_dev_copy(struct emu_devq *src, struct emu_devq *dst, uint32_t max,
                 uint32_t flags, struct emu_burst *res)
{
    if (src->packed || dst->packed)
        return emu_pdev_copy(src, dst, max, flags, res);
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
    struct rcache rs = {0, 0, NULL}, rd = {0, 0, NULL};
    struct fast_pkt batch[COPY_BATCH];
    uint64_t bytes = 0;
    while (res->packets + res->drops + res->errors < max) {
        uint32_t n = dev_avail(src, &first);
        if (!n)
            break;
        /* as many packets as possible the fast way ... */
        n = min_u32(min_u32(n, max - res->packets - res->drops - res->errors), COPY_BATCH);
        uint32_t k = (src->cap || dst->cap) ? 0 :      /* a capture takes the general path */
            copy_gather(src, dst, min_u32(n, dev_avail_peek(dst)), &rs, &rd, batch);
        if (k) {
            bytes += copy_batch(src, dst, batch, k, swap_mac);
            res->packets += k;
            continue;
        }
        /* ... and the one after them the general way */
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
                /* back-pressure: leave the packet in the source ring */
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

/* ---- generator stamp and pattern --------------------------------------- */
#define NO_STAMP 0xffffffffu

static inline uint8_t pattern_byte(uint64_t seq, uint32_t i)
{
    return (uint8_t)(seq * 131 + i);
}

/* Check a frame (in a chain, after the header) against the generator's
 * stamp/pattern.  Returns 1 if it matches. */
static int verify_chain(const struct chain *c, uint32_t hdr_len, uint32_t stamp_off,
                        uint64_t *seq_out)
{
    struct cursor cur = {c, 0, 0};
    uint32_t frame_len = c->total - hdr_len;
    if (stamp_off == NO_STAMP || frame_len < stamp_off + 8)
        return 0;
    cursor_skip(&cur, hdr_len + stamp_off);
    uint64_t seq;
    cursor_read(&cur, (uint8_t *)&seq, 8);
    *seq_out = seq;
    uint8_t buf[256];
    uint32_t i = stamp_off + 8;
    while (i < frame_len) {
        uint32_t n = frame_len - i < sizeof buf ? frame_len - i : sizeof buf;
        cursor_read(&cur, buf, n);
        for (uint32_t k = 0; k < n; k++)
            if (buf[k] != pattern_byte(seq, i + k))
                return 0;
        i += n;
    }
    return 1;
}

static inline void sink_account(struct emu_sink *sk, struct emu_stats *st, int ok,
                                uint64_t seq)
{
    if (!ok) {
        st->verify_fail++;
        return;
    }
    if (seq != sk->next_seq) {
        if (seq > sk->next_seq)
            st->seq_gaps += seq - sk->next_seq;
    }
    sk->next_seq = seq + 1;
}

int emu_dev_drain(struct emu_devq *q, uint32_t max, uint32_t flags,
                  struct emu_sink *sink, struct emu_burst *res)
{
    struct chain *c = &scratch_get()->src;
    int first = EMU_OK;
    uint32_t hint = 0;
    uint64_t bytes = 0;
    memset(res, 0, sizeof *res);
    if (q->broken) {
        res->error = EMU_E_BROKEN;
        return EMU_E_BROKEN;
    }
    while (res->packets + res->errors < max) {
        if (!dev_avail(q, &first))
            break;
        uint16_t head = dev_pop(q);
        int err = resolve_chain(q, head, 0, c, &hint);
        if (!err && c->total < q->hdr_len)
            err = EMU_E_SHORT_HDR;
        if (unlikely(err)) {
            set_error(&q->last_error, &q->st, &first, err);
            dev_used(q, head, 0);
            res->errors++;
            continue;
        }
        if ((flags & EMU_CF_VERIFY) && sink) {
            uint64_t seq = 0;
            int ok = verify_chain(c, q->hdr_len, sink->stamp_off, &seq);
            sink_account(sink, &q->st, ok, seq);
            if (!ok && first == EMU_OK)
                first = EMU_E_VERIFY;
        }
        if (unlikely(q->cap != NULL)) {
            struct cursor fc = {c, 0, 0};
            cursor_skip(&fc, q->hdr_len);
            cap_frame(q->cap, NULL, fc, c->total - q->hdr_len, NULL, 0);
        }
        dev_used(q, head, 0);
        bytes += c->total - q->hdr_len;
        res->packets++;
    }
    q->st.packets += res->packets;
    q->st.bytes += bytes;
    if (sink) {
        sink->received += res->packets;
        if (res->packets)
            sink->last_ns = emu_now_ns();
    }
    res->bytes_lo = (uint32_t)bytes;
    res->src_notified = dev_flush(q);
    res->error = first;
    return first;
}

/* Pop up to max TX packets into a flat buffer (frames without the
 * virtio-net header), lens[i] = frame length.  A frame that does not fit
 * what is left of the buffer waits for the next call; one larger than the
 * whole buffer is dropped. */
int emu_dev_pop(struct emu_devq *q, uint8_t *out, uint32_t cap, uint32_t *lens,
                uint32_t max, struct emu_burst *res)
{
    struct chain *c = &scratch_get()->src;
    int first = EMU_OK;
    uint32_t hint = 0, used_bytes = 0;
    memset(res, 0, sizeof *res);
    if (q->broken) {
        res->error = EMU_E_BROKEN;
        return EMU_E_BROKEN;
    }
    while (res->packets < max) {
        if (!dev_avail(q, &first))
            break;
        uint16_t head = dev_pop(q);
        int err = resolve_chain(q, head, 0, c, &hint);
        if (!err && c->total < q->hdr_len)
            err = EMU_E_SHORT_HDR;
        if (unlikely(err)) {
            set_error(&q->last_error, &q->st, &first, err);
            dev_used(q, head, 0);
            res->errors++;
            continue;
        }
        uint32_t flen = c->total - q->hdr_len;
        if (flen > cap) {
            /* can never fit the caller's buffer: drop it (returned empty),
             * or the guest would have wedged this queue for good */
            dev_used(q, head, 0);
            q->st.drops++;
            res->drops++;
            continue;
        }
        if (flen > cap - used_bytes) {
            dev_unpop(q, &head, 1);         /* leave it for the next call */
            break;
        }
        struct cursor cur = {c, 0, 0};
        cursor_skip(&cur, q->hdr_len);
        cursor_read(&cur, out + used_bytes, flen);
        if (unlikely(q->cap != NULL))
            cap_flat(q->cap, out + used_bytes, flen);
        lens[res->packets++] = flen;
        used_bytes += flen;
        dev_used(q, head, 0);
    }
    q->st.packets += res->packets;
    q->st.bytes += used_bytes;
    res->bytes_lo = used_bytes;
    res->src_notified = dev_flush(q);
    res->error = first;
    return first;
}

/* Push n frames (concatenated in `in`) into RX chains, each behind a
 * zeroed virtio-net header.  Stops early when the ring is full, unless
 * EMU_CF_DROP_FULL (then the rest are counted as drops). */
int emu_dev_push(struct emu_devq *q, const uint8_t *in, const uint32_t *lens,
                 uint32_t n, uint32_t flags, struct emu_burst *res)
{
    struct copy_scratch *sc = scratch_get();
    int first = EMU_OK;
    uint32_t hint = 0;
    uint64_t off = 0, bytes = 0;
    memset(res, 0, sizeof *res);
    if (q->broken) {
        res->error = EMU_E_BROKEN;
        return EMU_E_BROKEN;
    }
    uint32_t i;
    for (i = 0; i < n; i++) {
        struct pkt_src ps = {.len = lens[i], .flat = in + off};
        int dropped = 0;
        int err = rx_fill(q, &ps, &sc->dst, &sc->pk, &first, &hint, &dropped);
        if (err == EMU_E_NOBUF) {
            if (!(flags & EMU_CF_DROP_FULL)) {
                res->blocked = 1;
                break;
            }
            dropped = 1;
        }
        off += lens[i];
        if (dropped) {
            q->st.drops++;
            res->drops++;
        } else {
            q->st.packets++;
            res->packets++;
            bytes += lens[i];
            if (unlikely(q->cap != NULL))
                cap_flat(q->cap, in + off - lens[i], lens[i]);
        }
    }
    q->st.bytes += bytes;
    res->bytes_lo = (uint32_t)bytes;
    res->dst_notified = dev_flush(q);
    res->error = first;
    return first;
}

/* ---- driver side ------------------------------------------------------- */

int emu_drvq_init(struct emu_drvq *q)
{
    if (!q->num || (q->num & (q->num - 1)))
        return EMU_E_HEAD;
    q->nslots = q->layout == 1 ? q->num / 2 : q->num;
    q->avail_idx = 0;
    q->last_used_idx = 0;
    q->kicked_avail = 0;
    q->free_head = 0;
    q->num_free = q->nslots;
    q->broken = 0;
    q->last_error = EMU_OK;
    for (uint32_t i = 0; i < q->nslots; i++) {
        q->free_slots[i] = (uint16_t)i;
        q->slot_len[i] = 0;
        q->slot_busy[i] = 0;
        q->slot_gen[i] = 0;
    }
    if (q->packed) {
        pdrv_init(q);
        return EMU_OK;
    }
    STORE_REL16(AVAIL_IDX(q->avail), 0);
    WRITE_ONCE(*AVAIL_FLAGS(q->avail), 0);
    return EMU_OK;
}

/* A driver queue as one call works on it.  A store into guest memory (or
 * any uint8_t store) may alias every field of *q, so a loop over q->...
 * would reload them all after each such store; this copy is only handed
 * to always-inlined helpers, so it lives in registers, and drv_end()
 * writes the indexes back. */
struct drv {
    struct emu_drvq *q;
    struct emu_pring *pk;                                     /* packed ring, or NULL */
    uint8_t *desc, *avail, *used, *buf_host, *busy;
    uint16_t *free_slots;
    uint32_t *slot_len, *slot_gen;
    uint64_t buf_gpa;
    uint32_t buf_size, hdr_len, layout, features;
    uint16_t num, nslots;
    uint16_t free_head, num_free, avail_idx, last_used_idx;   /* written back */
    struct pdrv_regs pkr;                                     /* packed: written back too */
};

HOT void drv_begin(struct drv *d, struct emu_drvq *q)
{
    *d = (struct drv){
        .q = q, .pk = q->packed, .desc = q->desc, .avail = q->avail, .used = q->used,
        .buf_host = q->buf_host, .busy = q->slot_busy, .free_slots = q->free_slots,
        .slot_len = q->slot_len, .slot_gen = q->slot_gen, .buf_gpa = q->buf_gpa,
        .buf_size = q->buf_size, .hdr_len = q->hdr_len, .layout = q->layout,
        .features = q->features, .num = q->num, .nslots = q->nslots,
        .free_head = q->free_head, .num_free = q->num_free, .avail_idx = q->avail_idx,
        .last_used_idx = q->last_used_idx,
    };
    if (q->packed)
        pdrv_begin(d);
}

HOT void drv_end(const struct drv *d)
{
    struct emu_drvq *q = d->q;
    q->free_head = d->free_head;
    q->num_free = d->num_free;
    q->avail_idx = d->avail_idx;
    q->last_used_idx = d->last_used_idx;
    if (d->pk)
        pdrv_end(d);
}

static inline uint16_t slot_head(uint32_t layout, uint16_t slot)
{
    return layout == 1 ? (uint16_t)(2 * slot) : slot;
}

/* nslots is a power of two (num, or num / 2): the free ring wraps by mask */
HOT uint16_t drv_alloc(struct drv *d)
{
    uint16_t s = d->free_slots[d->free_head & (d->nslots - 1)];
    d->free_head = (uint16_t)((d->free_head + 1) & (d->nslots - 1));
    d->num_free--;
    d->busy[s] = 1;
    return s;
}

HOT void drv_free(struct drv *d, uint16_t s)
{
    d->free_slots[(d->free_head + d->num_free) & (d->nslots - 1)] = s;
    d->num_free++;
    d->busy[s] = 0;
}

/* Store a descriptor unless it already holds exactly that value.  The
 * device only reads the table; a slot's descriptor is the same every lap,
 * and not rewriting it keeps its cache line shared with the device's core
 * instead of pulling it back and forth once per packet. */
static inline void desc_put(uint8_t *p, uint64_t addr, uint32_t len, uint16_t flags,
                            uint16_t next)
{
    struct vdesc want = {addr, len, flags, next}, have;
    memcpy(&have, p, sizeof have);
    if (have.addr != want.addr || have.len != want.len || have.flags != want.flags ||
        have.next != want.next)
        memcpy(p, &want, sizeof want);
}

/* Descriptors of the two-descriptor layouts: header + data (1), or an
 * indirect table of those two (2). */
static __attribute__((noinline)) void drv_fill_chain(struct emu_drvq *q, uint16_t s,
                                                     uint64_t gpa, uint32_t len, uint16_t w)
{
    uint32_t h = q->hdr_len;
    if (q->layout == 1) {
        desc_put(DESC_AT(q->desc, 2 * s), gpa, h, (uint16_t)(w | EMU_VRING_DESC_F_NEXT),
                 (uint16_t)(2 * s + 1));
        desc_put(DESC_AT(q->desc, 2 * s + 1), gpa + h, len - h, w, 0);
    } else {
        const uint32_t tsize = 2 * EMU_VRING_DESC_SIZE;   /* a slot's indirect table */
        uint8_t *t = q->ind_host + tsize * (size_t)s;
        desc_put(DESC_AT(t, 0), gpa, h, (uint16_t)(w | EMU_VRING_DESC_F_NEXT), 1);
        desc_put(DESC_AT(t, 1), gpa + h, len - h, w, 0);
        desc_put(DESC_AT(q->desc, s), q->ind_gpa + tsize * (uint64_t)s, tsize,
                 EMU_VRING_DESC_F_INDIRECT, 0);
    }
}

/* Describe slot s (`len` bytes, device-writable when rx) and make it
 * available.  The avail entry, like the descriptor, is only rewritten
 * when it changes: with in-order completions every lap posts the same
 * heads at the same positions. */
HOT void drv_post(struct drv *d, uint16_t s, uint32_t len, int rx)
{
    if (d->pk) {
        pdrv_post(d, s, len, rx);
        return;
    }
    uint64_t gpa = d->buf_gpa + (uint64_t)s * d->buf_size;
    uint16_t w = rx ? EMU_VRING_DESC_F_WRITE : 0;
    if (likely(d->layout == 0))
        desc_put(DESC_AT(d->desc, s), gpa, len, w, 0);
    else
        drv_fill_chain(d->q, s, gpa, len, w);
    uint16_t *e = AVAIL_RING(d->avail, d->avail_idx & (d->num - 1));
    uint16_t head = slot_head(d->layout, s);
    if (READ_ONCE(*e) != head)
        WRITE_ONCE(*e, head);
    d->avail_idx++;
}

int emu_drv_kick(struct emu_drvq *q)
{
    q->st.notifies++;
    if (q->kick_fd >= 0)
        efd_signal(q->kick_fd);   /* shared with the back-end: bounded, see _efd.c */
    return 1;
}

/* Publish avail->idx and kick if the device asked for it. */
static int drv_flush(struct emu_drvq *q)
{
    if (q->packed)
        return pdrv_flush(q);
    uint16_t old = q->kicked_avail, new_idx = q->avail_idx;
    if (old == new_idx)
        return 0;
    STORE_REL16(AVAIL_IDX(q->avail), new_idx);
    q->kicked_avail = new_idx;
    FULL_FENCE();   /* avail->idx store before reading avail_event/flags */
    int want;
    if (q->features & EMU_QF_EVENT_IDX)
        want = need_event(READ_ONCE(*AVAIL_EVENT(q->used, q->num)), new_idx, old);
    else
        want = !(READ_ONCE(*USED_FLAGS(q->used)) & EMU_VRING_USED_F_NO_NOTIFY);
    if (!want) {
        q->st.suppressed++;
        return 0;
    }
    return emu_drv_kick(q);
}

void emu_drv_irq_enable(struct emu_drvq *q, int enable)
{
    if (q->packed) {
        pdrv_irq_enable(q, enable);
        return;
    }
    if (q->features & EMU_QF_EVENT_IDX) {
        if (enable)
            WRITE_ONCE(*USED_EVENT(q->avail, q->num), q->last_used_idx);
    } else {
        WRITE_ONCE(*AVAIL_FLAGS(q->avail), enable ? 0 : EMU_VRING_AVAIL_F_NO_INTERRUPT);
    }
    FULL_FENCE();   /* interrupt request before re-reading used->idx */
}

/* Used entries ready; marks the queue broken if the device jumped. */
HOT uint16_t drv_used_ready(struct drv *d, int *first)
{
    if (d->pk)
        return pdrv_used_ready(d, first);
    uint16_t idx = LOAD_ACQ16(USED_IDX(d->used));
    uint16_t n = (uint16_t)(idx - d->last_used_idx);
    uint16_t in_flight = (uint16_t)(d->nslots - d->num_free);
    if (unlikely(n > in_flight)) {
        d->q->broken = 1;
        set_error(&d->q->last_error, &d->q->st, first, EMU_E_USED_IDX);
        return 0;
    }
    return n;
}

/* Take one used element; returns the slot or -1 (bad element, counted). */
HOT int drv_take(struct drv *d, uint32_t *len, int *first)
{
    if (d->pk)
        return pdrv_take(d, len, first);
    struct vused_elem *e = USED_RING(d->used, d->last_used_idx & (d->num - 1));
    uint32_t id = READ_ONCE(e->id);
    *len = READ_ONCE(e->len);
    d->last_used_idx++;
    uint32_t slot = id;
    if (d->layout == 1)                  /* heads are the even descriptors */
        slot = id & 1 ? UINT32_MAX : id / 2;
    if (unlikely(slot >= d->nslots || !d->busy[slot])) {
        set_error(&d->q->last_error, &d->q->st, first, EMU_E_USED_ID);
        return -1;
    }
    return (int)slot;
}

/* Take back every buffer the device has used; res->packets, res->errors. */
HOT int drv_reclaim(struct drv *d, struct emu_burst *res)
{
    int first = EMU_OK;
    uint16_t n = drv_used_ready(d, &first);
    for (uint16_t i = 0; i < n; i++) {
        uint32_t len;
        int s = drv_take(d, &len, &first);
        if (s < 0) {
            res->errors++;
            continue;
        }
        drv_free(d, (uint16_t)s);
        res->packets++;
    }
    return first;
}

int emu_drv_reclaim(struct emu_drvq *q, struct emu_burst *res)
{
    struct drv d;
    memset(res, 0, sizeof *res);
    if (q->broken) {
        res->error = EMU_E_BROKEN;
        return EMU_E_BROKEN;
    }
    drv_begin(&d, q);
    int first = drv_reclaim(&d, res);
    drv_end(&d);
    res->error = first;
    return first;
}

/* A generator writes a slot's whole frame (zeroed virtio-net header,
 * template, zero padding) the first time it uses the slot; afterwards
 * the buffer still holds it, so a packet costs the 8-byte stamp (and the
 * pattern when verifying), as a real generator writes headers only. */
struct gen_hot {
    uint32_t id, stamp_off, frame_len;
    int stamp, fill;
};

HOT void gen_fill(struct drv *d, const struct emu_gen *g, const struct gen_hot *h,
                  uint16_t s, uint64_t seq)
{
    uint8_t *buf = d->buf_host + (size_t)s * d->buf_size;
    uint8_t *f = buf + d->hdr_len;
    if (unlikely(d->slot_gen[s] != h->id || !h->id)) {
        uint32_t tl = g->tmpl_len < h->frame_len ? g->tmpl_len : h->frame_len;
        memset(buf, 0, d->hdr_len);
        memcpy(f, g->tmpl, tl);
        memset(f + tl, 0, h->frame_len - tl);
        d->slot_gen[s] = h->id;
    }
    if (h->stamp) {
        memcpy(f + h->stamp_off, &seq, 8);
        if (h->fill)
            for (uint32_t i = h->stamp_off + 8; i < h->frame_len; i++)
                f[i] = pattern_byte(seq, i);
    }
}

int emu_drv_tx_gen(struct emu_drvq *q, struct emu_gen *g, uint32_t max,
                   struct emu_burst *res)
{
    struct drv d;
    struct emu_burst r2 = {0};
    memset(res, 0, sizeof *res);
    if (q->broken) {
        res->error = EMU_E_BROKEN;
        return EMU_E_BROKEN;
    }
    drv_begin(&d, q);
    int first = drv_reclaim(&d, &r2);
    res->errors = r2.errors;
    if (q->broken) {
        drv_end(&d);
        res->error = EMU_E_BROKEN;
        return EMU_E_BROKEN;
    }
    if ((uint64_t)d.hdr_len + g->frame_len > d.buf_size || g->frame_len == 0) {
        drv_end(&d);
        res->error = EMU_E_NOBUF;
        return EMU_E_NOBUF;
    }
    const uint32_t len = d.hdr_len + g->frame_len;
    if (g->rate_pps) {
        uint64_t now = emu_now_ns();
        if (!g->t0_ns)
            g->t0_ns = now;
        uint64_t allowed = (uint64_t)((double)(now - g->t0_ns) * (double)g->rate_pps / 1e9) + 1;
        if (allowed <= g->sent)
            max = 0;
        else if (allowed - g->sent < max)
            max = (uint32_t)(allowed - g->sent);
    }
    if (g->count && g->count - g->sent < max)
        max = (uint32_t)(g->count - g->sent);
    const struct gen_hot h = {
        .id = g->id, .stamp_off = g->stamp_off, .frame_len = g->frame_len, .fill = !!g->fill,
        .stamp = g->stamp_off != NO_STAMP && g->frame_len >= 8 && g->stamp_off <= g->frame_len - 8,
    };
    uint64_t seq = g->seq;
    uint32_t n = 0;
    while (n < max && d.num_free) {
        uint16_t s = drv_alloc(&d);
        gen_fill(&d, g, &h, s, seq);
        if (unlikely(q->cap != NULL))
            cap_flat(q->cap, d.buf_host + (size_t)s * d.buf_size + d.hdr_len, h.frame_len);
        d.slot_len[s] = len;
        drv_post(&d, s, len, 0);
        seq++;
        n++;
    }
    drv_end(&d);
    g->seq = seq;
    g->sent += n;
    res->packets = n;
    if (q->num_free == 0 && n < max)
        res->blocked = 1;
    q->st.packets += n;
    q->st.bytes += (uint64_t)n * g->frame_len;
    res->bytes_lo = n * g->frame_len;
    res->src_notified = drv_flush(q);
    res->error = first;
    return first;
}

int emu_drv_tx_post(struct emu_drvq *q, const uint8_t *in, const uint32_t *lens,
                    uint32_t n, struct emu_burst *res)
{
    struct drv d;
    struct emu_burst r2 = {0};
    uint64_t off = 0, bytes = 0;
    memset(res, 0, sizeof *res);
    if (q->broken) {
        res->error = EMU_E_BROKEN;
        return EMU_E_BROKEN;
    }
    drv_begin(&d, q);
    int first = drv_reclaim(&d, &r2);
    if (q->broken) {
        drv_end(&d);
        res->error = EMU_E_BROKEN;
        return EMU_E_BROKEN;
    }
    for (uint32_t i = 0; i < n; i++) {
        if ((uint64_t)d.hdr_len + lens[i] > d.buf_size || lens[i] == 0) {
            q->st.drops++;
            res->drops++;
            off += lens[i];
            continue;
        }
        if (!d.num_free) {
            res->blocked = 1;
            break;
        }
        uint32_t len = d.hdr_len + lens[i];
        uint16_t s = drv_alloc(&d);
        uint8_t *buf = d.buf_host + (size_t)s * d.buf_size;
        memset(buf, 0, d.hdr_len);
        memcpy(buf + d.hdr_len, in + off, lens[i]);
        if (unlikely(q->cap != NULL))
            cap_flat(q->cap, buf + d.hdr_len, lens[i]);
        d.slot_gen[s] = 0;
        off += lens[i];
        bytes += lens[i];
        d.slot_len[s] = len;
        drv_post(&d, s, len, 0);
        res->packets++;
    }
    drv_end(&d);
    q->st.packets += res->packets;
    q->st.bytes += bytes;
    res->bytes_lo = (uint32_t)bytes;
    res->src_notified = drv_flush(q);
    res->error = first;
    return first;
}

/* Post every free slot as an RX buffer; returns how many. */
HOT uint32_t drv_refill(struct drv *d)
{
    uint32_t n = 0;
    while (d->num_free) {
        uint16_t s = drv_alloc(d);
        d->slot_len[s] = d->buf_size;
        d->slot_gen[s] = 0;
        drv_post(d, s, d->buf_size, 1);
        n++;
    }
    return n;
}

int emu_drv_rx_refill(struct emu_drvq *q, struct emu_burst *res)
{
    struct drv d;
    memset(res, 0, sizeof *res);
    if (q->broken) {
        res->error = EMU_E_BROKEN;
        return EMU_E_BROKEN;
    }
    drv_begin(&d, q);
    res->packets = drv_refill(&d);
    drv_end(&d);
    res->src_notified = drv_flush(q);
    return EMU_OK;
}

/* After a receive burst: refill (unless it broke the queue) and publish. */
HOT void drv_rx_finish(struct drv *d, struct emu_burst *res)
{
    struct emu_drvq *q = d->q;
    if (!q->broken)
        drv_refill(d);
    drv_end(d);
    res->src_notified = q->broken ? 0 : drv_flush(q);
}

/* Gather one received packet: its first slot's header says how many
 * buffers it spans (MRG_RXBUF).  Calls fn(ctx, data, len) for each piece
 * of frame bytes.  Returns frame length, or -1 for a bad packet (counted,
 * buffers recycled), -2 for an empty buffer.  Always inlined with a
 * constant fn, so the pieces cost no indirect call. */
typedef void (*piece_fn)(void *ctx, const uint8_t *p, uint32_t n);

HOT int64_t drv_rx_one(struct drv *d, uint16_t *avail_n, int *first, piece_fn fn, void *ctx)
{
    struct emu_drvq *q = d->q;
    uint32_t len;
    int s = drv_take(d, &len, first);
    (*avail_n)--;
    if (s < 0)
        return -1;
    if (unlikely(len > d->buf_size)) {
        set_error(&q->last_error, &q->st, first, EMU_E_USED_LEN);
        drv_free(d, (uint16_t)s);
        return -1;
    }
    if (unlikely(len < d->hdr_len)) {  /* an empty buffer handed back: not a packet */
        drv_free(d, (uint16_t)s);
        return -2;
    }
    uint8_t *buf = d->buf_host + (size_t)s * d->buf_size;
    uint16_t nb = 1;
    if ((d->features & EMU_QF_MRG_RXBUF) && d->hdr_len >= 12)
        memcpy(&nb, buf + 10, 2);
    if (unlikely(nb == 0 || nb - 1u > *avail_n)) {
        set_error(&q->last_error, &q->st, first, EMU_E_NUM_BUFFERS);
        drv_free(d, (uint16_t)s);
        return -1;
    }
    int64_t total = len - d->hdr_len;
    fn(ctx, buf + d->hdr_len, len - d->hdr_len);
    drv_free(d, (uint16_t)s);
    int bad = 0;
    for (uint16_t k = 1; k < nb; k++) {
        int t = drv_take(d, &len, first);
        (*avail_n)--;
        if (t < 0) {
            bad = 1;
            continue;
        }
        if (len > d->buf_size) {
            set_error(&q->last_error, &q->st, first, EMU_E_USED_LEN);
            bad = 1;
        } else if (!bad) {
            fn(ctx, d->buf_host + (size_t)t * d->buf_size, len);
            total += len;
        }
        drv_free(d, (uint16_t)t);
    }
    return bad ? -1 : total;
}

struct flat_ctx { uint8_t *out; uint32_t cap, used, start; int overflow; };

static inline void piece_to_flat(void *vctx, const uint8_t *p, uint32_t n)
{
    struct flat_ctx *c = vctx;
    if (c->overflow || n > c->cap - c->used) {
        c->overflow = 1;
        return;
    }
    memcpy(c->out + c->used, p, n);
    c->used += n;
}

int emu_drv_rx_recv(struct emu_drvq *q, uint8_t *out, uint32_t cap, uint32_t *lens,
                    uint32_t max, struct emu_burst *res)
{
    struct drv d;
    int first = EMU_OK;
    memset(res, 0, sizeof *res);
    if (q->broken) {
        res->error = EMU_E_BROKEN;
        return EMU_E_BROKEN;
    }
    drv_begin(&d, q);
    uint16_t n = drv_used_ready(&d, &first);
    struct flat_ctx c = {out, cap, 0, 0, 0};
    uint64_t bytes = 0;
    while (n && res->packets < max) {
        /* room for the whole packet?  Peek: its first buffer's header says
         * how many buffers it spans; each holds at most buf_size bytes. */
        uint32_t slot;
        if (d.pk) {
            slot = pdrv_peek_slot(&d);
        } else {
            struct vused_elem *e = USED_RING(d.used, d.last_used_idx & (d.num - 1));
            uint32_t id = READ_ONCE(e->id);
            slot = d.layout == 1 ? id / 2 : id;
        }
        uint32_t bound = d.buf_size;
        if ((d.features & EMU_QF_MRG_RXBUF) && d.hdr_len >= 12 && slot < d.nslots) {
            uint16_t nb;
            memcpy(&nb, d.buf_host + (size_t)slot * d.buf_size + 10, 2);
            if (nb > 1 && nb <= n)
                bound = (uint32_t)nb * d.buf_size;
        }
        if (bound > cap - c.used) {
            if (res->packets == 0 && first == EMU_OK)
                first = EMU_E_NOBUF;
            break;
        }
        c.start = c.used;
        c.overflow = 0;
        int64_t l = drv_rx_one(&d, &n, &first, piece_to_flat, &c);
        if (l == -2)
            continue;
        if (l < 0 || c.overflow) {
            c.used = c.start;
            if (c.overflow) {
                q->st.drops++;
                res->drops++;
            } else {
                res->errors++;
            }
            continue;
        }
        if (unlikely(q->cap != NULL))
            cap_flat(q->cap, out + c.start, (uint32_t)l);
        lens[res->packets++] = (uint32_t)l;
        bytes += (uint64_t)l;
    }
    q->st.packets += res->packets;
    q->st.bytes += bytes;
    res->bytes_lo = (uint32_t)bytes;
    drv_rx_finish(&d, res);
    res->error = first;
    return first;
}

/* sink verification over pieces: checks the stamp and the pattern */
struct verify_ctx {
    uint32_t stamp_off;
    uint32_t pos;
    uint64_t seq;
    uint8_t seqb[8];
    int ok;
};

static inline void piece_verify(void *vctx, const uint8_t *p, uint32_t n)
{
    struct verify_ctx *v = vctx;
    for (uint32_t k = 0; k < n; k++, v->pos++) {
        uint32_t i = v->pos;
        if (i < v->stamp_off)
            continue;
        if (i < v->stamp_off + 8) {
            v->seqb[i - v->stamp_off] = p[k];
            if (i == v->stamp_off + 7)
                memcpy(&v->seq, v->seqb, 8);
            continue;
        }
        if (p[k] != pattern_byte(v->seq, i))
            v->ok = 0;
    }
}

static inline void piece_nop(void *vctx, const uint8_t *p, uint32_t n)
{
    (void)vctx; (void)p; (void)n;
}

/* The sink's receive loop, instantiated once per piece function. */
HOT uint64_t sink_loop(struct drv *d, uint16_t n, uint32_t max, struct emu_sink *sink,
                       piece_fn fn, int verify, struct emu_burst *res, int *first)
{
    uint64_t bytes = 0;
    uint32_t packets = 0, errors = 0;
    while (n && packets < max) {
        struct verify_ctx v = {verify ? sink->stamp_off : 0, 0, 0, {0}, 1};
        int64_t l = drv_rx_one(d, &n, first, fn, &v);
        if (l == -2)
            continue;
        if (l < 0) {
            errors++;
            continue;
        }
        if (verify) {
            int ok = v.ok && (uint64_t)l >= (uint64_t)sink->stamp_off + 8;
            sink_account(sink, &d->q->st, ok, v.seq);
            if (!ok && *first == EMU_OK)
                *first = EMU_E_VERIFY;
        }
        packets++;
        bytes += (uint64_t)l;
    }
    res->packets = packets;
    res->errors = errors;
    return bytes;
}

/* The sink's loop while capturing: each frame's pieces (still in their RX
 * buffers, which are reposted only after the burst) go out in one writev. */
struct cap_ctx {
    struct verify_ctx v;
    int verify;
    int k;
    uint32_t room;
    struct iovec iov[CAP_IOV];
};

static inline void piece_cap(void *vctx, const uint8_t *p, uint32_t n)
{
    struct cap_ctx *c = vctx;
    if (c->verify)
        piece_verify(&c->v, p, n);
    c->k = cap_add(c->iov, c->k, &c->room, p, n);
}

static __attribute__((noinline)) uint64_t
sink_loop_cap(struct drv *d, uint16_t n, uint32_t max, struct emu_sink *sink, int verify,
              struct emu_burst *res, int *first)
{
    struct emu_capture *cap = d->q->cap;
    uint64_t bytes = 0;
    uint32_t packets = 0, errors = 0;
    struct cap_ctx cc;
    while (n && packets < max) {
        cc.v = (struct verify_ctx){verify ? sink->stamp_off : 0, 0, 0, {0}, 1};
        cc.verify = verify;
        cc.k = 1;
        cc.room = cap->snaplen;
        int64_t l = drv_rx_one(d, &n, first, piece_cap, &cc);
        if (l == -2)
            continue;
        if (l < 0) {
            errors++;
            continue;
        }
        cap_write(cap, cc.iov, cc.k, (uint32_t)l);
        if (verify) {
            int ok = cc.v.ok && (uint64_t)l >= (uint64_t)sink->stamp_off + 8;
            sink_account(sink, &d->q->st, ok, cc.v.seq);
            if (!ok && *first == EMU_OK)
                *first = EMU_E_VERIFY;
        }
        packets++;
        bytes += (uint64_t)l;
    }
    res->packets = packets;
    res->errors = errors;
    return bytes;
}

int emu_drv_rx_sink(struct emu_drvq *q, uint32_t max, uint32_t flags,
                    struct emu_sink *sink, struct emu_burst *res)
{
    struct drv d;
    int first = EMU_OK;
    memset(res, 0, sizeof *res);
    if (q->broken) {
        res->error = EMU_E_BROKEN;
        return EMU_E_BROKEN;
    }
    drv_begin(&d, q);
    uint16_t n = drv_used_ready(&d, &first);
    uint64_t bytes;
    if (unlikely(q->cap != NULL))
        bytes = sink_loop_cap(&d, n, max, sink,
                              (flags & EMU_CF_VERIFY) && sink && sink->stamp_off != NO_STAMP,
                              res, &first);
    else if ((flags & EMU_CF_VERIFY) && sink && sink->stamp_off != NO_STAMP)
        bytes = sink_loop(&d, n, max, sink, piece_verify, 1, res, &first);
    else
        bytes = sink_loop(&d, n, max, sink, piece_nop, 0, res, &first);
    q->st.packets += res->packets;
    q->st.bytes += bytes;
    if (sink) {
        sink->received += res->packets;
        if (res->packets)
            sink->last_ns = emu_now_ns();
    }
    res->bytes_lo = (uint32_t)bytes;
    drv_rx_finish(&d, res);
    res->error = first;
    return first;
}

/* ---- the pump ----------------------------------------------------------- */

/* The generator job posts whole bursts.  Posting each slot as soon as the
 * device hands it back locks the two cores into trading one packet at a
 * time, each trade a cross-core round trip for the ring indexes (on the
 * 2-core VM: 38 Mpps fell to 2-12 once the ring had filled); waiting for
 * a burst of free slots keeps both sides batching, as DPDK's virtio PMD
 * does with its tx_free_thresh.  Completions alone count as progress. */
static uint32_t gen_want(const struct emu_drvq *q, const struct emu_gen *g, uint32_t burst)
{
    uint32_t want = min_u32(burst, q->nslots > 1 ? q->nslots / 2u : 1u);
    if (g->count && g->count - g->sent < want)
        want = (uint32_t)(g->count - g->sent);
    if (g->rate_pps)
        want = 1;                  /* a paced generator posts when allowed */
    return want;
}

static int job_gen(struct emu_drvq *q, struct emu_gen *g, uint32_t burst,
                   struct emu_burst *r)
{
    uint32_t want = gen_want(q, g, burst);
    if (want && q->num_free < want) {
        int err = emu_drv_reclaim(q, r);
        if (err || q->num_free < want)
            return err;            /* r->packets: buffers reclaimed */
    }
    return emu_drv_tx_gen(q, g, burst, r);
}

/* jobs whose code lives in other files of the engine (one unit) */
static int net_job_run(struct emu_job *j, struct emu_burst *r);
static int net_job_ready(struct emu_job *j);
static int net_job_arm(struct emu_job *j, struct pollfd *pfd, struct emu_stats **owner,
                       uint8_t *drain, int max);
static void net_job_disarm(struct emu_job *j);
static void net_job_leave(struct emu_job *j);
#define IS_NET_JOB(j) ((j)->kind == EMU_JOB_NET || (j)->kind == EMU_JOB_HUB)

static int job_run(struct emu_job *j, int *progress)
{
    struct emu_burst r;
    int err = EMU_OK;
    uint32_t burst = j->burst ? j->burst : 64;
    switch (j->kind) {
    case EMU_JOB_COPY:
        err = emu_dev_copy(j->src, j->dst, burst, j->flags, &r);
        break;
    case EMU_JOB_DRAIN:
        err = emu_dev_drain(j->src, burst, j->flags, j->sink, &r);
        break;
    case EMU_JOB_GEN:
        err = job_gen(j->drv, j->gen, burst, &r);
        break;
    case EMU_JOB_SINK:
        err = emu_drv_rx_sink(j->drv, burst, j->flags, j->sink, &r);
        break;
    case EMU_JOB_NET:
    case EMU_JOB_HUB:
        err = net_job_run(j, &r);
        break;
    default:
        return EMU_OK;
    }
    j->runs++;
    if (r.packets || r.drops || r.errors)
        *progress = 1;
    else
        j->idle++;
    return err == EMU_E_VERIFY ? EMU_OK : err;
}

/* The queues a sleeping job waits on: the device-side queues it pops
 * from (their kick eventfds) or its driver-side queue (its interrupt
 * eventfd).  Only queues with an fd count.  One list for arming and
 * disarming, so the two always agree. */
struct job_wait {
    int fd;
    struct emu_devq *devq;        /* one of devq / drvq */
    struct emu_drvq *drvq;
};

static int job_waits(const struct emu_job *j, struct job_wait w[2])
{
    int n = 0;
    switch (j->kind) {
    case EMU_JOB_COPY:
    case EMU_JOB_DRAIN:
        if (j->src && j->src->kick_fd >= 0)
            w[n++] = (struct job_wait){j->src->kick_fd, j->src, NULL};
        if (j->kind == EMU_JOB_COPY && j->dst && j->dst->kick_fd >= 0)
            w[n++] = (struct job_wait){j->dst->kick_fd, j->dst, NULL};
        break;
    case EMU_JOB_GEN:
    case EMU_JOB_SINK:
        if (j->drv && j->drv->irq_fd >= 0)
            w[n++] = (struct job_wait){j->drv->irq_fd, NULL, j->drv};
        break;
    }
    return n;
}

static void job_wait_enable(const struct job_wait *w, int enable)
{
    if (w->devq)
        emu_dev_notify_enable(w->devq, enable);
    else
        emu_drv_irq_enable(w->drvq, enable);
}

/* Arm notifications for a job about to sleep; returns the fds to wait on,
 * in owner[] the stats of the queue each fd belongs to (wakeups), and in
 * drain[] whether it is an eventfd to consume (a socket is not). */
static int job_arm(struct emu_job *j, struct pollfd *pfd, struct emu_stats **owner,
                   uint8_t *drain, int max)
{
    if (IS_NET_JOB(j))
        return net_job_arm(j, pfd, owner, drain, max);
    struct job_wait w[2];
    int nw = job_waits(j, w), n = 0;
    for (int i = 0; i < nw && n < max; i++) {
        job_wait_enable(&w[i], 1);
        owner[n] = w[i].devq ? &w[i].devq->st : &w[i].drvq->st;
        drain[n] = 1;
        pfd[n++] = (struct pollfd){w[i].fd, POLLIN, 0};
    }
    return n;
}

static void job_disarm(struct emu_job *j)
{
    if (IS_NET_JOB(j)) {
        net_job_disarm(j);
        return;
    }
    struct job_wait w[2];
    int nw = job_waits(j, w);
    for (int i = 0; i < nw; i++)
        job_wait_enable(&w[i], 0);
}

/* Anything to do for this job right now (after arming)? */
static int job_ready(struct emu_job *j)
{
    switch (j->kind) {
    case EMU_JOB_COPY:
        return !j->src->broken && !j->dst->broken && emu_dev_avail(j->src) &&
               ((j->flags & EMU_CF_DROP_FULL) || emu_dev_avail(j->dst));
    case EMU_JOB_DRAIN:
        return !j->src->broken && emu_dev_avail(j->src);
    case EMU_JOB_GEN: {
        struct emu_drvq *q = j->drv;
        if (q->broken)
            return 0;
        if (j->gen->count && j->gen->sent >= j->gen->count)
            return emu_drv_has_used(q);
        if (j->gen->rate_pps && j->gen->t0_ns) {
            uint64_t allowed = (uint64_t)((double)(emu_now_ns() - j->gen->t0_ns) *
                                          (double)j->gen->rate_pps / 1e9) + 1;
            if (allowed <= j->gen->sent)   /* not yet: the bounded poll() paces us */
                return emu_drv_has_used(q);
        }
        uint32_t want = gen_want(q, j->gen, j->burst ? j->burst : 64);
        return (want && q->num_free >= want) || emu_drv_has_used(q);
    }
    case EMU_JOB_SINK:
        return !j->drv->broken && emu_drv_has_used(j->drv);
    case EMU_JOB_NET:
    case EMU_JOB_HUB:
        return net_job_ready(j);
    }
    return 0;
}

int emu_pump_once(struct emu_pump *p)
{
    int progress = 0;
    for (uint32_t i = 0; i < p->njobs; i++) {
        int e = job_run(&p->jobs[i], &progress);
        if (e && e != EMU_E_BROKEN && p->error == EMU_OK)
            p->error = e;
    }
    p->rounds++;
    return progress;
}

#define EMU_MAX_WAIT 64

/* Consume a notification without ever blocking the data path.  The fd
 * may be a peer's (a blocking eventfd, or one eventfd for two rings, so
 * the first read can empty what poll() reported for the second):
 * efd_drain reads with RWF_NOWAIT, which never blocks. */
static void drain_fd(int fd)
{
    uint64_t v;
    (void)efd_drain(fd, &v);
}

/* Pausing is a Dekker-style handshake (a store then a load on each side),
 * so both sides use sequentially consistent accesses. */
void emu_pump_set_paused(struct emu_pump *p, int paused)
{
    __atomic_store_n(&p->paused, (uint32_t)paused, __ATOMIC_SEQ_CST);
}

int emu_pump_in_rings(struct emu_pump *p)
{
    return (int)__atomic_load_n(&p->in_rings, __ATOMIC_SEQ_CST);
}

/* Enter the rings unless paused; returns 1 if the caller may touch them.
 * Already inside (in_rings still 1 from the last round), the pauser is
 * waiting for in_rings to drop, so a load of `paused` suffices: the
 * handshake's store (a locked instruction) is paid only on the way in. */
static int pump_enter(struct emu_pump *p)
{
    if (!__atomic_load_n(&p->in_rings, __ATOMIC_RELAXED))
        __atomic_store_n(&p->in_rings, 1, __ATOMIC_SEQ_CST);
    if (!__atomic_load_n(&p->paused, __ATOMIC_SEQ_CST))
        return 1;
    __atomic_store_n(&p->in_rings, 0, __ATOMIC_SEQ_CST);
    return 0;
}

int emu_pump_run(struct emu_pump *p)
{
    uint32_t idle = 0;
    __atomic_store_n(&p->running, 1, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)) {
        if (!pump_enter(p)) {
            struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
            continue;
        }
        if (emu_pump_once(p)) {
            idle = 0;
            continue;
        }
        if (p->mode == 0 || ++idle < p->idle_spins)
            continue;
        /* interrupt mode: arm, re-check, sleep */
        struct pollfd pfd[EMU_MAX_WAIT];
        struct emu_stats *owner[EMU_MAX_WAIT];
        uint8_t drain[EMU_MAX_WAIT];
        int n = 0, ready = 0;
        for (uint32_t i = 0; i < p->njobs; i++)
            n += job_arm(&p->jobs[i], pfd + n, owner + n, drain + n, EMU_MAX_WAIT - n);
        for (uint32_t i = 0; i < p->njobs && !ready; i++)
            ready = job_ready(&p->jobs[i]);
        if (!ready) {
            p->sleeps++;
            __atomic_store_n(&p->in_rings, 0, __ATOMIC_SEQ_CST);
            int tmo = (int)(p->timeout_ms ? p->timeout_ms : 100);
            for (uint32_t i = 0; i < p->njobs; i++)   /* a paced generator wakes itself */
                if (p->jobs[i].kind == EMU_JOB_GEN && p->jobs[i].gen->rate_pps && tmo > 1)
                    tmo = 1;
            int r = poll(pfd, (nfds_t)n, tmo);
            if (r > 0) {
                for (int k = 0; k < n; k++) {
                    if (pfd[k].revents & (POLLIN | POLLOUT | POLLHUP | POLLERR)) {
                        if (drain[k] && (pfd[k].revents & POLLIN))
                            drain_fd(pfd[k].fd);
                        owner[k]->wakeups++;
                    }
                }
            }
            if (!pump_enter(p))
                continue;   /* paused while asleep: leave notifications armed */
        }
        for (uint32_t i = 0; i < p->njobs; i++)
            job_disarm(&p->jobs[i]);
        idle = 0;
    }
    for (uint32_t i = 0; i < p->njobs; i++)
        if (IS_NET_JOB(&p->jobs[i]))
            net_job_leave(&p->jobs[i]);
    __atomic_store_n(&p->in_rings, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&p->running, 0, __ATOMIC_RELEASE);
    return p->error;
}

/* ---- memcpy reference --------------------------------------------------- */
double emu_memcpy_bench(uint32_t size, uint64_t iters, uint32_t nbufs)
{
    /* hot-cache copy between nbufs pairs of buffers allocated by the caller's
     * process heap: returns ns per copy */
    static uint8_t *src, *dst;
    static size_t have;
    size_t need = (size_t)size * (nbufs ? nbufs : 1);
    if (need > have) {
        free(src);
        free(dst);
        src = malloc(need);
        dst = malloc(need);
        if (!src || !dst) {
            have = 0;
            return -1.0;
        }
        memset(src, 1, need);
        memset(dst, 2, need);
        have = need;
    }
    uint64_t t0 = emu_now_ns();
    for (uint64_t i = 0; i < iters; i++) {
        size_t k = (size_t)(i % (nbufs ? nbufs : 1)) * size;
        memcpy(dst + k, src + k, size);
        __asm__ __volatile__("" : : "r"(dst) : "memory");
    }
    return (double)(emu_now_ns() - t0) / (double)iters;
}
