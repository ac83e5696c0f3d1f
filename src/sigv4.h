/* AWS Signature Version 4 (header flavour), pure C.
 *
 * Signing is a pipeline, one step per function in sigv4.c and each checked
 * against the AWS suite: canonical request -> string to sign -> signature ->
 * Authorization value. The caller describes the request with pointer+length
 * views (no NUL needed, nothing copied) and gets the results in a
 * dl_sigv4_result whose buffers it keeps and reuses, so that signing the
 * next request allocates nothing once the buffers have grown.
 *
 * A dl_sigv4_signer holds the small cache of derived signing keys (keyed by
 * secret, date, region and service) and scratch space. It is used by one
 * thread at a time; it holds no globals, so any number may coexist. */
#ifndef DYNLOG_SIGV4_H
#define DYNLOG_SIGV4_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "hash.h"

#define DL_SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
#define DL_SIGV4_HEX_LEN (2 * DL_SHA256_LEN)
#define DL_SIGV4_AMZ_DATE_LEN 16 /* 20150830T123600Z */
#define DL_SIGV4_DATE_LEN 8      /* 20150830 */
/* Epoch seconds of 10000-01-01T00:00:00Z: X-Amz-Date has a 4-digit year. */
#define DL_SIGV4_TIME_MAX INT64_C(253402300800)
/* How many signing keys a signer remembers. A process talks to a handful of
 * (region, service) pairs, and the date changes once a day. */
#define DL_SIGV4_KEY_CACHE_SIZE 4
/* Longest secret/region/service a cache entry stores. Longer ones are still
 * signed with, just derived every time. AWS secrets are 40 characters. */
#define DL_SIGV4_CACHE_SECRET_MAX 128
#define DL_SIGV4_CACHE_NAME_MAX 64

/* A byte string that is not owned and need not be NUL-terminated. */
typedef struct dl_sigv4_str {
    const char *ptr;
    size_t len;
} dl_sigv4_str;

/* One header as given. A name may repeat: the values are then joined with ','
 * in the order given. Names are matched case-insensitively. */
typedef struct dl_sigv4_header {
    dl_sigv4_str name;
    dl_sigv4_str value;
} dl_sigv4_header;

typedef struct dl_sigv4_credentials {
    dl_sigv4_str access_key_id;
    dl_sigv4_str secret_access_key;
    dl_sigv4_str session_token; /* len 0: none */
} dl_sigv4_credentials;

typedef struct dl_sigv4_request {
    dl_sigv4_str method;        /* e.g. "POST", used as given */
    dl_sigv4_str path;          /* raw (not percent-encoded); encoded once here */
    dl_sigv4_str query;         /* without '?'; may be empty */
    const dl_sigv4_header *headers; /* must include Host */
    size_t header_count;
    dl_sigv4_str payload;       /* the body; may be empty */
    dl_sigv4_credentials credentials;
    dl_sigv4_str region;
    dl_sigv4_str service;
    int64_t time;               /* epoch seconds, 0 <= time < DL_SIGV4_TIME_MAX */
    /* Remove "." and ".." segments and collapse "//" in the path: AWS does
     * this for every service except S3. */
    int normalize_path;
    /* Add and sign x-amz-content-sha256 (aws-c-auth's sign_body flavour, and
     * what S3 requires). The body is hashed either way. */
    int add_content_sha256;
    /* Sign X-Amz-Security-Token when there is a token. When 0 the caller
     * still sends the header, but adds it after signing. */
    int sign_session_token;
} dl_sigv4_request;

/* Sets the defaults: normalize_path and sign_session_token on, the rest 0. */
void dl_sigv4_request_init(dl_sigv4_request *req);

typedef enum dl_sigv4_status {
    DL_SIGV4_OK = 0,
    DL_SIGV4_EINVAL,  /* a malformed field; result->error names it */
    DL_SIGV4_ENOMEM,
    DL_SIGV4_ECRYPTO  /* libcrypto failed */
} dl_sigv4_status;

/* What dl_sigv4_sign produces. The caller sends these headers:
 *   X-Amz-Date: amz_date
 *   Authorization: authorization
 *   X-Amz-Security-Token: the token, when there is one (signed or not)
 *   x-amz-content-sha256: payload_hash, when add_content_sha256 was set.
 * canonical_request and string_to_sign are kept for debugging and tests.
 * canonical_request may hold the session token: it is wiped when freed. */
typedef struct dl_sigv4_result {
    char amz_date[DL_SIGV4_AMZ_DATE_LEN + 1];
    char payload_hash[DL_SIGV4_HEX_LEN + 1];
    char signature[DL_SIGV4_HEX_LEN + 1];
    dl_buf authorization;
    dl_buf signed_headers;
    dl_buf canonical_request;
    dl_buf string_to_sign;
    int key_was_cached;  /* 1 when the signing key came from the cache */
    /* After DL_SIGV4_EINVAL: static text "field: problem", never quoting
     * input, and the offending header when a header is to blame (its name
     * may be shown; its value may be secret). */
    const char *error;
    const dl_sigv4_header *error_header;
} dl_sigv4_result;

void dl_sigv4_result_init(dl_sigv4_result *res);
void dl_sigv4_result_free(dl_sigv4_result *res);

/* One derived signing key. Private to sigv4.c. */
typedef struct dl_sigv4_cached_key {
    int in_use;
    uint64_t last_used;
    size_t secret_len, region_len, service_len;
    char secret[DL_SIGV4_CACHE_SECRET_MAX];
    char region[DL_SIGV4_CACHE_NAME_MAX];
    char service[DL_SIGV4_CACHE_NAME_MAX];
    char date[DL_SIGV4_DATE_LEN];
    dl_hmac_key key; /* the signing key, made ready for HMAC */
} dl_sigv4_cached_key;

struct dl_sigv4_header_ref;
struct dl_sigv4_param;

/* Fields are private to sigv4.c, except the counters, which are read-only. */
typedef struct dl_sigv4_signer {
    dl_sigv4_cached_key cache[DL_SIGV4_KEY_CACHE_SIZE];
    uint64_t tick;             /* LRU clock for the cache */
    uint64_t key_derivations;  /* signing keys computed */
    uint64_t key_cache_hits;   /* signing keys found in the cache */
    /* Scratch reused between requests (no per-request allocation). */
    struct dl_sigv4_header_ref *headers;
    size_t headers_cap;
    struct dl_sigv4_param *params;
    size_t params_cap;
    dl_buf query_scratch;
    dl_hasher hasher; /* SHA-256 and HMAC without per-call setup */
} dl_sigv4_signer;

void dl_sigv4_signer_init(dl_sigv4_signer *s);
/* Wipes the cached keys and secrets and frees the scratch. Idempotent; the
 * signer may be initialised again afterwards. */
void dl_sigv4_signer_free(dl_sigv4_signer *s);
/* Number of cache slots in use. */
size_t dl_sigv4_signer_cached_keys(const dl_sigv4_signer *s);

/* Signs req. On failure the result's contents are unspecified (but valid to
 * reuse and free). */
dl_sigv4_status dl_sigv4_sign(dl_sigv4_signer *s, const dl_sigv4_request *req,
                              dl_sigv4_result *res);

/* True when the signer sets this header itself, so a caller's copy is neither
 * signed nor sent: Authorization, X-Amz-Date, X-Amz-Security-Token (when the
 * request has a token) and x-amz-content-sha256 (when add_content_sha256). */
int dl_sigv4_is_managed_header(const dl_sigv4_request *req, dl_sigv4_str name);

/* Appends the canonical (URI-encoded, optionally normalised) form of a raw
 * path. Returns 0, or -1 when memory runs out. */
int dl_sigv4_add_canonical_path(dl_buf *out, dl_sigv4_str path, int normalize);

/* Writes the X-Amz-Date form of t (YYYYMMDDTHHMMSSZ plus NUL). Returns 0, or
 * -1 when t is outside [0, DL_SIGV4_TIME_MAX). */
int dl_sigv4_format_amz_date(int64_t t, char out[DL_SIGV4_AMZ_DATE_LEN + 1]);

const char *dl_sigv4_status_text(dl_sigv4_status st);

#endif
