/* worker: the level runner (sampling loop, conditioning) and, later, the worker loop and MPI
 * rank groups. The only header other folders include from worker/. */
#ifndef STRATA_WORKER_H
#define STRATA_WORKER_H

#include "kernels/kernels.h"
#include "proto/proto.h"

#include <signal.h>
#include <stdint.h>

/* One sampling run of a level over n images of size h x w. */
typedef struct sample_job {
    unet_t *model;
    const sched_config *sched;
    int steps;
    int n, h, w;
    const float *cond; /* (n, cond_channels, h, w) concatenated after x_t, or NULL */
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
int runner_sample(const sample_job *job, float *out, strata_err *e);

/* ---------------------------------------------------------------- levels */

/* What a worker needs to run its level (sent by the coordinator in WELCOME). */
typedef struct level_params {
    level_kind kind; /* proto's level contract */
    uint32_t index;  /* the level's position in the pipeline: part of every noise key */
    int side;        /* output side in pixels */
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
                           strata_err *e);

/* Run one image through a level; out is side x side RGB8. Tiles are blended at every step
 * (DESIGN.md section 3); the result does not depend on threads or on how tiles are batched. */
int level_run(unet_t *m, const level_params *p, const level_task *t, uint8_t *out, strata_err *e);

/* Tile origins along one axis: tiles spread evenly, the last flush with the edge. Returns the
 * count, 1 when side <= tile, or -1 when more than max tiles would be needed. */
int tile_positions(int side, int tile, int overlap, int *pos, int max);

/* Bilinear resize of a CHW float image with align_corners=True (as DeepFloyd IF upsamples). */
void image_resize_bilinear(const float *src, int channels, int sh, int sw, float *dst, int dh,
                           int dw);

/* ---------------------------------------------------------------- the worker loop */

/* Largest image side a worker makes (a level's side or a TASK's resize): the RESULT frame,
 * side * side * 3 bytes, must fit PROTO_MAX_FRAME. */
#define WORKER_MAX_SIDE PROTO_MAX_SIDE

/* A level's settings, taken from WELCOME (proto_level_config, the contract with the
 * coordinator) once checked against what this worker can run. level.sched is NOT filled here:
 * it comes from the model directory when the model is loaded
 * (worker_model_scheduler(model, sampler, eta)). */
typedef struct worker_config {
    char model[4096];
    char sampler[16];
    float eta;
    level_params level;
    int heartbeat_ms; /* the coordinator's heartbeat interval */
    int liveness;     /* heartbeats of silence before the coordinator is presumed gone */
} worker_config;

/* Check a WELCOME's level settings and copy them into c. Errors are ERR_INPUT naming the field:
 * "WELCOME config: 'side': expected an integer in [1, 8192], got 0". */
int worker_config_from_welcome(const proto_level_config *w, worker_config *c, strata_err *e);

/* Resize a square RGB8 image from side to nside (both >= 1): bilinear (align_corners=True, as
 * levels upsample their cond) when growing; area averaging (torch's interpolate mode "area")
 * when shrinking, so every source pixel counts and nothing aliases. Same side: a copy. */
int worker_image_resize(const uint8_t *src, int side, uint8_t *dst, int nside, strata_err *e);

/* How `strata worker` runs. */
typedef struct worker_opts {
    const char *level;   /* the level this worker serves (HELLO) */
    const char *connect; /* the coordinator's worker endpoint */
    const char *id;      /* worker id and DEALER routing id; NULL: "HOST-PID" */
    int threads;         /* compute threads (kernels_set_threads, set in the compute thread:
                            OpenMP's thread count is per thread); < 1: 1 */
    int stub_ms;         /* >= 0: no model; each task sleeps this long and returns a
                            deterministic image (farm benchmarks). < 0: the real level */
    int verbose;         /* one line per event on stderr (errors are always logged) */
    /* set (e.g. by a signal handler) to stop as on SHUTDOWN; may be NULL */
    volatile sig_atomic_t *stop;
} worker_opts;

/* Serve the coordinator until SHUTDOWN or *stop: HELLO, WELCOME, load the model once, then
 * READY / TASK / RESULT with HEARTBEATs every heartbeat_ms while tasks run in a compute thread.
 * When the coordinator is silent for liveness x heartbeat_ms, HELLO is sent again until a new
 * WELCOME (the model is kept when its directory is the same). A failing task is a RESULT with
 * ok=false; the worker goes on. Returns 0, or a negative strata_err code with e filled: ERR_INPUT
 * for a bad WELCOME or model (the message names the key or file), ERR_RUNTIME for socket errors.
 * *abandoned (may be NULL) is set to 1 when a task was still running at return: the compute
 * thread and its memory are left to process exit, and the caller should _exit (atexit handlers
 * of OpenBLAS/OpenMP must not run under a thread still computing). */
int worker_run(const worker_opts *o, int *abandoned, strata_err *e);

#endif
