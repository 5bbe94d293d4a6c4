/* The decoder: a frame checked by proto_frame_check (scan.c) is parsed by msgpack-c into an
 * object tree, which the message's record (messages.c) is walked over: required fields present,
 * every known field of the right type, unknown fields ignored, duplicates refused.
 *
 * Decoded storage: msgpack-c's tree and our copies of strings and arrays live in the one
 * msgpack_zone of the message (freed by proto_msg_free); tensor data is a view of the frame. */
#include "proto/codec.h"

#include <assert.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    codec_fail((d)->e, code, (d)->msg, path, name, __VA_ARGS__)

/* Up to 40 bytes of untrusted text, made printable, for error messages. */
static const char *printable(const char *s, size_t n, char out[44])
{
    size_t k = n > 40 ? 40 : n;
    for (size_t i = 0; i < k; i++)
        out[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    strcpy(out + k, n > 40 ? "..." : "");
    return out;
}

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
    {"dtype", F_STR, true, false, 0, 0, NULL},
    {"shape", F_ARRAY, true, false, 0, 0, NULL},
    {"data", F_STR, true, false, 0, 0, NULL},
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
    char sub[CODEC_PATH_MAX];
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
    if (codec_tensor_bytes(t, &want) < 0)
        return DEC_FAIL(d, ERR_VALUE, sub, "shape", "the tensor's size overflows");
    if (want != s[2]->via.bin.size)
        return DEC_FAIL(d, ERR_VALUE, sub, "data", "%u bytes, the %s shape needs %llu",
                        s[2]->via.bin.size, codec_dtype_name(t->dtype), (unsigned long long)want);
    t->data = s[2]->via.bin.ptr;
    t->nbytes = s[2]->via.bin.size;
    return 0;
}

/* A number (an int or a float) as a float. */
static int dec_f32(struct dec *d, const msgpack_object *o, float *out, const char *path,
                   const char *name)
{
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return *out = (float)o->via.u64, 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return *out = (float)o->via.i64, 0;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return *out = (float)o->via.f64, 0;
    default:
        return DEC_FAIL(d, ERR_TYPE, path, name, "expected a number");
    }
}

/* A level kind by its name. */
static int dec_kind(struct dec *d, const msgpack_object *o, level_kind *out, const char *path,
                    const char *name)
{
    char shown[44];
    if (o->type != MSGPACK_OBJECT_STR)
        return DEC_FAIL(d, ERR_TYPE, path, name, "expected a string");
    for (int k = 0; k < LEVEL_KIND_COUNT; k++)
        if (key_is(o, level_kind_name((level_kind)k))) return *out = (level_kind)k, 0;
    return DEC_FAIL(d, ERR_VALUE, path, name, "expected generate, refine or direct, got '%s'",
                    printable(o->via.str.ptr, o->via.str.size, shown));
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
    char name[CODEC_PATH_MAX], sub[CODEC_PATH_MAX];
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
        _Alignas(max_align_t) char scratch[CODEC_SCRATCH] = {0};
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

/* A nested record: o must be a map. */
static int dec_sub(struct dec *d, const struct field *f, const msgpack_object *o, char *v,
                   const char *path)
{
    char sub[CODEC_PATH_MAX];
    if (o->type != MSGPACK_OBJECT_MAP)
        return DEC_FAIL(d, ERR_TYPE, path, f->name, "expected a map");
    snprintf(sub, sizeof sub, "%s%s.", path, f->name);
    return dec_record(d, f->sub, o, v, sub);
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
    case F_F32:
        return dec_f32(d, o, v, path, f->name);
    case F_KIND:
        return dec_kind(d, o, v, path, f->name);
    case F_RECORD:
        return dec_sub(d, f, o, v, path);
    case F_ARRAY:
        return dec_array(d, f, o, base, path);
    }
    return 0;
}

/* Decode the map o into the record at base: required fields present, every known field of the
 * right type, unknown fields ignored, absent optional ones at their defaults (the preset). */
static int dec_record(struct dec *d, const struct record *r, const msgpack_object *o, char *base,
                      const char *path)
{
    const msgpack_object *slots[CODEC_MAX_FIELDS];
    assert(r->nfields <= CODEC_MAX_FIELDS);
    if (r->preset) r->preset(base);
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
    {"v", F_U32, true, false, 0, 0, NULL},
    {"type", F_STR, true, false, 0, 0, NULL},
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
    if ((rc = dec_record(&d, &codec_messages[type], root, codec_body(m), "")) < 0) return rc;
    return codec_check(m, e);
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
    if (rc < 0) { /* nothing held, but the type stays known (see proto_decode) */
        enum proto_type type = m->type;
        proto_msg_free(m);
        m->type = type;
    }
    return rc;
}

int proto_decode(const void *buf, size_t len, proto_msg *m, strata_err *e)
{
    return proto_decode_owned(buf, len, NULL, NULL, m, e);
}
