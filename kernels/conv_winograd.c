/* Winograd's minimal filtering F(2x2, 3x3) for the 3x3 stride-1 layers of the banded path: each
 * 2x2 block of output pixels is read from a 4x4 block of input as 16 products in a transformed
 * domain instead of 36 direct ones, so the GEMMs do 16 / 36 of the direct convolution's
 * multiply-adds (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016):
 *
 *   Y = A^T [ (G g G^T) . (B^T d B) ] A,  with the 16 positions of the products one GEMM each:
 *   M[xi] (cout x tiles) = U[xi] (cout x cin) V[xi] (cin x tiles).
 *
 * B^T and A^T hold only 0 and +-1, so the input and output transforms are sums and differences,
 * and the error stays that of the direct convolution (the diffusers fixtures agree to 1e-6). The
 * kernels are transformed once, in double, when the model loads. Which pixels share a tile, and so
 * the rounding, depends on the band's shape alone, never on the thread count. */
#include "kernels/ops.h"

#include <stddef.h>

/* B^T d B of the 4x4 block d, along one axis: the four rows (or columns) of the result. */
#define WINO_B(d0, d1, d2, d3, u0, u1, u2, u3)                                                     \
    do {                                                                                           \
        (u0) = (d0) - (d2);                                                                        \
        (u1) = (d1) + (d2);                                                                        \
        (u2) = (d2) - (d1);                                                                        \
        (u3) = (d1) - (d3);                                                                        \
    } while (0)

size_t conv2d_winograd_floats(const conv2d *cv)
{
    return cv->k == 3 && cv->stride == 1 ? (size_t)WINO_POINTS * cv->cout * cv->cin : 0;
}

/* U[i][j] = (G g G^T)[i][j] of one kernel g (taps-major: g[t * cin]), in double. */
static void transform_kernel(const float *g, int cin, double u[4][4])
{
    static const double G[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
    double gg[4][3]; /* G g */
    for (int i = 0; i < 4; i++)
        for (int b = 0; b < 3; b++)
            gg[i][b] = G[i][0] * g[(0 * 3 + b) * cin] + G[i][1] * g[(1 * 3 + b) * cin] +
                       G[i][2] * g[(2 * 3 + b) * cin];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            u[i][j] = gg[i][0] * G[j][0] + gg[i][1] * G[j][1] + gg[i][2] * G[j][2];
}

void conv2d_winograd_weights(conv2d *cv, float *u)
{
    for (int co = 0; co < cv->cout; co++)
        for (int ci = 0; ci < cv->cin; ci++) {
            double t[4][4];
            transform_kernel(cv->weight + (size_t)co * 9 * cv->cin + ci, cv->cin, t);
            for (int p = 0; p < WINO_POINTS; p++)
                u[((size_t)p * cv->cout + co) * cv->cin + ci] = (float)t[p / 4][p % 4];
        }
    cv->winograd = u;
}

/* even[t] = src[2 t], odd[t] = src[2 t + 1], t < n. */
OP_VECTOR_CLONES
static void deinterleave(const float *src, int n, float *even, float *odd)
{
#pragma omp simd
    for (int t = 0; t < n; t++) {
        even[t] = src[2 * t];
        odd[t] = src[2 * t + 1];
    }
}

/* One row of n tiles of one channel: the four padded input rows r[0..3] from the tiles' first
 * column to the 16 transformed values of each tile, v[p * stride + t]. The vertical half first,
 * over whole rows; each result row split into its even and odd columns, so that the horizontal
 * half, tile by tile, reads contiguous floats (tile t's columns are e[t], o[t], e[t+1], o[t+1]).
 * tmp: 4 n + 4 floats. */
OP_VECTOR_CLONES
static void input_tile_row(const float *const r[4], int n, float *tmp, float *v, size_t stride)
{
    int cols = 2 * n + 2;
    float *col = tmp, *e = tmp + cols, *o = e + n + 1;
    for (int i = 0; i < 4; i++) {
        /* row i of B^T d: r0 - r2, r1 + r2, r2 - r1, r1 - r3 */
        const float *p = r[i == 0 ? 0 : i == 2 ? 2 : 1], *q = r[i < 2 ? 2 : i == 2 ? 1 : 3];
        if (i == 1) {
#pragma omp simd
            for (int x = 0; x < cols; x++)
                col[x] = p[x] + q[x];
        } else {
#pragma omp simd
            for (int x = 0; x < cols; x++)
                col[x] = p[x] - q[x];
        }
        deinterleave(col, n + 1, e, o);
        float *v0 = v + (size_t)(4 * i) * stride, *v1 = v0 + stride, *v2 = v1 + stride,
              *v3 = v2 + stride;
#pragma omp simd
        for (int t = 0; t < n; t++)
            WINO_B(e[t], o[t], e[t + 1], o[t + 1], v0[t], v1[t], v2[t], v3[t]);
    }
}

void winograd_input(const float *pad, int cin, int rows, int w, int tx0, int n, float *v,
                    float *tmp)
{
    int pw = w + 2;
    size_t plane = (size_t)(rows + 2) * pw, tiles = (size_t)(rows / 2) * n;
    for (int c = 0; c < cin; c++)
        for (int ty = 0; ty < rows / 2; ty++) {
            const float *r0 = pad + c * plane + (size_t)(2 * ty) * pw + 2 * tx0;
            const float *const r[4] = {r0, r0 + pw, r0 + 2 * pw, r0 + 3 * pw};
            input_tile_row(r, n, tmp, v + c * tiles + (size_t)ty * n, (size_t)cin * tiles);
        }
}

/* y[2 t] (+)= even[t], y[2 t + 1] (+)= odd[t], t < n. */
OP_VECTOR_CLONES
static void interleave(const float *even, const float *odd, int n, float *y, int accumulate)
{
    if (accumulate) {
#pragma omp simd
        for (int t = 0; t < n; t++) {
            y[2 * t] += even[t];
            y[2 * t + 1] += odd[t];
        }
    } else {
#pragma omp simd
        for (int t = 0; t < n; t++) {
            y[2 * t] = even[t];
            y[2 * t + 1] = odd[t];
        }
    }
}

/* A^T m A of one row of n tiles of one output channel, m[p * stride + t], plus v: the two
 * output rows y0 and y1 from the tiles' first column, written or (accumulate) added to. The
 * vertical half into four rows of sums per output row, the horizontal half into the even and
 * odd columns, then interleaved into y. tmp: 6 n floats. */
OP_VECTOR_CLONES
static void output_tile_row(const float *m, size_t stride, int n, float v, float *tmp, float *y0,
                            float *y1, int accumulate)
{
    float *s = tmp, *even = tmp + 4 * (size_t)n, *odd = even + n;
    for (int i = 0; i < 2; i++) {
        /* row i of A^T m: m0 + m1 + m2, m1 - m2 - m3 */
        for (int j = 0; j < 4; j++) {
            const float *m0 = m + (size_t)j * stride, *m1 = m0 + 4 * stride, *m2 = m1 + 4 * stride,
                        *m3 = m2 + 4 * stride;
            float *sj = s + (size_t)j * n;
            if (i == 0) {
#pragma omp simd
                for (int t = 0; t < n; t++)
                    sj[t] = m0[t] + m1[t] + m2[t];
            } else {
#pragma omp simd
                for (int t = 0; t < n; t++)
                    sj[t] = m1[t] - m2[t] - m3[t];
            }
        }
        const float *s0 = s, *s1 = s + n, *s2 = s1 + n, *s3 = s2 + n;
#pragma omp simd
        for (int t = 0; t < n; t++) {
            even[t] = s0[t] + s1[t] + s2[t] + v;
            odd[t] = s1[t] - s2[t] - s3[t] + v;
        }
        interleave(even, odd, n, i == 0 ? y0 : y1, accumulate);
    }
}

void winograd_output(const conv2d *cv, const float *add, const float *m, int rows, int w, int tx0,
                     int n, float *y, size_t hw, int accumulate, float *tmp)
{
    size_t tiles = (size_t)(rows / 2) * n, stride = (size_t)cv->cout * tiles;
    for (int co = 0; co < cv->cout; co++) {
        float v = (cv->bias ? cv->bias[co] : 0.0f) + (add ? add[co] : 0.0f);
        for (int ty = 0; ty < rows / 2; ty++) {
            float *y0 = y + co * hw + (size_t)(2 * ty) * w + 2 * tx0;
            output_tile_row(m + co * tiles + (size_t)ty * n, stride, n, v, tmp, y0, y0 + w,
                            accumulate);
        }
    }
}
