/* Internal to kernels/: the tensor operations the UNet forward is built from (gemm.c, conv.c,
 * norm.c, act.c, attention.c, elementwise.c, resample.c), their scratch memory from the arena.
 * All tensors are float32 NCHW, contiguous. Not included outside kernels/. */
#ifndef STRATA_KERNELS_OPS_H
#define STRATA_KERNELS_OPS_H

#include "kernels/arena.h"

#include <stddef.h>

/* strata's own hot loops (normalisation, activations, padding and copies) are also built for
 * AVX-512 and AVX2, and the loader picks the widest this CPU has (GCC's target_clones; the
 * baseline x86-64 build has only SSE2). The Makefile turns contraction into FMA off, so every
 * clone does the same operations in the same order: only the vector width differs, and the
 * bits do not. Sanitizer builds keep one version. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) &&                             \
    !defined(__SANITIZE_ADDRESS__)
#define OP_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define OP_VECTOR_CLONES
#endif

/* Row-major C = alpha A B + beta C (B transposed when trans_b), split over threads in chunks
 * that depend on the shape only, so results are bitwise independent of the thread count. */
void op_gemm(int trans_b, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
             int ldb, float beta, float *c, int ldc);

/* y = conv2d(x): weight [cout, k, k, cin] (tap-major: PyTorch's [cout, cin, k, k] reordered
 * by conv2d_weight_taps_major, so each tap's [cout, cin] block is a matrix of its own), bias
 * [cout] or NULL, padding (top, left, bottom, right) as explicit zeros, any stride. winograd,
 * when set, is the weight of a 3x3 stride-1 layer in Winograd's domain (conv2d_winograd_weights),
 * and the banded path uses it on maps whose sides are multiples of 4. */
typedef struct conv2d {
    int cin, cout, k, stride;
    int pad[4];
    const float *weight;
    const float *bias;
    const float *winograd;
} conv2d;

/* y (n, cout, oh, ow) = conv(x (n, cin, h, w)); accumulate adds into y instead of writing.
 * Returns -1 when the arena cannot hold the scratch buffer. */
int op_conv2d(const conv2d *cv, const float *x, int n, int h, int w, float *y, int accumulate,
              arena *a);
void conv2d_out_size(const conv2d *cv, int h, int w, int *oh, int *ow);
/* out [cout, ld] (ohw values a row) = the bias, or += it when accumulate. */
void op_conv_bias(const conv2d *cv, float *out, size_t ohw, size_t ld, int accumulate);
/* PyTorch's [cout, cin, k, k] weight reordered in place to [cout, k, k, cin]. -1: no memory. */
int conv2d_weight_taps_major(float *weight, int cout, int cin, int k);

/* Winograd F(4x4, 3x3) (conv_winograd.c): a 6x6 input block, 36 transformed points, 4x4 outputs. */
enum { WINO_POINTS = 36, WINO_TILE = 4 };
/* Floats of cv's kernels in Winograd's domain: WINO_POINTS cout cin for a 3x3 stride-1 layer,
 * 0 for any other. */
size_t conv2d_winograd_floats(const conv2d *cv);
/* u [WINO_POINTS, cout, cin] = cv's taps-major kernels transformed (G g G^T); cv->winograd = u. */
void conv2d_winograd_weights(conv2d *cv, float *u);
/* The n tiles (4x4 output blocks) of columns tx0 .. tx0 + n - 1 of a band of rows output rows
 * (a multiple of 4), whose padded input is pad [cin, rows + 2, w + 2]: v [WINO_POINTS, cin,
 * rows / 4, n] = B^T d B of each tile's 6x6 input block d; tmp WINO_TMP_FLOATS(n) floats. */
void winograd_input(const float *pad, int cin, int rows, int w, int tx0, int n, float *v,
                    float *tmp);
#define WINO_TMP_FLOATS(n) (28 * (size_t)(n) + 28)
/* Those tiles' output pixels in the band's rows of y (planes hw apart, rows w wide) = A^T m A of
 * m [WINO_POINTS, cout, rows / 4, n], plus the bias and add[co] (NULL: none); added to y when
 * accumulate; tmp WINO_TMP_FLOATS(n) floats. */
void winograd_output(const conv2d *cv, const float *add, const float *m, int rows, int w, int tx0,
                     int n, float *y, size_t hw, int accumulate, float *tmp);

/* Activations diffusers' get_activation knows: act_fn of UNet2DModel. */
typedef enum op_act {
    OP_ACT_NONE,
    OP_ACT_SILU,
    OP_ACT_MISH,
    OP_ACT_GELU,
    OP_ACT_RELU,
} op_act;

float op_activate(op_act act, float v);
void op_activate_all(op_act act, float *x, size_t count);
/* Softmax of each row of s (rows x cols), in place. */
void op_softmax_rows(float *s, int rows, int cols);
/* y = act(x * a + b) over n floats (vectorised for SiLU). */
void op_affine_act(const float *x, int n, float a, float b, op_act act, float *y);

/* One input of a convolution as stored, and how the convolution reads it (conv_band.c): the
 * inputs of a layer are concatenated on channels, a stored (n, c, h / 2, w / 2) map is read
 * nearest-upsampled by 2 when up, and channel ch of image i as act(x * a[k] + b[k]),
 * k = i * coef_stride + ch, when a is set (GroupNorm's apply and its activation). */
enum { CONV_MAX_INPUTS = 4 }; /* inputs of one layer at most */
typedef struct conv_input {
    const float *data;
    int c, up;
    const float *a, *b;
    int coef_stride;
    op_act act;
} conv_input;

/* y (n, cout, oh, ow) = conv(the nin inputs, of the convolution's input size h x w) + add,
 * add[i * add_stride + co] per image and channel (or NULL); accumulate adds into y. Inputs are
 * never written out whole where the layer is a 3x3 stride-1 one: it is computed in bands of
 * output rows, each one thread's job. -1 when the arena cannot hold the scratch, or there are
 * more than CONV_MAX_INPUTS inputs or their channels are not cin. */
int op_conv2d_inputs(const conv2d *cv, const conv_input *in, int nin, int n, int h, int w,
                     const float *add, int add_stride, float *y, int accumulate, arena *a);

/* Whether a layer on an h x w input runs in bands of output rows (3x3 stride 1 on 128 x 128 or
 * more): op_conv2d and op_conv2d_inputs both take that path for it. */
int conv2d_is_banded(const conv2d *cv, int h, int w);

/* GroupNorm over (n, c, hw), then gamma/beta, then optionally y = y * (1 + scale) + shift with
 * per-(image, channel) scale and shift (scale_shift time conditioning), then the activation. */
typedef struct groupnorm {
    int channels, groups;
    float eps;
    const float *gamma;
    const float *beta;
} groupnorm;

void op_groupnorm(const groupnorm *gn, const float *x, int n, int hw, const float *scale,
                  const float *shift, int shift_stride, op_act act, float *y);
/* The same GroupNorm as the coefficients of y = x * a + b per (image, channel), a and b
 * [n, channels], over the nin (<= CONV_MAX_INPUTS) plain inputs concatenated on channels:
 * what a convolution's conv_input applies as it reads them. */
void op_groupnorm_coeffs(const groupnorm *gn, const conv_input *in, int nin, int n, int hw,
                         const float *scale, const float *shift, int shift_stride, float *a,
                         float *b);

/* y (n, out) = x (n, in) W^T + b, W [out, in]. */
void op_linear(const float *x, int n, int in, const float *w, const float *b, int out, float *y);
/* dst = src, count floats, in parallel chunks when large. */
void op_copy(float *dst, const float *src, size_t count);
/* x (n, c, hw) += v[i * v_stride + ch] for image i, channel ch: the time embedding of a
 * ResnetBlock2D added to every pixel. */
void op_add_channel_values(float *x, int n, int c, size_t hw, const float *v, int v_stride);
/* Nearest-neighbour x2: (n, c, h, w) -> (n, c, 2h, 2w). */
void op_upsample_nearest2(const float *x, int nc, int h, int w, float *y);
/* 2x2 average pool, stride 2: (n, c, h, w) -> (n, c, h/2, w/2). */
void op_avgpool2(const float *x, int nc, int h, int w, float *y);

/* Multi-head self-attention over the hw positions of (n, c, hw) as diffusers' Attention with
 * 4-D input: optional GroupNorm, q/k/v projections, softmax(q k^T * scale) v, out projection,
 * then (out + x) / rescale when residual. q/k/v weights [inner, c], out weight [c, inner]. */
typedef struct attention {
    int channels, heads, dim_head;
    int has_norm;
    groupnorm norm;
    const float *wq, *bq, *wk, *bk, *wv, *bv, *wo, *bo;
    float rescale;
    int residual;
} attention;

/* y = attention(x), n images; -1 when the arena cannot hold the scratch. */
int op_attention(const attention *at, const float *x, int n, int hw, float *y, arena *a);

#endif
