/* Internal to kernels/: the layers of a loaded UNet2DModel, shared by its loader
 * (unet_load.c), its forward (unet_forward.c) and its embeddings (unet_embed.c). */
#ifndef STRATA_KERNELS_UNET_MODEL_H
#define STRATA_KERNELS_UNET_MODEL_H

#include "kernels/arena.h"
#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "kernels/unet_config.h"

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

/* emb_act (n, temb_dim) = act_fn(time embedding + class embedding) of n images, scratch from a
 * (the caller releases it). class_labels: n * class_label_dim values, NULL for a model without
 * class embedding. Errors: a timestep or label out of range, labels missing or unexpected
 * (ERR_INPUT), no memory (ERR_NOMEM). */
int unet_embed(const unet_t *m, int n, arena *a, const float *timesteps, const float *class_labels,
               float *emb_act, strata_err *e);

#endif
