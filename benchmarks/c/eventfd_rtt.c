/* eventfd ping-pong between two processes, one round trip at a time:
 * A writes eventfd ab, B reads it and writes ba, A reads ba.  Each round
 * trip is timed (CLOCK_MONOTONIC); prints JSON percentiles in ns.
 *
 *   eventfd_rtt ITERATIONS spin|block CPU_A CPU_B
 *
 * spin: EFD_NONBLOCK reads in a busy loop (what polling drivers pay: two
 * syscalls per hop, no wake-up); block: read(2) sleeps and is woken (what
 * an interrupt costs).  Built by benchmarks/latency.py at run time. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void pin(int cpu)
{
    cpu_set_t s;
    if (cpu < 0)
        return;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    sched_setaffinity(0, sizeof s, &s);
}

static void rd(int fd, int spin)
{
    uint64_t v;
    for (;;) {
        if (read(fd, &v, 8) == 8)
            return;
        if (!(spin && errno == EAGAIN)) {
            perror("read");
            exit(1);
        }
    }
}

static void wr(int fd)
{
    uint64_t v = 1;
    if (write(fd, &v, 8) != 8) {
        perror("write");
        exit(1);
    }
}

static int cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t rank(const uint64_t *s, long n, double q)
{
    long i = (long)(q * n + 0.999999) - 1;   /* nearest rank */
    return s[i < 0 ? 0 : (i >= n ? n - 1 : i)];
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s ITERATIONS spin|block CPU_A CPU_B\n", argv[0]);
        return 2;
    }
    long n = atol(argv[1]), warm = 1000;
    int spin = strcmp(argv[2], "spin") == 0;
    int ca = atoi(argv[3]), cb = atoi(argv[4]);
    int fl = spin ? EFD_NONBLOCK : 0;
    int ab = eventfd(0, fl), ba = eventfd(0, fl);
    uint64_t *s = malloc(sizeof *s * (size_t)(n > 0 ? n : 1));
    if (n <= 0 || ab < 0 || ba < 0 || !s)
        return 2;
    pid_t p = fork();
    if (p == 0) {
        pin(cb);
        for (long i = 0; i < n + warm; i++) {
            rd(ab, spin);
            wr(ba);
        }
        _exit(0);
    }
    pin(ca);
    for (long i = 0; i < warm; i++) {
        wr(ab);
        rd(ba, spin);
    }
    double sum = 0;
    for (long i = 0; i < n; i++) {
        uint64_t t0 = now_ns();
        wr(ab);
        rd(ba, spin);
        s[i] = now_ns() - t0;
        sum += (double)s[i];
    }
    waitpid(p, NULL, 0);
    qsort(s, (size_t)n, sizeof *s, cmp);
    printf("{\"mode\": \"%s\", \"samples\": %ld, \"cpus\": [%d, %d], \"rtt_ns\": "
           "{\"p50\": %lu, \"p90\": %lu, \"p99\": %lu, \"p99.9\": %lu, \"min\": %lu, "
           "\"max\": %lu, \"mean\": %.1f}}\n", spin ? "spin" : "block", n, ca, cb,
           (unsigned long)rank(s, n, 0.5), (unsigned long)rank(s, n, 0.9),
           (unsigned long)rank(s, n, 0.99), (unsigned long)rank(s, n, 0.999),
           (unsigned long)s[0], (unsigned long)s[n - 1], sum / n);
    free(s);
    return 0;
}
