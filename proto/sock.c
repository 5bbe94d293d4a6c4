/* Thin ZeroMQ helpers: ROUTER/DEALER sockets with the farm's options, and sending/receiving one
 * protocol message per frame (plus the routing-id frame on a ROUTER). */
#include "proto/proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

/* A draft option in libzmq 4.3's header, present in its library since 4.2.3. */
#ifndef ZMQ_ZAP_ENFORCE_DOMAIN
#define ZMQ_ZAP_ENFORCE_DOMAIN 93
#endif

enum { DEFAULT_LINGER_MS = 1000, DEFAULT_SEND_TIMEOUT_MS = 10000 };

/* Turn the current zmq errno into a proto code and message "WHAT: strerror". */
static int zfail(strata_err *e, const char *what)
{
    int err = zmq_errno(), code = ERR_IO;
    if (err == EINTR)
        code = ERR_INTR;
    else if (err == EAGAIN)
        code = ERR_TIMEOUT;
    else if (err == EHOSTUNREACH)
        code = ERR_UNREACHABLE;
    else if (err == ENOMEM)
        code = ERR_NOMEM;
    return err_set(e, code, "%s: %s", what, zmq_strerror(err));
}

static int set_int(void *s, int opt, int v, const char *name, strata_err *e)
{
    return zmq_setsockopt(s, opt, &v, sizeof v) == 0 ? 0 : zfail(e, name);
}

/* The socket's type (ZMQ_ROUTER, ZMQ_DEALER, ...), or -1. */
static int sock_type(void *s)
{
    int t = -1;
    size_t n = sizeof t;
    return zmq_getsockopt(s, ZMQ_TYPE, &t, &n) == 0 ? t : -1;
}

/* The frame cap in force on s (its ZMQ_MAXMSGSIZE, PROTO_MAX_FRAME when unset). */
static size_t sock_max_frame(void *s)
{
    int64_t v = -1;
    size_t n = sizeof v;
    if (zmq_getsockopt(s, ZMQ_MAXMSGSIZE, &v, &n) != 0 || v < 0 || (uint64_t)v > PROTO_MAX_FRAME)
        return PROTO_MAX_FRAME;
    return (size_t)v;
}

static int set_str(void *s, int opt, const char *v, const char *name, strata_err *e)
{
    return zmq_setsockopt(s, opt, v, strlen(v)) == 0 ? 0 : zfail(e, name);
}

/* CURVE on s: a ROUTER with a secret key is a server that fails closed (no ZAP handler, no
 * admission); a DEALER needs its secret key and the server's public key. */
static int sock_curve(void *s, int type, const proto_curve *k, strata_err *e)
{
    if (!k->public_key && !k->secret_key && !k->server_key) return 0;
    char pub[PROTO_KEY_LEN + 1];
    if (!k->secret_key) return err_set(e, ERR_ARG, "socket: CURVE needs a secret key");
    if (proto_key_public(k->secret_key, pub, e) < 0)
        return err_set(e, ERR_ARG, "socket: the CURVE secret key is not 40 characters of Z85");
    if (type == ZMQ_ROUTER) {
        int rc = set_int(s, ZMQ_CURVE_SERVER, 1, "CURVE_SERVER", e);
        if (!rc) rc = set_str(s, ZMQ_CURVE_SECRETKEY, k->secret_key, "CURVE_SECRETKEY", e);
        if (!rc) rc = set_str(s, ZMQ_ZAP_DOMAIN, "strata", "ZAP_DOMAIN", e);
        if (!rc) rc = set_int(s, ZMQ_ZAP_ENFORCE_DOMAIN, 1, "ZAP_ENFORCE_DOMAIN", e);
        return rc;
    }
    if (!k->server_key) return err_set(e, ERR_ARG, "socket: CURVE needs the server's key");
    int rc = set_str(s, ZMQ_CURVE_SERVERKEY, k->server_key, "CURVE_SERVERKEY", e);
    if (!rc) rc = set_str(s, ZMQ_CURVE_PUBLICKEY, pub, "CURVE_PUBLICKEY", e);
    if (!rc) rc = set_str(s, ZMQ_CURVE_SECRETKEY, k->secret_key, "CURVE_SECRETKEY", e);
    return rc;
}

/* The options every farm socket gets; o may be NULL. No ZMQ_ROUTER_HANDOVER: a connection
 * reusing a connected peer's routing id must not take over its messages. */
static int sock_apply(void *s, int type, const proto_sock_opts *o, strata_err *e)
{
    proto_sock_opts d = o ? *o : (proto_sock_opts){0};
    if (sock_curve(s, type, &d.curve, e) < 0) return e->code;
    if (d.max_frame > PROTO_MAX_FRAME)
        return err_set(e, ERR_ARG, "socket: max_frame %zu over PROTO_MAX_FRAME", d.max_frame);
    int64_t max = (int64_t)(d.max_frame ? d.max_frame : PROTO_MAX_FRAME);
    if (zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &max, sizeof max) != 0) return zfail(e, "MAXMSGSIZE");
    int linger = d.linger_ms == 0 ? DEFAULT_LINGER_MS : d.linger_ms < 0 ? 0 : d.linger_ms;
    int sndtimeo = d.send_timeout_ms == 0  ? DEFAULT_SEND_TIMEOUT_MS
                   : d.send_timeout_ms < 0 ? -1
                                           : d.send_timeout_ms;
    int rc = set_int(s, ZMQ_LINGER, linger, "LINGER", e);
    if (rc == 0) rc = set_int(s, ZMQ_SNDTIMEO, sndtimeo, "SNDTIMEO", e);
    /* the farm runs its own HEARTBEAT/liveness (docs/design.md section 6) */
    if (rc == 0) rc = set_int(s, ZMQ_HEARTBEAT_IVL, 0, "HEARTBEAT_IVL", e);
    if (rc == 0 && d.sndhwm > 0) rc = set_int(s, ZMQ_SNDHWM, d.sndhwm, "SNDHWM", e);
    if (rc == 0 && d.rcvhwm > 0) rc = set_int(s, ZMQ_RCVHWM, d.rcvhwm, "RCVHWM", e);
    if (rc == 0 && type == ZMQ_ROUTER) rc = set_int(s, ZMQ_ROUTER_MANDATORY, 1, "MANDATORY", e);
    if (rc == 0 && type == ZMQ_DEALER && d.routing_id) {
        size_t n = strlen(d.routing_id);
        /* libzmq reserves ids starting with a zero byte for the ones it makes up */
        if (n == 0 || n > PROTO_MAX_RID)
            return err_set(e, ERR_ARG, "socket: routing id of %zu bytes (1 to %d)", n,
                           PROTO_MAX_RID);
        if (zmq_setsockopt(s, ZMQ_ROUTING_ID, d.routing_id, n) != 0) rc = zfail(e, "ROUTING_ID");
    }
    return rc;
}

/* Create a socket of type in ctx with the options, then bind or connect it to endpoint. */
static int sock_open(void *ctx, int type, const char *endpoint, const proto_sock_opts *o, bool bind,
                     void **out, strata_err *e)
{
    *out = NULL;
    void *s = zmq_socket(ctx, type);
    if (!s) return zfail(e, "zmq_socket");
    int rc = sock_apply(s, type, o, e);
    if (rc == 0 && (bind ? zmq_bind(s, endpoint) : zmq_connect(s, endpoint)) != 0)
        rc = err_set(e, ERR_IO, "%s %s: %s", bind ? "bind" : "connect", endpoint,
                     zmq_strerror(zmq_errno()));
    if (rc < 0) {
        int zero = 0;
        zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
        zmq_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

int proto_router_bind(void *ctx, const char *endpoint, const proto_sock_opts *o, void **out,
                      strata_err *e)
{
    return sock_open(ctx, ZMQ_ROUTER, endpoint, o, true, out, e);
}

int proto_dealer_connect(void *ctx, const char *endpoint, const proto_sock_opts *o, void **out,
                         strata_err *e)
{
    return sock_open(ctx, ZMQ_DEALER, endpoint, o, false, out, e);
}

void proto_sock_close(void **sock)
{
    if (sock && *sock) {
        zmq_close(*sock);
        *sock = NULL;
    }
}

int proto_sock_endpoint(void *sock, char *buf, size_t len, strata_err *e)
{
    size_t n = len;
    if (zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, buf, &n) != 0) return zfail(e, "LAST_ENDPOINT");
    return 0;
}

/* zmq_msg_init_data's free function for proto_encode's malloc'd buffers. */
static void free_buf(void *data, void *hint)
{
    (void)hint;
    free(data);
}

int proto_send(void *sock, const proto_rid *to, const proto_msg *m, strata_err *e)
{
    int router = sock_type(sock) == ZMQ_ROUTER;
    if (router != (to != NULL))
        return err_set(e, ERR_ARG, "send: a routing id is %s on this socket",
                       router ? "required" : "not allowed");
    void *buf;
    size_t len;
    int rc = proto_encode(m, &buf, &len, e);
    if (rc < 0) return rc;
    /* with ROUTER_MANDATORY, an unknown or gone peer fails here, on the routing-id frame */
    if (to && zmq_send(sock, to->id, to->len, ZMQ_SNDMORE) < 0) {
        free(buf);
        return zfail(e, "send");
    }
    zmq_msg_t msg;
    if (zmq_msg_init_data(&msg, buf, len, free_buf, NULL) != 0) {
        free(buf);
        return zfail(e, "send");
    }
    if (zmq_msg_send(&msg, sock, 0) < 0) {
        zmq_msg_close(&msg);
        return zfail(e, "send");
    }
    return 0;
}

/* ---------------------------------------------------------------- receiving */

/* proto_decode_owned's release function for a received zmq_msg_t. */
static void free_zmsg(void *data, void *hint)
{
    (void)data;
    zmq_msg_close(hint);
    free(hint);
}

/* Wait until sock has a message, up to timeout_ms (< 0: forever). */
static int recv_wait(void *sock, int timeout_ms, strata_err *e)
{
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    int n = zmq_poll(&it, 1, timeout_ms);
    if (n < 0) return zfail(e, "receive");
    if (n == 0) return err_set(e, ERR_TIMEOUT, "receive: nothing in %d ms", timeout_ms);
    return 0;
}

/* Receive all parts of one message: parts[0..want) are kept (initialised by the caller), any
 * further parts are read and dropped; *nparts gets the count. The caller waited first, so the
 * message is there (libzmq delivers the parts of a message together). */
static int recv_parts(void *sock, zmq_msg_t *parts, int want, int *nparts, strata_err *e)
{
    zmq_msg_t extra;
    int more = 1, n = 0;
    zmq_msg_init(&extra);
    while (more) {
        zmq_msg_t *p = n < want ? &parts[n] : &extra;
        if (zmq_msg_recv(p, sock, n == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close(&extra);
            return zfail(e, "receive");
        }
        more = zmq_msg_more(p);
        n++;
    }
    zmq_msg_close(&extra);
    *nparts = n;
    return 0;
}

/* Read one message's parts, with deadline handling for a poll that wakes without one. */
static int recv_message(void *sock, zmq_msg_t *parts, int want, int *nparts, int timeout_ms,
                        strata_err *e)
{
    long long deadline = timeout_ms < 0 ? -1 : clock_now_ms() + timeout_ms;
    for (;;) {
        long long left = deadline < 0 ? -1 : deadline - clock_now_ms();
        int rc = recv_wait(sock, left < 0 && deadline >= 0 ? 0 : (int)left, e);
        if (rc < 0) return rc;
        rc = recv_parts(sock, parts, want, nparts, e);
        if (rc != ERR_TIMEOUT) return rc;
        if (deadline >= 0 && clock_now_ms() >= deadline)
            return err_set(e, ERR_TIMEOUT, "receive: nothing in %d ms", timeout_ms);
    }
}

/* Check the parts' count and size, then decode the payload into m, which takes it over (the
 * caller still closes payload: what is left of it after the move, or all of it on error). */
static int recv_decode(void *sock, zmq_msg_t *payload, int nparts, int want, proto_msg *m,
                       strata_err *e)
{
    if (nparts != want)
        return err_set(e, ERR_FRAME, "receive: %d frames, expected %d", nparts, want);
    size_t len = zmq_msg_size(payload), max = sock_max_frame(sock);
    if (len > max)
        return err_set(e, ERR_TOO_LARGE, "receive: %zu-byte frame over the %zu cap", len, max);
    zmq_msg_t *own = malloc(sizeof *own);
    if (!own) return err_set(e, ERR_NOMEM, "receive: out of memory");
    zmq_msg_init(own);
    zmq_msg_move(own, payload);
    return proto_decode_owned(zmq_msg_data(own), len, free_zmsg, own, m, e);
}

/* The ZAP User-Id of a received part into user ("" when none). */
static void recv_user(zmq_msg_t *part, char user[PROTO_KEY_LEN + 1])
{
    const char *u = zmq_msg_gets(part, "User-Id");
    snprintf(user, PROTO_KEY_LEN + 1, "%s", u ? u : "");
}

int proto_recv_peer(void *sock, proto_rid *from, char user[PROTO_KEY_LEN + 1], proto_msg *m,
                    int timeout_ms, strata_err *e)
{
    memset(m, 0, sizeof *m);
    int router = sock_type(sock) == ZMQ_ROUTER, want = router ? 2 : 1, nparts = 0;
    if (router && !from) return err_set(e, ERR_ARG, "receive: a ROUTER needs somewhere for the id");
    if (from) from->len = 0;
    if (user) user[0] = 0;
    zmq_msg_t parts[2];
    zmq_msg_init(&parts[0]);
    zmq_msg_init(&parts[1]);
    int rc = recv_message(sock, parts, want, &nparts, timeout_ms, e);
    if (rc == 0 && router) {
        size_t n = zmq_msg_size(&parts[0]);
        from->len = (uint8_t)(n > PROTO_MAX_RID ? PROTO_MAX_RID : n);
        memcpy(from->id, zmq_msg_data(&parts[0]), from->len);
    }
    zmq_msg_t *payload = &parts[router ? 1 : 0];
    if (rc == 0 && user) recv_user(payload, user);
    if (rc == 0) rc = recv_decode(sock, payload, nparts, want, m, e);
    zmq_msg_close(&parts[0]);
    zmq_msg_close(&parts[1]);
    return rc;
}

int proto_recv(void *sock, proto_rid *from, proto_msg *m, int timeout_ms, strata_err *e)
{
    return proto_recv_peer(sock, from, NULL, m, timeout_ms, e);
}
