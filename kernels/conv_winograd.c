/* Winograd's minimal filtering F(4x4, 3x3) for the 3x3 stride-1 layers of the banded path: each
 * 4x4 block of output pixels is read from a 6x6 block of input as 36 products in a transformed
 * domain instead of 144 direct ones, so the GEMMs do a quarter of the direct convolution's
 * multiply-adds (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016):
 *
 *   Y = A^T [ (G g G^T) . (B^T d B) ] A,  with the 36 positions of the products one GEMM each:
 *   M[xi] (cout x tiles) = U[xi] (cout x cin) V[xi] (cin x tiles).
 *
 * The interpolation points are 0, +-1, +-2 (and infinity): B^T and A^T hold small integers, so
 * the transforms are a few multiply-adds and the rounding stays small: the diffusers fixtures
 * agree to 4e-6 of the output's largest value (tolerance 1e-4), the convolution tests to 1e-5.
 * F(2x2, 3x3), used until 2026-12-07, does 16 / 36 of the direct work instead of 9 / 36, and
 * F(6x6, 3x3) would need the points +-1/2, whose rounding grows much faster. The kernels are
 * transformed once, in double, when the model loads. Which pixels share a tile, and so the
 * rounding, depends on the band's shape alone, never on the thread count. */
#include "kernels/ops.h"

#include <stddef.h>

size_t conv2d_winograd_floats(const conv2d *cv)
{
    return cv->k == 3 && cv->stride == 1 ? (size_t)WINO_POINTS * cv->cout * cv->cin : 0;
}

/* U = G g G^T of one kernel g (taps-major: g[t * cin]), in double. */
static void transform_kernel(const float *g, int cin, double u[6][6])
{
    static const double G[6][3] = {{1.0 / 4, 0, 0},
                                   {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                   {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                   {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                   {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                   {0, 0, 1}};
    double gg[6][3]; /* G g */
    for (int i = 0; i < 6; i++)
        for (int b = 0; b < 3; b++)
            gg[i][b] = G[i][0] * g[(0 * 3 + b) * cin] + G[i][1] * g[(1 * 3 + b) * cin] +
                       G[i][2] * g[(2 * 3 + b) * cin];
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 6; j++)
            u[i][j] = gg[i][0] * G[j][0] + gg[i][1] * G[j][1] + gg[i][2] * G[j][2];
}

void conv2d_winograd_weights(conv2d *cv, float *u)
{
    for (int co = 0; co < cv->cout; co++)
        for (int ci = 0; ci < cv->cin; ci++) {
            double t[6][6];
            transform_kernel(cv->weight + (size_t)co * 9 * cv->cin + ci, cv->cin, t);
            for (int p = 0; p < WINO_POINTS; p++)
                u[((size_t)p * cv->cout + co) * cv->cin + ci] = (float)t[p / 6][p % 6];
        }
    cv->winograd = u;
}

/* Row i of B^T d for the six rows (or columns) d0..d5 of a block:
 *   4 d0 - 5 d2 + d4,  -4 (d1 + d2) + d3 + d4,  4 (d1 - d2) - d3 + d4,
 *   -2 (d1 - d3) - d2 + d4,  2 (d1 - d3) - d2 + d4,  4 d1 - 5 d3 + d5. */
#define WINO_B(d0, d1, d2, d3, d4, d5, u0, u1, u2, u3, u4, u5)                                     \
    do {                                                                                           \
        float s12_ = (d1) + (d2), s34_ = (d3) + (d4), d13_ = (d1) - (d3), d42_ = (d4) - (d2);      \
        (u0) = 4.0f * (d0)-5.0f * (d2) + (d4);                                                     \
        (u1) = s34_ - 4.0f * s12_;                                                                 \
        (u2) = 4.0f * ((d1) - (d2)) + (d4) - (d3);                                                 \
        (u3) = d42_ - 2.0f * d13_;                                                                 \
        (u4) = d42_ + 2.0f * d13_;                                                                 \
        (u5) = 4.0f * (d1)-5.0f * (d3) + (d5);                                                     \
    } while (0)

/* q[k][t] = src[4 t + k], k < 4, t < n: the four phases of a row, so that a tile's columns are
 * contiguous floats of them. */
OP_VECTOR_CLONES
static void deinterleave4(const float *src, int n, float *q0, float *q1, float *q2, float *q3)
{
#pragma omp simd
    for (int t = 0; t < n; t++) {
        q0[t] = src[4 * t];
        q1[t] = src[4 * t + 1];
        q2[t] = src[4 * t + 2];
        q3[t] = src[4 * t + 3];
    }
}

/* One row of n tiles of one channel: the six padded input rows r[0..5] from the tiles' first
 * column to the 36 transformed values of each tile, v[p * stride + t]. The vertical half first,
 * over whole rows; each result row split into its four phases, so that the horizontal half, tile
 * by tile, reads contiguous floats (tile t's columns are q0..q3[t], q0[t+1], q1[t+1]).
 * tmp: WINO_TMP_FLOATS(n) floats. */
OP_VECTOR_CLONES
static void input_tile_row(const float *const r[6], int n, float *tmp, float *v, size_t stride)
{
    int cols = 4 * n + 4; /* 4 n + 2 read, two more so that every phase has n + 1 */
    float *u[6], *q0 = tmp + 6 * (size_t)cols, *q1 = q0 + n + 1, *q2 = q1 + n + 1, *q3 = q2 + n + 1;
    for (int i = 0; i < 6; i++)
        u[i] = tmp + (size_t)i * cols;
    float *u0 = u[0], *u1 = u[1], *u2 = u[2], *u3 = u[3], *u4 = u[4], *u5 = u[5];
    const float *r0 = r[0], *r1 = r[1], *r2 = r[2], *r3 = r[3], *r4 = r[4], *r5 = r[5];
#pragma omp simd
    for (int x = 0; x < 4 * n + 2; x++)
        WINO_B(r0[x], r1[x], r2[x], r3[x], r4[x], r5[x], u0[x], u1[x], u2[x], u3[x], u4[x], u5[x]);
    for (int i = 0; i < 6; i++) {
        float *ui = u[i];
        ui[4 * n + 2] = ui[4 * n + 3] = 0.0f;
        deinterleave4(ui, n + 1, q0, q1, q2, q3);
        float *v0 = v + (size_t)(6 * i) * stride, *v1 = v0 + stride, *v2 = v1 + stride,
              *v3 = v2 + stride, *v4 = v3 + stride, *v5 = v4 + stride;
#pragma omp simd
        for (int t = 0; t < n; t++)
            WINO_B(q0[t], q1[t], q2[t], q3[t], q0[t + 1], q1[t + 1], v0[t], v1[t], v2[t], v3[t],
                   v4[t], v5[t]);
    }
}

void winograd_input(const float *pad, int cin, int rows, int w, int tx0, int n, float *v,
                    float *tmp)
{
    int pw = w + 2;
    size_t plane = (size_t)(rows + 2) * pw, tiles = (size_t)(rows / 4) * n;
    for (int c = 0; c < cin; c++)
        for (int ty = 0; ty < rows / 4; ty++) {
            const float *r0 = pad + c * plane + (size_t)(4 * ty) * pw + 4 * tx0;
            const float *const r[6] = {r0,          r0 + pw,     r0 + 2 * pw,
                                       r0 + 3 * pw, r0 + 4 * pw, r0 + 5 * pw};
            input_tile_row(r, n, tmp, v + c * tiles + (size_t)ty * n, (size_t)cin * tiles);
        }
}

/* Row a of A^T m for the six rows (or columns) m0..m5 of a block:
 *   m0 + (m1 + m2) + (m3 + m4),  (m1 - m2) + 2 (m3 - m4),  (m1 + m2) + 4 (m3 + m4),
 *   (m1 - m2) + 8 (m3 - m4) + m5. */
#define WINO_A(m0, m1, m2, m3, m4, m5, y0, y1, y2, y3)                                             \
    do {                                                                                           \
        float s12_ = (m1) + (m2), s34_ = (m3) + (m4), d12_ = (m1) - (m2), d34_ = (m3) - (m4);      \
        (y0) = (m0) + s12_ + s34_;                                                                 \
        (y1) = d12_ + 2.0f * d34_;                                                                 \
        (y2) = s12_ + 4.0f * s34_;                                                                 \
        (y3) = d12_ + 8.0f * d34_ + (m5);                                                          \
    } while (0)

/* y[4 t + k] (+)= q_k[t], t < n. */
OP_VECTOR_CLONES
static void interleave4(const float *q0, const float *q1, const float *q2, const float *q3, int n,
                        float *y, int accumulate)
{
    if (accumulate) {
#pragma omp simd
        for (int t = 0; t < n; t++) {
            y[4 * t] += q0[t];
            y[4 * t + 1] += q1[t];
            y[4 * t + 2] += q2[t];
            y[4 * t + 3] += q3[t];
        }
    } else {
#pragma omp simd
        for (int t = 0; t < n; t++) {
            y[4 * t] = q0[t];
            y[4 * t + 1] = q1[t];
            y[4 * t + 2] = q2[t];
            y[4 * t + 3] = q3[t];
        }
    }
}

/* A^T m A of one row of n tiles of one output channel, m[p * stride + t], plus v: the four
 * output rows y[0..3] from the tiles' first column, written or (accumulate) added to. The
 * vertical half for each of the six columns of the blocks into s[a][j] (output row a), the
 * horizontal half into the four phases of each output row, then interleaved into it.
 * tmp: WINO_TMP_FLOATS(n) floats. */
OP_VECTOR_CLONES
static void output_tile_row(const float *m, size_t stride, int n, float v, float *tmp,
                            float *const y[4], int accumulate)
{
    float *q0 = tmp + 24 * (size_t)n, *q1 = q0 + n, *q2 = q1 + n, *q3 = q2 + n;
    for (int j = 0; j < 6; j++) {
        const float *m0 = m + (size_t)j * stride, *m1 = m0 + 6 * stride, *m2 = m1 + 6 * stride,
                    *m3 = m2 + 6 * stride, *m4 = m3 + 6 * stride, *m5 = m4 + 6 * stride;
        float *s0 = tmp + (size_t)j * n, *s1 = s0 + 6 * (size_t)n, *s2 = s1 + 6 * (size_t)n,
              *s3 = s2 + 6 * (size_t)n;
#pragma omp simd
        for (int t = 0; t < n; t++)
            WINO_A(m0[t], m1[t], m2[t], m3[t], m4[t], m5[t], s0[t], s1[t], s2[t], s3[t]);
    }
    for (int a = 0; a < 4; a++) {
        const float *s = tmp + (size_t)a * 6 * n;
        const float *s0 = s, *s1 = s0 + n, *s2 = s1 + n, *s3 = s2 + n, *s4 = s3 + n, *s5 = s4 + n;
#pragma omp simd
        for (int t = 0; t < n; t++) {
            WINO_A(s0[t], s1[t], s2[t], s3[t], s4[t], s5[t], q0[t], q1[t], q2[t], q3[t]);
            q0[t] += v, q1[t] += v, q2[t] += v, q3[t] += v;
        }
        interleave4(q0, q1, q2, q3, n, y[a], accumulate);
    }
}

void winograd_output(const conv2d *cv, const float *add, const float *m, int rows, int w, int tx0,
                     int n, float *y, size_t hw, int accumulate, float *tmp)
{
    size_t tiles = (size_t)(rows / 4) * n, stride = (size_t)cv->cout * tiles;
    for (int co = 0; co < cv->cout; co++) {
        float v = (cv->bias ? cv->bias[co] : 0.0f) + (add ? add[co] : 0.0f);
        for (int ty = 0; ty < rows / 4; ty++) {
            float *y0 = y + co * hw + (size_t)(4 * ty) * w + 4 * tx0;
            float *const yr[4] = {y0, y0 + w, y0 + 2 * w, y0 + 3 * w};
            output_tile_row(m + co * tiles + (size_t)ty * n, stride, n, v, tmp, yr, accumulate);
        }
    }
}
