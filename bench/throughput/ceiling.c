/* The server's ceiling for bench/throughput.sh: the same PutItem / Query
 * work as the other clients, done by the cheapest client we could write.
 *
 * Plain HTTP/1.1 over N kept-alive TCP connections to 127.0.0.1, one request
 * in flight on each, driven by epoll. Every request is built once per stream
 * before the clock starts (request line, headers and body); sending one only
 * copies it and writes its sort key and n into fixed places, so each sort key
 * is unique and increasing. No signing: DynamoDB Local wants an Authorization
 * header but does not check it, so a fixed fake one is sent. A response is
 * read until its Content-Length is in; its status must be 200. (A libcurl
 * multi client doing the same spent ~5x the CPU per request, mostly inside
 * libcurl's per-transfer setup: too much to be a ceiling on a 2-core box.)
 *
 *   ceiling PORT
 *
 * Creates the table, prints {"ready":true}, then runs one step per line read
 * from stdin ("append|query|preload IN_FLIGHT OPS"), answering each with one
 * JSON line; "quit" ends it (bench/throughput/driver.py drives it). Before a
 * step, connections the server closed while this client waited (DynamoDB
 * Local drops idle ones after about 30 s) are opened again.
 *
 * CPU time is getrusage(RUSAGE_SELF) of this process (user + sys). */
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TABLE "bench_events"
#define APPEND_STREAMS 1000
#define QUERY_STREAMS 100
#define QUERY_ITEMS 10
#define MAX_FLIGHT 64
#define SK_LEN 26
#define N_LEN 10
#define REQ_MAX 1024
#define RESP_MAX 65536

enum { W_APPEND, W_QUERY, W_PRELOAD };

/* A request built once; one that writes has sk and n filled in when sent. */
struct req {
    char text[REQ_MAX];
    size_t len, sk_at, n_at; /* sk_at == 0: nothing to fill in */
};

static struct req append_reqs[APPEND_STREAMS], preload_reqs[QUERY_STREAMS], query_reqs[QUERY_STREAMS];

struct conn {
    int fd;
    char out[REQ_MAX];
    size_t out_len, out_sent;
    char in[RESP_MAX];
    size_t in_len;
    int busy, kind;
};

static struct conn conns[MAX_FLIGHT];
static int nconns, epfd;
static struct sockaddr_in server;
static char host_header[64];
static unsigned long long seq; /* makes every sort key unique and increasing */
static unsigned long long rr;  /* round robin over streams */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6
         + (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void build(struct req *r, const char *target, const char *body)
{
    r->len = (size_t)snprintf(r->text, sizeof r->text,
        "POST / HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-amz-json-1.0\r\n"
        "X-Amz-Target: DynamoDB_20120810.%s\r\nX-Amz-Date: 20200101T000000Z\r\n"
        "Authorization: AWS4-HMAC-SHA256 Credential=AKIDBENCH/20200101/us-east-1/dynamodb/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date;x-amz-target, "
        "Signature=0000000000000000000000000000000000000000000000000000000000000000\r\n"
        "Content-Length: %zu\r\n\r\n%s", host_header, target, strlen(body), body);
    if (r->len >= sizeof r->text) { fprintf(stderr, "ceiling: request too long\n"); exit(1); }
    r->sk_at = r->n_at = 0;
}

static void build_put(struct req *r, const char *id)
{
    char body[512];
    snprintf(body, sizeof body,
        "{\"TableName\":\"" TABLE "\",\"Item\":{\"pk\":{\"S\":\"bench#%s#stream\"},"
        "\"sk\":{\"S\":\"%0*d\"},\"type\":{\"S\":\"tick\"},\"log\":{\"S\":\"bench\"},"
        "\"payload\":{\"M\":{\"id\":{\"S\":\"%s\"},\"n\":{\"N\":\"%0*d\"},\"note\":{\"S\":\"some text\"}}}},"
        "\"ConditionExpression\":\"attribute_not_exists(pk)\"}", id, SK_LEN, 0, id, N_LEN, 0);
    build(r, "PutItem", body);
    const char *sk_mark = "\"sk\":{\"S\":\"", *n_mark = "\"n\":{\"N\":\"";
    r->sk_at = (size_t)(strstr(r->text, sk_mark) - r->text) + strlen(sk_mark);
    r->n_at = (size_t)(strstr(r->text, n_mark) - r->text) + strlen(n_mark);
}

static void build_query(struct req *r, const char *id)
{
    char body[512];
    snprintf(body, sizeof body,
        "{\"TableName\":\"" TABLE "\",\"KeyConditionExpression\":\"pk = :pk\","
        "\"ExpressionAttributeValues\":{\":pk\":{\"S\":\"bench#%s#stream\"}},"
        "\"ScanIndexForward\":true,\"ConsistentRead\":false}", id);
    build(r, "Query", body);
}

static void digits(char *at, unsigned long long v, int width)
{
    for (int i = width - 1; i >= 0; i--) { at[i] = (char)('0' + v % 10); v /= 10; }
}

static void open_conn(struct conn *c)
{
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&server, sizeof server) != 0) die("connect");
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0) die("epoll_ctl");
    c->busy = 0;
}

/* Sends what is left of c->out; the requests are small, so one write
 * nearly always takes all of it. */
static void flush_out(struct conn *c)
{
    while (c->out_sent < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_sent, c->out_len - c->out_sent);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) { /* blocking socket: cannot happen */ continue; }
            die("write");
        }
        c->out_sent += (size_t)n;
    }
}

static void send_next(struct conn *c, int workload)
{
    unsigned long long k = rr++;
    const struct req *r = workload == W_APPEND ? &append_reqs[k % APPEND_STREAMS]
                        : workload == W_QUERY  ? &query_reqs[k % QUERY_STREAMS]
                                               : &preload_reqs[k % QUERY_STREAMS];
    memcpy(c->out, r->text, r->len);
    if (r->sk_at) {
        seq++;
        digits(c->out + r->sk_at, seq, SK_LEN);
        digits(c->out + r->n_at, 1000000000ULL + seq, N_LEN);
    }
    c->out_len = r->len;
    c->out_sent = 0;
    c->in_len = 0;
    c->kind = workload;
    c->busy = 1;
    flush_out(c);
}

/* 1: a whole response is in c->in (status and body returned); 0: not yet. */
static int response_done(struct conn *c, int *status, const char **body, size_t *body_len)
{
    c->in[c->in_len] = 0;
    char *end = strstr(c->in, "\r\n\r\n");
    if (!end) return 0;
    size_t head = (size_t)(end - c->in) + 4;
    char *cl = strcasestr(c->in, "\r\ncontent-length:");
    if (!cl || cl > end) { fprintf(stderr, "ceiling: response without Content-Length\n"); exit(1); }
    size_t len = strtoul(cl + 17, NULL, 10);
    if (c->in_len < head + len) return 0;
    *status = atoi(c->in + 9);
    *body = c->in + head;
    *body_len = len;
    return 1;
}

/* Opens again the connections the server closed while they were idle. */
static void reopen_closed(void)
{
    for (int i = 0; i < nconns; i++) {
        char b;
        ssize_t got = recv(conns[i].fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
            close(conns[i].fd);
            open_conn(&conns[i]);
        }
    }
}

/* Runs `count` requests with n in flight; returns the failures. */
static long run(int workload, int n, long count, long *items, long *bad)
{
    long started = 0, done = 0, failed = 0;
    while (nconns < n) open_conn(&conns[nconns++]);
    for (int i = 0; i < n && started < count; i++, started++) send_next(&conns[i], workload);
    struct epoll_event evs[MAX_FLIGHT];
    while (done < count) {
        int k = epoll_wait(epfd, evs, MAX_FLIGHT, 30000);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) { fprintf(stderr, "ceiling: no response in 30 s\n"); exit(1); }
        for (int j = 0; j < k; j++) {
            struct conn *c = evs[j].data.ptr;
            ssize_t got = read(c->fd, c->in + c->in_len, RESP_MAX - 1 - c->in_len);
            if (got <= 0) {
                if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
                fprintf(stderr, "ceiling: connection closed by the server\n");
                exit(1);
            }
            c->in_len += (size_t)got;
            int status;
            const char *body;
            size_t body_len;
            if (!response_done(c, &status, &body, &body_len)) {
                if (c->in_len >= RESP_MAX - 1) { fprintf(stderr, "ceiling: response too large\n"); exit(1); }
                continue;
            }
            c->busy = 0;
            done++;
            if (status != 200) {
                if (failed < 3) fprintf(stderr, "ceiling: HTTP %d: %.*s\n", status, (int)body_len, body);
                failed++;
            } else if (c->kind == W_QUERY) {
                const char *cnt = strstr(body, "\"Count\":");
                long got_items = cnt ? atol(cnt + 8) : 0;
                *items += got_items;
                if (got_items != QUERY_ITEMS) (*bad)++;
            }
            if (started < count) { started++; send_next(c, workload); }
        }
    }
    return failed;
}

static void step(int workload, const char *name, int n, long count)
{
    long items = 0, bad = 0;
    reopen_closed();
    double t0 = now_s(), c0 = cpu_s();
    long failed = run(workload, n, count, &items, &bad);
    double wall = now_s() - t0, cpu = cpu_s() - c0;
    printf("{\"client\":\"ceiling\",\"workload\":\"%s\",\"in_flight\":%d,\"ops\":%ld,\"seconds\":%.6f,"
           "\"cpu_seconds\":%.6f,\"errors\":%ld,\"items\":%ld,\"bad_pages\":%ld,\"written\":%llu}\n",
           name, n, count, wall, cpu, failed, items, bad, seq);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: ceiling PORT\n"); return 2; }
    int port = atoi(argv[1]);
    signal(SIGPIPE, SIG_IGN);
    memset(&server, 0, sizeof server);
    server.sin_family = AF_INET;
    server.sin_port = htons((unsigned short)port);
    server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    snprintf(host_header, sizeof host_header, "127.0.0.1:%d", port);
    epfd = epoll_create1(0);
    if (epfd < 0) die("epoll_create1");

    char id[32];
    for (int i = 0; i < APPEND_STREAMS; i++) { snprintf(id, sizeof id, "%d", i); build_put(&append_reqs[i], id); }
    for (int i = 0; i < QUERY_STREAMS; i++) {
        snprintf(id, sizeof id, "q%d", i);
        build_put(&preload_reqs[i], id);
        build_query(&query_reqs[i], id);
    }

    /* The table: pk (S) / sk (S), on-demand, with a stream, as dynlog's create_table makes it. */
    struct req create;
    build(&create, "CreateTable",
        "{\"TableName\":\"" TABLE "\",\"AttributeDefinitions\":[{\"AttributeName\":\"pk\",\"AttributeType\":\"S\"},"
        "{\"AttributeName\":\"sk\",\"AttributeType\":\"S\"}],\"KeySchema\":[{\"AttributeName\":\"pk\",\"KeyType\":\"HASH\"},"
        "{\"AttributeName\":\"sk\",\"KeyType\":\"RANGE\"}],\"BillingMode\":\"PAY_PER_REQUEST\","
        "\"StreamSpecification\":{\"StreamEnabled\":true,\"StreamViewType\":\"NEW_AND_OLD_IMAGES\"}}");
    struct conn *c = &conns[nconns++];
    open_conn(c);
    memcpy(c->out, create.text, create.len);
    c->out_len = create.len;
    c->out_sent = 0;
    c->in_len = 0;
    flush_out(c);
    int status = 0;
    const char *body = NULL;
    size_t body_len = 0;
    for (;;) {
        ssize_t got = read(c->fd, c->in + c->in_len, RESP_MAX - 1 - c->in_len);
        if (got <= 0) die("read");
        c->in_len += (size_t)got;
        if (response_done(c, &status, &body, &body_len)) break;
    }
    if (status != 200) {
        fprintf(stderr, "ceiling: CreateTable failed, HTTP %d: %.*s\n", status, (int)body_len, body);
        return 1;
    }

    printf("{\"ready\":true}\n");
    fflush(stdout);
    char line[128], name[16];
    int n;
    long count;
    while (fgets(line, sizeof line, stdin) && strncmp(line, "quit", 4) != 0) {
        if (sscanf(line, "%15s %d %ld", name, &n, &count) != 3 || n < 1 || n > MAX_FLIGHT || count < 0) {
            fprintf(stderr, "ceiling: bad command: %s", line);
            return 1;
        }
        int workload = strcmp(name, "append") == 0 ? W_APPEND : strcmp(name, "query") == 0 ? W_QUERY
                     : strcmp(name, "preload") == 0 ? W_PRELOAD : -1;
        if (workload < 0) { fprintf(stderr, "ceiling: unknown workload %s\n", name); return 1; }
        step(workload, name, n, count);
    }
    fprintf(stderr, "ceiling: %llu items written\n", seq);
    return 0;
}
