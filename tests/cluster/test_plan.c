/* Planning a farm (cluster/plan.h): the balancing and budget arithmetic on given times, `strata
 * plan --format yaml` read back as YAML, and `strata render --budget` on the tiny pipeline: the
 * images cost what the budget allows (CPU seconds in timings.jsonl), the choice is recorded, a
 * re-run with the recorded choice gives the same bytes, and a budget below the minimum is
 * refused in one line. */
#include "cluster/plan.h"
#include "cluster/yaml.h"
#include "tests/test.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TINY_PIPELINE "configs/pipelines/test-tiny.yaml"

TEST(plan_balance_gives_the_slowest_level_the_free_workers)
{
    /* 8 slots: l0 (1 s) and l1 (4 s) start at 1 worker each; the free 6 go to the level of least
     * throughput, ties to the earlier: l1 x3 (1.0/s = l0's), l0 (2/s), l1 x3 (1.5/s) */
    double s[] = {1.0, 4.0};
    plan_pool p[3];
    int slowest = -1;
    strata_err e = {0};
    CHECKF(plan_balance(s, 2, 2, 4, 1, p, &slowest, &e) == 0, "%s", e.msg);
    CHECKF(p[0].workers == 2 && p[1].workers == 6, "workers %d %d", p[0].workers, p[1].workers);
    CHECK(slowest == 1 && fabs(p[1].rate - 1.5) < 1e-12 && fabs(p[0].rate - 2.0) < 1e-12);
    CHECK(p[0].threads == 1 && p[1].threads == 1);
    /* 2 threads per worker on 3 nodes of 5 cores: 2 workers a node, 6 in all */
    double t[] = {0.5, 0.5, 3.0};
    CHECKF(plan_balance(t, 3, 3, 5, 2, p, &slowest, &e) == 0, "%s", e.msg);
    CHECKF(p[0].workers == 1 && p[1].workers == 1 && p[2].workers == 4, "workers %d %d %d",
           p[0].workers, p[1].workers, p[2].workers);
    CHECK(slowest == 2 && p[2].threads == 2);
    /* too few slots, threads wider than a node: refused with the numbers */
    CHECK(plan_balance(t, 3, 1, 2, 1, p, &slowest, &e) == ERR_INPUT);
    CHECKF(strstr(e.msg, "need at least 3 workers") != NULL, "%s", e.msg);
    CHECK(plan_balance(t, 3, 4, 2, 4, p, &slowest, &e) == ERR_INPUT);
}

static plan_cost cost(const char *name, level_kind kind, int steps, double fixed, double step)
{
    plan_cost c = {.kind = kind, .steps = steps, .fixed_s = fixed, .step_s = step};
    snprintf(c.name, sizeof c.name, "%s", name);
    c.wall_per_cpu = 1;
    return c;
}

TEST(plan_budget_cuts_the_costliest_steps_then_goes_direct)
{
    plan_cost c[] = {cost("a", LEVEL_KIND_GENERATE, 10, 0.0, 0.1),
                     cost("b", LEVEL_KIND_REFINE, 10, 1.0, 0.5)};
    plan_choice ch;
    strata_err e = {0};
    /* the pipeline's steps cost 1 + 1 + 5 = 7 s */
    CHECKF(plan_budget(c, 2, 7.0, &ch, &e) == 0, "%s", e.msg);
    CHECK(ch.steps[0] == 10 && ch.steps[1] == 10 && !ch.direct && fabs(ch.predicted_s - 7) < 1e-9);
    /* 5 s: b (0.5 s a step) is the costlier until 6 steps (3 s vs a's 1 s): 1 + 1 + 3 = 5 */
    CHECKF(plan_budget(c, 2, 5.0, &ch, &e) == 0, "%s", e.msg);
    CHECKF(ch.steps[0] == 10 && ch.steps[1] == 6 && !ch.direct, "steps %d %d", ch.steps[0],
           ch.steps[1]);
    /* floors (5 and 5 steps): 0.5 + 1 + 2.5 = 4 s; below it b goes direct (1.5 s) and a gets
     * its steps back as far as they fit: 3 s = a at 10 steps (1 s) + 1.5 */
    CHECKF(plan_budget(c, 2, 3.0, &ch, &e) == 0, "%s", e.msg);
    CHECKF(ch.direct && ch.steps[0] == 10 && ch.steps[1] == 1, "steps %d %d direct %d", ch.steps[0],
           ch.steps[1], ch.direct);
    CHECK(fabs(ch.predicted_s - 2.5) < 1e-9);
    /* the minimum: a at its floor (0.5 s) + b direct (1.5 s) = 2 s */
    CHECK(plan_budget(c, 2, 1.9, &ch, &e) == ERR_INPUT);
    CHECKF(strstr(e.msg, "budget_s: 1.9 is below the minimum 2 s per image") != NULL, "%s", e.msg);
    CHECK(plan_step_floor(25) == 13 && plan_step_floor(1) == 1 && plan_step_floor(2) == 1);
    /* a farm aims at 90%: 6.3 s of 7, b at 8 steps (6 s); all of 2 s when 90% is out of reach */
    CHECKF(plan_budget_aimed(c, 2, 7.0, &ch, &e) == 0, "%s", e.msg);
    CHECKF(ch.steps[0] == 10 && ch.steps[1] == 8 && !ch.direct, "steps %d %d", ch.steps[0],
           ch.steps[1]);
    CHECKF(plan_budget_aimed(c, 2, 2.0, &ch, &e) == 0 && ch.direct && ch.steps[0] == 5, "%s",
           e.msg);
}

/* The value at key path a.b of the YAML mapping root, or NULL. */
static yaml_node_t *yaml_at(cfg *c, yaml_node_t *map, const char *key)
{
    if (!map || map->type != YAML_MAPPING_NODE) return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++)
        if (!strcmp(cfg_text(cfg_node(c, p->key)), key)) return cfg_node(c, p->value);
    return NULL;
}

static int yaml_int(cfg *c, yaml_node_t *map, const char *key)
{
    yaml_node_t *n = yaml_at(c, map, key);
    return n && n->type == YAML_SCALAR_NODE ? atoi(cfg_text(n)) : -1;
}

TEST(plan_yaml_is_a_group_vars_fragment)
{
    char out[8192] = "", err[4096] = "";
    const char *args[] = {"plan",        "--pipeline",
                          TINY_PIPELINE, "--nodes",
                          "2",           "--cores-per-node",
                          "3",           "--resolution",
                          "32",          "--format",
                          "yaml",        "--reps",
                          "1",           NULL};
    int rc = test_run_strata(args, err, sizeof err, out, sizeof out);
    CHECKF(rc == 0, "plan exit %d: %s", rc, err);
    strata_err e = {0};
    cfg c = {.origin = "plan", .e = &e};
    CHECKF(cfg_load(&c, out, strlen(out)) == 0, "%s\n%s", e.msg, out);
    yaml_node_t *root = yaml_document_get_root_node(&c.doc);
    yaml_node_t *pools = yaml_at(&c, root, "strata_pools"),
                *plan = yaml_at(&c, root, "strata_plan");
    int w16 = yaml_int(&c, yaml_at(&c, pools, "l16"), "workers");
    int w32 = yaml_int(&c, yaml_at(&c, pools, "l32"), "workers");
    int t16 = yaml_int(&c, yaml_at(&c, pools, "l16"), "threads");
    int nodes = yaml_int(&c, plan, "nodes");
    yaml_node_t *slowest = yaml_at(&c, plan, "slowest_level");
    const char *sl = slowest ? cfg_text(slowest) : "";
    int ok = w16 >= 1 && w32 >= 1 && w16 + w32 == 6 && t16 == 1 && nodes == 2 &&
             (!strcmp(sl, "l16") || !strcmp(sl, "l32"));
    yaml_document_delete(&c.doc);
    CHECKF(ok, "l16 %d l32 %d workers, threads %d, nodes %d, slowest '%s':\n%s", w16, w32, t16,
           nodes, sl, out);
}

/* The sum of the seconds_per_image of `strata plan`'s YAML in out: the default plan's CPU
 * seconds per image. */
static double plan_seconds(const char *out)
{
    double sum = 0;
    for (const char *p = strstr(out, "seconds_per_image: "); p;
         p = strstr(p + 1, "seconds_per_image: "))
        sum += atof(p + strlen("seconds_per_image: "));
    return sum;
}

/* The mean over dir/timings.jsonl's images of their CPU seconds over every level, or -1. */
static double mean_cpu_s(const char *dir, int *images)
{
    char path[1200], line[4096];
    snprintf(path, sizeof path, "%s/timings.jsonl", dir);
    FILE *f = fopen(path, "r");
    double sum = 0;
    *images = 0;
    while (f && fgets(line, sizeof line, f)) {
        json_t *o = json_loads(line, 0, NULL), *lv = json_object_get(o, "levels"), *v;
        const char *k;
        json_object_foreach(lv, k, v) sum += json_number_value(json_object_get(v, "cpu_s"));
        (*images)++;
        json_decref(o);
    }
    if (f) fclose(f);
    return *images ? sum / *images : -1;
}

/* Whether files a/NAME and b/NAME have the same bytes. */
static int same_file(const char *a, const char *b, const char *name)
{
    char pa[1200], pb[1200];
    snprintf(pa, sizeof pa, "%s/%s", a, name);
    snprintf(pb, sizeof pb, "%s/%s", b, name);
    FILE *fa = fopen(pa, "rb"), *fb = fopen(pb, "rb");
    int same = fa && fb, ca, cb;
    while (same && ((ca = fgetc(fa)) != EOF) | ((cb = fgetc(fb)) != EOF))
        same = ca == cb;
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

/* test-tiny's models at 8 steps each: the minimum (l16 at 4 steps, l32 direct) is about a
 * fifth of the default, so half the default fits however the two measurements on this busy
 * machine (the plan's, then render's own) differ. */
static const char budget_pipeline[] =
    "name: budget\nlevels:\n"
    "  - {name: l16, kind: generate, model: @/tests/fixtures/unet/small3/model, side: 16,"
    " steps: 8}\n"
    "  - {name: l32, kind: refine, model: @/tests/fixtures/unet/sr/model, side: 32, steps: 8,"
    " noise_level: 50}\n";

TEST_TIMEOUT(render_budget_holds_half_the_default_time, 120)
{
    char out[8192] = "", err[16384] = "", dir[1024], again[1100], budget[32], plan[2048];
    char base[900], pipe[1024];
    snprintf(base, sizeof base, "%s", test_tmpdir());
    CHECK(test_write_pipeline(base, budget_pipeline, pipe, sizeof pipe) == 0);
    const char *p[] = {"plan",         "--pipeline", pipe,       "--nodes", "1",
                       "--resolution", "32",         "--format", "yaml",    NULL};
    int rc = test_run_strata(p, err, sizeof err, out, sizeof out);
    CHECKF(rc == 0, "plan exit %d: %s", rc, err);
    double half = plan_seconds(out) / 2;
    CHECKF(half > 0, "no seconds_per_image in:\n%s", out);
    snprintf(budget, sizeof budget, "%.6g", half);
    half = atof(budget); /* the budget as given */
    snprintf(dir, sizeof dir, "%s/a", base);
    const char *r[] = {"render", "--pipeline", pipe, "--count", "16", "--resolution",
                       "32",     "--out",      dir,  "--name",  "b",  "--budget",
                       budget,   NULL};
    rc = test_run_strata(r, err, sizeof err, NULL, 0);
    size_t n = strlen(err);
    CHECKF(rc == 0, "render --budget %s exit %d: ...%s", budget, rc,
           err + (n > 1500 ? n - 1500 : 0));
    /* the same render again resumes with the choice it kept (OUT/JOB/.strata-plan): measuring
     * anew could choose otherwise, and another choice would be another job */
    rc = test_run_strata(r, err, sizeof err, NULL, 0);
    CHECKF(rc == 0 && !strstr(err, "budget"), "render --budget %s again: exit %d: %s", budget, rc,
           err);
    /* the choice is recorded: budget, prediction, steps per level, direct or not */
    char path[1200], job[1100];
    snprintf(job, sizeof job, "%s/b", dir);
    snprintf(path, sizeof path, "%s/manifest.jsonl", job);
    json_t *m = json_load_file(path, JSON_DISABLE_EOF_CHECK, NULL),
           *pl = json_object_get(m, "plan");
    char *text = pl ? json_dumps(pl, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
    snprintf(plan, sizeof plan, "%s", text ? text : "(none)");
    free(text);
    /* the images' compute, from the workers' own CPU time, shows the workers ran the choice:
     * under ASan here, the choice measured 0.54-0.82 of the budget in six runs (1.12 once in
     * CI), the same render without --budget 1.56-2.01 in three. The bound sits between: the
     * budget itself plus the planner's 10% headroom failed on that CI run's noise, and how close
     * the planner gets is a benchmark's figure (make test-plan), printed here for the log. */
    int images = 0;
    double mean = mean_cpu_s(job, &images);
    fprintf(stderr, "  %d images, %.5f CPU s per image (%.2f of the budget %s), plan %s\n", images,
            mean, mean / half, budget, plan);
    CHECKF(images == 16 && mean > 0 && mean <= 1.3 * half,
           "%d images, %.5f CPU s per image for a budget of %s", images, mean, budget);
    int recorded = json_is_number(json_object_get(pl, "budget_s")) &&
                   fabs(json_number_value(json_object_get(pl, "budget_s")) - half) < 1e-6 * half &&
                   json_number_value(json_object_get(pl, "predicted_s")) <= half &&
                   json_is_integer(json_object_get(json_object_get(pl, "steps"), "l16")) &&
                   json_object_get(pl, "direct") != NULL;
    json_decref(m);
    CHECKF(recorded, "manifest plan: %s (budget %s)", plan, budget);
    /* the recorded choice again, elsewhere: the same bytes whatever this machine measures now */
    snprintf(again, sizeof again, "%s/again", base);
    const char *r2[] = {"render", "--pipeline", pipe,  "--count", "16", "--resolution",
                        "32",     "--out",      again, "--name",  "b",  "--plan-of",
                        job,      NULL};
    rc = test_run_strata(r2, err, sizeof err, NULL, 0);
    CHECKF(rc == 0, "render --plan-of exit %d: %s", rc, err);
    snprintf(path, sizeof path, "%s/b", again);
    CHECK(same_file(job, path, "manifest.jsonl"));
    CHECK(same_file(job, path, "000000.png") && same_file(job, path, "000015.png"));
}

TEST(render_refuses_a_budget_below_the_minimum)
{
    char err[4096] = "", dir[1024];
    snprintf(dir, sizeof dir, "%s/low", test_tmpdir());
    const char *r[] = {"render", "--pipeline", TINY_PIPELINE, "--count",  "1",       "--resolution",
                       "32",     "--out",      dir,           "--budget", "0.00001", NULL};
    int rc = test_run_strata(r, err, sizeof err, NULL, 0);
    CHECKF(rc == 2, "exit %d: %s", rc, err);
    CHECKF(strstr(err, "strata render: budget_s: 1e-05 is below the minimum ") &&
               strstr(err, " s per image (each level at half its steps, l32 direct)\n") &&
               strchr(err, '\n') == err + strlen(err) - 1,
           "%s", err);
}

TEST(render_refuses_a_direct_generate_level)
{
    char err[4096] = "", dir[1024];
    snprintf(dir, sizeof dir, "%s/gen", test_tmpdir());
    /* at 16 px the job runs l16 alone: a generate level has no cond to estimate from */
    const char *r[] = {"render", "--pipeline", TINY_PIPELINE, "--count",  "1", "--resolution",
                       "16",     "--out",      dir,           "--direct", NULL};
    int rc = test_run_strata(r, err, sizeof err, NULL, 0);
    CHECKF(rc == 2 && strstr(err, "direct: the job's last level l16 is not a refine level"),
           "exit %d: %s", rc, err);
}
