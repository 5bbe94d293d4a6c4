/* What the worker tells the coordinator (loop.h): HELLO, READY, RESULT and the empty messages,
 * over the DEALER the loop owns. */
#include "worker/link.h"
#include "worker/loop.h"

#include <stdio.h>
#include <unistd.h>

void worker_warn(const worker_loop *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "strata worker %s: ", w->id);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int worker_send(worker_loop *w, const proto_msg *m, strata_err *e)
{
    strata_err pe = {0};
    int rc = proto_send(w->dealer, NULL, m, &pe);
    if (rc == ERR_TIMEOUT || rc == ERR_INTR) {
        worker_warn(w, "%s dropped: %s", proto_type_name(m->type), pe.msg);
        return 0;
    }
    if (rc) return err_set(e, ERR_RUNTIME, "%s: %s", proto_type_name(m->type), pe.msg);
    return 0;
}

int worker_send_empty(worker_loop *w, enum proto_type type, strata_err *e)
{
    proto_msg m = {.type = type};
    return worker_send(w, &m, e);
}

int worker_send_hello(worker_loop *w, strata_err *e)
{
    if (w->hellos++ &&
        worker_link_connect(w->zctx, w->o, w->id, WORKER_SEND_TIMEOUT_MS, &w->dealer, e))
        return e->code;
    proto_msg m = {.type = PROTO_HELLO,
                   .hello = {.worker = w->id,
                             .level = w->o->level,
                             .host = w->host,
                             .slots = 1,
                             .ranks = (uint32_t)worker_group_size(),
                             .pid = (uint32_t)getpid(),
                             .model_hash = w->model_hash[0] ? w->model_hash : NULL}};
    worker_log(w, "HELLO level %s to %s", w->o->level, w->o->connect);
    w->next_hello = clock_now_ms() + (long long)w->liveness * w->heartbeat_ms;
    return worker_send(w, &m, e);
}

int worker_idle(const worker_loop *w)
{
    return w->phase == WORKER_PHASE_SERVING && !w->draining && !w->tasks && !w->loads;
}

int worker_send_ready(worker_loop *w, strata_err *e)
{
    proto_msg m = {.type = PROTO_READY,
                   .ready = {.capacity = worker_idle(w) ? 1 : 0,
                             .received = w->received,
                             .draining = w->draining != 0}};
    return worker_send(w, &m, e);
}

int worker_send_result(worker_loop *w, const compute_cmd *c, strata_err *e)
{
    proto_msg m = {
        .type = PROTO_RESULT,
        .result = {
            .task = c->task, .attempt = c->attempt, .ok = c->rc == 0, .elapsed_ms = c->elapsed_ms}};
    m.result.cpu_us = c->cpu_us;
    if (c->rc == 0) {
        uint64_t s = (uint64_t)c->out_side;
        m.result.output = (proto_tensor){.dtype = PROTO_DTYPE_U8,
                                         .ndim = 3,
                                         .shape = {s, s, 3},
                                         .data = c->out,
                                         .nbytes = (size_t)(s * s * 3)};
        worker_log(w, "RESULT task %llu.%u ok, %dx%d in %llu ms", (unsigned long long)c->task,
                   c->attempt, c->out_side, c->out_side, (unsigned long long)c->elapsed_ms);
    } else {
        m.result.error = c->error;
        worker_warn(w, "task %llu.%u failed: %s", (unsigned long long)c->task, c->attempt,
                    c->error);
    }
    strata_err pe = {0};
    int rc = proto_send(w->dealer, NULL, &m, &pe);
    if (rc == ERR_TIMEOUT || rc == ERR_INTR) {
        /* A lost RESULT would leave its lease running at the coordinator while a READY asked
         * for more: HELLO again instead, which makes the coordinator re-queue our leases. */
        worker_warn(w, "RESULT of task %llu not sent (%s): saying HELLO again",
                    (unsigned long long)c->task, pe.msg);
        w->phase = WORKER_PHASE_HELLO;
        return worker_send_hello(w, e);
    }
    return rc ? err_set(e, ERR_RUNTIME, "RESULT: %s", pe.msg) : 0;
}
