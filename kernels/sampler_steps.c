/* The steps of the three samplers (DDPMScheduler.step, DDIMScheduler.step,
 * DPMSolverMultistepScheduler.step with dpmsolver++), each element-wise over the whole tensor
 * with float32 scalars computed as torch computes them. */
#include "kernels/kernels.h"
#include "kernels/sampler_state.h"
#include "kernels/sched.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>

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

/* The coefficients of DPM-Solver++ step i, first or second order. */
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

/* Step i of the sampler's kind on sample, in place. Errors (ERR_INPUT): i out of range, noise
 * missing where the step needs it, a DPM-Solver step out of order. */
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
