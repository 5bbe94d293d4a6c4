/* The MessagePack codec. Each message type is a table of fields (wire name = C member name),
 * walked the same way to encode (msgpack_packer into a growing buffer) and to decode (msgpack-c
 * object tree, after proto_frame_check has bounded it: see scan.c), so the two cannot drift.
 *
 * Decoded storage: msgpack-c's tree and our copies of strings and arrays live in the one
 * msgpack_zone of the message (freed by proto_msg_free); tensor data is a view of the frame. */
#include "proto/proto.h"

#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "tensor data travels little-endian; a big-endian host needs a byte swap here");

enum fkind { F_U32, F_U64, F_I32, F_BOOL, F_STR, F_TENSOR, F_PARAMS, F_ARRAY };

struct record;

struct field {
    const char *name;
    enum fkind kind;
    bool required;
    size_t off;               /* of the value (F_ARRAY: of the items pointer) */
    size_t off_n;             /* F_ARRAY: of the uint32_t count */
    const struct record *sub; /* F_ARRAY: the items' record */
};

struct record {
    const struct field *fields;
    int nfields;
    size_t size; /* of one item, for arrays */
};

enum { MAX_FIELDS = 12, PATH_MAX_LEN = 128, SCRATCH_ITEM = 64 };

/* Table rows: a required / optional field, an array of records, a record of type T. */
// clang-format off
#define REQ(T, m, k) {#m, k, true, offsetof(T, m), 0, NULL}
#define OPT(T, m, k) {#m, k, false, offsetof(T, m), 0, NULL}
#define ARR(T, m, n, r) {#m, F_ARRAY, true, offsetof(T, m), offsetof(T, n), r}
#define RECORD(T, f) {f, (int)(sizeof f / sizeof f[0]), sizeof(T)}
// clang-format on

static const struct field hello_f[] = {
    REQ(struct proto_hello, worker, F_STR),     REQ(struct proto_hello, level, F_STR),
    REQ(struct proto_hello, slots, F_U32),      REQ(struct proto_hello, ranks, F_U32),
    REQ(struct proto_hello, pid, F_U32),        REQ(struct proto_hello, host, F_STR),
    OPT(struct proto_hello, model_hash, F_STR),
};
static const struct field ready_f[] = {REQ(struct proto_ready, credits, F_U32)};
static const struct field result_f[] = {
    REQ(struct proto_result, task, F_U64),      REQ(struct proto_result, attempt, F_U32),
    REQ(struct proto_result, ok, F_BOOL),       OPT(struct proto_result, error, F_STR),
    OPT(struct proto_result, output, F_TENSOR), REQ(struct proto_result, elapsed_ms, F_U64),
};
static const struct field welcome_f[] = {REQ(struct proto_welcome, config, F_PARAMS)};
static const struct field task_f[] = {
    REQ(struct proto_task, task, F_U64),        REQ(struct proto_task, attempt, F_U32),
    REQ(struct proto_task, job, F_STR),         REQ(struct proto_task, image, F_U32),
    REQ(struct proto_task, seed, F_U64),        REQ(struct proto_task, level, F_STR),
    REQ(struct proto_task, level_index, F_U32), REQ(struct proto_task, class_label, F_I32),
    OPT(struct proto_task, cond, F_TENSOR),     OPT(struct proto_task, params, F_PARAMS),
};
static const struct field submit_f[] = {REQ(struct proto_submit, spec, F_STR)};
static const struct field job_ref_f[] = {REQ(struct proto_job_ref, job, F_STR)};
static const struct field status_f[] = {OPT(struct proto_job_ref, job, F_STR)};
static const struct field error_f[] = {REQ(struct proto_error, message, F_STR)};
static const struct field level_f[] = {
    REQ(struct proto_level_status, name, F_STR),
    REQ(struct proto_level_status, queued, F_U32),
    REQ(struct proto_level_status, running, F_U32),
    REQ(struct proto_level_status, done, F_U32),
    OPT(struct proto_level_status, compute_ms, F_U64),
};
static const struct record level_rec = RECORD(struct proto_level_status, level_f);
static const struct field job_f[] = {
    REQ(struct proto_job_status, id, F_STR),
    REQ(struct proto_job_status, state, F_STR),
    REQ(struct proto_job_status, count, F_U32),
    REQ(struct proto_job_status, done, F_U32),
    REQ(struct proto_job_status, failed, F_U32),
    ARR(struct proto_job_status, levels, nlevels, &level_rec),
};
static const struct record job_rec = RECORD(struct proto_job_status, job_f);
_Static_assert(sizeof(struct proto_job_status) <= SCRATCH_ITEM &&
                   sizeof(struct proto_level_status) <= SCRATCH_ITEM,
               "dec_array decodes a bad item into a scratch buffer of SCRATCH_ITEM bytes");
static const struct field status_reply_f[] = {
    ARR(struct proto_status_reply, jobs, njobs, &job_rec),
};
static const struct field done_f[] = {
    REQ(struct proto_done, job, F_STR),
    REQ(struct proto_done, state, F_STR),
};

static const struct record msg_records[PROTO_TYPE_COUNT] = {
    [PROTO_HELLO] = RECORD(struct proto_hello, hello_f),
    [PROTO_READY] = RECORD(struct proto_ready, ready_f),
    [PROTO_RESULT] = RECORD(struct proto_result, result_f),
    [PROTO_WELCOME] = RECORD(struct proto_welcome, welcome_f),
    [PROTO_TASK] = RECORD(struct proto_task, task_f),
    [PROTO_SUBMIT] = RECORD(struct proto_submit, submit_f),
    [PROTO_SUBMITTED] = RECORD(struct proto_job_ref, job_ref_f),
    [PROTO_ERROR] = RECORD(struct proto_error, error_f),
    [PROTO_STATUS] = RECORD(struct proto_job_ref, status_f),
    [PROTO_STATUS_REPLY] = RECORD(struct proto_status_reply, status_reply_f),
    [PROTO_WATCH] = RECORD(struct proto_job_ref, job_ref_f),
    [PROTO_PROGRESS] = RECORD(struct proto_job_status, job_f),
    [PROTO_DONE] = RECORD(struct proto_done, done_f),
    [PROTO_CANCEL] = RECORD(struct proto_job_ref, job_ref_f),
    [PROTO_CANCELLED] = RECORD(struct proto_job_ref, job_ref_f),
    /* HEARTBEAT, BYE, SHUTDOWN: no fields */
};

/* Every union member starts here. */
static void *msg_body(proto_msg *m)
{
    return (char *)m + offsetof(proto_msg, hello);
}

/* Fill e with "MSG: field 'PATHNAME': DETAIL" and return code. */
static int field_fail(strata_err *e, int code, const char *msg, const char *path, const char *name,
                      const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static int field_fail(strata_err *e, int code, const char *msg, const char *path, const char *name,
                      const char *fmt, ...)
{
    char detail[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return err_set(e, code, "%s: field '%s%s': %s", msg, path, name, detail);
}

/* Up to 40 bytes of untrusted text, made printable, for error messages. */
static const char *printable(const char *s, size_t n, char out[44])
{
    size_t k = n > 40 ? 40 : n;
    for (size_t i = 0; i < k; i++)
        out[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    strcpy(out + k, n > 40 ? "..." : "");
    return out;
}

/* The tensor's size in bytes from dtype and shape; -1 on a bad dtype/ndim or overflow. */
static int tensor_bytes(const proto_tensor *t, uint64_t *bytes)
{
    uint64_t n = proto_dtype_size(t->dtype);
    if (n == 0 || t->ndim > PROTO_MAX_DIMS) return -1;
    for (uint32_t i = 0; i < t->ndim; i++)
        if (__builtin_mul_overflow(n, t->shape[i], &n)) return -1;
    *bytes = n;
    return 0;
}

/* The dtype's wire name. */
static const char *dtype_name(enum proto_dtype d)
{
    return d == PROTO_DTYPE_U8 ? "u8" : "f32";
}

/* ================================================================ encoding */

/* The growing output buffer. Writes past PROTO_MAX_FRAME fail at once, so a too-large message
 * never allocates more than the cap. The first error sticks; msgpack_pack_* calls after it are
 * no-ops, and the caller checks err once at the end. */
struct enc {
    msgpack_packer pk;
    char *data;
    size_t len, cap;
    int err;
    strata_err *e;
    const char *msg;
};

static int enc_write(void *data, const char *p, size_t n)
{
    struct enc *en = data;
    if (en->err) return -1;
    if (n > PROTO_MAX_FRAME - en->len) return en->err = ERR_TOO_LARGE, -1;
    if (n > en->cap - en->len) {
        size_t cap = en->cap * 2 > en->len + n ? en->cap * 2 : en->len + n;
        char *d = realloc(en->data, cap);
        if (!d) return en->err = ERR_NOMEM, -1;
        en->data = d, en->cap = cap;
    }
    memcpy(en->data + en->len, p, n);
    en->len += n;
    return 0;
}

static void enc_str(struct enc *en, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(&en->pk, n);
    msgpack_pack_str_body(&en->pk, s, n);
}

/* Check t (dtype, ndim, nbytes == prod(shape) * size) and pack it as {dtype, shape, data}. */
static int enc_tensor(struct enc *en, const proto_tensor *t, const char *path, const char *name)
{
    uint64_t want;
    if (tensor_bytes(t, &want) < 0)
        return field_fail(en->e, ERR_VALUE, en->msg, path, name,
                          "bad dtype (%d), ndim (%u) or shape", (int)t->dtype, t->ndim);
    if (want != t->nbytes || (!t->data && t->nbytes))
        return field_fail(en->e, ERR_VALUE, en->msg, path, name,
                          "%zu bytes of data, the shape needs %llu", t->nbytes,
                          (unsigned long long)want);
    msgpack_pack_map(&en->pk, 3);
    enc_str(en, "dtype");
    enc_str(en, dtype_name(t->dtype));
    enc_str(en, "shape");
    msgpack_pack_array(&en->pk, t->ndim);
    for (uint32_t i = 0; i < t->ndim; i++)
        msgpack_pack_uint64(&en->pk, t->shape[i]);
    enc_str(en, "data");
    msgpack_pack_bin(&en->pk, t->nbytes);
    msgpack_pack_bin_body(&en->pk, t->data, t->nbytes);
    return 0;
}

/* Check one params entry: a key of 1..PROTO_MAX_KEY bytes not used before, a known kind. */
static int enc_param_check(struct enc *en, const proto_params *p, uint32_t i, const char *path,
                           const char *name)
{
    const proto_param *q = &p->item[i];
    if (!q->key || !*q->key || strlen(q->key) > PROTO_MAX_KEY)
        return field_fail(en->e, ERR_VALUE, en->msg, path, name,
                          "entry %u: key empty, NULL or over %d bytes", i, PROTO_MAX_KEY);
    for (uint32_t j = 0; j < i; j++)
        if (strcmp(p->item[j].key, q->key) == 0)
            return field_fail(en->e, ERR_VALUE, en->msg, path, name, "duplicate key '%s'", q->key);
    if (q->kind < PROTO_PARAM_INT || q->kind > PROTO_PARAM_BOOL ||
        (q->kind == PROTO_PARAM_STR && !q->s))
        return field_fail(en->e, ERR_VALUE, en->msg, path, name,
                          "key '%s': bad kind or NULL string", q->key);
    return 0;
}

static int enc_params(struct enc *en, const proto_params *p, const char *path, const char *name)
{
    if (p->count > PROTO_MAX_PARAMS)
        return field_fail(en->e, ERR_TOO_LARGE, en->msg, path, name, "%u entries, at most %d",
                          p->count, PROTO_MAX_PARAMS);
    msgpack_pack_map(&en->pk, p->count);
    for (uint32_t i = 0; i < p->count; i++) {
        const proto_param *q = &p->item[i];
        int rc = enc_param_check(en, p, i, path, name);
        if (rc < 0) return rc;
        enc_str(en, q->key);
        switch (q->kind) {
        case PROTO_PARAM_INT:
            msgpack_pack_int64(&en->pk, q->i);
            break;
        case PROTO_PARAM_FLOAT:
            msgpack_pack_double(&en->pk, q->f);
            break;
        case PROTO_PARAM_STR:
            enc_str(en, q->s);
            break;
        case PROTO_PARAM_BOOL:
            q->b ? msgpack_pack_true(&en->pk) : msgpack_pack_false(&en->pk);
        }
    }
    return 0;
}

/* Whether a field is there: strings non-NULL, tensors with a dtype, params non-empty unless
 * required (an empty WELCOME config is still sent). */
static bool enc_present(const struct field *f, const char *base)
{
    const void *v = base + f->off;
    switch (f->kind) {
    case F_STR:
        return *(const char *const *)v != NULL;
    case F_TENSOR:
        return ((const proto_tensor *)v)->dtype != PROTO_DTYPE_NONE;
    case F_PARAMS:
        return f->required || ((const proto_params *)v)->count > 0;
    default:
        return true;
    }
}

static int enc_record(struct enc *en, const struct record *r, const char *base, const char *path,
                      const char *type);

/* Pack an array of records (jobs, levels); items may be NULL only when the count is 0. */
static int enc_array(struct enc *en, const struct field *f, const char *base, const char *path)
{
    uint32_t n = *(const uint32_t *)(base + f->off_n);
    const char *items = *(const char *const *)(base + f->off);
    if (n && !items)
        return field_fail(en->e, ERR_MISSING, en->msg, path, f->name, "%u items at NULL", n);
    msgpack_pack_array(&en->pk, n);
    for (uint32_t i = 0; i < n; i++) {
        char sub[PATH_MAX_LEN];
        snprintf(sub, sizeof sub, "%s%s[%u].", path, f->name, i);
        int rc = enc_record(en, f->sub, items + (size_t)i * f->sub->size, sub, NULL);
        if (rc < 0) return rc;
    }
    return 0;
}

/* Pack one field's value. */
static int enc_value(struct enc *en, const struct field *f, const char *base, const char *path)
{
    const void *v = base + f->off;
    switch (f->kind) {
    case F_U32:
        msgpack_pack_uint32(&en->pk, *(const uint32_t *)v);
        return 0;
    case F_U64:
        msgpack_pack_uint64(&en->pk, *(const uint64_t *)v);
        return 0;
    case F_I32:
        msgpack_pack_int32(&en->pk, *(const int32_t *)v);
        return 0;
    case F_BOOL:
        *(const bool *)v ? msgpack_pack_true(&en->pk) : msgpack_pack_false(&en->pk);
        return 0;
    case F_STR:
        enc_str(en, *(const char *const *)v);
        return 0;
    case F_TENSOR:
        return enc_tensor(en, v, path, f->name);
    case F_PARAMS:
        return enc_params(en, v, path, f->name);
    case F_ARRAY:
        return enc_array(en, f, base, path);
    }
    return 0;
}

/* Pack the record at base as a map; type non-NULL adds "v" and "type" (the top level). */
static int enc_record(struct enc *en, const struct record *r, const char *base, const char *path,
                      const char *type)
{
    size_t n = type ? 2 : 0;
    for (int i = 0; i < r->nfields; i++) {
        const struct field *f = &r->fields[i];
        if (enc_present(f, base))
            n++;
        else if (f->required)
            return field_fail(en->e, ERR_MISSING, en->msg, path, f->name, "missing");
    }
    msgpack_pack_map(&en->pk, n);
    if (type) {
        enc_str(en, "v");
        msgpack_pack_uint32(&en->pk, PROTO_VERSION);
        enc_str(en, "type");
        enc_str(en, type);
    }
    for (int i = 0; i < r->nfields; i++) {
        const struct field *f = &r->fields[i];
        if (!enc_present(f, base)) continue;
        enc_str(en, f->name);
        int rc = enc_value(en, f, base, path);
        if (rc < 0) return rc;
    }
    return 0;
}

/* Rules no table can say: RESULT carries output when ok, error when not. */
static int msg_check(const proto_msg *m, strata_err *e)
{
    if (m->type != PROTO_RESULT) return 0;
    if (m->result.ok && m->result.output.dtype == PROTO_DTYPE_NONE)
        return field_fail(e, ERR_MISSING, "RESULT", "", "output", "missing (ok is true)");
    if (!m->result.ok && !m->result.error)
        return field_fail(e, ERR_MISSING, "RESULT", "", "error", "missing (ok is false)");
    return 0;
}

int proto_encode(const proto_msg *m, void **out, size_t *len, strata_err *e)
{
    const char *type = proto_type_name(m->type);
    *out = NULL, *len = 0;
    if (!type) return err_set(e, ERR_ARG, "encode: unknown message type %d", m->type);
    struct enc en = {.e = e, .msg = type};
    msgpack_packer_init(&en.pk, &en, enc_write);
    int rc = msg_check(m, e);
    if (rc == 0)
        rc = enc_record(&en, &msg_records[m->type], (const char *)m + offsetof(proto_msg, hello),
                        "", type);
    if (rc == 0 && en.err == ERR_TOO_LARGE)
        rc = err_set(e, en.err, "%s: over the %zu-byte frame cap", type, (size_t)PROTO_MAX_FRAME);
    else if (rc == 0 && en.err)
        rc = err_set(e, en.err, "%s: out of memory while encoding", type);
    if (rc < 0) {
        free(en.data);
        return rc;
    }
    *out = en.data, *len = en.len;
    return 0;
}

/* ================================================================ decoding */

struct proto_msg_priv {
    msgpack_unpacked up; /* the object tree and its zone, which also holds our copies */
    const void *buf;     /* the frame, released with release(buf, hint) when owned */
    void (*release)(void *buf, void *hint);
    void *hint;
};

struct dec {
    msgpack_zone *z;
    strata_err *e;
    const char *msg; /* "TASK", or "message" until the type is known */
};

#define DEC_FAIL(d, code, path, name, ...)                                                         \
    field_fail((d)->e, code, (d)->msg, path, name, __VA_ARGS__)

/* Whether a str object equals the NUL-terminated name. */
static bool key_is(const msgpack_object *k, const char *name)
{
    return k->type == MSGPACK_OBJECT_STR && strlen(name) == k->via.str.size &&
           memcmp(k->via.str.ptr, name, k->via.str.size) == 0;
}

/* One pass over map: slots[i] = the value of the entry named fields[i].name, or NULL. Entries
 * with other keys (or non-string keys) are ignored; a known key twice is an error. */
static int dec_fields(struct dec *d, const msgpack_object_map *map, const struct field *fields,
                      int n, const msgpack_object **slots, const char *path)
{
    for (int i = 0; i < n; i++)
        slots[i] = NULL;
    for (uint32_t k = 0; k < map->size; k++) {
        for (int i = 0; i < n; i++) {
            if (!key_is(&map->ptr[k].key, fields[i].name)) continue;
            if (slots[i]) return DEC_FAIL(d, ERR_VALUE, path, fields[i].name, "duplicate key");
            slots[i] = &map->ptr[k].val;
            break;
        }
    }
    return 0;
}

/* Copy a str object into the zone, NUL-terminated; a NUL inside would truncate it silently. */
static int dec_str(struct dec *d, const msgpack_object *o, const char **out, const char *path,
                   const char *name)
{
    if (o->type != MSGPACK_OBJECT_STR)
        return DEC_FAIL(d, ERR_TYPE, path, name, "expected a string");
    size_t n = o->via.str.size;
    if (memchr(o->via.str.ptr, 0, n))
        return DEC_FAIL(d, ERR_VALUE, path, name, "string contains a NUL byte");
    char *s = msgpack_zone_malloc_no_align(d->z, n + 1);
    if (!s) return DEC_FAIL(d, ERR_NOMEM, path, name, "out of memory");
    memcpy(s, o->via.str.ptr, n);
    s[n] = 0;
    *out = s;
    return 0;
}

/* An unsigned integer no larger than max. */
static int dec_uint(struct dec *d, const msgpack_object *o, uint64_t max, uint64_t *out,
                    const char *path, const char *name)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return DEC_FAIL(d, ERR_TYPE, path, name, "expected an unsigned integer");
    if (o->via.u64 > max)
        return DEC_FAIL(d, ERR_VALUE, path, name, "%llu is out of range (at most %llu)",
                        (unsigned long long)o->via.u64, (unsigned long long)max);
    *out = o->via.u64;
    return 0;
}

static int dec_i32(struct dec *d, const msgpack_object *o, int32_t *out, const char *path,
                   const char *name)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT32_MAX)
        return *out = (int32_t)o->via.u64, 0;
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && o->via.i64 >= INT32_MIN)
        return *out = (int32_t)o->via.i64, 0;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER || o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return DEC_FAIL(d, ERR_VALUE, path, name, "out of the 32-bit range");
    return DEC_FAIL(d, ERR_TYPE, path, name, "expected an integer");
}

static const struct field tensor_f[] = {
    {"dtype", F_STR, true, 0, 0, NULL},
    {"shape", F_ARRAY, true, 0, 0, NULL},
    {"data", F_STR, true, 0, 0, NULL},
};

/* dtype "u8"/"f32" and shape (at most PROTO_MAX_DIMS unsigned integers) into t. */
static int dec_tensor_head(struct dec *d, const msgpack_object *dt, const msgpack_object *sh,
                           proto_tensor *t, const char *path)
{
    if (key_is(dt, "u8"))
        t->dtype = PROTO_DTYPE_U8;
    else if (key_is(dt, "f32"))
        t->dtype = PROTO_DTYPE_F32;
    else if (dt->type == MSGPACK_OBJECT_STR)
        return DEC_FAIL(d, ERR_VALUE, path, "dtype", "expected \"u8\" or \"f32\"");
    else
        return DEC_FAIL(d, ERR_TYPE, path, "dtype", "expected a string");
    if (sh->type != MSGPACK_OBJECT_ARRAY)
        return DEC_FAIL(d, ERR_TYPE, path, "shape", "expected an array");
    if (sh->via.array.size > PROTO_MAX_DIMS)
        return DEC_FAIL(d, ERR_TOO_LARGE, path, "shape", "%u dimensions, at most %d",
                        sh->via.array.size, PROTO_MAX_DIMS);
    t->ndim = sh->via.array.size;
    for (uint32_t i = 0; i < t->ndim; i++) {
        const msgpack_object *o = &sh->via.array.ptr[i];
        if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            return DEC_FAIL(d, ERR_TYPE, path, "shape", "expected unsigned integers");
        t->shape[i] = o->via.u64;
    }
    return 0;
}

/* {dtype, shape, data} into t; data stays in the frame (zero copy). */
static int dec_tensor(struct dec *d, const msgpack_object *o, proto_tensor *t, const char *path,
                      const char *name)
{
    const msgpack_object *s[3];
    char sub[PATH_MAX_LEN];
    snprintf(sub, sizeof sub, "%s%s.", path, name);
    if (o->type != MSGPACK_OBJECT_MAP)
        return DEC_FAIL(d, ERR_TYPE, path, name, "expected a map {dtype, shape, data}");
    int rc = dec_fields(d, &o->via.map, tensor_f, 3, s, sub);
    for (int i = 0; rc == 0 && i < 3; i++)
        if (!s[i]) rc = DEC_FAIL(d, ERR_MISSING, sub, tensor_f[i].name, "missing");
    if (rc == 0) rc = dec_tensor_head(d, s[0], s[1], t, sub);
    if (rc < 0) return rc;
    if (s[2]->type != MSGPACK_OBJECT_BIN)
        return DEC_FAIL(d, ERR_TYPE, sub, "data", "expected binary data");
    uint64_t want;
    if (tensor_bytes(t, &want) < 0)
        return DEC_FAIL(d, ERR_VALUE, sub, "shape", "the tensor's size overflows");
    if (want != s[2]->via.bin.size)
        return DEC_FAIL(d, ERR_VALUE, sub, "data", "%u bytes, the %s shape needs %llu",
                        s[2]->via.bin.size, dtype_name(t->dtype), (unsigned long long)want);
    t->data = s[2]->via.bin.ptr;
    t->nbytes = s[2]->via.bin.size;
    return 0;
}

/* One params value: int, float, str or bool. */
static int dec_param_value(struct dec *d, const msgpack_object *v, proto_param *q, const char *path,
                           const char *name)
{
    switch (v->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (v->via.u64 > INT64_MAX)
            return DEC_FAIL(d, ERR_VALUE, path, name, "integer out of the 64-bit range");
        q->kind = PROTO_PARAM_INT, q->i = (int64_t)v->via.u64;
        return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        q->kind = PROTO_PARAM_INT, q->i = v->via.i64;
        return 0;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        q->kind = PROTO_PARAM_FLOAT, q->f = v->via.f64;
        return 0;
    case MSGPACK_OBJECT_BOOLEAN:
        q->kind = PROTO_PARAM_BOOL, q->b = v->via.boolean;
        return 0;
    case MSGPACK_OBJECT_STR:
        q->kind = PROTO_PARAM_STR;
        return dec_str(d, v, &q->s, path, name);
    default:
        return DEC_FAIL(d, ERR_TYPE, path, name, "expected a number, string or bool");
    }
}

/* A string -> scalar map of at most PROTO_MAX_PARAMS entries, unique keys. */
static int dec_params(struct dec *d, const msgpack_object *o, proto_params *p, const char *path,
                      const char *name)
{
    char sub[PATH_MAX_LEN], pk[44];
    if (o->type != MSGPACK_OBJECT_MAP) return DEC_FAIL(d, ERR_TYPE, path, name, "expected a map");
    if (o->via.map.size > PROTO_MAX_PARAMS)
        return DEC_FAIL(d, ERR_TOO_LARGE, path, name, "%u entries, at most %d", o->via.map.size,
                        PROTO_MAX_PARAMS);
    snprintf(sub, sizeof sub, "%s%s.", path, name);
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR)
            return DEC_FAIL(d, ERR_TYPE, path, name, "keys must be strings");
        if (k->via.str.size == 0 || k->via.str.size > PROTO_MAX_KEY)
            return DEC_FAIL(d, ERR_VALUE, path, name, "key of %u bytes (1 to %d)", k->via.str.size,
                            PROTO_MAX_KEY);
        const char *key = printable(k->via.str.ptr, k->via.str.size, pk);
        int rc = dec_str(d, k, &p->item[i].key, sub, key);
        if (rc == 0) rc = dec_param_value(d, &o->via.map.ptr[i].val, &p->item[i], sub, key);
        if (rc < 0) return rc;
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(p->item[j].key, p->item[i].key) == 0)
                return DEC_FAIL(d, ERR_VALUE, sub, key, "duplicate key");
        p->count = i + 1;
    }
    return 0;
}

static int dec_record(struct dec *d, const struct record *r, const msgpack_object *o, char *base,
                      const char *path);

/* An array of records. Before allocating n items, each must be a map with at least as many
 * entries as the record has required fields, so that the items cost at most a few bytes per
 * object the frame really holds (and the pre-scan bounds the objects). */
static int dec_array(struct dec *d, const struct field *f, const msgpack_object *o, char *base,
                     const char *path)
{
    const struct record *r = f->sub;
    uint32_t nreq = 0, n;
    char name[PATH_MAX_LEN], sub[PATH_MAX_LEN];
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return DEC_FAIL(d, ERR_TYPE, path, f->name, "expected an array");
    for (int i = 0; i < r->nfields; i++)
        nreq += r->fields[i].required;
    n = o->via.array.size;
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *it = &o->via.array.ptr[i];
        if (it->type == MSGPACK_OBJECT_MAP && it->via.map.size >= nreq) continue;
        snprintf(name, sizeof name, "%s[%u]", f->name, i);
        snprintf(sub, sizeof sub, "%s%s.", path, name);
        if (it->type != MSGPACK_OBJECT_MAP)
            return DEC_FAIL(d, ERR_TYPE, path, name, "expected a map");
        /* too few entries: decoding it into scratch space names the first missing field */
        _Alignas(max_align_t) char scratch[SCRATCH_ITEM] = {0};
        int rc = dec_record(d, r, it, scratch, sub);
        return rc < 0 ? rc : DEC_FAIL(d, ERR_MISSING, path, name, "too few fields");
    }
    char *items = NULL;
    if (n && !(items = msgpack_zone_malloc(d->z, (size_t)n * r->size)))
        return DEC_FAIL(d, ERR_NOMEM, path, f->name, "out of memory");
    if (n) memset(items, 0, (size_t)n * r->size);
    for (uint32_t i = 0; i < n; i++) {
        snprintf(sub, sizeof sub, "%s%s[%u].", path, f->name, i);
        int rc = dec_record(d, r, &o->via.array.ptr[i], items + (size_t)i * r->size, sub);
        if (rc < 0) return rc;
    }
    *(const void **)(base + f->off) = items;
    *(uint32_t *)(base + f->off_n) = n;
    return 0;
}

/* Decode one field's value o into base. */
static int dec_value(struct dec *d, const struct field *f, const msgpack_object *o, char *base,
                     const char *path)
{
    void *v = base + f->off;
    uint64_t u;
    int rc;
    switch (f->kind) {
    case F_U32:
        if ((rc = dec_uint(d, o, UINT32_MAX, &u, path, f->name)) == 0) *(uint32_t *)v = (uint32_t)u;
        return rc;
    case F_U64:
        return dec_uint(d, o, UINT64_MAX, v, path, f->name);
    case F_I32:
        return dec_i32(d, o, v, path, f->name);
    case F_BOOL:
        if (o->type != MSGPACK_OBJECT_BOOLEAN)
            return DEC_FAIL(d, ERR_TYPE, path, f->name, "expected a boolean");
        *(bool *)v = o->via.boolean;
        return 0;
    case F_STR:
        return dec_str(d, o, v, path, f->name);
    case F_TENSOR:
        return dec_tensor(d, o, v, path, f->name);
    case F_PARAMS:
        return dec_params(d, o, v, path, f->name);
    case F_ARRAY:
        return dec_array(d, f, o, base, path);
    }
    return 0;
}

/* Decode the map o into the record at base: required fields present, every known field of the
 * right type, unknown fields ignored. */
static int dec_record(struct dec *d, const struct record *r, const msgpack_object *o, char *base,
                      const char *path)
{
    const msgpack_object *slots[MAX_FIELDS];
    int rc = dec_fields(d, &o->via.map, r->fields, r->nfields, slots, path);
    for (int i = 0; rc == 0 && i < r->nfields; i++) {
        if (slots[i])
            rc = dec_value(d, &r->fields[i], slots[i], base, path);
        else if (r->fields[i].required)
            rc = DEC_FAIL(d, ERR_MISSING, path, r->fields[i].name, "missing");
    }
    return rc;
}

static const struct field header_f[] = {
    {"v", F_U32, true, 0, 0, NULL},
    {"type", F_STR, true, 0, 0, NULL},
};

/* Read "v" (must be PROTO_VERSION) and "type" (a known name) from the top-level map. */
static int dec_header(struct dec *d, const msgpack_object *root, enum proto_type *type)
{
    const msgpack_object *s[2];
    uint64_t v;
    char shown[44];
    int rc = dec_fields(d, &root->via.map, header_f, 2, s, "");
    if (rc < 0) return rc;
    if (!s[0]) return DEC_FAIL(d, ERR_MISSING, "", "v", "missing");
    if ((rc = dec_uint(d, s[0], UINT64_MAX, &v, "", "v")) < 0) return rc;
    if (v != PROTO_VERSION)
        return err_set(d->e, ERR_VERSION,
                       "message: protocol version %llu, this build "
                       "speaks %d",
                       (unsigned long long)v, PROTO_VERSION);
    if (!s[1]) return DEC_FAIL(d, ERR_MISSING, "", "type", "missing");
    if (s[1]->type != MSGPACK_OBJECT_STR)
        return DEC_FAIL(d, ERR_TYPE, "", "type", "expected a string");
    for (int t = PROTO_NONE + 1; t < PROTO_TYPE_COUNT; t++)
        if (key_is(s[1], proto_type_name((enum proto_type)t))) return *type = t, 0;
    return err_set(d->e, ERR_UNKNOWN, "message: unknown type '%s'",
                   printable(s[1]->via.str.ptr, s[1]->via.str.size, shown));
}

/* Parse the checked frame with msgpack-c and decode it into m. */
static int dec_message(struct proto_msg_priv *p, size_t len, proto_msg *m, strata_err *e)
{
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack_next(&p->up, p->buf, len, &off);
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR) return err_set(e, ERR_NOMEM, "frame: out of memory");
    if (ur != MSGPACK_UNPACK_SUCCESS || off != len) /* cannot happen after proto_frame_check */
        return err_set(e, ERR_FRAME, "frame: msgpack-c rejects it (%d)", (int)ur);
    const msgpack_object *root = &p->up.data;
    if (root->type != MSGPACK_OBJECT_MAP)
        return err_set(e, ERR_FRAME, "frame: expected a map, got MessagePack type %d",
                       (int)root->type);
    struct dec d = {p->up.zone, e, "message"};
    enum proto_type type = PROTO_NONE;
    int rc = dec_header(&d, root, &type);
    if (rc < 0) return rc;
    d.msg = proto_type_name(type);
    m->type = type;
    if ((rc = dec_record(&d, &msg_records[type], root, msg_body(m), "")) < 0) return rc;
    return msg_check(m, e);
}

void proto_msg_free(proto_msg *m)
{
    if (!m) return;
    struct proto_msg_priv *p = m->priv_;
    if (p) {
        msgpack_unpacked_destroy(&p->up);
        if (p->release) p->release((void *)p->buf, p->hint);
        free(p);
    }
    memset(m, 0, sizeof *m);
}

int proto_decode_owned(const void *buf, size_t len, void (*release)(void *buf, void *hint),
                       void *hint, proto_msg *m, strata_err *e)
{
    memset(m, 0, sizeof *m);
    struct proto_msg_priv *p = calloc(1, sizeof *p);
    if (!p) {
        if (release) release((void *)buf, hint);
        return err_set(e, ERR_NOMEM, "frame: out of memory");
    }
    p->buf = buf, p->release = release, p->hint = hint;
    msgpack_unpacked_init(&p->up);
    m->priv_ = p;
    int rc = proto_frame_check(buf, len, e);
    if (rc == 0) rc = dec_message(p, len, m, e);
    if (rc < 0) proto_msg_free(m);
    return rc;
}

int proto_decode(const void *buf, size_t len, proto_msg *m, strata_err *e)
{
    return proto_decode_owned(buf, len, NULL, NULL, m, e);
}
