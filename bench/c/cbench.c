/* C side of bench/run.sh: ULID generation, SigV4 (cached / derived key) and
 * the hashing floor, in CPU time per operation. Prints one JSON object per line:
 *   {"bench":..., "impl":..., "unit":"ns", "best":..., "median":..., "worst":..., "iters":..., "rounds":...}
 * Usage: cbench BODY_FILE [label-suffix]   (label-suffix tags an alternative hash.c build) */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "floor.h"
#include "hash.h"
#include "sigv4.h"
#include "ulid.h"

#define ROUNDS 7

/* CPU time of the process, not the wall clock: on a shared machine the
 * wall clock counts the time other processes ran, and the floor and the
 * signer are measured at different moments. */
static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static volatile unsigned sink;
static const char *suffix = "";

typedef void (*bench_fn)(long n);

static void report(const char *bench, const char *impl, bench_fn f, long n)
{
    double r[ROUNDS];
    f(n / 10 + 1); /* warm-up */
    for (int i = 0; i < ROUNDS; i++) {
        double t0 = now_ns();
        f(n);
        r[i] = (now_ns() - t0) / (double)n;
    }
    qsort(r, ROUNDS, sizeof r[0], cmp_double);
    printf("{\"bench\":\"%s\",\"impl\":\"%s%s\",\"unit\":\"ns\",\"best\":%.1f,\"median\":%.1f,"
           "\"worst\":%.1f,\"iters\":%ld,\"rounds\":%d}\n",
           bench, impl, suffix, r[0], r[ROUNDS / 2], r[ROUNDS - 1], n, ROUNDS);
    fflush(stdout);
}

/* ---- ULID ---- */
static void ulid_text(long n)
{
    dl_ulid u;
    char out[DL_ULID_LEN];
    for (long i = 0; i < n; i++) {
        if (dl_ulid_next_default(&u) != DL_ULID_OK) abort();
        dl_ulid_encode(&u, out);
        sink += (unsigned char)out[25];
    }
}

static void ulid_binary(long n)
{
    dl_ulid u;
    for (long i = 0; i < n; i++) {
        if (dl_ulid_next_default(&u) != DL_ULID_OK) abort();
        sink += (unsigned)u.rand_lo;
    }
}

/* ---- SigV4 ---- */
#define NSECRETS 4096
static char *body;
static size_t body_len;
static char secrets[NSECRETS][41];
static dl_sigv4_signer signer;
static dl_sigv4_result result;
static dl_sigv4_request req;
static dl_sigv4_header headers[3];
static size_t creq_len, sts_len;

#define S(lit) { lit, sizeof lit - 1 }

static void setup_sigv4(void)
{
    static const dl_sigv4_header h[3] = {
        { S("Host"), S("dynamodb.us-east-1.amazonaws.com") },
        { S("Content-Type"), S("application/x-amz-json-1.0") },
        { S("X-Amz-Target"), S("DynamoDB_20120810.PutItem") },
    };
    memcpy(headers, h, sizeof h);
    for (int i = 0; i < NSECRETS; i++)
        snprintf(secrets[i], sizeof secrets[i], "wJalrXUtnFEMI/K7MDENG+bPxRfi%012d", i);
    dl_sigv4_signer_init(&signer);
    dl_sigv4_result_init(&result);
    dl_sigv4_request_init(&req);
    req.method = (dl_sigv4_str)S("POST");
    req.path = (dl_sigv4_str)S("/");
    req.query = (dl_sigv4_str){ "", 0 };
    req.headers = headers;
    req.header_count = 3;
    req.payload = (dl_sigv4_str){ body, body_len };
    req.credentials.access_key_id = (dl_sigv4_str)S("AKIDEXAMPLE");
    req.credentials.secret_access_key = (dl_sigv4_str){ secrets[0], 40 };
    req.credentials.session_token = (dl_sigv4_str){ "", 0 };
    req.region = (dl_sigv4_str)S("us-east-1");
    req.service = (dl_sigv4_str)S("dynamodb");
    req.time = 1764000000;
    if (dl_sigv4_sign(&signer, &req, &result) != DL_SIGV4_OK) {
        fprintf(stderr, "sign failed: %s\n", result.error ? result.error : "?");
        exit(1);
    }
    creq_len = result.canonical_request.len;
    sts_len = result.string_to_sign.len;
    fprintf(stderr, "cbench: body %zu B, canonical request %zu B, string to sign %zu B, sig %s\n",
            body_len, creq_len, sts_len, result.signature);
}

static void sigv4_cached(long n)
{
    req.credentials.secret_access_key = (dl_sigv4_str){ secrets[0], 40 };
    for (long i = 0; i < n; i++) {
        if (dl_sigv4_sign(&signer, &req, &result) != DL_SIGV4_OK || !result.key_was_cached) abort();
        sink += (unsigned char)result.signature[0];
    }
}

static void sigv4_derived(long n)
{
    static long k = 1;
    for (long i = 0; i < n; i++) {
        req.credentials.secret_access_key = (dl_sigv4_str){ secrets[k++ % NSECRETS], 40 };
        if (dl_sigv4_sign(&signer, &req, &result) != DL_SIGV4_OK || result.key_was_cached) abort();
        sink += (unsigned char)result.signature[0];
    }
}

/* ---- the floor: only the hashing SigV4 cannot avoid ---- */
static unsigned char *creq_buf, *sts_buf;

static void floor_cached(long n)
{
    for (long i = 0; i < n; i++)
        sink += floor_cached_once(body, body_len, creq_buf, creq_len, sts_buf, sts_len);
}

static void floor_derived(long n)
{
    unsigned char md[32], a[32], b[32];
    for (long i = 0; i < n; i++) {
        raw_sha256(body, body_len, md);
        raw_sha256(creq_buf, creq_len, md);
        raw_hmac((const unsigned char *)"AWS4wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", 44, "20251124", 8, a);
        raw_hmac(a, 32, "us-east-1", 9, b);
        raw_hmac(b, 32, "dynamodb", 8, a);
        raw_hmac(a, 32, "aws4_request", 12, b);
        raw_hmac(b, 32, sts_buf, sts_len, md);
        sink += md[0];
    }
}

/* What one dl_hmac_sha256 call (OpenSSL 3 one-shot HMAC()) costs, vs raw. */
static void hmac_oneshot(long n)
{
    unsigned char md[32], key[32] = { 1 };
    for (long i = 0; i < n; i++) {
        dl_hmac_sha256(key, 32, sts_buf, sts_len, md);
        sink += md[0];
    }
}
static void hmac_raw(long n)
{
    unsigned char md[32], key[32] = { 1 };
    for (long i = 0; i < n; i++) {
        raw_hmac(key, 32, sts_buf, sts_len, md);
        sink += md[0];
    }
}
static void sha_body_oneshot(long n)
{
    unsigned char md[32];
    for (long i = 0; i < n; i++) {
        dl_sha256(body, body_len, md);
        sink += md[0];
    }
}

/* cbench BODY_FILE --profile NAME N: runs one bench N times, untimed, for
 * valgrind --tool=callgrind (instruction counts per call). */
static const struct { const char *name; bench_fn f; } profiles[] = {
    { "sigv4_cached", sigv4_cached }, { "sigv4_derived", sigv4_derived },
    { "floor_cached", floor_cached }, { "floor_derived", floor_derived },
};

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: cbench BODY_FILE [suffix] [sigv4-only] | BODY_FILE --profile NAME N\n"); return 2; }
    int profile = argc == 5 && strcmp(argv[2], "--profile") == 0;
    if (argc > 2 && !profile) suffix = argv[2];
    int only_sigv4 = argc > 3;
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 1; }
    body = malloc(65536);
    body_len = fread(body, 1, 65536, f);
    fclose(f);
    setup_sigv4();
    creq_buf = malloc(creq_len); memset(creq_buf, 'c', creq_len);
    sts_buf = malloc(sts_len); memset(sts_buf, 's', sts_len);
    if (profile) {
        for (size_t i = 0; i < sizeof profiles / sizeof profiles[0]; i++)
            if (strcmp(profiles[i].name, argv[3]) == 0) {
                profiles[i].f(atol(argv[4]));
                dl_sigv4_result_free(&result);
                dl_sigv4_signer_free(&signer);
                return 0;
            }
        fprintf(stderr, "cbench: no bench %s\n", argv[3]);
        return 2;
    }

    if (!only_sigv4) {
        report("ulid", "C dl_ulid_next_default+encode", ulid_text, 2000000);
        report("ulid_binary", "C dl_ulid_next_default (no text)", ulid_binary, 2000000);
    }
    report("sigv4_cached", "C dl_sigv4_sign", sigv4_cached, 100000);
    report("sigv4_derived", "C dl_sigv4_sign", sigv4_derived, 50000);
    if (!only_sigv4) {
        report("sigv4_cached", "C floor (2 SHA-256 + 1 HMAC)", floor_cached, 100000);
        report("sigv4_derived", "C floor (2 SHA-256 + 5 HMAC)", floor_derived, 50000);
    }
    report("hmac_sts", "C dl_hmac_sha256 (string to sign)", hmac_oneshot, 200000);
    if (!only_sigv4) {
        report("hmac_sts", "C raw HMAC via SHA256_CTX", hmac_raw, 200000);
        report("sha256_body", "C dl_sha256 (1 KB body)", sha_body_oneshot, 200000);
    }
    dl_sigv4_result_free(&result);
    dl_sigv4_signer_free(&signer);
    return sink == 0xdeadbeef;
}
