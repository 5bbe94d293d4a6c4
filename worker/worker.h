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

/* ---------------------------------------------------------------- levels */

typedef enum level_mode {
    LEVEL_MODE_GENERATE, /* from pure noise */
    LEVEL_MODE_REFINE,   /* sampling loop on concat([x_t, upsampled cond]) */
    LEVEL_MODE_DIRECT,   /* one model evaluation: the refine model's x0 after a 1-step loop */
} level_mode;

/* What a worker needs to run its level (sent by the coordinator in WELCOME). */
typedef struct level_params {
    level_mode mode;
    uint32_t index; /* the level's position in the pipeline: part of every noise key */
    int side;       /* output side in pixels */
    int steps;
    sched_config sched;
    int noise_level; /* noise-conditioning augmentation timestep of cond; 0 = none */
    float guidance;  /* classifier-free guidance scale; <= 1 = off */
    int tile;        /* tile side; 0 or >= side = one tile */
    int overlap;
} level_params;

/* One image's task at a level. */
typedef struct level_task {
    uint64_t seed;
    uint32_t image;
    const uint8_t *cond; /* the previous level's RGB8 image, or NULL for generate */
    int cond_side;
    int class_label; /* -1: none (class-conditional models get their null class) */
} level_task;

/* The sampler settings of a model directory: DIR/scheduler_config.json, else
 * DIR/scheduler/scheduler_config.json, else DIR/../scheduler/scheduler_config.json (a pipeline
 * folder), else DDPM defaults. sampler ("ddim", "ddpm", "dpm++2m"; NULL or "" keeps the
 * file's class) overrides the class only: the schedule and prediction type stay. */
int worker_model_scheduler(const char *dir, const char *sampler, float eta, sched_config *c,
                           kerr *e);

/* Run one image through a level; out is side x side RGB8. Tiles are blended at every step
 * (DESIGN.md section 3); the result does not depend on threads or on how tiles are batched. */
int level_run(unet_t *m, const level_params *p, const level_task *t, uint8_t *out, kerr *e);

/* Tile origins along one axis: tiles spread evenly, the last flush with the edge. Returns the
 * count (at most max), 1 when side <= tile. */
int tile_positions(int side, int tile, int overlap, int *pos, int max);

/* Bilinear resize of a CHW float image with align_corners=True (as DeepFloyd IF upsamples). */
void image_resize_bilinear(const float *src, int channels, int sh, int sw, float *dst, int dh,
                           int dw);

#endif
