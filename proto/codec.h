/* Internal to proto/: the message tables the encoder (encode.c) and the decoder (decode.c) both
 * walk, so the two cannot drift. Each message type is a record: a table of fields whose wire
 * name is the C member's name (or given), walked the same way to encode and to decode. */
#ifndef STRATA_PROTO_CODEC_H
#define STRATA_PROTO_CODEC_H

#include "proto/proto.h"

#include <stdbool.h>
#include <stddef.h>

enum fkind {
    F_U32,    /* uint32_t */
    F_U64,    /* uint64_t */
    F_I32,    /* int32_t */
    F_F32,    /* float: sent as float64, read from an int or a float */
    F_BOOL,   /* bool */
    F_STR,    /* const char *, NULL when absent */
    F_KIND,   /* level_kind, sent as its name */
    F_TENSOR, /* proto_tensor, dtype NONE when absent */
    F_RECORD, /* a nested struct, sent as a map */
    F_ARRAY,  /* a pointer to items and a uint32_t count */
};

struct record;

struct field {
    const char *name;
    enum fkind kind;
    bool required;
    bool omit_zero;           /* optional numbers: left out when 0 (others are always sent) */
    size_t off;               /* of the value (F_ARRAY: of the items pointer) */
    size_t off_n;             /* F_ARRAY: of the uint32_t count */
    const struct record *sub; /* F_RECORD, F_ARRAY: the record of the value or the items */
};

struct record {
    const struct field *fields;
    int nfields;
    size_t size;                  /* of one item, for arrays */
    void (*preset)(void *record); /* before decoding: the defaults of optional fields, or NULL */
};

enum {
    CODEC_MAX_FIELDS = 16, /* most fields in one record */
    CODEC_PATH_MAX = 128,  /* longest field path in a message ("jobs[3].levels[1].name") */
    CODEC_SCRATCH = 64,    /* bytes of the largest array item (see decode.c, dec_array) */
};

/* The record of each message type; nfields 0 for those without fields. */
extern const struct record codec_messages[PROTO_TYPE_COUNT];

/* The union member of m all message bodies start at. */
void *codec_body(proto_msg *m);

/* Rules no table can say (RESULT carries output when ok, error when not): 0 or an error. */
int codec_check(const proto_msg *m, strata_err *e);

/* Fill e with "MSG: field 'PATHNAME': DETAIL" and return code. */
int codec_fail(strata_err *e, int code, const char *msg, const char *path, const char *name,
               const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* The tensor's size in bytes from dtype and shape; -1 on a bad dtype/ndim or overflow. */
int codec_tensor_bytes(const proto_tensor *t, uint64_t *bytes);

/* The dtype's wire name ("u8", "f32"). */
const char *codec_dtype_name(enum proto_dtype d);

#endif
