/* The wire codec (docs/design.md section 5): every message type round-trips; decoding is strict
 * (missing fields, wrong types, duplicates, bad tensors are errors naming the field) and bounded
 * (truncated frames, trailing bytes, huge declared counts, deep nesting and random bytes fail
 * cleanly, without big allocations). Frames are built with msgpack-c's packer where a test needs
 * a frame our encoder would refuse to make. */
#include "proto/proto.h"
#include "tests/test.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- helpers */

static void release_free(void *buf, void *hint)
{
    (void)hint;
    free(buf);
}

/* Encode in, decode into out (which owns the encoding). Returns the decode's code. */
static int roundtrip(const proto_msg *in, proto_msg *out, strata_err *e)
{
    void *buf;
    size_t len;
    int rc = proto_encode(in, &buf, &len, e);
    if (rc < 0) return rc;
    return proto_decode_owned(buf, len, release_free, NULL, out, e);
}

/* Decode a copy of buf[0..len) in a buffer of exactly len bytes (so ASan sees any over-read),
 * free the result and return the code; e gets the error. */
static int decode_copy(const void *buf, size_t len, strata_err *e)
{
    void *copy = malloc(len ? len : 1);
    memcpy(copy, buf, len);
    proto_msg m;
    int rc = proto_decode_owned(copy, len, release_free, NULL, &m, e);
    proto_msg_free(&m);
    return rc;
}

static int tensor_equal(const proto_tensor *a, const proto_tensor *b)
{
    if (a->dtype != b->dtype || a->ndim != b->ndim || a->nbytes != b->nbytes) return 0;
    for (uint32_t i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return a->nbytes == 0 || memcmp(a->data, b->data, a->nbytes) == 0;
}

static int streq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

/* A hand-packed frame. */
typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} mp;

static void mp_init(mp *m)
{
    msgpack_sbuffer_init(&m->sb);
    msgpack_packer_init(&m->pk, &m->sb, msgpack_sbuffer_write);
}

static void mp_str(mp *m, const char *s)
{
    msgpack_pack_str_with_body(&m->pk, s, strlen(s));
}

static void mp_kv_u(mp *m, const char *k, uint64_t v)
{
    mp_str(m, k);
    msgpack_pack_uint64(&m->pk, v);
}

static void mp_kv_s(mp *m, const char *k, const char *v)
{
    mp_str(m, k);
    mp_str(m, v);
}

/* A valid TASK without cond: leave out the field named skip, pack the field named bad as the
 * string "oops", and with extra add unknown fields (a nested map, an ext, nil) first. */
static void pack_task(mp *m, const char *skip, const char *bad, int extra)
{
    static const char *const names[] = {"task", "attempt", "job",         "image",
                                        "seed", "level",   "level_index", "class_label"};
    static const uint64_t vals[] = {7, 1, 0, 3, 42, 0, 2, 5};
    size_t n = 2 + 8 - (skip ? 1 : 0) + (extra ? 3 : 0);
    msgpack_pack_map(&m->pk, n);
    if (extra) {
        mp_str(m, "future");
        msgpack_pack_map(&m->pk, 1);
        mp_kv_s(m, "x", "y");
        mp_str(m, "blob");
        msgpack_pack_ext_with_body(&m->pk, "abc", 3, 5);
        mp_str(m, "nothing");
        msgpack_pack_nil(&m->pk);
    }
    mp_kv_u(m, "v", 1);
    mp_kv_s(m, "type", "TASK");
    for (int i = 0; i < 8; i++) {
        if (skip && strcmp(skip, names[i]) == 0) continue;
        if (bad && strcmp(bad, names[i]) == 0)
            mp_kv_s(m, names[i], "oops");
        else if (i == 2)
            mp_kv_s(m, "job", "job-1");
        else if (i == 5)
            mp_kv_s(m, "level", "l128");
        else
            mp_kv_u(m, names[i], vals[i]);
    }
}

/* Decode a hand-packed frame and free the sbuffer; returns the code. */
static int mp_decode(mp *m, proto_msg *out, strata_err *e)
{
    int rc = proto_decode_owned(m->sb.data, m->sb.size, release_free, NULL, out, e);
    m->sb.data = NULL; /* out owns it now */
    return rc;
}

/* ---------------------------------------------------------------- round trips */

TEST(proto_roundtrip_worker_messages)
{
    strata_err e = {0};
    proto_msg in = {.type = PROTO_HELLO}, out;
    in.hello = (struct proto_hello){.worker = "w-01",
                                    .level = "l32",
                                    .host = "node7",
                                    .model_hash = "sha256:abc",
                                    .slots = 4,
                                    .ranks = 2,
                                    .pid = 31337};
    CHECKF(roundtrip(&in, &out, &e) == 0, "%s", e.msg);
    CHECK(out.type == PROTO_HELLO && streq(out.hello.worker, "w-01") &&
          streq(out.hello.level, "l32") && streq(out.hello.host, "node7") &&
          streq(out.hello.model_hash, "sha256:abc") && out.hello.slots == 4 &&
          out.hello.ranks == 2 && out.hello.pid == 31337);
    proto_msg_free(&out);

    in = (proto_msg){.type = PROTO_READY, .ready = {.capacity = 3, .received = 7}};
    CHECKF(roundtrip(&in, &out, &e) == 0, "%s", e.msg);
    CHECK(out.type == PROTO_READY && out.ready.capacity == 3 && out.ready.received == 7 &&
          !out.ready.draining);
    proto_msg_free(&out);
    in = (proto_msg){.type = PROTO_READY, .ready = {.received = 9, .draining = true}};
    CHECKF(roundtrip(&in, &out, &e) == 0, "%s", e.msg);
    CHECK(out.type == PROTO_READY && out.ready.capacity == 0 && out.ready.received == 9 &&
          out.ready.draining);
    proto_msg_free(&out);

    float px[2 * 3 * 4];
    for (int i = 0; i < 24; i++)
        px[i] = (float)i * 0.25f - 1.0f;
    in = (proto_msg){.type = PROTO_RESULT};
    in.result = (struct proto_result){.task = 1ull << 40,
                                      .attempt = 2,
                                      .ok = true,
                                      .elapsed_ms = 1234,
                                      .cpu_us = 1234567,
                                      .output = {.dtype = PROTO_DTYPE_F32,
                                                 .ndim = 3,
                                                 .shape = {2, 3, 4},
                                                 .data = px,
                                                 .nbytes = sizeof px}};
    CHECKF(roundtrip(&in, &out, &e) == 0, "%s", e.msg);
    CHECK(out.type == PROTO_RESULT && out.result.task == 1ull << 40 && out.result.attempt == 2 &&
          out.result.ok && out.result.elapsed_ms == 1234 && out.result.error == NULL &&
          out.result.cpu_us == 1234567);
    CHECK(tensor_equal(&out.result.output, &in.result.output));
    proto_msg_free(&out);

    in.result = (struct proto_result){.task = 9, .attempt = 0, .ok = false, .error = "OOM"};
    CHECKF(roundtrip(&in, &out, &e) == 0, "%s", e.msg);
    CHECK(!out.result.ok && streq(out.result.error, "OOM") &&
          out.result.output.dtype == PROTO_DTYPE_NONE && out.result.cpu_us == 0);
    proto_msg_free(&out);

    enum proto_type empty[] = {PROTO_HEARTBEAT, PROTO_BYE, PROTO_SHUTDOWN};
    for (int i = 0; i < 3; i++) {
        in = (proto_msg){.type = empty[i]};
        CHECKF(roundtrip(&in, &out, &e) == 0, "%s", e.msg);
        CHECK(out.type == empty[i]);
        proto_msg_free(&out);
    }
}

TEST(proto_roundtrip_coordinator_messages)
{
    strata_err e = {0};
    proto_msg in = {.type = PROTO_WELCOME}, out;
    in.welcome.config = (proto_level_config){.kind = LEVEL_KIND_DIRECT,
                                             .index = 65535,
                                             .side = 4096,
                                             .steps = -3, /* ranges are the worker's to check */
                                             .sampler = "dpm++2m",
                                             .eta = 0.25f,
                                             .noise_level = 100,
                                             .guidance = 7.5f,
                                             .tile = 512,
                                             .overlap = 64,
                                             .heartbeat_ms = 600000,
                                             .liveness = 1};
    CHECKF(roundtrip(&in, &out, &e) == 0, "%s", e.msg);
    const proto_level_config *oc = &out.welcome.config, *ic = &in.welcome.config;
    CHECK(out.type == PROTO_WELCOME && oc->kind == LEVEL_KIND_DIRECT && oc->index == 65535 &&
          oc->side == 4096 && oc->steps == -3 && streq(oc->sampler, "dpm++2m"));
    CHECK(oc->eta == ic->eta && oc->noise_level == 100 && oc->guidance == ic->guidance &&
          oc->tile == 512 && oc->overlap == 64 && oc->heartbeat_ms == 600000 && oc->liveness == 1);
    proto_msg_free(&out);

    uint8_t cond[4 * 8 * 8];
    for (size_t i = 0; i < sizeof cond; i++)
        cond[i] = (uint8_t)(i * 7);
    in = (proto_msg){.type = PROTO_TASK};
    in.task = (struct proto_task){.task = UINT64_MAX,
                                  .attempt = UINT32_MAX,
                                  .job = "j-20240101-1",
                                  .image = 1999,
                                  .seed = 0xfedcba9876543210ull,
                                  .level = "l128",
                                  .level_index = 1,
                                  .class_label = -1,
                                  .cond = {.dtype = PROTO_DTYPE_U8,
                                           .ndim = 3,
                                           .shape = {4, 8, 8},
                                           .data = cond,
                                           .nbytes = sizeof cond}};
    in.task.params.resize = 20;
    in.task.params.steps = 7; /* a job's own sampling (budget_s, steps, direct) */
    in.task.params.direct = true;
    CHECKF(roundtrip(&in, &out, &e) == 0, "%s", e.msg);
    const struct proto_task *t = &out.task;
    CHECK(out.type == PROTO_TASK && t->task == UINT64_MAX && t->attempt == UINT32_MAX &&
          streq(t->job, "j-20240101-1") && t->image == 1999 && t->seed == 0xfedcba9876543210ull &&
          streq(t->level, "l128") && t->level_index == 1 && t->class_label == -1);
    CHECK(tensor_equal(&t->cond, &in.task.cond));
    CHECK(t->params.resize == 20 && t->params.steps == 7 && t->params.direct);
    proto_msg_free(&out);

    /* no cond, no params: both optional */
    in.task.cond = (proto_tensor){0};
    in.task.params = (struct proto_task_params){0};
    in.task.class_label = 12;
    CHECKF(roundtrip(&in, &out, &e) == 0, "%s", e.msg);
    CHECK(out.task.cond.dtype == PROTO_DTYPE_NONE && out.task.params.resize == 0 &&
          out.task.params.steps == 0 && !out.task.params.direct && out.task.class_label == 12);
    proto_msg_free(&out);
}

TEST(proto_roundtrip_empty_params_map_on_the_wire)
{
    /* an explicit empty params map (our encoder leaves it out) decodes as no resize */
    mp m;
    mp_init(&m);
    pack_task(&m, NULL, NULL, 0);
    /* patch the map header count (fixmap) and append params: {} */
    m.sb.data[0] = (char)(0x80 | 11);
    mp_str(&m, "params");
    msgpack_pack_map(&m.pk, 0);
    strata_err e = {0};
    proto_msg out;
    CHECKF(mp_decode(&m, &out, &e) == 0, "%s", e.msg);
    CHECK(out.task.params.resize == 0 && out.task.seed == 42 && streq(out.task.job, "job-1"));
    proto_msg_free(&out);
}

/* A STATUS_REPLY of two jobs, the second without levels and stalled (a reason). */
static const struct proto_level_status levels[] = {
    {"l32", 1, 2, 3, 0, 0}, {"l128", 4, 5, 6, 7, 1}, {"l512", 0, 0, UINT32_MAX, UINT64_MAX, 3}};
static const struct proto_job_status jobs[] = {
    {"job-a", "running", 100, 40, 1, 3, levels, NULL},
    {"job-b", "stalled", 5, 0, 0, 0, NULL, "cannot write /out/b: No space left on device"},
};

static int job_equal(const struct proto_job_status *a, const struct proto_job_status *b)
{
    if (!streq(a->id, b->id) || !streq(a->state, b->state) || a->count != b->count ||
        a->done != b->done || a->failed != b->failed || a->nlevels != b->nlevels ||
        !a->reason != !b->reason || (a->reason && !streq(a->reason, b->reason)))
        return 0;
    for (uint32_t i = 0; i < a->nlevels; i++) {
        const struct proto_level_status *x = &a->levels[i], *y = &b->levels[i];
        if (!streq(x->name, y->name) || x->queued != y->queued || x->running != y->running ||
            x->done != y->done || x->compute_ms != y->compute_ms || x->ranks != y->ranks)
            return 0;
    }
    return 1;
}

TEST(proto_roundtrip_client_messages)
{
    strata_err e = {0};
    proto_msg in, out;
    struct {
        enum proto_type type;
        const char *s;
    } refs[] = {{PROTO_SUBMITTED, "job-1"}, {PROTO_WATCH, "job-2"},  {PROTO_CANCEL, "job-3"},
                {PROTO_CANCELLED, "job-4"}, {PROTO_STATUS, "job-5"}, {PROTO_STATUS, NULL}};
    for (int i = 0; i < 6; i++) {
        in = (proto_msg){.type = refs[i].type, .watch.job = refs[i].s};
        CHECKF(roundtrip(&in, &out, &e) == 0, "%s", e.msg);
        CHECK(out.type == refs[i].type);
        CHECKF(refs[i].s ? streq(out.watch.job, refs[i].s) : out.status.job == NULL, "%d", i);
        proto_msg_free(&out);
    }

    const char *yaml = "pipeline: configs/pipelines/emoji.yaml\ncount: 2000\nseed: 0\n";
    in = (proto_msg){.type = PROTO_SUBMIT, .submit.spec = yaml};
    CHECKF(roundtrip(&in, &out, &e) == 0, "%s", e.msg);
    CHECK(streq(out.submit.spec, yaml));
    proto_msg_free(&out);

    in = (proto_msg){.type = PROTO_ERROR, .error.message = "job.yaml:3: count: expected int"};
    CHECKF(roundtrip(&in, &out, &e) == 0, "%s", e.msg);
    CHECK(streq(out.error.message, in.error.message));
    proto_msg_free(&out);

    in = (proto_msg){.type = PROTO_STATUS_REPLY, .status_reply = {2, jobs}};
    CHECKF(roundtrip(&in, &out, &e) == 0, "%s", e.msg);
    CHECK(out.status_reply.njobs == 2);
    CHECK(job_equal(&out.status_reply.jobs[0], &jobs[0]));
    CHECK(job_equal(&out.status_reply.jobs[1], &jobs[1]));
    proto_msg_free(&out);

    in = (proto_msg){.type = PROTO_STATUS_REPLY}; /* no jobs */
    CHECKF(roundtrip(&in, &out, &e) == 0, "%s", e.msg);
    CHECK(out.status_reply.njobs == 0 && out.status_reply.jobs == NULL);
    proto_msg_free(&out);

    in = (proto_msg){.type = PROTO_PROGRESS, .progress = jobs[0]};
    CHECKF(roundtrip(&in, &out, &e) == 0, "%s", e.msg);
    CHECK(job_equal(&out.progress, &jobs[0]));
    proto_msg_free(&out);

    in = (proto_msg){.type = PROTO_DONE, .done = {"job-a", "done"}};
    CHECKF(roundtrip(&in, &out, &e) == 0, "%s", e.msg);
    CHECK(streq(out.done.job, "job-a") && streq(out.done.state, "done"));
    proto_msg_free(&out);
}

/* ---------------------------------------------------------------- strictness */

TEST(proto_unknown_fields_ignored)
{
    mp m;
    mp_init(&m);
    pack_task(&m, NULL, NULL, 1);
    strata_err e = {0};
    proto_msg out;
    CHECKF(mp_decode(&m, &out, &e) == 0, "%s", e.msg);
    CHECK(out.type == PROTO_TASK && out.task.task == 7 && out.task.seed == 42 &&
          out.task.class_label == 5 && streq(out.task.level, "l128"));
    proto_msg_free(&out);
}

TEST(proto_missing_field_is_named)
{
    static const char *const fields[] = {"task", "attempt", "job",         "image",
                                         "seed", "level",   "level_index", "class_label"};
    for (int i = 0; i < 8; i++) {
        mp m;
        mp_init(&m);
        pack_task(&m, fields[i], NULL, 1);
        strata_err e = {0};
        proto_msg out;
        char want[128];
        snprintf(want, sizeof want, "TASK: field '%s': missing", fields[i]);
        CHECK(mp_decode(&m, &out, &e) == ERR_MISSING && e.code == ERR_MISSING);
        CHECKF(strcmp(e.msg, want) == 0, "got \"%s\"", e.msg);
        CHECK(out.type == PROTO_TASK && out.priv_ == NULL); /* nothing held; the type known */
        proto_msg_free(&out);
    }
}

TEST(proto_wrong_type_is_named)
{
    mp m;
    mp_init(&m);
    pack_task(&m, NULL, "seed", 0);
    strata_err e = {0};
    proto_msg out;
    CHECK(mp_decode(&m, &out, &e) == ERR_TYPE);
    CHECKF(strcmp(e.msg, "TASK: field 'seed': expected an unsigned integer") == 0, "%s", e.msg);

    mp_init(&m);
    pack_task(&m, NULL, "class_label", 0);
    CHECK(mp_decode(&m, &out, &e) == ERR_TYPE);
    CHECKF(strcmp(e.msg, "TASK: field 'class_label': expected an integer") == 0, "%s", e.msg);

    /* a uint field over 32 bits, and a negative one */
    mp_init(&m);
    msgpack_pack_map(&m.pk, 4);
    mp_kv_u(&m, "v", 1);
    mp_kv_s(&m, "type", "READY");
    mp_kv_u(&m, "capacity", 1ull << 32);
    mp_kv_u(&m, "received", 0);
    CHECK(mp_decode(&m, &out, &e) == ERR_VALUE);
    CHECKF(strstr(e.msg, "READY: field 'capacity': 4294967296 is out of range"), "%s", e.msg);
    mp_init(&m);
    msgpack_pack_map(&m.pk, 4);
    mp_kv_u(&m, "v", 1);
    mp_kv_s(&m, "type", "READY");
    mp_kv_u(&m, "capacity", 1);
    mp_str(&m, "received");
    msgpack_pack_int64(&m.pk, -1);
    CHECK(mp_decode(&m, &out, &e) == ERR_TYPE);
    /* READY as it was (credits only): its count of TASKs received is missing */
    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_kv_u(&m, "v", 1);
    mp_kv_s(&m, "type", "READY");
    mp_kv_u(&m, "credits", 1);
    CHECK(mp_decode(&m, &out, &e) == ERR_MISSING);
    CHECKF(strstr(e.msg, "READY: field 'capacity': missing"), "%s", e.msg);
    /* draining must be a bool */
    mp_init(&m);
    msgpack_pack_map(&m.pk, 5);
    mp_kv_u(&m, "v", 1);
    mp_kv_s(&m, "type", "READY");
    mp_kv_u(&m, "capacity", 0);
    mp_kv_u(&m, "received", 2);
    mp_kv_u(&m, "draining", 1);
    CHECK(mp_decode(&m, &out, &e) == ERR_TYPE);
    CHECKF(strstr(e.msg, "READY: field 'draining': expected"), "%s", e.msg);

    /* a nested field: the path names the item */
    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_kv_u(&m, "v", 1);
    mp_kv_s(&m, "type", "STATUS_REPLY");
    mp_str(&m, "jobs");
    msgpack_pack_array(&m.pk, 1);
    msgpack_pack_map(&m.pk, 6);
    mp_kv_s(&m, "id", "j");
    mp_kv_s(&m, "state", "running");
    mp_kv_u(&m, "count", 1);
    mp_kv_u(&m, "done", 0);
    mp_kv_u(&m, "failed", 0);
    mp_str(&m, "levels");
    msgpack_pack_array(&m.pk, 1);
    msgpack_pack_map(&m.pk, 4);
    mp_kv_s(&m, "name", "l32");
    mp_kv_s(&m, "queued", "many");
    mp_kv_u(&m, "running", 0);
    mp_kv_u(&m, "done", 0);
    CHECK(mp_decode(&m, &out, &e) == ERR_TYPE);
    CHECKF(strcmp(e.msg, "STATUS_REPLY: field 'jobs[0].levels[0].queued': expected an unsigned "
                         "integer") == 0,
           "%s", e.msg);
    proto_msg_free(&out);
}

TEST(proto_bad_array_items_are_named)
{
    strata_err e = {0};
    proto_msg out;
    mp m;
    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_kv_u(&m, "v", 1);
    mp_kv_s(&m, "type", "STATUS_REPLY");
    mp_str(&m, "jobs");
    msgpack_pack_array(&m.pk, 2);
    msgpack_pack_map(&m.pk, 6);
    mp_kv_s(&m, "id", "a");
    mp_kv_s(&m, "state", "done");
    mp_kv_u(&m, "count", 1);
    mp_kv_u(&m, "done", 1);
    mp_kv_u(&m, "failed", 0);
    mp_str(&m, "levels");
    msgpack_pack_array(&m.pk, 0);
    msgpack_pack_map(&m.pk, 2); /* too few fields for a job entry */
    mp_kv_s(&m, "id", "b");
    mp_kv_u(&m, "count", 1);
    CHECK(mp_decode(&m, &out, &e) == ERR_MISSING);
    CHECKF(strcmp(e.msg, "STATUS_REPLY: field 'jobs[1].state': missing") == 0, "%s", e.msg);

    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_kv_u(&m, "v", 1);
    mp_kv_s(&m, "type", "STATUS_REPLY");
    mp_str(&m, "jobs");
    msgpack_pack_array(&m.pk, 1);
    msgpack_pack_uint8(&m.pk, 5);
    CHECK(mp_decode(&m, &out, &e) == ERR_TYPE);
    CHECKF(strcmp(e.msg, "STATUS_REPLY: field 'jobs[0]': expected a map") == 0, "%s", e.msg);
    proto_msg_free(&out);
}

TEST(proto_duplicate_keys_and_nul_rejected)
{
    mp m;
    mp_init(&m);
    pack_task(&m, NULL, NULL, 0);
    m.sb.data[0] = (char)(0x80 | 11);
    mp_kv_u(&m, "seed", 43); /* a second seed: which one would the worker use? */
    strata_err e = {0};
    proto_msg out;
    CHECK(mp_decode(&m, &out, &e) == ERR_VALUE);
    CHECKF(strcmp(e.msg, "TASK: field 'seed': duplicate key") == 0, "%s", e.msg);

    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_kv_u(&m, "v", 1);
    mp_kv_s(&m, "type", "WATCH");
    mp_str(&m, "job");
    msgpack_pack_str_with_body(&m.pk, "a\0b", 3);
    CHECK(mp_decode(&m, &out, &e) == ERR_VALUE);
    CHECKF(strstr(e.msg, "'job': string contains a NUL byte"), "%s", e.msg);

    /* a nested map (WELCOME's config) with the same key twice */
    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_kv_u(&m, "v", 1);
    mp_kv_s(&m, "type", "WELCOME");
    mp_str(&m, "config");
    msgpack_pack_map(&m.pk, 2);
    mp_kv_u(&m, "steps", 1);
    mp_kv_u(&m, "steps", 2);
    CHECK(mp_decode(&m, &out, &e) == ERR_VALUE);
    CHECKF(strcmp(e.msg, "WELCOME: field 'config.steps': duplicate key") == 0, "%s", e.msg);
    proto_msg_free(&out);
}

TEST(proto_header_checks)
{
    strata_err e = {0};
    proto_msg out;
    mp m;
    mp_init(&m);
    msgpack_pack_map(&m.pk, 2);
    mp_kv_u(&m, "v", 2);
    mp_kv_s(&m, "type", "BYE");
    CHECK(mp_decode(&m, &out, &e) == ERR_VERSION);
    CHECK(out.type == PROTO_NONE); /* no type is known from a bad header */

    mp_init(&m);
    msgpack_pack_map(&m.pk, 1);
    mp_kv_s(&m, "type", "BYE");
    CHECK(mp_decode(&m, &out, &e) == ERR_MISSING);
    CHECKF(strcmp(e.msg, "message: field 'v': missing") == 0, "%s", e.msg);

    mp_init(&m);
    msgpack_pack_map(&m.pk, 2);
    mp_kv_u(&m, "v", 1);
    mp_kv_s(&m, "type", "bye\x01");
    CHECK(mp_decode(&m, &out, &e) == ERR_UNKNOWN);
    CHECKF(strcmp(e.msg, "message: unknown type 'bye?'") == 0, "%s", e.msg);

    mp_init(&m);
    msgpack_pack_array(&m.pk, 0);
    CHECK(mp_decode(&m, &out, &e) == ERR_FRAME);
    CHECK(proto_decode("", 0, &out, &e) == ERR_FRAME);
    proto_msg_free(&out);
}

/* A RESULT whose output tensor is {dtype, shape, data} as given. */
static void pack_result(mp *m, const char *dtype, int ndim, const uint64_t *shape, size_t nbytes)
{
    static const uint8_t zeros[64];
    msgpack_pack_map(&m->pk, 7);
    mp_kv_u(m, "v", 1);
    mp_kv_s(m, "type", "RESULT");
    mp_kv_u(m, "task", 1);
    mp_kv_u(m, "attempt", 0);
    mp_str(m, "ok");
    msgpack_pack_true(&m->pk);
    mp_kv_u(m, "elapsed_ms", 5);
    mp_str(m, "output");
    msgpack_pack_map(&m->pk, 3);
    mp_kv_s(m, "dtype", dtype);
    mp_str(m, "shape");
    msgpack_pack_array(&m->pk, (size_t)ndim);
    for (int i = 0; i < ndim; i++)
        msgpack_pack_uint64(&m->pk, shape[i]);
    mp_str(m, "data");
    msgpack_pack_bin_with_body(&m->pk, zeros, nbytes);
}

TEST(proto_tensor_checks)
{
    strata_err e = {0};
    proto_msg out;
    mp m;
    const uint64_t s2[] = {2, 3}, s5[] = {1, 1, 1, 1, 1}, big[] = {1ull << 40, 1ull << 40};
    mp_init(&m);
    pack_result(&m, "f32", 2, s2, 24);
    CHECKF(mp_decode(&m, &out, &e) == 0, "%s", e.msg);
    CHECK(out.result.output.nbytes == 24 && out.result.output.shape[1] == 3);
    proto_msg_free(&out);

    mp_init(&m);
    pack_result(&m, "f32", 2, s2, 23);
    CHECK(mp_decode(&m, &out, &e) == ERR_VALUE);
    CHECKF(strcmp(e.msg, "RESULT: field 'output.data': 23 bytes, the f32 shape needs 24") == 0,
           "%s", e.msg);
    mp_init(&m);
    pack_result(&m, "f16", 2, s2, 12);
    CHECK(mp_decode(&m, &out, &e) == ERR_VALUE);
    CHECKF(strstr(e.msg, "'output.dtype'"), "%s", e.msg);
    mp_init(&m);
    pack_result(&m, "u8", 5, s5, 1);
    CHECK(mp_decode(&m, &out, &e) == ERR_TOO_LARGE);
    mp_init(&m);
    pack_result(&m, "f32", 2, big, 4); /* 2^80 elements: the product overflows */
    CHECK(mp_decode(&m, &out, &e) == ERR_VALUE);
    CHECKF(strstr(e.msg, "overflows"), "%s", e.msg);
    mp_init(&m);
    pack_result(&m, "u8", 0, s2, 1); /* a scalar is one element */
    CHECKF(mp_decode(&m, &out, &e) == 0, "%s", e.msg);
    proto_msg_free(&out);

    /* the encoder refuses what the decoder would */
    float f[6] = {0};
    proto_msg in = {.type = PROTO_RESULT};
    in.result = (struct proto_result){
        .ok = true,
        .output = {.dtype = PROTO_DTYPE_F32, .ndim = 2, .shape = {2, 3}, .data = f, .nbytes = 20}};
    void *buf;
    size_t len;
    CHECK(proto_encode(&in, &buf, &len, &e) == ERR_VALUE && buf == NULL);
    CHECKF(strstr(e.msg, "RESULT: field 'output'"), "%s", e.msg);
    in.result.output = (proto_tensor){0};
    CHECK(proto_encode(&in, &buf, &len, &e) == ERR_MISSING);
    CHECKF(strcmp(e.msg, "RESULT: field 'output': missing (ok is true)") == 0, "%s", e.msg);
    in.result.ok = false;
    CHECK(proto_encode(&in, &buf, &len, &e) == ERR_MISSING);
    CHECKF(strcmp(e.msg, "RESULT: field 'error': missing (ok is false)") == 0, "%s", e.msg);
}

TEST(proto_encoder_checks)
{
    strata_err e = {0};
    void *buf;
    size_t len;
    proto_msg in = {.type = PROTO_TASK, .task = {.job = "j", .level = NULL}};
    CHECK(proto_encode(&in, &buf, &len, &e) == ERR_MISSING);
    CHECKF(strcmp(e.msg, "TASK: field 'level': missing") == 0, "%s", e.msg);
    in = (proto_msg){.type = (enum proto_type)99};
    CHECK(proto_encode(&in, &buf, &len, &e) == ERR_ARG);

    /* over the frame cap: refused while packing, before the data is read or copied */
    static uint8_t small[16];
    in = (proto_msg){.type = PROTO_RESULT};
    in.result = (struct proto_result){.ok = true,
                                      .output = {.dtype = PROTO_DTYPE_U8,
                                                 .ndim = 1,
                                                 .shape = {PROTO_MAX_FRAME},
                                                 .data = small,
                                                 .nbytes = PROTO_MAX_FRAME}};
    CHECK(proto_encode(&in, &buf, &len, &e) == ERR_TOO_LARGE && buf == NULL);

    /* WELCOME: a kind with a name */
    in = (proto_msg){.type = PROTO_WELCOME,
                     .welcome.config = {.kind = LEVEL_KIND_COUNT, .side = 32, .steps = 2}};
    CHECK(proto_encode(&in, &buf, &len, &e) == ERR_VALUE);
    CHECKF(strcmp(e.msg, "WELCOME: field 'config.mode': not a level kind (3)") == 0, "%s", e.msg);
}

/* ---------------------------------------------------------------- bounded decoding */

/* A few valid encodings to cut and mutate: TASK with cond and params, STATUS_REPLY, WELCOME. */
static int sample_frames(void *bufs[3], size_t lens[3])
{
    static uint8_t cond[3 * 4 * 4];
    proto_msg t = {.type = PROTO_TASK};
    t.task = (struct proto_task){.task = 77,
                                 .attempt = 1,
                                 .job = "job",
                                 .image = 5,
                                 .seed = 1234567890123ull,
                                 .level = "l128",
                                 .level_index = 1,
                                 .class_label = 3,
                                 .cond = {.dtype = PROTO_DTYPE_U8,
                                          .ndim = 3,
                                          .shape = {3, 4, 4},
                                          .data = cond,
                                          .nbytes = sizeof cond}};
    t.task.params.resize = 300;
    proto_msg s = {.type = PROTO_STATUS_REPLY, .status_reply = {2, jobs}};
    proto_msg w = {
        .type = PROTO_WELCOME,
        .welcome.config = {
            .kind = LEVEL_KIND_REFINE, .side = 128, .steps = 30, .sampler = "", .guidance = 1.5f}};
    const proto_msg *all[3] = {&t, &s, &w};
    for (int i = 0; i < 3; i++)
        if (proto_encode(all[i], &bufs[i], &lens[i], NULL) < 0) return -1;
    return 0;
}

TEST(proto_truncated_frames_fail_cleanly)
{
    void *bufs[3];
    size_t lens[3];
    CHECK(sample_frames(bufs, lens) == 0);
    for (int i = 0; i < 3; i++) {
        strata_err e = {0};
        CHECKF(decode_copy(bufs[i], lens[i], &e) == 0, "%s", e.msg);
        for (size_t n = 0; n < lens[i]; n++) {
            int rc = decode_copy(bufs[i], n, &e);
            CHECKF(rc == ERR_FRAME, "frame %d cut at %zu of %zu: %d %s", i, n, lens[i], rc, e.msg);
        }
        free(bufs[i]);
    }
}

TEST(proto_trailing_bytes_rejected)
{
    void *bufs[3];
    size_t lens[3];
    CHECK(sample_frames(bufs, lens) == 0);
    for (int i = 0; i < 3; i++) {
        uint8_t *b = realloc(bufs[i], lens[i] + 1);
        CHECK(b);
        b[lens[i]] = 0xc0; /* a complete nil after the map */
        strata_err e = {0};
        CHECK(decode_copy(b, lens[i] + 1, &e) == ERR_FRAME);
        CHECKF(strcmp(e.msg, "frame: 1 trailing bytes after the message") == 0, "%s", e.msg);
        free(b);
    }
}

TEST(proto_huge_declared_counts_do_not_allocate)
{
    /* Each of these, handed to msgpack-c directly, would make it allocate up to 96 GiB (or wait
     * for 4 GiB of data): the pre-scan must refuse them from the header alone. */
    static const struct {
        uint8_t b[16];
        size_t n;
        const char *want;
    } cases[] = {
        {{0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0},
         10,
         "frame: map of 4294967295 entries at byte 0, only 5 bytes left"},
        {{0xdd, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02, 0x03, 0x04, 0x05},
         10,
         "frame: array of 4294967295 entries at byte 0, only 5 bytes left"},
        {{0x81, 0xa1, 'x', 0xdd, 0x00, 0x01, 0x00, 0x00, 0xc0},
         9,
         "frame: array of 65536 entries at byte 3, only 1 bytes left"},
        /* a bin claiming 4 GiB, and a str */
        {{0x81, 0xa1, 'd', 0xc6, 0xff, 0xff, 0xff, 0xff, 0x00},
         9,
         "frame: truncated at byte 8 (4294967295 more bytes announced, 1 left)"},
        {{0xdb, 0xff, 0xff, 0xff, 0xf0, 'a'},
         6,
         "frame: truncated at byte 5 (4294967280 more bytes announced, 1 left)"},
        {{0xc1}, 1, "frame: reserved byte 0xc1 at byte 0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        strata_err e = {0};
        CHECK(decode_copy(cases[i].b, cases[i].n, &e) == ERR_FRAME);
        CHECKF(strcmp(e.msg, cases[i].want) == 0, "case %zu: %s", i, e.msg);
    }

    /* a RESULT whose output data bin claims 4 GiB inside an otherwise valid message */
    mp m;
    mp_init(&m);
    const uint64_t shape[] = {1u << 30};
    pack_result(&m, "f32", 1, shape, 0);
    m.sb.data[m.sb.size - 2] = (char)0xc6;               /* bin8 of length 0 becomes bin32 ... */
    msgpack_sbuffer_write(&m.sb, "\xff\xff\xff\xff", 4); /* ... of 4 GiB - 1 */
    m.sb.data[m.sb.size - 5] = (char)0xff;
    strata_err e = {0};
    CHECK(decode_copy(m.sb.data, m.sb.size, &e) == ERR_FRAME);
    CHECKF(strstr(e.msg, "truncated"), "%s", e.msg);
    msgpack_sbuffer_destroy(&m.sb);
}

TEST(proto_deep_nesting_rejected)
{
    enum { DEEP = 1000 };
    uint8_t b[DEEP + 1];
    memset(b, 0x91, DEEP); /* [[[[...]]]] */
    b[DEEP] = 0xc0;
    strata_err e = {0};
    CHECK(decode_copy(b, sizeof b, &e) == ERR_FRAME);
    CHECKF(strcmp(e.msg, "frame: nesting deeper than 8 at byte 8") == 0, "%s", e.msg);
    /* exactly PROTO_MAX_DEPTH levels pass the frame check; one more does not */
    CHECK(proto_frame_check(b + DEEP - PROTO_MAX_DEPTH, PROTO_MAX_DEPTH + 1, &e) == 0);
    CHECK(proto_frame_check(b + DEEP - PROTO_MAX_DEPTH - 1, PROTO_MAX_DEPTH + 2, &e) == ERR_FRAME);
    /* deep inside an otherwise valid message: an unknown field 9 levels down */
    mp m;
    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_kv_u(&m, "v", 1);
    mp_kv_s(&m, "type", "BYE");
    mp_str(&m, "x");
    msgpack_sbuffer_write(&m.sb, (const char *)b + DEEP - 8, 9);
    CHECK(decode_copy(m.sb.data, m.sb.size, &e) == ERR_FRAME);
    msgpack_sbuffer_destroy(&m.sb);
}

/* Every MessagePack type, packed by msgpack-c at each of its widths, inside an array16. */
static void pack_zoo(mp *m)
{
    static char blob[70000];
    const size_t sizes[] = {10, 40, 300, 70000};
    msgpack_pack_array(&m->pk, 3 + 8 + 2 + 8 + 4 + 4 + 4 + 4);
    msgpack_pack_nil(&m->pk), msgpack_pack_true(&m->pk), msgpack_pack_false(&m->pk);
    msgpack_pack_fix_uint8(&m->pk, 200), msgpack_pack_fix_uint16(&m->pk, 60000);
    msgpack_pack_fix_uint32(&m->pk, 1u << 31), msgpack_pack_fix_uint64(&m->pk, 1ull << 63);
    msgpack_pack_fix_int8(&m->pk, -100), msgpack_pack_fix_int16(&m->pk, -30000);
    msgpack_pack_fix_int32(&m->pk, -(1 << 30)), msgpack_pack_fix_int64(&m->pk, INT64_MIN);
    msgpack_pack_float(&m->pk, 1.5f), msgpack_pack_double(&m->pk, -2.25);
    for (int i = 0; i < 8; i++) /* fixext 1..16, ext 8/16/32 */
        msgpack_pack_ext_with_body(&m->pk, blob, (size_t[]){1, 2, 4, 8, 16, 3, 300, 70000}[i], 7);
    for (int i = 0; i < 4; i++)
        msgpack_pack_str_with_body(&m->pk, blob, sizes[i]);
    for (int i = 0; i < 4; i++)
        msgpack_pack_bin_with_body(&m->pk, blob, sizes[i]);
    for (int i = 0; i < 4; i++) { /* fixarray, array16, array32 (twice) */
        size_t n = (size_t[]){3, 20, 65536, 70000}[i];
        msgpack_pack_array(&m->pk, n);
        for (size_t k = 0; k < n; k++)
            msgpack_pack_fix_uint8(&m->pk, 1);
    }
    for (int i = 0; i < 4; i++) { /* fixmap, map16, map32 (twice) */
        size_t n = (size_t[]){3, 20, 65536, 70000}[i];
        msgpack_pack_map(&m->pk, n);
        for (size_t k = 0; k < n; k++)
            msgpack_pack_int8(&m->pk, -1), msgpack_pack_nil(&m->pk);
    }
}

TEST(proto_frame_check_knows_every_type)
{
    mp m;
    mp_init(&m);
    pack_zoo(&m);
    strata_err e = {0};
    CHECKF(proto_frame_check(m.sb.data, m.sb.size, &e) == 0, "%s", e.msg);
    /* msgpack-c agrees, object for object */
    msgpack_unpacked u;
    size_t off = 0;
    msgpack_unpacked_init(&u);
    CHECK(msgpack_unpack_next(&u, m.sb.data, m.sb.size, &off) == MSGPACK_UNPACK_SUCCESS);
    CHECK(off == m.sb.size && u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size == 37);
    msgpack_unpacked_destroy(&u);
    /* cut anywhere (a sample of places), it is truncated; one byte more, it has trailing bytes */
    for (size_t n = 0; n < m.sb.size; n += n < 64 ? 1 : 997) {
        CHECKF(proto_frame_check(m.sb.data, n, &e) == ERR_FRAME, "cut at %zu", n);
        CHECKF(n == 0 || strstr(e.msg, "truncated") || strstr(e.msg, "entries"), "%s", e.msg);
    }
    msgpack_sbuffer_write(&m.sb, "\xc0", 1);
    CHECK(proto_frame_check(m.sb.data, m.sb.size, &e) == ERR_FRAME);
    msgpack_sbuffer_destroy(&m.sb);
}

/* An array32 header of n entries at b. */
static void put_array32(uint8_t *b, size_t n)
{
    b[0] = 0xdd;
    for (int i = 0; i < 4; i++)
        b[1 + i] = (uint8_t)(n >> (24 - 8 * i));
}

TEST(proto_too_many_objects_rejected)
{
    /* an array of PROTO_MAX_OBJECTS nils is one object too many with its header */
    size_t n = PROTO_MAX_OBJECTS;
    uint8_t *b = malloc(n + 5);
    put_array32(b, n);
    memset(b + 5, 0xc0, n);
    strata_err e = {0};
    CHECK(proto_frame_check(b, n + 5, &e) == ERR_TOO_LARGE);
    CHECK(proto_frame_check(b, 5, &e) == ERR_FRAME);
    put_array32(b, n - 1); /* one fewer: fine as a frame, not as a message */
    CHECK(proto_frame_check(b, n + 4, &e) == 0);
    CHECK(decode_copy(b, n + 4, &e) == ERR_FRAME);
    free(b);
}

/* xorshift64*: a fixed-seed generator, so a failure reproduces. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12, *s ^= *s << 25, *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

TEST(proto_random_frames_never_crash)
{
    uint64_t s = 0x5eed5eed5eed5eedull;
    int n = test_quick() ? 2000 : 10000, decoded = 0;
    uint8_t buf[512];
    for (int i = 0; i < n; i++) {
        size_t len = rng_next(&s) % sizeof buf;
        for (size_t k = 0; k < len; k++)
            buf[k] = (uint8_t)rng_next(&s);
        if (len && i % 2) buf[0] = (uint8_t)(0x80 | (buf[0] & 0x0f)); /* start like a map */
        strata_err e = {0};
        int rc = decode_copy(buf, len, &e);
        CHECKF(rc == 0 || (rc < 0 && e.code == rc && e.msg[0]), "frame %d: %d", i, rc);
        CHECKF(!strstr(e.msg, "msgpack-c rejects"), "frame %d: the pre-scan passed it", i);
        decoded += rc == 0;
    }
    /* mutations of valid frames reach deeper into the decoder */
    void *bufs[3];
    size_t lens[3];
    CHECK(sample_frames(bufs, lens) == 0);
    for (int i = 0; i < n; i++) {
        int w = i % 3;
        uint8_t *b = malloc(lens[w]);
        memcpy(b, bufs[w], lens[w]);
        int flips = 1 + (int)(rng_next(&s) % 4);
        for (int f = 0; f < flips; f++) {
            size_t at = rng_next(&s) % lens[w];
            b[at] = rng_next(&s) % 2 ? (uint8_t)rng_next(&s) : (uint8_t)(b[at] ^ 1u << (at % 8));
        }
        strata_err e = {0};
        int rc = decode_copy(b, lens[w], &e);
        CHECKF(rc == 0 || (rc < 0 && e.code == rc && e.msg[0]), "mutation %d: %d", i, rc);
        CHECKF(!strstr(e.msg, "msgpack-c rejects"), "mutation %d: the pre-scan passed it", i);
        decoded += rc == 0;
        free(b);
    }
    for (int i = 0; i < 3; i++)
        free(bufs[i]);
    CHECK(decoded > 0); /* some mutations (in string bytes, say) still decode */
}

static int released;

static void count_release(void *buf, void *hint)
{
    (void)buf;
    (void)hint;
    released++;
}

TEST(proto_decode_owned_releases_once)
{
    void *bufs[3];
    size_t lens[3];
    CHECK(sample_frames(bufs, lens) == 0);
    proto_msg m;
    strata_err e = {0};
    released = 0;
    CHECK(proto_decode_owned(bufs[0], lens[0], count_release, NULL, &m, &e) == 0);
    const char *data = m.task.cond.data, *frame = bufs[0];
    CHECK(released == 0 && data > frame && data < frame + lens[0]); /* zero copy */
    proto_msg_free(&m);
    proto_msg_free(&m); /* freed messages are empty: a second free is harmless */
    CHECK(released == 1);
    CHECK(proto_decode_owned(bufs[0], lens[0] - 1, count_release, NULL, &m, &e) < 0);
    CHECK(released == 2 && m.priv_ == NULL);
    proto_msg_free(&m);
    proto_msg_free(NULL);
    CHECK(released == 2);
    for (int i = 0; i < 3; i++)
        free(bufs[i]);
}
