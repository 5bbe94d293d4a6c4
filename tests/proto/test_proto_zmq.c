/* The socket helpers over real libzmq (inproc:// and tcp://127.0.0.1 loopback): ROUTER/DEALER
 * round trips with routing ids, receive timeouts, unknown peers, malformed and oversized frames
 * (a tcp peer over ZMQ_MAXMSGSIZE is cut off by libzmq while the ROUTER keeps serving others). */
#include "proto/proto.h"
#include "tests/test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zmq.h>

/* Options for test sockets: drop unsent frames at close so teardown is instant. */
static proto_sock_opts quick_opts(const char *rid, size_t max_frame)
{
    return (proto_sock_opts){.linger_ms = -1, .routing_id = rid, .max_frame = max_frame};
}

static int rid_is(const proto_rid *r, const char *s)
{
    proto_rid want = proto_rid_from_str(s);
    return proto_rid_equal(r, &want);
}

TEST(proto_zmq_inproc_roundtrip)
{
    void *ctx = zmq_ctx_new(), *router = NULL, *dealer = NULL;
    strata_err e = {0};
    proto_sock_opts ro = quick_opts(NULL, 0), dopt = quick_opts("worker-1", 0);
    CHECKF(proto_router_bind(ctx, "inproc://proto-rt", &ro, &router, &e) == 0, "%s", e.msg);
    CHECKF(proto_dealer_connect(ctx, "inproc://proto-rt", &dopt, &dealer, &e) == 0, "%s", e.msg);

    proto_msg hello = {
        .type = PROTO_HELLO,
        .hello = {
            .worker = "worker-1", .level = "l32", .host = "h", .slots = 2, .ranks = 1, .pid = 42}};
    CHECKF(proto_send(dealer, NULL, &hello, &e) == 0, "%s", e.msg);
    proto_rid from;
    proto_msg got;
    CHECKF(proto_recv(router, &from, &got, 2000, &e) == 0, "%s", e.msg);
    CHECK(got.type == PROTO_HELLO && strcmp(got.hello.worker, "worker-1") == 0 &&
          got.hello.slots == 2 && rid_is(&from, "worker-1"));
    proto_msg_free(&got);

    proto_msg welcome = {.type = PROTO_WELCOME,
                         .welcome.config = {.kind = LEVEL_KIND_GENERATE, .steps = 8}};
    CHECKF(proto_send(router, &from, &welcome, &e) == 0, "%s", e.msg);
    CHECKF(proto_recv(dealer, NULL, &got, 2000, &e) == 0, "%s", e.msg);
    CHECK(got.type == PROTO_WELCOME && got.welcome.config.steps == 8);
    proto_msg_free(&got);

    /* argument rules: a ROUTER needs a routing id both ways, a DEALER takes none */
    CHECK(proto_send(router, NULL, &welcome, &e) == ERR_ARG);
    CHECK(proto_send(dealer, &from, &hello, &e) == ERR_ARG);
    CHECK(proto_recv(router, NULL, &got, 0, &e) == ERR_ARG);

    proto_sock_close(&dealer);
    proto_sock_close(&router);
    CHECK(router == NULL);
    proto_sock_close(&router);
    zmq_ctx_term(ctx);
}

TEST(proto_zmq_tcp_roundtrip_with_timeouts)
{
    void *ctx = zmq_ctx_new(), *router = NULL, *a = NULL, *b = NULL;
    strata_err e = {0};
    proto_sock_opts ro = quick_opts(NULL, 0), ao = quick_opts("a", 0), bo = quick_opts("b", 0);
    char ep[256];
    CHECKF(proto_router_bind(ctx, "tcp://127.0.0.1:*", &ro, &router, &e) == 0, "%s", e.msg);
    CHECKF(proto_sock_endpoint(router, ep, sizeof ep, &e) == 0, "%s", e.msg);
    CHECKF(strncmp(ep, "tcp://127.0.0.1:", 16) == 0, "%s", ep);
    CHECKF(proto_dealer_connect(ctx, ep, &ao, &a, &e) == 0, "%s", e.msg);
    CHECKF(proto_dealer_connect(ctx, ep, &bo, &b, &e) == 0, "%s", e.msg);

    /* nothing sent yet: the receive times out after about the timeout */
    proto_rid from;
    proto_msg got;
    long long t0 = clock_now_ms();
    CHECK(proto_recv(router, &from, &got, 100, &e) == ERR_TIMEOUT);
    long long waited = clock_now_ms() - t0;
    CHECKF(waited >= 90 && waited < 2000, "waited %lld ms", waited);
    CHECK(proto_recv(a, NULL, &got, 0, &e) == ERR_TIMEOUT);

    /* a 1 MiB result from a, a heartbeat from b; replies go to the right peer */
    size_t n = 256 * 1024;
    float *px = malloc(n * sizeof *px);
    for (size_t i = 0; i < n; i++)
        px[i] = (float)i;
    proto_msg res = {.type = PROTO_RESULT};
    res.result = (struct proto_result){.task = 5,
                                       .attempt = 1,
                                       .ok = true,
                                       .output = {.dtype = PROTO_DTYPE_F32,
                                                  .ndim = 3,
                                                  .shape = {1, 512, 512},
                                                  .data = px,
                                                  .nbytes = n * sizeof *px}};
    proto_msg hb = {.type = PROTO_HEARTBEAT};
    CHECKF(proto_send(a, NULL, &res, &e) == 0, "%s", e.msg);
    CHECKF(proto_send(b, NULL, &hb, &e) == 0, "%s", e.msg);
    int seen_a = 0, seen_b = 0;
    for (int i = 0; i < 2; i++) {
        CHECKF(proto_recv(router, &from, &got, 5000, &e) == 0, "%s", e.msg);
        if (rid_is(&from, "a")) {
            CHECK(got.type == PROTO_RESULT && got.result.output.nbytes == n * sizeof *px);
            float last;
            memcpy(&last, (const char *)got.result.output.data + (n - 1) * 4, 4);
            CHECK(last == (float)(n - 1));
            seen_a++;
        } else {
            CHECK(rid_is(&from, "b") && got.type == PROTO_HEARTBEAT);
            seen_b++;
        }
        proto_msg_free(&got);
    }
    free(px);
    CHECK(seen_a == 1 && seen_b == 1);
    proto_rid to_b = proto_rid_from_str("b");
    proto_msg task = {.type = PROTO_SHUTDOWN};
    CHECKF(proto_send(router, &to_b, &task, &e) == 0, "%s", e.msg);
    CHECKF(proto_recv(b, NULL, &got, 5000, &e) == 0, "%s", e.msg);
    CHECK(got.type == PROTO_SHUTDOWN);
    proto_msg_free(&got);
    CHECK(proto_recv(a, NULL, &got, 50, &e) == ERR_TIMEOUT);

    /* ROUTER_MANDATORY: a peer that never connected is an error, not a silent drop */
    proto_rid nobody = proto_rid_from_str("nobody");
    CHECK(proto_send(router, &nobody, &task, &e) == ERR_UNREACHABLE);

    proto_sock_close(&a);
    proto_sock_close(&b);
    proto_sock_close(&router);
    zmq_ctx_term(ctx);
}

/* Wait up to ms for a monitor event in mask on the PAIR socket mon; 1 if seen. */
static int wait_event(void *mon, int mask, int ms)
{
    long long end = clock_now_ms() + ms;
    while (clock_now_ms() < end) {
        zmq_pollitem_t it = {mon, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, (long)(end - clock_now_ms())) <= 0) continue;
        zmq_msg_t ev, addr;
        zmq_msg_init(&ev);
        zmq_msg_init(&addr);
        int ok = zmq_msg_recv(&ev, mon, 0) >= 6 && zmq_msg_recv(&addr, mon, 0) >= 0;
        uint16_t id = 0;
        if (ok) memcpy(&id, zmq_msg_data(&ev), 2);
        zmq_msg_close(&ev);
        zmq_msg_close(&addr);
        if (ok && (id & mask)) return 1;
    }
    return 0;
}

TEST(proto_zmq_oversize_frame_cuts_the_peer_off)
{
    void *ctx = zmq_ctx_new(), *router = NULL, *a = NULL, *b = NULL;
    strata_err e = {0};
    enum { CAP = 64 * 1024 };
    proto_sock_opts ro = quick_opts(NULL, CAP), ao = quick_opts("a", 0), bo = quick_opts("b", 0);
    char ep[256];
    CHECKF(proto_router_bind(ctx, "tcp://127.0.0.1:*", &ro, &router, &e) == 0, "%s", e.msg);
    CHECK(proto_sock_endpoint(router, ep, sizeof ep, &e) == 0);
    CHECK(zmq_socket_monitor(router, "inproc://proto-mon",
                             ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED) == 0);
    void *mon = zmq_socket(ctx, ZMQ_PAIR);
    CHECK(zmq_connect(mon, "inproc://proto-mon") == 0);
    CHECKF(proto_dealer_connect(ctx, ep, &ao, &a, &e) == 0, "%s", e.msg);
    CHECK(wait_event(mon, ZMQ_EVENT_ACCEPTED, 5000));

    /* a sends one byte over the cap (its own socket has no cap that low) */
    char *big = calloc(1, CAP + 1);
    CHECK(zmq_send(a, big, CAP + 1, 0) == CAP + 1);
    free(big);
    CHECK(wait_event(mon, ZMQ_EVENT_DISCONNECTED, 5000));

    /* the ROUTER goes on serving: b's message arrives, a's never does */
    CHECKF(proto_dealer_connect(ctx, ep, &bo, &b, &e) == 0, "%s", e.msg);
    proto_msg hb = {.type = PROTO_HEARTBEAT}, got;
    CHECKF(proto_send(b, NULL, &hb, &e) == 0, "%s", e.msg);
    proto_rid from;
    CHECKF(proto_recv(router, &from, &got, 5000, &e) == 0, "%s", e.msg);
    CHECK(rid_is(&from, "b") && got.type == PROTO_HEARTBEAT);
    proto_msg_free(&got);
    CHECK(proto_recv(router, &from, &got, 200, &e) == ERR_TIMEOUT);

    /* a frame right at the cap is fine */
    proto_msg res = {.type = PROTO_ERROR};
    char *text = malloc(CAP);
    memset(text, 'x', CAP - 64);
    text[CAP - 64] = 0;
    res.error.message = text;
    CHECKF(proto_send(b, NULL, &res, &e) == 0, "%s", e.msg);
    CHECKF(proto_recv(router, &from, &got, 5000, &e) == 0, "%s", e.msg);
    CHECK(got.type == PROTO_ERROR && strlen(got.error.message) == CAP - 64);
    proto_msg_free(&got);
    free(text);

    zmq_socket_monitor(router, NULL, 0);
    zmq_close(mon);
    proto_sock_close(&a);
    proto_sock_close(&b);
    proto_sock_close(&router);
    zmq_ctx_term(ctx);
}

TEST(proto_zmq_bad_frames_are_errors_with_the_sender)
{
    void *ctx = zmq_ctx_new(), *router = NULL, *a = NULL;
    strata_err e = {0};
    /* inproc is not capped by libzmq (no wire decoder): proto_recv checks the size itself */
    proto_sock_opts ro = quick_opts(NULL, 1024), ao = quick_opts("a", 0);
    CHECKF(proto_router_bind(ctx, "inproc://proto-bad", &ro, &router, &e) == 0, "%s", e.msg);
    CHECKF(proto_dealer_connect(ctx, "inproc://proto-bad", &ao, &a, &e) == 0, "%s", e.msg);
    proto_rid from;
    proto_msg got;

    char big[2048] = {0};
    CHECK(zmq_send(a, big, sizeof big, 0) == (int)sizeof big);
    CHECK(proto_recv(router, &from, &got, 2000, &e) == ERR_TOO_LARGE);
    CHECK(rid_is(&from, "a") && got.priv_ == NULL);

    CHECK(zmq_send(a, "\x93garbage", 8, 0) == 8);
    CHECK(proto_recv(router, &from, &got, 2000, &e) == ERR_FRAME);
    CHECK(rid_is(&from, "a"));

    /* two frames where one is expected: both read, the message refused */
    CHECK(zmq_send(a, "\x80", 1, ZMQ_SNDMORE) == 1);
    CHECK(zmq_send(a, "\x80", 1, 0) == 1);
    CHECK(proto_recv(router, &from, &got, 2000, &e) == ERR_FRAME);
    CHECKF(strcmp(e.msg, "receive: 3 frames, expected 2") == 0, "%s", e.msg);

    /* and the socket is still in step: the next good message decodes */
    proto_msg bye = {.type = PROTO_BYE};
    CHECK(proto_send(a, NULL, &bye, &e) == 0);
    CHECKF(proto_recv(router, &from, &got, 2000, &e) == 0, "%s", e.msg);
    CHECK(got.type == PROTO_BYE);
    proto_msg_free(&got);

    proto_sock_close(&a);
    proto_sock_close(&router);
    zmq_ctx_term(ctx);
}

TEST(proto_zmq_socket_options_checked)
{
    void *ctx = zmq_ctx_new(), *s = (void *)1;
    strata_err e = {0};
    proto_sock_opts o = {.curve.public_key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"};
    CHECK(proto_router_bind(ctx, "inproc://proto-opt", &o, &s, &e) == ERR_ARG && !s);
    CHECKF(strstr(e.msg, "CURVE"), "%s", e.msg);
    o = (proto_sock_opts){.max_frame = PROTO_MAX_FRAME + 1};
    CHECK(proto_router_bind(ctx, "inproc://proto-opt", &o, &s, &e) == ERR_ARG);
    o = (proto_sock_opts){.routing_id = ""};
    CHECK(proto_dealer_connect(ctx, "inproc://proto-opt", &o, &s, &e) == ERR_ARG);
    CHECK(proto_router_bind(ctx, "nonsense://x", NULL, &s, &e) == ERR_IO);
    CHECKF(strstr(e.msg, "bind nonsense://x"), "%s", e.msg);
    /* defaults: the cap is PROTO_MAX_FRAME, libzmq heartbeats off */
    CHECK(proto_router_bind(ctx, "inproc://proto-opt", NULL, &s, &e) == 0);
    int64_t max = 0;
    int ivl = -1;
    size_t n = sizeof max;
    zmq_getsockopt(s, ZMQ_MAXMSGSIZE, &max, &n);
    n = sizeof ivl;
    zmq_getsockopt(s, ZMQ_HEARTBEAT_IVL, &ivl, &n);
    CHECK(max == (int64_t)PROTO_MAX_FRAME && ivl == 0);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    proto_sock_close(&s);
    zmq_ctx_term(ctx);
}

/* CURVE with the ZAP handler: an allowed key gets in and its messages carry it as User-Id; a
 * key not on the list, and a plaintext peer, get nothing through. */
TEST(proto_zmq_curve_admits_only_allowed_keys)
{
    char spub[41], ssec[41], apub[41], asec[41], bpub[41], bsec[41];
    CHECK(zmq_curve_keypair(spub, ssec) == 0 && zmq_curve_keypair(apub, asec) == 0 &&
          zmq_curve_keypair(bpub, bsec) == 0);
    void *ctx = zmq_ctx_new(), *router = NULL, *a = NULL, *b = NULL, *p = NULL;
    strata_err e = {0};
    proto_zap_t *zap = NULL;
    const char *allow[] = {apub};
    CHECKF(proto_zap_new(ctx, allow, 1, &zap, &e) == 0, "%s", e.msg);
    proto_sock_opts so = {.linger_ms = -1, .curve = {.secret_key = ssec}};
    CHECKF(proto_router_bind(ctx, "tcp://127.0.0.1:*", &so, &router, &e) == 0, "%s", e.msg);
    char ep[256];
    CHECK(proto_sock_endpoint(router, ep, sizeof ep, &e) == 0);
    proto_sock_opts ao = {.linger_ms = -1, .curve = {.secret_key = asec, .server_key = spub}};
    proto_sock_opts bo = {.linger_ms = -1, .curve = {.secret_key = bsec, .server_key = spub}};
    proto_sock_opts po = {.linger_ms = -1, .send_timeout_ms = 100};
    CHECK(proto_dealer_connect(ctx, ep, &bo, &b, &e) == 0);
    CHECK(proto_dealer_connect(ctx, ep, &po, &p, &e) == 0);
    CHECK(proto_dealer_connect(ctx, ep, &ao, &a, &e) == 0);
    proto_msg hb = {.type = PROTO_HEARTBEAT}, got;
    proto_send(b, NULL, &hb, &e);
    proto_send(p, NULL, &hb, &e);
    proto_msg bye = {.type = PROTO_BYE};
    CHECKF(proto_send(a, NULL, &bye, &e) == 0, "%s", e.msg);
    proto_rid from;
    char user[PROTO_KEY_LEN + 1];
    /* the refused peers' frames never arrive: the first message is a's */
    CHECKF(proto_recv_peer(router, &from, user, &got, 5000, &e) == 0, "%s", e.msg);
    CHECK(got.type == PROTO_BYE);
    CHECKF(!strcmp(user, apub), "User-Id '%s'", user);
    proto_msg_free(&got);
    CHECK(proto_recv_peer(router, &from, user, &got, 300, &e) == ERR_TIMEOUT);
    proto_sock_close(&a);
    proto_sock_close(&b);
    proto_sock_close(&p);
    proto_sock_close(&router);
    proto_zap_destroy(&zap);
    zmq_ctx_term(ctx);
}

TEST(proto_keygen_writes_a_pair)
{
    char name[600], path[700], pub[41], sec[41], derived[41];
    strata_err e = {0};
    snprintf(name, sizeof name, "%s/farm", test_tmpdir());
    CHECKF(proto_keygen(name, &e) == 0, "%s", e.msg);
    snprintf(path, sizeof path, "%s.key", name);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECKF(proto_key_read(path, sec, &e) == 0, "%s", e.msg);
    snprintf(path, sizeof path, "%s.pub", name);
    CHECKF(proto_key_read(path, pub, &e) == 0, "%s", e.msg);
    CHECK(proto_key_public(sec, derived, &e) == 0 && !strcmp(derived, pub));
    CHECK(proto_keygen(name, &e) == ERR_INPUT); /* an existing key is never overwritten */
    CHECK(proto_key_read("/nonexistent.pub", pub, &e) == ERR_INPUT);
}
