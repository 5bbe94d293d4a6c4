/* worker internal: connecting again. A worker whose HELLO goes unanswered, or whose coordinator
 * went silent (restarted, or the network dropped), says HELLO on a fresh connection, waiting
 * 1 s, then 2, 4, ... 32 s between tries, so a farm of workers does not hammer a coordinator
 * that is starting, and a connection stuck in a dead peer's state is never reused. */
#ifndef STRATA_WORKER_REDIAL_H
#define STRATA_WORKER_REDIAL_H

#include "common/common.h"

enum { WORKER_BACKOFF_MIN_MS = 1000, WORKER_BACKOFF_MAX_MS = 32000 };

/* Close *dealer (dropping what it still queues) and connect a new DEALER to endpoint with the
 * same routing id and send timeout. 0, or a negative code with e (*dealer is then NULL). */
int worker_redial(void *zctx, const char *endpoint, const char *id, int send_timeout_ms,
                  void **dealer, strata_err *e);
/* The wait after a try that waited ms: doubled, at most WORKER_BACKOFF_MAX_MS. */
int worker_backoff_next(int ms);

#endif
