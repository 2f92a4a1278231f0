/* Peer (e): the floor. A single-threaded C epoll WebSocket broadcast server, the least work a server
 * on one core can do per delivery: each stdin line is framed once (raw and json.webpubsub.azure.v1
 * envelope), and every subscriber gets a reference to the shared frame.
 *
 *     cc -O2 -o c_broadcast benches/peers/c_broadcast.c      (benches/servers.py builds it)
 *     c_broadcast [--batch N]
 *
 * --batch 1 (the default): one send() per message per subscriber, written as the line is read.
 * --batch N (2..64): the messages of one stdin read are queued per subscriber, then written with one
 * writev() of up to N queued messages per call.
 *
 * Same contract as the other peers (benches/peers/__init__.py): 127.0.0.1 on a free port, prints
 * `Endpoint=http://127.0.0.1:PORT;`, any path is accepted, json.webpubsub.azure.v1 subscribers get the
 * `connected` message first, EOF on stdin stops it. Limits: a request head of at most HEAD_MAX bytes;
 * from clients only control frames (pings are answered, a close is echoed; a data frame closes the
 * connection with 1003); a subscriber with more than QUEUE_MAX undelivered messages is dropped.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define HEAD_MAX 8192
#define QUEUE_MAX 65536
#define BATCH_MAX 64
#define LINE_MAX_BYTES (1 << 20)
#define STDIN_READ (256 * 1024)
#define EVENTS 1024
#define PENDING_MAX 131 /* the longest client control frame: 2 + 4 mask + 125 */

static const char JSON_SUBPROTOCOL[] = "json.webpubsub.azure.v1";
static const char CONNECTED[] = "{\"type\":\"system\",\"event\":\"connected\",\"connectionId\":\"peer\"}";
static const char WS_GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

typedef struct Frame {
    uint32_t refs;
    uint32_t len;
    unsigned char data[];
} Frame;

typedef struct Conn {
    int fd;
    int open;      /* upgraded */
    int json;      /* chose json.webpubsub.azure.v1 */
    int index;     /* in subs, or -1 */
    int writing;   /* EPOLLOUT armed */
    unsigned char *head;  /* request head while upgrading */
    uint32_t head_len;
    uint32_t pending_len; /* a partial client frame after the upgrade */
    unsigned char pending[PENDING_MAX];
    Frame **queue; /* ring of frames not yet fully written */
    uint32_t qfirst, qlen, qcap, offset;
} Conn;

static int batch = 1;
static int epfd;
static Conn **by_fd;
static int by_fd_cap;
static Conn **subs;
static int nsubs, subs_cap;
static unsigned char scratch[65536 + PENDING_MAX];

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void *grow(void *old, size_t size) {
    void *p = realloc(old, size);
    if (!p) die("realloc");
    return p;
}

/* ---- SHA-1 and base64, for Sec-WebSocket-Accept (RFC 6455 section 4.2.2) -------------------- */

static uint32_t rol(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1_block(uint32_t h[5], const unsigned char *p) {
    uint32_t w[80], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999; }
        else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1; }
        else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDC; }
        else { f = b ^ c ^ d; k = 0xCA62C1D6; }
        uint32_t t = rol(a, 5) + f + e + k + w[i];
        e = d; d = c; c = rol(b, 30); b = a; a = t;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
}

static void sha1(const unsigned char *msg, size_t len, unsigned char out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    unsigned char block[64];
    size_t done = 0;
    for (; len - done >= 64; done += 64) sha1_block(h, msg + done);
    size_t rest = len - done;
    memset(block, 0, 64);
    memcpy(block, msg + done, rest);
    block[rest] = 0x80;
    if (rest >= 56) {
        sha1_block(h, block);
        memset(block, 0, 64);
    }
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) block[63 - i] = (unsigned char)(bits >> (8 * i));
    sha1_block(h, block);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++) out[4 * i + j] = (unsigned char)(h[i] >> (24 - 8 * j));
}

static void base64(const unsigned char *in, size_t len, char *out) {
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < len ? in[i + 2] : 0);
        out[o++] = abc[v >> 18 & 63];
        out[o++] = abc[v >> 12 & 63];
        out[o++] = i + 1 < len ? abc[v >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? abc[v & 63] : '=';
    }
    out[o] = 0;
}

/* ---- frames ----------------------------------------------------------------------------------- */

static Frame *frame_alloc(size_t len) {
    Frame *f = malloc(sizeof(Frame) + len);
    if (!f) die("malloc");
    f->refs = 1;
    f->len = (uint32_t)len;
    return f;
}

static void unref(Frame *f) {
    if (--f->refs == 0) free(f);
}

static size_t header(unsigned char *out, unsigned char first, size_t len) {
    out[0] = first;
    if (len < 126) { out[1] = (unsigned char)len; return 2; }
    if (len < 65536) { out[1] = 126; out[2] = (unsigned char)(len >> 8); out[3] = (unsigned char)len; return 4; }
    out[1] = 127;
    for (int i = 0; i < 8; i++) out[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    return 10;
}

/* A text frame (prefix + payload + suffix): the payload JSON-escaped when `escape`. */
static Frame *text_frame(const char *prefix, const unsigned char *payload, size_t len, int escape, const char *suffix) {
    size_t plen = strlen(prefix), slen = strlen(suffix), body = plen + slen + (escape ? 6 * len : len);
    Frame *f = frame_alloc(10 + body);
    unsigned char *p = f->data + 10;
    memcpy(p, prefix, plen);
    size_t n = plen;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = payload[i];
        if (!escape) p[n++] = ch;
        else if (ch == '"' || ch == '\\') { p[n++] = '\\'; p[n++] = ch; }
        else if (ch < 0x20) n += (size_t)sprintf((char *)p + n, "\\u%04x", ch);
        else p[n++] = ch;
    }
    memcpy(p + n, suffix, slen);
    n += slen;
    unsigned char hdr[10];
    size_t h = header(hdr, 0x81, n);
    memmove(f->data + h, p, n);
    memcpy(f->data, hdr, h);
    f->len = (uint32_t)(h + n);
    return f;
}

/* ---- connections ------------------------------------------------------------------------------ */

static void watch(Conn *c, int out) {
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.fd = c->fd};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl");
    c->writing = out;
}

static void conn_close(Conn *c) {
    if (c->index >= 0) {
        subs[c->index] = subs[--nsubs];
        subs[c->index]->index = c->index;
    }
    for (uint32_t i = 0; i < c->qlen; i++) unref(c->queue[(c->qfirst + i) % c->qcap]);
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    by_fd[c->fd] = NULL;
    free(c->queue);
    free(c->head);
    free(c);
}

/* Queue a reference to f; 0 when the subscriber is too far behind and was closed. */
static int enqueue(Conn *c, Frame *f) {
    if (c->qlen == c->qcap) {
        if (c->qcap == QUEUE_MAX) {
            conn_close(c);
            return 0;
        }
        uint32_t cap = c->qcap ? c->qcap * 2 : 4;
        Frame **q = grow(NULL, cap * sizeof(Frame *));
        for (uint32_t i = 0; i < c->qlen; i++) q[i] = c->queue[(c->qfirst + i) % c->qcap];
        free(c->queue);
        c->queue = q;
        c->qcap = cap;
        c->qfirst = 0;
    }
    f->refs++;
    c->queue[(c->qfirst + c->qlen++) % c->qcap] = f;
    return 1;
}

/* Write what is queued: one send() per message, or one writev() of up to `batch` messages. Returns 0
 * when the connection was closed. */
static int flush(Conn *c) {
    while (c->qlen) {
        ssize_t n;
        Frame *first = c->queue[c->qfirst];
        if (batch == 1 || c->qlen == 1) {
            n = send(c->fd, first->data + c->offset, first->len - c->offset, MSG_NOSIGNAL);
        } else {
            struct iovec iov[BATCH_MAX];
            int count = c->qlen < (uint32_t)batch ? (int)c->qlen : batch;
            for (int i = 0; i < count; i++) {
                Frame *f = c->queue[(c->qfirst + i) % c->qcap];
                iov[i].iov_base = f->data;
                iov[i].iov_len = f->len;
            }
            iov[0].iov_base = first->data + c->offset;
            iov[0].iov_len = first->len - c->offset;
            n = writev(c->fd, iov, count);
        }
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            conn_close(c);
            return 0;
        }
        size_t left = (size_t)n;
        while (left && c->qlen) {
            Frame *f = c->queue[c->qfirst];
            size_t rest = f->len - c->offset;
            if (left < rest) {
                c->offset += (uint32_t)left;
                left = 0;
                break;
            }
            left -= rest;
            c->offset = 0;
            c->qfirst = (c->qfirst + 1) % c->qcap;
            c->qlen--;
            unref(f);
        }
        if (c->offset) break; /* a short write: the socket buffer is full */
    }
    if ((c->qlen != 0) != c->writing) watch(c, c->qlen != 0);
    return 1;
}

static int send_private(Conn *c, const void *data, size_t len) {
    Frame *f = frame_alloc(len);
    memcpy(f->data, data, len);
    int alive = enqueue(c, f);
    unref(f);
    return alive && flush(c);
}

static void send_close(Conn *c, unsigned code) {
    unsigned char frame[4] = {0x88, 2, (unsigned char)(code >> 8), (unsigned char)code};
    if (send_private(c, frame, sizeof frame)) conn_close(c);
}

static int has_token(const char *value, size_t len, const char *token) {
    size_t tlen = strlen(token), i = 0;
    while (i < len) {
        while (i < len && (value[i] == ' ' || value[i] == '\t' || value[i] == ',')) i++;
        size_t start = i;
        while (i < len && value[i] != ',') i++;
        size_t end = i;
        while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t')) end--;
        if (end - start == tlen && memcmp(value + start, token, tlen) == 0) return 1;
    }
    return 0;
}

static void refuse(Conn *c) {
    static const char bad[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    if (send(c->fd, bad, sizeof bad - 1, MSG_NOSIGNAL) < 0) { /* closing anyway */ }
    conn_close(c);
}

static void read_frames(Conn *c, unsigned char *data, size_t size);

/* The request head is complete at `end` (just after the blank line): answer 101 or 400. */
static void upgrade(Conn *c, size_t end) {
    const char *key = NULL;
    size_t key_len = 0;
    char *h = (char *)c->head;
    if (strncmp(h, "GET ", 4) != 0) { refuse(c); return; }
    for (char *line = strstr(h, "\r\n") + 2; line < h + end - 2;) {
        char *eol = strstr(line, "\r\n");
        char *colon = memchr(line, ':', (size_t)(eol - line));
        if (colon) {
            char *value = colon + 1;
            while (value < eol && (*value == ' ' || *value == '\t')) value++;
            size_t name = (size_t)(colon - line), vlen = (size_t)(eol - value);
            while (vlen && (value[vlen - 1] == ' ' || value[vlen - 1] == '\t')) vlen--;
            if (name == 17 && strncasecmp(line, "Sec-WebSocket-Key", 17) == 0) { key = value; key_len = vlen; }
            if (name == 22 && strncasecmp(line, "Sec-WebSocket-Protocol", 22) == 0 &&
                has_token(value, vlen, JSON_SUBPROTOCOL)) c->json = 1;
        }
        line = eol + 2;
    }
    if (!key || key_len == 0 || key_len > 64) { refuse(c); return; }
    unsigned char joined[64 + sizeof WS_GUID], digest[20];
    char accept[32], response[512];
    memcpy(joined, key, key_len);
    memcpy(joined + key_len, WS_GUID, sizeof WS_GUID - 1);
    sha1(joined, key_len + sizeof WS_GUID - 1, digest);
    base64(digest, 20, accept);
    int n = snprintf(response, sizeof response,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n%s%s%s\r\n", accept, c->json ? "Sec-WebSocket-Protocol: " : "",
                     c->json ? JSON_SUBPROTOCOL : "", c->json ? "\r\n" : "");
    size_t len = (size_t)n;
    if (c->json) {
        len += header((unsigned char *)response + len, 0x81, sizeof CONNECTED - 1);
        memcpy(response + len, CONNECTED, sizeof CONNECTED - 1);
        len += sizeof CONNECTED - 1;
    }
    size_t after = c->head_len - end;
    memcpy(scratch, c->head + end, after);
    free(c->head);
    c->head = NULL;
    c->open = 1;
    if (!send_private(c, response, len)) return;
    if (nsubs == subs_cap) {
        subs_cap = subs_cap ? subs_cap * 2 : 1024;
        subs = grow(subs, (size_t)subs_cap * sizeof(Conn *));
    }
    c->index = nsubs;
    subs[nsubs++] = c;
    if (after) read_frames(c, scratch, after);
}

/* Client frames after the upgrade: pings are answered, a close is echoed, data frames are refused. */
static void read_frames(Conn *c, unsigned char *data, size_t size) {
    size_t pos = 0;
    while (size - pos >= 2) {
        unsigned char op = data[pos] & 0x0F, len7 = data[pos + 1] & 0x7F;
        if (!(data[pos + 1] & 0x80)) { send_close(c, 1002); return; } /* clients must mask */
        if (op < 0x8) { send_close(c, 1003); return; }
        if (len7 > 125) { send_close(c, 1002); return; }
        size_t need = 6 + len7;
        if (size - pos < need) break;
        unsigned char *mask = data + pos + 2, *payload = data + pos + 6;
        for (size_t i = 0; i < len7; i++) payload[i] ^= mask[i & 3];
        if (op == 0x8) {
            unsigned code = len7 >= 2 ? (unsigned)payload[0] << 8 | payload[1] : 1000;
            send_close(c, code);
            return;
        }
        if (op == 0x9) {
            unsigned char pong[2 + 125];
            pong[0] = 0x8A;
            pong[1] = len7;
            memcpy(pong + 2, payload, len7);
            if (!send_private(c, pong, 2 + (size_t)len7)) return;
        }
        pos += need;
    }
    c->pending_len = (uint32_t)(size - pos);
    memcpy(c->pending, data + pos, c->pending_len);
}

static void readable(Conn *c) {
    if (!c->open) {
        ssize_t n = recv(c->fd, c->head + c->head_len, HEAD_MAX - c->head_len, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (n <= 0) { conn_close(c); return; }
        c->head_len += (uint32_t)n;
        c->head[c->head_len] = 0;
        char *end = strstr((char *)c->head, "\r\n\r\n");
        if (end) upgrade(c, (size_t)(end - (char *)c->head) + 4);
        else if (c->head_len == HEAD_MAX) refuse(c);
        return;
    }
    memcpy(scratch, c->pending, c->pending_len);
    ssize_t n = recv(c->fd, scratch + c->pending_len, sizeof scratch - c->pending_len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) { conn_close(c); return; }
    read_frames(c, scratch, c->pending_len + (size_t)n);
}

static void accept_all(int listener) {
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) perror("accept4");
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (fd >= by_fd_cap) {
            int cap = fd * 2;
            by_fd = grow(by_fd, (size_t)cap * sizeof(Conn *));
            memset(by_fd + by_fd_cap, 0, (size_t)(cap - by_fd_cap) * sizeof(Conn *));
            by_fd_cap = cap;
        }
        Conn *c = calloc(1, sizeof(Conn));
        if (!c) die("calloc");
        c->fd = fd;
        c->index = -1;
        c->head = grow(NULL, HEAD_MAX + 1);
        by_fd[fd] = c;
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    }
}

/* ---- broadcasting ----------------------------------------------------------------------------- */

static void broadcast(const unsigned char *line, size_t len) {
    Frame *raw = text_frame("", line, len, 0, "");
    Frame *wrapped = text_frame("{\"type\":\"message\",\"from\":\"server\",\"dataType\":\"text\",\"data\":\"", line, len,
                                1, "\"}");
    for (int i = 0; i < nsubs;) {
        Conn *c = subs[i];
        if (!enqueue(c, c->json ? wrapped : raw)) continue; /* closed: subs[i] is another one now */
        if (batch == 1 && !c->writing && !flush(c)) continue;
        i++;
    }
    unref(raw);
    unref(wrapped);
}

/* One read of stdin: every complete line is broadcast; with batching, written afterwards. */
static int read_stdin(unsigned char **tail, size_t *tail_len, size_t *tail_cap) {
    if (*tail_cap - *tail_len < STDIN_READ) {
        *tail_cap = *tail_len + STDIN_READ;
        *tail = grow(*tail, *tail_cap);
    }
    ssize_t n = read(0, *tail + *tail_len, STDIN_READ);
    if (n < 0) return errno == EINTR || errno == EAGAIN;
    if (n == 0) return 0;
    size_t size = *tail_len + (size_t)n, start = 0;
    for (size_t i = *tail_len; i < size; i++) {
        if ((*tail)[i] == '\n') {
            broadcast(*tail + start, i - start);
            start = i + 1;
        }
    }
    *tail_len = size - start;
    memmove(*tail, *tail + start, *tail_len);
    if (*tail_len > LINE_MAX_BYTES) {
        fprintf(stderr, "c_broadcast: a stdin line longer than %d bytes\n", LINE_MAX_BYTES);
        exit(1);
    }
    if (batch > 1)
        for (int i = 0; i < nsubs;) {
            Conn *c = subs[i];
            if (c->qlen && !c->writing && !flush(c)) continue;
            i++;
        }
    return 1;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--batch") == 0) batch = atoi(argv[2]);
    else if (argc != 1) batch = 0;
    if (batch < 1 || batch > BATCH_MAX) {
        fprintf(stderr, "usage: c_broadcast [--batch N], N in 1..%d\n", BATCH_MAX);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listener < 0) die("socket");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof addr;
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(listener, 4096) < 0 ||
        getsockname(listener, (struct sockaddr *)&addr, &alen) < 0)
        die("listen");
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = listener};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, listener, &ev) < 0) die("epoll_ctl");
    ev.data.fd = 0;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev) < 0) die("epoll_ctl stdin");
    printf("Endpoint=http://127.0.0.1:%d;\n", ntohs(addr.sin_port));
    fflush(stdout);
    unsigned char *tail = NULL;
    size_t tail_len = 0, tail_cap = 0;
    struct epoll_event events[EVENTS];
    for (;;) {
        int n = epoll_wait(epfd, events, EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == 0) {
                if (!read_stdin(&tail, &tail_len, &tail_cap)) return 0;
            } else if (fd == listener) {
                accept_all(listener);
            } else if (fd < by_fd_cap && by_fd[fd]) {
                Conn *c = by_fd[fd];
                if (events[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
                    if (!flush(c)) continue;
                    if (events[i].events & (EPOLLERR | EPOLLHUP) && !(events[i].events & EPOLLIN)) {
                        conn_close(c);
                        continue;
                    }
                }
                if (events[i].events & EPOLLIN) readable(c);
            }
        }
    }
}
