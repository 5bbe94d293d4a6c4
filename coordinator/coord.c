/* The coordinator's life cycle: options, the two ROUTER sockets (workers, clients), the parts it
 * owns (queue, registry, job table, writer pool), and its log line. */
#include "coordinator/coord_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

enum {
    COORD_LINGER_MS = 500,     /* time SHUTDOWN frames get to leave at close */
    COORD_SEND_TIMEOUT_MS = 2, /* a full peer queue must not stall the loop */
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

/* Options with defaults resolved; ERR_INPUT with e when one is out of range. */
static int options_resolve(const coord_options *in, coord_options *o, strata_err *e)
{
    *o = *in;
    if (!o->pipeline || o->pipeline->nlevels < 1 || o->pipeline->nlevels > PIPELINE_MAX_LEVELS)
        return err_set(e, ERR_INPUT, "pipeline: expected 1 to %d levels", PIPELINE_MAX_LEVELS);
    if (endpoint_ok(o->worker_endpoint) || endpoint_ok(o->client_endpoint))
        return err_set(
            e, ERR_INPUT, "%s endpoint: expected tcp://, ipc:// or inproc://, got \"%s\"",
            endpoint_ok(o->worker_endpoint) ? "worker" : "client",
            endpoint_ok(o->worker_endpoint) ? (o->worker_endpoint ? o->worker_endpoint : "")
                                            : o->client_endpoint);
    if (o->heartbeat_ms <= 0) o->heartbeat_ms = 1000;
    if (o->liveness <= 0) o->liveness = 3;
    if (o->max_attempts <= 0) o->max_attempts = 3;
    if (o->max_attempts > COORD_MAX_EXCLUDE) o->max_attempts = COORD_MAX_EXCLUDE;
    if (o->max_losses <= 0) o->max_losses = 3;
    if (o->max_images_in_flight < 0) o->max_images_in_flight = 0;
    if (o->writers <= 0) o->writers = 4;
    if (o->max_frame > PROTO_MAX_FRAME)
        return err_set(e, ERR_INPUT, "max_frame: %zu is over %zu", o->max_frame, PROTO_MAX_FRAME);
    if (!o->client_max_frame) o->client_max_frame = COORD_CLIENT_MAX_FRAME;
    if (o->max_frame && o->max_frame < o->client_max_frame) o->client_max_frame = o->max_frame;
    return 0;
}

/* Bind a ROUTER on ep into *sock and its real endpoint (256 bytes) into real. */
static int bind_one(coord_t *c, const char *ep, size_t max_frame, void **sock, char *real,
                    strata_err *e)
{
    proto_sock_opts so = {.max_frame = max_frame,
                          .linger_ms = COORD_LINGER_MS,
                          .send_timeout_ms = COORD_SEND_TIMEOUT_MS,
                          .curve = {.secret_key = c->o.curve_secret}};
    strata_err why = {0};
    if (proto_router_bind(c->ctx, ep, &so, sock, &why) < 0 ||
        proto_sock_endpoint(*sock, real, 256, &why) < 0)
        return err_set(e, ERR_RUNTIME, "%s", why.msg);
    return 0;
}

/* Task ids start from the clock (in us, 39 bits) so that a RESULT computed for an earlier
 * coordinator process cannot match a lease of this one. */
static uint64_t first_task_seq(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (((uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000) &
            (((uint64_t)1 << 39) - 1)) +
           1;
}

/* The parts the coordinator owns: queue, registry, job table. */
static int parts_new(coord_t *c, strata_err *e)
{
    if (coord_queue_new(first_task_seq(), &c->queue) < 0 ||
        coord_registry_new(c->pipe.nlevels, &c->workers) < 0 || coord_jobs_new(&c->jobs) < 0)
        return err_set(e, ERR_NOMEM, "out of memory");
    return 0;
}

/* The sockets, then the writer threads. */
static int start(coord_t *c, const coord_options *o, strata_err *e)
{
    c->ctx = zmq_ctx_new();
    if (!c->ctx) return err_set(e, ERR_RUNTIME, "zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
    int rc = coord_root_init(c, e);
    if (rc == 0) rc = coord_access_start(c, e);
    if (rc < 0) return rc;
    coord_access_models(c);
    if (bind_one(c, o->worker_endpoint, c->o.max_frame, &c->wsock, c->wep, e) < 0 ||
        bind_one(c, o->client_endpoint, c->o.client_max_frame, &c->csock, c->cep, e) < 0)
        return ERR_RUNTIME;
    if ((rc = coord_http_start(c, e)) < 0) return rc;
    if (coord_writer_new(c->o.writers, &c->writer) < 0)
        return err_set(e, ERR_RUNTIME, "cannot start the PNG writer threads");
    return 0;
}

int coord_new(const coord_options *o, coord_t **out, strata_err *e)
{
    *out = NULL;
    coord_t *c = calloc(1, sizeof *c);
    if (!c) return err_set(e, ERR_NOMEM, "out of memory");
    int rc = options_resolve(o, &c->o, e);
    if (rc < 0) {
        free(c);
        return rc;
    }
    c->pipe = *o->pipeline;
    c->o.pipeline = &c->pipe;
    c->state_lock = -1;
    if ((rc = parts_new(c, e)) < 0 || (rc = start(c, o, e)) < 0) {
        coord_destroy(&c);
        return rc;
    }
    c->o.worker_endpoint = c->wep;
    c->o.client_endpoint = c->cep;
    *out = c;
    return 0;
}

void coord_destroy(coord_t **cp)
{
    coord_t *c = cp ? *cp : NULL;
    if (!c) return;
    coord_http_stop(c); /* its pages read everything below */
    proto_sock_close(&c->wsock);
    proto_sock_close(&c->csock);
    coord_access_stop(c); /* the ZAP socket is in ctx too */
    if (c->ctx) zmq_ctx_term(c->ctx);
    coord_writer_destroy(&c->writer); /* before the jobs: pending writes point at them */
    coord_journal_close(&c->journal); /* coord_run committed what waited */
    coord_spool_close(&c->spool);
    free(c->drops);
    if (c->state_lock >= 0) close(c->state_lock);
    coord_jobs_destroy(&c->jobs);
    coord_queue_destroy(&c->queue);
    coord_registry_destroy(&c->workers);
    free(c->watchers);
    free(c);
    *cp = NULL;
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

uint64_t coord_checks_run(const coord_t *c)
{
    return c->checks;
}
