/* The level runner: a level's conditioning (upsampled, noised cond; class labels) around the one
 * sampling loop, with the model evaluated in tiles (tiles.c). */
#include "worker/group.h"

#include <stdlib.h>
#include <string.h>

/* Rows [y_lo, y_lo + rows) of the bilinear resize into dst (channels x rows x dw): every
 * output pixel is computed on its own, so a band has the bytes of the same rows of the whole. */
static void resize_rows(const float *src, int channels, int sh, int sw, float *dst, int dh, int dw,
                        int y_lo, int rows)
{
    /* align_corners=True: corners map to corners, src = dst * (in - 1) / (out - 1) */
    float ry = dh > 1 ? (float)(sh - 1) / (float)(dh - 1) : 0.0f;
    float rx = dw > 1 ? (float)(sw - 1) / (float)(dw - 1) : 0.0f;
    for (int c = 0; c < channels; c++)
        for (int y = y_lo; y < y_lo + rows; y++) {
            float fy = (float)y * ry;
            int y0 = (int)fy, y1 = y0 + 1 < sh ? y0 + 1 : sh - 1;
            float wy = fy - (float)y0;
            const float *r0 = src + ((size_t)c * sh + y0) * sw,
                        *r1 = src + ((size_t)c * sh + y1) * sw;
            float *d = dst + ((size_t)c * rows + y - y_lo) * dw;
            for (int x = 0; x < dw; x++) {
                float fx = (float)x * rx;
                int x0 = (int)fx, x1 = x0 + 1 < sw ? x0 + 1 : sw - 1;
                float wx = fx - (float)x0;
                float top = r0[x0] + (r0[x1] - r0[x0]) * wx;
                float bottom = r1[x0] + (r1[x1] - r1[x0]) * wx;
                d[x] = top + (bottom - top) * wy;
            }
        }
}

void image_resize_bilinear(const float *src, int channels, int sh, int sw, float *dst, int dh,
                           int dw)
{
    resize_rows(src, channels, sh, sw, dst, dh, dw, 0, dh);
}

/* What one level run holds besides its model evaluation. */
typedef struct level_state {
    const level_params *p;
    const level_canvas *c;
    const unet_info *info;
    float *cond;   /* (n, 3, h, w): the upsampled, noised cond of every image */
    float *labels; /* the batch's class labels (tile_eval.labels) */
    tile_eval te;
} level_state;

/* The level's kind against its model, and the noise level against the schedule. */
static int level_check(const level_state *s, strata_err *e)
{
    const level_params *p = s->p;
    int cc = s->info->in_channels - s->info->out_channels;
    if (p->kind == LEVEL_KIND_GENERATE && cc)
        return err_set(e, ERR_INPUT, "a generate level's model must not take a cond");
    if (p->kind != LEVEL_KIND_GENERATE && !cc)
        return err_set(e, ERR_INPUT, "a refine level's model must take a cond");
    if (cc && cc != 3) return err_set(e, ERR_INPUT, "model takes %d cond channels, not 3", cc);
    if (p->noise_level < 0 || p->noise_level >= p->sched.num_train_timesteps)
        return err_set(e, ERR_INPUT, "noise_level %d is not below num_train_timesteps %d",
                       p->noise_level, p->sched.num_train_timesteps);
    return 0;
}

/* Class labels of the model: the noise level for class_embed_type "timestep" models, the
 * canvas's class (or the null class, the last one) for lookup tables; guidance adds the null
 * class as the second half of the batch. */
static int level_labels(level_state *s, strata_err *e)
{
    const unet_info *info = s->info;
    int n = s->c->n, label = s->c->class_label, null_class = info->num_class_embeds - 1;
    /* guidance pulls towards a class: without one (the null class) it would change nothing */
    s->te.guided = s->p->guidance > 1.0f && info->num_class_embeds > 1 && label >= 0;
    if (!info->needs_class_labels) return 0;
    if (info->class_label_dim != 1)
        return err_set(e, ERR_INPUT, "models with class_embed_type identity cannot run a level");
    if (info->num_class_embeds && label >= info->num_class_embeds)
        return err_set(e, ERR_INPUT, "class label %d is not in [0, %d)", label,
                       info->num_class_embeds);
    float value = !info->num_class_embeds ? (float)s->p->noise_level
                                          : (float)(label >= 0 ? label : null_class);
    if (!(s->labels = malloc((size_t)n * 2 * sizeof(float))))
        return err_set(e, ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        s->labels[i] = value;
        s->labels[n + i] = (float)null_class;
    }
    s->te.labels = s->labels;
    return 0;
}

/* cond = bilinear upsample of the previous level's image, then each image's copy noised once
 * to noise_level with its own augmentation noise; only the rows the tiles read (te.y_lo, te.rows)
 * when the canvas is a rank's band. */
static int level_cond(level_state *s, strata_err *e)
{
    const level_canvas *c = s->c;
    int y_lo = s->te.y_lo, rows = s->te.rows ? s->te.rows : c->h;
    size_t per = (size_t)3 * rows * c->w, small_n = (size_t)3 * c->cond_h * c->cond_w;
    if (!c->cond || c->cond_h < 1 || c->cond_w < 1)
        return err_set(e, ERR_INPUT, "a refine level needs the previous level's image");
    float *small = malloc(small_n * sizeof(float)), *noise = malloc(per * sizeof(float));
    s->cond = malloc((size_t)c->n * per * sizeof(float));
    int rc = !small || !noise || !s->cond ? err_set(e, ERR_NOMEM, "out of memory") : 0;
    if (!rc) {
        image_to_tensor(c->cond, c->cond_h, c->cond_w, small);
        resize_rows(small, 3, c->cond_h, c->cond_w, s->cond, c->h, c->w, y_lo, rows);
    }
    /* every copy from the clean upsample first: image 0's copy is noised in place below */
    for (int i = 1; i < c->n && !rc; i++)
        memcpy(s->cond + i * per, s->cond, per * sizeof(float));
    for (int i = 0; i < c->n && !rc && s->p->noise_level > 0; i++) {
        float *ci = s->cond + i * per;
        noise_key k = {c->seed, c->first_image + (uint32_t)i, s->p->index, NOISE_STREAM_AUG};
        noise_fill(&k, noise, 3, rows, c->w, y_lo, 0);
        sched_add_noise(&s->p->sched, s->p->noise_level, ci, noise, ci, per);
    }
    free(small);
    free(noise);
    s->te.cond = s->cond;
    return rc;
}

/* The sampling loop over the canvas with the tiles as its model evaluation. A direct level is
 * one evaluation at the top timestep, the model's x0 from pure noise and cond: trailing spacing
 * puts a single step there whatever the model's scheduler says. */
static sample_loop level_loop(const level_state *s, sched_config *sched)
{
    const level_params *p = s->p;
    const level_canvas *c = s->c;
    int direct = p->kind == LEVEL_KIND_DIRECT;
    *sched = p->sched;
    if (direct) sched->timestep_spacing = SCHED_SPACING_TRAILING;
    return (sample_loop){.sched = sched,
                         .steps = direct ? 1 : p->steps,
                         .n = c->n,
                         .channels = s->te.oc,
                         .h = c->h,
                         .w = c->w,
                         .eval = tile_eval_model,
                         .eval_ctx = (void *)&s->te,
                         .seed = c->seed,
                         .first_image = c->first_image,
                         .level = p->index,
                         .init_noise = c->init_noise,
                         .progress = c->progress,
                         .progress_ctx = c->progress_ctx};
}

static level_state level_state_of(unet_t *m, const level_params *p, const level_canvas *c)
{
    level_state s = {.p = p, .c = c, .info = unet_get_info(m)};
    s.te = (tile_eval){.model = m,
                       .n = c->n,
                       .h = c->h,
                       .w = c->w,
                       .guidance = p->guidance,
                       .tile = p->tile,
                       .overlap = p->overlap};
    return s;
}

int level_sample(unet_t *m, const level_params *p, const level_canvas *c, float *x, strata_err *e)
{
    level_state s = level_state_of(m, p, c);
    int rc = level_check(&s, e);
    if (!rc) rc = level_labels(&s, e);
    if (!rc && p->kind != LEVEL_KIND_GENERATE) rc = level_cond(&s, e);
    if (!rc) rc = tile_eval_init(&s.te, e);
    sched_config sched;
    sample_loop L = level_loop(&s, &sched);
    if (!rc)
        rc = p->tile_blend == TILE_BLEND_FINISHED ? tile_finished_sample(&s.te, &L, x, e)
                                                  : sample_loop_run(&L, x, e);
    tile_eval_free(&s.te);
    free(s.cond);
    free(s.labels);
    return rc;
}

/* A rank's part of the level (group.h): the cond and x of the rows its windows read and own,
 * set up after the shares are planned. A rank without windows holds nothing. */
static int level_group_setup(level_state *s, tile_group *g, float **x, strata_err *e)
{
    if (s->p->sched.thresholding)
        return err_set(e, ERR_INPUT,
                       "a rank group cannot run a sampler with thresholding: its "
                       "quantiles are per image, and each rank holds only rows");
    if (s->p->tile_blend == TILE_BLEND_FINISHED)
        return err_set(e, ERR_INPUT, "a rank group cannot run tile_blend: finished; use step");
    int rc = level_check(s, e);
    if (!rc) rc = level_labels(s, e);
    if (!rc) rc = tile_eval_grid(&s->te, e);
    if (!rc) rc = tile_group_init(g, &s->te, e);
    if (rc) return rc;
    const rank_share *me = &g->share[g->r];
    if (me->khi == me->klo) return 0;
    if (s->p->kind != LEVEL_KIND_GENERATE) rc = level_cond(s, e);
    if (!rc) rc = tile_eval_init(&s->te, e);
    size_t numel = (size_t)s->te.n * s->te.oc * (me->own_hi - me->own_lo) * s->te.w;
    if (!rc && !(*x = malloc(numel * sizeof(float))))
        rc = err_set(e, ERR_NOMEM, "out of memory for rows %d to %d", me->own_lo, me->own_hi);
    return rc;
}

/* Under mpirun: each rank steps the sampler on the rows it owns, the tile group exchanging what
 * the windows need; rank 0 gets the image. The ranks agree after every stage that could fail on
 * one of them alone, so that none waits for a rank that has given up. */
static int level_group_run(level_state *s, uint8_t *out, strata_err *e)
{
    tile_group g = {0};
    float *x = NULL;
    int rc = group_agree_err(level_group_setup(s, &g, &x, e), e);
    const rank_share *me = rc ? NULL : &g.share[g.r];
    sched_config sched;
    sample_loop L = level_loop(s, &sched);
    if (me && me->own_hi > me->own_lo) {
        L.h = me->own_hi - me->own_lo, L.y0 = me->own_lo, L.init_noise = NULL;
        L.eval = tile_group_eval, L.eval_ctx = &g, L.ready = group_agree_err;
        rc = sample_loop_run(&L, x, e);
    } else if (me) { /* no windows: it only takes part in the group's agreements */
        rc = group_agree_err(0, e);
        for (int i = 0; i < L.steps && !rc; i++)
            rc = tile_group_eval(&g, i, 0.0f, NULL, NULL, e);
    }
    if (!rc) rc = tile_group_gather(&g, x, out, e);
    if (me) tile_group_report(&g);
    tile_group_free(&g);
    free(x);
    return rc;
}

int level_run(unet_t *m, const level_params *p, const level_task *t, uint8_t *out, strata_err *e)
{
    int oc = unet_get_info(m)->out_channels;
    if (oc != 3) return err_set(e, ERR_INPUT, "model outputs %d channels, not 3", oc);
    if (p->side < 1) return err_set(e, ERR_INPUT, "side %d: must be positive", p->side);
    level_canvas c = {.n = 1,
                      .h = p->side,
                      .w = p->side,
                      .seed = t->seed,
                      .first_image = t->image,
                      .cond = t->cond,
                      .cond_h = t->cond_side,
                      .cond_w = t->cond_side,
                      .class_label = t->class_label};
    level_state s = level_state_of(m, p, &c);
    if (worker_group_on()) { /* one rank too: the same path, and its stats for benchmarks */
        int rc = level_group_run(&s, out, e);
        tile_eval_free(&s.te), free(s.cond), free(s.labels);
        return rc;
    }
    float *x = malloc((size_t)3 * p->side * p->side * sizeof(float));
    if (!x) return err_set(e, ERR_NOMEM, "out of memory for a %dx%d canvas", p->side, p->side);
    int rc = level_sample(m, p, &c, x, e);
    if (!rc) image_from_tensor(x, p->side, p->side, out);
    free(x);
    return rc;
}
