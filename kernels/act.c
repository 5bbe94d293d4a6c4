/* Activations. Built with -ffinite-math-only -fno-signed-zeros (see the Makefile) so that the
 * SiLU loop vectorises: its inputs are finite activations. */
#include "kernels/ops.h"

#include <math.h>
#include <stdint.h>

static inline float exp_approx(float x);

float op_activate(op_act act, float v)
{
    switch (act) {
    case OP_ACT_SILU:
        return v / (1.0f + exp_approx(-v));
    case OP_ACT_MISH:
        return v * tanhf(log1pf(expf(v)));
    case OP_ACT_GELU:
        return 0.5f * v * (1.0f + erff(v * (float)M_SQRT1_2));
    case OP_ACT_RELU:
        return v > 0.0f ? v : 0.0f;
    default:
        return v;
    }
}

void op_activate_all(op_act act, float *x, size_t count)
{
    if (act != OP_ACT_NONE)
        for (size_t i = 0; i < count; i++)
            x[i] = op_activate(act, x[i]);
}

/* e^x for x in [-87, 88] (clamped), relative error below 1e-7: x = i ln2 + r with ln2 split in
 * two (Cody-Waite), |r| <= ln2 / 2, and Cephes' polynomial for e^r. Plain arithmetic, so loops
 * over it vectorise, and every machine gets the same bits (no libm). */
static inline float exp_approx(float x)
{
    x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
    float t = x * 1.44269504088896341f + 0.5f;
    int i = (int)t - (t < 0.0f);
    float r = x - (float)i * 0.693359375f;
    r = r - (float)i * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union {
        uint32_t u;
        float f;
    } scale = {(uint32_t)(i + 127) << 23};
    return p * scale.f;
}

/* y = act(x * a + b) over one channel; SiLU gets the vectorised exponential. */
OP_VECTOR_CLONES
void op_affine_act(const float *x, int n, float a, float b, op_act act, float *y)
{
    if (act == OP_ACT_SILU) {
#pragma omp simd
        for (int i = 0; i < n; i++) {
            float v = x[i] * a + b;
            y[i] = v / (1.0f + exp_approx(-v));
        }
    } else {
        for (int i = 0; i < n; i++)
            y[i] = op_activate(act, x[i] * a + b);
    }
}

OP_VECTOR_CLONES
void op_softmax_rows(float *s, int rows, int cols)
{
    for (int r = 0; r < rows; r++) {
        float *row = s + (size_t)r * cols, m = row[0], sum = 0.0f;
        for (int j = 1; j < cols; j++)
            m = row[j] > m ? row[j] : m;
        /* the sum in 8 lanes so that the loop vectorises; fixed order, same bits every run */
        float lane[8] = {0};
        int j = 0;
        for (; j + 8 <= cols; j += 8)
            for (int k = 0; k < 8; k++) {
                row[j + k] = exp_approx(row[j + k] - m);
                lane[k] += row[j + k];
            }
        for (; j < cols; j++) {
            row[j] = exp_approx(row[j] - m);
            sum += row[j];
        }
        for (int k = 0; k < 8; k++)
            sum += lane[k];
        float inv = 1.0f / sum;
        for (j = 0; j < cols; j++)
            row[j] *= inv;
    }
}
