/* GroupNorm, fused with its affine parameters, the optional scale/shift time conditioning and
 * the activation that follows it in the UNet. */
#include "kernels/ops.h"

#include <math.h>
#include <stddef.h>

/* A group's values: runs of memory, one per map of a concatenation it spans. */
enum { GROUP_MAX_SPANS = CONV_MAX_INPUTS };
typedef struct group_span {
    const float *p[GROUP_MAX_SPANS];
    size_t len[GROUP_MAX_SPANS];
    int count;
} group_span;

/* Sum of one run in 8 float lanes, then in double. */
OP_VECTOR_CLONES
static double span_sum(const float *x, size_t n)
{
    float lane[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            lane[k] += x[i + k];
    double sum = 0;
    for (int k = 0; k < 8; k++)
        sum += lane[k];
    for (; i < n; i++)
        sum += x[i];
    return sum;
}

/* Sum of (x - m)^2 over one run, the same way. */
OP_VECTOR_CLONES
static double span_sum_squares(const float *x, size_t n, float m)
{
    float lane[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) {
            float d = x[i + k] - m;
            lane[k] += d * d;
        }
    double sum = 0;
    for (int k = 0; k < 8; k++)
        sum += lane[k];
    for (; i < n; i++)
        sum += (double)(x[i] - m) * (x[i] - m);
    return sum;
}

/* Mean and 1 / sqrt(var + eps) of a group: sums in 8 float lanes, combined in double, in a
 * fixed order so that every clone and thread count gives the same bits. */
static void group_stats(const group_span *g, float eps, float *mean, float *rstd)
{
    double sum = 0, var = 0;
    size_t n = 0;
    for (int s = 0; s < g->count; s++)
        sum += span_sum(g->p[s], g->len[s]), n += g->len[s];
    float m = (float)(sum / (double)n);
    for (int s = 0; s < g->count; s++)
        var += span_sum_squares(g->p[s], g->len[s], m);
    *mean = m;
    *rstd = (float)(1.0 / sqrt(var / (double)n + eps));
}

/* Channel ch's a and b: ((x - m) rstd gamma + beta)(1 + scale) + shift as one multiply-add. */
static void channel_coeffs(const groupnorm *gn, int img, int ch, float m, float rstd,
                           const float *scale, const float *shift, int shift_stride, float *a,
                           float *b)
{
    float ga = gn->gamma[ch] * rstd, gb = gn->beta[ch] - m * ga;
    float s = scale ? 1.0f + scale[(size_t)img * shift_stride + ch] : 1.0f;
    float t = shift ? shift[(size_t)img * shift_stride + ch] : 0.0f;
    *a = ga * s, *b = gb * s + t;
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
        float m, rstd, a, b;
        group_stats(&(group_span){{xg}, {gsize}, 1}, gn->eps, &m, &rstd);
        for (int c = 0; c < cpg; c++) {
            channel_coeffs(gn, img, g * cpg + c, m, rstd, scale, shift, shift_stride, &a, &b);
            op_affine_act(xg + (size_t)c * hw, hw, a, b, act, yg + (size_t)c * hw);
        }
    }
}

/* Group g of image img of the concatenated inputs as runs of memory (channels of one input are
 * consecutive planes). */
static group_span concat_group(const conv_input *in, int nin, int img, int c0, int cpg, size_t hw)
{
    group_span g = {{0}, {0}, 0};
    for (int s = 0, base = 0; s < nin; base += in[s].c, s++) {
        int lo = c0 > base ? c0 : base, hi = c0 + cpg < base + in[s].c ? c0 + cpg : base + in[s].c;
        if (lo >= hi || g.count == GROUP_MAX_SPANS) continue;
        g.p[g.count] = in[s].data + ((size_t)img * in[s].c + (lo - base)) * hw;
        g.len[g.count++] = (size_t)(hi - lo) * hw;
    }
    return g;
}

void op_groupnorm_coeffs(const groupnorm *gn, const conv_input *in, int nin, int n, int hw,
                         const float *scale, const float *shift, int shift_stride, float *a,
                         float *b)
{
    int cpg = gn->channels / gn->groups;
#pragma omp parallel for schedule(static) if ((size_t)n * gn->channels * hw > 16384)
    for (int ng = 0; ng < n * gn->groups; ng++) {
        int img = ng / gn->groups, c0 = ng % gn->groups * cpg;
        group_span g = concat_group(in, nin, img, c0, cpg, (size_t)hw);
        float m, rstd;
        group_stats(&g, gn->eps, &m, &rstd);
        for (int ch = c0; ch < c0 + cpg; ch++) {
            size_t k = (size_t)img * gn->channels + ch;
            channel_coeffs(gn, img, ch, m, rstd, scale, shift, shift_stride, &a[k], &b[k]);
        }
    }
}
