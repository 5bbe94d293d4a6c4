/* The messages: one table per message type, the single definition of each message's fields on
 * the wire (names, types, which are required), walked by the one encoder and the one decoder.
 * proto.h's opening comment is the same list for readers. */
#include "proto/codec.h"

#include <stdarg.h>
#include <stdio.h>

// clang-format off
/* Table rows: a required / optional field, an optional number left out when 0, a field whose
 * wire name differs from its member's, a nested record, an array of records; a record. */
#define REQ(T, m, k) {#m, k, true, false, offsetof(T, m), 0, NULL}
#define OPT(T, m, k) {#m, k, false, false, offsetof(T, m), 0, NULL}
#define OPTZ(T, m, k) {#m, k, false, true, offsetof(T, m), 0, NULL}
#define NAMED(T, m, wire, k) {wire, k, true, false, offsetof(T, m), 0, NULL}
#define SUB(T, m, req, r) {#m, F_RECORD, req, false, offsetof(T, m), 0, r}
#define ARR(T, m, n, r) {#m, F_ARRAY, true, false, offsetof(T, m), offsetof(T, n), r}
#define RECORD(T, f) {f, (int)(sizeof f / sizeof f[0]), sizeof(T), NULL}
#define RECORD_PRESET(T, f, p) {f, (int)(sizeof f / sizeof f[0]), sizeof(T), p}
// clang-format on

/* ---------------------------------------------------------------- worker <-> coordinator */

static const struct field hello_f[] = {
    REQ(struct proto_hello, worker, F_STR),     REQ(struct proto_hello, level, F_STR),
    REQ(struct proto_hello, slots, F_U32),      REQ(struct proto_hello, ranks, F_U32),
    REQ(struct proto_hello, pid, F_U32),        REQ(struct proto_hello, host, F_STR),
    OPT(struct proto_hello, model_hash, F_STR),
};
static const struct field ready_f[] = {
    REQ(struct proto_ready, capacity, F_U32),
    REQ(struct proto_ready, received, F_U32),
    OPTZ(struct proto_ready, draining, F_BOOL),
};
static const struct field result_f[] = {
    REQ(struct proto_result, task, F_U64),      REQ(struct proto_result, attempt, F_U32),
    REQ(struct proto_result, ok, F_BOOL),       OPT(struct proto_result, error, F_STR),
    OPT(struct proto_result, output, F_TENSOR), REQ(struct proto_result, elapsed_ms, F_U64),
    OPTZ(struct proto_result, cpu_us, F_U64),
};

/* The order is the wire order: the one the coordinator has always sent (less "model", the
 * coordinator's path, no longer sent: a worker finds its model itself). */
static const struct field level_config_f[] = {
    NAMED(proto_level_config, kind, "mode", F_KIND),
    REQ(proto_level_config, index, F_U32),
    REQ(proto_level_config, side, F_I32),
    REQ(proto_level_config, steps, F_I32),
    OPT(proto_level_config, sampler, F_STR),
    OPT(proto_level_config, eta, F_F32),
    OPT(proto_level_config, noise_level, F_I32),
    OPT(proto_level_config, guidance, F_F32),
    OPT(proto_level_config, tile, F_I32),
    OPT(proto_level_config, overlap, F_I32),
    OPT(proto_level_config, heartbeat_ms, F_I32),
    OPT(proto_level_config, liveness, F_I32),
    OPT(proto_level_config, tile_blend, F_STR),
    OPT(proto_level_config, model_hash, F_STR),
};

/* The defaults of level_config_f's optional fields (zero elsewhere). */
static void level_config_preset(void *record)
{
    proto_level_config *c = record;
    c->sampler = "";
    c->model_hash = "";
    c->guidance = 1.0f;
    c->heartbeat_ms = 1000;
    c->liveness = 3;
    c->tile_blend = "step";
}

static const struct record level_config_rec =
    RECORD_PRESET(proto_level_config, level_config_f, level_config_preset);
static const struct field welcome_f[] = {
    SUB(struct proto_welcome, config, true, &level_config_rec),
};

static const struct field task_params_f[] = {OPTZ(struct proto_task_params, resize, F_U32),
                                             OPTZ(struct proto_task_params, steps, F_U32),
                                             OPTZ(struct proto_task_params, direct, F_BOOL)};
static const struct record task_params_rec = RECORD(struct proto_task_params, task_params_f);
static const struct field task_f[] = {
    REQ(struct proto_task, task, F_U64),
    REQ(struct proto_task, attempt, F_U32),
    REQ(struct proto_task, job, F_STR),
    REQ(struct proto_task, image, F_U32),
    REQ(struct proto_task, seed, F_U64),
    REQ(struct proto_task, level, F_STR),
    REQ(struct proto_task, level_index, F_U32),
    REQ(struct proto_task, class_label, F_I32),
    OPT(struct proto_task, cond, F_TENSOR),
    SUB(struct proto_task, params, false, &task_params_rec),
};

/* ---------------------------------------------------------------- client <-> coordinator */

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
    OPT(struct proto_level_status, ranks, F_U32),
};
static const struct record level_rec = RECORD(struct proto_level_status, level_f);
static const struct field job_f[] = {
    REQ(struct proto_job_status, id, F_STR),
    REQ(struct proto_job_status, state, F_STR),
    REQ(struct proto_job_status, count, F_U32),
    REQ(struct proto_job_status, done, F_U32),
    REQ(struct proto_job_status, failed, F_U32),
    ARR(struct proto_job_status, levels, nlevels, &level_rec),
    OPT(struct proto_job_status, reason, F_STR),
};
static const struct record job_rec = RECORD(struct proto_job_status, job_f);
_Static_assert(sizeof(struct proto_job_status) <= CODEC_SCRATCH &&
                   sizeof(struct proto_level_status) <= CODEC_SCRATCH,
               "dec_array decodes a bad item into a scratch buffer of CODEC_SCRATCH bytes");
static const struct field status_reply_f[] = {
    ARR(struct proto_status_reply, jobs, njobs, &job_rec),
};
static const struct field done_f[] = {
    REQ(struct proto_done, job, F_STR),
    REQ(struct proto_done, state, F_STR),
};

const struct record codec_messages[PROTO_TYPE_COUNT] = {
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

/* ---------------------------------------------------------------- shared by both directions */

void *codec_body(proto_msg *m)
{
    return (char *)m + offsetof(proto_msg, hello);
}

int codec_check(const proto_msg *m, strata_err *e)
{
    if (m->type != PROTO_RESULT) return 0;
    if (m->result.ok && m->result.output.dtype == PROTO_DTYPE_NONE)
        return codec_fail(e, ERR_MISSING, "RESULT", "", "output", "missing (ok is true)");
    if (!m->result.ok && !m->result.error)
        return codec_fail(e, ERR_MISSING, "RESULT", "", "error", "missing (ok is false)");
    return 0;
}

int codec_fail(strata_err *e, int code, const char *msg, const char *path, const char *name,
               const char *fmt, ...)
{
    char detail[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return err_set(e, code, "%s: field '%s%s': %s", msg, path, name, detail);
}

int codec_tensor_bytes(const proto_tensor *t, uint64_t *bytes)
{
    uint64_t n = proto_dtype_size(t->dtype);
    if (n == 0 || t->ndim > PROTO_MAX_DIMS) return -1;
    for (uint32_t i = 0; i < t->ndim; i++)
        if (__builtin_mul_overflow(n, t->shape[i], &n)) return -1;
    *bytes = n;
    return 0;
}

const char *codec_dtype_name(enum proto_dtype d)
{
    return d == PROTO_DTYPE_U8 ? "u8" : "f32";
}
