#include "http.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* From curl 7.80 the request body goes as CURLOPT_POSTFIELDS, which curl
 * sends with the headers in one write, and a curl that sends the request
 * again tells it through CURLOPT_PREREQFUNCTION. Before, the body goes
 * through a read callback, whose rewind tells a sending again. */
#if LIBCURL_VERSION_NUM >= 0x075000
#define DL_HTTP_POSTFIELDS 1
#else
#define DL_HTTP_POSTFIELDS 0
#endif

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_status = CURLE_FAILED_INIT;

static void global_init(void)
{
    global_status = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int dl_http_global_init(void)
{
    /* curl_global_init is process-wide and, before curl 7.84, not
     * thread-safe: run it exactly once, whichever Lua state loads first. */
    pthread_once(&global_once, global_init);
    return global_status == CURLE_OK ? 0 : -1;
}

int dl_http_init(dl_http *h)
{
    memset(h, 0, sizeof *h);
    h->connect_timeout_ms = 3000;
    h->timeout_ms = 10000;
    h->max_response_bytes = 64u * 1024 * 1024;
    h->curl = curl_easy_init();
    return h->curl ? 0 : -1;
}

int dl_http_init_like(dl_http *h, const dl_http *like)
{
    if (dl_http_init(h) != 0)
        return -1;
    h->connect_timeout_ms = like->connect_timeout_ms;
    h->timeout_ms = like->timeout_ms;
    h->max_response_bytes = like->max_response_bytes;
    if (dl_http_set_cafile(h, like->cafile) != 0) {
        dl_http_cleanup(h);
        return -1;
    }
    return 0;
}

void dl_http_cleanup(dl_http *h)
{
    if (h->curl)
        curl_easy_cleanup(h->curl);
    if (h->url)
        curl_url_cleanup(h->url);
    free(h->url_text);
    h->url = NULL;
    h->url_text = NULL;
    free(h->cafile);
    h->curl = NULL;
    h->cafile = NULL;
}

int dl_http_set_cafile(dl_http *h, const char *path)
{
    char *copy = NULL;
    if (path) {
        copy = strdup(path);
        if (!copy)
            return -1;
    }
    free(h->cafile);
    h->cafile = copy;
    h->configured = 0;
    return 0;
}

void dl_http_headers_init(dl_http_headers *h)
{
    dl_buf_init(&h->text);
    h->nodes = NULL;
    h->count = h->cap = 0;
}

void dl_http_headers_free(dl_http_headers *h)
{
    dl_buf_free_secret(&h->text); /* Authorization, the session token */
    free(h->nodes);
    dl_http_headers_init(h);
}

void dl_http_headers_reset(dl_http_headers *h)
{
    dl_buf_reset(&h->text);
    h->count = 0;
}

static int add_node(dl_http_headers *h)
{
    if (h->count == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        struct curl_slist *grown = realloc(h->nodes, cap * sizeof *grown);
        if (!grown)
            return -1;
        h->nodes = grown;
        h->cap = cap;
    }
    h->count++;
    return 0;
}

int dl_http_headers_add(dl_http_headers *h, const char *name, size_t nlen, const char *value, size_t vlen)
{
    if (dl_buf_reserve(&h->text, nlen + vlen + 3) != 0 || add_node(h) != 0)
        return -1;
    dl_buf_add(&h->text, name, nlen);
    if (!value) {
        dl_buf_add(&h->text, ":", 2);
    } else if (vlen == 0) {
        dl_buf_add(&h->text, ";", 2);
    } else {
        dl_buf_add(&h->text, ": ", 2);
        dl_buf_add(&h->text, value, vlen);
        dl_buf_add(&h->text, "", 1);
    }
    return 0;
}

struct curl_slist *dl_http_headers_list(dl_http_headers *h)
{
    char *p = h->text.data;
    for (size_t i = 0; i < h->count; i++) {
        h->nodes[i].data = p;
        h->nodes[i].next = i + 1 < h->count ? &h->nodes[i + 1] : NULL;
        p += strlen(p) + 1;
    }
    return h->count ? h->nodes : NULL;
}

int dl_http_headers_copy(dl_http_headers *dst, const dl_http_headers *src)
{
    dl_http_headers_reset(dst);
    if (dl_buf_add(&dst->text, src->text.data, src->text.len) != 0)
        return -1;
    for (size_t i = 0; i < src->count; i++)
        if (add_node(dst) != 0)
            return -1;
    return 0;
}

void dl_http_response_init(dl_http_response *r)
{
    r->status = 0;
    dl_buf_init(&r->header_block);
    dl_buf_init(&r->body);
    r->new_connections = 0;
    r->local_port = 0;
    r->truncated = 0;
    r->resent = 0;
    r->unsent = 0;
}

void dl_http_response_reset(dl_http_response *r)
{
    r->status = 0;
    dl_buf_reset(&r->header_block);
    dl_buf_reset(&r->body);
    r->new_connections = 0;
    r->local_port = 0;
    r->truncated = 0;
    r->resent = 0;
    r->unsent = 0;
}

void dl_http_response_free(dl_http_response *r)
{
    dl_buf_free(&r->header_block);
    dl_buf_free(&r->body);
}

static size_t on_body(char *data, size_t size, size_t count, void *userdata)
{
    dl_http *h = userdata;
    dl_http_response *r = h->response;
    size_t n = size * count;
    if (n > h->max_response_bytes - r->body.len) {
        r->truncated = 1;
        return 0; /* makes curl stop with CURLE_WRITE_ERROR */
    }
    return dl_buf_add(&r->body, data, n) == 0 ? n : 0;
}

static size_t on_header(char *data, size_t size, size_t count, void *userdata)
{
    dl_http *h = userdata;
    size_t n = size * count;
    /* A new status line starts a new response (after a 1xx): keep only the
     * headers of the last one. */
    if (n >= 5 && memcmp(data, "HTTP/", 5) == 0)
        dl_buf_reset(&h->response->header_block);
    return dl_buf_add(&h->response->header_block, data, n) == 0 ? n : 0;
}

static const char *classify(CURLcode rc)
{
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        return DL_HTTP_TIMEOUT;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
        return DL_HTTP_TLS;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return DL_HTTP_INVALID;
    case CURLE_OUT_OF_MEMORY:
        return DL_HTTP_NOMEM;
    default:
        return DL_HTTP_CONNECTION;
    }
}

/* Failures that may come before the request is sent: finding the host,
 * connecting, the TLS handshake, and a timeout (of the connect or later). */
static int before_sending(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
        return 1;
    default:
        return 0;
    }
}

/* True when no byte of the request went out: curl counts the request's
 * bytes once it has sent them (CURLINFO_REQUEST_SIZE, zeroed at each
 * transfer's start and kept across curl's own re-sends, which also set
 * `resent`), and nothing of the body was handed over to be sent. */
static int never_sent(dl_http *h, CURLcode rc, const dl_http_response *r)
{
    long request_size = -1;
    if (!before_sending(rc) || r->resent || (!DL_HTTP_POSTFIELDS && h->upload_pos > 0))
        return 0;
    if (curl_easy_getinfo(h->curl, CURLINFO_REQUEST_SIZE, &request_size) != CURLE_OK)
        return 0;
    return request_size == 0;
}

/* Request bodies go to curl through a read callback rather than
 * CURLOPT_POSTFIELDS, only so that curl asks to rewind when it sends a
 * request again: it does that, unasked, when a reused connection dies after
 * the request went out and before any answer. The first sending may have
 * been applied, so the response says so (`resent`). */
static size_t on_read(char *buffer, size_t size, size_t count, void *userdata)
{
    dl_http *h = userdata;
    size_t room = size * count, left = h->upload_len - h->upload_pos;
    size_t n = left < room ? left : room;
    if (n)
        memcpy(buffer, h->upload + h->upload_pos, n);
    h->upload_pos += n;
    return n;
}

static int on_seek(void *userdata, curl_off_t offset, int origin)
{
    dl_http *h = userdata;
    if (origin != SEEK_SET || offset < 0 || (curl_off_t)h->upload_len < offset)
        return CURL_SEEKFUNC_CANTSEEK;
    if (h->upload_pos > 0 && h->response)
        h->response->resent = 1;
    h->upload_pos = (size_t)offset;
    return CURL_SEEKFUNC_OK;
}

#if DL_HTTP_POSTFIELDS
/* Called each time curl is about to send the request: a second call is
 * curl sending it again, after a reused connection died with no answer.
 * When bytes of the first sending went out, it may have been applied. */
static int on_prereq(void *userdata, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
    dl_http *h = userdata;
    (void)primary_ip;
    (void)local_ip;
    (void)primary_port;
    (void)local_port;
    if (h->sends++ > 0 && h->response) {
        long sent = 1;
        curl_easy_getinfo(h->curl, CURLINFO_REQUEST_SIZE, &sent);
        if (sent > 0)
            h->response->resent = 1;
    }
    return CURL_PREREQFUNC_OK;
}
#endif

/* The method decides which body options curl needs. Every option that a
 * previous request may have set is set again, because the handle is reused. */
static CURLcode set_method(CURL *c, const dl_http_request *req)
{
    CURLcode rc = CURLE_OK;
    const char *m = req->method;
    int has_body = req->body != NULL;
    curl_easy_setopt(c, CURLOPT_NOBODY, 0L);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, (char *)NULL);
    if (strcmp(m, "GET") == 0 && !has_body)
        return curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    if (strcmp(m, "HEAD") == 0 && !has_body)
        return curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    if (strcmp(m, "POST") != 0)
        rc = curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, m);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(c, CURLOPT_POST, 1L);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
                              (curl_off_t)(has_body ? req->body_len : 0));
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(c, CURLOPT_POSTFIELDS,
                              DL_HTTP_POSTFIELDS ? (has_body ? req->body : "") : (char *)NULL);
    return rc;
}

/* The options every request of the handle has alike: set once (again
 * after the CA file changes), since each setopt costs. */
static CURLcode set_constant_options(dl_http *h)
{
    CURL *c = h->curl;
    CURLcode rc = CURLE_OK;
#define SET(opt, val) \
    if (rc == CURLE_OK) \
    rc = curl_easy_setopt(c, opt, val)
    SET(CURLOPT_NOSIGNAL, 1L); /* no SIGALRM for timeouts: we live in threads and nginx */
    SET(CURLOPT_CONNECTTIMEOUT_MS, h->connect_timeout_ms);
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
    SET(CURLOPT_CAINFO, h->cafile);
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_TCP_NODELAY, 1L);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_ERRORBUFFER, h->errbuf);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, h);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, h);
    SET(CURLOPT_READFUNCTION, on_read);
    SET(CURLOPT_READDATA, h);
    SET(CURLOPT_SEEKFUNCTION, on_seek);
    SET(CURLOPT_SEEKDATA, h);
#if DL_HTTP_POSTFIELDS
    SET(CURLOPT_PREREQFUNCTION, on_prereq);
    SET(CURLOPT_PREREQDATA, h);
#endif
    h->configured = rc == CURLE_OK;
    return rc;
}

/* The request's URL parsed, as curl would parse CURLOPT_URL: requests go to
 * the same URL again and again, and curl would parse it at every one. A
 * URL that does not parse is given as it is, for curl to tell why. */
static CURLU *parsed_url(dl_http *h, const char *url)
{
    if (h->url_text && strcmp(h->url_text, url) == 0)
        return h->url;
    free(h->url_text);
    h->url_text = NULL;
    if (!h->url && !(h->url = curl_url()))
        return NULL;
    if (curl_url_set(h->url, CURLUPART_URL, url, CURLU_GUESS_SCHEME | CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK)
        return NULL;
    h->url_text = strdup(url);
    return h->url_text ? h->url : NULL;
}

static CURLcode set_options(dl_http *h, const dl_http_request *req)
{
    CURL *c = h->curl;
    long timeout = req->timeout_ms > 0 ? req->timeout_ms : req->timeout_ms < 0 ? 0L : h->timeout_ms;
    CURLcode rc = h->configured ? CURLE_OK : set_constant_options(h);
    CURLU *url = rc == CURLE_OK ? parsed_url(h, req->url) : NULL;
    SET(CURLOPT_CURLU, url);
    if (!url)
        SET(CURLOPT_URL, req->url);
    SET(CURLOPT_HTTPHEADER, req->headers);
    SET(CURLOPT_TIMEOUT_MS, timeout);
#undef SET
    if (rc == CURLE_OK)
        rc = set_method(c, req);
    return rc;
}

CURLcode dl_http_prepare(dl_http *h, const dl_http_request *req, dl_http_response *r)
{
    h->response = r;
    h->errbuf[0] = '\0';
    h->upload = req->body ? req->body : "";
    h->upload_len = req->body ? req->body_len : 0;
    h->upload_pos = 0;
    h->sends = 0;
    return set_options(h, req);
}

int dl_http_complete(dl_http *h, CURLcode rc, const char **code, const char **message)
{
    dl_http_response *r = h->response;
    /* The handle outlives this request's headers, body and response: drop
     * the pointers now so that it never holds dangling ones. */
    curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
    if (rc != CURLE_OK)
        r->unsent = never_sent(h, rc, r);
    h->response = NULL;
    h->upload = NULL;
    h->upload_len = h->upload_pos = 0;
    if (rc != CURLE_OK) {
        char *ip = NULL;
        *code = r->truncated ? DL_HTTP_TOO_LARGE : classify(rc);
        *message = r->truncated ? "response body over the size limit"
                   : h->errbuf[0] ? h->errbuf
                                  : curl_easy_strerror(rc);
        /* curl says "unsupported protocol" of a URL it cannot use, and of an
         * answer that is not HTTP (HTTP/0.9): the latter came from a server
         * we connected to, and is the connection's failure, not the URL's. */
        if (rc == CURLE_UNSUPPORTED_PROTOCOL && !r->truncated
            && curl_easy_getinfo(h->curl, CURLINFO_PRIMARY_IP, &ip) == CURLE_OK && ip && ip[0]) {
            *code = DL_HTTP_CONNECTION;
            *message = "the server's answer is not HTTP";
        }
        return -1;
    }
    curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_getinfo(h->curl, CURLINFO_NUM_CONNECTS, &r->new_connections);
    curl_easy_getinfo(h->curl, CURLINFO_LOCAL_PORT, &r->local_port);
    return 0;
}

int dl_http_perform(dl_http *h, const dl_http_request *req, dl_http_response *r,
                    const char **code, const char **message)
{
    CURLcode rc = dl_http_prepare(h, req, r);
    if (rc == CURLE_OK)
        rc = curl_easy_perform(h->curl);
    return dl_http_complete(h, rc, code, message);
}
