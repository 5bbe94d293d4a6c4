/* worker internals (not part of worker.h): the worker loop's compute thread and the commands
 * the main thread sends it over their inproc PAIR sockets. A command travels as a pointer in a
 * frame, and whoever holds the pointer owns the command: the main thread makes it, the compute
 * thread runs it and sends the same pointer back with the answer filled in, the main thread
 * frees it. Commands run in the order sent. */
#ifndef STRATA_WORKER_COMPUTE_H
#define STRATA_WORKER_COMPUTE_H

#include "worker/worker.h"

#include <stdatomic.h>

typedef enum compute_kind {
    COMPUTE_LOAD, /* take config (load the model unless it is the one already loaded) */
    COMPUTE_TASK, /* run one image */
    COMPUTE_STOP, /* end the thread (not answered) */
} compute_kind;

typedef struct compute_cmd {
    compute_kind kind;
    worker_config config; /* LOAD */
    uint64_t task;        /* TASK: the lease (task, attempt) */
    uint32_t attempt;
    level_task lt; /* TASK; lt.cond is cond */
    uint8_t *cond; /* TASK: the coordinator's cond image, copied out of the message */
    int resize;    /* TASK: output side asked for; 0: the level's side */
    struct proto_task_params params; /* TASK: steps (0: WELCOME's) and direct, a job's own */
    /* the answer */
    int rc;          /* 0 or a strata_err code */
    char error[512]; /* one line when rc != 0 */
    uint8_t *out;    /* out_side x out_side RGB8 when rc == 0 */
    int out_side;
    uint64_t elapsed_ms;
    uint64_t cpu_us; /* the process's CPU time over the command */
} compute_cmd;

/* The compute thread's state; it owns everything here while it runs, except `abandon`, which
 * the main thread sets to make a stub task end early and every later command a no-op. */
typedef struct compute {
    void *pair; /* the thread's end of the PAIR */
    int threads;
    int stub_ms;
    atomic_int abandon;
    unet_t *model;
    char model_hash[MODEL_HASH_HEX + 1]; /* of the model loaded, when a WELCOME asked */
    worker_config config;
    int configured;
} compute;

/* The thread's body (pthread_create with a compute *): serve commands until COMPUTE_STOP or a
 * closed socket, then free the model and close its socket. */
void *compute_main(void *arg);

/* Send / receive a command pointer over a PAIR socket. Return 0 or -1 (errno from zmq). */
int compute_cmd_send(void *pair, compute_cmd *c, int flags);
int compute_cmd_recv(void *pair, compute_cmd **c, int flags);

/* Free a command and what it owns; NULL is fine. */
void compute_cmd_free(compute_cmd *c);

#endif
