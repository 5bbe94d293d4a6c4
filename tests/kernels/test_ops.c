/* op_conv2d compared with a direct float64 convolution on each of its paths (im2col, the nine
 * shifted GEMMs of 3x3 stride-1 layers on small maps, and on large ones the bands of
 * kernels/conv_band.c by nine taps or by Winograd), with shapes large enough for several bands of
 * output rows: one image (the sliced-GEMM path that tiled refine levels take) and several (one
 * image per thread), stride 2 with asymmetric padding, writing and accumulating. */
#include <math.h>
#include <stdlib.h>

#include "kernels/ops.h"
#include "tests/test.h"

static float uniform(unsigned *state)
{
    *state = *state * 1664525u + 1013904223u;
    return (float)(*state >> 8) / (float)(1u << 24) - 0.5f;
}

static double direct_conv(const conv2d *cv, const float *x, int h, int w, int co, int oy, int ox)
{
    double sum = cv->bias[co];
    for (int ci = 0; ci < cv->cin; ci++)
        for (int ky = 0; ky < cv->k; ky++)
            for (int kx = 0; kx < cv->k; kx++) {
                int iy = oy * cv->stride + ky - cv->pad[0], ix = ox * cv->stride + kx - cv->pad[1];
                if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                sum += (double)cv->weight[((co * cv->k + ky) * cv->k + kx) * cv->cin + ci] *
                       x[((size_t)ci * h + iy) * w + ix];
            }
    return sum;
}

typedef struct conv_case {
    int n, stride, accumulate, cin, cout, h, w, winograd;
} conv_case;

/* Largest |op_conv2d - direct| over every output, relative to the largest |direct|. */
static double conv_error(conv_case c)
{
    conv2d cv = {c.cin, c.cout, 3,   c.stride, {c.stride == 1, c.stride == 1, 1, 1},
                 NULL,  NULL,   NULL};
    int oh, ow;
    conv2d_out_size(&cv, c.h, c.w, &oh, &ow);
    size_t xn = (size_t)c.n * c.cin * c.h * c.w, yn = (size_t)c.n * c.cout * oh * ow;
    float *x = malloc(xn * sizeof *x), *y = malloc(yn * sizeof *y);
    float *wgt = malloc((size_t)c.cout * c.cin * 9 * sizeof *wgt);
    float *bias = malloc(c.cout * sizeof *bias);
    unsigned seed = 7;
    for (size_t i = 0; i < xn; i++)
        x[i] = uniform(&seed);
    for (int i = 0; i < c.cout * c.cin * 9; i++)
        wgt[i] = uniform(&seed);
    for (int i = 0; i < c.cout; i++)
        bias[i] = uniform(&seed);
    for (size_t i = 0; i < yn; i++)
        y[i] = c.accumulate ? 1.0f : NAN;
    cv.weight = wgt, cv.bias = bias;
    float *wino = malloc((conv2d_winograd_floats(&cv) + 1) * sizeof *wino);
    if (c.winograd && wino) conv2d_winograd_weights(&cv, wino);
    arena a;
    arena_init(&a);
    double err = -1, ref = 0;
    if (op_conv2d(&cv, x, c.n, c.h, c.w, y, c.accumulate, &a) == 0) {
        err = 0;
        for (int i = 0; i < c.n; i++)
            for (int co = 0; co < c.cout; co++)
                for (int oy = 0; oy < oh; oy++)
                    for (int ox = 0; ox < ow; ox++) {
                        const float *xi = x + (size_t)i * c.cin * c.h * c.w;
                        double want = direct_conv(&cv, xi, c.h, c.w, co, oy, ox) + c.accumulate;
                        double got = y[(((size_t)i * c.cout + co) * oh + oy) * ow + ox];
                        err = fmax(err, fabs(got - want));
                        ref = fmax(ref, fabs(want));
                    }
    }
    arena_fini(&a);
    free(x), free(y), free(wgt), free(wino), free(bias);
    return err < 0 ? err : err / ref;
}

TEST(ops_conv_bands_match_direct_convolution)
{
    static const conv_case cases[] = {
        /* im2col: cin < 16, 72 rows x 640 x 100 outputs = 4.6 M floats, two bands */
        {1, 1, 0, 8, 4, 640, 100, 0},
        {2, 1, 1, 8, 4, 640, 100, 0},
        /* stride 2: im2col, 432 rows x 100 x 100 = 4.3 M floats, two bands */
        {1, 2, 0, 48, 8, 200, 200, 0},
        {3, 2, 1, 48, 8, 200, 200, 0},
        /* 3x3 stride 1 on 16+ channels and 128 x 128+: the banded path (kernels/conv_band.c) */
        {1, 1, 0, 16, 4, 300, 1024, 0},
        {1, 1, 1, 16, 4, 300, 1024, 0},
        /* the same by Winograd F(4x4, 3x3); sides not multiples of 4 keep the nine taps */
        {1, 1, 0, 16, 4, 300, 1024, 1},
        {2, 1, 1, 16, 4, 300, 1024, 1},
        {1, 1, 0, 64, 8, 132, 260, 1},
        {1, 1, 0, 16, 4, 301, 130, 1},
        {1, 1, 1, 16, 4, 130, 302, 1},
        /* one band each, several images, one per thread; the 16-wide edge of the rule */
        {3, 1, 0, 48, 8, 100, 100, 0},
        {3, 1, 1, 32, 8, 16, 16, 0},
        /* under 16 wide: im2col again */
        {2, 1, 1, 32, 8, 8, 8, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        conv_case c = cases[i];
        double rel = conv_error(c);
        CHECKF(rel >= 0 && rel < 1e-5,
               "n=%d stride=%d accumulate=%d cin=%d %dx%d winograd=%d: relative error %g", c.n,
               c.stride, c.accumulate, c.cin, c.h, c.w, c.winograd, rel);
    }
}
