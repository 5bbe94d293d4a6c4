/* The sampling loop, the only one: it draws the noise, scales it and steps the sampler on the
 * whole canvas. How the model output is computed is the caller's eval callback (tile_eval for
 * every level, recorded outputs in the parity tests, ranks later). */
#include "worker/worker.h"

#include <stdlib.h>
#include <string.h>

/* Stream `stream` of the canvas: L->noise, else Philox per image at global pixel coordinates
 * (the canvas's first row is global row L->y0). */
static void loop_noise(const sample_loop *L, uint32_t stream, float *dst)
{
    if (L->noise) {
        L->noise(L->noise_ctx, stream, dst);
        return;
    }
    size_t per = (size_t)L->channels * L->h * L->w;
    for (int i = 0; i < L->n; i++) {
        noise_key k = {L->seed, L->first_image + (uint32_t)i, L->level, stream};
        noise_fill(&k, dst + i * per, L->channels, L->h, L->w, L->y0, 0);
    }
}

static int loop_check(const sample_loop *L, strata_err *e)
{
    if (L->steps < 1) return err_set(e, ERR_INPUT, "steps: must be at least 1");
    if (L->n < 1 || L->channels < 1 || L->h < 1 || L->w < 1)
        return err_set(e, ERR_INPUT, "canvas %d x %d x %d x %d: every side must be positive", L->n,
                       L->channels, L->h, L->w);
    if (!L->eval) return err_set(e, ERR_INPUT, "sampling loop: no model evaluation");
    return 0;
}

/* The steps, once the sampler and the buffers exist (nothing is allocated in here). */
static int loop_steps(const sample_loop *L, sampler_t *s, float *x, float *out, float *noise,
                      strata_err *e)
{
    int rc = 0, steps = sampler_num_steps(s);
    for (int i = 0; i < steps && !rc; i++) {
        rc = L->eval(L->eval_ctx, i, sampler_timestep(s, i), x, out, e);
        if (!rc && sampler_step_needs_noise(s, i)) loop_noise(L, (uint32_t)i, noise);
        if (!rc) rc = sampler_step(s, i, out, x, noise, e);
        if (!rc && L->progress) L->progress(L->progress_ctx, i + 1, steps);
    }
    return rc;
}

int sample_loop_run(const sample_loop *L, float *x, strata_err *e)
{
    int rc = loop_check(L, e);
    if (rc) return rc;
    size_t numel = (size_t)L->n * L->channels * L->h * L->w;
    sampler_t *s = NULL;
    if ((rc = sampler_new(L->sched, L->steps, numel, L->n, &s, e))) return rc;
    float *out = malloc(numel * sizeof(float)), *noise = malloc(numel * sizeof(float));
    if (!out || !noise)
        rc = err_set(e, ERR_NOMEM, "out of memory for a canvas of %zu values", numel);
    if (L->ready) rc = L->ready(rc, e);
    if (!rc) {
        if (L->init_noise)
            memcpy(x, L->init_noise, numel * sizeof(float));
        else
            loop_noise(L, NOISE_STREAM_INIT, x);
        float sigma = sampler_init_sigma(s);
        for (size_t j = 0; j < numel; j++)
            x[j] *= sigma;
        rc = loop_steps(L, s, x, out, noise, e);
    }
    free(out);
    free(noise);
    sampler_free(s);
    return rc;
}
