/* Internal to kernels/: a parsed diffusers UNet2DModel config.json. */
#ifndef STRATA_KERNELS_UNET_CONFIG_H
#define STRATA_KERNELS_UNET_CONFIG_H

#include "kernels/kernels.h"

enum { UNET_MAX_BLOCKS = 8, UNET_MAX_LAYERS = 8 };

typedef enum unet_time_type {
    UNET_TIME_POSITIONAL,
    UNET_TIME_FOURIER,
    UNET_TIME_LEARNED,
} unet_time_type;

typedef enum unet_class_type {
    UNET_CLASS_NONE,
    UNET_CLASS_LOOKUP,   /* class_embed_type null with num_class_embeds: nn.Embedding */
    UNET_CLASS_TIMESTEP, /* class labels go through time_proj and a TimestepEmbedding */
    UNET_CLASS_IDENTITY, /* class labels are time_embed_dim vectors added as they are */
} unet_class_type;

/* Every UNet2DModel field that changes the forward, with diffusers' defaults. Nullable ints
 * use 0 for null. */
typedef struct unet_config {
    int in_channels, out_channels, sample_size;
    int center_input_sample;
    unet_time_type time_type;
    int time_embedding_dim;
    float freq_shift;
    int flip_sin_to_cos;
    int nblocks;
    int down_attn[UNET_MAX_BLOCKS]; /* 1 for AttnDownBlock2D, 0 for DownBlock2D */
    int up_attn[UNET_MAX_BLOCKS];   /* 1 for AttnUpBlock2D, 0 for UpBlock2D */
    int has_mid;
    int block_out[UNET_MAX_BLOCKS];
    int layers_per_block;
    float mid_block_scale_factor;
    int downsample_padding;
    int downsample_resnet, upsample_resnet; /* downsample_type / upsample_type "resnet" */
    int attention_head_dim;                 /* 0: null (one head) */
    int norm_num_groups;
    int attn_norm_num_groups; /* 0: null */
    float norm_eps;
    int scale_shift; /* resnet_time_scale_shift "scale_shift" */
    int add_attention;
    int act; /* an op_act value (ops.h): the resnets' nonlinearity */
    unet_class_type class_type;
    int num_class_embeds;
    int num_train_timesteps;
} unet_config;

/* Parse DIR/config.json. Errors: "PATH: FIELD: what is wrong", ERR_INPUT. */
int unet_config_load(const char *path, unet_config *c, strata_err *e);

#endif
