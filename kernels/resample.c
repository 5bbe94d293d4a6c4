/* Resampling by 2 of a feature map: nearest-neighbour upsampling and average pooling. */
#include "kernels/ops.h"

#include <stddef.h>
#include <string.h>

/* Every value of nc planes of h x w repeated into a 2 x 2 block of y. */
OP_VECTOR_CLONES
void op_upsample_nearest2(const float *x, int nc, int h, int w, float *y)
{
#pragma omp parallel for schedule(static) if ((size_t)nc * h * w > 16384)
    for (int c = 0; c < nc; c++)
        for (int i = 0; i < h; i++) {
            const float *src = x + ((size_t)c * h + i) * w;
            float *dst = y + ((size_t)c * 2 * h + 2 * i) * 2 * w;
            for (int j = 0; j < w; j++)
                dst[2 * j] = dst[2 * j + 1] = src[j];
            memcpy(dst + 2 * w, dst, (size_t)2 * w * sizeof(float));
        }
}

/* The mean of each 2 x 2 block of nc planes of h x w (odd sides drop the last row/column). */
void op_avgpool2(const float *x, int nc, int h, int w, float *y)
{
    int oh = h / 2, ow = w / 2;
    for (int c = 0; c < nc; c++)
        for (int i = 0; i < oh; i++)
            for (int j = 0; j < ow; j++) {
                const float *p = x + ((size_t)c * h + 2 * i) * w + 2 * j;
                y[((size_t)c * oh + i) * ow + j] = (p[0] + p[1] + p[w] + p[w + 1]) * 0.25f;
            }
}
