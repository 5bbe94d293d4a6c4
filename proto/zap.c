/* The ZAP handler (ZeroMQ RFC 27) of a CURVE server: a thread answering libzmq's
 * authentication requests on inproc://zeromq.zap.01 of one context. A client whose public key
 * is on the allow list is admitted with its key (Z85) as the connection's User-Id, which every
 * message it sends then carries (proto_recv_peer); any other request is refused. Servers set
 * ZMQ_ZAP_ENFORCE_DOMAIN, so without this handler no CURVE client gets in at all. */
#include "proto/proto.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"

enum { ZAP_POLL_MS = 100, ZAP_PARTS = 7 };

struct proto_zap {
    void *sock;
    pthread_t thread;
    atomic_int stop;
    uint32_t nkeys;
    uint8_t (*keys)[32]; /* binary public keys admitted */
    char (*z85)[PROTO_KEY_LEN + 1];
};

/* Index of the 32-byte key in z's allow list, or -1. */
static int zap_find(const proto_zap_t *z, const uint8_t *key)
{
    for (uint32_t i = 0; i < z->nkeys; i++)
        if (!memcmp(z->keys[i], key, 32)) return (int)i;
    return -1;
}

static void zap_send(void *s, const char *part, size_t n, int more)
{
    zmq_send(s, part, n, more ? ZMQ_SNDMORE : 0);
}

/* Answer one request (its parts in p, count n): 200 with the key as User-Id, or 400. */
static void zap_answer(proto_zap_t *z, zmq_msg_t *p, int n)
{
    int key = -1;
    /* version, request id, domain, address, routing id, mechanism, credentials... */
    if (n >= ZAP_PARTS && zmq_msg_size(&p[0]) == 3 && !memcmp(zmq_msg_data(&p[0]), "1.0", 3) &&
        zmq_msg_size(&p[5]) == 5 && !memcmp(zmq_msg_data(&p[5]), "CURVE", 5) &&
        zmq_msg_size(&p[6]) == 32)
        key = zap_find(z, zmq_msg_data(&p[6]));
    zap_send(z->sock, "1.0", 3, 1);
    zap_send(z->sock, n > 1 ? zmq_msg_data(&p[1]) : "", n > 1 ? zmq_msg_size(&p[1]) : 0, 1);
    zap_send(z->sock, key >= 0 ? "200" : "400", 3, 1);
    const char *text = key >= 0 ? "OK" : "key not allowed";
    zap_send(z->sock, text, strlen(text), 1);
    zap_send(z->sock, key >= 0 ? z->z85[key] : "", key >= 0 ? PROTO_KEY_LEN : 0, 1);
    zap_send(z->sock, "", 0, 0);
}

/* Receive one request's parts (up to 8 kept) and answer it. */
static void zap_serve_one(proto_zap_t *z)
{
    zmq_msg_t p[8];
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t *m = &p[n < 8 ? n : 7];
        if (n >= 8) zmq_msg_close(m);
        zmq_msg_init(m);
        if (zmq_msg_recv(m, z->sock, 0) < 0) {
            zmq_msg_close(m);
            break;
        }
        more = zmq_msg_more(m);
        if (n < 8) n++;
    }
    if (n > 0 && !more) zap_answer(z, p, n);
    for (int i = 0; i < n; i++)
        zmq_msg_close(&p[i]);
}

static void *zap_main(void *arg)
{
    proto_zap_t *z = arg;
    while (!atomic_load(&z->stop)) {
        zmq_pollitem_t it = {z->sock, 0, ZMQ_POLLIN, 0};
        int n = zmq_poll(&it, 1, ZAP_POLL_MS);
        if (n > 0) zap_serve_one(z);
        if (n < 0 && zmq_errno() == ETERM) break;
    }
    return NULL;
}

/* Copy the allow list into z: Z85 text and binary. */
static int zap_keys(proto_zap_t *z, const char *const *keys, uint32_t n, strata_err *e)
{
    z->keys = calloc(n ? n : 1, sizeof *z->keys);
    z->z85 = calloc(n ? n : 1, sizeof *z->z85);
    if (!z->keys || !z->z85) return err_set(e, ERR_NOMEM, "ZAP: out of memory");
    for (uint32_t i = 0; i < n; i++) {
        if (!keys[i] || strlen(keys[i]) != PROTO_KEY_LEN || !zmq_z85_decode(z->keys[i], keys[i]))
            return err_set(e, ERR_ARG, "ZAP: allowed key %u is not 40 characters of Z85", i);
        memcpy(z->z85[i], keys[i], PROTO_KEY_LEN + 1);
    }
    z->nkeys = n;
    return 0;
}

int proto_zap_new(void *ctx, const char *const *keys, uint32_t nkeys, proto_zap_t **out,
                  strata_err *e)
{
    *out = NULL;
    proto_zap_t *z = calloc(1, sizeof *z);
    if (!z) return err_set(e, ERR_NOMEM, "ZAP: out of memory");
    int rc = zap_keys(z, keys, nkeys, e), linger = 0;
    if (!rc && !(z->sock = zmq_socket(ctx, ZMQ_REP)))
        rc = err_set(e, ERR_IO, "ZAP: %s", zmq_strerror(zmq_errno()));
    if (!rc) zmq_setsockopt(z->sock, ZMQ_LINGER, &linger, sizeof linger);
    if (!rc && zmq_bind(z->sock, ZAP_ENDPOINT) != 0)
        rc = err_set(e, ERR_IO, "ZAP: bind %s: %s", ZAP_ENDPOINT, zmq_strerror(zmq_errno()));
    if (!rc && pthread_create(&z->thread, NULL, zap_main, z) != 0)
        rc = err_set(e, ERR_RUNTIME, "ZAP: cannot start its thread");
    if (rc) {
        if (z->sock) zmq_close(z->sock);
        free(z->keys);
        free(z->z85);
        free(z);
        return rc;
    }
    *out = z;
    return 0;
}

void proto_zap_destroy(proto_zap_t **zp)
{
    proto_zap_t *z = zp ? *zp : NULL;
    if (!z) return;
    atomic_store(&z->stop, 1);
    pthread_join(z->thread, NULL);
    zmq_close(z->sock);
    free(z->keys);
    free(z->z85);
    free(z);
    *zp = NULL;
}
