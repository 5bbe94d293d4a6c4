/* The UNet2DModel forward: conv_in, the down path (its outputs kept as skips), the mid block,
 * the up path, then norm, SiLU and conv_out; every feature map in the model's arena, freed
 * after its last reader so that the arena holds only the maps alive at once. */
#include "kernels/arena.h"
#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "kernels/unet_config.h"
#include "kernels/unet_model.h"

#include <stddef.h>

/* A feature map in the arena. */
typedef struct fmap {
    float *data;
    int c, h, w;
} fmap;

typedef struct fwd {
    unet_t *m;
    int n;
    const float *emb_act; /* (n, temb_dim): act_fn of the time+class embedding */
    arena *a;
    int failed;
} fwd;

/* An uninitialised (n, c, h, w) map on top of the arena; f->failed when it cannot. */
static fmap fmap_new(fwd *f, int c, int h, int w)
{
    fmap r = {arena_floats(f->a, (size_t)f->n * c * h * w), c, h, w};
    if (!r.data) f->failed = 1;
    return r;
}

/* Frees x: its last reader is done. */
static void fmap_free(fwd *f, fmap x)
{
    arena_free(f->a, x.data);
}

/* A new map = cv(x); x freed unless keep (it has readers still to come). */
static fmap run_conv(fwd *f, const conv2d *cv, fmap x, int keep)
{
    int oh, ow;
    conv2d_out_size(cv, x.h, x.w, &oh, &ow);
    fmap y = fmap_new(f, cv->cout, oh, ow);
    if (!f->failed && op_conv2d(cv, x.data, f->n, x.h, x.w, y.data, 0, f->a)) f->failed = 1;
    if (!keep) fmap_free(f, x);
    return y;
}

/* A new map: x upsampled (nearest x2) when up, else average-pooled by 2. */
static fmap resample_nearest(fwd *f, fmap x, int up)
{
    fmap y = fmap_new(f, x.c, up ? 2 * x.h : x.h / 2, up ? 2 * x.w : x.w / 2);
    if (f->failed) return y;
    if (up)
        op_upsample_nearest2(x.data, f->n * x.c, x.h, x.w, y.data);
    else
        op_avgpool2(x.data, f->n * x.c, x.h, x.w, y.data);
    return y;
}

/* The maps a layer reads: one, or two concatenated on channels (an up-path resnet's input and
 * its skip), never written out as one map. */
typedef struct maps {
    fmap m[2];
    int count;
} maps;

static maps one_map(fmap x)
{
    return (maps){{x}, 1};
}

/* in[] = the maps as plain convolution inputs. */
static void maps_inputs(maps x, conv_input *in)
{
    for (int s = 0; s < x.count; s++)
        in[s] = (conv_input){.data = x.m[s].data, .c = x.m[s].c};
}

/* The inputs read through GroupNorm norm and the activation: coefficients a and b, [n, c]. */
static void normalise_inputs(fwd *f, const groupnorm *norm, op_act act, conv_input *in, int nin,
                             int hw, const float *scale, const float *shift, int stride, float *a,
                             float *b)
{
    op_groupnorm_coeffs(norm, in, nin, f->n, hw, scale, shift, stride, a, b);
    for (int s = 0, base = 0; s < nin; base += in[s].c, s++) {
        in[s].a = a + base, in[s].b = b + base;
        in[s].coef_stride = norm->channels, in[s].act = act;
    }
}

/* conv into y (accumulating when accumulate); f->failed when it cannot. */
static void conv_into(fwd *f, const conv2d *cv, const conv_input *in, int nin, int h, int w,
                      const float *add, int add_stride, float *y, int accumulate)
{
    if (!f->failed &&
        op_conv2d_inputs(cv, in, nin, f->n, h, w, add, add_stride, y, accumulate, f->a))
        f->failed = 1;
}

/* out (holding the shortcut already) += conv2(norm2(conv1(in) + time)), then the output scale:
 * a ResnetBlock2D after its shortcut, in being its input read through norm1. */
static fmap resnet_finish(fwd *f, const resnet *r, const conv_input *in, int nin, fmap out)
{
    int n = f->n, hw = out.h * out.w;
    fmap h2 = fmap_new(f, r->cout, out.h, out.w);
    float *temb = arena_floats(f->a, (size_t)n * r->temb_out);
    float *coef = arena_floats(f->a, (size_t)2 * n * r->cout);
    if (f->failed || !temb || !coef) return f->failed = 1, out;
    op_linear(f->emb_act, n, f->m->temb_dim, r->temb_w, r->temb_b, r->temb_out, temb);
    conv_into(f, &r->conv1, in, nin, out.h, out.w, r->scale_shift ? NULL : temb, r->temb_out,
              h2.data, 0);
    conv_input hin = {.data = h2.data, .c = r->cout};
    normalise_inputs(f, &r->norm2, r->act, &hin, 1, hw, r->scale_shift ? temb : NULL,
                     r->scale_shift ? temb + r->cout : NULL, r->temb_out, coef,
                     coef + (size_t)n * r->cout);
    conv_into(f, &r->conv2, &hin, 1, out.h, out.w, NULL, 0, out.data, 1);
    arena_free(f->a, coef);
    arena_free(f->a, temb);
    fmap_free(f, h2);
    if (r->output_scale != 1.0f)
        for (size_t j = 0; j < (size_t)n * r->cout * hw; j++)
            out.data[j] /= r->output_scale;
    return out;
}

/* out = the shortcut of x: a 1x1 convolution, or x itself (its maps one after another). */
static void resnet_shortcut(fwd *f, const resnet *r, maps x, fmap out)
{
    conv_input in[2];
    int nin = x.count;
    maps_inputs(x, in);
    if (r->has_shortcut) {
        conv_into(f, &r->shortcut, in, nin, out.h, out.w, NULL, 0, out.data, 0);
        return;
    }
    size_t hw = (size_t)out.h * out.w;
    for (int i = 0; i < f->n; i++)
        for (int s = 0, base = 0; s < nin; base += in[s].c, s++)
            op_copy(out.data + ((size_t)i * r->cout + base) * hw,
                    in[s].data + (size_t)i * in[s].c * hw, (size_t)in[s].c * hw);
}

/* A ResnetBlock2D with up or down: norm1, then h and x resampled, the shortcut from the
 * resampled x. x freed unless keep. */
static fmap run_resnet_resampling(fwd *f, const resnet *r, fmap x, int keep)
{
    fmap h = fmap_new(f, r->cin, x.h, x.w);
    if (f->failed) return h;
    op_groupnorm(&r->norm1, x.data, f->n, x.h * x.w, NULL, NULL, 0, r->act, h.data);
    fmap hr = resample_nearest(f, h, r->up);
    fmap_free(f, h);
    fmap xr = resample_nearest(f, x, r->up);
    if (!keep) fmap_free(f, x);
    fmap out = fmap_new(f, r->cout, xr.h, xr.w);
    if (f->failed) return out;
    resnet_shortcut(f, r, one_map(xr), out);
    fmap_free(f, xr);
    conv_input in = {.data = hr.data, .c = hr.c};
    out = resnet_finish(f, r, &in, 1, out);
    fmap_free(f, hr);
    return out;
}

/* A new map = ResnetBlock2D r (x, the time embedding), x read through norm1 by conv1 as it
 * goes (never normalised as a map of its own). x is left as it is. */
static fmap run_resnet_on(fwd *f, const resnet *r, maps x)
{
    fmap x0 = x.m[0];
    fmap out = fmap_new(f, r->cout, x0.h, x0.w);
    float *coef = arena_floats(f->a, (size_t)2 * f->n * r->cin);
    if (f->failed || !coef) return f->failed = 1, out;
    resnet_shortcut(f, r, x, out);
    conv_input in[2];
    int nin = x.count;
    maps_inputs(x, in);
    normalise_inputs(f, &r->norm1, r->act, in, nin, x0.h * x0.w, NULL, NULL, 0, coef,
                     coef + (size_t)f->n * r->cin);
    out = resnet_finish(f, r, in, nin, out);
    arena_free(f->a, coef);
    return out;
}

/* A new map = ResnetBlock2D r (x); x freed unless keep. */
static fmap run_resnet(fwd *f, const resnet *r, fmap x, int keep)
{
    if (r->up || r->down) return run_resnet_resampling(f, r, x, keep);
    fmap out = run_resnet_on(f, r, one_map(x));
    if (!keep) fmap_free(f, x);
    return out;
}

/* A new map = attention at (x), residual included. x freed unless keep. */
static fmap run_attention(fwd *f, const attention *at, fmap x, int keep)
{
    fmap y = fmap_new(f, x.c, x.h, x.w);
    if (!f->failed && op_attention(at, x.data, f->n, x.h * x.w, y.data, f->a)) f->failed = 1;
    if (!keep) fmap_free(f, x);
    return y;
}

/* Upsample2D: nearest x2, then a 3x3 convolution reading x upsampled as it goes; x freed. */
static fmap run_upsample_conv(fwd *f, const conv2d *cv, fmap x)
{
    fmap y = fmap_new(f, cv->cout, 2 * x.h, 2 * x.w);
    conv_input in = {.data = x.data, .c = x.c, .up = 1};
    conv_into(f, cv, &in, 1, y.h, y.w, NULL, 0, y.data, 0);
    fmap_free(f, x);
    return y;
}

enum { UNET_MAX_SKIPS = UNET_MAX_BLOCKS * (UNET_MAX_LAYERS + 1) + 1 };

/* The down blocks from h; every resnet, attention and downsampler output pushed on skips,
 * which the up path frees, so every map read here is kept. */
static fmap run_down_path(fwd *f, fmap h, fmap *skips, int *nskips)
{
    unet_t *m = f->m;
    skips[(*nskips)++] = h;
    for (int i = 0; i < m->cfg.nblocks; i++) {
        const unet_block *b = &m->down[i];
        for (int j = 0; j < b->nres; j++) {
            h = run_resnet(f, &b->res[j], h, 1);
            if (b->has_attn) h = run_attention(f, &b->attn[j], h, 0);
            skips[(*nskips)++] = h;
        }
        if (b->resample) {
            h = b->resample == 2 ? run_resnet(f, &b->resample_res, h, 1)
                                 : run_conv(f, &b->resample_conv, h, 1);
            skips[(*nskips)++] = h;
        }
    }
    return h;
}

/* The up blocks from h, each resnet taking the last skip off the stack concatenated to h; each
 * map freed after its last reader. h is the last skip itself in a model without mid block. */
static fmap run_up_path(fwd *f, fmap h, fmap *skips, int *nskips)
{
    unet_t *m = f->m;
    for (int i = 0; i < m->cfg.nblocks && !f->failed; i++) {
        const unet_block *b = &m->up[i];
        for (int j = 0; j < b->nres; j++) {
            fmap skip = skips[--(*nskips)];
            if (h.w != skip.w || h.h != skip.h) { /* cannot happen for sides the model accepts */
                f->failed = 1;
                break;
            }
            fmap next = run_resnet_on(f, &b->res[j], (maps){{h, skip}, 2});
            fmap_free(f, skip);
            if (h.data != skip.data) fmap_free(f, h);
            h = next;
            if (b->has_attn) h = run_attention(f, &b->attn[j], h, 0);
        }
        if (b->resample == 2) h = run_resnet(f, &b->resample_res, h, 0);
        if (b->resample == 1) h = run_upsample_conv(f, &b->resample_conv, h);
    }
    return h;
}

/* ERR_INPUT unless n >= 1 and both sides are positive multiples of the downsample factor. */
static int check_shape(const unet_t *m, int n, int h, int w, strata_err *e)
{
    int f = m->info.downsample_factor;
    if (n < 1 || h < 1 || w < 1 || h % f || w % f)
        return err_set(e, ERR_INPUT, "input %dx%d: sides must be positive multiples of %d", h, w,
                       f);
    return 0;
}

/* out = conv_out(SiLU(norm_out(h))), divided by the timestep for Fourier time embeddings. */
static void finish(fwd *f, fmap h, const float *timesteps, float *out)
{
    unet_t *m = f->m;
    size_t hw = (size_t)h.h * h.w, per = (size_t)m->cfg.out_channels * hw;
    float *coef = arena_floats(f->a, (size_t)2 * f->n * h.c);
    if (!coef) {
        f->failed = 1;
        return;
    }
    /* UNet2DModel's conv_act is nn.SiLU() whatever act_fn says */
    conv_input in = {.data = h.data, .c = h.c};
    normalise_inputs(f, &m->norm_out, OP_ACT_SILU, &in, 1, (int)hw, NULL, NULL, 0, coef,
                     coef + (size_t)f->n * h.c);
    conv_into(f, &m->conv_out, &in, 1, h.h, h.w, NULL, 0, out, 0);
    arena_free(f->a, coef);
    if (m->cfg.time_type == UNET_TIME_FOURIER)
        for (int i = 0; i < f->n; i++)
            for (size_t j = 0; j < per; j++)
                out[i * per + j] /= timesteps[i];
}

/* The forward itself, every map in the arena (which the caller empties afterwards). */
static int forward_pass(unet_t *m, const float *x, int n, int h, int w, const float *timesteps,
                        const float *class_labels, float *out, strata_err *e)
{
    fwd f = {.m = m, .n = n, .a = &m->arena};
    float *emb = arena_floats(f.a, (size_t)n * m->temb_dim);
    if (!emb) return err_set(e, ERR_NOMEM, "out of memory");
    size_t mark = arena_mark(f.a);
    int rc = unet_embed(m, n, f.a, timesteps, class_labels, emb, e);
    if (rc) return rc;
    arena_release(f.a, mark);
    f.emb_act = emb;
    fmap in = fmap_new(&f, m->cfg.in_channels, h, w);
    if (f.failed) return err_set(e, ERR_NOMEM, "out of memory");
    for (size_t j = 0; j < (size_t)n * m->cfg.in_channels * h * w; j++)
        in.data[j] = m->cfg.center_input_sample ? 2.0f * x[j] - 1.0f : x[j];
    fmap skips[UNET_MAX_SKIPS];
    int nskips = 0;
    fmap cur = run_down_path(&f, run_conv(&f, &m->conv_in, in, 0), skips, &nskips);
    if (m->cfg.has_mid && !f.failed) { /* its input is the last skip */
        cur = run_resnet(&f, &m->mid_res[0], cur, 1);
        if (m->mid_has_attn) cur = run_attention(&f, &m->mid_attn, cur, 0);
        cur = run_resnet(&f, &m->mid_res[1], cur, 0);
    }
    cur = run_up_path(&f, cur, skips, &nskips);
    if (!f.failed) finish(&f, cur, timesteps, out);
    if (f.failed) return err_set(e, ERR_NOMEM, "out of memory in the UNet forward");
    return 0;
}

/* One forward of n images (see kernels.h); ERR_INPUT for a bad shape, timestep or label,
 * ERR_NOMEM when memory runs out. Afterwards the arena is emptied and grown to this pass's peak
 * (a failure to grow it only leaves the next pass to take its memory from the heap). */
int unet_forward(unet_t *m, const float *x, int n, int h, int w, const float *timesteps,
                 const float *class_labels, float *out, strata_err *e)
{
    int rc = check_shape(m, n, h, w, e);
    if (rc) return rc;
    rc = forward_pass(m, x, n, h, w, timesteps, class_labels, out, e);
    arena_reset(&m->arena);
    return rc;
}
