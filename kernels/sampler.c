/* Diffusion samplers matching diffusers 0.42: DDPMScheduler, DDIMScheduler and
 * DPMSolverMultistepScheduler (dpmsolver++, order 1 or 2). This file sets a sampler up (its
 * timesteps checked, its schedule and buffers ready) and answers what callers ask of it; the
 * steps are in sampler_steps.c. Every step is element-wise over the whole tensor and
 * allocates nothing. */
#include "kernels/kernels.h"
#include "kernels/sampler_state.h"
#include "kernels/sched.h"

#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/* Frees s and its buffers; NULL is a no-op. */
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

/* A sampler for c (checked), num_steps steps over numel floats of `images` images: every
 * buffer allocated here, the timesteps checked. Errors: ERR_INPUT (settings, steps, sizes),
 * ERR_NOMEM. */
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

/* The number of steps it was made for. */
int sampler_num_steps(const sampler_t *s)
{
    return s->num_steps;
}

/* The model timestep of step i, 0 <= i < num_steps. */
float sampler_timestep(const sampler_t *s, int i)
{
    assert(i >= 0 && i < s->num_steps);
    return (float)s->timesteps[i];
}

/* The scale of the initial noise. */
float sampler_init_sigma(const sampler_t *s)
{
    (void)s;
    return 1.0f; /* init_noise_sigma is 1 for all three schedulers */
}

/* Whether step i adds fresh noise (0 for a step out of range). */
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
