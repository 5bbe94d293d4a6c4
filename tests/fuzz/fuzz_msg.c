/* Fuzz target msg: a frame as the coordinator, a worker or a client receives it (proto_recv
 * hands the frame to proto_decode_owned). Every message type goes through the same decoder,
 * which the bytes select by their "type" field. Promises checked: a decoded message encodes
 * (proto.h: the encoder is as strict as the decoder), and its encoding decodes and encodes
 * again to the same bytes. */
#include "proto/proto.h"
#include "tests/fuzz/fuzz.h"

#include <stdlib.h>
#include <string.h>

static void release_free(void *buf, void *hint)
{
    (void)hint;
    free(buf);
}

/* m encoded, decoded and encoded again: both encodings must succeed and be the same bytes. */
static void check_reencode(const proto_msg *m)
{
    void *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    strata_err e = {0};
    if (proto_encode(m, &a, &alen, &e) != 0) fuzz_fail("msg", e.msg);
    proto_msg again;
    if (proto_decode(a, alen, &again, &e) != 0) fuzz_fail("msg", e.msg);
    if (proto_encode(&again, &b, &blen, &e) != 0) fuzz_fail("msg", e.msg);
    if (alen != blen || memcmp(a, b, alen) != 0)
        fuzz_fail("msg", "a decoded message encodes to other bytes the second time");
    proto_msg_free(&again);
    free(a);
    free(b);
}

int fuzz_msg_one(const uint8_t *data, size_t size)
{
    /* owned, as proto_recv decodes: the frame is released by the decoder, on error too */
    void *frame = malloc(size ? size : 1);
    if (!frame) return 0;
    memcpy(frame, data, size);
    proto_msg m;
    strata_err e = {0};
    int rc = proto_decode_owned(frame, size, release_free, NULL, &m, &e);
    if (rc != 0 && e.msg[0] == 0) fuzz_fail("msg", "an error without a message");
    if (rc == 0) {
        if (m.type <= PROTO_NONE || m.type >= PROTO_TYPE_COUNT)
            fuzz_fail("msg", "decoded a message of no type");
        check_reencode(&m);
    }
    proto_msg_free(&m);
    return 0;
}

FUZZ_TARGET(fuzz_msg_one)
