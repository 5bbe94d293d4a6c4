/* worker: the level runner (sampling loop, conditioning) and, later, the worker loop and MPI
 * rank groups. The only header other folders include from worker/. */
#ifndef STRATA_WORKER_H
#define STRATA_WORKER_H

#include "kernels/kernels.h"

#include <stdint.h>

/* One sampling run of a level over n images of size h x w. */
typedef struct sample_job {
    unet_t *model;
    const sched_config *sched;
    int steps;
    int n, h, w;
    const float *cond;         /* (n, cond_channels, h, w) concatenated after x_t, or NULL */
    int cond_channels;
    const float *class_labels; /* n * class_label_dim values, or NULL */
    const float *init_noise;   /* (n, out_channels, h, w) to replace the drawn noise, or NULL */
    uint64_t seed;             /* noise: key (seed, first_image + i, level, stream) */
    uint32_t first_image;
    uint32_t level;
    void (*progress)(void *ctx, int step, int steps);
    void *progress_ctx;
} sample_job;

/* Run the sampler loop; out is (n, out_channels, h, w). Deterministic: every random number is
 * drawn from the Philox key of DESIGN.md section 2. */
int runner_sample(const sample_job *job, float *out, kerr *e);

#endif
