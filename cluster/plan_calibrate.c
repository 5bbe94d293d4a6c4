/* Where a plan's times come from: each level run in this process on a grey image (the cost of
 * a step does not depend on the pixels), or an earlier job's timings.jsonl. */
#include "cluster/plan.h"
#include "kernels/kernels.h"
#include "worker/worker.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The upper quartile of reps runs of level p at steps (after one warm-up run), CPU and wall
 * seconds: a farm's images cost 5 to 25% more than the fastest run on a shared machine (the
 * worker's own threads, caches shared with other processes), and a budget is a ceiling. */
static int time_level(unet_t *m, level_params p, const level_task *t, uint8_t *out, int steps,
                      int reps, double *cpu, double *wall, strata_err *e)
{
    double c[PLAN_MAX_REPS], w[PLAN_MAX_REPS];
    p.steps = steps;
    for (int r = -1; r < reps; r++) {
        long long c0 = clock_cpu_us();
        double w0 = clock_now_s();
        int rc = level_run(m, &p, t, out, e);
        if (rc) return rc;
        if (r < 0) continue;
        c[r] = (double)(clock_cpu_us() - c0) * 1e-6;
        w[r] = clock_now_s() - w0;
    }
    qsort(c, (size_t)reps, sizeof *c, by_value);
    qsort(w, (size_t)reps, sizeof *w, by_value);
    *cpu = c[reps * 3 / 4];
    *wall = w[reps * 3 / 4];
    return 0;
}

/* The level's settings as a worker takes them from WELCOME, its sampler from the model. */
static int calib_params(const level_spec *l, int index, level_params *p, strata_err *e)
{
    *p = (level_params){.kind = l->kind,
                        .index = (uint32_t)index,
                        .side = l->side,
                        .steps = l->steps,
                        .noise_level = l->noise_level,
                        .guidance = l->guidance,
                        .tile = l->tile,
                        .overlap = l->overlap,
                        .tile_blend = l->tile_blend};
    return worker_model_scheduler(l->model, l->sampler, l->eta, &p->sched, e);
}

/* Level k's cost: at 1 step and at min(steps, 4); a step is the slope. */
static int calib_level(const pipeline_spec *pl, int k, int class_label, int reps, plan_cost *c,
                       strata_err *e)
{
    const level_spec *l = &pl->levels[k];
    level_params p;
    unet_t *m = NULL;
    int cs = k > 0 ? pl->levels[k - 1].side : 0, rc = unet_load(l->model, &m, e);
    uint8_t *cond = cs ? malloc((size_t)cs * cs * 3) : NULL;
    uint8_t *out = malloc((size_t)l->side * l->side * 3);
    if (!rc && (!out || (cs && !cond))) rc = err_set(e, ERR_NOMEM, "out of memory");
    if (!rc) rc = calib_params(l, k, &p, e);
    if (cond) memset(cond, 128, (size_t)cs * cs * 3);
    level_task t = {.cond = cond, .cond_side = cs, .class_label = class_label};
    int direct = l->kind == LEVEL_KIND_DIRECT, s2 = direct ? 1 : (l->steps < 4 ? l->steps : 4);
    double c1 = 0, w1 = 0, c2 = 0, w2 = 0;
    if (!rc) rc = time_level(m, p, &t, out, 1, reps, &c1, &w1, e);
    if (!rc && s2 > 1) rc = time_level(m, p, &t, out, s2, reps, &c2, &w2, e);
    if (!rc) {
        snprintf(c->name, sizeof c->name, "%s", l->name);
        c->kind = l->kind;
        c->steps = direct ? 1 : l->steps;
        /* a step is the slope; what one image costs besides (cond, noise, RGB) is the rest */
        c->step_s = s2 > 1 && c2 > c1 ? (c2 - c1) / (s2 - 1) : c1;
        c->fixed_s = c1 > c->step_s ? c1 - c->step_s : 0;
        c->wall_per_cpu = s2 > 1 && c2 > 0 ? w2 / c2 : (c1 > 0 ? w1 / c1 : 1);
    }
    free(cond);
    free(out);
    unet_free(m);
    return rc;
}

int plan_calibrate(const pipeline_spec *p, int first, int end, int threads, int class_label,
                   int reps, plan_cost *out, FILE *progress, strata_err *e)
{
    kernels_set_threads(threads < 1 ? 1 : threads);
    for (int k = first; k < end; k++) {
        int r = reps < 1 ? 1 : reps > PLAN_MAX_REPS ? PLAN_MAX_REPS : reps;
        int rc = calib_level(p, k, class_label, r, &out[k - first], e);
        if (rc) return rc;
        const plan_cost *c = &out[k - first];
        if (progress)
            fprintf(progress,
                    "strata plan: %s: %.4f s + %.4f s x %d steps = %.4f CPU s per image\n", c->name,
                    c->fixed_s, c->step_s, c->steps,
                    plan_cost_s(c, c->steps, c->kind == LEVEL_KIND_DIRECT));
    }
    return 0;
}

/* The steps each level of the job in dir ran: its manifest's plan, else the pipeline's. */
static void read_steps(const pipeline_spec *p, int first, int end, const char *dir, int *steps)
{
    char path[SPEC_PATH_MAX + 32];
    for (int k = first; k < end; k++)
        steps[k] = p->levels[k].kind == LEVEL_KIND_DIRECT ? 1 : p->levels[k].steps;
    snprintf(path, sizeof path, "%s/manifest.jsonl", dir);
    FILE *f = fopen(path, "r");
    char line[4096];
    json_t *o = f && fgets(line, sizeof line, f) ? json_loads(line, 0, NULL) : NULL;
    json_t *plan = json_object_get(o, "plan");
    for (int k = first; k < end; k++) {
        json_t *s = json_object_get(json_object_get(plan, "steps"), p->levels[k].name);
        if (json_is_integer(s) && json_integer_value(s) > 0) steps[k] = (int)json_integer_value(s);
    }
    json_decref(o);
    if (f) fclose(f);
}

int plan_read_timings(const pipeline_spec *p, int first, int end, const char *dir, plan_cost *out,
                      strata_err *e)
{
    char path[SPEC_PATH_MAX + 32], line[8192];
    double sum[PIPELINE_MAX_LEVELS] = {0};
    long n[PIPELINE_MAX_LEVELS] = {0};
    int steps[PIPELINE_MAX_LEVELS];
    snprintf(path, sizeof path, "%s/timings.jsonl", dir);
    FILE *f = fopen(path, "r");
    if (!f) return err_set(e, ERR_INPUT, "%s: cannot open: %s", path, strerror(errno));
    while (fgets(line, sizeof line, f)) {
        json_t *o = json_loads(line, 0, NULL), *levels = json_object_get(o, "levels");
        for (int k = first; k < end; k++) {
            json_t *t = json_object_get(json_object_get(levels, p->levels[k].name), "cpu_s");
            if (json_is_number(t)) sum[k] += json_number_value(t), n[k]++;
        }
        json_decref(o);
    }
    fclose(f);
    read_steps(p, first, end, dir, steps);
    for (int k = first; k < end; k++) {
        if (!n[k])
            return err_set(e, ERR_INPUT, "%s: no time for level %s", path, p->levels[k].name);
        plan_cost *c = &out[k - first];
        snprintf(c->name, sizeof c->name, "%s", p->levels[k].name);
        c->kind = p->levels[k].kind;
        c->steps = steps[k];
        c->fixed_s = 0;
        c->step_s = sum[k] / (double)n[k] / steps[k];
        c->wall_per_cpu = 1;
    }
    return 0;
}
