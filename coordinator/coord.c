/* The coordinator's life cycle and event loop: two ROUTER sockets (workers, clients) polled by
 * one thread; every message is handled to completion, then queued work is dispatched. */
#include "coordinator/coord_internal.h"
#include "kernels/kernels.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

enum {
    COORD_LINGER_MS = 500,     /* time SHUTDOWN frames get to leave at close */
    COORD_SEND_TIMEOUT_MS = 2, /* a full peer queue must not stall the loop */
    COORD_WAKE_MS = 100,       /* longest poll: how soon coord_stop is noticed */
};

void coord_log(const coord_t *c, int always, const char *fmt, ...)
{
    if (!always && !c->o.verbose) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "coordinator: %s\n", line);
}

int coord_grow(void *arr, uint32_t *cap, uint32_t need, size_t size)
{
    void **p = arr;
    if (need <= *cap) return 0;
    uint32_t n = *cap ? *cap : 8;
    while (n < need)
        n = n > UINT32_MAX / 2 ? UINT32_MAX : n * 2;
    void *q = realloc(*p, (size_t)n * size);
    if (!q) return -1;
    *p = q;
    *cap = n;
    return 0;
}

uint32_t coord_max_in_flight(const coord_t *c)
{
    if (c->o.max_images_in_flight > 0) return (uint32_t)c->o.max_images_in_flight;
    uint32_t n = 4 * c->nworkers;
    return n < 8 ? 8 : n;
}

/* 0 when endpoint looks like "tcp://...", "ipc://..." or "inproc://..." (libzmq checks the
 * rest; this only tells bad input from a failure to bind). */
static int endpoint_ok(const char *ep)
{
    static const char *const schemes[] = {"tcp://", "ipc://", "inproc://"};
    if (!ep) return -1;
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
        size_t n = strlen(schemes[i]);
        if (!strncmp(ep, schemes[i], n) && ep[n]) return 0;
    }
    return -1;
}

/* Options with defaults resolved; -1 with err when one is out of range. */
static int options_resolve(const coord_options *in, coord_options *o, char *err, size_t errlen)
{
    *o = *in;
    if (!o->pipeline || o->pipeline->nlevels < 1 || o->pipeline->nlevels > PIPELINE_MAX_LEVELS) {
        snprintf(err, errlen, "pipeline: expected 1 to %d levels", PIPELINE_MAX_LEVELS);
        return -1;
    }
    if (endpoint_ok(o->worker_endpoint) || endpoint_ok(o->client_endpoint)) {
        snprintf(err, errlen, "%s endpoint: expected tcp://, ipc:// or inproc://, got \"%s\"",
                 endpoint_ok(o->worker_endpoint) ? "worker" : "client",
                 endpoint_ok(o->worker_endpoint) ? (o->worker_endpoint ? o->worker_endpoint : "")
                                                 : o->client_endpoint);
        return -1;
    }
    if (o->heartbeat_ms <= 0) o->heartbeat_ms = 1000;
    if (o->liveness <= 0) o->liveness = 3;
    if (o->max_attempts <= 0) o->max_attempts = 3;
    if (o->max_attempts > COORD_MAX_EXCLUDE) o->max_attempts = COORD_MAX_EXCLUDE;
    if (o->max_images_in_flight < 0) o->max_images_in_flight = 0;
    if (o->writers <= 0) o->writers = 4;
    if (o->max_frame > PROTO_MAX_FRAME) {
        snprintf(err, errlen, "max_frame: %zu is over %zu", o->max_frame, PROTO_MAX_FRAME);
        return -1;
    }
    return 0;
}

static int bind_one(coord_t *c, const char *ep, void **sock, char *real, char *err, size_t errlen)
{
    proto_sock_opts so = {.max_frame = c->o.max_frame,
                          .linger_ms = COORD_LINGER_MS,
                          .send_timeout_ms = COORD_SEND_TIMEOUT_MS};
    strata_err e = {0};
    if (proto_router_bind(c->ctx, ep, &so, sock, &e) < 0 ||
        proto_sock_endpoint(*sock, real, 256, &e) < 0) {
        snprintf(err, errlen, "%s", e.msg);
        return -1;
    }
    return 0;
}

int coord_new(const coord_options *o, coord_t **out, char *err, size_t errlen)
{
    *out = NULL;
    coord_t *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return ERR_NOMEM;
    }
    if (options_resolve(o, &c->o, err, errlen) < 0) {
        free(c);
        return ERR_INPUT;
    }
    coord_slots_init(c);
    /* task ids start from the clock (in us, 39 bits) so that a RESULT computed for an earlier
     * coordinator process cannot match a lease of this one */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    c->task_seq = (((uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000) &
                   (((uint64_t)1 << 39) - 1)) +
                  1;
    c->pipe = *o->pipeline;
    c->o.pipeline = &c->pipe;
    c->ctx = zmq_ctx_new();
    if (!c->ctx || bind_one(c, o->worker_endpoint, &c->wsock, c->wep, err, errlen) < 0 ||
        bind_one(c, o->client_endpoint, &c->csock, c->cep, err, errlen) < 0) {
        if (!c->ctx) snprintf(err, errlen, "zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
        coord_free(c);
        return ERR_RUNTIME;
    }
    if (coord_writer_new(c->o.writers, &c->writer) < 0) {
        snprintf(err, errlen, "cannot start the PNG writer threads");
        coord_free(c);
        return ERR_RUNTIME;
    }
    c->o.worker_endpoint = c->wep;
    c->o.client_endpoint = c->cep;
    *out = c;
    return 0;
}

void coord_free(coord_t *c)
{
    if (!c) return;
    proto_sock_close(&c->wsock);
    proto_sock_close(&c->csock);
    if (c->ctx) zmq_ctx_term(c->ctx);
    coord_writer_free(c->writer); /* before the jobs: pending writes point at them */
    coord_jobs_free(c);
    coord_queues_free(c);
    free(c->workers);
    free(c->watchers);
    free(c);
}

const char *coord_worker_endpoint(const coord_t *c)
{
    return c->wep;
}

const char *coord_client_endpoint(const coord_t *c)
{
    return c->cep;
}

void coord_stop(coord_t *c)
{
    c->stop = 1;
}

/* Read up to COORD_DRAIN_BATCH messages from one socket and handle each. */
static void drain(coord_t *c, void *sock, int workers)
{
    for (int i = 0; i < COORD_DRAIN_BATCH && !c->stop; i++) {
        proto_rid from;
        proto_msg m;
        strata_err e = {0};
        int rc = proto_recv(sock, &from, &m, 0, &e);
        if (rc == ERR_TIMEOUT || rc == ERR_INTR) break;
        if (rc < 0) {
            coord_log(c, 1, "dropped a frame on the %s socket: %s", workers ? "worker" : "client",
                      e.msg);
            if (!workers) coord_client_garbage(c, &from, e.msg);
            proto_msg_free(&m);
            if (rc == ERR_IO) break;
            continue;
        }
        if (workers)
            coord_on_worker_msg(c, &from, &m);
        else
            coord_on_client_msg(c, &from, &m);
        proto_msg_free(&m);
    }
}

/* Heartbeats and watcher flushes; the ms the loop may sleep before the next timer. */
static int timers(coord_t *c)
{
    long long now = clock_now_ms();
    if (now >= c->next_heartbeat_ms) {
        coord_workers_tick(c, now);
        c->next_heartbeat_ms = now + c->o.heartbeat_ms;
    }
    /* at most half a heartbeat (liveness), at most COORD_WAKE_MS (coord_stop from a thread) */
    int wait = c->o.heartbeat_ms / 2 < COORD_WAKE_MS ? c->o.heartbeat_ms / 2 : COORD_WAKE_MS;
    if (wait < 1) wait = 1;
    long long to_hb = c->next_heartbeat_ms - now;
    if (to_hb < wait) wait = to_hb < 1 ? 1 : (int)to_hb;
    int to_watch = coord_watchers_flush(c, now);
    if (to_watch >= 0 && to_watch < wait) wait = to_watch < 1 ? 1 : to_watch;
    return wait;
}

int coord_run(coord_t *c)
{
    int rc = 0;
    c->next_heartbeat_ms = clock_now_ms() + c->o.heartbeat_ms;
    coord_log(c, 0, "serving %s: workers %s, clients %s", c->pipe.name, c->wep, c->cep);
    while (!c->stop) {
        int wait = timers(c);
        zmq_pollitem_t items[3] = {{c->wsock, 0, ZMQ_POLLIN, 0},
                                   {c->csock, 0, ZMQ_POLLIN, 0},
                                   {NULL, coord_writer_fd(c->writer), ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 3, wait) < 0) {
            if (zmq_errno() == EINTR) continue;
            coord_log(c, 1, "poll: %s", zmq_strerror(zmq_errno()));
            rc = 1;
            break;
        }
        if (items[0].revents & ZMQ_POLLIN) drain(c, c->wsock, 1);
        if (items[1].revents & ZMQ_POLLIN) drain(c, c->csock, 0);
        if (items[2].revents & ZMQ_POLLIN) coord_writes_collect(c);
        coord_dispatch(c);
    }
    coord_workers_shutdown(c);
    coord_log(c, 0, "stopped");
    return rc;
}
