/* The level runner: conditioning, classifier-free guidance, tiles blended at every step. */
#include "worker/worker.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { LEVEL_MAX_TILES_PER_AXIS = 256 };

int tile_positions(int side, int tile, int overlap, int *pos, int max)
{
    if (tile <= 0 || side <= tile) {
        pos[0] = 0;
        return 1;
    }
    int stride = tile - overlap, n = (side - overlap + stride - 1) / stride;
    if (n > max) return -1; /* fewer tiles would leave pixels uncovered */
    for (int i = 0; i < n; i++)
        pos[i] = (int)((int64_t)i * (side - tile) / (n - 1));
    return n;
}

void image_resize_bilinear(const float *src, int channels, int sh, int sw, float *dst, int dh,
                           int dw)
{
    /* align_corners=True: corners map to corners, src = dst * (in - 1) / (out - 1) */
    float ry = dh > 1 ? (float)(sh - 1) / (float)(dh - 1) : 0.0f;
    float rx = dw > 1 ? (float)(sw - 1) / (float)(dw - 1) : 0.0f;
    for (int c = 0; c < channels; c++)
        for (int y = 0; y < dh; y++) {
            float fy = (float)y * ry;
            int y0 = (int)fy, y1 = y0 + 1 < sh ? y0 + 1 : sh - 1;
            float wy = fy - (float)y0;
            const float *r0 = src + ((size_t)c * sh + y0) * sw,
                        *r1 = src + ((size_t)c * sh + y1) * sw;
            float *d = dst + ((size_t)c * dh + y) * dw;
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

/* Everything one level run holds. */
typedef struct level_state {
    unet_t *m;
    const level_params *p;
    const level_task *t;
    const unet_info *info;
    int side, oc, cc; /* canvas side, x_t channels, cond channels */
    float *x, *eps, *noise, *cond;
    float *acc, *wsum, *feather; /* tiled: weighted sum, weight sum, 1-d weights per tile */
    float *in, *tile_eps;        /* one tile's model input and output (x2 for guidance) */
    float labels[2];
    int nlabels, guided;
    int ty[LEVEL_MAX_TILES_PER_AXIS], tx[LEVEL_MAX_TILES_PER_AXIS], nty, ntx, tile;
} level_state;

static noise_key level_key(const level_state *s, uint32_t stream)
{
    noise_key k = {s->t->seed, s->t->image, s->p->index, stream};
    return k;
}

/* Class labels of the model: the noise level for class_embed_type "timestep" models, the
 * task's class (or the null class, the last one) for lookup tables; guidance adds the null. */
static int level_labels(level_state *s, strata_err *e)
{
    const unet_info *info = s->info;
    /* guidance pulls towards a class: without one (the null class) it would change nothing */
    s->guided = s->p->guidance > 1.0f && info->num_class_embeds > 1 && s->t->class_label >= 0;
    if (!info->needs_class_labels) return 0;
    if (info->class_label_dim != 1)
        return err_set(e, ERR_INPUT, "models with class_embed_type identity cannot run a level");
    s->nlabels = 1;
    if (!info->num_class_embeds) {
        s->labels[0] = (float)s->p->noise_level;
        return 0;
    }
    int null_class = info->num_class_embeds - 1, label = s->t->class_label;
    if (label >= info->num_class_embeds)
        return err_set(e, ERR_INPUT, "class label %d is not in [0, %d)", label,
                       info->num_class_embeds);
    s->labels[0] = (float)(label >= 0 ? label : null_class);
    if (s->guided) s->labels[s->nlabels++] = (float)null_class;
    return 0;
}

/* cond = bilinear upsample of the previous level's image, noised once to noise_level. */
static int level_cond(level_state *s, strata_err *e)
{
    const level_task *t = s->t;
    size_t csize = (size_t)t->cond_side * t->cond_side, n = (size_t)s->cc * s->side * s->side;
    if (s->cc != 3) return err_set(e, ERR_INPUT, "model takes %d cond channels, not 3", s->cc);
    if (!t->cond || t->cond_side < 1)
        return err_set(e, ERR_INPUT, "a refine level needs the previous level's image");
    float *small = malloc(3 * csize * sizeof(float));
    if (!small) return err_set(e, ERR_NOMEM, "out of memory");
    image_to_tensor(t->cond, t->cond_side, t->cond_side, small);
    image_resize_bilinear(small, 3, t->cond_side, t->cond_side, s->cond, s->side, s->side);
    free(small);
    if (s->p->noise_level > 0) {
        noise_key k = level_key(s, NOISE_STREAM_AUG);
        noise_fill(&k, s->noise, s->cc, s->side, s->side, 0, 0);
        sched_add_noise(&s->p->sched, s->p->noise_level, s->cond, s->noise, s->cond, n);
    }
    return 0;
}

/* 1-d feather of a tile: a raised cosine, positive everywhere so a canvas edge covered by one
 * tile keeps its value after normalisation. */
static void feather_1d(float *w, int n)
{
    for (int i = 0; i < n; i++)
        w[i] = 0.5f - 0.5f * cosf(2.0f * (float)M_PI * ((float)i + 0.5f) / (float)n);
}

static int level_alloc(level_state *s, strata_err *e)
{
    size_t plane = (size_t)s->side * s->side, tplane = (size_t)s->tile * s->tile;
    int batch = s->guided ? 2 : 1;
    s->x = malloc(s->oc * plane * sizeof(float));
    s->eps = malloc(s->oc * plane * sizeof(float));
    s->noise = malloc((s->oc > s->cc ? s->oc : s->cc) * plane * sizeof(float));
    s->cond = s->cc ? malloc(s->cc * plane * sizeof(float)) : NULL;
    s->acc = malloc(s->oc * plane * sizeof(float));
    s->wsum = malloc(plane * sizeof(float));
    s->feather = malloc((size_t)s->tile * sizeof(float));
    s->in = malloc((size_t)batch * (s->oc + s->cc) * tplane * sizeof(float));
    s->tile_eps = malloc((size_t)batch * s->oc * tplane * sizeof(float));
    if (!s->x || !s->eps || !s->noise || (s->cc && !s->cond) || !s->acc || !s->wsum ||
        !s->feather || !s->in || !s->tile_eps)
        return err_set(e, ERR_NOMEM, "out of memory for a %dx%d canvas", s->side, s->side);
    return 0;
}

static void level_free(level_state *s)
{
    free(s->x), free(s->eps), free(s->noise), free(s->cond), free(s->acc), free(s->wsum);
    free(s->feather), free(s->in), free(s->tile_eps);
}

/* Copy channels x tile x tile at (y0, x0) of a side x side canvas into dst. */
static void crop(const float *src, int channels, int side, int y0, int x0, int tile, float *dst)
{
    for (int c = 0; c < channels; c++)
        for (int y = 0; y < tile; y++)
            memcpy(dst + ((size_t)c * tile + y) * tile,
                   src + ((size_t)c * side + y0 + y) * side + x0, (size_t)tile * sizeof(float));
}

/* Model output for the tile at (y0, x0) at timestep t, guided if asked, into s->tile_eps. */
static int eval_tile(level_state *s, int y0, int x0, float t, strata_err *e)
{
    int T = s->tile, batch = s->guided ? 2 : 1, ic = s->oc + s->cc;
    size_t tplane = (size_t)T * T;
    for (int b = 0; b < batch; b++) {
        crop(s->x, s->oc, s->side, y0, x0, T, s->in + b * ic * tplane);
        if (s->cc) crop(s->cond, s->cc, s->side, y0, x0, T, s->in + (b * ic + s->oc) * tplane);
    }
    float ts[2] = {t, t};
    int rc =
        unet_forward(s->m, s->in, batch, T, T, ts, s->nlabels ? s->labels : NULL, s->tile_eps, e);
    if (rc || !s->guided) return rc;
    /* eps = uncond + g (cond - uncond); image 0 is conditional, image 1 the null class */
    float g = s->p->guidance, *c = s->tile_eps, *u = s->tile_eps + s->oc * tplane;
    for (size_t j = 0; j < s->oc * tplane; j++)
        c[j] = u[j] + g * (c[j] - u[j]);
    return 0;
}

/* Sum of w * eps over the tiles covering each pixel, in tile-index order, divided by the sum
 * of weights: one global eps for one global scheduler step. */
static int eval_canvas(level_state *s, float t, strata_err *e)
{
    int T = s->tile;
    size_t plane = (size_t)s->side * s->side;
    if (s->nty == 1 && s->ntx == 1) {
        int rc = eval_tile(s, 0, 0, t, e);
        if (!rc) memcpy(s->eps, s->tile_eps, s->oc * plane * sizeof(float));
        return rc;
    }
    memset(s->acc, 0, s->oc * plane * sizeof(float));
    for (int i = 0; i < s->nty; i++)
        for (int j = 0; j < s->ntx; j++) {
            int rc = eval_tile(s, s->ty[i], s->tx[j], t, e);
            if (rc) return rc;
            for (int c = 0; c < s->oc; c++)
                for (int y = 0; y < T; y++) {
                    float *dst = s->acc + ((size_t)c * s->side + s->ty[i] + y) * s->side + s->tx[j];
                    const float *src = s->tile_eps + ((size_t)c * T + y) * T;
                    for (int x = 0; x < T; x++)
                        dst[x] += s->feather[y] * s->feather[x] * src[x];
                }
        }
    for (int c = 0; c < s->oc; c++)
        for (size_t k = 0; k < plane; k++)
            s->eps[c * plane + k] = s->acc[c * plane + k] / s->wsum[k];
    return 0;
}

static void level_weights(level_state *s)
{
    int T = s->tile;
    feather_1d(s->feather, T);
    memset(s->wsum, 0, (size_t)s->side * s->side * sizeof(float));
    for (int i = 0; i < s->nty; i++)
        for (int j = 0; j < s->ntx; j++)
            for (int y = 0; y < T; y++)
                for (int x = 0; x < T; x++)
                    s->wsum[(size_t)(s->ty[i] + y) * s->side + s->tx[j] + x] +=
                        s->feather[y] * s->feather[x];
}

static int level_setup(level_state *s, strata_err *e)
{
    const level_params *p = s->p;
    int f = s->info->downsample_factor;
    s->side = p->side;
    s->oc = s->info->out_channels;
    s->cc = s->info->in_channels - s->oc;
    s->tile = p->tile > 0 && p->tile < p->side ? p->tile : p->side;
    if (s->oc != 3) return err_set(e, ERR_INPUT, "model outputs %d channels, not 3", s->oc);
    if (s->side % f || s->tile % f)
        return err_set(e, ERR_INPUT, "side %d and tile %d must be multiples of %d", s->side,
                       s->tile, f);
    if (p->kind == LEVEL_KIND_GENERATE && s->cc)
        return err_set(e, ERR_INPUT, "a generate level's model must not take a cond");
    if (p->kind != LEVEL_KIND_GENERATE && !s->cc)
        return err_set(e, ERR_INPUT, "a refine level's model must take a cond");
    if (p->overlap < 0 || (s->tile < s->side && p->overlap >= s->tile))
        return err_set(e, ERR_INPUT, "overlap %d must be below the tile side %d", p->overlap,
                       s->tile);
    s->nty = tile_positions(s->side, s->tile, p->overlap, s->ty, LEVEL_MAX_TILES_PER_AXIS);
    s->ntx = tile_positions(s->side, s->tile, p->overlap, s->tx, LEVEL_MAX_TILES_PER_AXIS);
    if (s->nty < 0 || s->ntx < 0)
        return err_set(e, ERR_INPUT, "tile %d with overlap %d needs more than %d tiles a side",
                       s->tile, p->overlap, LEVEL_MAX_TILES_PER_AXIS);
    if (p->noise_level < 0 || p->noise_level >= p->sched.num_train_timesteps)
        return err_set(e, ERR_INPUT, "noise_level %d is not below num_train_timesteps %d",
                       p->noise_level, p->sched.num_train_timesteps);
    int rc = level_labels(s, e);
    if (!rc) rc = level_alloc(s, e);
    if (!rc && s->cc) rc = level_cond(s, e);
    if (!rc) level_weights(s);
    return rc;
}

static int level_sample(level_state *s, strata_err *e)
{
    size_t numel = (size_t)s->oc * s->side * s->side;
    int steps = s->p->kind == LEVEL_KIND_DIRECT ? 1 : s->p->steps;
    sched_config sched = s->p->sched;
    /* direct: one evaluation at the top timestep, the model's x0 from pure noise and cond;
     * trailing spacing puts a single step there whatever the model's scheduler says */
    if (s->p->kind == LEVEL_KIND_DIRECT) sched.timestep_spacing = SCHED_SPACING_TRAILING;
    sampler_t *smp = NULL;
    int rc = sampler_new(&sched, steps, numel, 1, &smp, e);
    if (rc) return rc;
    noise_key k = level_key(s, NOISE_STREAM_INIT);
    noise_fill(&k, s->x, s->oc, s->side, s->side, 0, 0);
    float sigma = sampler_init_sigma(smp);
    for (size_t j = 0; j < numel; j++)
        s->x[j] *= sigma;
    for (int i = 0; i < sampler_num_steps(smp) && !rc; i++) {
        rc = eval_canvas(s, sampler_timestep(smp, i), e);
        if (!rc && sampler_step_needs_noise(smp, i)) {
            k = level_key(s, (uint32_t)i);
            noise_fill(&k, s->noise, s->oc, s->side, s->side, 0, 0);
        }
        if (!rc) rc = sampler_step(smp, i, s->eps, s->x, s->noise, e);
    }
    sampler_free(smp);
    return rc;
}

int level_run(unet_t *m, const level_params *p, const level_task *t, uint8_t *out, strata_err *e)
{
    level_state s = {.m = m, .p = p, .t = t, .info = unet_get_info(m)};
    int rc = level_setup(&s, e);
    if (!rc) rc = level_sample(&s, e);
    if (!rc) image_from_tensor(s.x, s.side, s.side, out);
    level_free(&s);
    return rc;
}
