/* load: the benchmark's load generator, in C so that it is never the bottleneck.
 *
 *   load ping HOST PORT CONNS SIZE SECONDS WARMUP
 *       CONNS connections each send a SIZE-byte message, wait until all of it came back,
 *       check every byte, and repeat. Nothing is counted during the first WARMUP seconds.
 *       Prints one JSON object: messages, seconds, msg_per_s, mib_per_s, p50_us, p99_us,
 *       max_us, mismatches, errors, and load_cpu: the share of one core this generator used
 *       while counting (well below 1.0 means it was waiting for the server, not the other way
 *       round). Exit status 1 on any wrong byte or connection error.
 *   load idle HOST PORT CONNS
 *       Opens CONNS connections and makes one 1-byte echo on each (so that the server has
 *       surely accepted it and is waiting in its read), prints "ready CONNS", then holds
 *       them all open until its standard input ends.
 *
 * Built by run.py with the system `cc` at run time; no binary lives in git. One thread, epoll,
 * non-blocking sockets, TCP_NODELAY. Each message is another window of one pseudo-random
 * text: it differs from the previous one on the same connection, so a stale echo is caught,
 * and from another connection's current one unless their windows happen to coincide (one
 * chance in 4,093), so a misrouted echo is caught too. Messages hold no '\n', so none of
 * them is an `exit` line. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

typedef struct {
    int fd;
    uint32_t seq;              /* which message this connection is on */
    size_t sent, got;          /* bytes of the current message sent / received */
    uint64_t began;            /* when its first byte went out */
    unsigned char *msg;        /* the current message (in `pattern`) */
    uint32_t events;           /* what epoll watches for it now */
} conn_t;

/* Changing what epoll watches is a system call: made only when it really changes. */
static void watch(int ep, conn_t *c, int i, uint32_t events) {
    if (c->events == events) return;
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->events = events;
}

static int open_conn(const struct addrinfo *ai) {
    int fd = socket(ai->ai_family, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) { close(fd); return -1; }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int idle(const struct addrinfo *ai, int nconn) {
    int *fds = calloc((size_t)nconn, sizeof *fds);
    for (int i = 0; i < nconn; i++) {
        char c = 'x', back;
        fds[i] = open_conn(ai);
        if (fds[i] < 0 || write(fds[i], &c, 1) != 1 || read(fds[i], &back, 1) != 1 || back != c) {
            fprintf(stderr, "load: connection %d of %d failed: %s\n", i + 1, nconn, strerror(errno));
            return 1;
        }
    }
    printf("ready %d\n", nconn);
    fflush(stdout);
    char sink[256];
    while (read(0, sink, sizeof sink) > 0) {}
    return 0;
}

static int ping(const struct addrinfo *ai, int nconn, size_t size, double seconds, double warmup) {
    conn_t *cs = calloc((size_t)nconn, sizeof *cs);
    unsigned char *buf = malloc(size < 65536 ? 65536 : size);
    uint64_t *hist = calloc(BUCKETS + 1, sizeof *hist);
    int ep = epoll_create1(0);
    make_pattern(size);
    for (int i = 0; i < nconn; i++) {
        conn_t *c = &cs[i];
        c->fd = open_conn(ai);
        if (c->fd < 0) {
            fprintf(stderr, "load: connection %d of %d failed: %s\n", i + 1, nconn, strerror(errno));
            return 1;
        }
        fcntl(c->fd, F_SETFL, O_NONBLOCK);
        c->msg = message(i, 0);
        c->events = EPOLLIN | EPOLLOUT;
        struct epoll_event ev = {.events = c->events, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    }
    uint64_t t0 = now_ns();
    uint64_t counting = t0 + (uint64_t)(warmup * 1e9), end = counting + (uint64_t)(seconds * 1e9);
    for (int i = 0; i < nconn; i++) cs[i].began = t0;
    uint64_t messages = 0, mismatches = 0, errors = 0, max_ns = 0;
    struct epoll_event evs[512];
    uint64_t now = t0;
    double cpu_at_start = -1;
    while (now < end && !errors && !mismatches) {
        int n = epoll_wait(ep, evs, 512, 100);
        now = now_ns();
        if (cpu_at_start < 0 && now >= counting) cpu_at_start = cpu_seconds();
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u32;
            conn_t *c = &cs[i];
            if ((evs[k].events & EPOLLOUT) && c->sent < size) {
                ssize_t w = send(c->fd, c->msg + c->sent, size - c->sent, MSG_NOSIGNAL);
                if (w > 0) {
                    c->sent += (size_t)w;
                    if (c->sent == size) watch(ep, c, i, EPOLLIN);  /* all out: now only read */
                } else if (w < 0 && errno != EAGAIN) {
                    fprintf(stderr, "load: send: %s\n", strerror(errno));
                    errors++;
                }
            }
            if (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                for (;;) {  /* drain what is there, up to the end of this message */
                    size_t want = size - c->got;
                    if (want > 65536) want = 65536;
                    if (want == 0) break;
                    ssize_t r = recv(c->fd, buf, want, 0);
                    if (r > 0) {
                        if (c->got + (size_t)r > c->sent || memcmp(buf, c->msg + c->got, (size_t)r)) {
                            fprintf(stderr, "load: wrong echo on connection %d at byte %zu\n", i,
                                    c->got);
                            mismatches++;
                            break;
                        }
                        c->got += (size_t)r;
                        continue;
                    }
                    if (r == 0) {
                        fprintf(stderr, "load: the server closed connection %d\n", i);
                        errors++;
                    } else if (errno != EAGAIN) {
                        fprintf(stderr, "load: recv: %s\n", strerror(errno));
                        errors++;
                    }
                    break;
                }
                if (c->got == size) {  /* a whole round trip */
                    uint64_t done = now_ns();
                    if (c->began >= counting && done <= end) {
                        uint64_t ns = done - c->began, us = ns / 1000;
                        hist[us < BUCKETS ? us : BUCKETS]++;
                        if (ns > max_ns) max_ns = ns;
                        messages++;
                    }
                    c->msg = message(i, ++c->seq);
                    c->sent = c->got = 0;
                    c->began = done;
                    ssize_t w = send(c->fd, c->msg, size, MSG_NOSIGNAL);
                    if (w > 0) c->sent = (size_t)w;
                    watch(ep, c, i, c->sent < size ? EPOLLIN | EPOLLOUT : EPOLLIN);
                }
            }
        }
    }
    double measured = seconds, busy = cpu_at_start < 0 ? 0 : (cpu_seconds() - cpu_at_start) / seconds;
    uint64_t p50 = 0, p99 = 0, seen = 0;
    int have50 = 0;
    for (uint64_t us = 0; us <= BUCKETS && messages; us++) {
        seen += hist[us];
        if (!have50 && seen * 100 >= messages * 50) { p50 = us; have50 = 1; }
        if (seen * 100 >= messages * 99) { p99 = us; break; }
    }
    printf("{\"messages\": %llu, \"seconds\": %.3f, \"msg_per_s\": %.1f, \"mib_per_s\": %.3f, "
           "\"p50_us\": %llu, \"p99_us\": %llu, \"max_us\": %.1f, \"mismatches\": %llu, "
           "\"errors\": %llu, \"load_cpu\": %.3f}\n",
           (unsigned long long)messages, measured, messages / measured,
           messages * (double)size / measured / 1048576.0, (unsigned long long)p50,
           (unsigned long long)p99, max_ns / 1000.0, (unsigned long long)mismatches,
           (unsigned long long)errors, busy);
    return mismatches || errors;
}

int main(int argc, char **argv) {
    int is_ping = argc == 8 && !strcmp(argv[1], "ping"), is_idle = argc == 5 && !strcmp(argv[1], "idle");
    if (!is_ping && !is_idle) {
        fprintf(stderr, "usage: load ping HOST PORT CONNS SIZE SECONDS WARMUP\n"
                        "       load idle HOST PORT CONNS\n");
        return 2;
    }
    struct addrinfo hints = {0}, *ai;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(argv[2], argv[3], &hints, &ai) != 0) {
        fprintf(stderr, "load: cannot resolve %s\n", argv[2]);
        return 2;
    }
    int nconn = atoi(argv[4]);
    if (nconn < 1) { fprintf(stderr, "load: CONNS must be at least 1\n"); return 2; }
    if (is_idle) return idle(ai, nconn);
    long size = atol(argv[5]);
    double seconds = atof(argv[6]), warmup = atof(argv[7]);
    if (size < 1 || seconds <= 0 || warmup < 0) { fprintf(stderr, "load: bad arguments\n"); return 2; }
    return ping(ai, nconn, (size_t)size, seconds, warmup);
}
