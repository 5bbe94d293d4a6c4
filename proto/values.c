/* Small values of the protocol: type names, dtypes, routing ids. */
#include "proto/proto.h"

#include <string.h>

static const char *const type_names[PROTO_TYPE_COUNT] = {
    [PROTO_HELLO] = "HELLO",
    [PROTO_READY] = "READY",
    [PROTO_RESULT] = "RESULT",
    [PROTO_HEARTBEAT] = "HEARTBEAT",
    [PROTO_BYE] = "BYE",
    [PROTO_WELCOME] = "WELCOME",
    [PROTO_TASK] = "TASK",
    [PROTO_SHUTDOWN] = "SHUTDOWN",
    [PROTO_SUBMIT] = "SUBMIT",
    [PROTO_SUBMITTED] = "SUBMITTED",
    [PROTO_ERROR] = "ERROR",
    [PROTO_STATUS] = "STATUS",
    [PROTO_STATUS_REPLY] = "STATUS_REPLY",
    [PROTO_WATCH] = "WATCH",
    [PROTO_PROGRESS] = "PROGRESS",
    [PROTO_DONE] = "DONE",
    [PROTO_CANCEL] = "CANCEL",
    [PROTO_CANCELLED] = "CANCELLED",
};

const char *proto_type_name(enum proto_type type)
{
    if ((int)type <= PROTO_NONE || type >= PROTO_TYPE_COUNT) return NULL;
    return type_names[type];
}

size_t proto_dtype_size(enum proto_dtype dtype)
{
    switch (dtype) {
    case PROTO_DTYPE_U8:
        return 1;
    case PROTO_DTYPE_F32:
        return 4;
    case PROTO_DTYPE_NONE:
        break;
    }
    return 0;
}

/* ---------------------------------------------------------------- routing ids */

proto_rid proto_rid_from_str(const char *s)
{
    proto_rid r = {0};
    size_t n = strlen(s);
    r.len = (uint8_t)(n > PROTO_MAX_RID ? PROTO_MAX_RID : n);
    memcpy(r.id, s, r.len);
    return r;
}

int proto_rid_equal(const proto_rid *a, const proto_rid *b)
{
    return a->len == b->len && memcmp(a->id, b->id, a->len) == 0;
}
