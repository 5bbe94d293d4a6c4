/* Internal to kernels/: the state of a sampler, shared by its set-up (sampler.c), its x0
 * prediction (sampler_x0.c) and its steps (sampler_steps.c). Not included outside kernels/. */
#ifndef STRATA_KERNELS_SAMPLER_STATE_H
#define STRATA_KERNELS_SAMPLER_STATE_H

#include "kernels/kernels.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>

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

/* With thresholding on, fill s->x0 with the thresholded prediction; steps then read it. */
void sched_predict(sampler_t *s, const sched_x0 *p, const float *out, const float *sample);

/* x0 of element j: the thresholded buffer, or computed here and clipped. */
static inline float sched_x0_of(const sampler_t *s, const sched_x0 *p, size_t j, float sample,
                                float out)
{
    return s->x0 ? s->x0[j] : sched_clip(s, sched_x0_at(p, sample, out));
}

#endif
