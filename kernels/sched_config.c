/* scheduler_config.json for diffusers' DDPMScheduler, DDIMScheduler and
 * DPMSolverMultistepScheduler: parsing (jansson), diffusers' defaults, and the checks that
 * refuse what the samplers do not implement. */
#include "kernels/kernels.h"
#include "kernels/sched.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- configuration */

static const char *const sched_class_names[] = {
    [SCHED_DDPM] = "DDPMScheduler",
    [SCHED_DDIM] = "DDIMScheduler",
    [SCHED_DPMPP_2M] = "DPMSolverMultistepScheduler",
};

/* Enum spellings, indexed by the enum value. */
static const char *const sched_beta_names[] = {"linear", "scaled_linear", "squaredcos_cap_v2"};
static const char *const sched_pred_names[] = {"epsilon", "v_prediction", "sample"};
static const char *const sched_spacing_names[] = {"leading", "trailing", "linspace"};
static const char *const sched_variance_names[] = {"fixed_small", "fixed_large"};
static const char *const sched_final_sigmas_names[] = {"sigma_min", "zero"};
/* diffusers maps "deis" to "dpmsolver++" in the constructor. */
static const char *const sched_algorithm_names[] = {"dpmsolver++", "deis"};
/* diffusers maps logrho, bh1 and bh2 to midpoint; heun is only told apart at order 2. */
static const char *const sched_solver_names[] = {"midpoint", "logrho", "bh1", "bh2", "heun"};
enum { SCHED_SOLVER_HEUN = 4 };

#define SCHED_COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

void sched_config_default(sched_kind kind, sched_config *c)
{
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->num_train_timesteps = 1000;
    c->beta_start = 0.0001;
    c->beta_end = 0.02;
    c->beta_schedule = SCHED_BETA_LINEAR;
    c->prediction_type = SCHED_PRED_EPSILON;
    c->timestep_spacing = kind == SCHED_DPMPP_2M ? SCHED_SPACING_LINSPACE : SCHED_SPACING_LEADING;
    c->steps_offset = 0;
    c->clip_sample = kind != SCHED_DPMPP_2M; /* DPM-Solver has no clip_sample */
    c->clip_sample_range = 1.0f;
    c->thresholding = 0;
    c->dynamic_thresholding_ratio = 0.995f;
    c->sample_max_value = 1.0f;
    c->variance_type = SCHED_VARIANCE_FIXED_SMALL;
    c->set_alpha_to_one = 1;
    c->eta = 0.0f;
    c->solver_order = 2;
    c->lower_order_final = 1;
    c->euler_at_final = 0;
    c->final_sigmas_zero = 1;
    c->rescale_betas_zero_snr = 0;
}

int sched_kind_parse(const char *name, sched_kind *kind)
{
    static const char *const names[] = {
        [SCHED_DDPM] = "ddpm", [SCHED_DDIM] = "ddim", [SCHED_DPMPP_2M] = "dpm++2m"};
    for (int k = 0; k < SCHED_COUNT(names); k++) {
        if (name && strcmp(name, names[k]) == 0) {
            *kind = (sched_kind)k;
            return 0;
        }
    }
    return ERR_INPUT;
}

/* Read a whole file into a NUL-terminated malloc'd buffer. */
static int sched_read_file(const char *path, char **out, size_t *len, strata_err *e)
{
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(e, ERR_INPUT, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, used = 0;
    char *buf = malloc(cap);
    while (buf) {
        used += fread(buf + used, 1, cap - used - 1, f);
        if (used < cap - 1) break;
        char *grown = realloc(buf, cap * 2);
        if (!grown) free(buf);
        buf = grown;
        cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf) return err_set(e, ERR_NOMEM, "%s: out of memory", path);
    if (bad) {
        free(buf);
        return err_set(e, ERR_INPUT, "%s: read error", path);
    }
    buf[used] = 0;
    *out = buf;
    *len = used;
    return 0;
}

/* Python's json module writes -Infinity, Infinity and NaN (diffusers saves lambda_min_clipped
 * = -inf that way); jansson rejects them, so outside strings they become the strings
 * "-Infinity", "Infinity", "NaN", which sched_json_number() reads back. Lines are kept. */
static char *sched_json_quote_specials(const char *in, size_t len)
{
    static const char *const words[] = {"-Infinity", "Infinity", "NaN"};
    char *out = malloc(len * 2 + 1), *o = out;
    int in_string = 0;
    if (!out) return NULL;
    for (size_t i = 0; i < len;) {
        char ch = in[i];
        if (in_string) {
            *o++ = ch;
            if (ch == '\\' && i + 1 < len)
                *o++ = in[++i];
            else if (ch == '"')
                in_string = 0;
            i++;
            continue;
        }
        int matched = 0;
        for (int w = 0; w < SCHED_COUNT(words) && !matched; w++) {
            size_t n = strlen(words[w]);
            if (len - i >= n && memcmp(in + i, words[w], n) == 0) {
                *o++ = '"';
                memcpy(o, words[w], n);
                o += n;
                *o++ = '"';
                i += n;
                matched = 1;
            }
        }
        if (matched) continue;
        if (ch == '"') in_string = 1;
        *o++ = ch;
        i++;
    }
    *o = 0;
    return out;
}

/* Parse path as a JSON object. */
static int sched_json_load(const char *path, json_t **out, strata_err *e)
{
    char *text = NULL, *quoted;
    size_t len = 0;
    int rc = sched_read_file(path, &text, &len, e);
    if (rc) return rc;
    quoted = sched_json_quote_specials(text, len);
    free(text);
    if (!quoted) return err_set(e, ERR_NOMEM, "%s: out of memory", path);
    json_error_t err;
    json_t *root = json_loads(quoted, 0, &err);
    free(quoted);
    if (!root) return err_set(e, ERR_INPUT, "%s:%d: invalid JSON: %s", path, err.line, err.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return err_set(e, ERR_INPUT, "%s: expected a JSON object", path);
    }
    *out = root;
    return 0;
}

/* A JSON number, or one of the strings sched_json_quote_specials() made. */
static int sched_json_number(const json_t *v, double *out)
{
    if (json_is_number(v)) {
        *out = json_number_value(v);
        return 1;
    }
    if (!json_is_string(v)) return 0;
    const char *s = json_string_value(v);
    if (strcmp(s, "-Infinity") == 0)
        *out = -INFINITY;
    else if (strcmp(s, "Infinity") == 0)
        *out = INFINITY;
    else if (strcmp(s, "NaN") == 0)
        *out = NAN;
    else
        return 0;
    return 1;
}

/* One config file being read: its path and root object, for error messages. */
typedef struct sched_json {
    const char *path;
    json_t *root;
    strata_err *e;
} sched_json;

/* key as a boolean into *out; absent leaves *out alone. */
static int sched_get_bool(const sched_json *j, const char *key, int *out)
{
    json_t *v = json_object_get(j->root, key);
    if (!v) return 0;
    if (!json_is_boolean(v))
        return err_set(j->e, ERR_INPUT, "%s: %s: expected true or false", j->path, key);
    *out = json_is_true(v);
    return 0;
}

/* key as an integer that fits an int into *out; absent leaves *out alone. */
static int sched_get_int(const sched_json *j, const char *key, int *out)
{
    json_t *v = json_object_get(j->root, key);
    if (!v) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < -2147483647 ||
        json_integer_value(v) > 2147483647)
        return err_set(j->e, ERR_INPUT, "%s: %s: expected an integer", j->path, key);
    *out = (int)json_integer_value(v);
    return 0;
}

/* key as a number into *out; absent leaves *out alone. */
static int sched_get_double(const sched_json *j, const char *key, double *out)
{
    json_t *v = json_object_get(j->root, key);
    if (!v) return 0;
    if (!sched_json_number(v, out))
        return err_set(j->e, ERR_INPUT, "%s: %s: expected a number", j->path, key);
    return 0;
}

static int sched_get_float(const sched_json *j, const char *key, float *out)
{
    double d = *out;
    int rc = sched_get_double(j, key, &d);
    if (rc == 0) *out = (float)d;
    return rc;
}

/* key as one of names (its index into *out); absent, or null when null_ok, leaves *out alone. */
static int sched_get_enum(const sched_json *j, const char *key, const char *const *names, int count,
                          int null_ok, int *out)
{
    json_t *v = json_object_get(j->root, key);
    if (!v || (null_ok && json_is_null(v))) return 0;
    if (!json_is_string(v))
        return err_set(j->e, ERR_INPUT, "%s: %s: expected a string", j->path, key);
    const char *s = json_string_value(v);
    for (int i = 0; i < count; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    char list[256] = "";
    for (int i = 0; i < count; i++) {
        size_t used = strlen(list);
        snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", names[i]);
    }
    return err_set(j->e, ERR_INPUT, "%s: %s: unsupported value '%.64s' (expected one of: %s)",
                   j->path, key, s, list);
}

/* key must be absent or null (a feature strata does not implement). */
static int sched_get_null(const sched_json *j, const char *key)
{
    json_t *v = json_object_get(j->root, key);
    if (!v || json_is_null(v)) return 0;
    return err_set(j->e, ERR_INPUT, "%s: %s: not supported (expected null)", j->path, key);
}

/* key must be absent or false (a feature strata does not implement). */
static int sched_get_false(const sched_json *j, const char *key)
{
    int on = 0;
    int rc = sched_get_bool(j, key, &on);
    if (rc) return rc;
    if (on) return err_set(j->e, ERR_INPUT, "%s: %s: true is not supported", j->path, key);
    return 0;
}

/* The fields every kind has. */
static int sched_load_common(const sched_json *j, sched_config *c)
{
    int beta = (int)c->beta_schedule, pred = (int)c->prediction_type;
    int spacing = (int)c->timestep_spacing, rc;
    if ((rc = sched_get_int(j, "num_train_timesteps", &c->num_train_timesteps)) ||
        (rc = sched_get_double(j, "beta_start", &c->beta_start)) ||
        (rc = sched_get_double(j, "beta_end", &c->beta_end)) ||
        (rc = sched_get_enum(j, "beta_schedule", sched_beta_names, SCHED_COUNT(sched_beta_names), 0,
                             &beta)) ||
        (rc = sched_get_null(j, "trained_betas")) ||
        (rc = sched_get_enum(j, "prediction_type", sched_pred_names, SCHED_COUNT(sched_pred_names),
                             0, &pred)) ||
        (rc = sched_get_bool(j, "thresholding", &c->thresholding)) ||
        (rc = sched_get_float(j, "dynamic_thresholding_ratio", &c->dynamic_thresholding_ratio)) ||
        (rc = sched_get_float(j, "sample_max_value", &c->sample_max_value)) ||
        (rc = sched_get_enum(j, "timestep_spacing", sched_spacing_names,
                             SCHED_COUNT(sched_spacing_names), 0, &spacing)) ||
        (rc = sched_get_int(j, "steps_offset", &c->steps_offset)) ||
        (rc = sched_get_bool(j, "rescale_betas_zero_snr", &c->rescale_betas_zero_snr)))
        return rc;
    c->beta_schedule = (sched_beta)beta;
    c->prediction_type = (sched_pred)pred;
    c->timestep_spacing = (sched_spacing)spacing;
    return 0;
}

/* DDPMScheduler and DDIMScheduler fields. */
static int sched_load_ddpm_ddim(const sched_json *j, sched_config *c)
{
    int rc;
    if ((rc = sched_get_bool(j, "clip_sample", &c->clip_sample)) ||
        (rc = sched_get_float(j, "clip_sample_range", &c->clip_sample_range)))
        return rc;
    if (c->kind == SCHED_DDIM) return sched_get_bool(j, "set_alpha_to_one", &c->set_alpha_to_one);
    /* diffusers quirk: variance_type null falls through to the fixed_small formula */
    int var = (int)c->variance_type;
    rc = sched_get_enum(j, "variance_type", sched_variance_names, SCHED_COUNT(sched_variance_names),
                        1, &var);
    c->variance_type = (sched_variance)var;
    return rc;
}

/* DPMSolverMultistepScheduler fields; the sigma variants and SDE solvers are refused. */
static int sched_load_dpm(const sched_json *j, sched_config *c)
{
    static const char *const off[] = {"use_karras_sigmas", "use_exponential_sigmas",
                                      "use_beta_sigmas", "use_lu_lambdas", "use_flow_sigmas"};
    int algo = 0, solver = 0, final_zero = c->final_sigmas_zero, rc;
    double lambda_min = -INFINITY;
    for (int i = 0; i < SCHED_COUNT(off); i++)
        if ((rc = sched_get_false(j, off[i]))) return rc;
    if ((rc = sched_get_int(j, "solver_order", &c->solver_order)) ||
        (rc = sched_get_enum(j, "algorithm_type", sched_algorithm_names,
                             SCHED_COUNT(sched_algorithm_names), 0, &algo)) ||
        (rc = sched_get_enum(j, "solver_type", sched_solver_names, SCHED_COUNT(sched_solver_names),
                             0, &solver)) ||
        (rc = sched_get_bool(j, "lower_order_final", &c->lower_order_final)) ||
        (rc = sched_get_bool(j, "euler_at_final", &c->euler_at_final)) ||
        (rc = sched_get_enum(j, "final_sigmas_type", sched_final_sigmas_names,
                             SCHED_COUNT(sched_final_sigmas_names), 0, &final_zero)) ||
        (rc = sched_get_double(j, "lambda_min_clipped", &lambda_min)) ||
        (rc = sched_get_null(j, "variance_type")))
        return rc;
    c->final_sigmas_zero = final_zero;
    if (c->solver_order != 1 && c->solver_order != 2)
        return err_set(j->e, ERR_INPUT, "%s: solver_order: unsupported value %d (expected 1 or 2)",
                       j->path, c->solver_order);
    /* heun and midpoint differ only in the second-order update */
    if (solver == SCHED_SOLVER_HEUN && c->solver_order == 2)
        return err_set(j->e, ERR_INPUT,
                       "%s: solver_type: unsupported value 'heun' (expected midpoint)", j->path);
    if (!(isinf(lambda_min) && lambda_min < 0))
        return err_set(j->e, ERR_INPUT,
                       "%s: lambda_min_clipped: unsupported value %g (expected -Infinity)", j->path,
                       lambda_min);
    return 0;
}

/* Checks that hold whatever the source of c; where names the file (or "sampler"). */
int sched_config_check(const sched_config *c, const char *where, strata_err *e)
{
    if ((unsigned)c->kind > SCHED_DPMPP_2M || (unsigned)c->beta_schedule > SCHED_BETA_COSINE ||
        (unsigned)c->prediction_type > SCHED_PRED_SAMPLE ||
        (unsigned)c->timestep_spacing > SCHED_SPACING_LINSPACE ||
        (unsigned)c->variance_type > SCHED_VARIANCE_FIXED_LARGE)
        return err_set(e, ERR_INPUT, "%s: scheduler config holds an invalid enum value", where);
    if (c->num_train_timesteps < 2)
        return err_set(e, ERR_INPUT, "%s: num_train_timesteps: must be at least 2, got %d", where,
                       c->num_train_timesteps);
    if (c->steps_offset < 0)
        return err_set(e, ERR_INPUT, "%s: steps_offset: must be >= 0, got %d", where,
                       c->steps_offset);
    if (c->thresholding &&
        !(c->dynamic_thresholding_ratio >= 0.0f && c->dynamic_thresholding_ratio <= 1.0f))
        return err_set(e, ERR_INPUT, "%s: dynamic_thresholding_ratio: must be in [0, 1], got %g",
                       where, (double)c->dynamic_thresholding_ratio);
    if (c->kind == SCHED_DPMPP_2M && c->solver_order != 1 && c->solver_order != 2)
        return err_set(e, ERR_INPUT, "%s: solver_order: unsupported value %d (expected 1 or 2)",
                       where, c->solver_order);
    if (c->kind == SCHED_DDIM && !(c->eta >= 0.0f))
        return err_set(e, ERR_INPUT, "%s: eta: must be >= 0, got %g", where, (double)c->eta);
    return 0;
}

/* The "_class_name" of the file, as a kind. */
static int sched_load_kind(const sched_json *j, sched_kind *kind)
{
    json_t *v = json_object_get(j->root, "_class_name");
    if (!v) return err_set(j->e, ERR_INPUT, "%s: _class_name: missing", j->path);
    if (!json_is_string(v))
        return err_set(j->e, ERR_INPUT, "%s: _class_name: expected a string", j->path);
    for (int k = 0; k < SCHED_COUNT(sched_class_names); k++) {
        if (strcmp(json_string_value(v), sched_class_names[k]) == 0) {
            *kind = (sched_kind)k;
            return 0;
        }
    }
    return err_set(j->e, ERR_INPUT,
                   "%s: _class_name: unsupported scheduler '%.64s' (expected DDPMScheduler, "
                   "DDIMScheduler or DPMSolverMultistepScheduler)",
                   j->path, json_string_value(v));
}

int sched_config_load(const char *path, sched_config *c, strata_err *e)
{
    sched_json j = {.path = path, .e = e};
    sched_kind kind = SCHED_DDPM;
    int rc = sched_json_load(path, &j.root, e);
    if (rc) return rc;
    if (!(rc = sched_load_kind(&j, &kind))) {
        sched_config_default(kind, c);
        rc = sched_load_common(&j, c);
        if (!rc) rc = kind == SCHED_DPMPP_2M ? sched_load_dpm(&j, c) : sched_load_ddpm_ddim(&j, c);
        if (!rc) rc = sched_config_check(c, path, e);
    }
    json_decref(j.root);
    return rc;
}
