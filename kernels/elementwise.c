/* Whole-tensor copies and per-channel additions, split over threads when large. */
#include "kernels/ops.h"

#include <stddef.h>
#include <string.h>

/* memcpy in chunks of 64 Ki floats, one thread per chunk when there are several. */
void op_copy(float *dst, const float *src, size_t count)
{
    enum { CHUNK = 1 << 16 };
    size_t chunks = (count + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (size_t i = 0; i < chunks; i++) {
        size_t lo = i * CHUNK, len = count - lo < CHUNK ? count - lo : CHUNK;
        memcpy(dst + lo, src + lo, len * sizeof(float));
    }
}

/* x[i, ch, :] += v[i * v_stride + ch] over n images of c channels of hw values. */
OP_VECTOR_CLONES
void op_add_channel_values(float *x, int n, int c, size_t hw, const float *v, int v_stride)
{
#pragma omp parallel for schedule(static) if ((size_t)n * c * hw > 65536)
    for (int ic = 0; ic < n * c; ic++) {
        float *p = x + (size_t)ic * hw, t = v[(ic / c) * v_stride + ic % c];
        for (size_t j = 0; j < hw; j++)
            p[j] += t;
    }
}
