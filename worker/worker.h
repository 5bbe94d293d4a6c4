/* worker: the level runner and the worker loop that serves it to a coordinator (loop.c, with
 * its compute thread in compute.c). One sampling loop (sample_loop_run, sample.c) runs
 * `strata sample` and every level task of the farm; the model evaluation is its callback
 * (tile_eval: tiles blended, one tile when untiled). Under mpirun a level task runs on a rank
 * group (worker/group.h): each rank steps the sampler on the rows it owns and computes its block
 * of windows, exchanging rows and window outputs with the others. The only header other folders
 * include from worker/. */
#ifndef STRATA_WORKER_H
#define STRATA_WORKER_H

#include "kernels/kernels.h"
#include "proto/proto.h"

#include <signal.h>
#include <stdint.h>

/* ---------------------------------------------------------------- the sampling loop */

/* The model's output for the canvas x (n images of channels x h x w) at step `step`, timestep
 * t, into out (same shape). How it is computed (one forward, tiles blended, a rank group's
 * exchange for the rows this rank owns) is the callback's business: the loop only steps the
 * sampler. Returns 0 or a strata_err code with e filled. */
typedef int (*sample_eval_fn)(void *ctx, int step, float t, const float *x, float *out,
                              strata_err *e);

/* Noise of one stream (NOISE_STREAM_INIT or a step index) for the whole canvas, into dst. */
typedef void (*sample_noise_fn)(void *ctx, uint32_t stream, float *dst);

/* One run of the sampling loop over a canvas of n images of channels x h x w. */
typedef struct sample_loop {
    const sched_config *sched;
    int steps;
    int n, channels, h, w;
    int y0; /* the canvas is rows [y0, y0 + h) of the image (a rank's band); 0: the whole */
    sample_eval_fn eval;
    void *eval_ctx;
    /* noise: image i's value at (c, y, x) is noise_at(key (seed, first_image + i, level, stream),
     * c, y, x), a function of global pixel coordinates only, so that tiles, ranks and batches
     * never change it. noise (NULL: that Philox noise) replaces it, e.g. by recorded noise. */
    uint64_t seed;
    uint32_t first_image;
    uint32_t level;
    const float *init_noise; /* the canvas's initial noise instead of stream INIT, or NULL */
    sample_noise_fn noise;
    void *noise_ctx;
    void (*progress)(void *ctx, int step, int steps); /* after each step, or NULL */
    void *progress_ctx;
    /* once the loop's buffers are allocated, before the first step: given 0 or the allocation's
     * error, returns the code to go on with (a rank group agrees on it); NULL: none */
    int (*ready)(int rc, strata_err *e);
} sample_loop;

/* The sampling loop: x <- initial noise x init_sigma, then for each step x <- step(eval(x, t),
 * x, noise). x is the canvas (n, channels, h, w). Deterministic: every random number comes from
 * the Philox key above (docs/design.md section 2) unless L->noise replaces it. */
int sample_loop_run(const sample_loop *L, float *x, strata_err *e);

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
    tile_blend_mode tile_blend; /* TILE_BLEND_STEP (0): windows blended at every step */
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

/* One level run over a canvas of n images of h x w (what `strata sample` asks for; the farm's
 * task is n = 1, h = w = side). Image i's noise keys are (seed, first_image + i, p->index, *).
 * Every image gets the same cond and class. */
typedef struct level_canvas {
    int n, h, w;
    uint64_t seed;
    uint32_t first_image;
    const uint8_t *cond; /* the previous level's RGB8 image (cond_h x cond_w), or NULL */
    int cond_h, cond_w;
    int class_label; /* -1: none (class-conditional models get their null class) */
    const float
        *init_noise; /* (n, out_channels, h, w) instead of the drawn initial noise, or NULL */
    void (*progress)(void *ctx, int step, int steps);
    void *progress_ctx;
} level_canvas;

/* Run a level over a canvas: conditioning, guidance and tiles (tile_eval) around
 * sample_loop_run. x is (n, out_channels, h, w); p->side is not used (c->h, c->w are). */
int level_sample(unet_t *m, const level_params *p, const level_canvas *c, float *x, strata_err *e);

/* Run one image through a level (level_sample with n = 1 on side x side); out is side x side
 * RGB8. Tiles are blended at every step (docs/design.md section 3); the result does not depend on
 * threads or on how tiles are batched. */
int level_run(unet_t *m, const level_params *p, const level_task *t, uint8_t *out, strata_err *e);

/* Bilinear resize of a CHW float image with align_corners=True (as DeepFloyd IF upsamples). */
void image_resize_bilinear(const float *src, int channels, int sh, int sw, float *dst, int dh,
                           int dw);

/* ---------------------------------------------------------------- model evaluation in tiles */

enum { TILE_MAX_PER_AXIS = 256 };

/* Tile origins along one axis: tiles spread evenly, the last flush with the edge. Returns the
 * count, 1 when side <= tile, or -1 when more than max tiles would be needed. */
int tile_positions(int side, int tile, int overlap, int *pos, int max);

/* A level's model evaluation, the sampling loop's eval callback: over a canvas of n images the
 * model sees concat([x, cond]) in tile windows whose outputs are blended with a raised-cosine
 * feather into one global output (docs/design.md section 3); one window covering the canvas is the
 * untiled level. Guided, each window runs as one batch of the n conditional images and the n
 * null-class ones, and out = uncond + guidance (cond - uncond). Fill the fields down to
 * `overlap`, then tile_eval_init. */
typedef struct tile_eval {
    unet_t *model;
    int n, h, w;
    const float *cond;   /* (n, in_channels - out_channels, rows, w), or NULL when that is 0 */
    const float *labels; /* class labels of one window's batch (n, then n null-class ones when
                            guided) x class_label_dim, or NULL for models without classes */
    int guided;
    float guidance;
    int tile, overlap; /* tile side (0, or >= a canvas side: one window along it) and overlap */
    /* x and cond hold canvas rows [y_lo, y_lo + rows) only (a rank's band); rows 0: all h */
    int y_lo, rows;
    /* set by tile_eval_init */
    int oc, cc, th, tw, nty, ntx;
    int ty[TILE_MAX_PER_AXIS], tx[TILE_MAX_PER_AXIS];
    float *fy, *fx, *wsum, *in, *out, *ts;
} tile_eval;

/* Check the canvas against the model (sides and tile multiples of its downsampling, overlap
 * below the tile, a cond exactly when the model takes one) and allocate. ERR_INPUT or
 * ERR_NOMEM; tile_eval_free is safe either way. */
int tile_eval_init(tile_eval *t, strata_err *e);
void tile_eval_free(tile_eval *t);

/* sample_eval_fn over a tile_eval (ctx). Windows run in index order, so the result does not
 * depend on threads; pixels are blended in that order too. */
int tile_eval_model(void *ctx, int step, float t, const float *x, float *out, strata_err *e);

/* tile_blend: finished (tiles_finished.c), the comparison to blending at every step: each window
 * of t sampled to the end as a canvas of its own (its own sampler; L's noise read at the window's
 * global pixels; t's cond cropped to it), then the finished windows blended once with the same
 * feather. L is the level's loop over the whole canvas, x its result as sample_loop_run's. Not
 * under a rank group, nor with L->noise replaced (ERR_INPUT). */
int tile_finished_sample(tile_eval *t, const sample_loop *L, float *x, strata_err *e);

/* ---------------------------------------------------------------- the worker loop */

/* Largest image side a worker makes (a level's side or a TASK's resize): the RESULT frame,
 * side * side * 3 bytes, must fit PROTO_MAX_FRAME. */
#define WORKER_MAX_SIDE PROTO_MAX_SIDE

/* A level's settings, taken from WELCOME (proto_level_config, the contract with the
 * coordinator) once checked against what this worker can run. level.sched is NOT filled here:
 * it comes from the model directory when the model is loaded
 * (worker_model_scheduler(model, sampler, eta)). */
typedef struct worker_config {
    char model[4096]; /* not WELCOME's: the worker's own (worker_opts.model); "" for a stub */
    char sampler[16];
    float eta;
    level_params level;
    int heartbeat_ms; /* the coordinator's heartbeat interval */
    int liveness;     /* heartbeats of silence before the coordinator is presumed gone */
    char model_hash[MODEL_HASH_HEX + 1]; /* WELCOME's: the model loaded must match ("": any) */
} worker_config;

/* Check a WELCOME's level settings and copy them into c (c->model is left "": the worker's
 * own). Errors are ERR_INPUT naming the field:
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
    /* CURVE (Z85): this worker's secret key and the coordinator's public key; NULL: plaintext */
    const char *key, *server_key;
    /* the level's model directory here (required unless stub_ms >= 0: WELCOME names no path);
     * HELLO carries its hash (model_hash_dir) */
    const char *model;
    /* set (e.g. by a signal handler) to stop as on SHUTDOWN; may be NULL */
    volatile sig_atomic_t *stop;
    /* set (SIGTERM) to drain: take no new task, finish the one held, send its RESULT, say
     * BYE and return 0; may be NULL */
    volatile sig_atomic_t *drain;
} worker_opts;

/* Serve the coordinator until SHUTDOWN or *stop: HELLO, WELCOME, load the model once, then
 * (each HELLO after the first goes out on a fresh connection with a new random routing id, so a
 * registration is bound to one connection; an ERROR from the coordinator makes the worker say
 * HELLO again, one starting "refused" ends it with ERR_INPUT: its model is not the level's), then
 * READY / TASK / RESULT with HEARTBEATs every heartbeat_ms while tasks run in a compute thread.
 * When the coordinator is silent for liveness x heartbeat_ms, HELLO is sent again until a new
 * WELCOME (the model is kept when its directory is the same). A failing task is a RESULT with
 * ok=false; the worker goes on. Returns 0, or a negative strata_err code with e filled: ERR_INPUT
 * for a bad WELCOME or model (the message names the key or file), ERR_RUNTIME for socket errors.
 * *abandoned (may be NULL) is set to 1 when a task was still running at return: the compute
 * thread and its memory are left to process exit, and the caller should _exit (atexit handlers
 * of OpenBLAS/OpenMP must not run under a thread still computing). */
int worker_run(const worker_opts *o, int *abandoned, strata_err *e);

/* ---------------------------------------------------------------- MPI rank groups */

/* Under mpirun (OMPI_COMM_WORLD_SIZE or PMIX_RANK set): MPI_Init_thread, so that this process
 * is one rank of a group serving as one worker (worker/group.h). Otherwise nothing: a single
 * process, rank 0 of 1. 0 or ERR_RUNTIME. */
int worker_group_init(int *argc, char ***argv, strata_err *e);
int worker_group_rank(void);
int worker_group_size(void);
/* 1 when this process is a rank of a group (of any size, 1 included) under mpirun. */
int worker_group_on(void);

/* Ranks other than 0: run each command rank 0 broadcasts (load the model, run a task's share
 * of the windows) until it says stop. Waits sleep rather than spin. 0 or an error code. */
int worker_group_follow(const worker_opts *o, strata_err *e);

/* MPI_Finalize if MPI was started and not yet finalized. */
void worker_group_finalize(void);

#endif
