#include "http_multi.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int dl_http_multi_init(dl_http_multi *m)
{
    memset(m, 0, sizeof *m);
    /* The config handle only carries settings: it never runs a transfer. */
    m->config.connect_timeout_ms = 3000;
    m->config.timeout_ms = 10000;
    m->config.max_response_bytes = 64u * 1024 * 1024;
    m->multi = curl_multi_init();
    return m->multi ? 0 : -1;
}

static void free_slot(dl_http_multi *m, dl_http_slot *s)
{
    if (s->busy)
        curl_multi_remove_handle(m->multi, s->http.curl);
    dl_http_cleanup(&s->http);
    dl_http_response_free(&s->response);
    dl_http_headers_free(&s->headers);
    dl_buf_free(&s->body);
    free(s);
}

void dl_http_multi_cleanup(dl_http_multi *m)
{
    for (size_t i = 0; i < m->count; i++)
        free_slot(m, m->slots[i]);
    free(m->slots);
    if (m->multi)
        curl_multi_cleanup(m->multi);
    free(m->config.cafile);
    memset(m, 0, sizeof *m);
}

static dl_http_slot *new_slot(dl_http_multi *m)
{
    if (m->count == m->capacity) {
        size_t capacity = m->capacity ? m->capacity * 2 : 8;
        dl_http_slot **grown = realloc(m->slots, capacity * sizeof *grown);
        if (!grown)
            return NULL;
        m->slots = grown;
        m->capacity = capacity;
    }
    dl_http_slot *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    if (dl_http_init_like(&s->http, &m->config) != 0) {
        free(s);
        return NULL;
    }
    dl_http_response_init(&s->response);
    dl_http_headers_init(&s->headers);
    dl_buf_init(&s->body);
    s->index = (long)m->count;
    m->slots[m->count++] = s;
    return s;
}

static dl_http_slot *idle_slot(dl_http_multi *m)
{
    for (size_t i = 0; i < m->count; i++)
        if (!m->slots[i]->busy)
            return m->slots[i];
    return new_slot(m);
}

long dl_http_multi_start(dl_http_multi *m, const dl_http_request *req, const dl_http_headers *headers,
                         const char **code, const char **message)
{
    *code = DL_HTTP_NOMEM;
    *message = "out of memory";
    dl_http_slot *s = idle_slot(m);
    if (!s)
        return -1;
    dl_http_response_reset(&s->response);
    dl_buf_reset(&s->body);
    if (dl_http_headers_copy(&s->headers, headers) != 0)
        return -1;
    dl_http_request copy = *req;
    copy.headers = dl_http_headers_list(&s->headers);
    if (req->body) {
        if (dl_buf_add(&s->body, req->body, req->body_len) != 0)
            return -1;
        copy.body = s->body.data ? s->body.data : "";
    }
    CURLcode rc = dl_http_prepare(&s->http, &copy, &s->response);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(s->http.curl, CURLOPT_PRIVATE, (void *)s);
    CURLMcode mc = CURLM_OK;
    if (rc == CURLE_OK)
        mc = curl_multi_add_handle(m->multi, s->http.curl);
    if (rc != CURLE_OK || mc != CURLM_OK) {
        dl_http_complete(&s->http, rc != CURLE_OK ? rc : CURLE_FAILED_INIT, code, message);
        if (mc != CURLM_OK)
            *message = curl_multi_strerror(mc);
        else
            *message = curl_easy_strerror(rc);
        return -1;
    }
    s->busy = 1;
    s->result = CURLE_OK;
    m->in_flight++;
    return s->index;
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One ended transfer taken off the multi, or -1. */
static long take_ended(dl_http_multi *m)
{
    int left;
    CURLMsg *msg;
    while ((msg = curl_multi_info_read(m->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result;
        void *p = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &p);
        dl_http_slot *s = p;
        curl_multi_remove_handle(m->multi, easy);
        s->result = result;
        m->in_flight--;
        return s->index;
    }
    return -1;
}

long dl_http_multi_next(dl_http_multi *m, long timeout_ms)
{
    long deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        long i = take_ended(m);
        if (i >= 0)
            return i;
        if (m->in_flight == 0)
            return -1;
        int running = 0;
        curl_multi_perform(m->multi, &running);
        i = take_ended(m);
        if (i >= 0)
            return i;
        long left = deadline - now_ms();
        if (left <= 0)
            return -1;
        curl_multi_poll(m->multi, NULL, 0, left > 1000 ? 1000 : (int)left, NULL);
    }
}

int dl_http_multi_finish(dl_http_multi *m, long i, dl_http_response **r, const char **code,
                         const char **message)
{
    dl_http_slot *s = m->slots[i];
    *r = &s->response;
    return dl_http_complete(&s->http, s->result, code, message);
}

void dl_http_multi_release(dl_http_multi *m, long i)
{
    dl_http_slot *s = m->slots[i];
    s->busy = 0;
}

void dl_http_multi_cancel(dl_http_multi *m)
{
    for (size_t i = 0; i < m->count; i++) {
        dl_http_slot *s = m->slots[i];
        if (!s->busy)
            continue;
        curl_multi_remove_handle(m->multi, s->http.curl);
        const char *code, *message;
        s->result = CURLE_ABORTED_BY_CALLBACK;
        dl_http_complete(&s->http, s->result, &code, &message);
        dl_http_multi_release(m, (long)i);
    }
    m->in_flight = 0;
}
