/* The encoder: a message's record (messages.c) walked into a MessagePack map by msgpack_packer,
 * into a growing buffer. It checks the message as strictly as the decoder would. */
#include "proto/codec.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "tensor data travels little-endian; a big-endian host needs a byte swap here");

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

#define ENC_FAIL(en, code, path, name, ...)                                                        \
    codec_fail((en)->e, code, (en)->msg, path, name, __VA_ARGS__)

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
    if (codec_tensor_bytes(t, &want) < 0)
        return ENC_FAIL(en, ERR_VALUE, path, name, "bad dtype (%d), ndim (%u) or shape",
                        (int)t->dtype, t->ndim);
    if (want != t->nbytes || (!t->data && t->nbytes))
        return ENC_FAIL(en, ERR_VALUE, path, name, "%zu bytes of data, the shape needs %llu",
                        t->nbytes, (unsigned long long)want);
    msgpack_pack_map(&en->pk, 3);
    enc_str(en, "dtype");
    enc_str(en, codec_dtype_name(t->dtype));
    enc_str(en, "shape");
    msgpack_pack_array(&en->pk, t->ndim);
    for (uint32_t i = 0; i < t->ndim; i++)
        msgpack_pack_uint64(&en->pk, t->shape[i]);
    enc_str(en, "data");
    msgpack_pack_bin(&en->pk, t->nbytes);
    msgpack_pack_bin_body(&en->pk, t->data, t->nbytes);
    return 0;
}

/* Whether a number field holds 0 (for omit_zero). */
static bool enc_is_zero(const struct field *f, const void *v)
{
    switch (f->kind) {
    case F_U32:
        return *(const uint32_t *)v == 0;
    case F_U64:
        return *(const uint64_t *)v == 0;
    case F_I32:
        return *(const int32_t *)v == 0;
    case F_F32:
        return *(const float *)v == 0.0f;
    case F_BOOL:
        return !*(const bool *)v;
    default:
        return false;
    }
}

/* Whether a field is sent: strings non-NULL, tensors with a dtype, optional records holding
 * something to send, omit_zero numbers non-zero, anything else always. */
static bool enc_present(const struct field *f, const char *base)
{
    const void *v = base + f->off;
    switch (f->kind) {
    case F_STR:
        return *(const char *const *)v != NULL;
    case F_TENSOR:
        return ((const proto_tensor *)v)->dtype != PROTO_DTYPE_NONE;
    case F_RECORD:
        for (int i = 0; !f->required && i < f->sub->nfields; i++)
            if (enc_present(&f->sub->fields[i], v)) return true;
        return f->required;
    default:
        return !f->omit_zero || !enc_is_zero(f, v);
    }
}

static int enc_record(struct enc *en, const struct record *r, const char *base, const char *path,
                      const char *type);

/* Pack an array of records (jobs, levels); items may be NULL only when the count is 0. */
static int enc_array(struct enc *en, const struct field *f, const char *base, const char *path)
{
    uint32_t n = *(const uint32_t *)(base + f->off_n);
    const char *items = *(const char *const *)(base + f->off);
    if (n && !items) return ENC_FAIL(en, ERR_MISSING, path, f->name, "%u items at NULL", n);
    msgpack_pack_array(&en->pk, n);
    for (uint32_t i = 0; i < n; i++) {
        char sub[CODEC_PATH_MAX];
        snprintf(sub, sizeof sub, "%s%s[%u].", path, f->name, i);
        int rc = enc_record(en, f->sub, items + (size_t)i * f->sub->size, sub, NULL);
        if (rc < 0) return rc;
    }
    return 0;
}

/* Pack a nested record as a map. */
static int enc_sub(struct enc *en, const struct field *f, const char *base, const char *path)
{
    char sub[CODEC_PATH_MAX];
    snprintf(sub, sizeof sub, "%s%s.", path, f->name);
    return enc_record(en, f->sub, base + f->off, sub, NULL);
}

/* A level kind as its name. */
static int enc_kind(struct enc *en, level_kind k, const char *path, const char *name)
{
    const char *s = level_kind_name(k);
    if (!s) return ENC_FAIL(en, ERR_VALUE, path, name, "not a level kind (%d)", (int)k);
    enc_str(en, s);
    return 0;
}

/* Pack one field's value. */
static int enc_value(struct enc *en, const struct field *f, const char *base, const char *path)
{
    const void *v = base + f->off;
    switch (f->kind) {
    case F_U32:
        return msgpack_pack_uint32(&en->pk, *(const uint32_t *)v), 0;
    case F_U64:
        return msgpack_pack_uint64(&en->pk, *(const uint64_t *)v), 0;
    case F_I32:
        return msgpack_pack_int32(&en->pk, *(const int32_t *)v), 0;
    case F_F32:
        return msgpack_pack_double(&en->pk, (double)*(const float *)v), 0;
    case F_BOOL:
        return (*(const bool *)v ? msgpack_pack_true(&en->pk) : msgpack_pack_false(&en->pk)), 0;
    case F_STR:
        return enc_str(en, *(const char *const *)v), 0;
    case F_KIND:
        return enc_kind(en, *(const level_kind *)v, path, f->name);
    case F_TENSOR:
        return enc_tensor(en, v, path, f->name);
    case F_RECORD:
        return enc_sub(en, f, base, path);
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
            return ENC_FAIL(en, ERR_MISSING, path, f->name, "missing");
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

int proto_encode(const proto_msg *m, void **out, size_t *len, strata_err *e)
{
    const char *type = proto_type_name(m->type);
    *out = NULL, *len = 0;
    if (!type) return err_set(e, ERR_ARG, "encode: unknown message type %d", m->type);
    struct enc en = {.e = e, .msg = type};
    msgpack_packer_init(&en.pk, &en, enc_write);
    int rc = codec_check(m, e);
    if (rc == 0)
        rc = enc_record(&en, &codec_messages[m->type], codec_body((proto_msg *)m), "", type);
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
