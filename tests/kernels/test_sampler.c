/* Samplers against diffusers: every case under tests/fixtures/schedulers (made by
 * tools/make_sampler_fixtures.py) is replayed step by step, and bad scheduler configs must fail
 * with ERR_INPUT and a message naming the file and the field. */
#include "kernels/kernels.h"
#include "tests/test.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURES "tests/fixtures/schedulers"
#define TOLERANCE 1e-5f /* max abs error relative to the max abs reference value */
#define MIN_CASES 50    /* tools/make_sampler_fixtures.py makes 57 */

/* ---------------------------------------------------------------- fixture replay */

/* One case's tensors (see tools/make_sampler_fixtures.py). */
typedef struct sampler_case {
    int steps, images, adds;
    size_t numel;
    int64_t shape[4];
    float eta;
    float *timesteps, *sample0, *outs, *noises, *used, *samples;
    float *add_t, *add_x0, *add_noise, *add_out;
} sampler_case;

static void sampler_case_free(sampler_case *k)
{
    float *bufs[] = {k->timesteps, k->sample0, k->outs,   k->noises,    k->used,
                     k->samples,   k->add_t,   k->add_x0, k->add_noise, k->add_out};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
}

/* Tensor name of f as float32 into a new buffer, checked against shape (ndim dims, lead first
 * when lead > 0). */
static float *case_tensor(const st_file_t *f, const char *name, int64_t lead, const int64_t *shape,
                          int ndim, strata_err *e)
{
    int64_t full[ST_MAX_DIMS];
    int n = 0;
    size_t count = 1;
    if (lead > 0) full[n++] = lead;
    for (int i = 0; i < ndim; i++)
        full[n++] = shape[i];
    for (int i = 0; i < n; i++)
        count *= (size_t)full[i];
    float *dst = malloc(count * sizeof(float));
    if (!dst || st_read_f32(f, name, n, full, dst, e) != 0) {
        free(dst);
        return NULL;
    }
    return dst;
}

/* Read io.safetensors of a case; the sample shape and step count come from sample0/timesteps. */
static int sampler_case_read(const char *path, sampler_case *k, strata_err *e)
{
    st_file_t *f;
    memset(k, 0, sizeof *k);
    if (st_open(path, &f, e) != 0) return -1;
    const st_tensor *ts = st_find(f, "timesteps"), *s0 = st_find(f, "sample0");
    const st_tensor *at = st_find(f, "add_noise_t");
    int rc = -1;
    if (!ts || !s0 || !at || ts->ndim != 1 || s0->ndim != 4 || at->ndim != 1) {
        err_set(e, ERR_INPUT, "%s: missing or misshapen timesteps/sample0/add_noise_t", path);
        goto done;
    }
    k->steps = (int)ts->shape[0];
    k->adds = (int)at->shape[0];
    k->images = (int)s0->shape[0];
    memcpy(k->shape, s0->shape, sizeof k->shape);
    k->numel = (size_t)st_numel(s0);
    int64_t one = 1;
    float *eta = case_tensor(f, "eta", 0, &one, 1, e);
    if (!eta) goto done;
    k->eta = eta[0];
    free(eta);
    if ((k->timesteps = case_tensor(f, "timesteps", 0, ts->shape, 1, e)) &&
        (k->used = case_tensor(f, "noise_used", 0, ts->shape, 1, e)) &&
        (k->sample0 = case_tensor(f, "sample0", 0, k->shape, 4, e)) &&
        (k->outs = case_tensor(f, "model_outputs", k->steps, k->shape, 4, e)) &&
        (k->noises = case_tensor(f, "noises", k->steps, k->shape, 4, e)) &&
        (k->samples = case_tensor(f, "samples", k->steps, k->shape, 4, e)) &&
        (k->add_t = case_tensor(f, "add_noise_t", 0, at->shape, 1, e)) &&
        (k->add_x0 = case_tensor(f, "add_noise_x0", 0, k->shape, 4, e)) &&
        (k->add_noise = case_tensor(f, "add_noise_noise", 0, k->shape, 4, e)) &&
        (k->add_out = case_tensor(f, "add_noise_out", k->adds, k->shape, 4, e)))
        rc = 0;
done:
    st_close(f);
    return rc;
}

/* Relative error of got against ref over n floats; NaN when got has a NaN or inf that ref
 * lacks (checked here too, as one finite value after a NaN hides it from a running max). */
static float rel_error(const float *got, const float *ref, size_t n)
{
    float diff, maxref;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(got[i]) && isfinite(ref[i])) return NAN;
    test_max_abs_diff(got, ref, n, &diff, &maxref);
    return maxref > 0 ? diff / maxref : diff;
}

/* Keep the worst error in *worst; a NaN stays. */
static void note_error(float *worst, float err)
{
    if (!isnan(*worst) && !(err <= *worst)) *worst = err;
}

/* Check timesteps and the noise schedule, then run every step; *worst gets the largest error. */
static int replay_steps(sampler_t *s, const sampler_case *k, float *sample, float *worst, char *why,
                        size_t whylen)
{
    strata_err e = {0};
    if (sampler_num_steps(s) != k->steps)
        return snprintf(why, whylen, "%d steps, diffusers has %d", sampler_num_steps(s), k->steps);
    for (int i = 0; i < k->steps; i++) {
        if (sampler_timestep(s, i) != k->timesteps[i])
            return snprintf(why, whylen, "timestep %d: %g, diffusers has %g", i,
                            (double)sampler_timestep(s, i), (double)k->timesteps[i]);
        if (sampler_step_needs_noise(s, i) != (k->used[i] != 0))
            return snprintf(why, whylen, "step %d: needs_noise %d, diffusers drew noise: %d", i,
                            sampler_step_needs_noise(s, i), k->used[i] != 0);
    }
    memcpy(sample, k->sample0, k->numel * sizeof(float));
    for (int i = 0; i < k->steps; i++) {
        const float *noise = k->used[i] != 0 ? k->noises + (size_t)i * k->numel : NULL;
        if (sampler_step(s, i, k->outs + (size_t)i * k->numel, sample, noise, &e) != 0)
            return snprintf(why, whylen, "step %d: %s", i, e.msg);
        note_error(worst, rel_error(sample, k->samples + (size_t)i * k->numel, k->numel));
    }
    return 0;
}

/* sched_add_noise at each recorded t. */
static void replay_add_noise(const sched_config *c, const sampler_case *k, float *out, float *worst)
{
    for (int i = 0; i < k->adds; i++) {
        sched_add_noise(c, (int)k->add_t[i], k->add_x0, k->add_noise, out, k->numel);
        note_error(worst, rel_error(out, k->add_out + (size_t)i * k->numel, k->numel));
    }
}

/* Replay one fixture directory. Returns 0 and the worst relative error, or -1 and why. */
static int replay_case(const char *dir, float *worst, char *why, size_t whylen)
{
    char path[1024];
    sched_config c;
    sampler_case k;
    sampler_t *s = NULL;
    strata_err e = {0};
    *worst = 0;
    snprintf(path, sizeof path, "%s/scheduler_config.json", dir);
    if (sched_config_load(path, &c, &e) != 0) return snprintf(why, whylen, "%s", e.msg), -1;
    snprintf(path, sizeof path, "%s/io.safetensors", dir);
    if (sampler_case_read(path, &k, &e) != 0) {
        sampler_case_free(&k);
        return snprintf(why, whylen, "%s", e.msg), -1;
    }
    c.eta = k.eta;
    float *sample = malloc(k.numel * sizeof(float));
    int rc = -1;
    if (!sample)
        snprintf(why, whylen, "out of memory");
    else if (sampler_new(&c, k.steps, k.numel, k.images, &s, &e) != 0)
        snprintf(why, whylen, "sampler_new: %s", e.msg);
    else if (replay_steps(s, &k, sample, worst, why, whylen) == 0) {
        replay_add_noise(&c, &k, sample, worst);
        rc = 0;
    }
    sampler_free(s);
    free(sample);
    sampler_case_free(&k);
    return rc;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The case directories under FIXTURES, sorted; *count of them. */
static char **list_cases(int *count)
{
    DIR *d = opendir(FIXTURES);
    char **names = NULL;
    int n = 0;
    struct dirent *ent;
    while (d && (ent = readdir(d))) {
        if (ent->d_name[0] == '.') continue;
        char **grown = realloc(names, (size_t)(n + 1) * sizeof *names);
        if (!grown) break;
        names = grown;
        names[n++] = strdup(ent->d_name);
    }
    if (d) closedir(d);
    if (n) qsort(names, (size_t)n, sizeof *names, by_name);
    *count = n;
    return names;
}

TEST(sampler_matches_diffusers)
{
    int count, failed = 0;
    char **names = list_cases(&count);
    float worst_all = 0;
    const char *worst_name = "";
    for (int i = 0; i < count; i++) {
        char dir[512], why[600] = "";
        float worst;
        snprintf(dir, sizeof dir, "%s/%s", FIXTURES, names[i]);
        int rc = replay_case(dir, &worst, why, sizeof why);
        if (rc != 0 || !(worst <= TOLERANCE)) {
            if (rc == 0) snprintf(why, sizeof why, "worst relative error %.3g", (double)worst);
            test_fail(__FILE__, __LINE__, "%s: %s", names[i], why);
            failed++;
        } else if (worst >= worst_all) {
            worst_all = worst;
            worst_name = names[i];
        }
    }
    printf("    %d scheduler cases, worst relative error %.3g (%s)\n", count, (double)worst_all,
           worst_name);
    for (int i = 0; i < count; i++)
        free(names[i]);
    free(names);
    CHECKF(count >= MIN_CASES, "only %d cases under %s (run tools/make_sampler_fixtures.py)", count,
           FIXTURES);
    CHECKF(failed == 0, "%d of %d cases differ from diffusers", failed, count);
}

/* ---------------------------------------------------------------- configuration */

/* Write text to DIR/scheduler_config.json in a fresh temp dir; returns the path. */
static const char *write_config(const char *text)
{
    static char path[4200];
    snprintf(path, sizeof path, "%s/scheduler_config.json", test_tmpdir());
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
    return path;
}

/* Bad configs: each must give ERR_INPUT and a message naming the file and the field. */
static const struct {
    const char *json;
    const char *field;
} bad_configs[] = {
    {"{\"_class_name\": \"DDIMScheduler\", \"num_train_timesteps\": \"1000\"}",
     "num_train_timesteps"},
    {"{\"_class_name\": \"DDIMScheduler\", \"num_train_timesteps\": 1000.5}",
     "num_train_timesteps"},
    {"{\"_class_name\": \"DDPMScheduler\", \"clip_sample\": 1}", "clip_sample"},
    {"{\"_class_name\": \"DDPMScheduler\", \"beta_start\": \"0.1\"}", "beta_start"},
    {"{\"_class_name\": \"DDIMScheduler\", \"prediction_type\": 3}", "prediction_type"},
    {"{\"_class_name\": \"EulerDiscreteScheduler\"}", "_class_name"},
    {"{\"_class_name\": 7}", "_class_name"},
    {"{\"num_train_timesteps\": 1000}", "_class_name"},
    {"{\"_class_name\": \"DDIMScheduler\", \"beta_schedule\": \"foo\"}", "beta_schedule"},
    {"{\"_class_name\": \"DDPMScheduler\", \"beta_schedule\": \"sigmoid\"}", "beta_schedule"},
    {"{\"_class_name\": \"DDPMScheduler\", \"variance_type\": \"learned_range\"}", "variance_type"},
    {"{\"_class_name\": \"DDPMScheduler\", \"trained_betas\": [0.1, 0.2]}", "trained_betas"},
    {"{\"_class_name\": \"DDIMScheduler\", \"timestep_spacing\": \"foo\"}", "timestep_spacing"},
    {"{\"_class_name\": \"DDIMScheduler\", \"num_train_timesteps\": 1}", "num_train_timesteps"},
    {"{\"_class_name\": \"DDIMScheduler\", \"steps_offset\": -1}", "steps_offset"},
    {"{\"_class_name\": \"DDIMScheduler\", \"thresholding\": true, "
     "\"dynamic_thresholding_ratio\": 1.5}",
     "dynamic_thresholding_ratio"},
    {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"algorithm_type\": \"sde-dpmsolver++\"}",
     "algorithm_type"},
    {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"solver_order\": 3}", "solver_order"},
    {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"solver_type\": \"heun\"}",
     "solver_type"},
    {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"use_karras_sigmas\": true}",
     "use_karras_sigmas"},
    {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"use_flow_sigmas\": true}",
     "use_flow_sigmas"},
    {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"final_sigmas_type\": \"denoise\"}",
     "final_sigmas_type"},
    {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"lambda_min_clipped\": -5.1}",
     "lambda_min_clipped"},
    {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"variance_type\": \"learned_range\"}",
     "variance_type"},
    {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"prediction_type\": "
     "\"flow_prediction\"}",
     "prediction_type"},
};

TEST(sampler_config_bad_fields)
{
    for (size_t i = 0; i < sizeof bad_configs / sizeof bad_configs[0]; i++) {
        const char *path = write_config(bad_configs[i].json);
        sched_config c;
        strata_err e = {0};
        int rc = sched_config_load(path, &c, &e);
        CHECKF(rc == ERR_INPUT, "%s: returned %d", bad_configs[i].json, rc);
        CHECKF(strstr(e.msg, path) && strstr(e.msg, bad_configs[i].field) && !strchr(e.msg, '\n'),
               "%s: message '%s' does not name %s and %s", bad_configs[i].json, e.msg, path,
               bad_configs[i].field);
    }
}

TEST(sampler_config_bad_files)
{
    sched_config c;
    strata_err e = {0};
    const char *path = write_config("{\"_class_name\": \"DDIMScheduler\",\n  \"x\": }");
    CHECK(sched_config_load(path, &c, &e) == ERR_INPUT);
    CHECKF(strstr(e.msg, path) && strstr(e.msg, ":2:"), "message '%s'", e.msg);
    path = write_config("[1, 2]");
    CHECK(sched_config_load(path, &c, &e) == ERR_INPUT);
    CHECKF(strstr(e.msg, path), "message '%s'", e.msg);
    CHECK(sched_config_load("tests/fixtures/no/such/scheduler_config.json", &c, &e) == ERR_INPUT);
    CHECKF(strstr(e.msg, "tests/fixtures/no/such/scheduler_config.json"), "message '%s'", e.msg);
}

/* Unknown fields, fields of other schedulers and Python's non-JSON numbers are ignored. */
TEST(sampler_config_ignores_unknown)
{
    const char *path = write_config("{\"_class_name\": \"DDIMScheduler\", \"foo\": [1, {}],\n"
                                    " \"note\": \"NaN, -Infinity, \\\"Infinity\\\"\",\n"
                                    " \"bar\": -Infinity, \"solver_order\": \"x\",\n"
                                    " \"clip_sample\": false, \"beta_start\": 0.001}\n");
    sched_config c, d;
    strata_err e = {0};
    CHECKF(sched_config_load(path, &c, &e) == 0, "%s", e.msg);
    sched_config_default(SCHED_DDIM, &d);
    CHECK(c.kind == SCHED_DDIM && c.clip_sample == 0 && c.beta_start == 0.001);
    CHECK(c.num_train_timesteps == d.num_train_timesteps && c.set_alpha_to_one == 1);
    CHECK(c.timestep_spacing == SCHED_SPACING_LEADING && c.prediction_type == SCHED_PRED_EPSILON);
}

TEST(sampler_config_defaults)
{
    sched_config c;
    sched_config_default(SCHED_DPMPP_2M, &c);
    CHECK(c.timestep_spacing == SCHED_SPACING_LINSPACE && c.solver_order == 2);
    CHECK(c.lower_order_final == 1 && c.final_sigmas_zero == 1 && c.clip_sample == 0);
    sched_config_default(SCHED_DDPM, &c);
    CHECK(c.timestep_spacing == SCHED_SPACING_LEADING && c.clip_sample == 1);
    CHECK(c.variance_type == SCHED_VARIANCE_FIXED_SMALL && c.num_train_timesteps == 1000);
    sched_kind k;
    CHECK(sched_kind_parse("ddpm", &k) == 0 && k == SCHED_DDPM);
    CHECK(sched_kind_parse("ddim", &k) == 0 && k == SCHED_DDIM);
    CHECK(sched_kind_parse("dpm++2m", &k) == 0 && k == SCHED_DPMPP_2M);
    CHECK(sched_kind_parse("euler", &k) == ERR_INPUT);
}

/* ---------------------------------------------------------------- sampler behaviour */

/* needs_noise of each step of a fresh sampler, as a string of 0/1. */
static int noise_pattern(const sched_config *c, int steps, char *out)
{
    sampler_t *s;
    strata_err e = {0};
    if (sampler_new(c, steps, 8, 2, &s, &e) != 0) return -1;
    for (int i = 0; i < steps; i++)
        out[i] = (char)('0' + sampler_step_needs_noise(s, i));
    out[steps] = 0;
    sampler_free(s);
    return 0;
}

TEST(sampler_needs_noise)
{
    sched_config c;
    char got[32];
    sched_config_default(SCHED_DDPM, &c); /* leading: the last t is 0, which draws none */
    CHECK(noise_pattern(&c, 5, got) == 0 && strcmp(got, "11110") == 0);
    c.steps_offset = 1; /* diffusers quirk: t = 1 at the end still draws noise */
    CHECK(noise_pattern(&c, 5, got) == 0 && strcmp(got, "11111") == 0);
    sched_config_default(SCHED_DDIM, &c);
    CHECK(noise_pattern(&c, 4, got) == 0 && strcmp(got, "0000") == 0);
    c.eta = 0.5f;
    CHECK(noise_pattern(&c, 4, got) == 0 && strcmp(got, "1111") == 0);
    sched_config_default(SCHED_DPMPP_2M, &c);
    CHECK(noise_pattern(&c, 4, got) == 0 && strcmp(got, "0000") == 0);

    /* a step that needs noise refuses NULL */
    sampler_t *s;
    strata_err e = {0};
    float x[8] = {0}, out[8] = {0};
    sched_config_default(SCHED_DDPM, &c);
    CHECK(sampler_new(&c, 5, 8, 2, &s, &e) == 0);
    int rc = sampler_step(s, 0, out, x, NULL, &e);
    sampler_free(s);
    CHECK(rc == ERR_INPUT);
}

TEST(sampler_bad_arguments)
{
    sched_config c;
    sampler_t *s = NULL;
    strata_err e = {0};
    sched_config_default(SCHED_DDIM, &c);
    c.timestep_spacing = SCHED_SPACING_TRAILING;
    /* diffusers quirk: numpy's arange gives 62 timesteps for 61 steps, the last one -1 */
    CHECK(sampler_new(&c, 61, 8, 2, &s, &e) == ERR_INPUT && !s);
    CHECKF(strstr(e.msg, "61"), "message '%s'", e.msg);
    CHECK(sampler_new(&c, 60, 8, 2, &s, &e) == 0);
    sampler_free(s);
    CHECK(sampler_new(&c, 0, 8, 2, &s, &e) == ERR_INPUT);
    CHECK(sampler_new(&c, 1001, 8, 2, &s, &e) == ERR_INPUT);
    CHECK(sampler_new(&c, 10, 9, 2, &s, &e) == ERR_INPUT);
    c.eta = -1;
    CHECK(sampler_new(&c, 10, 8, 2, &s, &e) == ERR_INPUT);

    /* the multistep history needs the steps in order */
    float x[8] = {0}, out[8] = {0};
    sched_config_default(SCHED_DPMPP_2M, &c);
    CHECK(sampler_new(&c, 5, 8, 2, &s, &e) == 0);
    int rc0 = sampler_step(s, 0, out, x, NULL, &e);
    int rc2 = sampler_step(s, 2, out, x, NULL, &e);
    int rc1 = sampler_step(s, 1, out, x, NULL, &e);
    sampler_free(s);
    CHECK(rc0 == 0 && rc2 == ERR_INPUT && rc1 == 0);
}
