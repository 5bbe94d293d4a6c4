/* The diffusers UNet2DModel forward: built from config.json, weights from safetensors. */
#include "kernels/ops.h"
#include "kernels/unet_config.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ResnetBlock2D: norm1, SiLU, [up/down], conv1, + time, norm2, [scale_shift], SiLU, conv2,
 * then (shortcut(x) + h) / output_scale_factor. */
typedef struct resnet {
    int cin, cout, up, down, scale_shift;
    op_act act;
    groupnorm norm1, norm2;
    conv2d conv1, conv2, shortcut;
    int has_shortcut;
    const float *temb_w, *temb_b;
    int temb_out;
    float output_scale;
} resnet;

/* A down or up block: resnets, optional attentions after each, optional resampler. */
typedef struct unet_block {
    int nres, has_attn, cout;
    resnet res[UNET_MAX_LAYERS];
    attention attn[UNET_MAX_LAYERS];
    int resample; /* 0: none, 1: conv, 2: resnet */
    conv2d resample_conv;
    resnet resample_res;
} unet_block;

struct unet {
    unet_info info;
    unet_config cfg;
    int temb_dim, tin_dim;    /* time embedding width, time_proj width */
    const float *time_proj_w; /* fourier W or learned table */
    const float *t1_w, *t1_b, *t2_w, *t2_b;
    const float *class_table;               /* UNET_CLASS_LOOKUP */
    const float *c1_w, *c1_b, *c2_w, *c2_b; /* UNET_CLASS_TIMESTEP */
    conv2d conv_in, conv_out;
    groupnorm norm_out;
    unet_block down[UNET_MAX_BLOCKS], up[UNET_MAX_BLOCKS];
    resnet mid_res[2];
    attention mid_attn;
    int mid_has_attn;
    float *weights;
    arena arena;
};

/* ---------------------------------------------------------------- weight loading */

/* Runs the model builder twice: a dry pass that checks every tensor and counts floats, then a
 * pass that copies them (converted to float32) into one block. */
typedef struct loader {
    const char *config_path;
    st_file_t *st;
    int dry;
    size_t count;
    float *next;
    strata_err *e;
    int rc;
} loader;

static const float *load(loader *l, const char *name, int ndim, const int64_t *shape)
{
    if (l->rc) return NULL;
    size_t numel = 1;
    for (int i = 0; i < ndim; i++)
        numel *= (size_t)shape[i];
    if (l->dry) {
        const st_tensor *t = st_find(l->st, name);
        int ok = t && t->ndim == ndim;
        for (int i = 0; ok && i < ndim; i++)
            ok = t->shape[i] == shape[i];
        if (!ok) l->rc = st_read_f32(l->st, name, ndim, shape, NULL, l->e);
        l->count += numel;
        return NULL;
    }
    float *dst = l->next;
    l->rc = st_read_f32(l->st, name, ndim, shape, dst, l->e);
    if (!l->rc) st_release(l->st, st_find(l->st, name));
    l->next += numel;
    return dst;
}

/* Load "prefix.part.weight"-style names built from a format string. */
static const float *loadf(loader *l, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static const float *loadf(loader *l, int ndim, const int64_t *shape, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return load(l, name, ndim, shape);
}

static void load_conv(loader *l, conv2d *cv, int cin, int cout, int k, int stride, int pad,
                      const char *prefix)
{
    int64_t ws[4] = {cout, cin, k, k}, bs[1] = {cout};
    cv->cin = cin;
    cv->cout = cout;
    cv->k = k;
    cv->stride = stride;
    for (int i = 0; i < 4; i++)
        cv->pad[i] = pad;
    cv->weight = loadf(l, 4, ws, "%s.weight", prefix);
    /* the weights live in the model's own block (l->next), so they may be reordered */
    if (!l->dry && !l->rc && k > 1 && conv2d_weight_taps_major((float *)cv->weight, cout, cin, k))
        l->rc = err_set(l->e, ERR_NOMEM, "out of memory");
    cv->bias = loadf(l, 1, bs, "%s.bias", prefix);
}

static void load_norm(loader *l, groupnorm *gn, int channels, int groups, float eps,
                      const char *prefix)
{
    int64_t s[1] = {channels};
    gn->channels = channels;
    gn->groups = groups;
    gn->eps = eps;
    gn->gamma = loadf(l, 1, s, "%s.weight", prefix);
    gn->beta = loadf(l, 1, s, "%s.bias", prefix);
}

static void load_linear(loader *l, int in, int out, const float **w, const float **b,
                        const char *prefix)
{
    int64_t ws[2] = {out, in}, bs[1] = {out};
    *w = loadf(l, 2, ws, "%s.weight", prefix);
    *b = loadf(l, 1, bs, "%s.bias", prefix);
}

static int config_error(loader *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int config_error(loader *l, const char *fmt, ...)
{
    if (l->rc) return l->rc;
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    /* the weights fit, the config's numbers do not: the config is what to fix */
    snprintf(l->e->msg, sizeof l->e->msg, "%s: %s", l->config_path, what);
    l->e->code = l->rc = ERR_INPUT;
    return l->rc;
}

static void build_resnet(loader *l, const unet_config *c, resnet *r, int cin, int cout, int groups,
                         int temb_dim, float scale, const char *prefix)
{
    char name[200];
    if (cin % groups || cout % groups) {
        config_error(l, "%s: norm groups %d do not divide the channels %d/%d", prefix, groups, cin,
                     cout);
        return;
    }
    r->cin = cin;
    r->cout = cout;
    r->scale_shift = c->scale_shift;
    r->act = (op_act)c->act;
    r->output_scale = scale;
    snprintf(name, sizeof name, "%s.norm1", prefix);
    load_norm(l, &r->norm1, cin, groups, c->norm_eps, name);
    snprintf(name, sizeof name, "%s.conv1", prefix);
    load_conv(l, &r->conv1, cin, cout, 3, 1, 1, name);
    r->temb_out = c->scale_shift ? 2 * cout : cout;
    snprintf(name, sizeof name, "%s.time_emb_proj", prefix);
    load_linear(l, temb_dim, r->temb_out, &r->temb_w, &r->temb_b, name);
    snprintf(name, sizeof name, "%s.norm2", prefix);
    load_norm(l, &r->norm2, cout, groups, c->norm_eps, name);
    snprintf(name, sizeof name, "%s.conv2", prefix);
    load_conv(l, &r->conv2, cout, cout, 3, 1, 1, name);
    r->has_shortcut = cin != cout;
    if (r->has_shortcut) {
        snprintf(name, sizeof name, "%s.conv_shortcut", prefix);
        load_conv(l, &r->shortcut, cin, cout, 1, 1, 0, name);
    }
}

/* diffusers' Attention projections; older checkpoints name them query/key/value/proj_attn. */
static const float *load_attn_part(loader *l, int ndim, const int64_t *shape, const char *prefix,
                                   const char *part, const char *legacy, const char *what)
{
    char name[256];
    snprintf(name, sizeof name, "%s.%s.%s", prefix, part, what);
    if (!st_find(l->st, name)) snprintf(name, sizeof name, "%s.%s.%s", prefix, legacy, what);
    return load(l, name, ndim, shape);
}

static void build_attention(loader *l, const unet_config *c, attention *at, int channels,
                            int head_dim, int groups, float rescale, const char *prefix)
{
    static const char *parts[4][2] = {
        {"to_q", "query"}, {"to_k", "key"}, {"to_v", "value"}, {"to_out.0", "proj_attn"}};
    const float **slots[4][2] = {
        {&at->wq, &at->bq}, {&at->wk, &at->bk}, {&at->wv, &at->bv}, {&at->wo, &at->bo}};
    /* diffusers: heads = channels // attention_head_dim, dim_head = attention_head_dim */
    at->dim_head = head_dim ? head_dim : channels;
    at->heads = channels / at->dim_head;
    if (at->heads < 1) {
        config_error(l, "%s: attention_head_dim %d exceeds the channels %d", prefix, head_dim,
                     channels);
        return;
    }
    if (groups > 0 && channels % groups) {
        config_error(l, "%s: norm groups %d do not divide the channels %d", prefix, groups,
                     channels);
        return;
    }
    int inner = at->heads * at->dim_head;
    at->channels = channels;
    at->rescale = rescale;
    at->residual = 1;
    at->has_norm = groups > 0;
    if (at->has_norm) {
        char name[200];
        snprintf(name, sizeof name, "%s.group_norm", prefix);
        load_norm(l, &at->norm, channels, groups, c->norm_eps, name);
    }
    for (int i = 0; i < 4; i++) {
        int64_t ws[2] = {i < 3 ? inner : channels, i < 3 ? channels : inner};
        int64_t bs[1] = {ws[0]};
        *slots[i][0] = load_attn_part(l, 2, ws, prefix, parts[i][0], parts[i][1], "weight");
        *slots[i][1] = load_attn_part(l, 1, bs, prefix, parts[i][0], parts[i][1], "bias");
    }
}

static void build_down(loader *l, unet_t *m, int i, int cin)
{
    const unet_config *c = &m->cfg;
    unet_block *b = &m->down[i];
    char name[200];
    int cout = c->block_out[i], last = i == c->nblocks - 1;
    b->nres = c->layers_per_block;
    b->has_attn = c->down_attn[i];
    b->cout = cout;
    for (int j = 0; j < b->nres; j++) {
        snprintf(name, sizeof name, "down_blocks.%d.resnets.%d", i, j);
        build_resnet(l, c, &b->res[j], j ? cout : cin, cout, c->norm_num_groups, m->temb_dim, 1.0f,
                     name);
        if (b->has_attn) {
            snprintf(name, sizeof name, "down_blocks.%d.attentions.%d", i, j);
            build_attention(l, c, &b->attn[j], cout, c->attention_head_dim, c->norm_num_groups,
                            1.0f, name);
        }
    }
    if (last) return;
    /* only AttnDownBlock2D honours downsample_type "resnet" */
    b->resample = b->has_attn && c->downsample_resnet ? 2 : 1;
    if (b->resample == 2) {
        snprintf(name, sizeof name, "down_blocks.%d.downsamplers.0", i);
        build_resnet(l, c, &b->resample_res, cout, cout, c->norm_num_groups, m->temb_dim, 1.0f,
                     name);
        b->resample_res.down = 1;
        return;
    }
    snprintf(name, sizeof name, "down_blocks.%d.downsamplers.0.conv", i);
    load_conv(l, &b->resample_conv, cout, cout, 3, 2, c->downsample_padding, name);
    if (c->downsample_padding == 0) {
        /* diffusers pads (0, 1, 0, 1) by hand before a padding-0 stride-2 conv */
        int pad[4] = {0, 0, 1, 1};
        memcpy(b->resample_conv.pad, pad, sizeof pad);
    }
}

static void build_up(loader *l, unet_t *m, int i)
{
    const unet_config *c = &m->cfg;
    unet_block *b = &m->up[i];
    char name[200];
    int n = c->nblocks, cout = c->block_out[n - 1 - i];
    int prev = c->block_out[n - 1 - (i ? i - 1 : 0)];
    int input = c->block_out[n - 1 - (i + 1 < n ? i + 1 : n - 1)];
    b->nres = c->layers_per_block + 1;
    b->has_attn = c->up_attn[i];
    b->cout = cout;
    for (int j = 0; j < b->nres; j++) {
        int skip = j == b->nres - 1 ? input : cout, in = j ? cout : prev;
        snprintf(name, sizeof name, "up_blocks.%d.resnets.%d", i, j);
        build_resnet(l, c, &b->res[j], in + skip, cout, c->norm_num_groups, m->temb_dim, 1.0f,
                     name);
        if (b->has_attn) {
            snprintf(name, sizeof name, "up_blocks.%d.attentions.%d", i, j);
            build_attention(l, c, &b->attn[j], cout, c->attention_head_dim, c->norm_num_groups,
                            1.0f, name);
        }
    }
    if (i == n - 1) return;
    b->resample = b->has_attn && c->upsample_resnet ? 2 : 1;
    if (b->resample == 2) {
        snprintf(name, sizeof name, "up_blocks.%d.upsamplers.0", i);
        build_resnet(l, c, &b->resample_res, cout, cout, c->norm_num_groups, m->temb_dim, 1.0f,
                     name);
        b->resample_res.up = 1;
        return;
    }
    snprintf(name, sizeof name, "up_blocks.%d.upsamplers.0.conv", i);
    load_conv(l, &b->resample_conv, cout, cout, 3, 1, 1, name);
}

static void build_mid(loader *l, unet_t *m)
{
    const unet_config *c = &m->cfg;
    int ch = c->block_out[c->nblocks - 1];
    /* UNet2DModel passes resnet_groups=norm_num_groups to UNetMidBlock2D; its attention uses
     * attn_norm_num_groups, or the resnet groups only with the "default" time scale shift. */
    int groups = c->norm_num_groups;
    int attn_groups = c->attn_norm_num_groups ? c->attn_norm_num_groups
                      : c->scale_shift        ? 0
                                              : groups;
    float scale = c->mid_block_scale_factor;
    build_resnet(l, c, &m->mid_res[0], ch, ch, groups, m->temb_dim, scale, "mid_block.resnets.0");
    m->mid_has_attn = c->add_attention;
    if (m->mid_has_attn)
        build_attention(l, c, &m->mid_attn, ch, c->attention_head_dim ? c->attention_head_dim : ch,
                        attn_groups, scale, "mid_block.attentions.0");
    build_resnet(l, c, &m->mid_res[1], ch, ch, groups, m->temb_dim, scale, "mid_block.resnets.1");
}

static void build_embeddings(loader *l, unet_t *m)
{
    const unet_config *c = &m->cfg;
    int b0 = c->block_out[0];
    m->temb_dim = c->time_embedding_dim ? c->time_embedding_dim : 4 * b0;
    m->tin_dim = c->time_type == UNET_TIME_FOURIER ? 2 * b0 : b0;
    if (c->time_type == UNET_TIME_FOURIER) {
        int64_t s[1] = {b0};
        m->time_proj_w = load(l, "time_proj.weight", 1, s);
    } else if (c->time_type == UNET_TIME_LEARNED) {
        int64_t s[2] = {c->num_train_timesteps, b0};
        m->time_proj_w = load(l, "time_proj.weight", 2, s);
    }
    load_linear(l, m->tin_dim, m->temb_dim, &m->t1_w, &m->t1_b, "time_embedding.linear_1");
    load_linear(l, m->temb_dim, m->temb_dim, &m->t2_w, &m->t2_b, "time_embedding.linear_2");
    if (c->class_type == UNET_CLASS_LOOKUP) {
        int64_t s[2] = {c->num_class_embeds, m->temb_dim};
        m->class_table = load(l, "class_embedding.weight", 2, s);
    } else if (c->class_type == UNET_CLASS_TIMESTEP) {
        load_linear(l, m->tin_dim, m->temb_dim, &m->c1_w, &m->c1_b, "class_embedding.linear_1");
        load_linear(l, m->temb_dim, m->temb_dim, &m->c2_w, &m->c2_b, "class_embedding.linear_2");
    }
}

static int build(loader *l, unet_t *m)
{
    const unet_config *c = &m->cfg;
    int b0 = c->block_out[0];
    build_embeddings(l, m);
    load_conv(l, &m->conv_in, c->in_channels, b0, 3, 1, 1, "conv_in");
    int cin = b0;
    for (int i = 0; i < c->nblocks; i++) {
        build_down(l, m, i, cin);
        cin = c->block_out[i];
    }
    if (c->has_mid) build_mid(l, m);
    for (int i = 0; i < c->nblocks; i++)
        build_up(l, m, i);
    load_norm(l, &m->norm_out, b0, c->norm_num_groups, c->norm_eps, "conv_norm_out");
    load_conv(l, &m->conv_out, b0, c->out_channels, 3, 1, 1, "conv_out");
    return l->rc;
}

static void fill_info(unet_t *m, size_t nparams)
{
    const unet_config *c = &m->cfg;
    unet_info *info = &m->info;
    info->in_channels = c->in_channels;
    info->out_channels = c->out_channels;
    info->sample_size = c->sample_size;
    info->num_class_embeds = c->class_type == UNET_CLASS_LOOKUP ? c->num_class_embeds : 0;
    info->needs_class_labels = c->class_type != UNET_CLASS_NONE;
    info->class_label_dim = c->class_type == UNET_CLASS_IDENTITY ? m->temb_dim : 1;
    info->downsample_factor = 1 << (c->nblocks - 1);
    info->num_params = (int64_t)nparams;
}

int unet_load(const char *dir, unet_t **out, strata_err *e)
{
    char path[4096];
    *out = NULL;
    unet_t *m = calloc(1, sizeof *m);
    if (!m) return err_set(e, ERR_NOMEM, "out of memory");
    snprintf(path, sizeof path, "%s/config.json", dir);
    int rc = unet_config_load(path, &m->cfg, e);
    char config_path[4096];
    snprintf(config_path, sizeof config_path, "%s/config.json", dir);
    loader l = {.dry = 1, .e = e, .config_path = config_path};
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
    if (!rc) rc = st_open(path, &l.st, e);
    if (!rc) rc = build(&l, m);
    if (!rc && !(m->weights = malloc(l.count * sizeof(float))))
        rc = err_set(e, ERR_NOMEM, "%s: out of memory for %zu weights", path, l.count);
    if (!rc) {
        l.dry = 0;
        l.next = m->weights;
        rc = build(&l, m);
    }
    st_close(l.st);
    if (rc) {
        unet_free(m);
        return rc;
    }
    fill_info(m, l.count);
    arena_init(&m->arena);
    *out = m;
    return 0;
}

void unet_free(unet_t *m)
{
    if (!m) return;
    arena_fini(&m->arena);
    free(m->weights);
    free(m);
}

const unet_info *unet_get_info(const unet_t *m)
{
    return &m->info;
}

/* ---------------------------------------------------------------- forward */

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

static fmap fmap_new(fwd *f, int c, int h, int w)
{
    fmap r = {arena_floats(f->a, (size_t)f->n * c * h * w), c, h, w};
    if (!r.data) f->failed = 1;
    return r;
}

static fmap run_conv(fwd *f, const conv2d *cv, fmap x)
{
    int oh, ow;
    conv2d_out_size(cv, x.h, x.w, &oh, &ow);
    fmap y = fmap_new(f, cv->cout, oh, ow);
    if (!f->failed && op_conv2d(cv, x.data, f->n, x.h, x.w, y.data, 0, f->a)) f->failed = 1;
    return y;
}

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

static fmap run_resnet(fwd *f, const resnet *r, fmap x)
{
    int n = f->n, oh = r->up ? 2 * x.h : r->down ? x.h / 2 : x.h;
    int ow = r->up ? 2 * x.w : r->down ? x.w / 2 : x.w;
    fmap out = fmap_new(f, r->cout, oh, ow);
    size_t mark = arena_mark(f->a);
    fmap h = fmap_new(f, r->cin, x.h, x.w);
    float *temb = arena_floats(f->a, (size_t)n * r->temb_out);
    if (f->failed || !temb) return f->failed = 1, out;
    op_groupnorm(&r->norm1, x.data, n, x.h * x.w, NULL, NULL, 0, r->act, h.data);
    if (r->up || r->down) {
        h = resample_nearest(f, h, r->up);
        x = resample_nearest(f, x, r->up);
    }
    fmap h2 = run_conv(f, &r->conv1, h);
    if (f->failed) return out;
    op_linear(f->emb_act, n, f->m->temb_dim, r->temb_w, r->temb_b, r->temb_out, temb);
    size_t hw = (size_t)oh * ow;
    if (!r->scale_shift) op_add_channel_values(h2.data, n, r->cout, hw, temb, r->temb_out);
    const float *scale = r->scale_shift ? temb : NULL;
    const float *shift = r->scale_shift ? temb + r->cout : NULL;
    op_groupnorm(&r->norm2, h2.data, n, (int)hw, scale, shift, r->temb_out, r->act, h2.data);
    if (r->has_shortcut) {
        if (op_conv2d(&r->shortcut, x.data, n, oh, ow, out.data, 0, f->a)) f->failed = 1;
    } else {
        op_copy(out.data, x.data, (size_t)n * r->cout * hw);
    }
    if (f->failed || op_conv2d(&r->conv2, h2.data, n, oh, ow, out.data, 1, f->a)) f->failed = 1;
    if (r->output_scale != 1.0f)
        for (size_t j = 0; j < (size_t)n * r->cout * hw; j++)
            out.data[j] /= r->output_scale;
    arena_release(f->a, mark);
    return out;
}

static fmap run_attention(fwd *f, const attention *at, fmap x)
{
    fmap y = fmap_new(f, x.c, x.h, x.w);
    if (!f->failed && op_attention(at, x.data, f->n, x.h * x.w, y.data, f->a)) f->failed = 1;
    return y;
}

/* [a, b] concatenated on channels, per image. */
static fmap concat(fwd *f, fmap a, fmap b)
{
    if (a.h != b.h || a.w != b.w) { /* cannot happen for sides the model accepts */
        f->failed = 1;
        return a;
    }
    fmap y = fmap_new(f, a.c + b.c, a.h, a.w);
    if (f->failed) return y;
    size_t hw = (size_t)a.h * a.w, na = (size_t)a.c * hw, nb = (size_t)b.c * hw;
    for (int i = 0; i < f->n; i++) {
        op_copy(y.data + i * (na + nb), a.data + i * na, na);
        op_copy(y.data + i * (na + nb) + na, b.data + i * nb, nb);
    }
    return y;
}

/* Upsample2D: nearest x2, then a 3x3 convolution. The upsampled copy stays in the arena
 * below y until the forward ends (a bump allocator frees only from the top). */
static fmap run_upsample_conv(fwd *f, const conv2d *cv, fmap x)
{
    fmap up = resample_nearest(f, x, 1);
    fmap y = fmap_new(f, cv->cout, up.h, up.w);
    if (!f->failed && op_conv2d(cv, up.data, f->n, up.h, up.w, y.data, 0, f->a)) f->failed = 1;
    return y;
}

enum { UNET_MAX_SKIPS = UNET_MAX_BLOCKS * (UNET_MAX_LAYERS + 1) + 1 };

static fmap run_down_path(fwd *f, fmap h, fmap *skips, int *nskips)
{
    unet_t *m = f->m;
    skips[(*nskips)++] = h;
    for (int i = 0; i < m->cfg.nblocks; i++) {
        const unet_block *b = &m->down[i];
        for (int j = 0; j < b->nres; j++) {
            h = run_resnet(f, &b->res[j], h);
            if (b->has_attn) h = run_attention(f, &b->attn[j], h);
            skips[(*nskips)++] = h;
        }
        if (b->resample) {
            h = b->resample == 2 ? run_resnet(f, &b->resample_res, h)
                                 : run_conv(f, &b->resample_conv, h);
            skips[(*nskips)++] = h;
        }
    }
    return h;
}

static fmap run_up_path(fwd *f, fmap h, fmap *skips, int *nskips)
{
    unet_t *m = f->m;
    for (int i = 0; i < m->cfg.nblocks && !f->failed; i++) {
        const unet_block *b = &m->up[i];
        for (int j = 0; j < b->nres; j++) {
            fmap skip = skips[--(*nskips)];
            h = run_resnet(f, &b->res[j], concat(f, h, skip));
            if (b->has_attn) h = run_attention(f, &b->attn[j], h);
        }
        if (b->resample == 2) h = run_resnet(f, &b->resample_res, h);
        if (b->resample == 1) h = run_upsample_conv(f, &b->resample_conv, h);
    }
    return h;
}

/* t_emb (n, tin_dim) for timesteps t, by the configured time projection. */
static int time_project(const unet_t *m, const float *t, int n, float *out, strata_err *e)
{
    const unet_config *c = &m->cfg;
    int b0 = c->block_out[0];
    if (c->time_type == UNET_TIME_POSITIONAL) {
        op_timestep_embedding(t, n, b0, c->flip_sin_to_cos, c->freq_shift, out);
        return 0;
    }
    for (int i = 0; i < n; i++) {
        if (c->time_type == UNET_TIME_LEARNED) {
            int k = (int)t[i];
            if (k < 0 || k >= c->num_train_timesteps || (float)k != t[i])
                return err_set(e, ERR_INPUT, "timestep %g is not in [0, %d)", t[i],
                               c->num_train_timesteps);
            memcpy(out + (size_t)i * b0, m->time_proj_w + (size_t)k * b0, b0 * sizeof(float));
            continue;
        }
        /* GaussianFourierProjection(log=True): [sin(log t * W * 2 pi), cos(...)] */
        float lt = logf(t[i]);
        for (int k = 0; k < b0; k++) {
            float arg = lt * m->time_proj_w[k] * 2.0f * (float)M_PI;
            out[(size_t)i * 2 * b0 + k] = sinf(arg);
            out[(size_t)i * 2 * b0 + b0 + k] = cosf(arg);
        }
    }
    return 0;
}

/* TimestepEmbedding: linear_2(silu(linear_1(x))), (n, in) -> (n, temb_dim). */
static void timestep_mlp(const unet_t *m, const float *x, int n, const float *w1, const float *b1,
                         const float *w2, const float *b2, float *hidden, float *out)
{
    op_linear(x, n, m->tin_dim, w1, b1, m->temb_dim, hidden);
    op_activate_all(OP_ACT_SILU, hidden, (size_t)n * m->temb_dim);
    op_linear(hidden, n, m->temb_dim, w2, b2, m->temb_dim, out);
}

static int add_class_embedding(const unet_t *m, const float *labels, int n, float *tproj,
                               float *hidden, float *emb, strata_err *e)
{
    const unet_config *c = &m->cfg;
    size_t d = (size_t)m->temb_dim;
    if (c->class_type == UNET_CLASS_LOOKUP) {
        for (int i = 0; i < n; i++) {
            int k = (int)labels[i];
            if (k < 0 || k >= c->num_class_embeds || (float)k != labels[i])
                return err_set(e, ERR_INPUT, "class label %g is not in [0, %d)", labels[i],
                               c->num_class_embeds);
            for (size_t j = 0; j < d; j++)
                emb[i * d + j] += m->class_table[k * d + j];
        }
    } else if (c->class_type == UNET_CLASS_TIMESTEP) {
        int rc = time_project(m, labels, n, tproj, e);
        if (rc) return rc;
        float *cls = hidden + (size_t)n * d;
        timestep_mlp(m, tproj, n, m->c1_w, m->c1_b, m->c2_w, m->c2_b, hidden, cls);
        for (size_t j = 0; j < (size_t)n * d; j++)
            emb[j] += cls[j];
    } else if (c->class_type == UNET_CLASS_IDENTITY) {
        for (size_t j = 0; j < (size_t)n * d; j++)
            emb[j] += labels[j];
    }
    return 0;
}

/* emb_act = act_fn(time embedding + class embedding), (n, temb_dim): every resnet applies its
 * nonlinearity to temb first, so it is done once here. */
static int embed(fwd *f, const float *timesteps, const float *class_labels, float *emb_act,
                 strata_err *e)
{
    unet_t *m = f->m;
    int n = f->n;
    float *tproj = arena_floats(f->a, (size_t)n * m->tin_dim);
    float *hidden = arena_floats(f->a, (size_t)2 * n * m->temb_dim);
    if (!tproj || !hidden) return err_set(e, ERR_NOMEM, "out of memory");
    int rc = time_project(m, timesteps, n, tproj, e);
    if (rc) return rc;
    timestep_mlp(m, tproj, n, m->t1_w, m->t1_b, m->t2_w, m->t2_b, hidden, emb_act);
    if (m->info.needs_class_labels && !class_labels)
        return err_set(e, ERR_INPUT, "this model needs class labels");
    if (!m->info.needs_class_labels && class_labels)
        return err_set(e, ERR_INPUT, "this model takes no class labels");
    if (class_labels && (rc = add_class_embedding(m, class_labels, n, tproj, hidden, emb_act, e)))
        return rc;
    op_activate_all((op_act)m->cfg.act, emb_act, (size_t)n * m->temb_dim);
    return 0;
}

static int check_shape(const unet_t *m, int n, int h, int w, strata_err *e)
{
    int f = m->info.downsample_factor;
    if (n < 1 || h < 1 || w < 1 || h % f || w % f)
        return err_set(e, ERR_INPUT, "input %dx%d: sides must be positive multiples of %d", h, w,
                       f);
    return 0;
}

static void finish(fwd *f, fmap h, const float *timesteps, float *out)
{
    unet_t *m = f->m;
    /* UNet2DModel's conv_act is nn.SiLU() whatever act_fn says */
    op_groupnorm(&m->norm_out, h.data, f->n, h.h * h.w, NULL, NULL, 0, OP_ACT_SILU, h.data);
    size_t hw = (size_t)h.h * h.w, per = (size_t)m->cfg.out_channels * hw;
    if (op_conv2d(&m->conv_out, h.data, f->n, h.h, h.w, out, 0, f->a)) f->failed = 1;
    if (m->cfg.time_type == UNET_TIME_FOURIER)
        for (int i = 0; i < f->n; i++)
            for (size_t j = 0; j < per; j++)
                out[i * per + j] /= timesteps[i];
}

int unet_forward(unet_t *m, const float *x, int n, int h, int w, const float *timesteps,
                 const float *class_labels, float *out, strata_err *e)
{
    int rc = check_shape(m, n, h, w, e);
    if (rc) return rc;
    if (arena_reset(&m->arena)) return err_set(e, ERR_NOMEM, "out of memory");
    fwd f = {.m = m, .n = n, .a = &m->arena};
    float *emb = arena_floats(f.a, (size_t)n * m->temb_dim);
    if (!emb) return err_set(e, ERR_NOMEM, "out of memory");
    size_t mark = arena_mark(f.a);
    if ((rc = embed(&f, timesteps, class_labels, emb, e))) return rc;
    arena_release(f.a, mark);
    f.emb_act = emb;
    fmap in = fmap_new(&f, m->cfg.in_channels, h, w);
    if (f.failed) return err_set(e, ERR_NOMEM, "out of memory");
    for (size_t j = 0; j < (size_t)n * m->cfg.in_channels * h * w; j++)
        in.data[j] = m->cfg.center_input_sample ? 2.0f * x[j] - 1.0f : x[j];
    fmap skips[UNET_MAX_SKIPS];
    int nskips = 0;
    fmap cur = run_down_path(&f, run_conv(&f, &m->conv_in, in), skips, &nskips);
    if (m->cfg.has_mid && !f.failed) {
        cur = run_resnet(&f, &m->mid_res[0], cur);
        if (m->mid_has_attn) cur = run_attention(&f, &m->mid_attn, cur);
        cur = run_resnet(&f, &m->mid_res[1], cur);
    }
    cur = run_up_path(&f, cur, skips, &nskips);
    if (!f.failed) finish(&f, cur, timesteps, out);
    if (f.failed) return err_set(e, ERR_NOMEM, "out of memory in the UNet forward");
    return 0;
}
