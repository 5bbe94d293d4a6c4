/* tile_blend: finished, built to be compared with blending at every step (tiles.c): each tile
 * window is sampled to the end as a canvas of its own, and only the finished windows are blended,
 * once, with the same feather and normalisation (tile_blend_rows, tile_normalise_rows). Each
 * window's sampler sees only its window, so neighbours may drift apart where they overlap, which
 * one global step rules out (tests/worker/test_seams.c compares the two). */
#include "worker/group.h"

#include <stdlib.h>
#include <string.h>

/* One window's run: the window as an untiled canvas, and where it sits in the level's canvas. */
typedef struct window_run {
    const sample_loop *L; /* the level's loop over the whole canvas */
    tile_eval te;         /* the window alone: one tile covering it */
    float *cond, *init;   /* the window's crops of the cond and of L->init_noise, or NULL */
    int y0, x0, k, nwin;
} window_run;

/* sample_noise_fn of a window: the level's Philox noise at the window's global pixels, so a
 * window draws what the whole canvas would draw there. */
static void window_noise(void *ctx, uint32_t stream, float *dst)
{
    const window_run *r = ctx;
    const sample_loop *L = r->L;
    size_t per = (size_t)L->channels * r->te.h * r->te.w;
    for (int i = 0; i < L->n; i++) {
        noise_key k = {L->seed, L->first_image + (uint32_t)i, L->level, stream};
        noise_fill(&k, dst + i * per, L->channels, r->te.h, r->te.w, r->y0, r->x0);
    }
}

/* Progress over all the windows' steps, window after window. */
static void window_progress(void *ctx, int step, int steps)
{
    const window_run *r = ctx;
    r->L->progress(r->L->progress_ctx, r->k * steps + step, r->nwin * steps);
}

/* The window's crop of n images of channels x h x w into dst (n, channels, th, tw). */
static void window_crop(const window_run *r, const float *src, int n, int channels, int h, int w,
                        float *dst)
{
    int th = r->te.h, tw = r->te.w;
    for (int i = 0; i < n * channels; i++)
        for (int y = 0; y < th; y++)
            memcpy(dst + ((size_t)i * th + y) * tw, src + ((size_t)i * h + r->y0 + y) * w + r->x0,
                   (size_t)tw * sizeof(float));
}

/* Window r->k of t sampled to the end into dst (n, oc, th, tw). */
static int window_sample(const tile_eval *t, window_run *r, float *dst, strata_err *e)
{
    const sample_loop *L = r->L;
    sample_loop W = *L;
    W.h = t->th;
    W.w = t->tw;
    W.y0 = 0; /* the window is a canvas of its own; its noise comes from window_noise */
    W.eval = tile_eval_model;
    W.eval_ctx = &r->te;
    W.noise = window_noise;
    W.noise_ctx = r;
    W.init_noise = r->init;
    W.progress = L->progress ? window_progress : NULL;
    W.progress_ctx = r;
    W.ready = NULL;
    r->y0 = t->ty[r->k / t->ntx];
    r->x0 = t->tx[r->k % t->ntx];
    if (t->cc) window_crop(r, t->cond, t->n, t->cc, t->h, t->w, r->cond);
    if (r->init) window_crop(r, L->init_noise, t->n, t->oc, t->h, t->w, r->init);
    return sample_loop_run(&W, dst, e);
}

/* Each window sampled in index order and added, feathered, into x as soon as it is finished;
 * x divided by the summed weights at the end (tile_eval_model's blend, once). */
static int windows_blend(tile_eval *t, window_run *r, float *win, float *x, strata_err *e)
{
    tile_rows whole = {x, 0, t->h};
    memset(x, 0, (size_t)t->n * t->oc * t->h * t->w * sizeof(float));
    for (r->k = 0; r->k < r->nwin; r->k++) {
        int rc = window_sample(t, r, win, e);
        if (rc) return rc;
        tile_blend_rows(t, &(tile_rows){win, r->y0, t->th}, r->k, r->y0, r->y0 + t->th, &whole);
    }
    tile_normalise_rows(t, &whole);
    return 0;
}

int tile_finished_sample(tile_eval *t, const sample_loop *L, float *x, strata_err *e)
{
    if (worker_group_on() || t->rows)
        return err_set(e, ERR_INPUT, "a rank group cannot run tile_blend: finished; use step");
    if (L->noise) return err_set(e, ERR_INPUT, "tile_blend: finished needs the level's own noise");
    window_run r = {.L = L, .nwin = t->nty * t->ntx};
    r.te = (tile_eval){.model = t->model,
                       .n = t->n,
                       .h = t->th,
                       .w = t->tw,
                       .labels = t->labels,
                       .guided = t->guided,
                       .guidance = t->guidance};
    size_t per = tile_window_numel(t), cper = (size_t)t->n * t->cc * t->th * t->tw;
    /* one window is the canvas: sampled straight into x, with no blend to round */
    float *win = r.nwin > 1 ? malloc(per * sizeof(float)) : x;
    r.cond = t->cc ? malloc(cper * sizeof(float)) : NULL;
    r.te.cond = r.cond;
    r.init = L->init_noise ? malloc(per * sizeof(float)) : NULL;
    int rc = 0;
    if (!win || (t->cc && !r.cond) || (L->init_noise && !r.init))
        rc = err_set(e, ERR_NOMEM, "out of memory for a %dx%d window", t->th, t->tw);
    if (!rc) rc = tile_eval_init(&r.te, e);
    if (!rc && r.nwin == 1) rc = window_sample(t, &r, x, e);
    if (!rc && r.nwin > 1) rc = windows_blend(t, &r, win, x, e);
    tile_eval_free(&r.te);
    free(r.cond);
    free(r.init);
    if (win != x) free(win);
    return rc;
}
