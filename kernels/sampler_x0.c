/* The x0 prediction of a sampler step under dynamic thresholding (diffusers'
 * _threshold_sample): the prediction of every image clamped to a quantile of its magnitudes. */
#include "kernels/kernels.h"
#include "kernels/sampler_state.h"
#include "kernels/sched.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* Partially sort a[0..n) so that a[k] is in its sorted place and nothing after it is smaller
 * (Hoare's selection; stops on equal keys, so runs of equal values stay cheap). */
static void sched_select(float *a, int64_t n, int64_t k)
{
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        float p = a[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < p)
                i++;
            while (a[j] > p)
                j--;
            if (i <= j) {
                float t = a[i];
                a[i++] = a[j];
                a[j--] = t;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return;
    }
}

/* torch.quantile(|x|, q) over n values with linear interpolation; tmp holds n floats. */
static float sched_quantile_abs(const float *x, int64_t n, float q, float *tmp)
{
    for (int64_t j = 0; j < n; j++)
        tmp[j] = fabsf(x[j]);
    float rank = q * (float)(n - 1); /* float32, as torch computes it */
    int64_t below = (int64_t)rank, above = (int64_t)ceilf(rank);
    float w = rank - (float)below;
    sched_select(tmp, n, below);
    float lo = tmp[below], hi = lo;
    if (above > below) {
        hi = tmp[below + 1];
        for (int64_t j = below + 2; j < n; j++)
            hi = fminf(hi, tmp[j]);
    }
    /* torch's lerp, which switches form at weight 0.5 */
    return fabsf(w) < 0.5f ? lo + w * (hi - lo) : hi - (hi - lo) * (1.0f - w);
}

/* Dynamic thresholding (_threshold_sample), per image, in place over s->x0. */
static void sched_threshold(sampler_t *s)
{
    int64_t per = (int64_t)(s->numel / (size_t)s->images);
    for (int img = 0; img < s->images; img++) {
        float *x = s->x0 + img * per;
        float q = sched_quantile_abs(x, per, s->cfg.dynamic_thresholding_ratio, s->scratch);
        /* torch.clamp(min=1, max=sample_max_value): min first, so max wins when below 1 */
        float t = fminf(fmaxf(q, 1.0f), s->cfg.sample_max_value);
#pragma omp parallel for schedule(static) if (per >= SCHED_PAR_MIN)
        for (int64_t j = 0; j < per; j++)
            x[j] = fminf(fmaxf(x[j], -t), t) / t;
    }
}

/* With thresholding on, fill s->x0 with the thresholded prediction; steps then read it. */
void sched_predict(sampler_t *s, const sched_x0 *p, const float *out, const float *sample)
{
    if (!s->cfg.thresholding) return;
    size_t n = s->numel;
#pragma omp parallel for schedule(static) if (n >= SCHED_PAR_MIN)
    for (size_t j = 0; j < n; j++)
        s->x0[j] = sched_x0_at(p, sample[j], out[j]);
    sched_threshold(s);
}
