/* worker internals (not part of worker.h): the worker loop's state, shared by loop.c (the
 * loop, its phases and timers) and tell.c (what the worker sends the coordinator). */
#ifndef STRATA_WORKER_LOOP_H
#define STRATA_WORKER_LOOP_H

#include "worker/compute.h"
#include "worker/worker.h"

#include <pthread.h>
#include <stdarg.h>

enum {
    WORKER_DEFAULT_HEARTBEAT_MS =
        1000, /* until a WELCOME says otherwise (docs/design.md section 6) */
    WORKER_DEFAULT_LIVENESS = 3,
    WORKER_SEND_TIMEOUT_MS = 100, /* a send never holds up heartbeats for long */
    WORKER_JOIN_GRACE_MS = 1000,  /* how long a stop waits for a running task */
};

typedef enum worker_phase {
    WORKER_PHASE_HELLO,
    WORKER_PHASE_LOADING,
    WORKER_PHASE_SERVING,
} worker_phase;

typedef struct worker_loop {
    const worker_opts *o;
    char id[PROTO_MAX_RID + 1], host[256];
    char model_hash[MODEL_HASH_HEX + 1]; /* of o->model, "" without one */
    void *zctx;                          /* the DEALER's context */
    void *pctx; /* the PAIR's context: left alone if the compute thread is abandoned */
    void *dealer, *pair;
    compute comp;
    pthread_t thread;
    int thread_started;
    worker_phase phase;
    int loads, tasks;  /* commands at the compute thread */
    uint32_t received; /* TASKs received since the last WELCOME (READY's received) */
    int draining;      /* *o->drain was seen: no new task, leave once none is held */
    int heartbeat_ms, liveness;
    long long last_rx, next_heartbeat, next_hello;
    int backoff_ms; /* before the next HELLO on a fresh connection (link.h) */
    int shutdown, hellos;
} worker_loop;

/* A problem the worker survives: "strata worker ID: message", always on stderr. */
void worker_warn(const worker_loop *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One event line on stderr, only with --verbose. */
#define worker_log(w, ...) ((w)->o->verbose ? worker_warn(w, __VA_ARGS__) : (void)0)

/* Send m on the DEALER. A message that cannot go out (the coordinator gone long enough to
 * fill the queue) is dropped with a warning: liveness and HELLO recover from that. */
int worker_send(worker_loop *w, const proto_msg *m, strata_err *e);
int worker_send_empty(worker_loop *w, enum proto_type type, strata_err *e);
/* HELLO; every one after the first on a fresh connection (link.c), so that the registration it
 * makes is bound to a connection no one else can use. */
int worker_send_hello(worker_loop *w, strata_err *e);
/* READY with the worker's state as it is now (proto.h): capacity 1 when serving and holding
 * nothing (one task at a time), else 0; the TASKs received; draining. */
int worker_send_ready(worker_loop *w, strata_err *e);
/* 1 when the worker is serving, not draining, and holds no task or load. */
int worker_idle(const worker_loop *w);
/* RESULT of a task the compute thread answered (or one refused at once). */
int worker_send_result(worker_loop *w, const compute_cmd *c, strata_err *e);

#endif
