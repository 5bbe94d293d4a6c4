/* Pipeline, job and coordinator YAML loading: the shipped files load (and their jobs plan),
 * every rule gives its exact "FILE:LINE: FIELD: message", and malformed input (syntax errors,
 * huge or deep documents, truncations, random mutations) never crashes. The planner's own tests
 * are in tests/proto/test_contract.c. */
#include "cluster/config.h"
#include "kernels/kernels.h"
#include "tests/test.h"

#include <glob.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TINY "configs/pipelines/test-tiny.yaml"
#define EXAMPLE_JOB "configs/jobs/example.yaml"

/* A 2-level pipeline; the line numbers in the cases below refer to it. */
static const char base_pipeline[] = "name: t\n"            /* 1 */
                                    "levels:\n"            /* 2 */
                                    "  - name: l32\n"      /* 3 */
                                    "    kind: generate\n" /* 4 */
                                    "    model: m32\n"     /* 5 */
                                    "    side: 32\n"       /* 6 */
                                    "    steps: 50\n"      /* 7 */
                                    "  - name: l128\n"     /* 8 */
                                    "    kind: refine\n"   /* 9 */
                                    "    model: m128\n"    /* 10 */
                                    "    side: 128\n"      /* 11 */
                                    "    steps: 30\n";     /* 12 */

static const char base_job[] = "pipeline: p.yaml\n" /* 1 */
                               "count: 3\n"         /* 2 */
                               "seed: 7\n"          /* 3 */
                               "resolution: 64\n";  /* 4 */

/* base with the first `from` replaced by `to` (a static buffer); NULL when from is missing. */
static const char *edited(const char *base, const char *from, const char *to)
{
    static char out[8192];
    const char *at = strstr(base, from);
    if (!at) return NULL;
    snprintf(out, sizeof out, "%.*s%s%s", (int)(at - base), base, to, at + strlen(from));
    return out;
}

static int write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t put = fwrite(data, 1, len, f);
    return fclose(f) == 0 && put == len ? 0 : -1;
}

static char *read_text(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = malloc(1 << 16);
    *len = buf ? fread(buf, 1, (1 << 16) - 1, f) : 0;
    fclose(f);
    if (buf) buf[*len] = 0;
    return buf;
}

/* A one-line message: non-empty, no newline. */
static int one_line(const char *err)
{
    return err[0] && !strchr(err, '\n');
}

TEST(config_pipeline_tiny_loads)
{
    pipeline_spec p;
    strata_err e = {0};
    int r = pipeline_load(TINY, &p, &e);
    CHECKF(r == 0, "%s", e.msg);
    CHECK(!strcmp(p.path, TINY) && !strcmp(p.name, "test-tiny") && p.nlevels == 2);
    const level_spec *a = &p.levels[0], *b = &p.levels[1];
    CHECK(!strcmp(a->name, "l16") && a->kind == LEVEL_KIND_GENERATE && a->side == 16);
    CHECK(a->steps == 4 && a->noise_level == 0 && a->pool == 1 && a->guidance == 1.0f);
    CHECK(a->eta == 0 && !a->sampler[0] && a->tile == 0 && a->overlap == 0);
    CHECK(!strcmp(a->model, "configs/pipelines/../../tests/fixtures/unet/small3/model"));
    CHECK(!strcmp(b->name, "l32") && b->kind == LEVEL_KIND_REFINE && b->side == 32);
    CHECK(b->steps == 3 && b->noise_level == 50);
    CHECK(!strcmp(b->model, "configs/pipelines/../../tests/fixtures/unet/sr/model"));
    char cfgpath[2048];
    for (int i = 0; i < 2; i++) {
        snprintf(cfgpath, sizeof cfgpath, "%s/config.json", p.levels[i].model);
        CHECKF(access(cfgpath, R_OK) == 0, "%s: missing", cfgpath);
    }
}

/* Every shipped pipeline and job loads; a job whose pipeline is shipped plans. */
TEST(config_shipped_files_load)
{
    glob_t g;
    strata_err e = {0};
    int n = 0;
    CHECK(glob("configs/pipelines/*.yaml", 0, NULL, &g) == 0);
    for (size_t i = 0; i < g.gl_pathc; i++, n++) {
        pipeline_spec p;
        int r = pipeline_load(g.gl_pathv[i], &p, &e);
        if (r) globfree(&g);
        CHECKF(r == 0, "%s", e.msg);
    }
    globfree(&g);
    CHECK(glob("configs/jobs/*.yaml", 0, NULL, &g) == 0);
    for (size_t i = 0; i < g.gl_pathc; i++, n++) {
        job_spec j;
        pipeline_spec p;
        pipeline_plan plan;
        int r = job_load(g.gl_pathv[i], &j, &e);
        if (!r && access(j.pipeline, R_OK) == 0) r = pipeline_load(j.pipeline, &p, &e);
        if (!r && access(j.pipeline, R_OK) == 0)
            r = pipeline_plan_levels(&p, j.resolution, j.start_level, &plan, &e);
        job_spec_free(&j);
        if (r) globfree(&g);
        CHECKF(r == 0, "%s", e.msg);
    }
    globfree(&g);
    CHECK(n >= 2);
}

TEST(config_job_example_loads)
{
    job_spec j;
    strata_err e = {0};
    int r = job_load(EXAMPLE_JOB, &j, &e);
    CHECKF(r == 0, "%s", e.msg);
    CHECK(!strcmp(j.pipeline, "configs/pipelines/emoji.yaml") && !strcmp(j.name, "batch-001"));
    CHECK(j.count == 16 && j.seed == 0 && !j.seeds && j.resolution == 128);
    CHECK(!strcmp(j.out, "out/") && j.priority == 0 && j.class_label == -1 && !j.keep_levels);
    CHECK(!j.start_level[0] && !j.init_images[0]);
    job_spec_free(&j);
}

/* A rule broken in base_pipeline: the edit and the message after "FILE:". */
static const struct {
    const char *from, *to, *want;
} pipeline_cases[] = {
    {"steps: 30", "steps: 0", "12: levels[1].steps: expected an integer 1..10000"},
    {"steps: 30", "steps: [1, 2]", "12: levels[1].steps: expected an integer 1..10000"},
    {"    steps: 30\n", "", "8: levels[1].steps: missing required key"},
    {"    model: m32\n", "", "3: levels[0].model: missing required key"},
    {"    side: 32\n", "", "3: levels[0].side: missing required key"},
    {"  - name: l128\n", "  - nam: l128\n",
     "8: levels[1].nam: unknown key (known: name, kind, model, side, steps, sampler, eta, "
     "guidance, pool, noise_level, tile, overlap, tile_blend)"},
    {"    steps: 30\n", "    stpes: 30\n",
     "12: levels[1].stpes: unknown key (known: name, kind, model, side, steps, sampler, eta, "
     "guidance, pool, noise_level, tile, overlap, tile_blend)"},
    {"name: t\n", "name: t\nversion: 2\n", "2: version: unknown key (known: name, levels)"},
    {"name: t\n", "", "1: name: missing required key"},
    {"name: t\n", "name: ../t\n",
     "1: name: expected letters, digits, _ . - (not first: . -), got \"../t\""},
    {"kind: generate", "kind: refine", "4: levels[0].kind: the first level must be generate"},
    {"kind: refine", "kind: generate", "9: levels[1].kind: only the first level may be generate"},
    {"kind: refine", "kind: refin",
     "9: levels[1].kind: expected generate, refine or direct, got \"refin\""},
    {"side: 128", "side: 100",
     "11: levels[1].side: must be an integer multiple of "
     "levels[0].side (32)"},
    {"side: 128", "side: 32", "11: levels[1].side: must be larger than levels[0].side (32)"},
    {"side: 128", "side: 32x", "11: levels[1].side: expected an integer 1..8192"},
    {"side: 32", "side: 0", "6: levels[0].side: expected an integer 1..8192"},
    {"name: l128", "name: l32", "8: levels[1].name: duplicate level name \"l32\" (also levels[0])"},
    {"name: l128", "name: L128",
     "8: levels[1].name: expected lowercase letters, digits and _ only, got \"L128\""},
    {"name: l128", "name: l_234567890123456789012345678901",
     "8: levels[1].name: longer than 31 characters"},
    {"    side: 128\n", "    side: 128\n    side: 256\n", "12: levels[1].side: duplicate key"},
    {"model: m128", "model: {a: b}", "10: levels[1].model: expected a string"},
    {"model: m128", "model: ", "10: levels[1].model: expected a path, got nothing"},
    {"steps: 30", "steps: 30\n    sampler: euler",
     "13: levels[1].sampler: expected ddim, ddpm or dpm++2m, got \"euler\""},
    {"steps: 30", "steps: 30\n    eta: 2", "13: levels[1].eta: expected a number 0..1"},
    {"steps: 30", "steps: 30\n    eta: .nan", "13: levels[1].eta: expected a number 0..1"},
    {"steps: 30", "steps: 30\n    guidance: 0.5",
     "13: levels[1].guidance: expected a number 1..1000"},
    {"steps: 30", "steps: 30\n    pool: 0", "13: levels[1].pool: expected a positive integer"},
    {"steps: 30", "steps: 30\n    noise_level: 1000",
     "13: levels[1].noise_level: expected an integer 0..999"},
    {"steps: 50", "steps: 50\n    noise_level: 10",
     "8: levels[0].noise_level: only refine and direct levels take one"},
    {"steps: 30", "steps: 30\n    tile: 100",
     "13: levels[1].tile: must be a multiple of 8 (0: no tiling)"},
    {"steps: 30", "steps: 30\n    tile: 256", "13: levels[1].tile: must not exceed side (128)"},
    {"steps: 30", "steps: 30\n    tile: 64\n    overlap: 64",
     "14: levels[1].overlap: must be smaller than tile (64)"},
    {"steps: 30", "steps: 30\n    overlap: 8", "13: levels[1].overlap: needs a tile (tile is 0)"},
    {"steps: 30", "steps: 30\n    tile_blend: final",
     "13: levels[1].tile_blend: expected step or finished, got \"final\""},
    {"steps: 30", "steps: 30\n    tile_blend: [step]",
     "13: levels[1].tile_blend: expected step or finished"},
    {"levels:\n", "levels: 3\nx:\n", "3: x: unknown key (known: name, levels)"},
    {"name: t\n", "name: \"a\\0b\"\n", "1: name: contains a NUL character"},
    {"name: t\n", "name: \"a\\nb\"\n",
     "1: name: expected letters, digits, _ . - (not first: . -), got \"a?b\""},
    {"name: l128", "name: \"l\\t1\"",
     "8: levels[1].name: expected lowercase letters, digits and _ only, got \"l?1\""},
    {"  - name: l32", "  - ? [a]\n  - name: l32", "3: levels[0]: expected a key name"},
};

TEST(config_pipeline_rules)
{
    char path[1024], want[1536];
    strata_err e = {0};
    snprintf(path, sizeof path, "%s/p.yaml", test_tmpdir());
    for (size_t i = 0; i < sizeof pipeline_cases / sizeof pipeline_cases[0]; i++) {
        const char *text = edited(base_pipeline, pipeline_cases[i].from, pipeline_cases[i].to);
        pipeline_spec p;
        CHECKF(text, "case %zu: edit does not apply", i);
        CHECK(write_file(path, text, strlen(text)) == 0);
        int r = pipeline_load(path, &p, &e);
        snprintf(want, sizeof want, "%s:%s", path, pipeline_cases[i].want);
        CHECKF(r == ERR_INPUT && !strcmp(e.msg, want), "case %zu: r %d\n got  %s\n want %s", i, r,
               e.msg, want);
        CHECK(p.nlevels == 0);
    }
}

/* Whole documents that are wrong in shape, with the message after "ORIGIN:". */
static const struct {
    const char *text, *want;
} shape_cases[] = {
    {"", "1: top level: the document is empty"},
    {"# only a comment\n", "1: top level: the document is empty"},
    {"- a\n- b\n", "1: top level: expected a map of keys (name, levels)"},
    {"just text", "1: top level: expected a map of keys (name, levels)"},
    {"name: t\nlevels: 3\n", "2: levels: expected a non-empty list of levels"},
    {"name: t\nlevels: []\n", "2: levels: expected a non-empty list of levels"},
    {"name: t\nlevels:\n  - l32\n",
     "3: levels[0]: expected a map of keys (name, kind, model, side, steps, sampler, eta, "
     "guidance, pool, noise_level, tile, overlap, tile_blend)"},
    {"name: t\nlevels: &a [*a]\n",
     "2: levels[0]: expected a map of keys (name, kind, model, side, steps, sampler, eta, "
     "guidance, pool, noise_level, tile, overlap, tile_blend)"},
    {"name: t\nlevels: [{}, {}, {}, {}, {}, {}, {}, {}, {}]\n",
     "2: levels: at most 8 levels, got 9"},
    {"name: t\n---\nname: u\n", "2: document: a second YAML document; one is allowed"},
};

TEST(config_pipeline_shapes)
{
    char want[600];
    strata_err e = {0};
    for (size_t i = 0; i < sizeof shape_cases / sizeof shape_cases[0]; i++) {
        pipeline_spec p;
        const char *t = shape_cases[i].text;
        int r = pipeline_from_yaml_text(t, strlen(t), "dir/p.yaml", &p, &e);
        snprintf(want, sizeof want, "dir/p.yaml:%s", shape_cases[i].want);
        CHECKF(r == ERR_INPUT && !strcmp(e.msg, want), "case %zu: r %d\n got  %s\n want %s", i, r,
               e.msg, want);
    }
}

/* Optional keys, a direct level, and absolute or origin-less model paths. */
TEST(config_pipeline_optional_keys)
{
    static const char text[] =
        "name: full\n"
        "levels:\n"
        "  - {name: a, kind: generate, model: /abs/m, side: 8, steps: 2,\n"
        "     sampler: dpm++2m, eta: 0.5, guidance: 3, pool: 4}\n"
        "  - {name: b, kind: refine, model: m, side: 64, steps: 1,\n"
        "     noise_level: 999, tile: 32, overlap: 8, sampler: ~,\n"
        "     tile_blend: finished}\n"
        "  - {name: c, kind: direct, model: m, side: 128, tile_blend: step}\n";
    pipeline_spec p;
    strata_err e = {0};
    int r = pipeline_from_yaml_text(text, strlen(text), "SUBMIT", &p, &e);
    CHECKF(r == 0, "%s", e.msg);
    CHECK(p.nlevels == 3 && !strcmp(p.levels[0].model, "/abs/m"));
    CHECK(!strcmp(p.levels[0].sampler, "dpm++2m") && p.levels[0].eta == 0.5f);
    CHECK(p.levels[0].guidance == 3.0f && p.levels[0].pool == 4);
    CHECK(!strcmp(p.levels[1].model, "m") && p.levels[1].noise_level == 999);
    CHECK(p.levels[1].tile == 32 && p.levels[1].overlap == 8 && !p.levels[1].sampler[0]);
    CHECK(p.levels[2].kind == LEVEL_KIND_DIRECT && p.levels[2].steps == 0);
    CHECK(p.levels[0].tile_blend == TILE_BLEND_STEP &&
          p.levels[1].tile_blend == TILE_BLEND_FINISHED);
    CHECK(p.levels[2].tile_blend == TILE_BLEND_STEP);
    r = pipeline_from_yaml_text(text, strlen(text), "/etc/strata/p.yaml", &p, &e);
    CHECKF(r == 0 && !strcmp(p.levels[1].model, "/etc/strata/m"), "%d %s", r, p.levels[1].model);
}

TEST(config_syntax_errors)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"name: t\nlevels:\n\t- name: x\n", "x.yaml:3: invalid YAML: found character that "
                                            "cannot start any token (a tab: YAML indents with "
                                            "spaces)"},
        {"name: t\nlevels: [\n", "x.yaml:3: invalid YAML: did not find expected node content "
                                 "(while parsing a flow node at line 3)"},
        {"name: t\nlevels: [{name: a\n", "x.yaml:3: invalid YAML: "},
        {"name: *x\n", "x.yaml:1: invalid YAML: found undefined alias"},
        {"name: t\nlevels: \xff\n", "x.yaml:2: invalid YAML: invalid leading UTF-8 octet"},
        {"name: t\n  side: 3\n", "x.yaml:2: invalid YAML: "},
    };
    strata_err e = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pipeline_spec p;
        int r = pipeline_from_yaml_text(cases[i].text, strlen(cases[i].text), "x.yaml", &p, &e);
        CHECKF(r == ERR_INPUT && !strncmp(e.msg, cases[i].want, strlen(cases[i].want)) &&
                   one_line(e.msg),
               "case %zu: r %d\n got  %s\n want %s", i, r, e.msg, cases[i].want);
    }
}

TEST(config_files_missing_or_odd)
{
    char want[1200], path[1024];
    strata_err e = {0};
    pipeline_spec p;
    job_spec j;
    const char *dir = test_tmpdir();
    snprintf(path, sizeof path, "%s/none.yaml", dir);
    CHECK(pipeline_load(path, &p, &e) == ERR_INPUT);
    snprintf(want, sizeof want, "%s: cannot open: No such file or directory", path);
    CHECKF(!strcmp(e.msg, want), "%s", e.msg);
    CHECK(job_load(path, &j, &e) == ERR_INPUT && !strcmp(e.msg, want) && !j.seeds);
    CHECK(pipeline_load(dir, &p, &e) == ERR_INPUT);
    snprintf(want, sizeof want, "%s: cannot read: Is a directory", dir);
    CHECKF(!strcmp(e.msg, want), "%s", e.msg);
    snprintf(path, sizeof path, "%s/empty.yaml", dir);
    CHECK(write_file(path, "", 0) == 0);
    CHECK(job_load(path, &j, &e) == ERR_INPUT);
    snprintf(want, sizeof want, "%s:1: top level: the document is empty", path);
    CHECKF(!strcmp(e.msg, want), "%s", e.msg);
    CHECK(pipeline_load(TINY, &p, NULL) == 0); /* no error value is fine */
}

/* Deterministic bytes for the garbage tests. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

TEST(config_big_and_deep_documents)
{
    enum { MB10 = 10 << 20 };
    strata_err e = {0};
    pipeline_spec p;
    char *buf = malloc((size_t)CONFIG_MAX_BYTES + 2);
    uint64_t s = 0x9e3779b97f4a7c15ull;
    CHECK(buf);
    static const char alphabet[] = "ab1:- \n[]{},#'\"&*!?|>\t%@`.0";
    for (int pass = 0; pass < 2; pass++) { /* raw bytes, then YAML-ish characters */
        for (size_t i = 0; i < MB10; i++) {
            uint64_t x = rng_next(&s);
            buf[i] = pass ? alphabet[x % (sizeof alphabet - 1)] : (char)x;
        }
        int r = pipeline_from_yaml_text(buf, MB10, "g.yaml", &p, &e);
        if (r >= 0 || !one_line(e.msg)) free(buf);
        CHECKF(r < 0 && one_line(e.msg), "pass %d: %d %s", pass, r, e.msg);
    }
    memset(buf, '[', 100); /* deep nesting */
    int r = pipeline_from_yaml_text(buf, 100, "g.yaml", &p, &e);
    if (r != ERR_INPUT || strcmp(e.msg, "g.yaml:1: document: nested deeper than 32 levels"))
        free(buf);
    CHECKF(r == ERR_INPUT && !strcmp(e.msg, "g.yaml:1: document: nested deeper than 32 levels"),
           "%s", e.msg);
    size_t n = (size_t)snprintf(buf, 16, "levels:\n"); /* too many values */
    while (n + 4 < (size_t)CONFIG_MAX_BYTES && n < (4u << 20) + 64)
        n += (size_t)sprintf(buf + n, "- 1\n");
    r = pipeline_from_yaml_text(buf, n, "g.yaml", &p, &e);
    if (r != ERR_INPUT || !strstr(e.msg, "document: more than 1048576 values")) free(buf);
    CHECKF(r == ERR_INPUT && strstr(e.msg, "document: more than 1048576 values"), "%s", e.msg);
    memset(buf, ' ', (size_t)CONFIG_MAX_BYTES + 1); /* too large */
    r = pipeline_from_yaml_text(buf, (size_t)CONFIG_MAX_BYTES + 1, "g.yaml", &p, &e);
    free(buf);
    CHECKF(r == ERR_INPUT && !strcmp(e.msg, "g.yaml: document: larger than 16 MiB"), "%s", e.msg);
}

TEST(config_job_fields)
{
    job_spec j;
    strata_err e = {0};
    int r = job_spec_from_yaml_text(base_job, strlen(base_job), "SUBMIT", &j, &e);
    CHECKF(r == 0, "%s", e.msg);
    CHECK(!strcmp(j.pipeline, "p.yaml") && j.count == 3 && j.seed == 7 && !j.seeds);
    CHECK(j.resolution == 64 && !strcmp(j.out, "out") && !j.name[0] && j.priority == 0);
    CHECK(j.class_label == -1 && !j.keep_levels && !j.start_level[0] && !j.init_images[0]);
    static const char full[] =
        "pipeline: p.yaml\nname: b-1.x_2\nseeds: [5, 17, 9223372036854775807]\n"
        "resolution: 8192\nout: o\npriority: -3\nclass_label: 9\n"
        "keep_levels: yes\nstart_level: l128\ninit_images: picked/\n";
    r = job_spec_from_yaml_text(full, strlen(full), "SUBMIT", &j, &e);
    CHECKF(r == 0, "%s", e.msg);
    CHECK(j.count == 3 && j.seeds && j.seeds[0] == 5 && j.seeds[2] == INT64_MAX);
    CHECK(!strcmp(j.name, "b-1.x_2") && j.resolution == 8192 && j.priority == -3);
    CHECK(j.class_label == 9 && j.keep_levels == 1 && !strcmp(j.start_level, "l128"));
    CHECK(!strcmp(j.init_images, "picked/") && !strcmp(j.out, "o"));
    job_spec_free(&j);
    CHECK(!j.seeds);
    job_spec_free(NULL);
}

static const struct {
    const char *from, *to, *want;
} job_cases[] = {
    {"count: 3", "count: 0", "2: count: expected an integer 1..10000000"},
    {"count: 3\nseed: 7", "count: 2\nseeds: [1, 2, 3]", "2: count: 2, but seeds lists 3"},
    {"seed: 7", "seed: 7\nseeds: [1]",
     "4: seeds: give seed (the first of count) or seeds, not both"},
    {"seed: 7", "seeds: [1, -2, 3]", "3: seeds[1]: expected an integer 0..9223372036854775807"},
    {"seed: 7", "seeds: []", "3: seeds: expected a list of 1..10000000 integers"},
    {"seed: 7", "seeds: 5", "3: seeds: expected a list of 1..10000000 integers"},
    {"seed: 7", "seed: 9223372036854775808", "3: seed: expected an integer 0..9223372036854775807"},
    {"seed: 7", "seed: 0x10", "3: seed: expected an integer 0..9223372036854775807"},
    {"resolution: 64\n", "", "1: resolution: missing required key"},
    {"pipeline: p.yaml\n", "", "1: pipeline: missing required key"},
    {"pipeline: p.yaml", "pipeline: ~", "1: pipeline: expected a path, got nothing"},
    {"resolution: 64", "resolution: 8193", "4: resolution: expected an integer 1..8192"},
    {"resolution: 64", "resolution: 64\nname: ..",
     "5: name: expected letters, digits, _ . - (not first: . -), got \"..\""},
    {"resolution: 64", "resolution: 64\nname: a/b",
     "5: name: expected letters, digits, _ . - (not first: . -), got \"a/b\""},
    {"resolution: 64", "resolution: 64\nkeep_levels: maybe",
     "5: keep_levels: expected true or false"},
    {"resolution: 64", "resolution: 64\nclass_label: -2",
     "5: class_label: expected an integer >= -1"},
    {"resolution: 64", "resolution: 64\npriority: high", "5: priority: expected an integer"},
    {"resolution: 64", "resolution: 64\nout: \"\"", "5: out: expected a path, got nothing"},
    {"resolution: 64", "resolution: 64\nstart_level: l128",
     "1: init_images: needed with start_level"},
    {"resolution: 64", "resolution: 64\ninit_images: d", "1: start_level: needed with init_images"},
    {"resolution: 64", "resolution: 64\nstart_level: L128\ninit_images: d",
     "5: start_level: expected lowercase letters, digits and _ only, got \"L128\""},
    {"seed: 7", "seed_list: 7",
     "3: seed_list: unknown key (known: pipeline, name, count, seed, seeds, resolution, out, "
     "priority, class_label, keep_levels, start_level, init_images, budget_s, steps, direct, "
     "predicted_s)"},
    {"count: 3", "count: 3\ncount: 4", "3: count: duplicate key"},
    {"resolution: 64", "resolution: 64\nbudget_s: 0",
     "5: budget_s: expected a number 1e-06..1e+09"},
    {"resolution: 64", "resolution: 64\nsteps: 4", "5: steps: expected a map of level: steps"},
    {"resolution: 64", "resolution: 64\nsteps: {l16: 0}",
     "5: steps.l16: expected an integer 1..10000"},
    {"resolution: 64", "resolution: 64\nsteps: {l16: 2, l16: 3}", "5: steps.l16: given twice"},
    {"resolution: 64", "resolution: 64\ndirect: sometimes", "5: direct: expected true or false"},
};

TEST(config_job_rules)
{
    char want[600];
    strata_err e = {0};
    for (size_t i = 0; i < sizeof job_cases / sizeof job_cases[0]; i++) {
        const char *text = edited(base_job, job_cases[i].from, job_cases[i].to);
        job_spec j;
        CHECKF(text, "case %zu: edit does not apply", i);
        int r = job_spec_from_yaml_text(text, strlen(text), "SUBMIT", &j, &e);
        snprintf(want, sizeof want, "SUBMIT:%s", job_cases[i].want);
        CHECKF(r == ERR_INPUT && !strcmp(e.msg, want), "case %zu: r %d\n got  %s\n want %s", i, r,
               e.msg, want);
        CHECK(!j.seeds && j.count == 1);
    }
}

/* Load text as a pipeline and as a job; 0 or a one-line error, and sane specs on success. */
static int load_both(const char *text, size_t len, char *why, size_t whylen)
{
    pipeline_spec p;
    job_spec j;
    strata_err e = {0};
    int r = pipeline_from_yaml_text(text, len, TINY, &p, &e);
    if (r > 0 || (r < 0 && !one_line(e.msg)) || (r == 0 && (p.nlevels < 1 || p.nlevels > 8)))
        return snprintf(why, whylen, "pipeline: r %d e.msg '%s'", r, e.msg), -1;
    for (int i = 1; r == 0 && i < p.nlevels; i++)
        if (p.levels[i].side % p.levels[i - 1].side || p.levels[i].side <= p.levels[i - 1].side)
            return snprintf(why, whylen, "pipeline: sides not increasing"), -1;
    r = job_spec_from_yaml_text(text, len, EXAMPLE_JOB, &j, &e);
    int bad = r > 0 || (r < 0 && (!one_line(e.msg) || j.seeds)) || (r == 0 && j.count < 1);
    job_spec_free(&j);
    if (bad) return snprintf(why, whylen, "job: r %d e.msg '%s'", r, e.msg), -1;
    return 0;
}

TEST(config_fuzz_truncations)
{
    const char *files[] = {TINY, EXAMPLE_JOB};
    char why[600];
    for (int f = 0; f < 2; f++) {
        size_t len;
        char *text = read_text(files[f], &len);
        CHECK(text);
        for (size_t n = 0; n <= len; n++) {
            int r = load_both(text, n, why, sizeof why);
            if (r) free(text);
            CHECKF(r == 0, "%s prefix %zu: %s", files[f], n, why);
        }
        free(text);
    }
}

/* One random edit of buf (len bytes, room for 64 more): replace, delete, insert or repeat. */
static size_t mutate(char *buf, size_t len, uint64_t *s)
{
    static const char alphabet[] = ":-[]{},#&*!|>'\"\t\n ~?%@01a.\\";
    size_t at = len ? rng_next(s) % len : 0, span = 1 + rng_next(s) % 16;
    uint64_t x = rng_next(s);
    char c = x & 1 ? (char)(x >> 8) : alphabet[(x >> 8) % (sizeof alphabet - 1)];
    switch ((x >> 16) % 4) {
    case 0:
        if (len) buf[at] = c;
        return len;
    case 1:
        span = span > len - at ? len - at : span;
        memmove(buf + at, buf + at + span, len - at - span);
        return len - span;
    case 2:
        memmove(buf + at + 1, buf + at, len - at);
        buf[at] = c;
        return len + 1;
    default:
        span = span > len - at ? len - at : span;
        memmove(buf + at + span, buf + at, len - at);
        return len + span;
    }
}

TEST(config_fuzz_mutations)
{
    const char *files[] = {TINY, EXAMPLE_JOB};
    int rounds = test_quick() ? 200 : 2000;
    char why[600];
    uint64_t s = 12345;
    for (int f = 0; f < 2; f++) {
        size_t len;
        char *text = read_text(files[f], &len), *buf = malloc(len + 64 * 4 + 1);
        CHECK(text && buf);
        for (int i = 0; i < rounds; i++) {
            size_t n = len;
            memcpy(buf, text, len);
            for (int k = 0, edits = 1 + (int)(rng_next(&s) % 4); k < edits; k++)
                n = mutate(buf, n, &s);
            int r = load_both(buf, n, why, sizeof why);
            if (r) free(text), free(buf);
            CHECKF(r == 0, "%s mutation %d: %s", files[f], i, why);
        }
        free(text);
        free(buf);
    }
}

TEST(config_coordinator_file)
{
    coordinator_config o = {.heartbeat_ms = 1000, .liveness = 3};
    strata_err e = {0};
    CHECKF(coordinator_config_load("configs/coordinator.yaml", &o, &e) == 0, "%s", e.msg);
    CHECK(!strcmp(o.pipeline, "configs/pipelines/emoji.yaml"));
    /* the shipped file binds loopback: no keys needed */
    CHECK(!strcmp(o.workers, "tcp://127.0.0.1:5555") && o.max_in_flight == 64);
    CHECK(!o.curve_key[0] && !o.insecure);
    char path[1024];
    snprintf(path, sizeof path, "%s/c.yaml", test_tmpdir());
    FILE *f = fopen(path, "w");
    CHECK(f);
    fputs("pipeline: p.yaml\nliveness: zero\n", f);
    fclose(f);
    CHECK(coordinator_config_load(path, &o, &e) == ERR_INPUT);
    CHECKF(strstr(e.msg, "c.yaml:2: liveness: expected an integer 1..1000"), "%s", e.msg);
}

TEST(config_coordinator_curve_and_out_root)
{
    coordinator_config o = {0};
    strata_err e = {0};
    char path[1024];
    snprintf(path, sizeof path, "%s/c.yaml", test_tmpdir());
    FILE *f = fopen(path, "w");
    CHECK(f);
    fputs("pipeline: p.yaml\nout_root: out\ninsecure: true\ncurve:\n  key: k/c.key\n"
          "  allow:\n    - k/a.pub\n    - {key: k/ops.pub, admin: true}\n",
          f);
    fclose(f);
    CHECKF(coordinator_config_load(path, &o, &e) == 0, "%s", e.msg);
    CHECK(o.insecure && o.nallow == 2 && !o.allow[0].admin && o.allow[1].admin);
    CHECK(strstr(o.curve_key, "/k/c.key") && strstr(o.allow[1].path, "/k/ops.pub"));
    CHECK(strstr(o.out_root, "/out"));
    f = fopen(path, "w");
    CHECK(f);
    fputs("pipeline: p.yaml\ncurve:\n  allow: k/\n", f);
    fclose(f);
    CHECK(coordinator_config_load(path, &o, &e) == ERR_INPUT);
    CHECKF(strstr(e.msg, "curve") && strstr(e.msg, "key"), "%s", e.msg);
}
