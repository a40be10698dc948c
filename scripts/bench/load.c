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
 *   load wsping HOST PORT CONNS SIZE SECONDS WARMUP
 *   load wsidle HOST PORT CONNS
 *       The same over WebSocket (RFC 6455): each connection first upgrades at /ws, then each
 *       message is one binary message of SIZE bytes (masked, with a zero key, so its payload
 *       is the message itself), and the echo expected is the server's unmasked frame of it.
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
    unsigned char *msg;        /* the current message (in `pattern`): what is sent */
    unsigned char *want;       /* what must come back (the message itself, but over ws) */
    unsigned char *frames;     /* over ws: the client's frame, then the server's */
    uint32_t events;           /* what epoll watches for it now */
} conn_t;

static int websocket;          /* wsping, wsidle: messages are WebSocket frames */

/* A frame header: a client's (masked, key 0) or a server's; its length in bytes. */
static size_t frame_head(unsigned char *out, size_t size, int masked) {
    size_t n = 0;
    out[n++] = 0x82;  /* FIN, binary */
    unsigned char bit = masked ? 0x80 : 0;
    if (size < 126) {
        out[n++] = bit | (unsigned char)size;
    } else if (size < 65536) {
        out[n++] = bit | 126;
        out[n++] = (unsigned char)(size >> 8);
        out[n++] = (unsigned char)size;
    } else {
        out[n++] = bit | 127;
        for (int i = 7; i >= 0; i--) out[n++] = (unsigned char)(size >> (8 * i));
    }
    if (masked) { memset(out + n, 0, 4); n += 4; }
    return n;
}

/* The bytes of one round trip of `size`, out and in (over ws, with the frame headers). */
static size_t out_len, in_len;

/* Point c->msg and c->want at message `seq` of connection `i`, as frames over ws. */
static void next_message(conn_t *c, int i, size_t size) {
    unsigned char *payload = message(i, c->seq);
    if (!websocket) { c->msg = c->want = payload; return; }
    unsigned char head[16];
    size_t n = frame_head(head, size, 1);
    memcpy(c->frames, head, n);
    memcpy(c->frames + n, payload, size);
    size_t m = frame_head(head, size, 0);
    memcpy(c->frames + out_len, head, m);
    memcpy(c->frames + out_len + m, payload, size);
    c->msg = c->frames;
    c->want = c->frames + out_len;
}

/* The upgrade, blocking, before the load starts; 0 when the server said 101. */
static int upgrade(int fd) {
    static const char request[] =
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n";
    if (write(fd, request, sizeof request - 1) != (ssize_t)(sizeof request - 1)) return -1;
    char answer[1024];
    size_t got = 0;
    while (got < sizeof answer - 1) {  /* byte by byte: nothing past the head is taken */
        ssize_t r = read(fd, answer + got, 1);
        if (r <= 0) return -1;
        got++;
        answer[got] = 0;
        if (got >= 4 && !memcmp(answer + got - 4, "\r\n\r\n", 4)) break;
    }
    return strncmp(answer, "HTTP/1.1 101", 12) ? -1 : 0;
}

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
    if (websocket && upgrade(fd) != 0) { close(fd); errno = EPROTO; return -1; }
    return fd;
}

static int idle(const struct addrinfo *ai, int nconn) {
    int *fds = calloc((size_t)nconn, sizeof *fds);
    for (int i = 0; i < nconn; i++) {
        unsigned char out[8] = {0x82, 0x81, 0, 0, 0, 0, 'x'}, want[3] = {0x82, 0x01, 'x'};
        unsigned char back[3];
        size_t len = websocket ? 7 : 1, wlen = websocket ? 3 : 1;
        const unsigned char *send_this = websocket ? out : out + 6, *expect = websocket ? want : want + 2;
        fds[i] = open_conn(ai);
        size_t got = 0;
        ssize_t r = 0;
        if (fds[i] >= 0 && write(fds[i], send_this, len) == (ssize_t)len)
            while (got < wlen && (r = read(fds[i], back + got, wlen - got)) > 0) got += (size_t)r;
        if (fds[i] < 0 || got != wlen || memcmp(back, expect, wlen)) {
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
    unsigned char head[16];
    out_len = websocket ? frame_head(head, size, 1) + size : size;
    in_len = websocket ? frame_head(head, size, 0) + size : size;
    unsigned char *buf = malloc(size < 65536 ? 65536 : size + 16);
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
        if (websocket) c->frames = malloc(out_len + in_len);
        next_message(c, i, size);
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
            if ((evs[k].events & EPOLLOUT) && c->sent < out_len) {
                ssize_t w = send(c->fd, c->msg + c->sent, out_len - c->sent, MSG_NOSIGNAL);
                if (w > 0) {
                    c->sent += (size_t)w;
                    if (c->sent == out_len) watch(ep, c, i, EPOLLIN);  /* all out: now only read */
                } else if (w < 0 && errno != EAGAIN) {
                    fprintf(stderr, "load: send: %s\n", strerror(errno));
                    errors++;
                }
            }
            if (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                for (;;) {  /* drain what is there, up to the end of this message */
                    size_t want = in_len - c->got;
                    if (want > 65536) want = 65536;
                    if (want == 0) break;
                    ssize_t r = recv(c->fd, buf, want, 0);
                    if (r > 0) {
                        if ((!websocket && c->got + (size_t)r > c->sent) ||
                            memcmp(buf, c->want + c->got, (size_t)r)) {
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
                if (c->got == in_len) {  /* a whole round trip */
                    uint64_t done = now_ns();
                    if (c->began >= counting && done <= end) {
                        uint64_t ns = done - c->began, us = ns / 1000;
                        hist[us < BUCKETS ? us : BUCKETS]++;
                        if (ns > max_ns) max_ns = ns;
                        messages++;
                    }
                    c->seq++;
                    next_message(c, i, size);
                    c->sent = c->got = 0;
                    c->began = done;
                    ssize_t w = send(c->fd, c->msg, out_len, MSG_NOSIGNAL);
                    if (w > 0) c->sent = (size_t)w;
                    watch(ep, c, i, c->sent < out_len ? EPOLLIN | EPOLLOUT : EPOLLIN);
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
    const char *mode = argc > 1 ? argv[1] : "";
    websocket = !strncmp(mode, "ws", 2);
    if (websocket) mode += 2;
    int is_ping = argc == 8 && !strcmp(mode, "ping"), is_idle = argc == 5 && !strcmp(mode, "idle");
    if (!is_ping && !is_idle) {
        fprintf(stderr, "usage: load [ws]ping HOST PORT CONNS SIZE SECONDS WARMUP\n"
                        "       load [ws]idle HOST PORT CONNS\n");
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
