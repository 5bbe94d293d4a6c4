/* A level's model evaluation: concat([x, cond]) through the UNet in tile windows blended at
 * every step, with classifier-free guidance; one window covering the canvas when untiled. */
#include "worker/group.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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

/* 1-d feather of a tile: a raised cosine, positive everywhere so a canvas edge covered by one
 * tile keeps its value after normalisation. */
static void feather_1d(float *w, int n)
{
    for (int i = 0; i < n; i++)
        w[i] = 0.5f - 0.5f * cosf(2.0f * (float)M_PI * ((float)i + 0.5f) / (float)n);
}

/* Sum of the window weights over each pixel of the rows held (y_lo, rows), in window order. */
static void tile_weights(tile_eval *t)
{
    int rows = t->rows ? t->rows : t->h;
    feather_1d(t->fy, t->th);
    feather_1d(t->fx, t->tw);
    memset(t->wsum, 0, (size_t)rows * t->w * sizeof(float));
    for (int i = 0; i < t->nty; i++)
        for (int j = 0; j < t->ntx; j++)
            for (int y = 0; y < t->th; y++) {
                int row = t->ty[i] + y - t->y_lo;
                if (row < 0 || row >= rows) continue;
                for (int x = 0; x < t->tw; x++)
                    t->wsum[(size_t)row * t->w + t->tx[j] + x] += t->fy[y] * t->fx[x];
            }
}

/* The window grid and its checks against the model's downsampling. */
static int tile_grid(tile_eval *t, int f, strata_err *e)
{
    t->th = t->tile > 0 && t->tile < t->h ? t->tile : t->h;
    t->tw = t->tile > 0 && t->tile < t->w ? t->tile : t->w;
    if (t->h % f || t->w % f || t->th % f || t->tw % f)
        return err_set(e, ERR_INPUT, "side %d and tile %d must be multiples of %d",
                       t->h == t->w ? t->h : t->w, t->th < t->tw ? t->th : t->tw, f);
    int tiled = t->th < t->h || t->tw < t->w;
    if (t->overlap < 0 || (tiled && t->overlap >= t->tile))
        return err_set(e, ERR_INPUT, "overlap %d must be below the tile side %d", t->overlap,
                       tiled ? t->tile : t->h);
    t->nty = tile_positions(t->h, t->th, t->overlap, t->ty, TILE_MAX_PER_AXIS);
    t->ntx = tile_positions(t->w, t->tw, t->overlap, t->tx, TILE_MAX_PER_AXIS);
    if (t->nty < 0 || t->ntx < 0)
        return err_set(e, ERR_INPUT, "tile %d with overlap %d needs more than %d tiles a side",
                       t->tile, t->overlap, TILE_MAX_PER_AXIS);
    return 0;
}

int tile_eval_grid(tile_eval *t, strata_err *e)
{
    const unet_info *info = unet_get_info(t->model);
    t->oc = info->out_channels;
    t->cc = info->in_channels - t->oc;
    t->fy = t->fx = t->wsum = t->in = t->out = t->ts = NULL;
    if (t->n < 1 || t->h < 1 || t->w < 1)
        return err_set(e, ERR_INPUT, "canvas of %d images of %dx%d: sides must be positive", t->n,
                       t->h, t->w);
    return tile_grid(t, info->downsample_factor, e);
}

int tile_eval_init(tile_eval *t, strata_err *e)
{
    int rc = tile_eval_grid(t, e);
    if (rc) return rc;
    if (t->cc < 0 || (t->cc > 0) != (t->cond != NULL))
        return err_set(e, ERR_INPUT, "model takes %d input channels: %d (x_t) + %d (cond), but %s",
                       t->oc + t->cc, t->oc, t->cc, t->cond ? "a cond is given" : "none is");
    size_t tplane = (size_t)t->th * t->tw, batch = (size_t)t->n * (t->guided ? 2 : 1);
    t->fy = malloc((size_t)t->th * sizeof(float));
    t->fx = malloc((size_t)t->tw * sizeof(float));
    t->wsum = malloc((size_t)(t->rows ? t->rows : t->h) * t->w * sizeof(float));
    t->in = malloc(batch * (t->oc + t->cc) * tplane * sizeof(float));
    t->out = malloc(batch * t->oc * tplane * sizeof(float));
    t->ts = malloc(batch * sizeof(float));
    if (!t->fy || !t->fx || !t->wsum || !t->in || !t->out || !t->ts)
        return err_set(e, ERR_NOMEM, "out of memory for a %dx%d canvas", t->h, t->w);
    tile_weights(t);
    return 0;
}

void tile_eval_free(tile_eval *t)
{
    free(t->fy), free(t->fx), free(t->wsum), free(t->in), free(t->out), free(t->ts);
    t->fy = t->fx = t->wsum = t->in = t->out = t->ts = NULL;
}

/* Copy channels x th x tw at (y0, x0) of a channels x h x w image into dst. */
static void crop(const float *src, int channels, int h, int w, int y0, int x0, int th, int tw,
                 float *dst)
{
    for (int c = 0; c < channels; c++)
        for (int y = 0; y < th; y++)
            memcpy(dst + ((size_t)c * th + y) * tw, src + ((size_t)c * h + y0 + y) * w + x0,
                   (size_t)tw * sizeof(float));
}

/* Model output of the window at (y0, x0) for every image, guided if asked, into t->out. x and
 * t->cond hold the rows [t->y_lo, t->y_lo + t->rows) of the canvas. */
static int tile_forward(tile_eval *t, const float *x, int y0, int x0, float ts, strata_err *e)
{
    int ic = t->oc + t->cc, batch = t->n * (t->guided ? 2 : 1), rows = t->rows ? t->rows : t->h;
    size_t tplane = (size_t)t->th * t->tw, plane = (size_t)rows * t->w;
    for (int b = 0; b < batch; b++) {
        int i = b % t->n; /* guided: the n null-class images repeat the n conditional ones */
        float *in = t->in + (size_t)b * ic * tplane;
        crop(x + i * t->oc * plane, t->oc, rows, t->w, y0 - t->y_lo, x0, t->th, t->tw, in);
        if (t->cc)
            crop(t->cond + i * t->cc * plane, t->cc, rows, t->w, y0 - t->y_lo, x0, t->th, t->tw,
                 in + t->oc * tplane);
        t->ts[b] = ts;
    }
    int rc = unet_forward(t->model, t->in, batch, t->th, t->tw, t->ts, t->labels, t->out, e);
    if (rc || !t->guided) return rc;
    /* out = uncond + g (cond - uncond) */
    size_t per = (size_t)t->n * t->oc * tplane;
    float g = t->guidance, *c = t->out, *u = t->out + per;
    for (size_t j = 0; j < per; j++)
        c[j] = u[j] + g * (c[j] - u[j]);
    return 0;
}

void tile_blend_rows(const tile_eval *t, const tile_rows *src, int k, int a, int b,
                     const tile_rows *dst)
{
    int y0 = t->ty[k / t->ntx], x0 = t->tx[k % t->ntx];
    for (int i = 0; i < t->n; i++)
        for (int c = 0; c < t->oc; c++)
            for (int y = a; y < b; y++) {
                size_t plane = (size_t)i * t->oc + c;
                float *d = dst->v + (plane * dst->rows + y - dst->y0) * t->w + x0;
                const float *s = src->v + (plane * src->rows + y - src->y0) * t->tw;
                float fy = t->fy[y - y0];
                for (int x = 0; x < t->tw; x++)
                    d[x] += fy * t->fx[x] * s[x];
            }
}

void tile_normalise_rows(const tile_eval *t, const tile_rows *out)
{
    size_t plane = (size_t)out->rows * t->w, numel = (size_t)t->n * t->oc * plane;
    const float *wsum = t->wsum + (size_t)(out->y0 - t->y_lo) * t->w;
    for (size_t k = 0; k < numel; k++)
        out->v[k] /= wsum[k % plane];
}

int tile_eval_window(tile_eval *t, const float *x, int k, float ts, strata_err *e)
{
    return tile_forward(t, x, t->ty[k / t->ntx], t->tx[k % t->ntx], ts, e);
}

size_t tile_window_numel(const tile_eval *t)
{
    return (size_t)t->n * t->oc * t->th * t->tw;
}

/* Sum of w * out over the windows covering each pixel, in window order, divided by the sum of
 * weights: one global output for one global sampler step. */
int tile_eval_model(void *ctx, int step, float ts, const float *x, float *out, strata_err *e)
{
    tile_eval *t = ctx;
    size_t numel = (size_t)t->n * t->oc * t->h * t->w;
    (void)step;
    if (t->nty == 1 && t->ntx == 1) {
        int rc = tile_forward(t, x, 0, 0, ts, e);
        if (!rc) memcpy(out, t->out, numel * sizeof(float));
        return rc;
    }
    memset(out, 0, numel * sizeof(float));
    tile_rows whole = {out, 0, t->h};
    for (int k = 0; k < t->nty * t->ntx; k++) {
        int y0 = t->ty[k / t->ntx], rc = tile_forward(t, x, y0, t->tx[k % t->ntx], ts, e);
        if (rc) return rc;
        tile_blend_rows(t, &(tile_rows){t->out, y0, t->th}, k, y0, y0 + t->th, &whole);
    }
    tile_normalise_rows(t, &whole);
    return 0;
}
