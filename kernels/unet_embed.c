/* The time and class embeddings of the UNet: the timestep projection (sinusoidal, Fourier or
 * learned), TimestepEmbedding's MLP and the class embedding added to it. */
#include "kernels/arena.h"
#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "kernels/unet_config.h"
#include "kernels/unet_model.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

/* Sinusoidal timestep embedding as diffusers' get_timestep_embedding, float32. */
static void sinusoidal_embedding(const float *t, int n, int dim, int flip_sin_to_cos,
                                 float freq_shift, float *y)
{
    int half = dim / 2;
    /* float32 throughout, in diffusers' order of operations */
    const float neg_log_period = (float)-log(10000.0);
    for (int i = 0; i < n; i++) {
        float *row = y + (size_t)i * dim;
        for (int k = 0; k < half; k++) {
            float e = expf(neg_log_period * (float)k / ((float)half - freq_shift));
            float arg = t[i] * e;
            float s = sinf(arg), c = cosf(arg);
            row[flip_sin_to_cos ? half + k : k] = s;
            row[flip_sin_to_cos ? k : half + k] = c;
        }
        if (dim % 2) row[dim - 1] = 0.0f;
    }
}

/* t_emb (n, tin_dim) for timesteps t, by the configured time projection. */
static int time_project(const unet_t *m, const float *t, int n, float *out, strata_err *e)
{
    const unet_config *c = &m->cfg;
    int b0 = c->block_out[0];
    if (c->time_type == UNET_TIME_POSITIONAL) {
        sinusoidal_embedding(t, n, b0, c->flip_sin_to_cos, c->freq_shift, out);
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

/* emb += the class embedding of labels (lookup table, timestep MLP or the labels as they are);
 * tproj and hidden are scratch. ERR_INPUT for a label outside the lookup table. */
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
int unet_embed(const unet_t *m, int n, arena *a, const float *timesteps, const float *class_labels,
               float *emb_act, strata_err *e)
{
    float *tproj = arena_floats(a, (size_t)n * m->tin_dim);
    float *hidden = arena_floats(a, (size_t)2 * n * m->temb_dim);
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
