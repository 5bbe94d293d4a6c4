/* Small values of the protocol: type names, dtypes, the params map, routing ids. */
#include "proto/proto.h"

#include <stdarg.h>
#include <stdio.h>
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

/* ---------------------------------------------------------------- params */

const proto_param *proto_params_find(const proto_params *p, const char *key)
{
    for (uint32_t i = 0; i < p->count && i < PROTO_MAX_PARAMS; i++)
        if (p->item[i].key && strcmp(p->item[i].key, key) == 0) return &p->item[i];
    return NULL;
}

/* The slot for key: its existing entry or a fresh one; NULL when full or key too long. */
static proto_param *params_slot(proto_params *p, const char *key)
{
    if (!key || !*key || strlen(key) > PROTO_MAX_KEY) return NULL;
    proto_param *q = (proto_param *)proto_params_find(p, key);
    if (q) return q;
    if (p->count >= PROTO_MAX_PARAMS) return NULL;
    q = &p->item[p->count++];
    q->key = key;
    return q;
}

int proto_params_set_int(proto_params *p, const char *key, int64_t v)
{
    proto_param *q = params_slot(p, key);
    if (!q) return ERR_TOO_LARGE;
    q->kind = PROTO_PARAM_INT, q->i = v;
    return 0;
}

int proto_params_set_float(proto_params *p, const char *key, double v)
{
    proto_param *q = params_slot(p, key);
    if (!q) return ERR_TOO_LARGE;
    q->kind = PROTO_PARAM_FLOAT, q->f = v;
    return 0;
}

int proto_params_set_str(proto_params *p, const char *key, const char *v)
{
    proto_param *q = params_slot(p, key);
    if (!q) return ERR_TOO_LARGE;
    q->kind = PROTO_PARAM_STR, q->s = v;
    return 0;
}

int proto_params_set_bool(proto_params *p, const char *key, bool v)
{
    proto_param *q = params_slot(p, key);
    if (!q) return ERR_TOO_LARGE;
    q->kind = PROTO_PARAM_BOOL, q->b = v;
    return 0;
}

int proto_params_get_int(const proto_params *p, const char *key, int64_t *out)
{
    const proto_param *q = proto_params_find(p, key);
    if (!q) return ERR_MISSING;
    if (q->kind != PROTO_PARAM_INT) return ERR_TYPE;
    *out = q->i;
    return 0;
}

/* A YAML "guidance: 7" arrives as an int, "7.5" as a float: both are numbers. */
int proto_params_get_num(const proto_params *p, const char *key, double *out)
{
    const proto_param *q = proto_params_find(p, key);
    if (!q) return ERR_MISSING;
    if (q->kind == PROTO_PARAM_INT)
        *out = (double)q->i;
    else if (q->kind == PROTO_PARAM_FLOAT)
        *out = q->f;
    else
        return ERR_TYPE;
    return 0;
}

int proto_params_get_str(const proto_params *p, const char *key, const char **out)
{
    const proto_param *q = proto_params_find(p, key);
    if (!q) return ERR_MISSING;
    if (q->kind != PROTO_PARAM_STR) return ERR_TYPE;
    *out = q->s;
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
