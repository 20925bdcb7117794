/* emu/_ring_packed.h: packed virtqueues (VIRTIO 1.2 §2.8) in the C engine.
 *
 * A packed ring is an emu_devq / emu_drvq whose `packed` field points to a
 * struct emu_pring; the public emu_dev_* / emu_drv_* calls switch on it, so
 * every job, burst and the one-copy path work on either format, and
 * between any two.  The fields of emu_devq / emu_drvq keep their meaning
 * with ring positions for indexes:
 *   desc  the descriptor ring (struct pvirtq_desc[num]),
 *   avail the driver event suppression area, used the device one;
 *   last_avail_idx / avail_idx, used_idx / last_used_idx, signalled_used /
 *   kicked_avail: positions 0..num-1, their wrap counters in emu_pring.
 * The text between the CDEF markers is fed to cffi verbatim.
 */
#ifndef EMU_RING_PACKED_H
#define EMU_RING_PACKED_H
#include <stdint.h>
/* CDEF-BEGIN */
/* ---- packed-ring layout: emu.spec.virtio_ring_packed's values, which
 * tests/spec checks these against ------------------------------------- */
#define EMU_PRING_DESC_F_AVAIL       128     /* 1 << VRING_PACKED_DESC_F_AVAIL */
#define EMU_PRING_DESC_F_USED        32768   /* 1 << VRING_PACKED_DESC_F_USED */
#define EMU_PRING_EVENT_FLAG_ENABLE  0
#define EMU_PRING_EVENT_FLAG_DISABLE 1
#define EMU_PRING_EVENT_FLAG_DESC    2
#define EMU_PRING_EVENT_F_WRAP_CTR   15
#define EMU_PRING_DESC_SIZE          16      /* struct pvirtq_desc */
#define EMU_PRING_EVENT_SIZE         4       /* struct pvirtq_event_suppress */
#define EMU_PRING_INFLIGHT_HEADER    32      /* QueueRegionPacked, before desc[] */
#define EMU_PRING_INFLIGHT_DESC      32      /* DescStatePacked */

/* packed-only errors (numbered apart from _ring.h's list) */
#define EMU_E_DESC_NOT_AVAIL    32  /* a descriptor of a chain is not marked available */

/* queue flag: VIRTIO_F_IN_ORDER negotiated (driver side: a used descriptor
 * may stand for every buffer made available before it) */
#define EMU_QF_IN_ORDER    256

/* What the device keeps of a chain it popped, by the ring position the
 * chain starts at: its completion needs the buffer id and how many ring
 * descriptors to skip. */
struct emu_pchain {
    uint16_t id;
    uint16_t n;              /* ring descriptors; 0: the ring broke on it (never used) */
    uint16_t write;          /* device-writable chain: used flags carry WRITE */
    uint16_t ent;            /* inflight area: its head DescStatePacked entry */
    uint16_t last;           /* inflight area: its last entry */
    uint16_t _pad[3];
};

struct emu_pring {
    uint16_t avail_wrap;     /* device: wrap counter at last_avail_idx; driver: at avail_idx */
    uint16_t used_wrap;      /* device: at used_idx; driver: at last_used_idx */
    uint16_t signalled_wrap; /* device: at signalled_used; driver: at kicked_avail */
    uint16_t first_pos;      /* the descriptor whose flags publish the batch, 0xffff none */
    uint16_t first_flags;    /* ... and the flags it gets at the next flush */
    uint16_t _pad16;
    uint32_t since;          /* descriptors used (device) / made available (driver)
                              * since the last notification decision */
    uint64_t desc_gpa;       /* device: dirty log of used descriptors */
    uint64_t event_gpa;      /* device: dirty log of the device event suppression area */
    struct emu_pchain *chains;   /* device: num entries */
    uint64_t skipped;        /* driver: buffers an in-order used descriptor completed */
};

/* Whether the device has returned buffers the driver has not taken. */
int emu_drv_has_used(struct emu_drvq *q);
/* CDEF-END */

/* ---- inside the engine: the primitives the split code switches to ---- */
#ifdef EMU_RING_IMPL
struct chain;
static inline void pdev_reset(struct emu_devq *q);
static inline uint32_t pdev_avail(struct emu_devq *q, int *first_err);
static inline uint32_t pdev_count_avail(struct emu_devq *q);
static inline uint16_t pdev_pop(struct emu_devq *q);
static inline void pdev_unpop(struct emu_devq *q, const uint16_t *heads, uint32_t n);
static inline int pdev_resolve(struct emu_devq *q, uint16_t head, int write, struct chain *c,
                               uint32_t *hint);
static inline void pdev_used(struct emu_devq *q, uint16_t head, uint32_t len);
static int pdev_flush(struct emu_devq *q);
static inline int pdev_unflushed(const struct emu_devq *q);
static void pdev_notify_enable(struct emu_devq *q, int enable);
static int emu_pdev_copy(struct emu_devq *src, struct emu_devq *dst, uint32_t max,
                         uint32_t flags, struct emu_burst *res);

/* The packed driver state a call keeps in registers beside struct drv's
 * (a store into guest memory may alias the emu_pring it comes from). */
struct pdrv_regs {
    uint16_t avail_wrap, used_wrap, first_pos, first_flags;
};
struct drv;
static inline void pdrv_begin(struct drv *d);
static inline void pdrv_end(const struct drv *d);
static void pdrv_init(struct emu_drvq *q);
static inline void pdrv_post(struct drv *d, uint16_t s, uint32_t len, int rx);
static int pdrv_flush(struct emu_drvq *q);
static void pdrv_irq_enable(struct emu_drvq *q, int enable);
static inline uint16_t pdrv_used_ready(struct drv *d, int *first);
static inline int pdrv_take(struct drv *d, uint32_t *len, int *first);
static inline uint32_t pdrv_peek_slot(const struct drv *d);
#endif
#endif
