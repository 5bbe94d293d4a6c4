/* The level contract (proto/level.c, proto/messages.c): level kind names, the one planner, and
 * HELLO / WELCOME / TASK / RESULT as typed messages. WELCOME and TASK are byte for byte what the
 * coordinator sent before they were typed (string keys packed by hand), and each decoder names
 * every field it finds missing or ill-typed. */
#include "proto/proto.h"
#include "tests/test.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- level kinds */

TEST(proto_level_kind_names)
{
    static const char *const names[] = {"generate", "refine", "direct"};
    for (int k = 0; k < LEVEL_KIND_COUNT; k++) {
        level_kind got = LEVEL_KIND_COUNT;
        CHECK(!strcmp(level_kind_name((level_kind)k), names[k]));
        CHECK(level_kind_parse(names[k], &got) == 0 && got == (level_kind)k);
    }
    level_kind kept = LEVEL_KIND_REFINE;
    CHECK(level_kind_parse("Generate", &kept) == ERR_VALUE && kept == LEVEL_KIND_REFINE);
    CHECK(level_kind_parse("", &kept) == ERR_VALUE && level_kind_parse(NULL, &kept) == ERR_VALUE);
    CHECK(level_kind_name(LEVEL_KIND_COUNT) == NULL && level_kind_name((level_kind)-1) == NULL);
}

/* ---------------------------------------------------------------- the planner */

/* l32 generate, l128 refine, l512 direct. */
static pipeline_spec plan_pipeline(void)
{
    pipeline_spec p = {.path = "e.yaml", .name = "e", .nlevels = 3};
    static const char *const names[] = {"l32", "l128", "l512"};
    static const level_kind kinds[] = {LEVEL_KIND_GENERATE, LEVEL_KIND_REFINE, LEVEL_KIND_DIRECT};
    for (int i = 0; i < 3; i++) {
        snprintf(p.levels[i].name, sizeof p.levels[i].name, "%s", names[i]);
        p.levels[i].kind = kinds[i];
        p.levels[i].side = 32 << (2 * i);
    }
    return p;
}

TEST(proto_plan_picks_the_shortest_prefix)
{
    static const int cases[][2] = {{1, 1},   {16, 1},  {32, 1},   {33, 2},   {128, 2},
                                   {129, 3}, {512, 3}, {1000, 3}, {4096, 3}, {8192, 3}};
    pipeline_spec p = plan_pipeline();
    strata_err e = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pipeline_plan plan = {-1, -1};
        int r = pipeline_plan_levels(&p, cases[i][0], NULL, &plan, &e);
        CHECKF(r == 0 && plan.first == 0 && plan.end == cases[i][1], "resolution %d: r %d end %d",
               cases[i][0], r, plan.end);
    }
    pipeline_plan plan;
    CHECK(pipeline_plan_levels(&p, 0, "", &plan, &e) == ERR_INPUT);
    CHECKF(!strcmp(e.msg, "resolution: expected an integer 1..8192, got 0"), "%s", e.msg);
    CHECK(pipeline_plan_levels(&p, 8193, "", &plan, &e) == ERR_INPUT);
    p.nlevels = 0;
    CHECK(pipeline_plan_levels(&p, 32, "", &plan, &e) == ERR_INPUT);
    CHECKF(!strcmp(e.msg, "e.yaml: pipeline has 0 levels"), "%s", e.msg);
}

TEST(proto_plan_start_level)
{
    pipeline_spec p = plan_pipeline();
    pipeline_plan plan;
    strata_err e = {0};
    CHECK(pipeline_plan_levels(&p, 512, "l128", &plan, &e) == 0 && plan.first == 1 &&
          plan.end == 3);
    CHECK(pipeline_plan_levels(&p, 600, "l512", &plan, &e) == 0 && plan.first == 2 &&
          plan.end == 3);
    CHECK(pipeline_plan_levels(&p, 64, "", &plan, &e) == 0 && plan.first == 0 && plan.end == 2);
    CHECK(pipeline_plan_levels(&p, 64, "l64", &plan, &e) == ERR_INPUT);
    CHECKF(!strcmp(e.msg, "start_level: no level \"l64\" in pipeline e (levels: l32, l128, l512)"),
           "%s", e.msg);
    CHECK(pipeline_plan_levels(&p, 64, "l\n1", &plan, &e) == ERR_INPUT);
    CHECKF(!strcmp(e.msg, "start_level: no level \"l?1\" in pipeline e (levels: l32, l128, l512)"),
           "%s", e.msg);
    CHECK(pipeline_plan_levels(&p, 64, "l32", &plan, &e) == ERR_INPUT);
    CHECKF(!strcmp(e.msg, "start_level: l32 is a generate level; start at a refine or direct level "
                          "(its input is init_images)"),
           "%s", e.msg);
    CHECK(pipeline_plan_levels(&p, 64, "l512", &plan, &e) == ERR_INPUT);
    CHECKF(!strcmp(e.msg, "start_level: l512 is past the levels planned for resolution 64 (l32 "
                          "to l128)"),
           "%s", e.msg);
}

/* ---------------------------------------------------------------- the bytes on the wire */

static void pk_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* WELCOME as the coordinator packed it when its config was a hand-written string map, less the
 * "model" path it sent first (a worker now finds its model itself). */
static void pack_old_welcome(msgpack_packer *pk, const proto_level_config *c)
{
    msgpack_pack_map(pk, 3);
    pk_str(pk, "v");
    msgpack_pack_uint32(pk, 1);
    pk_str(pk, "type");
    pk_str(pk, "WELCOME");
    pk_str(pk, "config");
    msgpack_pack_map(pk, 12);
    pk_str(pk, "mode"), pk_str(pk, level_kind_name(c->kind));
    pk_str(pk, "index"), msgpack_pack_int64(pk, c->index);
    pk_str(pk, "side"), msgpack_pack_int64(pk, c->side);
    pk_str(pk, "steps"), msgpack_pack_int64(pk, c->steps);
    pk_str(pk, "sampler"), pk_str(pk, c->sampler);
    pk_str(pk, "eta"), msgpack_pack_double(pk, c->eta);
    pk_str(pk, "noise_level"), msgpack_pack_int64(pk, c->noise_level);
    pk_str(pk, "guidance"), msgpack_pack_double(pk, c->guidance);
    pk_str(pk, "tile"), msgpack_pack_int64(pk, c->tile);
    pk_str(pk, "overlap"), msgpack_pack_int64(pk, c->overlap);
    pk_str(pk, "heartbeat_ms"), msgpack_pack_int64(pk, c->heartbeat_ms);
    pk_str(pk, "liveness"), msgpack_pack_int64(pk, c->liveness);
}

/* TASK (no cond) as the coordinator packed it, "resize" a hand-written params key. */
static void pack_old_task(msgpack_packer *pk, const struct proto_task *t)
{
    msgpack_pack_map(pk, 10 + (t->params.resize != 0));
    pk_str(pk, "v"), msgpack_pack_uint32(pk, 1);
    pk_str(pk, "type"), pk_str(pk, "TASK");
    pk_str(pk, "task"), msgpack_pack_uint64(pk, t->task);
    pk_str(pk, "attempt"), msgpack_pack_uint32(pk, t->attempt);
    pk_str(pk, "job"), pk_str(pk, t->job);
    pk_str(pk, "image"), msgpack_pack_uint32(pk, t->image);
    pk_str(pk, "seed"), msgpack_pack_uint64(pk, t->seed);
    pk_str(pk, "level"), pk_str(pk, t->level);
    pk_str(pk, "level_index"), msgpack_pack_uint32(pk, t->level_index);
    pk_str(pk, "class_label"), msgpack_pack_int32(pk, t->class_label);
    if (!t->params.resize) return;
    pk_str(pk, "params");
    msgpack_pack_map(pk, 1);
    pk_str(pk, "resize"), msgpack_pack_int64(pk, t->params.resize);
}

/* Whether m encodes to exactly the bytes in sb. */
static int same_bytes(const proto_msg *m, const msgpack_sbuffer *sb)
{
    void *buf;
    size_t len;
    if (proto_encode(m, &buf, &len, NULL) < 0) return 0;
    int same = len == sb->size && !memcmp(buf, sb->data, len);
    free(buf);
    return same;
}

TEST(proto_welcome_and_task_bytes_unchanged)
{
    /* values across the widths MessagePack picks between (fixint, uint8/16/32, negative) */
    static const proto_level_config configs[] = {
        /* tile_blend and model_hash NULL: the coordinator before it, which never sent them */
        {LEVEL_KIND_GENERATE, 0, 32, 50, "", 0.0f, 0, 1.0f, 0, 0, 1000, 3, NULL, NULL},
        {LEVEL_KIND_REFINE, 1, 128, 200, "ddim", 0.5f, 250, 7.5f, 64, 8, 60000, 10, NULL, NULL},
        {LEVEL_KIND_DIRECT, 300, 8192, 0, "dpm++2m", 1.0f, 999, 1.0f, 4096, 255, 10, 1000, NULL,
         NULL},
    };
    for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        pack_old_welcome(&pk, &configs[i]);
        proto_msg m = {.type = PROTO_WELCOME, .welcome.config = configs[i]};
        CHECKF(same_bytes(&m, &sb), "WELCOME %zu differs", i);
        msgpack_sbuffer_destroy(&sb);
    }
    static const struct proto_task tasks[] = {
        {1, 1, "job-1", 0, 0, "l32", 0, -1, {0}, {0}},
        {1ull << 40, 70000, "j", 65536, UINT64_MAX, "l512", 2, 1000, {0}, {.resize = 512}},
        {77, 2, "job-x", 255, 12345, "l128", 1, -200, {0}, {.resize = 100}},
    };
    for (size_t i = 0; i < sizeof tasks / sizeof tasks[0]; i++) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        pack_old_task(&pk, &tasks[i]);
        proto_msg m = {.type = PROTO_TASK, .task = tasks[i]};
        CHECKF(same_bytes(&m, &sb), "TASK %zu differs", i);
        msgpack_sbuffer_destroy(&sb);
    }
}

TEST(proto_welcome_optional_fields_default)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    pk_str(&pk, "v"), msgpack_pack_uint32(&pk, 1);
    pk_str(&pk, "type"), pk_str(&pk, "WELCOME");
    pk_str(&pk, "config");
    msgpack_pack_map(&pk, 6);
    pk_str(&pk, "model"), pk_str(&pk, "m"); /* an older coordinator's path: ignored */
    pk_str(&pk, "mode"), pk_str(&pk, "refine");
    pk_str(&pk, "index"), msgpack_pack_uint32(&pk, 1);
    pk_str(&pk, "side"), msgpack_pack_uint32(&pk, 64);
    pk_str(&pk, "steps"), msgpack_pack_uint32(&pk, 4);
    pk_str(&pk, "guidance"), msgpack_pack_uint32(&pk, 3); /* a number may come as an int */
    proto_msg m;
    strata_err e = {0};
    CHECKF(proto_decode(sb.data, sb.size, &m, &e) == 0, "%s", e.msg);
    const proto_level_config *c = &m.welcome.config;
    CHECK(c->kind == LEVEL_KIND_REFINE && c->index == 1 && c->side == 64 && c->steps == 4);
    CHECK(c->sampler && !*c->sampler && c->eta == 0.0f && c->noise_level == 0 && c->tile == 0);
    CHECK(c->guidance == 3.0f && c->heartbeat_ms == 1000 && c->liveness == 3);
    CHECK(c->tile_blend && !strcmp(c->tile_blend, "step"));
    proto_msg_free(&m);
    msgpack_sbuffer_destroy(&sb);
}

/* ---------------------------------------------------------------- each field named */

enum edit { EDIT_DROP, EDIT_NIL };

/* Pack o with the map entry at path ("config.side") dropped or its value made nil. */
static void repack(msgpack_packer *pk, const msgpack_object *o, const char *prefix,
                   const char *target, enum edit how)
{
    if (o->type != MSGPACK_OBJECT_MAP) {
        msgpack_pack_object(pk, *o);
        return;
    }
    char path[128];
    uint32_t n = o->via.map.size;
    for (uint32_t i = 0; how == EDIT_DROP && i < o->via.map.size; i++) {
        const msgpack_object_str *k = &o->via.map.ptr[i].key.via.str;
        snprintf(path, sizeof path, "%s%.*s", prefix, (int)k->size, k->ptr);
        n -= !strcmp(path, target);
    }
    msgpack_pack_map(pk, n);
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        snprintf(path, sizeof path, "%s%.*s", prefix, (int)kv->key.via.str.size,
                 kv->key.via.str.ptr);
        if (!strcmp(path, target) && how == EDIT_DROP) continue;
        msgpack_pack_object(pk, kv->key);
        if (!strcmp(path, target)) {
            msgpack_pack_nil(pk);
            continue;
        }
        char sub[130];
        snprintf(sub, sizeof sub, "%s.", path);
        repack(pk, &kv->val, sub, target, how);
    }
}

/* Every key path of the maps in o, "a b.c ..." (v and type left out). */
static void list_paths(const msgpack_object *o, const char *prefix, char *out, size_t cap)
{
    for (uint32_t i = 0; o->type == MSGPACK_OBJECT_MAP && i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        char path[128];
        snprintf(path, sizeof path, "%s%.*s", prefix, (int)kv->key.via.str.size,
                 kv->key.via.str.ptr);
        if (!strcmp(path, "v") || !strcmp(path, "type")) continue;
        size_t len = strlen(out);
        snprintf(out + len, cap - len, "%s%s", len ? " " : "", path);
        strcat(path, ".");
        list_paths(&kv->val, path, out, cap);
    }
}

/* " a b c " contains word. */
static int has_word(const char *words, const char *word)
{
    char w[140];
    snprintf(w, sizeof w, " %s ", word);
    return strstr(words, w) != NULL;
}

/* Encode m; its wire fields must be exactly `fields`. Then for each field: made nil, decoding
 * fails with ERR_TYPE naming it; dropped, decoding fails with ERR_MISSING naming it when it is
 * in `required`, and succeeds otherwise. Returns 0, or -1 with why. */
static int check_fields(const proto_msg *m, const char *fields, const char *required, char *why,
                        size_t whylen)
{
    void *buf;
    size_t len;
    char paths[1024] = "", all[1100], want[160];
    if (proto_encode(m, &buf, &len, NULL) < 0) return snprintf(why, whylen, "encode"), -1;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    msgpack_unpack_next(&up, buf, len, NULL);
    list_paths(&up.data, "", paths, sizeof paths);
    int rc = strcmp(paths, fields) ? -1 : 0;
    if (rc) snprintf(why, whylen, "fields \"%s\", want \"%s\"", paths, fields);
    snprintf(all, sizeof all, " %s ", required);
    for (char *p = strtok(paths, " "); !rc && p; p = strtok(NULL, " ")) {
        for (int how = EDIT_DROP; !rc && how <= EDIT_NIL; how++) {
            msgpack_sbuffer sb;
            msgpack_packer pk;
            msgpack_sbuffer_init(&sb);
            msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
            repack(&pk, &up.data, "", p, (enum edit)how);
            proto_msg out;
            strata_err e = {0};
            int got = proto_decode(sb.data, sb.size, &out, &e);
            int want_rc = how == EDIT_NIL ? ERR_TYPE : has_word(all, p) ? ERR_MISSING : 0;
            snprintf(want, sizeof want, "%s: field '%s': %s", proto_type_name(m->type), p,
                     how == EDIT_NIL ? "" : "missing");
            if (got != want_rc ||
                (got && (strncmp(e.msg, want, strlen(want)) || out.type != m->type)))
                rc = -1, snprintf(why, whylen, "%s %s: rc %d, \"%s\"", p,
                                  how == EDIT_NIL ? "nil" : "dropped", got, e.msg);
            proto_msg_free(&out);
            msgpack_sbuffer_destroy(&sb);
        }
    }
    msgpack_unpacked_destroy(&up);
    free(buf);
    return rc;
}

TEST(proto_contract_decoders_name_each_field)
{
    static const uint8_t px[2 * 2 * 3];
    const proto_tensor img = {PROTO_DTYPE_U8, 3, {2, 2, 3}, px, sizeof px};
    proto_msg hello = {.type = PROTO_HELLO, .hello = {"w", "l32", "host", "sha256:1", 1, 1, 42}};
    proto_msg welcome = {.type = PROTO_WELCOME,
                         .welcome.config = {LEVEL_KIND_REFINE, 1, 64, 4, "ddim", 0.5f, 10, 2.0f, 32,
                                            8, 1000, 3, "finished"}};
    proto_msg task = {.type = PROTO_TASK,
                      .task = {7, 1, "job", 3, 42, "l128", 1, -1, img, {.resize = 100}}};
    proto_msg ok = {.type = PROTO_RESULT, .result = {.task = 7, .ok = true, .output = img}};
    proto_msg failed = {.type = PROTO_RESULT, .result = {.task = 7, .error = "OOM"}};
    static const char *const cases[][2] = {
        {"worker level slots ranks pid host model_hash", "worker level slots ranks pid host"},
        {"config config.mode config.index config.side config.steps config.sampler "
         "config.eta config.noise_level config.guidance config.tile config.overlap "
         "config.heartbeat_ms config.liveness config.tile_blend",
         "config config.mode config.index config.side config.steps"},
        {"task attempt job image seed level level_index class_label cond cond.dtype cond.shape "
         "cond.data params params.resize",
         "task attempt job image seed level level_index class_label cond.dtype cond.shape "
         "cond.data"},
        {"task attempt ok output output.dtype output.shape output.data elapsed_ms",
         "task attempt ok output output.dtype output.shape output.data elapsed_ms"},
        {"task attempt ok error elapsed_ms", "task attempt ok error elapsed_ms"},
    };
    const proto_msg *msgs[] = {&hello, &welcome, &task, &ok, &failed};
    for (int i = 0; i < 5; i++) {
        char why[512] = "";
        CHECKF(check_fields(msgs[i], cases[i][0], cases[i][1], why, sizeof why) == 0, "%s: %s",
               proto_type_name(msgs[i]->type), why);
    }
}
