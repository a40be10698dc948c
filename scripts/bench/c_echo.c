/* c_echo: the benchmark's ceiling, the smallest fast echo server for one core.
 *
 *   c_echo PORT READ_SIZE      listens on 127.0.0.1:PORT (0: any free port) and prints the port
 *
 * One thread, level-triggered epoll, non-blocking sockets. Each read of up to READ_SIZE bytes is
 * written back before the next read; when the peer stops reading, the rest waits for EPOLLOUT
 * (and nothing more is read meanwhile), so it has the same backpressure as trio-echo. At end
 * of input it closes once everything went back. Built by run.py with `cc` at run time. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct { int fd; char *buf; size_t len, off; int eof; } conn_t;

static void drop(int ep, conn_t *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->buf);
    free(c);
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: c_echo PORT READ_SIZE\n"); return 2; }
    size_t chunk = (size_t)atol(argv[2]);
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof addr;
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) || listen(lfd, 4096) ||
        getsockname(lfd, (struct sockaddr *)&addr, &alen)) {
        perror("c_echo: listen");
        return 1;
    }
    printf("%d\n", ntohs(addr.sin_port));
    fflush(stdout);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    struct epoll_event evs[512];
    for (;;) {
        int n = epoll_wait(ep, evs, 512, -1);
        for (int k = 0; k < n; k++) {
            conn_t *c = evs[k].data.ptr;
            if (c == NULL) {  /* the listener */
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    c = calloc(1, sizeof *c);
                    c->fd = fd;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  /* as trio does */
                    c->buf = malloc(chunk);
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            for (;;) {
                if (c->off < c->len) {  /* finish the echo before reading more */
                    ssize_t w = send(c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
                    if (w > 0) { c->off += (size_t)w; continue; }
                    if (w < 0 && errno == EAGAIN) {
                        struct epoll_event cev = {.events = EPOLLOUT, .data.ptr = c};
                        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &cev);
                    } else {
                        drop(ep, c);
                    }
                    break;
                }
                if (c->eof) { drop(ep, c); break; }
                if (evs[k].events & EPOLLOUT) {  /* caught up: back to reading */
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &cev);
                    evs[k].events = EPOLLIN;
                }
                ssize_t r = recv(c->fd, c->buf, chunk, 0);
                if (r > 0) { c->len = (size_t)r; c->off = 0; continue; }
                if (r == 0) { c->eof = 1; continue; }
                if (errno != EAGAIN) drop(ep, c);
                break;
            }
        }
    }
}
