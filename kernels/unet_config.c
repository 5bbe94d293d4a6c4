/* Parsing diffusers' UNet2DModel config.json (jansson), with diffusers' defaults. */
#include "kernels/unet_config.h"
#include "kernels/ops.h"

#include <jansson.h>
#include <string.h>

/* A field's value or NULL when absent; *is_null tells a JSON null apart. */
static json_t *field(json_t *root, const char *key, int *is_null)
{
    json_t *v = json_object_get(root, key);
    *is_null = v && json_is_null(v);
    return v && !*is_null ? v : NULL;
}

static int get_int(json_t *root, const char *path, const char *key, int def, int null_value,
                   int *out, strata_err *e)
{
    int is_null;
    json_t *v = field(root, key, &is_null);
    if (is_null) {
        if (null_value < 0) return err_set(e, ERR_INPUT, "%s: %s: must not be null", path, key);
        *out = null_value;
        return 0;
    }
    if (!v) {
        *out = def;
        return 0;
    }
    /* A whole real (64.0) is that int. Its range is checked before the cast: a double out of
     * int's range made the cast undefined ({"num_train_timesteps": 1e17}, make fuzz), and a
     * negative one passed for a non-negative integer. */
    double d = json_is_real(v) ? json_real_value(v) : -1;
    if (d >= 0 && d <= 1 << 24 && d == (double)(int)d) {
        *out = (int)d;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1 << 24)
        return err_set(e, ERR_INPUT, "%s: %s: expected a non-negative integer", path, key);
    *out = (int)json_integer_value(v);
    return 0;
}

static int get_float(json_t *root, const char *path, const char *key, float def, float *out,
                     strata_err *e)
{
    int is_null;
    json_t *v = field(root, key, &is_null);
    if (!v && !is_null) {
        *out = def;
        return 0;
    }
    if (!v || !json_is_number(v))
        return err_set(e, ERR_INPUT, "%s: %s: expected a number", path, key);
    *out = (float)json_number_value(v);
    return 0;
}

static int get_bool(json_t *root, const char *path, const char *key, int def, int *out,
                    strata_err *e)
{
    int is_null;
    json_t *v = field(root, key, &is_null);
    if (!v && !is_null) {
        *out = def;
        return 0;
    }
    if (!v || !json_is_boolean(v))
        return err_set(e, ERR_INPUT, "%s: %s: expected true or false", path, key);
    *out = json_is_true(v);
    return 0;
}

/* A string field; *out is NULL for null, def when absent. */
static int get_string(json_t *root, const char *path, const char *key, const char *def,
                      const char **out, strata_err *e)
{
    int is_null;
    json_t *v = field(root, key, &is_null);
    if (is_null) {
        *out = NULL;
        return 0;
    }
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_string(v)) return err_set(e, ERR_INPUT, "%s: %s: expected a string", path, key);
    *out = json_string_value(v);
    return 0;
}

/* A non-empty array of strings or of ints (UNET_MAX_BLOCKS at most); absent -> defaults. */
static int get_array(json_t *root, const char *path, const char *key, int want_strings,
                     json_t **out, strata_err *e)
{
    int is_null;
    json_t *v = field(root, key, &is_null);
    *out = v;
    if (!v && !is_null) return 0;
    size_t i;
    json_t *item;
    if (!v || !json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > UNET_MAX_BLOCKS)
        goto bad;
    json_array_foreach(v, i, item)
    {
        if (want_strings ? !json_is_string(item)
                         : !json_is_integer(item) || json_integer_value(item) <= 0 ||
                               json_integer_value(item) > 1 << 16)
            goto bad;
    }
    return 0;
bad:
    return err_set(e, ERR_INPUT, "%s: %s: expected an array of 1 to %d %s", path, key,
                   UNET_MAX_BLOCKS, want_strings ? "block type names" : "positive integers");
}

/* sample_size: an int, null, or [height, width] (diffusers accepts a tuple); only the height
 * is kept: it is a default for `strata sample`, the forward takes any multiple of the
 * downsampling factor. */
static int get_sample_size(json_t *root, const char *path, int *out, strata_err *e)
{
    json_t *v = json_object_get(root, "sample_size");
    if (v && json_is_array(v) && json_array_size(v) == 2 && json_is_integer(json_array_get(v, 0)) &&
        json_is_integer(json_array_get(v, 1)) && json_integer_value(json_array_get(v, 0)) > 0) {
        *out = (int)json_integer_value(json_array_get(v, 0));
        return 0;
    }
    if (v && json_is_array(v))
        return err_set(e, ERR_INPUT, "%s: sample_size: expected an integer or [height, width]",
                       path);
    return get_int(root, path, "sample_size", 0, 0, out, e);
}

static const char *default_down[] = {"DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D",
                                     "AttnDownBlock2D"};
static const char *default_up[] = {"AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"};
static const int default_block_out[] = {224, 448, 672, 896};

/* Block type names -> attn flags; only the block types UNet2DModel uses without skip paths. */
static int parse_block_types(json_t *arr, const char **defaults, const char *plain,
                             const char *attn, int *flags, int *count, const char *path,
                             const char *key, strata_err *e)
{
    *count = arr ? (int)json_array_size(arr) : 4;
    for (int i = 0; i < *count; i++) {
        const char *name = arr ? json_string_value(json_array_get(arr, (size_t)i)) : defaults[i];
        if (strncmp(name, "UNetRes", 7) == 0) name += 7; /* diffusers strips this prefix too */
        if (strcmp(name, plain) == 0)
            flags[i] = 0;
        else if (strcmp(name, attn) == 0)
            flags[i] = 1;
        else
            return err_set(e, ERR_INPUT,
                           "%s: %s[%d]: unsupported block type '%s' (expected %s or %s)", path, key,
                           i, name, plain, attn);
    }
    return 0;
}

static int parse_blocks(json_t *root, const char *path, unet_config *c, strata_err *e)
{
    json_t *down, *up, *outs;
    int ndown, nup, rc;
    if ((rc = get_array(root, path, "down_block_types", 1, &down, e)) ||
        (rc = get_array(root, path, "up_block_types", 1, &up, e)) ||
        (rc = get_array(root, path, "block_out_channels", 0, &outs, e)))
        return rc;
    if ((rc = parse_block_types(down, default_down, "DownBlock2D", "AttnDownBlock2D", c->down_attn,
                                &ndown, path, "down_block_types", e)) ||
        (rc = parse_block_types(up, default_up, "UpBlock2D", "AttnUpBlock2D", c->up_attn, &nup,
                                path, "up_block_types", e)))
        return rc;
    c->nblocks = outs ? (int)json_array_size(outs) : 4;
    for (int i = 0; i < c->nblocks; i++)
        c->block_out[i] =
            outs ? (int)json_integer_value(json_array_get(outs, (size_t)i)) : default_block_out[i];
    if (ndown != c->nblocks || nup != c->nblocks)
        return err_set(e, ERR_INPUT,
                       "%s: block_out_channels: has %d entries but down_block_types has %d and "
                       "up_block_types %d",
                       path, c->nblocks, ndown, nup);
    return 0;
}

static int parse_choice(const char *value, const char *path, const char *key,
                        const char *const *names, int count, int *out, strata_err *e)
{
    for (int i = 0; i < count; i++)
        if (value && strcmp(value, names[i]) == 0) {
            *out = i;
            return 0;
        }
    return err_set(e, ERR_INPUT, "%s: %s: unsupported value '%s'", path, key,
                   value ? value : "null");
}

static int parse_strings(json_t *root, const char *path, unet_config *c, strata_err *e)
{
    static const char *const time_types[] = {"positional", "fourier", "learned"};
    static const char *const shifts[] = {"default", "scale_shift"};
    static const char *const sample_types[] = {"conv", "resnet"};
    static const char *const acts[] = {"silu", "swish", "mish", "gelu", "relu"};
    static const op_act act_values[] = {OP_ACT_SILU, OP_ACT_SILU, OP_ACT_MISH, OP_ACT_GELU,
                                        OP_ACT_RELU};
    const char *time_type, *mid, *shift, *down, *up, *act, *class_type;
    int rc, choice;
    if ((rc = get_string(root, path, "time_embedding_type", "positional", &time_type, e)) ||
        (rc = get_string(root, path, "mid_block_type", "UNetMidBlock2D", &mid, e)) ||
        (rc = get_string(root, path, "resnet_time_scale_shift", "default", &shift, e)) ||
        (rc = get_string(root, path, "downsample_type", "conv", &down, e)) ||
        (rc = get_string(root, path, "upsample_type", "conv", &up, e)) ||
        (rc = get_string(root, path, "act_fn", "silu", &act, e)) ||
        (rc = get_string(root, path, "class_embed_type", NULL, &class_type, e)))
        return rc;
    if ((rc = parse_choice(time_type, path, "time_embedding_type", time_types, 3, &choice, e)))
        return rc;
    c->time_type = (unet_time_type)choice;
    if ((rc =
             parse_choice(shift, path, "resnet_time_scale_shift", shifts, 2, &c->scale_shift, e)) ||
        (rc = parse_choice(down, path, "downsample_type", sample_types, 2, &c->downsample_resnet,
                           e)) ||
        (rc = parse_choice(up, path, "upsample_type", sample_types, 2, &c->upsample_resnet, e)) ||
        (rc = parse_choice(act, path, "act_fn", acts, 5, &choice, e)))
        return rc;
    c->act = act_values[choice];
    c->has_mid = mid != NULL;
    if (mid && strcmp(mid, "UNetMidBlock2D") != 0)
        return err_set(e, ERR_INPUT, "%s: mid_block_type: unsupported value '%s'", path, mid);
    c->class_type = UNET_CLASS_NONE;
    if (class_type) {
        static const char *const classes[] = {"timestep", "identity"};
        if ((rc = parse_choice(class_type, path, "class_embed_type", classes, 2, &choice, e)))
            return rc;
        c->class_type = choice == 0 ? UNET_CLASS_TIMESTEP : UNET_CLASS_IDENTITY;
    } else if (c->num_class_embeds > 0) {
        c->class_type = UNET_CLASS_LOOKUP;
    }
    return 0;
}

static int parse_numbers(json_t *root, const char *path, unet_config *c, strata_err *e)
{
    int rc;
    if ((rc = get_int(root, path, "in_channels", 3, -1, &c->in_channels, e)) ||
        (rc = get_int(root, path, "out_channels", 3, -1, &c->out_channels, e)) ||
        (rc = get_sample_size(root, path, &c->sample_size, e)) ||
        (rc = get_int(root, path, "time_embedding_dim", 0, 0, &c->time_embedding_dim, e)) ||
        (rc = get_int(root, path, "layers_per_block", 2, -1, &c->layers_per_block, e)) ||
        (rc = get_int(root, path, "downsample_padding", 1, -1, &c->downsample_padding, e)) ||
        (rc = get_int(root, path, "attention_head_dim", 8, 0, &c->attention_head_dim, e)) ||
        (rc = get_int(root, path, "norm_num_groups", 32, -1, &c->norm_num_groups, e)) ||
        (rc = get_int(root, path, "attn_norm_num_groups", 0, 0, &c->attn_norm_num_groups, e)) ||
        (rc = get_int(root, path, "num_class_embeds", 0, 0, &c->num_class_embeds, e)) ||
        (rc = get_int(root, path, "num_train_timesteps", 0, 0, &c->num_train_timesteps, e)) ||
        (rc = get_float(root, path, "freq_shift", 0.0f, &c->freq_shift, e)) ||
        (rc = get_float(root, path, "mid_block_scale_factor", 1.0f, &c->mid_block_scale_factor,
                        e)) ||
        (rc = get_float(root, path, "norm_eps", 1e-5f, &c->norm_eps, e)) ||
        (rc = get_bool(root, path, "center_input_sample", 0, &c->center_input_sample, e)) ||
        (rc = get_bool(root, path, "flip_sin_to_cos", 1, &c->flip_sin_to_cos, e)) ||
        (rc = get_bool(root, path, "add_attention", 1, &c->add_attention, e)))
        return rc;
    if (c->in_channels == 0 || c->out_channels == 0)
        return err_set(e, ERR_INPUT, "%s: in_channels: must be positive", path);
    if (c->layers_per_block < 1 || c->layers_per_block + 1 > UNET_MAX_LAYERS)
        return err_set(e, ERR_INPUT, "%s: layers_per_block: must be 1 to %d", path,
                       UNET_MAX_LAYERS - 1);
    if (c->norm_num_groups == 0)
        return err_set(e, ERR_INPUT, "%s: norm_num_groups: must be positive", path);
    /* other paddings change the down path's sizes so that the skips no longer fit */
    if (c->downsample_padding > 1)
        return err_set(e, ERR_INPUT, "%s: downsample_padding: must be 0 or 1", path);
    return 0;
}

/* Group counts must divide the channel counts they normalise, as torch's GroupNorm demands. */
static int check_groups(const char *path, const unet_config *c, strata_err *e)
{
    for (int i = 0; i < c->nblocks; i++)
        if (c->block_out[i] % c->norm_num_groups)
            return err_set(e, ERR_INPUT,
                           "%s: norm_num_groups: %d does not divide block_out_channels[%d] = %d",
                           path, c->norm_num_groups, i, c->block_out[i]);
    if (c->time_type == UNET_TIME_LEARNED && c->num_train_timesteps == 0)
        return err_set(e, ERR_INPUT,
                       "%s: num_train_timesteps: required by time_embedding_type 'learned'", path);
    return 0;
}

int unet_config_load(const char *path, unet_config *c, strata_err *e)
{
    json_error_t jerr;
    memset(c, 0, sizeof *c);
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) {
        if (jerr.line <= 0) return err_set(e, ERR_INPUT, "%s: %s", path, jerr.text);
        return err_set(e, ERR_INPUT, "%s:%d: %s", path, jerr.line, jerr.text);
    }
    int rc = ERR_INPUT;
    if (!json_is_object(root))
        err_set(e, rc, "%s: expected a JSON object", path);
    else if (!(rc = parse_numbers(root, path, c, e)) && !(rc = parse_strings(root, path, c, e)) &&
             !(rc = parse_blocks(root, path, c, e)))
        rc = check_groups(path, c, e);
    json_decref(root);
    return rc;
}
