#include "http_multi.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <time.h>

static long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* CURLMOPT_SOCKETFUNCTION: watch fd for `what`, or stop watching it. */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    dl_http_multi *m = userp;
    size_t i = 0;
    (void)easy;
    (void)socketp;
    while (i < m->nfds && m->fds[i].fd != fd)
        i++;
    if (what == CURL_POLL_REMOVE) {
        if (i < m->nfds)
            m->fds[i] = m->fds[--m->nfds];
        return 0;
    }
    if (i == m->nfds) {
        if (m->nfds == m->fds_capacity) {
            size_t capacity = m->fds_capacity ? m->fds_capacity * 2 : 16;
            struct pollfd *fds = realloc(m->fds, capacity * sizeof *fds);
            if (!fds)
                return -1;
            m->fds = fds;
            dl_http_watch *ready = realloc(m->ready, capacity * sizeof *ready);
            if (!ready)
                return -1;
            m->ready = ready;
            m->fds_capacity = capacity;
        }
        m->fds[i].fd = fd;
        m->nfds++;
    }
    m->fds[i].events = (short)(((what & CURL_POLL_IN) ? POLLIN : 0) | ((what & CURL_POLL_OUT) ? POLLOUT : 0));
    m->fds[i].revents = 0;
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: curl's next timeout, in timeout_ms (-1: none). */
static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    dl_http_multi *m = userp;
    (void)multi;
    m->timer_at = timeout_ms < 0 ? -1 : now_us() + (long long)timeout_ms * 1000;
    return 0;
}

int dl_http_multi_init(dl_http_multi *m)
{
    memset(m, 0, sizeof *m);
    /* The config handle only carries settings: it never runs a transfer. */
    m->config.connect_timeout_ms = 3000;
    m->config.timeout_ms = 10000;
    m->config.max_response_bytes = 64u * 1024 * 1024;
    m->timer_at = -1;
    m->multi = curl_multi_init();
    if (!m->multi)
        return -1;
    if (curl_multi_setopt(m->multi, CURLMOPT_SOCKETFUNCTION, on_socket) != CURLM_OK
        || curl_multi_setopt(m->multi, CURLMOPT_SOCKETDATA, m) != CURLM_OK
        || curl_multi_setopt(m->multi, CURLMOPT_TIMERFUNCTION, on_timer) != CURLM_OK
        || curl_multi_setopt(m->multi, CURLMOPT_TIMERDATA, m) != CURLM_OK) {
        curl_multi_cleanup(m->multi);
        m->multi = NULL;
        return -1;
    }
    return 0;
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
        curl_multi_cleanup(m->multi); /* may still call on_socket: m->fds goes after */
    free(m->fds);
    free(m->ready);
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

/* What poll() found of a watched socket, as curl's own poll of it reads it
 * (select.c: Curl_socket_check): a hang-up or an error is readable, so that
 * curl reads the end of the connection and tells it as it would. */
static int select_bits(const struct pollfd *p)
{
    int bits = 0;
    if (p->events & POLLIN) {
        if (p->revents & (POLLIN | POLLERR | POLLHUP))
            bits |= CURL_CSELECT_IN;
        if (p->revents & (POLLPRI | POLLNVAL))
            bits |= CURL_CSELECT_ERR;
    }
    if (p->events & POLLOUT) {
        if (p->revents & POLLOUT)
            bits |= CURL_CSELECT_OUT;
        if (p->revents & (POLLERR | POLLHUP | POLLPRI | POLLNVAL))
            bits |= CURL_CSELECT_ERR;
    }
    return bits;
}

/* Drives the transfers: curl is called for its due timeout and for the
 * sockets that are ready, never for transfers with nothing to do. */
long dl_http_multi_next(dl_http_multi *m, long timeout_ms)
{
    long long deadline = now_us() + (long long)(timeout_ms > 0 ? timeout_ms : 0) * 1000;
    int running = 0;
    for (;;) {
        long i = take_ended(m);
        if (i >= 0)
            return i;
        if (m->in_flight == 0)
            return -1;
        long long now = now_us();
        if (m->timer_at >= 0 && m->timer_at <= now) {
            m->timer_at = -1;
            curl_multi_socket_action(m->multi, CURL_SOCKET_TIMEOUT, 0, &running);
            continue;
        }
        long long wait = deadline - now;
        if (wait <= 0)
            return -1;
        if (wait > 1000000)
            wait = 1000000;
        if (m->timer_at >= 0 && m->timer_at - now < wait)
            wait = m->timer_at - now;
        int n = poll(m->fds, (nfds_t)m->nfds, (int)((wait + 999) / 1000));
        if (n <= 0)
            continue; /* a timeout or a signal: the loop looks at the clocks again */
        /* The callbacks curl makes may change m->fds: act on a copy. */
        size_t ready = 0;
        for (size_t k = 0; k < m->nfds; k++) {
            int bits = m->fds[k].revents ? select_bits(&m->fds[k]) : 0;
            if (bits) {
                m->ready[ready].fd = m->fds[k].fd;
                m->ready[ready++].events = (short)bits;
            }
        }
        for (size_t k = 0; k < ready; k++)
            curl_multi_socket_action(m->multi, m->ready[k].fd, m->ready[k].events, &running);
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
