/* worker internals (not part of worker.h): the worker's connection to the coordinator. */
#ifndef STRATA_WORKER_LINK_H
#define STRATA_WORKER_LINK_H

#include "worker/worker.h"

/* Close *dealer (if open, dropping what it still holds) and connect a fresh DEALER from ctx to
 * o->connect, with o's CURVE keys and the routing id "ID.RANDOM" (16 random hex digits): each
 * connection is a new identity that no one else can guess. ERR_INPUT for a bad endpoint or key,
 * ERR_RUNTIME otherwise; e says which. */
int worker_link_connect(void *ctx, const worker_opts *o, const char *id, int send_timeout_ms,
                        void **dealer, strata_err *e);

/* Saying HELLO again: 1 s, then 2, 4, ... 32 s between tries, so a farm of workers does not
 * hammer a coordinator that is starting. */
enum { WORKER_BACKOFF_MIN_MS = 1000, WORKER_BACKOFF_MAX_MS = 32000 };

/* The wait after a try that waited ms: doubled, at most WORKER_BACKOFF_MAX_MS. */
int worker_backoff_next(int ms);

#endif
