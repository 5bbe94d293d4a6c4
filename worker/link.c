/* The worker's DEALER to the coordinator, opened afresh for every registration (docs/design.md
 * section 5): the coordinator binds a registration to the connection it came on, and a routing
 * id made of the worker id and 64 random bits cannot be reused by anyone else. */
#include "worker/link.h"

#include <stdio.h>
#include <sys/random.h>
#include <zmq.h>

int worker_link_connect(void *ctx, const worker_opts *o, const char *id, int send_timeout_ms,
                        void **dealer, strata_err *e)
{
    if (*dealer) {
        int zero = 0;
        zmq_setsockopt(*dealer, ZMQ_LINGER, &zero, sizeof zero);
        proto_sock_close(dealer);
    }
    uint64_t nonce = 0;
    if (getrandom(&nonce, sizeof nonce, 0) != (ssize_t)sizeof nonce)
        return err_set(e, ERR_RUNTIME, "getrandom: no random bytes for the routing id");
    char rid[PROTO_MAX_RID + 1];
    snprintf(rid, sizeof rid, "%.*s.%016llx", PROTO_MAX_RID - 17, id, (unsigned long long)nonce);
    proto_sock_opts so = {.send_timeout_ms = send_timeout_ms,
                          .routing_id = rid,
                          .curve = {.secret_key = o->key, .server_key = o->server_key}};
    strata_err pe = {0};
    if (proto_dealer_connect(ctx, o->connect, &so, dealer, &pe))
        return err_set(e, pe.code == ERR_ARG || pe.code == ERR_IO ? ERR_INPUT : ERR_RUNTIME,
                       "--connect %s: %s", o->connect, pe.msg);
    return 0;
}

int worker_backoff_next(int ms)
{
    if (ms < WORKER_BACKOFF_MIN_MS) return WORKER_BACKOFF_MIN_MS;
    return ms >= WORKER_BACKOFF_MAX_MS / 2 ? WORKER_BACKOFF_MAX_MS : 2 * ms;
}
