/* GroupNorm, fused with its affine parameters, the optional scale/shift time conditioning and
 * the activation that follows it in the UNet. */
#include "kernels/ops.h"

#include <math.h>
#include <stddef.h>

/* Mean and 1 / sqrt(var + eps) of n values: sums in 8 float lanes, combined in double, in a
 * fixed order so that every clone and thread count gives the same bits. */
OP_VECTOR_CLONES
static void group_stats(const float *x, size_t n, float eps, float *mean, float *rstd)
{
    float lane[8] = {0}, sq[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            lane[k] += x[i + k];
    double sum = 0;
    for (int k = 0; k < 8; k++)
        sum += lane[k];
    for (; i < n; i++)
        sum += x[i];
    float m = (float)(sum / (double)n);
    for (i = 0; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) {
            float d = x[i + k] - m;
            sq[k] += d * d;
        }
    double var = 0;
    for (int k = 0; k < 8; k++)
        var += sq[k];
    for (; i < n; i++)
        var += (double)(x[i] - m) * (x[i] - m);
    *mean = m;
    *rstd = (float)(1.0 / sqrt(var / (double)n + eps));
}

/* y = act(groupnorm(x) * (1 + scale) + shift), one (image, group) per task; y may be x. */
void op_groupnorm(const groupnorm *gn, const float *x, int n, int hw, const float *scale,
                  const float *shift, int shift_stride, op_act act, float *y)
{
    int cpg = gn->channels / gn->groups;
    size_t gsize = (size_t)cpg * hw;
#pragma omp parallel for schedule(static) if ((size_t)n * gn->groups * gsize > 16384)
    for (int ng = 0; ng < n * gn->groups; ng++) {
        int img = ng / gn->groups, g = ng % gn->groups;
        const float *xg = x + ((size_t)img * gn->channels + (size_t)g * cpg) * hw;
        float *yg = y + ((size_t)img * gn->channels + (size_t)g * cpg) * hw;
        float m, rstd;
        group_stats(xg, gsize, gn->eps, &m, &rstd);
        for (int c = 0; c < cpg; c++) {
            int ch = g * cpg + c;
            /* ((x - m) rstd gamma + beta)(1 + scale) + shift as one multiply-add per value */
            float a = gn->gamma[ch] * rstd, b = gn->beta[ch] - m * a;
            float s = scale ? 1.0f + scale[(size_t)img * shift_stride + ch] : 1.0f;
            float t = shift ? shift[(size_t)img * shift_stride + ch] : 0.0f;
            op_affine_act(xg + (size_t)c * hw, hw, a * s, b * s + t, act, yg + (size_t)c * hw);
        }
    }
}
