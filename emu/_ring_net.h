/* emu/_ring_net.h: the device side of a virtio-net NIC whose packets emu
 * moves itself (no vhost-user back-end), part of the C engine.
 *
 * Two jobs for the pump (struct emu_pump, _ring.h):
 *   EMU_JOB_NET  one NIC and a stream socket (QEMU's -netdev socket): TX
 *                chains -> [4-byte big-endian length][frame] on the socket,
 *                and the socket's frames -> RX chains;
 *   EMU_JOB_HUB  the NICs of one hub (QEMU's -netdev hubport): a frame one
 *                port sends goes to every other port; a single port drops.
 * A struct emu_netport is one NIC's side of either.  Only its job touches
 * the socket and the staging buffers; Python sets the socket and the
 * rings while the job is out of them (rings_paused handshake, or a link
 * that is down) and hands it frames to send (announce) through a
 * single-producer ring (inj_*).  The text between the CDEF markers is fed
 * to cffi after _ring.h's.
 */
#ifndef EMU_RING_NET_H
#define EMU_RING_NET_H
#include "_ring.h"
/* CDEF-BEGIN */
#define EMU_NET_BUFSIZE       69632  /* QEMU's NET_BUFSIZE (4096 + 65536): the largest frame */
#define EMU_NET_LEN_SIZE      4      /* the stream's length prefix */
#define EMU_NET_INJECT_SLOTS  16     /* frames Python may queue for the job to send */
#define EMU_NET_INJECT_MAX    128    /* bytes of one such frame (an announce is 60) */
#define EMU_HUB_MAX_PORTS     8

/* the link as the job sees it (link) */
#define EMU_NET_UP            0
#define EMU_NET_NOSOCK        1      /* no socket yet (listen before accept) or given back */
#define EMU_NET_EOF           2      /* the peer closed the stream */
#define EMU_NET_ERROR         3      /* read or write failed: errno in last_errno */
#define EMU_NET_OVERSIZE      4      /* the peer's length prefix exceeded max_frame */

struct emu_net_stats {
    uint64_t tx_frames;          /* guest frames taken (to the stream, or to other ports) */
    uint64_t tx_bytes;
    uint64_t rx_frames;          /* frames put in the guest's RX chains */
    uint64_t rx_bytes;
    uint64_t tx_oversize;        /* guest frames over max_frame (or 2^32): dropped */
    uint64_t tx_errors;          /* guest chains the engine refused (bad descriptors) */
    uint64_t tx_dropped;         /* guest frames with nowhere to go (link down, lone hub port) */
    uint64_t tx_lost_bytes;      /* staged bytes never written: the stream ended under them */
    uint64_t rx_dropped;         /* frames that fit no RX chain, purged at reset, or a full port */
    uint64_t rx_errors;          /* RX chains the engine refused */
    uint64_t rx_waits;           /* a frame waited for the guest's RX buffers */
    uint64_t rx_oversize;        /* the peer announced a frame over max_frame: stream ended */
    uint64_t partial_writes;     /* writes the socket took only in part */
    uint64_t write_blocked;      /* writes the socket refused (full): TX waits for POLLOUT */
    uint64_t partial_reads;      /* reads that ended inside a frame */
    uint64_t injected;           /* Python's frames sent */
    uint64_t inject_dropped;     /* Python's frames dropped (link down, lone hub port) */
    uint64_t eof;                /* the peer closed the stream */
    uint64_t errors;             /* read/write errors */
};

struct emu_netport {
    int fd;                      /* the stream socket (non-blocking), or -1 */
    int wake_fd;                 /* eventfd Python writes to wake the job */
    int event_fd;                /* eventfd the job writes when the link goes down */
    uint32_t link;               /* EMU_NET_*: the job sets it down, Python up (with fd) */
    int32_t last_errno;
    uint32_t max_frame;          /* EMU_NET_BUFSIZE */
    struct emu_devq *tx;         /* the NIC's queues (device side), NULL while not live */
    struct emu_devq *rx;
    uint32_t rings_paused;       /* Python: the job must stop touching tx/rx */
    uint32_t in_rings;           /* the job: 1 while it may touch tx/rx */
    uint32_t armed;              /* the job: notifications it enabled (1 tx, 2 rx) */
    uint32_t rx_held;            /* a whole frame at rx_head waits for RX buffers */
    /* guest -> stream: bytes [tx_head, tx_tail) of txbuf are still to write */
    uint8_t *txbuf;
    uint32_t txcap;
    uint32_t tx_head;
    uint32_t tx_tail;
    /* stream -> guest: bytes [rx_head, rx_tail) of rxbuf are read, not parsed */
    uint8_t *rxbuf;
    uint32_t rxcap;
    uint32_t rx_head;
    uint32_t rx_tail;
    /* Python -> job: slots [inj_head, inj_tail) modulo EMU_NET_INJECT_SLOTS */
    uint32_t inj_head;           /* the job's: next to send */
    uint32_t inj_tail;           /* Python's: next free */
    uint32_t inj_len[16];        /* EMU_NET_INJECT_SLOTS */
    uint8_t inj[16][128];        /* [EMU_NET_INJECT_SLOTS][EMU_NET_INJECT_MAX] */
    struct emu_net_stats st;
    struct emu_stats wake_st;    /* the pump's count of wakeups on the socket, wake_fd */
};

struct emu_hub {
    struct emu_netport *ports[8];    /* EMU_HUB_MAX_PORTS */
    uint32_t nports;
    int wake_fd;                     /* one eventfd for every port of the hub */
};

int emu_net_check(const struct emu_netport *p);
int emu_net_inject(struct emu_netport *p, const uint8_t *frame, uint32_t len);
void emu_net_purge_rx(struct emu_netport *p);
int emu_net_set_fd(struct emu_netport *p, int fd);
int emu_net_take_fd(struct emu_netport *p);
/* CDEF-END */
#endif
