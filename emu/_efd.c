/* emu/_efd.c: eventfd I/O that never blocks on an fd a peer can reach.
 *
 * An eventfd that crossed a vhost-user socket (SCM_RIGHTS) is one open file
 * description in both processes, so the peer controls its flags and its
 * counter: it can clear O_NONBLOCK, read the counter dry between our poll()
 * and our read(), or fill it to 2^64 - 2 so that our next write of 1 blocks
 * (eventfd(2)).  Measured on Linux 6.18 (docs/security.md, class 2):
 *
 *  - reads: preadv2(RWF_NOWAIT) on an eventfd returns EAGAIN on an empty
 *    counter whatever O_NONBLOCK says (eventfd's read honours IOCB_NOWAIT),
 *    so emu_efd_drain() never blocks, in one syscall (poll + read was two);
 *  - writes: pwritev2(RWF_NOWAIT) on an eventfd is EOPNOTSUPP, and an
 *    eventfd cannot be reopened as a description of our own (ENXIO).  So a
 *    write may block, and is *bounded* instead: the writer marks its
 *    per-thread slot "in write" (two plain stores, no syscall); a guard
 *    thread looks at the slots every EMU_EFD_GUARD_MS and interrupts a write
 *    it sees in progress on two looks in a row with a thread-directed
 *    signal whose handler does nothing and is installed without SA_RESTART,
 *    so write() returns EINTR.  The lost +1 loses nothing: a counter that
 *    full is readable already, its reader is woken anyway.
 *
 * A writer thread is therefore held at most 2 x EMU_EFD_GUARD_MS by a
 * hostile peer; a peer that plays fair never fills a counter, so the guard
 * never acts.  Included by _ring.c (the pump signals and drains through it).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

#define EMU_EFD_SLOTS    256    /* threads that write eventfds at once */
#define EMU_EFD_GUARD_MS 50     /* the guard's period: a write is held < 2 periods */
#define EMU_EFD_SIGNAL   (SIGRTMAX - 4)   /* glibc reserves the lowest RT signals */

struct efd_slot {
    pid_t tid;                  /* owner thread, 0 = free */
    uint32_t seq;               /* owner's write counter (never reset: tokens stay unique) */
    uint32_t in_write;          /* the token of the write under way, 0 = none */
};

static struct efd_slot efd_slots[EMU_EFD_SLOTS];
static uint32_t efd_nslots;            /* slots ever claimed (the guard's scan bound) */
static int efd_state;                  /* 0 idle, 1 starting, 2 guarded, 3 unguarded */
static uint64_t efd_interrupts;        /* writes the guard interrupted */
static uint64_t efd_racy_reads;        /* reads done with poll + read (no RWF_NOWAIT) */
static pthread_key_t efd_key;
static __thread struct efd_slot *efd_mine;

static void efd_noop(int sig) { (void)sig; }

static void *efd_guard(void *arg)
{
    (void)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    static uint32_t last[EMU_EFD_SLOTS];
    memset(last, 0, sizeof last);
    const struct timespec period = {0, EMU_EFD_GUARD_MS * 1000000L};
    for (;;) {
        nanosleep(&period, NULL);
        uint32_t n = __atomic_load_n(&efd_nslots, __ATOMIC_ACQUIRE);
        pid_t pid = getpid();
        for (uint32_t i = 0; i < n; i++) {
            uint32_t w = __atomic_load_n(&efd_slots[i].in_write, __ATOMIC_RELAXED);
            if (w && w == last[i]) {
                pid_t tid = __atomic_load_n(&efd_slots[i].tid, __ATOMIC_RELAXED);
                /* counted before the signal: the interrupted writer may
                 * return and read the count before this thread runs again */
                if (tid) {
                    __atomic_fetch_add(&efd_interrupts, 1, __ATOMIC_SEQ_CST);
                    if (syscall(SYS_tgkill, pid, tid, EMU_EFD_SIGNAL) != 0)
                        __atomic_fetch_sub(&efd_interrupts, 1, __ATOMIC_SEQ_CST);
                }
            }
            last[i] = w;
        }
    }
    return NULL;
}

static void efd_release(void *p)
{
    struct efd_slot *s = p;
    __atomic_store_n(&s->in_write, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&s->tid, 0, __ATOMIC_RELEASE);
}

/* In a forked child only the forking thread exists: no guard, no slots. */
static void efd_atfork_child(void)
{
    memset(efd_slots, 0, sizeof efd_slots);
    efd_nslots = 0;
    efd_mine = NULL;
    if (__atomic_load_n(&efd_state, __ATOMIC_RELAXED) == 2)
        efd_state = 0;
}

static int efd_start(void)
{
    int st = __atomic_load_n(&efd_state, __ATOMIC_ACQUIRE);
    if (st >= 2)
        return st;
    int idle = 0;
    if (!__atomic_compare_exchange_n(&efd_state, &idle, 1, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        while ((st = __atomic_load_n(&efd_state, __ATOMIC_ACQUIRE)) == 1)
            sched_yield();
        return st;
    }
    static int once;
    int ok = 1;
    if (!once) {
        struct sigaction old, sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = efd_noop;          /* no SA_RESTART: the write returns EINTR */
        sigemptyset(&sa.sa_mask);
        if (sigaction(EMU_EFD_SIGNAL, NULL, &old) != 0
            || (old.sa_handler != SIG_DFL && old.sa_handler != efd_noop)
            || sigaction(EMU_EFD_SIGNAL, &sa, NULL) != 0
            || pthread_key_create(&efd_key, efd_release) != 0)
            ok = 0;                        /* someone else owns the signal: unguarded */
        else
            pthread_atfork(NULL, NULL, efd_atfork_child);
        once = ok ? 1 : -1;
    }
    if (once == 1) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 64 << 10);
        ok = pthread_create(&t, &attr, efd_guard, NULL) == 0;
        pthread_attr_destroy(&attr);
    } else {
        ok = 0;
    }
    st = ok ? 2 : 3;
    __atomic_store_n(&efd_state, st, __ATOMIC_RELEASE);
    return st;
}

static __attribute__((noinline)) struct efd_slot *efd_claim(void)
{
    if (efd_start() != 2)
        return NULL;
    pid_t me = (pid_t)syscall(SYS_gettid);
    for (uint32_t i = 0; i < EMU_EFD_SLOTS; i++) {
        pid_t free_ = 0;
        if (__atomic_compare_exchange_n(&efd_slots[i].tid, &free_, me, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_RELAXED)) {
            uint32_t n = __atomic_load_n(&efd_nslots, __ATOMIC_RELAXED);
            while (n < i + 1 && !__atomic_compare_exchange_n(&efd_nslots, &n, i + 1, 0,
                                                              __ATOMIC_RELEASE, __ATOMIC_RELAXED))
                ;
            sigset_t ours;
            sigemptyset(&ours);
            sigaddset(&ours, EMU_EFD_SIGNAL);
            pthread_sigmask(SIG_UNBLOCK, &ours, NULL);
            pthread_setspecific(efd_key, &efd_slots[i]);
            efd_mine = &efd_slots[i];
            return efd_mine;
        }
    }
    return NULL;
}

/* Add 1 to the eventfd: 1 done, 0 the counter is full (it is readable
 * already), -errno otherwise (EBADF...).  Never blocks for more than two
 * guard periods, whatever the peer did to the fd. */
static inline int efd_signal(int fd)
{
    struct efd_slot *s = efd_mine;
    if (unlikely(!s))
        s = efd_claim();
    const uint64_t one = 1;
    ssize_t r;
    if (likely(s != NULL)) {
        uint32_t token = ++s->seq;
        if (unlikely(!token))
            token = ++s->seq;
        __atomic_store_n(&s->in_write, token, __ATOMIC_RELAXED);
        r = write(fd, &one, sizeof one);
        __atomic_store_n(&s->in_write, 0, __ATOMIC_RELAXED);
    } else {
        /* no guard (no slot, or the signal is taken): write only when
         * poll says it would not block; a peer can still race this */
        struct pollfd p = {fd, POLLOUT, 0};
        if (poll(&p, 1, 0) != 1 || !(p.revents & POLLOUT))
            return (p.revents & POLLNVAL) ? -EBADF : 0;
        r = write(fd, &one, sizeof one);
    }
    if (r == (ssize_t)sizeof one)
        return 1;
    if (r < 0 && errno != EAGAIN && errno != EINTR)
        return -errno;
    return 0;
}

/* Consume the counter into *value: 1 read, 0 it was empty, -errno on
 * error.  Never blocks, whatever O_NONBLOCK says. */
static inline int efd_drain(int fd, uint64_t *value)
{
    struct iovec iov = {value, sizeof *value};
    ssize_t r = preadv2(fd, &iov, 1, -1, RWF_NOWAIT);
    if (r == (ssize_t)sizeof *value)
        return 1;
    if (r >= 0)
        return -EINVAL;                    /* not an eventfd */
    if (errno == EAGAIN || errno == EINTR)
        return 0;
    if (errno != EOPNOTSUPP && errno != EINVAL)
        return -errno;
    /* a kernel without IOCB_NOWAIT for eventfd: poll, then read (racy) */
    __atomic_fetch_add(&efd_racy_reads, 1, __ATOMIC_RELAXED);
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 0) != 1 || !(p.revents & POLLIN))
        return 0;
    return read(fd, value, sizeof *value) == (ssize_t)sizeof *value;
}

int emu_efd_start(void) { return efd_start(); }
int emu_efd_signal(int fd) { return efd_signal(fd); }
int emu_efd_drain(int fd, uint64_t *value) { return efd_drain(fd, value); }

void emu_efd_stats(uint64_t *out)
{
    out[0] = __atomic_load_n(&efd_interrupts, __ATOMIC_SEQ_CST);
    out[1] = __atomic_load_n(&efd_racy_reads, __ATOMIC_RELAXED);
    out[2] = (uint64_t)__atomic_load_n(&efd_state, __ATOMIC_RELAXED);
    out[3] = EMU_EFD_GUARD_MS;
}
