/* Loading a diffusers UNet2DModel: its config.json read into unet_config, then every layer
 * built from it with its weights from diffusion_pytorch_model.safetensors. */
#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "kernels/safetensors.h"
#include "kernels/unet_config.h"
#include "kernels/unet_model.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Runs the model builder twice: a dry pass that checks every tensor and counts floats, then a
 * pass that copies them (converted to float32) into one block. */
typedef struct loader {
    const char *config_path;
    st_file_t *st;
    int dry;
    size_t count, derived; /* floats in all; those computed from the weights, not loaded */
    float *next;
    strata_err *e;
    int rc;
} loader;

/* The tensor called name, checked to have this shape: counted in the dry pass (NULL returned),
 * converted into the model's block and released from the mapping in the second. */
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

/* A conv2d of the given geometry with weight and bias from prefix.weight / prefix.bias, the
 * weight reordered taps-major. */
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
    /* the kernels in Winograd's domain follow in the block, for the banded path */
    size_t wino = conv2d_winograd_floats(cv);
    if (l->rc || !wino) return;
    if (l->dry) {
        l->count += wino;
        l->derived += wino;
    } else {
        conv2d_winograd_weights(cv, l->next);
        l->next += wino;
    }
}

/* A GroupNorm with gamma and beta from prefix.weight / prefix.bias. */
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

/* An nn.Linear(in, out): weight [out, in] and bias [out] from prefix. */
static void load_linear(loader *l, int in, int out, const float **w, const float **b,
                        const char *prefix)
{
    int64_t ws[2] = {out, in}, bs[1] = {out};
    *w = loadf(l, 2, ws, "%s.weight", prefix);
    *b = loadf(l, 1, bs, "%s.bias", prefix);
}

static int config_error(loader *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Fails the load with ERR_INPUT naming config.json (a first error is kept). */
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

/* A ResnetBlock2D of cin -> cout channels from prefix; a config error when groups do not
 * divide the channels. */
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

/* diffusers' Attention over `channels` channels from prefix (GroupNorm when groups > 0); a
 * config error for a head size or groups that do not fit. */
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

/* down_blocks.i: its resnets (and attentions), then its downsampler unless it is the last. */
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

/* up_blocks.i: layers_per_block + 1 resnets on the skips, then its upsampler unless last. */
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

/* mid_block: resnet, optional attention, resnet, at the deepest width. */
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

/* The time projection, TimestepEmbedding and class embedding the config asks for. */
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

/* Every layer of m in diffusers' order; one pass of the loader (dry or copying). */
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

/* m->info from the config, with nparams weights. */
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

/* Reads DIR/config.json, then builds the model twice over the safetensors file: a dry pass
 * that checks every tensor and counts the floats, a second that fills one block with them. */
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
    fill_info(m, l.count - l.derived);
    arena_init(&m->arena);
    *out = m;
    return 0;
}

/* Frees m, its weights and its arena; NULL is a no-op. */
void unet_free(unet_t *m)
{
    if (!m) return;
    arena_fini(&m->arena);
    free(m->weights);
    free(m);
}

/* What m takes and gives; valid while m lives. */
const unet_info *unet_get_info(const unet_t *m)
{
    return &m->info;
}
