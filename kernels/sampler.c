/* Diffusion samplers matching diffusers 0.42: DDPMScheduler, DDIMScheduler and
 * DPMSolverMultistepScheduler (dpmsolver++, order 1 or 2), their scheduler_config.json and the
 * forward process. The schedule is computed in the precision diffusers uses (float64 where it
 * uses numpy or Python floats, float32 where it uses torch tensors), so results match to float32
 * rounding. Every step is element-wise over the whole tensor and allocates nothing. */
#include "kernels/kernels.h"

#include <assert.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Element-wise loops shorter than this stay on one thread. */
#define SCHED_PAR_MIN 65536

/* ---------------------------------------------------------------- training schedule */

/* Element i of torch.linspace(start, end, n, dtype=float32). A torch detail we match: it
 * fills the first half from start and the second from end, and its build fuses the
 * multiply-add, hence fmaf. */
static float sched_linspace_f32(float start, float end, int n, int i)
{
    if (n == 1) return start;
    float step = (end - start) / (float)(n - 1);
    if (i < n / 2) return fmaf(step, (float)i, start);
    return fmaf(-step, (float)(n - i - 1), end);
}

/* The squaredcos_cap_v2 alpha_bar of betas_for_alpha_bar, in float64 as Python computes it. */
static double sched_alpha_bar(double t)
{
    double c = cos((t + 0.008) / 1.008 * M_PI / 2);
    return c * c;
}

/* beta_i before any rescaling, as diffusers' float32 betas tensor holds it. */
static float sched_beta_plain(const sched_config *c, int i)
{
    int n = c->num_train_timesteps;
    switch (c->beta_schedule) {
    case SCHED_BETA_SCALED_LINEAR: {
        /* square roots in float64 (Python floats), the linspace and the square in float32 */
        float b = sched_linspace_f32((float)sqrt(c->beta_start), (float)sqrt(c->beta_end), n, i);
        return b * b;
    }
    case SCHED_BETA_COSINE: {
        double t1 = (double)i / n, t2 = (double)(i + 1) / n;
        return (float)fmin(1 - sched_alpha_bar(t2) / sched_alpha_bar(t1), 0.999);
    }
    case SCHED_BETA_LINEAR:
    default:
        return sched_linspace_f32((float)c->beta_start, (float)c->beta_end, n, i);
    }
}

/* Walks the betas in order, rescaled to zero terminal SNR when configured
 * (rescale_zero_terminal_snr, all in float32 like the torch code). */
typedef struct sched_betas {
    const sched_config *c;
    double acc;       /* cumprod of the plain alphas */
    float sqrt_first; /* sqrt(alphas_cumprod[0]) of the plain betas */
    float sqrt_last;  /* sqrt(alphas_cumprod[-1]) of the plain betas */
    float scale;
    float prev_bar;
} sched_betas;

static void sched_betas_init(sched_betas *b, const sched_config *c)
{
    memset(b, 0, sizeof *b);
    b->c = c;
    b->acc = 1.0;
    if (!c->rescale_betas_zero_snr) return;
    double acc = 1.0;
    for (int i = 0; i < c->num_train_timesteps; i++) {
        acc *= (double)(1.0f - sched_beta_plain(c, i));
        if (i == 0) b->sqrt_first = sqrtf((float)acc);
    }
    b->sqrt_last = sqrtf((float)acc);
    b->scale = b->sqrt_first / (b->sqrt_first - b->sqrt_last);
}

/* beta_i; calls must come with i = 0, 1, 2, ... */
static float sched_betas_next(sched_betas *b, int i)
{
    float beta = sched_beta_plain(b->c, i);
    if (!b->c->rescale_betas_zero_snr) return beta;
    /* diffusers quirk: torch.cumprod on CPU accumulates float32 in double */
    b->acc *= (double)(1.0f - beta);
    float s = sqrtf((float)b->acc) - b->sqrt_last;
    s *= b->scale;
    float bar = s * s;
    float alpha = i == 0 ? bar : bar / b->prev_bar;
    b->prev_bar = bar;
    return 1.0f - alpha;
}

/* alphas_cumprod[0..n) into out (may be NULL); returns alphas_cumprod[n - 1]. */
static float sched_cumprod(const sched_config *c, int n, float *out)
{
    sched_betas b;
    double acc = 1.0; /* torch.cumprod accumulates in double, rounding each element to float */
    float last = 1.0f;
    sched_betas_init(&b, c);
    for (int i = 0; i < n; i++) {
        acc *= (double)(1.0f - sched_betas_next(&b, i));
        last = (float)acc;
        /* diffusers quirk: DPM-Solver replaces a zero terminal alphas_cumprod with 2^-24 */
        if (c->kind == SCHED_DPMPP_2M && c->rescale_betas_zero_snr &&
            i == c->num_train_timesteps - 1)
            last = 0x1p-24f;
        if (out) out[i] = last;
    }
    return last;
}

/* DPM-Solver's sigma = sqrt((1 - abar) / abar), in float32. */
static float sched_sigma_of(float abar)
{
    return sqrtf((1.0f - abar) / abar);
}

/* DPM-Solver's _sigma_to_alpha_sigma_t. */
static void sched_alpha_sigma(float sigma, float *alpha, float *sigma_t)
{
    *alpha = 1.0f / sqrtf(sigma * sigma + 1.0f);
    *sigma_t = sigma * *alpha;
}

void sched_add_noise(const sched_config *c, int t, const float *x0, const float *noise, float *out,
                     size_t numel)
{
    assert(t >= 0 && t < c->num_train_timesteps);
    float abar = sched_cumprod(c, t + 1, NULL), a, b;
    if (c->kind == SCHED_DPMPP_2M) {
        /* DPM-Solver goes through its sigma table: alpha = 1 / sqrt(sigma^2 + 1) */
        sched_alpha_sigma(sched_sigma_of(abar), &a, &b);
    } else {
        a = sqrtf(abar);
        b = sqrtf(1.0f - abar);
    }
#pragma omp parallel for schedule(static) if (numel >= SCHED_PAR_MIN)
    for (size_t j = 0; j < numel; j++)
        out[j] = a * x0[j] + b * noise[j];
}

/* ---------------------------------------------------------------- inference timesteps */

/* np.arange(start, 0, -ratio).round() - 1 into ts, numpy's way: length ceil(start / ratio),
 * element i = start + i * ((start - ratio) - start). Returns the length (at most cap). */
static int sched_arange_trailing(double start, double ratio, int64_t *ts, int cap)
{
    double len = ceil((0.0 - start) / -ratio);
    int n = len > cap ? cap : (int)len;
    double delta = (start + -ratio) - start;
    for (int i = 0; i < n; i++) {
        double v = i == 0 ? start : i == 1 ? start + -ratio : start + i * delta;
        ts[i] = (int64_t)rint(v) - 1; /* np.round rounds half to even, as rint does */
    }
    return n;
}

/* np.linspace(0, stop, num)[i], numpy's way: i * (stop / (num - 1)), the last one exact. */
static double sched_np_linspace(double stop, int num, int i)
{
    if (num == 1) return 0.0;
    if (i == num - 1) return stop;
    return i * (stop / (num - 1));
}

/* DDPMScheduler / DDIMScheduler.set_timesteps(n). Returns the count. */
static int sched_timesteps_ddpm(const sched_config *c, int n, int64_t *ts, int cap)
{
    int T = c->num_train_timesteps;
    switch (c->timestep_spacing) {
    case SCHED_SPACING_LINSPACE:
        for (int k = 0; k < n; k++)
            ts[k] = (int64_t)rint(sched_np_linspace(T - 1, n, n - 1 - k));
        return n;
    case SCHED_SPACING_TRAILING:
        return sched_arange_trailing(T, (double)T / n, ts, cap);
    case SCHED_SPACING_LEADING:
    default:
        for (int k = 0; k < n; k++)
            ts[k] = (int64_t)(n - 1 - k) * (T / n) + c->steps_offset;
        return n;
    }
}

/* DPMSolverMultistepScheduler.set_timesteps(n), with lambda_min_clipped = -inf. diffusers
 * quirk: linspace and leading space n + 1 points and drop the last, so t = 0 never comes. */
static int sched_timesteps_dpm(const sched_config *c, int n, int64_t *ts, int cap)
{
    int T = c->num_train_timesteps, last = T;
    switch (c->timestep_spacing) {
    case SCHED_SPACING_LINSPACE:
        for (int k = 0; k < n; k++)
            ts[k] = (int64_t)rint(sched_np_linspace(last - 1, n + 1, n - k));
        return n;
    case SCHED_SPACING_TRAILING:
        return sched_arange_trailing(last, (double)T / n, ts, cap);
    case SCHED_SPACING_LEADING:
    default:
        for (int k = 0; k < n; k++)
            ts[k] = (int64_t)(n - k) * (last / (n + 1)) + c->steps_offset;
        return n;
    }
}

/* ---------------------------------------------------------------- the sampler */

struct sampler {
    sched_config cfg;
    int num_steps;
    size_t numel;
    int images;
    int64_t *timesteps;    /* num_steps (+1 spare for numpy's arange length quirk) */
    float *alphas_cumprod; /* num_train_timesteps, float32 as in diffusers */
    float *sigmas;         /* DPM-Solver: num_steps + 1 */
    float final_alpha;     /* DDIM's final_alpha_cumprod */
    float *x0;             /* numel: the whole x0 prediction, only when thresholding */
    float *prev_x0;        /* numel: DPM-Solver order 2 history */
    float *scratch;        /* numel / images: thresholding's quantile */
    int lower_order_nums;  /* DPM-Solver: steps taken, capped at solver_order */
    int next_step;         /* DPM-Solver: the step the history is ready for */
};

void sampler_free(sampler_t *s)
{
    if (!s) return;
    free(s->timesteps);
    free(s->alphas_cumprod);
    free(s->sigmas);
    free(s->x0);
    free(s->prev_x0);
    free(s->scratch);
    free(s);
}

/* Compute the timesteps and check them: diffusers can yield -1 (trailing, when numpy's arange
 * gives one element too many) or repeats (too many steps); both would feed the model nonsense. */
static int sampler_init_timesteps(sampler_t *s, int n, strata_err *e)
{
    const sched_config *c = &s->cfg;
    int count = c->kind == SCHED_DPMPP_2M ? sched_timesteps_dpm(c, n, s->timesteps, n + 1)
                                          : sched_timesteps_ddpm(c, n, s->timesteps, n + 1);
    static const char *const spacings[] = {"leading", "trailing", "linspace"};
    const char *spacing = spacings[c->timestep_spacing];
    if (count != n)
        return err_set(e, ERR_INPUT,
                       "sampler: %d steps with timestep_spacing %s give %d timesteps in diffusers "
                       "(the last one -1); use another number of steps",
                       n, spacing, count);
    for (int i = 0; i < n; i++) {
        int64_t t = s->timesteps[i];
        if (t < 0 || t >= c->num_train_timesteps || (i > 0 && t >= s->timesteps[i - 1]))
            return err_set(e, ERR_INPUT,
                           "sampler: %d steps with timestep_spacing %s and steps_offset %d give "
                           "timestep %lld at step %d, outside [0, %d) or not decreasing",
                           n, spacing, c->steps_offset, (long long)t, i, c->num_train_timesteps);
    }
    s->num_steps = n;
    return 0;
}

/* DPM-Solver's sigmas: one per timestep, then the final one (0 or sigma_min). */
static void sampler_init_sigmas(sampler_t *s)
{
    for (int i = 0; i < s->num_steps; i++)
        s->sigmas[i] = sched_sigma_of(s->alphas_cumprod[s->timesteps[i]]);
    s->sigmas[s->num_steps] =
        s->cfg.final_sigmas_zero ? 0.0f : sched_sigma_of(s->alphas_cumprod[0]);
}

/* Allocate everything a step will need, so sampler_step never allocates. */
static int sampler_alloc(sampler_t *s, int n)
{
    const sched_config *c = &s->cfg;
    s->timesteps = malloc((size_t)(n + 1) * sizeof *s->timesteps);
    s->alphas_cumprod = malloc((size_t)c->num_train_timesteps * sizeof(float));
    if (!s->timesteps || !s->alphas_cumprod) return ERR_NOMEM;
    if (c->kind == SCHED_DPMPP_2M && !(s->sigmas = malloc((size_t)(n + 1) * sizeof(float))))
        return ERR_NOMEM;
    if (c->kind == SCHED_DPMPP_2M && c->solver_order == 2 &&
        !(s->prev_x0 = malloc(s->numel * sizeof(float))))
        return ERR_NOMEM;
    if (c->thresholding && (!(s->x0 = malloc(s->numel * sizeof(float))) ||
                            !(s->scratch = malloc(s->numel / (size_t)s->images * sizeof(float)))))
        return ERR_NOMEM;
    return 0;
}

int sampler_new(const sched_config *c, int num_steps, size_t numel, int images, sampler_t **out,
                strata_err *e)
{
    int rc;
    *out = NULL;
    if ((rc = sched_config_check(c, "sampler", e))) return rc;
    if (num_steps < 1 || num_steps > c->num_train_timesteps)
        return err_set(e, ERR_INPUT, "sampler: num_steps: must be in [1, %d], got %d",
                       c->num_train_timesteps, num_steps);
    if (numel == 0 || images < 1 || numel % (size_t)images != 0)
        return err_set(e, ERR_INPUT, "sampler: %zu values do not split into %d equal images", numel,
                       images);
    sampler_t *s = calloc(1, sizeof *s);
    if (!s) return err_set(e, ERR_NOMEM, "sampler: out of memory");
    s->cfg = *c;
    if (c->kind == SCHED_DPMPP_2M) s->cfg.clip_sample = 0; /* DPM-Solver never clips */
    s->numel = numel;
    s->images = images;
    if ((rc = sampler_alloc(s, num_steps))) {
        sampler_free(s);
        return err_set(e, rc, "sampler: out of memory for %zu values", numel);
    }
    sched_cumprod(&s->cfg, c->num_train_timesteps, s->alphas_cumprod);
    s->final_alpha = c->set_alpha_to_one ? 1.0f : s->alphas_cumprod[0];
    if ((rc = sampler_init_timesteps(s, num_steps, e))) {
        sampler_free(s);
        return rc;
    }
    if (c->kind == SCHED_DPMPP_2M) sampler_init_sigmas(s);
    *out = s;
    return 0;
}

int sampler_num_steps(const sampler_t *s)
{
    return s->num_steps;
}

float sampler_timestep(const sampler_t *s, int i)
{
    assert(i >= 0 && i < s->num_steps);
    return (float)s->timesteps[i];
}

float sampler_init_sigma(const sampler_t *s)
{
    (void)s;
    return 1.0f; /* init_noise_sigma is 1 for all three schedulers */
}

int sampler_step_needs_noise(const sampler_t *s, int i)
{
    if (i < 0 || i >= s->num_steps) return 0;
    switch (s->cfg.kind) {
    case SCHED_DDPM:
        return s->timesteps[i] > 0; /* diffusers draws noise whenever t > 0, last step too */
    case SCHED_DDIM:
        return s->cfg.eta > 0.0f; /* drawn at every step when eta > 0, even where std is 0 */
    default:
        return 0;
    }
}

/* ---------------------------------------------------------------- x0 prediction */

/* How to turn (sample, model output) into x0: x0 = a * sample - b * out for v, and
 * (sample - b * out) / a for epsilon, where a = sqrt(abar), b = sqrt(1 - abar). */
typedef struct sched_x0 {
    sched_pred pred;
    float a, b;
} sched_x0;

static inline float sched_x0_at(const sched_x0 *p, float sample, float out)
{
    switch (p->pred) {
    case SCHED_PRED_EPSILON:
        return (sample - p->b * out) / p->a;
    case SCHED_PRED_V:
        return p->a * sample - p->b * out;
    default:
        return out;
    }
}

/* The clip_sample clamp (thresholding, when on, has already been applied to s->x0). */
static inline float sched_clip(const sampler_t *s, float x0)
{
    if (!s->cfg.clip_sample || s->cfg.thresholding) return x0;
    float r = s->cfg.clip_sample_range;
    return fminf(fmaxf(x0, -r), r);
}

/* Partially sort a[0..n) so that a[k] is in its sorted place and nothing after it is smaller
 * (Hoare's selection; stops on equal keys, so runs of equal values stay cheap). */
static void sched_select(float *a, int64_t n, int64_t k)
{
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        float p = a[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < p)
                i++;
            while (a[j] > p)
                j--;
            if (i <= j) {
                float t = a[i];
                a[i++] = a[j];
                a[j--] = t;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return;
    }
}

/* torch.quantile(|x|, q) over n values with linear interpolation; tmp holds n floats. */
static float sched_quantile_abs(const float *x, int64_t n, float q, float *tmp)
{
    for (int64_t j = 0; j < n; j++)
        tmp[j] = fabsf(x[j]);
    float rank = q * (float)(n - 1); /* float32, as torch computes it */
    int64_t below = (int64_t)rank, above = (int64_t)ceilf(rank);
    float w = rank - (float)below;
    sched_select(tmp, n, below);
    float lo = tmp[below], hi = lo;
    if (above > below) {
        hi = tmp[below + 1];
        for (int64_t j = below + 2; j < n; j++)
            hi = fminf(hi, tmp[j]);
    }
    /* torch's lerp, which switches form at weight 0.5 */
    return fabsf(w) < 0.5f ? lo + w * (hi - lo) : hi - (hi - lo) * (1.0f - w);
}

/* Dynamic thresholding (_threshold_sample), per image, in place over s->x0. */
static void sched_threshold(sampler_t *s)
{
    int64_t per = (int64_t)(s->numel / (size_t)s->images);
    for (int img = 0; img < s->images; img++) {
        float *x = s->x0 + img * per;
        float q = sched_quantile_abs(x, per, s->cfg.dynamic_thresholding_ratio, s->scratch);
        /* torch.clamp(min=1, max=sample_max_value): min first, so max wins when below 1 */
        float t = fminf(fmaxf(q, 1.0f), s->cfg.sample_max_value);
#pragma omp parallel for schedule(static) if (per >= SCHED_PAR_MIN)
        for (int64_t j = 0; j < per; j++)
            x[j] = fminf(fmaxf(x[j], -t), t) / t;
    }
}

/* With thresholding on, fill s->x0 with the thresholded prediction; steps then read it. */
static void sched_predict(sampler_t *s, const sched_x0 *p, const float *out, const float *sample)
{
    if (!s->cfg.thresholding) return;
    size_t n = s->numel;
#pragma omp parallel for schedule(static) if (n >= SCHED_PAR_MIN)
    for (size_t j = 0; j < n; j++)
        s->x0[j] = sched_x0_at(p, sample[j], out[j]);
    sched_threshold(s);
}

/* x0 of element j: the thresholded buffer, or computed here and clipped. */
static inline float sched_x0_of(const sampler_t *s, const sched_x0 *p, size_t j, float sample,
                                float out)
{
    return s->x0 ? s->x0[j] : sched_clip(s, sched_x0_at(p, sample, out));
}

/* ---------------------------------------------------------------- steps */

/* DDPMScheduler.step: the posterior mean plus std * noise when t > 0 (float32 scalars). */
static void sampler_step_ddpm(sampler_t *s, int i, const float *out, float *sample,
                              const float *noise)
{
    int64_t t = s->timesteps[i];
    int64_t prev = i + 1 < s->num_steps ? s->timesteps[i + 1] : -1;
    float at = s->alphas_cumprod[t], ap = prev >= 0 ? s->alphas_cumprod[prev] : 1.0f;
    float bt = 1.0f - at, bp = 1.0f - ap;
    float cur_alpha = at / ap, cur_beta = 1.0f - cur_alpha;
    float cx0 = (sqrtf(ap) * cur_beta) / bt, cs = sqrtf(cur_alpha) * bp / bt, std = 0.0f;
    if (t > 0) {
        float var = fmaxf(bp / bt * cur_beta, 1e-20f); /* clamped before fixed_large replaces it */
        std = sqrtf(s->cfg.variance_type == SCHED_VARIANCE_FIXED_LARGE ? cur_beta : var);
    }
    sched_x0 p = {s->cfg.prediction_type, sqrtf(at), sqrtf(bt)};
    sched_predict(s, &p, out, sample);
    size_t n = s->numel;
#pragma omp parallel for schedule(static) if (n >= SCHED_PAR_MIN)
    for (size_t j = 0; j < n; j++) {
        float x = cx0 * sched_x0_of(s, &p, j, sample[j], out[j]) + cs * sample[j];
        sample[j] = t > 0 ? x + std * noise[j] : x;
    }
}

/* DDIMScheduler.step. diffusers quirk: the previous timestep is t - T // n whatever the
 * spacing, and for prediction "sample" epsilon comes from the unclipped x0. */
static void sampler_step_ddim(sampler_t *s, int i, const float *out, float *sample,
                              const float *noise)
{
    int64_t t = s->timesteps[i];
    int64_t prev = t - s->cfg.num_train_timesteps / s->num_steps;
    float at = s->alphas_cumprod[t], ap = prev >= 0 ? s->alphas_cumprod[prev] : s->final_alpha;
    float bt = 1.0f - at, bp = 1.0f - ap;
    float var = (bp / bt) * (1.0f - at / ap);
    float std = s->cfg.eta * sqrtf(var);
    float cdir = sqrtf(1.0f - ap - std * std), cx0 = sqrtf(ap);
    int noisy = s->cfg.eta > 0.0f;
    sched_x0 p = {s->cfg.prediction_type, sqrtf(at), sqrtf(bt)};
    sched_predict(s, &p, out, sample);
    size_t n = s->numel;
#pragma omp parallel for schedule(static) if (n >= SCHED_PAR_MIN)
    for (size_t j = 0; j < n; j++) {
        float eps = out[j];
        if (p.pred == SCHED_PRED_SAMPLE)
            eps = (sample[j] - p.a * out[j]) / p.b;
        else if (p.pred == SCHED_PRED_V)
            eps = p.a * out[j] + p.b * sample[j];
        float x = cx0 * sched_x0_of(s, &p, j, sample[j], out[j]) + cdir * eps;
        sample[j] = noisy ? x + std * noise[j] : x;
    }
}

/* Coefficients of one DPM-Solver++ update (float32 scalars, as torch computes them). */
typedef struct sched_dpm_coef {
    float c_sample; /* sigma_t / sigma_s0 */
    float c_d0;     /* alpha_t * (exp(-h) - 1), subtracted */
    float c_d1;     /* 0.5 * c_d0 (second order), subtracted */
    float inv_r0;   /* 1 / r0 (second order) */
    int second;
} sched_dpm_coef;

/* lambda = log(alpha) - log(sigma) of a sigma-table entry, with its alpha and sigma. */
static float sched_lambda(float sigma, float *alpha, float *sigma_t)
{
    sched_alpha_sigma(sigma, alpha, sigma_t);
    return logf(*alpha) - logf(*sigma_t);
}

static sched_dpm_coef sched_dpm_coefs(const sampler_t *s, int i, int second)
{
    sched_dpm_coef k = {.second = second};
    float at, st, as0, ss0, as1, ss1;
    float lt = sched_lambda(s->sigmas[i + 1], &at, &st);
    float ls0 = sched_lambda(s->sigmas[i], &as0, &ss0);
    float h = lt - ls0;
    k.c_sample = st / ss0;
    k.c_d0 = at * (expf(-h) - 1.0f);
    if (second) {
        float ls1 = sched_lambda(s->sigmas[i - 1], &as1, &ss1);
        float r0 = (ls0 - ls1) / h;
        k.inv_r0 = 1.0f / r0;
        k.c_d1 = 0.5f * k.c_d0;
    }
    return k;
}

/* DPMSolverMultistepScheduler.step with dpmsolver++ (midpoint): first order at the start and,
 * per lower_order_final / euler_at_final / final_sigmas_type zero, at the end. */
static void sampler_step_dpm(sampler_t *s, int i, const float *out, float *sample)
{
    const sched_config *c = &s->cfg;
    int n_steps = s->num_steps;
    int lower_final =
        i == n_steps - 1 &&
        (c->euler_at_final || (c->lower_order_final && n_steps < 15) || c->final_sigmas_zero);
    int second = !(c->solver_order == 1 || s->lower_order_nums < 1 || lower_final);
    sched_dpm_coef k = sched_dpm_coefs(s, i, second);
    sched_x0 p = {c->prediction_type, 0.0f, 0.0f};
    sched_alpha_sigma(s->sigmas[i], &p.a, &p.b);
    sched_predict(s, &p, out, sample);
    float *prev = s->prev_x0;
    size_t n = s->numel;
#pragma omp parallel for schedule(static) if (n >= SCHED_PAR_MIN)
    for (size_t j = 0; j < n; j++) {
        float m0 = sched_x0_of(s, &p, j, sample[j], out[j]);
        float x = k.c_sample * sample[j] - k.c_d0 * m0;
        if (k.second) x -= k.c_d1 * (k.inv_r0 * (m0 - prev[j]));
        if (prev) prev[j] = m0;
        sample[j] = x;
    }
    if (s->lower_order_nums < c->solver_order) s->lower_order_nums++;
    s->next_step = i + 1;
}

int sampler_step(sampler_t *s, int i, const float *model_out, float *sample, const float *noise,
                 strata_err *e)
{
    if (i < 0 || i >= s->num_steps)
        return err_set(e, ERR_INPUT, "sampler_step: step %d outside [0, %d)", i, s->num_steps);
    if (sampler_step_needs_noise(s, i) && !noise)
        return err_set(e, ERR_INPUT, "sampler_step: step %d needs noise", i);
    switch (s->cfg.kind) {
    case SCHED_DDPM:
        sampler_step_ddpm(s, i, model_out, sample, noise);
        return 0;
    case SCHED_DDIM:
        sampler_step_ddim(s, i, model_out, sample, noise);
        return 0;
    default:
        /* the multistep history only makes sense in order; step 0 starts afresh */
        if (i == 0)
            s->lower_order_nums = 0;
        else if (i != s->next_step)
            return err_set(e, ERR_INPUT, "sampler_step: step %d out of order (expected %d)", i,
                           s->next_step);
        sampler_step_dpm(s, i, model_out, sample);
        return 0;
    }
}
