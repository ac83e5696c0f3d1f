/* One HTTP client over a libcurl easy handle.
 *
 * A client owns one easy handle for its whole life, so consecutive requests
 * to the same host share one keep-alive connection (curl keeps it in the
 * handle's connection cache). A client is used by one thread at a time. */
#ifndef DYNLOG_HTTP_H
#define DYNLOG_HTTP_H

#include "buf.h"

#include <curl/curl.h>

typedef struct dl_http_response dl_http_response;

typedef struct dl_http {
    CURL *curl;
    long connect_timeout_ms;
    long timeout_ms;
    size_t max_response_bytes;
    char *cafile; /* NULL: the system's CA store */
    dl_http_response *response; /* where the transfer under way writes */
    const char *upload;         /* the request body curl reads through on_read */
    size_t upload_len, upload_pos;
    int sends; /* times curl began to send the transfer under way (on_prereq) */
    int configured; /* the options that stay the same are set on the handle */
    CURLU *url;     /* the last request's URL, parsed (NULL: none yet) */
    char *url_text; /* and as given */
    char errbuf[CURL_ERROR_SIZE];
} dl_http;

/* A request's header lines as curl's list, in memory of its own that is
 * reused from one request to the next: building one allocates nothing once
 * the buffers have grown to the requests' size. curl only reads the list
 * (never frees it), so its nodes need not come from curl_slist_append. */
typedef struct dl_http_headers {
    dl_buf text;              /* the lines, each NUL-terminated */
    struct curl_slist *nodes; /* count used, cap allocated */
    size_t count, cap;
} dl_http_headers;

void dl_http_headers_init(dl_http_headers *h);
void dl_http_headers_free(dl_http_headers *h);
void dl_http_headers_reset(dl_http_headers *h);
/* Adds "Name: value", or "Name;" for an empty value (curl's way to send
 * one); value NULL adds "Name:", which tells curl not to send a header of
 * its own by that name. Returns 0, or -1 when memory runs out. */
int dl_http_headers_add(dl_http_headers *h, const char *name, size_t nlen, const char *value, size_t vlen);
/* h as a curl list (NULL when empty), valid until h changes. */
struct curl_slist *dl_http_headers_list(dl_http_headers *h);
/* dst = a copy of src. Returns 0 or -1. */
int dl_http_headers_copy(dl_http_headers *dst, const dl_http_headers *src);

typedef struct dl_http_request {
    const char *method;
    const char *url;
    struct curl_slist *headers; /* "Name: value" lines */
    const char *body;           /* may be NULL */
    size_t body_len;
    long timeout_ms; /* 0: the client's; -1: none (a wait with no end) */
} dl_http_request;

struct dl_http_response {
    long status;
    dl_buf header_block; /* the raw header lines of the final response */
    dl_buf body;
    long new_connections; /* connections opened for this request (0 = reused) */
    long local_port;
    int truncated; /* body went over max_response_bytes */
    int resent;    /* curl sent the request again after a reused connection died */
    int unsent;    /* failed before any byte of the request could reach the server */
};

/* Error classes a failed request maps to; the Lua layer uses them as codes. */
#define DL_HTTP_TIMEOUT "timeout"
#define DL_HTTP_CONNECTION "connection"
#define DL_HTTP_TLS "tls"
#define DL_HTTP_INVALID "invalid_argument"
#define DL_HTTP_TOO_LARGE "too_large"
#define DL_HTTP_NOMEM "out_of_memory"

/* Once per process, thread-safe. Returns 0 or -1. */
int dl_http_global_init(void);

/* Returns 0, or -1 when curl could not be set up. */
int dl_http_init(dl_http *h);
/* A new handle with the timeouts, limit and CA file of `like`. */
int dl_http_init_like(dl_http *h, const dl_http *like);
void dl_http_cleanup(dl_http *h);
int dl_http_set_cafile(dl_http *h, const char *path);

void dl_http_response_init(dl_http_response *r);
void dl_http_response_free(dl_http_response *r);
/* Empties r for another request, keeping its buffers' memory. */
void dl_http_response_reset(dl_http_response *r);

/* Performs one request. Returns 0 with *r filled (any status), or -1 with
 * *code set to one of the DL_HTTP_* classes and *message to a description
 * that holds no secrets; then r->unsent is 1 when the request certainly
 * never went out (no host address, no connection, or a connect or TLS
 * handshake that failed or timed out): the server cannot have applied it. */
int dl_http_perform(dl_http *h, const dl_http_request *req, dl_http_response *r,
                    const char **code, const char **message);

/* The two halves of dl_http_perform, for transfers that a curl multi handle
 * drives: dl_http_prepare sets the handle up for req (req's headers and body
 * must live until the transfer ends); dl_http_complete takes the transfer's
 * result and answers as dl_http_perform does. */
CURLcode dl_http_prepare(dl_http *h, const dl_http_request *req, dl_http_response *r);
int dl_http_complete(dl_http *h, CURLcode rc, const char **code, const char **message);

#endif
