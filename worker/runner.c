/* The level runner: the sampling loop around the UNet and the scheduler. */
#include "worker/worker.h"

#include <stdlib.h>
#include <string.h>

static void draw_noise(const sample_job *job, uint32_t stream, int channels, float *dst)
{
    size_t per = (size_t)channels * job->h * job->w;
    for (int i = 0; i < job->n; i++) {
        noise_key k = {job->seed, job->first_image + (uint32_t)i, job->level, stream};
        noise_fill(&k, dst + i * per, channels, job->h, job->w, 0, 0);
    }
}

/* model input = concat([x, cond]) on channels, per image */
static void build_input(const sample_job *job, const float *x, int xc, float *in)
{
    size_t hw = (size_t)job->h * job->w, nx = (size_t)xc * hw;
    size_t nc = (size_t)job->cond_channels * hw;
    for (int i = 0; i < job->n; i++) {
        memcpy(in + i * (nx + nc), x + i * nx, nx * sizeof(float));
        if (nc) memcpy(in + i * (nx + nc) + nx, job->cond + i * nc, nc * sizeof(float));
    }
}

static int check_job(const sample_job *job, const unet_info *info, strata_err *e)
{
    if (info->in_channels != info->out_channels + job->cond_channels)
        return err_set(e, ERR_INPUT,
                       "model takes %d input channels but the level gives %d (x_t) + %d (cond)",
                       info->in_channels, info->out_channels, job->cond_channels);
    if (info->needs_class_labels && !job->class_labels)
        return err_set(e, ERR_INPUT, "model needs class labels");
    if (job->steps < 1) return err_set(e, ERR_INPUT, "steps: must be at least 1");
    return 0;
}

int runner_sample(const sample_job *job, float *out, strata_err *e)
{
    const unet_info *info = unet_get_info(job->model);
    int rc = check_job(job, info, e), oc = info->out_channels;
    if (rc) return rc;
    size_t numel = (size_t)job->n * oc * job->h * job->w;
    size_t in_numel = (size_t)job->n * info->in_channels * job->h * job->w;
    sampler_t *s = NULL;
    if ((rc = sampler_new(job->sched, job->steps, numel, job->n, &s, e))) return rc;
    float *eps = malloc(numel * sizeof(float)), *noise = malloc(numel * sizeof(float));
    float *in = job->cond_channels ? malloc(in_numel * sizeof(float)) : NULL;
    float *t = malloc((size_t)job->n * sizeof(float));
    if (!eps || !noise || !t || (job->cond_channels && !in)) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto done;
    }
    if (job->init_noise)
        memcpy(out, job->init_noise, numel * sizeof(float));
    else
        draw_noise(job, NOISE_STREAM_INIT, oc, out);
    float sigma = sampler_init_sigma(s);
    for (size_t j = 0; j < numel; j++)
        out[j] *= sigma;
    for (int i = 0; i < sampler_num_steps(s) && !rc; i++) {
        for (int k = 0; k < job->n; k++)
            t[k] = sampler_timestep(s, i);
        if (in) build_input(job, out, oc, in);
        rc = unet_forward(job->model, in ? in : out, job->n, job->h, job->w, t, job->class_labels,
                          eps, e);
        if (!rc && sampler_step_needs_noise(s, i)) draw_noise(job, (uint32_t)i, oc, noise);
        if (!rc) rc = sampler_step(s, i, eps, out, noise, e);
        if (!rc && job->progress) job->progress(job->progress_ctx, i + 1, sampler_num_steps(s));
    }
done:
    free(eps);
    free(noise);
    free(in);
    free(t);
    sampler_free(s);
    return rc;
}
