/* Many HTTP requests in flight over one curl multi handle.
 *
 * A multi keeps a pool of slots, each an easy handle (dl_http) with the
 * response it fills and the request data it must keep alive. Connections
 * live in the multi's shared cache, so requests that follow each other on
 * the same host reuse them whichever slot carries them. A multi is used by
 * one thread at a time. */
#ifndef DYNLOG_HTTP_MULTI_H
#define DYNLOG_HTTP_MULTI_H

#include "http.h"

#include <poll.h>

typedef struct dl_http_slot {
    dl_http http;
    dl_http_response response;
    dl_http_headers headers; /* the request's, kept for the next one's memory */
    dl_buf body;                /* a copy: the caller's may not outlive the call */
    long index; /* in the multi's slots */
    int busy;   /* started and not yet released */
    CURLcode result;
} dl_http_slot;

/* A socket curl asked to watch: its events (POLLIN, POLLOUT). */
typedef struct dl_http_watch {
    curl_socket_t fd;
    short events;
} dl_http_watch;

typedef struct dl_http_multi {
    CURLM *multi;
    dl_http config; /* timeouts, limit and CA file for new slots (no handle) */
    dl_http_slot **slots;
    size_t count, capacity;
    size_t in_flight;
    /* curl tells which sockets to watch and when its next timeout is
     * (CURLMOPT_SOCKETFUNCTION, _TIMERFUNCTION); one poll() over them all
     * then wakes only the transfers whose sockets are ready. */
    struct pollfd *fds;
    dl_http_watch *ready; /* the sockets one poll() found ready */
    size_t nfds, fds_capacity;
    long long timer_at; /* monotonic microseconds of curl's timeout; -1: none */
} dl_http_multi;

/* Returns 0, or -1 when curl could not be set up. */
int dl_http_multi_init(dl_http_multi *m);
void dl_http_multi_cleanup(dl_http_multi *m);

/* Starts req on an idle slot (a new one when all are busy), with a copy of
 * headers (req->headers is not read). Returns the slot's index, or -1 with
 * *code (a DL_HTTP_* class) and *message set. */
long dl_http_multi_start(dl_http_multi *m, const dl_http_request *req, const dl_http_headers *headers,
                         const char **code, const char **message);

/* Drives the transfers until one ends or timeout_ms passes. Returns the
 * index of an ended slot, whose result dl_http_multi_finish reads, or -1. */
long dl_http_multi_next(dl_http_multi *m, long timeout_ms);

/* The outcome of ended slot i, as dl_http_perform answers; *r is the
 * slot's response until dl_http_multi_release(m, i). */
int dl_http_multi_finish(dl_http_multi *m, long i, dl_http_response **r, const char **code,
                         const char **message);
void dl_http_multi_release(dl_http_multi *m, long i);

/* Abandons every transfer under way. */
void dl_http_multi_cancel(dl_http_multi *m);

#endif
