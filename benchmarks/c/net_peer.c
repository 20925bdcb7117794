/* A socket netdev's peer for the benchmarks: QEMU's stream framing (a
 * 4-byte big-endian length, then the frame) on an inherited fd.
 *
 *   net_peer sink FD WARMUP SECONDS        count the frames that arrive
 *   net_peer gen FD SIZE WARMUP SECONDS    send SIZE-byte frames as fast as
 *                                          the stream takes them
 *
 * Frames are Ethernet/IPv4/UDP broadcasts (255.255.255.255:9, a valid IP
 * header checksum: a Linux guest takes and drops them without answering).
 * After WARMUP seconds the frames moved in the next SECONDS are counted;
 * prints one JSON object: {"frames": N, "bytes": B, "seconds": S} (gen: and
 * "total_frames", warm-up included).
 * Built by benchmarks/socket_netdev.py at run time. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BATCH_BYTES (256 * 1024)
#define MAX_FRAME 65535

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint16_t ip_checksum(const uint8_t *h, int n)
{
    uint32_t s = 0;
    for (int i = 0; i < n; i += 2)
        s += (uint32_t)(h[i] << 8 | h[i + 1]);
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

static int frame(uint8_t *f, int size)
{
    if (size < 42 || size > MAX_FRAME)
        return -1;
    memset(f, 0, (size_t)size);
    memset(f, 0xff, 6);                                   /* dst: broadcast */
    memcpy(f + 6, "\x02\x00\x00\x00\x00\x02", 6);
    f[12] = 0x08;                                         /* IPv4 */
    uint8_t *ip = f + 14;
    uint16_t ip_len = (uint16_t)(size - 14);
    ip[0] = 0x45;
    ip[2] = (uint8_t)(ip_len >> 8);
    ip[3] = (uint8_t)ip_len;
    ip[8] = 64;
    ip[9] = 17;                                           /* UDP */
    memcpy(ip + 12, "\x0a\x00\x00\x02", 4);
    memset(ip + 16, 0xff, 4);
    uint16_t c = ip_checksum(ip, 20);
    ip[10] = (uint8_t)(c >> 8);
    ip[11] = (uint8_t)c;
    uint8_t *udp = ip + 20;
    udp[1] = 9;
    udp[3] = 9;
    uint16_t ulen = (uint16_t)(ip_len - 20);
    udp[4] = (uint8_t)(ulen >> 8);
    udp[5] = (uint8_t)ulen;
    return 0;
}

static int gen(int fd, int size, double warmup, double seconds)
{
    static uint8_t buf[BATCH_BYTES + 4 + MAX_FRAME];
    uint8_t f[MAX_FRAME];
    if (frame(f, size))
        return 2;
    size_t per = 4 + (size_t)size, n = 0, len = 0;
    while (len + per <= BATCH_BYTES || n == 0) {
        uint32_t be = htonl((uint32_t)size);
        memcpy(buf + len, &be, 4);
        memcpy(buf + len + 4, f, (size_t)size);
        len += per;
        n++;
    }
    double t0 = now(), start = t0 + warmup, end = start + seconds;
    uint64_t bytes_in_window = 0, total = 0;
    int counting = 0;
    for (;;) {
        size_t off = 0;
        while (off < len) {
            ssize_t w = write(fd, buf + off, len - off);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                perror("net_peer: write");
                return 1;
            }
            off += (size_t)w;
            total += (uint64_t)w;
            double t = now();
            if (!counting && t >= start)
                counting = 1;
            if (counting)
                bytes_in_window += (uint64_t)w;
            if (t >= end) {
                printf("{\"frames\": %llu, \"bytes\": %llu, \"seconds\": %.6f, "
                       "\"total_frames\": %llu}\n",
                       (unsigned long long)(bytes_in_window / per),
                       (unsigned long long)(bytes_in_window / per * (uint64_t)size),
                       t - start, (unsigned long long)(total / per));
                return 0;
            }
        }
    }
}

static int sink(int fd, double warmup, double seconds)
{
    static uint8_t buf[1 << 20];
    size_t have = 0;
    uint64_t frames = 0, bytes = 0;
    double t0 = now(), start = t0 + warmup, end = start + seconds, t = t0;
    int counting = 0;
    while (t < end) {
        ssize_t r = read(fd, buf + have, sizeof buf - have);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        have += (size_t)r;
        size_t off = 0;
        t = now();
        if (!counting && t >= start) {
            counting = 1;
            start = t;
        }
        while (have - off >= 4) {
            uint32_t n;
            memcpy(&n, buf + off, 4);
            n = ntohl(n);
            if (n > MAX_FRAME + 4096)
                return 3;
            if (have - off - 4 < n)
                break;
            if (counting) {
                frames++;
                bytes += n;
            }
            off += 4 + n;
        }
        memmove(buf, buf + off, have - off);
        have -= off;
    }
    printf("{\"frames\": %llu, \"bytes\": %llu, \"seconds\": %.6f}\n",
           (unsigned long long)frames, (unsigned long long)bytes, counting ? t - start : 0.0);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "sink"))
        return sink(atoi(argv[2]), atof(argv[3]), atof(argv[4]));
    if (argc == 6 && !strcmp(argv[1], "gen"))
        return gen(atoi(argv[2]), atoi(argv[3]), atof(argv[4]), atof(argv[5]));
    fprintf(stderr, "usage: net_peer sink FD WARMUP SECONDS | gen FD SIZE WARMUP SECONDS\n");
    return 2;
}
