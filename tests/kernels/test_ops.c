/* op_conv2d on shapes large enough that im2col is built in several bands of output rows:
 * compared with a direct float64 convolution, for one image (the sliced-GEMM path that tiled
 * refine levels take) and several (one image per thread), with stride 2 and asymmetric padding. */
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
                sum += (double)cv->weight[((co * cv->cin + ci) * cv->k + ky) * cv->k + kx] *
                       x[((size_t)ci * h + iy) * w + ix];
            }
    return sum;
}

/* Largest |op_conv2d - direct| over every output, relative to the largest |direct|. */
static double banded_error(int n, int stride, int accumulate)
{
    /* 48 x 9 = 432 im2col rows x 100 x 100 outputs = 4.3 M floats: two bands */
    int cin = 48, cout = 8, side = 100 * stride;
    conv2d cv = {cin, cout, 3, stride, {stride == 1, stride == 1, 1, 1}, NULL, NULL};
    int oh, ow;
    conv2d_out_size(&cv, side, side, &oh, &ow);
    size_t xn = (size_t)n * cin * side * side, yn = (size_t)n * cout * oh * ow;
    float *x = malloc(xn * sizeof *x), *y = malloc(yn * sizeof *y);
    float *wgt = malloc((size_t)cout * cin * 9 * sizeof *wgt), *bias = malloc(cout * sizeof *bias);
    unsigned seed = 7;
    for (size_t i = 0; i < xn; i++) x[i] = uniform(&seed);
    for (int i = 0; i < cout * cin * 9; i++) wgt[i] = uniform(&seed);
    for (int i = 0; i < cout; i++) bias[i] = uniform(&seed);
    for (size_t i = 0; i < yn; i++) y[i] = accumulate ? 1.0f : NAN;
    cv.weight = wgt, cv.bias = bias;
    arena a;
    arena_init(&a);
    double err = -1, ref = 0;
    if (op_conv2d(&cv, x, n, side, side, y, accumulate, &a) == 0) {
        err = 0;
        for (int i = 0; i < n; i++)
            for (int co = 0; co < cout; co++)
                for (int oy = 0; oy < oh; oy++)
                    for (int ox = 0; ox < ow; ox++) {
                        const float *xi = x + (size_t)i * cin * side * side;
                        double want = direct_conv(&cv, xi, side, side, co, oy, ox) + accumulate;
                        double got = y[(((size_t)i * cout + co) * oh + oy) * ow + ox];
                        err = fmax(err, fabs(got - want));
                        ref = fmax(ref, fabs(want));
                    }
    }
    arena_fini(&a);
    free(x), free(y), free(wgt), free(bias);
    return err < 0 ? err : err / ref;
}

TEST(ops_conv_bands_match_direct_convolution)
{
    static const int cases[][3] = {{1, 1, 0}, {1, 2, 0}, {3, 1, 0}, {1, 1, 1}, {2, 2, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        double rel = banded_error(cases[c][0], cases[c][1], cases[c][2]);
        CHECKF(rel >= 0 && rel < 1e-5, "n=%d stride=%d accumulate=%d: relative error %g",
               cases[c][0], cases[c][1], cases[c][2], rel);
    }
}
