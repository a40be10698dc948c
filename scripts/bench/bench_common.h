/* What the benchmark's C load generators share (load.c, tls_load.c, udp_load.c): a clock,
 * their own CPU time, round-trip buckets, and the messages they send and check. */
#ifndef TRIO_ECHO_BENCH_COMMON_H
#define TRIO_ECHO_BENCH_COMMON_H

#include <stdint.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

/* Round trips are counted in 1-microsecond buckets up to this, and in one overflow bucket. */
#define BUCKETS 1000000

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* Every message is a window into one pseudo-random text, PATTERN_SHIFTS + size bytes long,
 * made once: choosing a message costs nothing per byte (filling 1 KiB per message cost the
 * generator 15% of its time), and messages that follow each other differ at almost every
 * byte. The text is printable ASCII, so no message holds a '\n'. */
#define PATTERN_SHIFTS 4093u
static unsigned char *pattern;

static inline void make_pattern(size_t size) {
    pattern = malloc(size + PATTERN_SHIFTS);
    uint64_t x = 0x9E3779B97F4A7C15u;
    for (size_t i = 0; i < size + PATTERN_SHIFTS; i++) {
        x = x * 6364136223846793005u + 1442695040888963407u;
        pattern[i] = (unsigned char)('!' + (x >> 33) % 94u);
    }
}

static inline unsigned char *message(int conn, uint32_t seq) {
    return pattern + ((uint32_t)conn * 2654435761u + seq) % PATTERN_SHIFTS;
}

#endif
