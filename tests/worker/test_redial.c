/* A worker that gets no WELCOME tries again on a fresh connection after 1 s, 2, 4, ... 32 s:
 * the waits double and stop at 32 s; a fresh connection keeps the worker's routing id. */
#include "proto/proto.h"
#include "tests/test.h"
#include "worker/redial.h"

#include <string.h>
#include <zmq.h>

TEST(worker_backoff_doubles_to_32_s)
{
    int want[] = {1000, 2000, 4000, 8000, 16000, 32000, 32000}, ms = 0;
    for (int i = 0; i < 7; i++) {
        ms = worker_backoff_next(ms);
        CHECKF(ms == want[i], "try %d waits %d ms, not %d", i + 1, ms, want[i]);
    }
}

TEST(worker_redial_keeps_the_routing_id)
{
    void *ctx = zmq_ctx_new(), *router = NULL, *dealer = NULL;
    strata_err e = {0};
    proto_sock_opts ro = {.linger_ms = 0};
    char ep[256];
    CHECK(proto_router_bind(ctx, "tcp://127.0.0.1:*", &ro, &router, &e) == 0);
    CHECK(proto_sock_endpoint(router, ep, sizeof ep, &e) == 0);
    int rc = 0;
    for (int round = 0; round < 2 && !rc; round++) { /* the first dial, then a fresh one */
        rc = worker_redial(ctx, ep, "w-1", 100, &dealer, &e);
        proto_msg m = {.type = PROTO_HEARTBEAT}, got;
        proto_rid from;
        if (!rc) rc = proto_send(dealer, NULL, &m, &e);
        if (!rc) rc = proto_recv(router, &from, &got, 5000, &e);
        if (!rc) {
            rc = from.len == 3 && !memcmp(from.id, "w-1", 3) ? 0 : -1;
            proto_msg_free(&got);
        }
    }
    int linger = 0;
    if (dealer) zmq_setsockopt(dealer, ZMQ_LINGER, &linger, sizeof linger);
    proto_sock_close(&dealer);
    proto_sock_close(&router);
    zmq_ctx_term(ctx);
    CHECKF(rc == 0, "%s", e.msg);
}
