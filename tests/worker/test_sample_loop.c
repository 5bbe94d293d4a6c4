/* The one sampling loop against diffusers: every sampler fixture of tests/fixtures/schedulers
 * (tools/make_sampler_fixtures.py) replayed through sample_loop_run with the recorded model
 * outputs and noise, and every sampling-loop fixture of tests/fixtures/unet/<case>/loops
 * (tools/make_fixtures.py) run by the farm's own loop and model evaluation (tile_eval, one tile):
 * the loop that `strata sample` and every level task run is the one checked here. */
#include "kernels/kernels.h"
#include "tests/test.h"
#include "worker/worker.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SCHED_FIXTURES "tests/fixtures/schedulers"
#define UNET_FIXTURES "tests/fixtures/unet"
#define SCHED_TOLERANCE 1e-5 /* as tests/kernels/test_sampler.c */
#define LOOP_TOLERANCE 1e-3  /* a whole loop of UNet forwards */

/* Sorted subdirectories of root (entries not starting with '.'), at most max; returns count. */
static int subdirs(const char *root, char names[][128], int max)
{
    struct dirent **list = NULL;
    int n = scandir(root, &list, NULL, alphasort), kept = 0;
    for (int i = 0; i < n; i++) {
        char p[1024];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", root, list[i]->d_name);
        if (list[i]->d_name[0] != '.' && !stat(p, &st) && S_ISDIR(st.st_mode) && kept < max)
            snprintf(names[kept++], 128, "%s", list[i]->d_name);
        free(list[i]);
    }
    free(list);
    return kept;
}

/* Tensor name of f as float32 (malloc'd), or NULL when absent; *t gets its header. */
static float *tensor(const st_file_t *f, const char *name, const st_tensor **t)
{
    const st_tensor *h = st_find(f, name);
    float *v = h ? malloc((size_t)st_numel(h) * sizeof(float)) : NULL;
    if (v) st_to_f32(h, v);
    if (t) *t = h;
    return v;
}

/* Max |a - b| over n floats relative to max |b|; NaN when a is not finite. */
static double rel_err(const float *a, const float *b, size_t n)
{
    float d, r;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(a[i])) return NAN;
    test_max_abs_diff(a, b, n, &d, &r);
    return r > 0 ? d / r : d;
}

/* ---------------------------------------------------------------- scheduler fixtures */

/* One recorded diffusers run: the model outputs it was fed and the noise it drew, per step. */
typedef struct replay {
    size_t numel;
    int steps;
    float *timesteps, *sample0, *outs, *noises, *used, *samples;
    double worst;
    int drawn[64];
} replay;

/* The eval callback: checks the loop's timestep and sample against diffusers, then returns the
 * model output diffusers was given at that step. */
static int replay_eval(void *ctx, int step, float t, const float *x, float *out, strata_err *e)
{
    replay *r = ctx;
    if (step >= r->steps || t != r->timesteps[step])
        return err_set(e, ERR_VALUE, "step %d: timestep %g, diffusers has %g", step, (double)t,
                       step < r->steps ? (double)r->timesteps[step] : -1.0);
    const float *want = step ? r->samples + (size_t)(step - 1) * r->numel : r->sample0;
    double err = rel_err(x, want, r->numel);
    if (!(err <= r->worst)) r->worst = err; /* a NaN sticks */
    memcpy(out, r->outs + (size_t)step * r->numel, r->numel * sizeof(float));
    return 0;
}

/* The noise callback: the noise diffusers drew at that step. */
static void replay_noise(void *ctx, uint32_t stream, float *dst)
{
    replay *r = ctx;
    if (stream >= (uint32_t)r->steps) return; /* never asked: init_noise is given */
    r->drawn[stream]++;
    memcpy(dst, r->noises + (size_t)stream * r->numel, r->numel * sizeof(float));
}

static void replay_free(replay *r)
{
    free(r->timesteps), free(r->sample0), free(r->outs), free(r->noises), free(r->used);
    free(r->samples);
}

/* Replay case dir through the loop; 0 and the worst relative error, or -1 and why. */
static int replay_case(const char *dir, double *worst, char *why, size_t len)
{
    char path[1024];
    strata_err e = {0};
    sched_config c;
    st_file_t *f = NULL;
    replay r = {0};
    const st_tensor *s0, *ts;
    snprintf(path, sizeof path, "%s/scheduler_config.json", dir);
    int rc = sched_config_load(path, &c, &e);
    snprintf(path, sizeof path, "%s/io.safetensors", dir);
    if (!rc) rc = st_open(path, &f, &e);
    float *eta = rc ? NULL : tensor(f, "eta", NULL);
    if (!rc && (r.sample0 = tensor(f, "sample0", &s0)) &&
        (r.timesteps = tensor(f, "timesteps", &ts)) && eta &&
        (r.outs = tensor(f, "model_outputs", NULL)) && (r.noises = tensor(f, "noises", NULL)) &&
        (r.used = tensor(f, "noise_used", NULL)) && (r.samples = tensor(f, "samples", NULL)) &&
        ts->shape[0] <= 64) {
        r.numel = (size_t)st_numel(s0), r.steps = (int)ts->shape[0];
        c.eta = eta[0];
        float *x = malloc(r.numel * sizeof(float));
        sample_loop L = {.sched = &c,
                         .steps = r.steps,
                         .n = (int)s0->shape[0],
                         .channels = (int)s0->shape[1],
                         .h = (int)s0->shape[2],
                         .w = (int)s0->shape[3],
                         .eval = replay_eval,
                         .eval_ctx = &r,
                         .init_noise = r.sample0, /* init_noise_sigma is 1 for these samplers */
                         .noise = replay_noise,
                         .noise_ctx = &r};
        rc = x ? sample_loop_run(&L, x, &e) : err_set(&e, ERR_NOMEM, "out of memory");
        for (int i = 0; i < r.steps && !rc; i++)
            if (r.drawn[i] != (r.used[i] != 0))
                rc = err_set(&e, ERR_VALUE, "step %d: drew noise %d times, diffusers %d", i,
                             r.drawn[i], r.used[i] != 0);
        double last = rc ? 0 : rel_err(x, r.samples + (size_t)(r.steps - 1) * r.numel, r.numel);
        *worst = !(last <= r.worst) ? last : r.worst;
        free(x);
    } else if (!rc) {
        rc = err_set(&e, ERR_INPUT, "%s: a tensor is missing", path);
    }
    if (rc) snprintf(why, len, "%s", e.msg);
    free(eta);
    replay_free(&r);
    st_close(f);
    return rc ? -1 : 0;
}

TEST(sample_loop_replays_sampler_fixtures)
{
    static char names[128][128];
    int n = subdirs(SCHED_FIXTURES, names, 128);
    double worst_all = 0;
    CHECKF(n >= 50, "only %d cases under %s", n, SCHED_FIXTURES);
    for (int i = 0; i < n; i++) {
        char dir[512], why[600] = "";
        double worst = 0;
        snprintf(dir, sizeof dir, "%s/%s", SCHED_FIXTURES, names[i]);
        CHECKF(replay_case(dir, &worst, why, sizeof why) == 0, "%s: %s", names[i], why);
        CHECKF(worst <= SCHED_TOLERANCE, "%s: worst relative error %.3g", names[i], worst);
        worst_all = worst > worst_all ? worst : worst_all;
    }
    printf("    %d sampler cases through the loop, worst relative error %.3g\n", n, worst_all);
}

/* ---------------------------------------------------------------- UNet sampling-loop fixtures */

/* One loop fixture (loops/<name>/{scheduler_config.json, io.safetensors}) through the loop and
 * the farm's model evaluation; returns the relative error, or -1 and why. */
static double unet_loop_error(const char *model_dir, const char *loop_dir, char *why, size_t len)
{
    char path[1024];
    strata_err e = {0};
    unet_t *m = NULL;
    st_file_t *io = NULL;
    sched_config sc;
    snprintf(path, sizeof path, "%s/scheduler_config.json", loop_dir);
    int rc = unet_load(model_dir, &m, &e);
    if (!rc) rc = sched_config_load(path, &sc, &e);
    snprintf(path, sizeof path, "%s/io.safetensors", loop_dir);
    if (!rc) rc = st_open(path, &io, &e);
    const st_tensor *ns = NULL;
    float *noise = rc ? NULL : tensor(io, "noise", &ns), *cond = rc ? NULL : tensor(io, "cond", 0);
    float *labels = rc ? NULL : tensor(io, "class_labels", NULL);
    float *steps = rc ? NULL : tensor(io, "steps", NULL),
          *want = rc ? NULL : tensor(io, "expected", 0);
    float *got = noise ? malloc((size_t)st_numel(ns) * sizeof(float)) : NULL;
    if (!rc && !(noise && steps && want && got))
        rc = err_set(&e, ERR_INPUT, "%s: missing noise, steps or expected", path);
    tile_eval te = {.model = m, .cond = cond, .labels = labels};
    if (!rc) {
        te.n = (int)ns->shape[0], te.h = (int)ns->shape[2], te.w = (int)ns->shape[3];
        rc = tile_eval_init(&te, &e);
    }
    sample_loop L = {.sched = &sc, .eval = tile_eval_model, .eval_ctx = &te, .init_noise = noise};
    if (!rc) {
        L.steps = (int)steps[0], L.n = te.n, L.channels = te.oc, L.h = te.h, L.w = te.w;
        rc = sample_loop_run(&L, got, &e);
    }
    double rel = rc ? -1 : rel_err(got, want, (size_t)st_numel(ns));
    if (rc) snprintf(why, len, "%s", e.msg);
    tile_eval_free(&te);
    free(noise), free(cond), free(labels), free(steps), free(want), free(got);
    st_close(io);
    unet_free(m);
    return rel;
}

TEST(sample_loop_matches_diffusers_pipelines)
{
    static char cases[32][128], loops[64][128];
    int n = subdirs(UNET_FIXTURES, cases, 32), total = 0;
    for (int i = 0; i < n; i++) {
        char dir[512], model[512], why[600] = "";
        snprintf(dir, sizeof dir, "%s/%s/loops", UNET_FIXTURES, cases[i]);
        snprintf(model, sizeof model, "%s/%s/model", UNET_FIXTURES, cases[i]);
        int nl = subdirs(dir, loops, 64);
        for (int j = 0; j < nl; j++) {
            char loop[1024];
            snprintf(loop, sizeof loop, "%s/%s", dir, loops[j]);
            double rel = unet_loop_error(model, loop, why, sizeof why);
            CHECKF(rel >= 0, "%s/%s: %s", cases[i], loops[j], why);
            CHECKF(rel <= LOOP_TOLERANCE, "%s/%s: max abs error %.3g of the max abs value",
                   cases[i], loops[j], rel);
            printf("    %-8s %-28s relative error %.2e\n", cases[i], loops[j], rel);
            total++;
        }
    }
    CHECKF(total >= 18, "expected at least 18 sampling-loop fixtures, found %d", total);
}
