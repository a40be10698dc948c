/* tls_load: the benchmark's TLS load generator, in C with OpenSSL, so that it is never the
 * bottleneck of a Python TLS server.
 *
 *   tls_load ping HOST PORT CONNS SIZE SECONDS WARMUP
 *       As `load ping`, over TLS: CONNS connections (handshakes made first, not counted) each
 *       send a SIZE-byte message, wait until all of it came back, check every byte, and
 *       repeat. Prints the same JSON object as `load ping`.
 *   tls_load handshakes HOST PORT THREADS SECONDS WARMUP
 *       THREADS threads each repeat: connect, a full TLS handshake (no session resumption),
 *       one 6-byte echo, close_notify, close. Prints one JSON object: handshakes, seconds,
 *       handshakes_per_s, p50_us, p99_us (of a whole cycle), errors, load_cpu.
 *   tls_load idle HOST PORT CONNS
 *       Opens CONNS TLS connections and makes one 1-byte echo on each, prints "ready CONNS",
 *       then holds them open until its standard input ends.
 *   tls_load keyupdate HOST PORT SECONDS DATA
 *       Not a load but an attack, for scripts/chaos.py: one TLS 1.3 connection that sends
 *       KeyUpdate messages asking the server to update its keys too, as fast as the socket
 *       takes them, each followed by DATA bytes of application data (0: none), and never
 *       reads. Stops when the server ends the connection or after SECONDS. Prints one JSON
 *       object: key_updates, data_bytes, seconds, ended ("server" or "deadline").
 *
 * Built by run.py with the system `cc` and OpenSSL's headers (Debian: libssl-dev) at run time;
 * no binary lives in git. Certificates are not verified: this measures speed, not trust.
 * Messages are windows into one pseudo-random printable text, as in load.c. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
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

static SSL_CTX *ctx;
static const struct addrinfo *target;

static void percentiles(const uint64_t *hist, uint64_t count, uint64_t *p50, uint64_t *p99) {
    uint64_t seen = 0;
    int have50 = 0;
    *p50 = *p99 = 0;
    for (uint64_t us = 0; us <= BUCKETS && count; us++) {
        seen += hist[us];
        if (!have50 && seen * 100 >= count * 50) { *p50 = us; have50 = 1; }
        if (seen * 100 >= count * 99) { *p99 = us; break; }
    }
}

/* A blocking TCP connection with a finished TLS handshake, or NULL. */
static SSL *open_tls(void) {
    int fd = socket(target->ai_family, SOCK_STREAM, 0);
    if (fd < 0) return NULL;
    if (connect(fd, target->ai_addr, target->ai_addrlen) != 0) { close(fd); return NULL; }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "localhost");
    if (SSL_connect(ssl) != 1) {
        SSL_free(ssl);
        close(fd);
        return NULL;
    }
    return ssl;
}

static void close_tls(SSL *ssl) {
    int fd = SSL_get_fd(ssl);
    SSL_shutdown(ssl);  /* our close_notify; the server's is not waited for */
    SSL_free(ssl);
    close(fd);
}

/* A blocking round trip of `len` bytes; 0 when they came back intact. */
static int echo_once(SSL *ssl, const unsigned char *data, int len) {
    unsigned char back[256];
    if (SSL_write(ssl, data, len) != len) return -1;
    int got = 0;
    while (got < len) {
        int r = SSL_read(ssl, back + got, len - got);
        if (r <= 0) return -1;
        got += r;
    }
    return memcmp(back, data, (size_t)len) ? -1 : 0;
}

/* ---- ping ------------------------------------------------------------------------------ */

typedef struct {
    SSL *ssl;
    int fd;
    uint32_t seq;
    size_t sent, got;
    uint64_t began;
    unsigned char *msg;
    uint32_t events;
} conn_t;

static int ping(int nconn, size_t size, double seconds, double warmup) {
    conn_t *cs = calloc((size_t)nconn, sizeof *cs);
    unsigned char *buf = malloc(65536);
    uint64_t *hist = calloc(BUCKETS + 1, sizeof *hist);
    int ep = epoll_create1(0);
    make_pattern(size);
    for (int i = 0; i < nconn; i++) {
        conn_t *c = &cs[i];
        c->ssl = open_tls();
        if (!c->ssl) {
            fprintf(stderr, "tls_load: connection %d of %d failed: %s\n", i + 1, nconn,
                    errno ? strerror(errno) : "TLS handshake failed");
            return 1;
        }
        c->fd = SSL_get_fd(c->ssl);
        fcntl(c->fd, F_SETFL, O_NONBLOCK);
        c->msg = message(i, 0);
        c->events = EPOLLIN;
        struct epoll_event ev = {.events = c->events, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    }
    uint64_t t0 = now_ns();
    uint64_t counting = t0 + (uint64_t)(warmup * 1e9), end = counting + (uint64_t)(seconds * 1e9);
    uint64_t messages = 0, mismatches = 0, errors = 0, max_ns = 0, now = t0;
    double cpu_at_start = -1;
    int *ready = malloc((size_t)nconn * sizeof *ready), nready = nconn;
    for (int i = 0; i < nconn; i++) { ready[i] = i; cs[i].began = t0; }
    struct epoll_event evs[512];
    while (now < end && !errors && !mismatches) {
        for (int k = 0; k < nready && !errors && !mismatches; k++) {
            int i = ready[k];
            conn_t *c = &cs[i];
            int want_out = 0;
            for (;;) {
                if (c->sent < size) {
                    int w = SSL_write(c->ssl, c->msg + c->sent, (int)(size - c->sent));
                    if (w > 0) { c->sent += (size_t)w; continue; }
                    int e = SSL_get_error(c->ssl, w);
                    if (e == SSL_ERROR_WANT_WRITE) { want_out = 1; break; }
                    if (e != SSL_ERROR_WANT_READ) {
                        fprintf(stderr, "tls_load: SSL_write failed on connection %d\n", i);
                        errors++;
                        break;
                    }
                }
                size_t want = size - c->got;
                if (want > 65536) want = 65536;
                int r = SSL_read(c->ssl, buf, (int)want);
                if (r > 0) {
                    if (c->got + (size_t)r > c->sent || memcmp(buf, c->msg + c->got, (size_t)r)) {
                        fprintf(stderr, "tls_load: wrong echo on connection %d at byte %zu\n", i,
                                c->got);
                        mismatches++;
                        break;
                    }
                    c->got += (size_t)r;
                    if (c->got == size) {
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
                    }
                    continue;
                }
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_READ) break;
                if (e == SSL_ERROR_WANT_WRITE) { want_out = 1; break; }
                fprintf(stderr, "tls_load: the server closed or broke connection %d\n", i);
                errors++;
                break;
            }
            uint32_t events = EPOLLIN | (want_out ? EPOLLOUT : 0);
            if (events != c->events) {
                struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)i};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                c->events = events;
            }
        }
        int n = epoll_wait(ep, evs, 512, 100);
        now = now_ns();
        if (cpu_at_start < 0 && now >= counting) cpu_at_start = cpu_seconds();
        nready = 0;
        for (int k = 0; k < n; k++) ready[nready++] = (int)evs[k].data.u32;
    }
    double busy = cpu_at_start < 0 ? 0 : (cpu_seconds() - cpu_at_start) / seconds;
    uint64_t p50, p99;
    percentiles(hist, messages, &p50, &p99);
    printf("{\"messages\": %llu, \"seconds\": %.3f, \"msg_per_s\": %.1f, \"mib_per_s\": %.3f, "
           "\"p50_us\": %llu, \"p99_us\": %llu, \"max_us\": %.1f, \"mismatches\": %llu, "
           "\"errors\": %llu, \"load_cpu\": %.3f}\n",
           (unsigned long long)messages, seconds, messages / seconds,
           messages * (double)size / seconds / 1048576.0, (unsigned long long)p50,
           (unsigned long long)p99, max_ns / 1000.0, (unsigned long long)mismatches,
           (unsigned long long)errors, busy);
    return mismatches || errors;
}

/* ---- handshakes ----------------------------------------------------------------------- */

static uint64_t hs_counting, hs_end;
static pthread_mutex_t hs_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t hs_done, hs_errors;
static uint64_t *hs_hist;

static void *handshaker(void *arg) {
    (void)arg;
    static const unsigned char line[] = "hello\n";
    for (;;) {
        uint64_t began = now_ns();
        if (began >= hs_end) break;
        SSL *ssl = open_tls();
        int ok = ssl && echo_once(ssl, line, 6) == 0;
        if (ssl) close_tls(ssl);
        uint64_t done = now_ns();
        pthread_mutex_lock(&hs_lock);
        if (!ok) {
            hs_errors++;
        } else if (began >= hs_counting && done <= hs_end) {
            uint64_t us = (done - began) / 1000;
            hs_hist[us < BUCKETS ? us : BUCKETS]++;
            hs_done++;
        }
        pthread_mutex_unlock(&hs_lock);
        if (!ok) break;
    }
    return NULL;
}

static int handshakes(int threads, double seconds, double warmup) {
    hs_hist = calloc(BUCKETS + 1, sizeof *hs_hist);
    uint64_t t0 = now_ns();
    hs_counting = t0 + (uint64_t)(warmup * 1e9);
    hs_end = hs_counting + (uint64_t)(seconds * 1e9);
    pthread_t *ids = calloc((size_t)threads, sizeof *ids);
    for (int i = 0; i < threads; i++) pthread_create(&ids[i], NULL, handshaker, NULL);
    struct timespec pause = {.tv_sec = (time_t)warmup, .tv_nsec = (long)((warmup - (time_t)warmup) * 1e9)};
    nanosleep(&pause, NULL);  /* the warm-up: a duration of the measurement, not a sync */
    double cpu_at_start = cpu_seconds();
    for (int i = 0; i < threads; i++) pthread_join(ids[i], NULL);
    double busy = (cpu_seconds() - cpu_at_start) / seconds;
    uint64_t p50, p99;
    percentiles(hs_hist, hs_done, &p50, &p99);
    printf("{\"handshakes\": %llu, \"seconds\": %.3f, \"handshakes_per_s\": %.1f, "
           "\"p50_us\": %llu, \"p99_us\": %llu, \"errors\": %llu, \"load_cpu\": %.3f}\n",
           (unsigned long long)hs_done, seconds, hs_done / seconds, (unsigned long long)p50,
           (unsigned long long)p99, (unsigned long long)hs_errors, busy);
    if (hs_errors) fprintf(stderr, "tls_load: %llu handshake cycles failed\n",
                           (unsigned long long)hs_errors);
    return hs_errors != 0;
}

/* ---- idle ----------------------------------------------------------------------------- */

static int idle(int nconn) {
    static const unsigned char x[] = "x";
    SSL **all = calloc((size_t)nconn, sizeof *all);
    for (int i = 0; i < nconn; i++) {
        all[i] = open_tls();
        if (!all[i] || echo_once(all[i], x, 1) != 0) {
            fprintf(stderr, "tls_load: connection %d of %d failed\n", i + 1, nconn);
            return 1;
        }
    }
    printf("ready %d\n", nconn);
    fflush(stdout);
    char sink[256];
    while (read(0, sink, sizeof sink) > 0) {}
    return 0;
}

/* ---- keyupdate ------------------------------------------------------------------------ */

static int keyupdate(double seconds, int data) {
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL *ssl = open_tls();
    if (!ssl) { fprintf(stderr, "tls_load: no TLS 1.3 connection\n"); return 1; }
    int fd = SSL_get_fd(ssl);
    struct timeval step = {0, 200000};  /* a blocked write wakes to look at the clock */
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &step, sizeof step);
    unsigned char payload[256];
    memset(payload, 'k', sizeof payload);
    if (data > (int)sizeof payload) data = (int)sizeof payload;
    uint64_t began = now_ns(), end = began + (uint64_t)(seconds * 1e9);
    unsigned long long updates = 0, sent = 0;
    const char *ended = "deadline";
    int retrying = 0;  /* a write the socket did not take: OpenSSL wants the same call again */
    while (now_ns() < end) {
        if (!retrying) {
            if (SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED) != 1) break;
            updates++;
        }
        /* Sends the KeyUpdate (and, with data, the bytes after it). */
        int r = data ? SSL_write(ssl, payload, data) : SSL_do_handshake(ssl);
        retrying = 0;
        if (r <= 0) {
            int why = SSL_get_error(ssl, r);
            if (why == SSL_ERROR_WANT_WRITE || (why == SSL_ERROR_SYSCALL && errno == EAGAIN)) {
                retrying = 1;
                continue;
            }
            unsigned long code = ERR_peek_last_error();
            fprintf(stderr, "tls_load: the connection ended: %s\n",
                    code ? ERR_reason_error_string(code) : strerror(errno));
            ended = "server";
            break;
        }
        if (data) sent += (unsigned long long)r;
    }
    if (now_ns() < end && strcmp(ended, "server")) {
        fprintf(stderr, "tls_load: OpenSSL refused a KeyUpdate: %s\n",
                ERR_reason_error_string(ERR_peek_last_error()));
        return 1;
    }
    printf("{\"key_updates\": %llu, \"data_bytes\": %llu, \"seconds\": %.3f, \"ended\": \"%s\"}\n",
           updates, sent, (double)(now_ns() - began) / 1e9, ended);
    SSL_free(ssl);
    close(fd);
    return 0;
}

int main(int argc, char **argv) {
    int is_ping = argc == 8 && !strcmp(argv[1], "ping");
    int is_hs = argc == 7 && !strcmp(argv[1], "handshakes");
    int is_idle = argc == 5 && !strcmp(argv[1], "idle");
    int is_ku = argc == 6 && !strcmp(argv[1], "keyupdate");
    if (!is_ping && !is_hs && !is_idle && !is_ku) {
        fprintf(stderr, "usage: tls_load ping HOST PORT CONNS SIZE SECONDS WARMUP\n"
                        "       tls_load handshakes HOST PORT THREADS SECONDS WARMUP\n"
                        "       tls_load idle HOST PORT CONNS\n"
                        "       tls_load keyupdate HOST PORT SECONDS DATA\n");
        return 2;
    }
    struct addrinfo hints = {0}, *ai;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(argv[2], argv[3], &hints, &ai) != 0) {
        fprintf(stderr, "tls_load: cannot resolve %s\n", argv[2]);
        return 2;
    }
    target = ai;
    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);  /* every handshake a full one */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    signal(SIGPIPE, SIG_IGN);  /* a server that hangs up is an outcome, not our death */
    if (is_ku) return keyupdate(atof(argv[4]), atoi(argv[5]));
    int n = atoi(argv[4]);
    if (n < 1) { fprintf(stderr, "tls_load: CONNS or THREADS must be at least 1\n"); return 2; }
    if (is_idle) return idle(n);
    if (is_hs) return handshakes(n, atof(argv[5]), atof(argv[6]));
    long size = atol(argv[5]);
    double seconds = atof(argv[6]), warmup = atof(argv[7]);
    if (size < 1 || seconds <= 0 || warmup < 0) { fprintf(stderr, "tls_load: bad arguments\n"); return 2; }
    return ping(n, (size_t)size, seconds, warmup);
}
