/* udp_load: the benchmark's UDP load generator and ceiling server, in C.
 *
 *   udp_load ping HOST PORT FLOWS SIZE SECONDS WARMUP
 *       FLOWS connected UDP sockets, each from its own loopback address (127.0.0.10 and up,
 *       so that a per-source limit sees FLOWS sources), each with one SIZE-byte datagram in
 *       flight: send, wait for its echo, check every byte, repeat. A datagram not back within
 *       200 ms is sent again and counted lost. Prints one JSON object: datagrams, seconds,
 *       msg_per_s, p50_us, p99_us, lost, mismatches, load_cpu. Nothing is counted during the
 *       first WARMUP seconds.
 *   udp_load serve PORT
 *       The ceiling: one thread, blocking recvfrom and sendto on 127.0.0.1:PORT.
 *
 * Built by run.py with the system `cc` at run time; no binary lives in git. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench_common.h"

#define RESEND_NS 200000000ull

static int serve(int port) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr)) { perror("udp_load: bind"); return 1; }
    static unsigned char buf[65536];
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&peer, &plen);
        if (n >= 0) sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&peer, plen);
    }
}

typedef struct { int fd; uint32_t seq; uint64_t began; } flow_t;

static void fill(unsigned char *msg, size_t size, int flow, uint32_t seq) {
    uint64_t x = ((uint64_t)flow << 32 | seq) * 0x9E3779B97F4A7C15u + 1;
    for (size_t i = 0; i < size; i++) {
        x = x * 6364136223846793005u + 1442695040888963407u;
        msg[i] = (unsigned char)('!' + (x >> 33) % 94u);
    }
}

static int ping(const char *host, int port, int nflows, size_t size, double seconds, double warmup) {
    flow_t *fs = calloc((size_t)nflows, sizeof *fs);
    unsigned char *msgs = malloc((size_t)nflows * size), *buf = malloc(65536);
    uint64_t *hist = calloc(BUCKETS + 1, sizeof *hist);
    int ep = epoll_create1(0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &to.sin_addr);
    for (int i = 0; i < nflows; i++) {
        fs[i].fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        struct sockaddr_in from = {.sin_family = AF_INET};
        from.sin_addr.s_addr = htonl(0x7f00000au + (uint32_t)i);  /* 127.0.0.10 + i */
        if (bind(fs[i].fd, (struct sockaddr *)&from, sizeof from) ||
            connect(fs[i].fd, (struct sockaddr *)&to, sizeof to)) {
            perror("udp_load: bind/connect");
            return 1;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fs[i].fd, &ev);
    }
    uint64_t t0 = now_ns(), counting = t0 + (uint64_t)(warmup * 1e9);
    uint64_t end = counting + (uint64_t)(seconds * 1e9), now = t0;
    uint64_t count = 0, lost = 0, mismatches = 0;
    for (int i = 0; i < nflows; i++) {
        fill(msgs + (size_t)i * size, size, i, 0);
        fs[i].began = t0;
        send(fs[i].fd, msgs + (size_t)i * size, size, 0);
    }
    double cpu_at_start = -1;
    struct epoll_event evs[256];
    while (now < end && !mismatches) {
        int n = epoll_wait(ep, evs, 256, 50);
        now = now_ns();
        if (cpu_at_start < 0 && now >= counting) cpu_at_start = cpu_seconds();
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u32;
            flow_t *f = &fs[i];
            unsigned char *msg = msgs + (size_t)i * size;
            ssize_t r;
            while ((r = recv(f->fd, buf, 65536, 0)) >= 0) {
                if ((size_t)r != size || memcmp(buf, msg, size)) continue;  /* a late one */
                uint64_t done = now_ns();
                if (f->began >= counting && done <= end) {
                    uint64_t us = (done - f->began) / 1000;
                    hist[us < BUCKETS ? us : BUCKETS]++;
                    count++;
                }
                fill(msg, size, i, ++f->seq);
                f->began = done;
                send(f->fd, msg, size, 0);
            }
            if (errno == ECONNREFUSED) { fprintf(stderr, "udp_load: refused\n"); return 1; }
        }
        now = now_ns();
        for (int i = 0; i < nflows; i++) {
            if (now > fs[i].began && now - fs[i].began > RESEND_NS) {  /* lost: send again */
                lost++;
                fs[i].began = now;
                send(fs[i].fd, msgs + (size_t)i * size, size, 0);
            }
        }
    }
    double busy = cpu_at_start < 0 ? 0 : (cpu_seconds() - cpu_at_start) / seconds;
    uint64_t p50 = 0, p99 = 0, seen = 0;
    int have50 = 0;
    for (uint64_t us = 0; us <= BUCKETS && count; us++) {
        seen += hist[us];
        if (!have50 && seen * 100 >= count * 50) { p50 = us; have50 = 1; }
        if (seen * 100 >= count * 99) { p99 = us; break; }
    }
    printf("{\"datagrams\": %llu, \"seconds\": %.3f, \"msg_per_s\": %.1f, \"p50_us\": %llu, "
           "\"p99_us\": %llu, \"lost\": %llu, \"mismatches\": %llu, \"load_cpu\": %.3f}\n",
           (unsigned long long)count, seconds, count / seconds, (unsigned long long)p50,
           (unsigned long long)p99, (unsigned long long)lost, (unsigned long long)mismatches,
           busy);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "serve")) return serve(atoi(argv[2]));
    if (argc == 8 && !strcmp(argv[1], "ping")) {
        return ping(argv[2], atoi(argv[3]), atoi(argv[4]), (size_t)atol(argv[5]), atof(argv[6]),
                    atof(argv[7]));
    }
    fprintf(stderr, "usage: udp_load ping HOST PORT FLOWS SIZE SECONDS WARMUP\n"
                    "       udp_load serve PORT\n");
    return 2;
}
