/* op_conv2d_inputs (kernels/conv_band.c) against a float64 convolution of the input it stands
 * for: two maps concatenated on channels, the second stored at half size and read upsampled,
 * the first read through a per-channel affine and SiLU, plus a per-image add; on the banded
 * path (128 x 128: several bands, two images) by nine taps and by Winograd F(4x4, 3x3) (200 x 200:
 * chunks of tile columns and bands with a shorter last one; 130 x 130, sides not multiples of 4:
 * the nine taps again), the written-out path (32 x 32), and a 1x1 layer
 * over two plain maps; writing and accumulating. op_groupnorm_coeffs over a concatenation whose
 * groups span both maps, against float64 statistics. */
#include <math.h>
#include <stdlib.h>

#include "kernels/ops.h"
#include "tests/test.h"

static float uniform(unsigned *state)
{
    *state = *state * 1664525u + 1013904223u;
    return (float)(*state >> 8) / (float)(1u << 24) - 0.5f;
}

static float *random_floats(size_t n, unsigned *seed)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; p && i < n; i++)
        p[i] = uniform(seed);
    return p;
}

enum { C0 = 20, C1 = 12, N = 2, COUT = 8 };

/* Input s's value (image i, its channel c, row y, column x of the h x w layer input) as its
 * conv_input says to read it, in double. */
static double input_value(const conv_input *in, int i, int c, int y, int x, int h, int w)
{
    int sh = in->up ? h / 2 : h, sw = in->up ? w / 2 : w;
    double v =
        in->data[(((size_t)i * in->c + c) * sh + (in->up ? y / 2 : y)) * sw + (in->up ? x / 2 : x)];
    if (!in->a) return v;
    v = v * in->a[i * in->coef_stride + c] + in->b[i * in->coef_stride + c];
    return v / (1.0 + exp(-v));
}

static double direct(const conv2d *cv, const conv_input *in, const float *add, int i, int co, int y,
                     int x, int h, int w)
{
    double sum = cv->bias[co] + add[i * COUT + co];
    int r = cv->k / 2;
    for (int c = 0; c < cv->cin; c++)
        for (int ky = 0; ky < cv->k; ky++)
            for (int kx = 0; kx < cv->k; kx++) {
                int iy = y + ky - r, ix = x + kx - r;
                if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                const conv_input *s = c < C0 ? &in[0] : &in[1];
                sum += (double)cv->weight[((co * cv->k + ky) * cv->k + kx) * cv->cin + c] *
                       input_value(s, i, c < C0 ? c : c - C0, iy, ix, h, w);
            }
    return sum;
}

/* Largest |op_conv2d_inputs - direct| relative to the largest |direct|; -1 when it fails. With
 * winograd, the layer carries its kernels in Winograd's domain, as a loaded model's do. */
static double inputs_error(int k, int side, int accumulate, int winograd)
{
    unsigned seed = 11;
    int hw = side * side, up = k == 3; /* a 1x1 layer takes plain inputs only */
    conv2d cv = {C0 + C1, COUT, k, 1, {k / 2, k / 2, k / 2, k / 2}, NULL, NULL, NULL};
    float *x0 = random_floats((size_t)N * C0 * hw, &seed);
    float *x1 = random_floats((size_t)N * C1 * hw / (up ? 4 : 1), &seed);
    float *wgt = random_floats((size_t)COUT * cv.cin * k * k, &seed);
    float *bias = random_floats(COUT, &seed), *add = random_floats(N * COUT, &seed);
    float *a = random_floats(N * C0, &seed), *b = random_floats(N * C0, &seed);
    float *y = random_floats((size_t)N * COUT * hw, &seed);
    for (size_t j = 0; j < (size_t)N * COUT * hw; j++)
        y[j] = accumulate ? 1.0f : NAN;
    cv.weight = wgt, cv.bias = bias;
    float *wino = malloc((conv2d_winograd_floats(&cv) + 1) * sizeof *wino);
    if (winograd && wino) conv2d_winograd_weights(&cv, wino);
    conv_input in[2] = {{x0, C0, 0, up ? a : NULL, up ? b : NULL, C0, OP_ACT_SILU},
                        {x1, C1, up, NULL, NULL, 0, OP_ACT_NONE}};
    arena ar;
    arena_init(&ar);
    double err = -1, ref = 0;
    if (op_conv2d_inputs(&cv, in, 2, N, side, side, up ? add : NULL, COUT, y, accumulate, &ar) ==
        0) {
        err = 0;
        for (int j = 0; !up && j < N * COUT; j++)
            add[j] = 0.0f; /* no add on the 1x1 path */
        for (int i = 0; i < N; i++)
            for (int co = 0; co < COUT; co++)
                for (int p = 0; p < hw; p++) {
                    double want = direct(&cv, in, add, i, co, p / side, p % side, side, side);
                    want += accumulate;
                    err = fmax(err, fabs(y[((size_t)i * COUT + co) * hw + p] - want));
                    ref = fmax(ref, fabs(want));
                }
    }
    arena_fini(&ar);
    free(x0), free(x1), free(wgt), free(wino), free(bias), free(a), free(b), free(add), free(y);
    return err < 0 ? err : err / ref;
}

TEST(ops_conv_inputs_match_direct_convolution)
{
    static const int cases[][4] = {/* k, side, accumulate, winograd */
                                   {3, 128, 0, 0}, {3, 128, 1, 0}, {3, 128, 0, 1}, {3, 128, 1, 1},
                                   {3, 200, 1, 1}, {3, 130, 1, 1}, {3, 32, 0, 0},  {3, 32, 1, 0},
                                   {1, 64, 0, 0},  {1, 64, 1, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const int *c = cases[i];
        double rel = inputs_error(c[0], c[1], c[2], c[3]);
        CHECKF(rel >= 0 && rel < 1e-5, "k=%d side=%d accumulate=%d winograd=%d: relative error %g",
               c[0], c[1], c[2], c[3], rel);
    }
}

TEST(ops_groupnorm_coeffs_span_concatenated_maps)
{
    unsigned seed = 5;
    int hw = 9 * 7, groups = 8, cpg = (C0 + C1) / groups; /* 4 a group: group 5 spans both */
    float *x0 = random_floats((size_t)N * C0 * hw, &seed),
          *x1 = random_floats((size_t)N * C1 * hw, &seed);
    float *gamma = random_floats(C0 + C1, &seed), *beta = random_floats(C0 + C1, &seed);
    float a[N * (C0 + C1)], b[N * (C0 + C1)];
    groupnorm gn = {C0 + C1, groups, 1e-5f, gamma, beta};
    conv_input in[2] = {{.data = x0, .c = C0}, {.data = x1, .c = C1}};
    op_groupnorm_coeffs(&gn, in, 2, N, hw, NULL, NULL, 0, a, b);
    double worst = 0;
    for (int i = 0; i < N; i++)
        for (int g = 0; g < groups; g++) {
            double sum = 0, sq = 0;
            for (int pass = 0; pass < 2; pass++)
                for (int c = g * cpg; c < (g + 1) * cpg; c++)
                    for (int p = 0; p < hw; p++) {
                        double v = c < C0 ? x0[((size_t)i * C0 + c) * hw + p]
                                          : x1[((size_t)i * C1 + c - C0) * hw + p];
                        double m = sum / (cpg * hw);
                        if (pass == 0)
                            sum += v;
                        else
                            sq += (v - m) * (v - m);
                    }
            double m = sum / (cpg * hw), rstd = 1.0 / sqrt(sq / (cpg * hw) + 1e-5);
            for (int c = g * cpg; c < (g + 1) * cpg; c++) {
                double wa = gamma[c] * rstd, wb = beta[c] - m * wa;
                worst = fmax(worst, fabs(a[i * (C0 + C1) + c] - wa) / fmax(fabs(wa), 1e-3));
                worst = fmax(worst, fabs(b[i * (C0 + C1) + c] - wb) / fmax(fabs(wb), 1e-3));
            }
        }
    CHECKF(worst < 1e-5, "largest relative error of a or b: %g", worst);
    free(x0), free(x1), free(gamma), free(beta);
}
