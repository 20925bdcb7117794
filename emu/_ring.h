/* emu/_ring.h: the C data path's public interface (split virtqueues).
 *
 * Two roles on one ring layout:
 *   device side (struct emu_devq): what a vhost back-end, or VM2's vhost-pci
 *     driver acting on VM1's rings, does: pop available chains, move bytes,
 *     complete them in the used ring;
 *   driver side (struct emu_drvq): what a guest virtio-net driver does: post
 *     buffers in the available ring, reclaim them from the used ring.
 * Every guest address is translated through a region table (struct emu_mem)
 * and bounds-checked; nothing outside a region is read or written.
 * The text between the CDEF markers is fed to cffi verbatim.
 */
#ifndef EMU_RING_H
#define EMU_RING_H
#include <stdint.h>
/* CDEF-BEGIN */
#define EMU_RING_ABI 6

/* ---- errors (per queue: last_error, and the count in errors) ---------- */
#define EMU_OK                   0
#define EMU_E_AVAIL_IDX          1  /* avail->idx moved more than num ahead: ring broken */
#define EMU_E_HEAD               2  /* head index >= num */
#define EMU_E_NEXT               3  /* next index >= table size */
#define EMU_E_CHAIN_LONG         4  /* chain longer than its table (or a loop) */
#define EMU_E_INDIRECT_NOT_NEG   5  /* INDIRECT without VIRTIO_RING_F_INDIRECT_DESC */
#define EMU_E_INDIRECT_NEXT      6  /* INDIRECT together with NEXT */
#define EMU_E_INDIRECT_LEN       7  /* indirect table len 0, not a multiple of 16, or > num entries */
#define EMU_E_NESTED_INDIRECT    8  /* INDIRECT inside a table or in the middle of a chain */
#define EMU_E_ADDR               9  /* buffer not inside mapped memory, or wrapping */
#define EMU_E_ZERO_LEN          10  /* zero-length descriptor */
#define EMU_E_LEN_OVERFLOW      11  /* chain length overflows u32 */
#define EMU_E_DIRECTION         12  /* writable desc in a TX chain / read-only in an RX chain */
#define EMU_E_SHORT_HDR         13  /* TX chain shorter than the virtio-net header */
#define EMU_E_TOO_MANY_SEGS     14  /* chain needs more than EMU_MAX_SEGS segments */
#define EMU_E_USED_IDX          15  /* driver side: used->idx moved more than in flight */
#define EMU_E_USED_ID           16  /* driver side: used id not in flight */
#define EMU_E_USED_LEN          17  /* driver side: used len larger than the buffer */
#define EMU_E_NUM_BUFFERS       18  /* driver side: bad num_buffers in a merged RX packet */
#define EMU_E_BROKEN            19  /* queue was marked broken earlier: nothing done */
#define EMU_E_VERIFY            20  /* sink: payload did not match the generator's pattern */
#define EMU_E_NOBUF             21  /* caller's buffer too small */

#define EMU_MAX_SEGS            1024   /* segments per chain (DPDK caps at 256) */
#define EMU_MAX_MRG_BUFS        256    /* RX chains per merged packet */

/* ---- split-ring layout (VIRTIO 1.2 §2.7): emu.spec.virtio_ring's values,
 * which tests/spec checks these against --------------------------------- */
#define EMU_VRING_DESC_F_NEXT      1
#define EMU_VRING_DESC_F_WRITE     2
#define EMU_VRING_DESC_F_INDIRECT  4
#define EMU_VRING_AVAIL_F_NO_INTERRUPT 1
#define EMU_VRING_USED_F_NO_NOTIFY     1
#define EMU_VRING_DESC_SIZE       16   /* struct virtq_desc */
#define EMU_VRING_USED_ELEM_SIZE   8   /* struct virtq_used_elem */
#define EMU_VRING_RING_ENTRIES     4   /* ring[] after {flags, idx}, in both areas */

/* queue feature flags (subset of negotiated features, in emu's own bits) */
#define EMU_QF_EVENT_IDX   1
#define EMU_QF_INDIRECT    2
#define EMU_QF_MRG_RXBUF   4
#define EMU_QF_LOG         8   /* dirty-log writes (VHOST_F_LOG_ALL) */

/* copy / burst flags */
#define EMU_CF_SWAP_MAC    1   /* swap Ethernet dst/src in the copied frame */
#define EMU_CF_DROP_FULL   2   /* destination out of buffers: drop (count) instead of waiting */
#define EMU_CF_VERIFY      4   /* sink: check the generator's stamp and pattern */

struct emu_region {
    uint64_t gpa;
    uint64_t size;
    uint8_t *host;           /* host address of gpa */
};

struct emu_mem {
    struct emu_region *regions;   /* sorted by gpa, non-overlapping */
    uint32_t nregions;
    uint32_t _pad;
    uint8_t *log;                 /* dirty bitmap, 1 bit per 4 KiB page, or NULL */
    uint64_t log_size;            /* bytes */
};

struct emu_stats {
    uint64_t packets;
    uint64_t bytes;
    uint64_t drops;
    uint64_t errors;
    uint64_t notifies;       /* calls (device side) / kicks (driver side) sent */
    uint64_t suppressed;     /* notifications the other side did not want */
    uint64_t wakeups;        /* times the pump woke on this queue's eventfd */
    uint64_t log_overflow;   /* dirty-log bits beyond the log size */
    uint64_t verify_fail;    /* sink: pattern mismatches */
    uint64_t seq_gaps;       /* sink: packets missing between stamps */
};

/* Device side of one split ring. */
/* A frame capture (``-object filter-dump``): every frame a queue moves is
 * appended to fd as a pcap record with one writev (fd opened O_APPEND, so
 * records from two data-path threads never interleave).  Lossless and
 * slow by design, as QEMU's filter-dump: a capture costs a syscall a frame. */
struct emu_capture {
    int fd;
    uint32_t snaplen;
    uint64_t frames;
    uint64_t bytes;          /* bytes written into records (after snaplen) */
    uint64_t errors;         /* failed or short writes */
};

struct emu_devq {
    uint8_t *desc;
    uint8_t *avail;
    uint8_t *used;
    uint16_t num;
    uint16_t last_avail_idx;      /* next avail entry to pop */
    uint16_t used_idx;            /* shadow of used->idx (ours to write) */
    uint16_t avail_idx_cache;     /* last avail->idx read */
    uint32_t features;            /* EMU_QF_* */
    uint32_t hdr_len;             /* virtio-net header: 10, 12 or 20 */
    uint32_t broken;              /* set on EMU_E_AVAIL_IDX: needs reset */
    int32_t last_error;
    int call_fd;                  /* eventfd written to interrupt the driver, or -1 */
    int kick_fd;                  /* eventfd the driver kicks, or -1 (pump waits on it) */
    uint64_t used_gpa;            /* guest address of the used ring (dirty log) */
    uint8_t *inflight;            /* INFLIGHT_SHMFD split queue region, or NULL */
    uint64_t inflight_counter;
    struct emu_mem *mem;
    struct emu_stats st;
    struct emu_capture *cap;      /* frames this queue moves, or NULL */
    uint16_t signalled_used;      /* used idx at the last call decision */
    uint16_t _pad16[3];
    struct emu_pring *packed;     /* packed ring (_ring_packed.h), NULL: split */
};

/* Driver side of one split ring.  Every packet slot owns one buffer of
 * buf_size bytes at buf_gpa + slot * buf_size; layout says how a packet's
 * descriptors look: 0 one descriptor (Linux), 1 header + data (iPXE),
 * 2 an indirect table of two entries (at ind_gpa + slot * 32). */
struct emu_drvq {
    uint8_t *desc;
    uint8_t *avail;
    uint8_t *used;
    uint16_t num;
    uint16_t avail_idx;           /* shadow of avail->idx (ours to write) */
    uint16_t last_used_idx;       /* next used entry to read */
    uint16_t num_free;            /* free packet slots */
    uint16_t free_head;           /* ring of free slots: free[free_head .. +num_free) */
    uint16_t nslots;
    uint32_t layout;
    uint32_t features;            /* EMU_QF_* */
    uint32_t hdr_len;
    uint32_t buf_size;
    uint32_t broken;
    int32_t last_error;
    int kick_fd;                  /* eventfd for the notify doorbell, or -1 */
    int irq_fd;                   /* eventfd of this queue's interrupt, or -1 */
    uint64_t buf_gpa;
    uint64_t ind_gpa;
    uint8_t *buf_host;            /* host address of buf_gpa (bounds-checked once) */
    uint8_t *ind_host;
    uint16_t *free_slots;         /* nslots entries */
    uint32_t *slot_len;           /* nslots entries: bytes posted (TX) */
    uint8_t *slot_busy;           /* nslots entries: 1 while the device owns it */
    uint32_t *slot_gen;           /* nslots entries: id of the generator whose frame
                                   * template the slot's buffer holds, 0 none */
    uint16_t kicked_avail;        /* avail idx at the last kick decision */
    uint16_t _pad16[3];
    struct emu_stats st;
    struct emu_capture *cap;      /* frames this queue moves, or NULL */
    struct emu_pring *packed;     /* packed ring (_ring_packed.h), NULL: split */
};

/* One burst's outcome. */
struct emu_burst {
    uint32_t packets;      /* packets moved / posted / received */
    uint32_t bytes_lo;     /* frame bytes (low 32 bits; st.bytes has the total) */
    uint32_t drops;
    uint32_t errors;
    int32_t error;         /* first error code of the burst, EMU_OK if none */
    uint32_t src_notified; /* 1 if the burst signalled the source side */
    uint32_t dst_notified;
    uint32_t blocked;      /* 1 if it stopped because the destination was full */
};

/* The generator's state (driver-side TX). */
struct emu_gen {
    const uint8_t *tmpl;   /* frame template (no virtio-net header) */
    uint32_t tmpl_len;
    uint32_t frame_len;    /* frame bytes per packet (>= stamp_off + 8 if stamping) */
    uint32_t stamp_off;    /* frame offset of the u64 sequence stamp; 0xffffffff: none */
    uint32_t fill;         /* 1: write the seq-derived pattern after the stamp */
    uint32_t id;           /* non-zero, unique per template: a slot whose buffer
                            * holds it gets only the stamp (and pattern) */
    uint32_t _pad;
    uint64_t seq;          /* next sequence number */
    uint64_t count;        /* stop after this many (0: forever) */
    uint64_t sent;
    uint64_t rate_pps;     /* 0: as fast as the ring allows */
    uint64_t t0_ns;        /* rate clock start */
};

/* The sink's state (driver-side RX or device-side drain). */
struct emu_sink {
    uint32_t stamp_off;    /* frame offset of the stamp; 0xffffffff: none */
    uint32_t _pad;
    uint64_t next_seq;     /* expected next stamp */
    uint64_t received;
    uint64_t last_ns;      /* time of the last packet (CLOCK_MONOTONIC) */
};

/* The pump: a data-path thread that runs jobs until *stop. */
#define EMU_JOB_COPY      1   /* src devq (TX chains) -> dst devq (RX chains) */
#define EMU_JOB_DRAIN     2   /* src devq: complete TX chains, count (and verify) */
#define EMU_JOB_GEN       3   /* drv: reclaim + post generator packets, in whole
                               * bursts (min(burst, ring / 2) free slots) */
#define EMU_JOB_SINK      4   /* drv: receive, count (and verify), refill */
#define EMU_JOB_NET       5   /* net: a NIC's queues <-> a stream socket (_ring_net.h) */
#define EMU_JOB_HUB       6   /* hub: the NICs of a hub, frames between them (_ring_net.h) */

struct emu_netport;           /* _ring_net.h */
struct emu_hub;

struct emu_job {
    uint32_t kind;
    uint32_t burst;
    uint32_t flags;          /* EMU_CF_* */
    uint32_t _pad;
    struct emu_devq *src;
    struct emu_devq *dst;
    struct emu_drvq *drv;
    struct emu_gen *gen;
    struct emu_sink *sink;
    struct emu_netport *net;      /* EMU_JOB_NET */
    struct emu_hub *hub;          /* EMU_JOB_HUB */
    uint64_t runs;
    uint64_t idle;
};

struct emu_pump {
    struct emu_job *jobs;
    uint32_t njobs;
    uint32_t mode;           /* 0 poll, 1 interrupt (sleep on eventfds when idle) */
    uint32_t stop;           /* set non-zero (from any thread) to return */
    uint32_t paused;         /* set non-zero: idle without touching rings */
    uint32_t idle_spins;     /* idle rounds before sleeping (interrupt mode) */
    uint32_t timeout_ms;     /* longest sleep, so stop is seen */
    uint64_t rounds;
    uint64_t sleeps;
    int32_t error;
    uint32_t running;        /* 1 while inside emu_pump_run */
    uint32_t in_rings;       /* 1 while a job may touch the rings (not paused) */
    uint32_t _pad;
};

int emu_ring_abi(void);
const char *emu_strerror(int code);

/* memory */
uint8_t *emu_mem_translate(const struct emu_mem *m, uint64_t gpa, uint64_t len);

/* device side */
void emu_devq_reset(struct emu_devq *q);
int emu_dev_copy(struct emu_devq *src, struct emu_devq *dst, uint32_t max,
                 uint32_t flags, struct emu_burst *res);
int emu_dev_drain(struct emu_devq *q, uint32_t max, uint32_t flags,
                  struct emu_sink *sink, struct emu_burst *res);
int emu_dev_pop(struct emu_devq *q, uint8_t *out, uint32_t cap, uint32_t *lens,
                uint32_t max, struct emu_burst *res);
int emu_dev_push(struct emu_devq *q, const uint8_t *in, const uint32_t *lens,
                 uint32_t n, uint32_t flags, struct emu_burst *res);
uint32_t emu_dev_avail(struct emu_devq *q);
void emu_dev_notify_enable(struct emu_devq *q, int enable);
int emu_dev_signal(struct emu_devq *q);

/* driver side */
int emu_drvq_init(struct emu_drvq *q);
int emu_drv_reclaim(struct emu_drvq *q, struct emu_burst *res);
int emu_drv_tx_gen(struct emu_drvq *q, struct emu_gen *g, uint32_t max,
                   struct emu_burst *res);
int emu_drv_tx_post(struct emu_drvq *q, const uint8_t *in, const uint32_t *lens,
                    uint32_t n, struct emu_burst *res);
int emu_drv_rx_refill(struct emu_drvq *q, struct emu_burst *res);
int emu_drv_rx_recv(struct emu_drvq *q, uint8_t *out, uint32_t cap, uint32_t *lens,
                    uint32_t max, struct emu_burst *res);
int emu_drv_rx_sink(struct emu_drvq *q, uint32_t max, uint32_t flags,
                    struct emu_sink *sink, struct emu_burst *res);
void emu_drv_irq_enable(struct emu_drvq *q, int enable);
int emu_drv_kick(struct emu_drvq *q);

/* pump */
int emu_pump_run(struct emu_pump *p);
void emu_pump_set_paused(struct emu_pump *p, int paused);
int emu_pump_in_rings(struct emu_pump *p);
int emu_pump_once(struct emu_pump *p);
uint64_t emu_now_ns(void);

/* reference copy for the benchmarks' memcpy ceiling */
double emu_memcpy_bench(uint32_t size, uint64_t iters, uint32_t nbufs);
/* ---- eventfds a peer shares (emu/_efd.c) ----------------------------- */
int emu_efd_start(void);          /* start the write guard now (else at the first signal): 2 = guarded */
int emu_efd_signal(int fd);       /* +1: 1 done, 0 counter full, -errno; never blocks for long */
int emu_efd_drain(int fd, uint64_t *value);  /* read the counter: 1, 0 if empty, -errno; never blocks */
void emu_efd_stats(uint64_t *out);  /* [interrupted writes, racy reads, guard state, period ms] */

/* CDEF-END */
#endif
