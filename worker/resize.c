/* Exact output sizes: a TASK may ask for a side other than the level's (the planner's last
 * resize). Growing is bilinear like the levels' cond upsampling; shrinking is an area filter,
 * because bilinear with align_corners samples a sparse subset of the pixels and aliases. */
#include "worker/worker.h"

#include <stdlib.h>
#include <string.h>

/* One axis of torch's adaptive average pooling: output i averages input [lo, hi). */
static void area_span(int i, int in, int out, int *lo, int *hi)
{
    *lo = (int)((long long)i * in / out);
    *hi = (int)(((long long)(i + 1) * in + out - 1) / out);
}

/* Area resize of a square CHW image, separably (rows, then columns): the mean over each output
 * pixel's rectangle, as torch.nn.functional.interpolate(mode="area"). tmp holds
 * channels * side * nside floats. */
static void resize_area(const float *src, int channels, int side, float *dst, int nside, float *tmp)
{
    for (int c = 0; c < channels; c++)
        for (int y = 0; y < side; y++)
            for (int x = 0; x < nside; x++) {
                int lo, hi;
                area_span(x, side, nside, &lo, &hi);
                const float *row = src + ((size_t)c * side + y) * side;
                float sum = 0;
                for (int k = lo; k < hi; k++)
                    sum += row[k];
                tmp[((size_t)c * side + y) * nside + x] = sum / (float)(hi - lo);
            }
    for (int c = 0; c < channels; c++)
        for (int y = 0; y < nside; y++) {
            int lo, hi;
            area_span(y, side, nside, &lo, &hi);
            for (int x = 0; x < nside; x++) {
                float sum = 0;
                for (int k = lo; k < hi; k++)
                    sum += tmp[((size_t)c * side + k) * nside + x];
                dst[((size_t)c * nside + y) * nside + x] = sum / (float)(hi - lo);
            }
        }
}

int worker_image_resize(const uint8_t *src, int side, uint8_t *dst, int nside, strata_err *e)
{
    if (side < 1 || nside < 1)
        return err_set(e, ERR_INPUT, "resize: sides %d -> %d must be positive", side, nside);
    if (side == nside) {
        memcpy(dst, src, (size_t)side * side * 3);
        return 0;
    }
    size_t big = (size_t)(side > nside ? side : nside);
    float *a = malloc(3 * (size_t)side * side * sizeof(float));
    float *b = malloc(3 * (size_t)nside * nside * sizeof(float));
    float *tmp = side > nside ? malloc(3 * big * (size_t)nside * sizeof(float)) : NULL;
    int rc = 0;
    if (!a || !b || (side > nside && !tmp)) {
        rc = err_set(e, ERR_NOMEM, "resize %d -> %d: out of memory", side, nside);
    } else {
        image_to_tensor(src, side, side, a);
        if (nside > side)
            image_resize_bilinear(a, 3, side, side, b, nside, nside);
        else
            resize_area(a, 3, side, b, nside, tmp);
        image_from_tensor(b, nside, nside, dst);
    }
    free(a);
    free(b);
    free(tmp);
    return rc;
}
