/* The worker loop (worker_run): the main thread owns the DEALER to the coordinator and one end of
 * an inproc PAIR to the compute thread (compute.c), and polls both, so heartbeats keep going
 * while a task computes. ZeroMQ sockets are never shared between threads.
 *
 * Phases: HELLO (HELLO sent, waiting for WELCOME; re-sent every liveness x heartbeat_ms),
 * LOADING (WELCOME taken, the compute thread loads the model; HEARTBEATs go out), SERVING
 * (READY when the capacity changes, and every heartbeat instead of HEARTBEAT while no task is at
 * the compute thread). Silence from the coordinator for liveness x heartbeat_ms sends the worker
 * back to HELLO. Draining (*o->drain, SIGTERM): READY says so, no new TASK is taken, and the
 * worker leaves once the task it holds has its RESULT sent. What goes out is in tell.c. */
#include "worker/loop.h"
#include "worker/link.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

/* ---------------------------------------------------------------- to the compute thread */

static int worker_post(worker_loop *w, compute_cmd *c, strata_err *e)
{
    if (compute_cmd_send(w->pair, c, ZMQ_DONTWAIT) < 0) {
        compute_cmd_free(c);
        return err_set(e, ERR_RUNTIME, "compute thread: %s", zmq_strerror(zmq_errno()));
    }
    if (c->kind == COMPUTE_LOAD) w->loads++;
    if (c->kind == COMPUTE_TASK) w->tasks++;
    return 0;
}

/* Why this worker cannot run TASK t (a strata_err code and e), or 0. */
static int worker_task_check(const worker_loop *w, const struct proto_task *t, strata_err *e)
{
    const proto_tensor *cond = &t->cond;
    if (strcmp(t->level, w->o->level) != 0)
        return err_set(e, ERR_INPUT, "TASK for level '%s': this worker serves '%s'", t->level,
                       w->o->level);
    if (t->params.resize > WORKER_MAX_SIDE)
        return err_set(e, ERR_INPUT, "TASK params 'resize': expected an integer in [1, %d]",
                       WORKER_MAX_SIDE);
    if (cond->dtype != PROTO_DTYPE_NONE &&
        (cond->dtype != PROTO_DTYPE_U8 || cond->ndim != 3 || cond->shape[2] != 3 ||
         cond->shape[0] != cond->shape[1] || cond->shape[0] < 1 ||
         cond->shape[0] > WORKER_MAX_SIDE))
        return err_set(e, ERR_INPUT, "TASK cond: expected a square u8 tensor [side, side, 3]");
    return 0;
}

/* A TASK as a compute command, its cond copied out of the message (which is freed next).
 * Returns 0, or a strata_err code with a one-line reason in c->error for a TASK this worker cannot
 * run (the caller answers it at once). */
static int worker_task_cmd(const worker_loop *w, const struct proto_task *t, compute_cmd *c)
{
    strata_err e = {0};
    c->kind = COMPUTE_TASK;
    c->task = t->task;
    c->attempt = t->attempt;
    c->lt = (level_task){.seed = t->seed, .image = t->image, .class_label = t->class_label};
    c->rc = worker_task_check(w, t, &e);
    if (!c->rc && t->cond.dtype != PROTO_DTYPE_NONE) {
        if ((c->cond = malloc(t->cond.nbytes))) {
            memcpy(c->cond, t->cond.data, t->cond.nbytes);
            c->lt.cond = c->cond;
            c->lt.cond_side = (int)t->cond.shape[0];
        } else {
            c->rc = err_set(&e, ERR_NOMEM, "TASK cond: out of memory");
        }
    }
    if (c->rc) snprintf(c->error, sizeof c->error, "%s", e.msg);
    c->resize = c->rc ? 0 : (int)t->params.resize;
    c->params = t->params; /* a job's steps and direct: compute_task checks them */
    return c->rc;
}

/* ---------------------------------------------------------------- from the coordinator */

static int worker_on_welcome(worker_loop *w, const struct proto_welcome *m, strata_err *e)
{
    compute_cmd *c = calloc(1, sizeof *c);
    if (!c) return err_set(e, ERR_NOMEM, "out of memory");
    c->kind = COMPUTE_LOAD;
    int rc = worker_config_from_welcome(&m->config, &c->config, e);
    /* WELCOME names no path: the model is the one this worker was started with */
    if (!rc && w->o->model &&
        snprintf(c->config.model, sizeof c->config.model, "%s", w->o->model) >=
            (int)sizeof c->config.model)
        rc = err_set(e, ERR_INPUT, "--model %.64s...: longer than %zu bytes", w->o->model,
                     sizeof c->config.model - 1);
    if (rc) {
        compute_cmd_free(c);
        return rc;
    }
    w->heartbeat_ms = c->config.heartbeat_ms;
    w->liveness = c->config.liveness;
    w->next_heartbeat = clock_now_ms() + w->heartbeat_ms;
    w->backoff_ms = WORKER_BACKOFF_MIN_MS;
    w->phase = WORKER_PHASE_LOADING;
    w->received = 0; /* a new registration: the coordinator counts its TASKs from 0 too */
    worker_log(w, "WELCOME: model %s, side %d, heartbeat %d ms x %d", c->config.model,
               c->config.level.side, w->heartbeat_ms, w->liveness);
    return worker_post(w, c, e);
}

/* A TASK: counted as received, run, or answered at once when it cannot run. One that comes
 * while draining (sent before the coordinator read our READY) is neither: its lease goes back
 * to the queue, as no loss, when we leave. */
static int worker_on_task(worker_loop *w, const struct proto_task *t, strata_err *e)
{
    if (w->draining) {
        worker_warn(w, "TASK %llu.%u not taken: draining", (unsigned long long)t->task, t->attempt);
        return 0;
    }
    compute_cmd *c = calloc(1, sizeof *c);
    if (!c) return err_set(e, ERR_NOMEM, "out of memory");
    w->received++;
    worker_log(w, "TASK %llu.%u: job %s image %u", (unsigned long long)t->task, t->attempt, t->job,
               t->image);
    if (worker_task_cmd(w, t, c) == 0) return worker_post(w, c, e);
    int rc = worker_send_result(w, c, e);
    compute_cmd_free(c);
    return rc ? rc : worker_send_ready(w, e);
}

static int worker_on_message(worker_loop *w, const proto_msg *m, strata_err *e)
{
    switch (m->type) {
    case PROTO_HEARTBEAT:
        return 0;
    case PROTO_WELCOME:
        return worker_on_welcome(w, &m->welcome, e);
    case PROTO_TASK:
        return worker_on_task(w, &m->task, e);
    case PROTO_SHUTDOWN:
        worker_log(w, "SHUTDOWN");
        w->shutdown = 1;
        return 0;
    case PROTO_ERROR: /* not registered (any more): again; refused: this worker cannot serve */
        if (!strncmp(m->error.message, "refused", 7))
            return err_set(e, ERR_INPUT, "%s", m->error.message);
        worker_warn(w, "the coordinator says: %s; saying HELLO again", m->error.message);
        w->phase = WORKER_PHASE_HELLO;
        return worker_send_hello(w, e);
    default:
        worker_warn(w, "ignoring %s from the coordinator", proto_type_name(m->type));
        return 0;
    }
}

/* Handle every message waiting on the DEALER. A frame that does not decode is dropped (it still
 * shows the coordinator is alive). */
static int worker_drain_dealer(worker_loop *w, strata_err *e)
{
    for (int rc = 0; !rc && !w->shutdown;) {
        proto_msg m;
        strata_err pe = {0};
        int prc = proto_recv(w->dealer, NULL, &m, 0, &pe);
        if (prc == ERR_TIMEOUT || prc == ERR_INTR) return 0;
        if (prc == ERR_IO || prc == ERR_NOMEM)
            return err_set(e, ERR_RUNTIME, "receive: %s", pe.msg);
        w->last_rx = clock_now_ms();
        /* a WELCOME we cannot read is a level we cannot serve: stop, as for a bad setting */
        if (prc && m.type == PROTO_WELCOME)
            rc = err_set(e, ERR_INPUT, "%s", pe.msg);
        else if (prc)
            worker_warn(w, "dropping a bad frame from the coordinator: %s", pe.msg);
        else
            rc = worker_on_message(w, &m, e);
        proto_msg_free(&m);
        if (rc) return rc;
    }
    return 0;
}

/* ---------------------------------------------------------------- from the compute thread */

static int worker_on_loaded(worker_loop *w, const compute_cmd *c, strata_err *e)
{
    w->loads--;
    if (c->rc) return err_set(e, c->rc, "%s", c->error);
    worker_log(w, "level loaded in %llu ms", (unsigned long long)c->elapsed_ms);
    if (w->phase == WORKER_PHASE_LOADING && !w->loads) w->phase = WORKER_PHASE_SERVING;
    return worker_idle(w) ? worker_send_ready(w, e) : 0;
}

static int worker_drain_pair(worker_loop *w, strata_err *e)
{
    compute_cmd *c;
    while (compute_cmd_recv(w->pair, &c, ZMQ_DONTWAIT) == 0) {
        int rc;
        if (c->kind == COMPUTE_LOAD) {
            rc = worker_on_loaded(w, c, e);
        } else {
            w->tasks--;
            rc = worker_send_result(w, c, e);
            if (!rc && w->phase == WORKER_PHASE_SERVING) rc = worker_send_ready(w, e);
        }
        compute_cmd_free(c);
        if (rc) return rc;
    }
    if (zmq_errno() == EAGAIN || zmq_errno() == EINTR) return 0;
    return err_set(e, ERR_RUNTIME, "compute thread: %s", zmq_strerror(zmq_errno()));
}

/* ---------------------------------------------------------------- timers */

/* HELLO again (on a fresh connection, worker_send_hello); the next try waits twice as long
 * (link.h). */
static int worker_hello_again(worker_loop *w, strata_err *e)
{
    if (w->backoff_ms < WORKER_BACKOFF_MIN_MS) w->backoff_ms = WORKER_BACKOFF_MIN_MS;
    int rc = worker_send_hello(w, e);
    w->next_hello = clock_now_ms() + w->backoff_ms;
    w->backoff_ms = worker_backoff_next(w->backoff_ms);
    return rc;
}

/* Heartbeats while welcomed; HELLO again while not, or once the coordinator went silent. */
static int worker_tick(worker_loop *w, strata_err *e)
{
    long long now = clock_now_ms(), silence = (long long)w->liveness * w->heartbeat_ms;
    if (w->phase == WORKER_PHASE_HELLO) return now >= w->next_hello ? worker_hello_again(w, e) : 0;
    if (now - w->last_rx >= silence) {
        worker_warn(w, "nothing from the coordinator for %lld ms: saying HELLO again",
                    now - w->last_rx);
        w->phase = WORKER_PHASE_HELLO;
        w->backoff_ms = WORKER_BACKOFF_MIN_MS;
        return worker_hello_again(w, e);
    }
    if (now < w->next_heartbeat) return 0;
    w->next_heartbeat = now + w->heartbeat_ms;
    /* READY again while idle or draining: a TASK lost on the way shows in its count, and a
     * lost READY is replaced (proto.h) */
    if (worker_idle(w) || (w->draining && w->phase == WORKER_PHASE_SERVING))
        return worker_send_ready(w, e);
    return worker_send_empty(w, PROTO_HEARTBEAT, e);
}

/* Poll timeout: half a heartbeat at most, less when a timer is due sooner. */
static int worker_poll_ms(const worker_loop *w)
{
    long long now = clock_now_ms(),
              due = w->phase == WORKER_PHASE_HELLO ? w->next_hello : w->next_heartbeat;
    long long ms = w->heartbeat_ms / 2;
    if (due - now < ms) ms = due - now;
    return ms < 0 ? 0 : (int)ms;
}

/* SHUTDOWN, *stop, or draining with no task left (or no coordinator to give one to). */
static int worker_stopping(const worker_loop *w)
{
    return w->shutdown || (w->o->stop && *w->o->stop) ||
           (w->draining && (!w->tasks || w->phase == WORKER_PHASE_HELLO));
}

/* *o->drain was set: say so (READY draining), take nothing more. */
static int worker_begin_drain(worker_loop *w, strata_err *e)
{
    w->draining = 1;
    worker_warn(w, "draining: %s", w->tasks ? "finishing the task held, then leaving" : "leaving");
    return w->phase == WORKER_PHASE_SERVING ? worker_send_ready(w, e) : 0;
}

/* Serve until SHUTDOWN or *stop. */
static int worker_serve(worker_loop *w, strata_err *e)
{
    int rc = worker_send_hello(w, e);
    while (!rc && !worker_stopping(w)) {
        zmq_pollitem_t items[2] = {{w->dealer, 0, ZMQ_POLLIN, 0}, {w->pair, 0, ZMQ_POLLIN, 0}};
        int n = zmq_poll(items, 2, worker_poll_ms(w));
        if (n < 0 && zmq_errno() != EINTR)
            return err_set(e, ERR_RUNTIME, "poll: %s", zmq_strerror(zmq_errno()));
        if (n > 0 && (items[0].revents & ZMQ_POLLIN)) rc = worker_drain_dealer(w, e);
        if (!rc && n > 0 && (items[1].revents & ZMQ_POLLIN)) rc = worker_drain_pair(w, e);
        if (!rc && !w->draining && w->o->drain && *w->o->drain) rc = worker_begin_drain(w, e);
        if (!rc && !worker_stopping(w)) rc = worker_tick(w, e);
    }
    return rc;
}

/* ---------------------------------------------------------------- life cycle */

static void worker_identity(worker_loop *w)
{
    if (gethostname(w->host, sizeof w->host) != 0) snprintf(w->host, sizeof w->host, "unknown");
    w->host[sizeof w->host - 1] = 0;
    if (w->o->id)
        snprintf(w->id, sizeof w->id, "%s", w->o->id);
    else
        snprintf(w->id, sizeof w->id, "%s-%ld", w->host, (long)getpid());
}

/* The compute thread, started with SIGINT/SIGTERM blocked so the main thread's poll is the one
 * a signal interrupts. */
static int worker_start_compute(worker_loop *w, strata_err *e)
{
    void *theirs = zmq_socket(w->pctx, ZMQ_PAIR);
    w->pair = zmq_socket(w->pctx, ZMQ_PAIR);
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://worker-compute-%p", (void *)w);
    if (!theirs || !w->pair || zmq_bind(w->pair, ep) != 0 || zmq_connect(theirs, ep) != 0) {
        if (theirs) zmq_close(theirs);
        return err_set(e, ERR_RUNTIME, "compute pipe: %s", zmq_strerror(zmq_errno()));
    }
    w->comp.pair = theirs;
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int err = pthread_create(&w->thread, NULL, compute_main, &w->comp);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
        zmq_close(theirs);
        w->comp.pair = NULL;
        return err_set(e, ERR_RUNTIME, "compute thread: %s", strerror(err));
    }
    w->thread_started = 1;
    return 0;
}

static int worker_open(worker_loop *w, strata_err *e)
{
    w->zctx = zmq_ctx_new();
    w->pctx = zmq_ctx_new();
    if (!w->zctx || !w->pctx)
        return err_set(e, ERR_RUNTIME, "zmq context: %s", zmq_strerror(zmq_errno()));
    if (!w->o->model && w->o->stub_ms < 0)
        return err_set(e, ERR_INPUT, "no model: say --model DIR or --pipeline FILE");
    if (w->o->model && model_hash_dir(w->o->model, w->model_hash, e)) return e->code;
    int rc = worker_link_connect(w->zctx, w->o, w->id, WORKER_SEND_TIMEOUT_MS, &w->dealer, e);
    return rc ? rc : worker_start_compute(w, e);
}

/* Stop the compute thread: a running stub task ends at once, a running level_run is given
 * WORKER_JOIN_GRACE_MS and then abandoned (returns 1). Answers never read are freed. */
static int worker_stop_compute(worker_loop *w)
{
    if (!w->thread_started) return 0;
    atomic_store(&w->comp.abandon, 1);
    compute_cmd *stop = calloc(1, sizeof *stop);
    if (stop) stop->kind = COMPUTE_STOP;
    if (!stop || compute_cmd_send(w->pair, stop, ZMQ_DONTWAIT) < 0) {
        free(stop);
        return 1;
    }
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += WORKER_JOIN_GRACE_MS / 1000;
    if (pthread_timedjoin_np(w->thread, NULL, &until) != 0) return 1;
    compute_cmd *c;
    while (compute_cmd_recv(w->pair, &c, ZMQ_DONTWAIT) == 0)
        compute_cmd_free(c);
    return 0;
}

/* Close everything; returns 1 when the compute thread had to be abandoned. The DEALER's
 * context is terminated either way, which lingers until BYE is on the wire. */
static int worker_close(worker_loop *w)
{
    int abandoned = worker_stop_compute(w);
    proto_sock_close(&w->dealer);
    if (w->zctx) zmq_ctx_term(w->zctx);
    if (abandoned) return 1;
    if (w->pair) zmq_close(w->pair);
    if (w->comp.pair) zmq_close(w->comp.pair); /* the thread never started */
    if (w->pctx) zmq_ctx_term(w->pctx);
    return 0;
}

int worker_run(const worker_opts *o, int *abandoned, strata_err *e)
{
    worker_loop w = {.o = o,
                     .heartbeat_ms = WORKER_DEFAULT_HEARTBEAT_MS,
                     .liveness = WORKER_DEFAULT_LIVENESS,
                     .comp = {.threads = o->threads > 0 ? o->threads : 1, .stub_ms = o->stub_ms}};
    worker_identity(&w);
    int rc = worker_open(&w, e);
    if (!rc) rc = worker_serve(&w, e);
    if (w.dealer) {
        strata_err ignored;
        worker_log(&w, "BYE");
        worker_send_empty(&w, PROTO_BYE, &ignored);
    }
    int gone = worker_close(&w);
    if (abandoned) *abandoned = gone;
    return rc;
}
