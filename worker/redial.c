/* Connecting again with backoff (see redial.h). */
#include "worker/redial.h"
#include "proto/proto.h"

#include <zmq.h>

int worker_redial(void *zctx, const char *endpoint, const char *id, int send_timeout_ms,
                  void **dealer, strata_err *e)
{
    if (*dealer) {
        int linger = 0; /* a RESULT queued for a dead coordinator is stale: its task is redone */
        zmq_setsockopt(*dealer, ZMQ_LINGER, &linger, sizeof linger);
        proto_sock_close(dealer);
    }
    proto_sock_opts so = {.send_timeout_ms = send_timeout_ms, .routing_id = id};
    return proto_dealer_connect(zctx, endpoint, &so, dealer, e);
}

int worker_backoff_next(int ms)
{
    if (ms < WORKER_BACKOFF_MIN_MS) return WORKER_BACKOFF_MIN_MS;
    return ms >= WORKER_BACKOFF_MAX_MS / 2 ? WORKER_BACKOFF_MAX_MS : 2 * ms;
}
