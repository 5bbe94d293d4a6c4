/* 2-D convolution on OpenBLAS: nine GEMMs on shifted views of a padded copy for 3x3 stride-1
 * layers, im2col + GEMM (in bands of output rows) for the others, several small images in one
 * GEMM, and one image per thread when a batch has several. */
#include "kernels/arena.h"
#include "kernels/gemm.h"
#include "kernels/ops.h"

#include <cblas.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

/* Output sides of cv on an h x w input: PyTorch's formula with the explicit padding. */
void conv2d_out_size(const conv2d *cv, int h, int w, int *oh, int *ow)
{
    *oh = (h + cv->pad[0] + cv->pad[2] - cv->k) / cv->stride + 1;
    *ow = (w + cv->pad[1] + cv->pad[3] - cv->k) / cv->stride + 1;
}

/* [cout, cin, k, k] to [cout, k, k, cin] in place, one output channel at a time through a
 * row-sized copy. -1 when that copy cannot be allocated. */
int conv2d_weight_taps_major(float *weight, int cout, int cin, int k)
{
    int kk = k * k;
    float *row = malloc((size_t)cin * kk * sizeof *row);
    if (!row) return -1;
    for (int co = 0; co < cout; co++) {
        float *w = weight + (size_t)co * cin * kk;
        memcpy(row, w, (size_t)cin * kk * sizeof *row);
        for (int ci = 0; ci < cin; ci++)
            for (int t = 0; t < kk; t++)
                w[(size_t)t * cin + ci] = row[(size_t)ci * kk + t];
    }
    free(row);
    return 0;
}

/* One (ky, kx, channel) row of im2col for output rows [oy0, oy1) of one image:
 * col[(oy - oy0) * ow + ox]. */
OP_VECTOR_CLONES
static void im2col_row(const float *xc, int h, int w, int ky, int kx, int stride, int pt, int pl,
                       int oy0, int oy1, int ow, float *col)
{
    for (int oy = oy0; oy < oy1; oy++) {
        int iy = oy * stride + ky - pt;
        float *dst = col + (size_t)(oy - oy0) * ow;
        if (iy < 0 || iy >= h) {
            memset(dst, 0, (size_t)ow * sizeof(float));
            continue;
        }
        const float *src = xc + (size_t)iy * w;
        if (stride == 1) {
            /* valid ox: 0 <= ox + kx - pl < w; rows are short (4 to 64 floats at the UNet's
             * coarse levels), so an inline vector loop beats a memcpy call per row */
            int lo = pl - kx > 0 ? pl - kx : 0;
            int hi = w + pl - kx < ow ? w + pl - kx : ow;
            if (hi < lo) hi = lo;
            const float *shifted = src + kx - pl;
            for (int ox = 0; ox < lo; ox++)
                dst[ox] = 0;
#pragma omp simd
            for (int ox = lo; ox < hi; ox++)
                dst[ox] = shifted[ox];
            for (int ox = hi; ox < ow; ox++)
                dst[ox] = 0;
        } else {
            for (int ox = 0; ox < ow; ox++) {
                int ix = ox * stride + kx - pl;
                dst[ox] = ix >= 0 && ix < w ? src[ix] : 0.0f;
            }
        }
    }
}

/* col [k*k*cin, g * ohw] for output rows [oy0, oy1), ohw = (oy1 - oy0) * ow: image j's
 * columns start at j * ohw; row (ky * k + kx) * cin + ci, as the weight's columns. */
static void im2col(const conv2d *cv, const float *x, int g, int h, int w, int oy0, int oy1, int ow,
                   float *col)
{
    int kk = cv->k * cv->k, rows = cv->cin * kk;
    size_t ohw = (size_t)(oy1 - oy0) * ow, ld = (size_t)g * ohw, chw = (size_t)cv->cin * h * w;
#pragma omp parallel for schedule(static) if (rows * g * ohw > 32768)
    for (int r = 0; r < rows; r++) {
        int t = r / cv->cin, ci = r % cv->cin, ky = t / cv->k, kx = t % cv->k; /* taps major */
        for (int j = 0; j < g; j++)
            im2col_row(x + j * chw + (size_t)ci * h * w, h, w, ky, kx, cv->stride, cv->pad[0],
                       cv->pad[1], oy0, oy1, ow, col + r * ld + j * ohw);
    }
}

/* The im2col matrix of one large image is built and multiplied in bands of output rows of at
 * most this many floats (16 MiB): a 512x512 layer would otherwise need 0.9 GB of im2col, and a
 * band that fits the cache is faster to multiply. The bands depend on the shapes alone, so the
 * arithmetic does not depend on the thread count. Every ddpm-cifar10 layer fits in one band. */
enum { CONV_BAND_FLOATS = 1 << 22 };

/* Output rows per band of an im2col of kdim rows, at least 1 and at most oh. */
static int conv_band_rows(int kdim, int oh, int ow)
{
    long rows = CONV_BAND_FLOATS / ((long)kdim * ow);
    return rows < 1 ? 1 : rows > oh ? oh : (int)rows;
}

/* A 1x1 stride-1 unpadded convolution: the input is already the GEMM's right operand. */
static int conv_is_pointwise(const conv2d *cv)
{
    return cv->k == 1 && cv->stride == 1 && !cv->pad[0] && !cv->pad[1] && !cv->pad[2] &&
           !cv->pad[3];
}

/* out [cout, ld] (ld >= ohw) starts as the bias, or is added to when accumulate. */
OP_VECTOR_CLONES
void op_conv_bias(const conv2d *cv, float *out, size_t ohw, size_t ld, int accumulate)
{
#pragma omp parallel for schedule(static) if (cv->cout * ohw > 65536)
    for (int co = 0; co < cv->cout; co++) {
        float *row = out + (size_t)co * ld, b = cv->bias ? cv->bias[co] : 0.0f;
        if (accumulate) {
            if (b != 0.0f)
                for (size_t i = 0; i < ohw; i++)
                    row[i] += b;
        } else {
            for (size_t i = 0; i < ohw; i++)
                row[i] = b;
        }
    }
}

/* Images are grouped so that one sgemm sees at least this many columns: small spatial sizes
 * (the 4x4 and 8x8 levels of a UNet) otherwise waste most of each GEMM call. */
enum { CONV_MIN_COLS = 1024 };

/* c [cout, n] += weight [cout, kdim] b [kdim, n]: split over threads by op_gemm when sliced,
 * else one OpenBLAS call on this thread (one image per thread already). */
static void conv_gemm(const conv2d *cv, int n, int kdim, const float *b, float *c, int ldc,
                      int sliced)
{
    if (sliced)
        op_gemm(0, cv->cout, n, kdim, 1.0f, cv->weight, kdim, b, n, 1.0f, c, ldc);
    else
        gemm_traced(CblasNoTrans, CblasNoTrans, cv->cout, n, kdim, 1.0f, cv->weight, kdim, b, n,
                    1.0f, c, ldc);
}

/* One image, its im2col built and multiplied band by band (CONV_BAND_FLOATS). */
static void conv_banded(const conv2d *cv, const float *x, int h, int w, float *y, int accumulate,
                        float *col, int sliced)
{
    int oh, ow, kdim = cv->cin * cv->k * cv->k;
    conv2d_out_size(cv, h, w, &oh, &ow);
    size_t ohw = (size_t)oh * ow;
    op_conv_bias(cv, y, ohw, ohw, accumulate);
    int band = conv_band_rows(kdim, oh, ow);
    for (int oy = 0; oy < oh; oy += band) {
        int end = oy + band < oh ? oy + band : oh;
        im2col(cv, x, 1, h, w, oy, end, ow, col);
        conv_gemm(cv, (end - oy) * ow, kdim, col, y + (size_t)oy * ow, (int)ohw, sliced);
    }
}

/* ---- 3x3 convolution without im2col: nine GEMMs on shifted views of a padded copy
 *
 * With the input zero-padded to rows of w + 2, output pixel (oy, ox) computed at column
 * oy * (w + 2) + ox reads tap (ky, kx) at that column plus ky * (w + 2) + kx. So each tap is
 * one GEMM, weight block [cout, cin] times the padded planes shifted by a constant, with no
 * im2col: it writes 9x the input and is often most of the overhead around the GEMM. The two
 * extra columns per row are computed and dropped (2 / (w + 2) more work, hence w >= 16). */

enum { SHIFTED_MIN_WIDTH = 16, SHIFTED_MIN_CIN = 16, SHIFTED_SLACK = 16 };

/* Whether cv runs as nine shifted GEMMs on an input w wide (3x3, stride 1, padding 1, wide
 * and deep enough for the two wasted columns per row not to matter). */
static int conv_is_shifted(const conv2d *cv, int w)
{
    return cv->k == 3 && cv->stride == 1 && cv->pad[0] == 1 && cv->pad[1] == 1 && cv->pad[2] == 1 &&
           cv->pad[3] == 1 && w >= SHIFTED_MIN_WIDTH && cv->cin >= SHIFTED_MIN_CIN;
}

/* Output rows per band: the padded band and its output fit CONV_BAND_FLOATS. */
static int shifted_band_rows(const conv2d *cv, int h, int w)
{
    long rows = CONV_BAND_FLOATS / ((long)(w + 2) * (cv->cin + cv->cout)) - 2;
    return rows < 1 ? 1 : rows > h ? h : (int)rows;
}

/* Scratch of one band of the shifted GEMMs: the padded input planes, their slack and the
 * padded output. */
static size_t shifted_scratch_floats(const conv2d *cv, int h, int w)
{
    size_t rows = (size_t)shifted_band_rows(cv, h, w), pw = (size_t)w + 2;
    return (rows + 2) * pw * cv->cin + SHIFTED_SLACK + rows * pw * cv->cout;
}

/* pad [cin, rows + 2, w + 2]: input rows oy0 - 1 .. oy0 + rows, zero outside the image. The
 * last tap reads two floats past a plane, so a zeroed slack follows the last one. */
OP_VECTOR_CLONES
static void pad_band(const float *x, int cin, int h, int w, int oy0, int rows, float *pad,
                     int parallel)
{
    size_t pw = (size_t)w + 2, plane = (size_t)(rows + 2) * pw;
#pragma omp parallel for schedule(static) if (parallel && plane * cin > 65536)
    for (int ci = 0; ci < cin; ci++)
        for (int r = 0; r < rows + 2; r++) {
            float *dst = pad + ci * plane + r * pw;
            int iy = oy0 - 1 + r;
            if (iy < 0 || iy >= h) {
                memset(dst, 0, pw * sizeof(float));
                continue;
            }
            const float *src = x + ((size_t)ci * h + iy) * w;
            dst[0] = dst[w + 1] = 0.0f;
#pragma omp simd
            for (int i = 0; i < w; i++)
                dst[1 + i] = src[i];
        }
    memset(pad + (size_t)cin * plane, 0, SHIFTED_SLACK * sizeof(float));
}

/* out [cout, cols] = bias + the nine taps, in column chunks that depend on the shape alone
 * (one thread each when parallel; the same chunks one after another when not). */
static void shifted_gemms(const conv2d *cv, const float *pad, size_t plane, int cols, int pw,
                          float *out, int parallel)
{
    int slices = gemm_slices(18.0 * cv->cout * cols * cv->cin);
    int chunk = ((cols + slices - 1) / slices + 15) / 16 * 16, chunks = (cols + chunk - 1) / chunk;
    for (int t = 0; t < 9; t++)
        gemm_note(0, 0, cv->cout, cols, cv->cin, 0);
#pragma omp parallel for schedule(static) if (parallel && chunks > 1)
    for (int i = 0; i < chunks; i++) {
        int lo = i * chunk, cnt = cols - lo < chunk ? cols - lo : chunk;
        op_conv_bias(cv, out + lo, cnt, cols, 0);
        for (int t = 0; t < 9; t++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cv->cout, cnt, cv->cin, 1.0f,
                        cv->weight + (size_t)t * cv->cin, 9 * cv->cin,
                        pad + (t / 3) * pw + t % 3 + lo, (int)plane, 1.0f, out + lo, cols);
    }
}

/* y's rows [oy0, oy0 + rows) of every channel (plane hw apart) from out [cout, rows, w + 2],
 * the two extra columns dropped; added to y when accumulate. */
OP_VECTOR_CLONES
static void unpad_band(const float *out, int cout, int rows, int w, float *y, size_t hw,
                       int accumulate, int parallel)
{
    size_t pw = (size_t)w + 2;
#pragma omp parallel for schedule(static) if (parallel && (size_t)cout * rows * w > 65536)
    for (int co = 0; co < cout; co++)
        for (int r = 0; r < rows; r++) {
            const float *src = out + ((size_t)co * rows + r) * pw;
            float *dst = y + co * hw + (size_t)r * w;
            if (accumulate) {
#pragma omp simd
                for (int i = 0; i < w; i++)
                    dst[i] += src[i];
            } else {
#pragma omp simd
                for (int i = 0; i < w; i++)
                    dst[i] = src[i];
            }
        }
}

/* One image, band by band. */
static void conv_shifted(const conv2d *cv, const float *x, int h, int w, float *y, int accumulate,
                         float *scratch, int parallel)
{
    int band = shifted_band_rows(cv, h, w), pw = w + 2;
    for (int oy0 = 0; oy0 < h; oy0 += band) {
        int rows = h - oy0 < band ? h - oy0 : band;
        size_t plane = (size_t)(rows + 2) * pw;
        float *pad = scratch, *out = scratch + plane * cv->cin + SHIFTED_SLACK;
        pad_band(x, cv->cin, h, w, oy0, rows, pad, parallel);
        shifted_gemms(cv, pad, plane, rows * pw, pw, out, parallel);
        unpad_band(out, cv->cout, rows, w, y + (size_t)oy0 * w, (size_t)h * w, accumulate,
                   parallel);
    }
}

/* Between tmp [c, g * hw] (images side by side, as one GEMM computes them) and y
 * (g, c, hw): to y when to_images, else from it. */
static void regroup_images(float *tmp, float *y, int g, int c, size_t hw, int to_images)
{
    size_t ld = (size_t)g * hw;
#pragma omp parallel for schedule(static) if ((size_t)g * c * hw > 65536)
    for (int jc = 0; jc < g * c; jc++) {
        int j = jc / c, ch = jc % c;
        float *t = tmp + (size_t)ch * ld + j * hw, *im = y + ((size_t)j * c + ch) * hw;
        if (to_images)
            memcpy(im, t, hw * sizeof(float));
        else
            memcpy(t, im, hw * sizeof(float));
    }
}

/* One GEMM for g images at once: y (g, cout, oh, ow) from x (g, cin, h, w). col holds the
 * im2col matrix [cin*k*k, g*ohw], tmp the [cout, g*ohw] result when g > 1. */
static void conv_images(const conv2d *cv, const float *x, int g, int h, int w, float *y,
                        int accumulate, float *col, float *tmp, int sliced)
{
    int oh, ow, kdim = cv->cin * cv->k * cv->k;
    conv2d_out_size(cv, h, w, &oh, &ow);
    size_t ohw = (size_t)oh * ow, ld = (size_t)g * ohw;
    if (g == 1 && conv_is_shifted(cv, w)) {
        conv_shifted(cv, x, h, w, y, accumulate, col, sliced);
        return;
    }
    if (g == 1 && !conv_is_pointwise(cv)) {
        conv_banded(cv, x, h, w, y, accumulate, col, sliced);
        return;
    }
    const float *b = x;
    if (g > 1) {
        im2col(cv, x, g, h, w, 0, oh, ow, col);
        b = col;
    }
    float *out = g > 1 ? tmp : y;
    if (g > 1 && accumulate) regroup_images(tmp, y, g, cv->cout, ohw, 0);
    op_conv_bias(cv, out, ld, ld, accumulate);
    conv_gemm(cv, (int)ld, kdim, b, out, (int)ld, sliced);
    if (g > 1) regroup_images(tmp, y, g, cv->cout, ohw, 1);
}

/* Scratch floats per buffer: the im2col matrix of a group of images; for one image the
 * padded planes and output of the shifted GEMMs, an im2col band, or none (pointwise). */
static size_t conv_scratch_floats(const conv2d *cv, int h, int w, int group)
{
    int oh, ow, kdim = cv->cin * cv->k * cv->k;
    conv2d_out_size(cv, h, w, &oh, &ow);
    if (group > 1) return (size_t)kdim * group * oh * ow;
    if (conv_is_shifted(cv, w)) return shifted_scratch_floats(cv, h, w);
    if (conv_is_pointwise(cv)) return 0;
    return (size_t)kdim * conv_band_rows(kdim, oh, ow) * ow;
}

/* y = conv(x) (or y += when accumulate) for n images: several small images per GEMM, one
 * image per thread, or one image at a time with the GEMMs split; which depends on the shapes
 * and n alone. Scratch from the arena, released before returning; -1 when it cannot. */
int op_conv2d(const conv2d *cv, const float *x, int n, int h, int w, float *y, int accumulate,
              arena *a)
{
    if (conv2d_is_banded(cv, h, w)) /* large maps: in bands, as the UNet forward runs them */
        return op_conv2d_inputs(cv, &(conv_input){.data = x, .c = cv->cin}, 1, n, h, w, NULL, 0, y,
                                accumulate, a);
    int oh, ow;
    conv2d_out_size(cv, h, w, &oh, &ow);
    size_t ohw = (size_t)oh * ow, chw = (size_t)cv->cin * h * w, ochw = (size_t)cv->cout * ohw;
    /* the shifted GEMMs take one image at a time (conv_images) */
    int group =
        ohw >= CONV_MIN_COLS || conv_is_shifted(cv, w) ? 1 : (int)((CONV_MIN_COLS + ohw - 1) / ohw);
    if (group > n) group = n;
    /* Several images of one GEMM each: one image per thread, each GEMM one OpenBLAS call, so
     * im2col, the bias and the copies run in parallel too. Chosen by n alone, never by the
     * thread count, so the arithmetic of an image does not depend on --threads. */
    int per_image = group == 1 && n > 1;
    gemm_once_single_threaded();
    int buffers = per_image ? (n < omp_get_max_threads() ? n : omp_get_max_threads()) : 1;
    size_t mark = arena_mark(a), col_size = conv_scratch_floats(cv, h, w, group);
    float *col = col_size ? arena_floats(a, col_size * buffers) : NULL;
    float *tmp = group > 1 ? arena_floats(a, (size_t)cv->cout * group * ohw) : NULL;
    if ((col_size && !col) || (group > 1 && !tmp)) {
        arena_release(a, mark);
        return -1;
    }
    if (per_image) {
#pragma omp parallel for schedule(static)
        for (int i = 0; i < n; i++)
            conv_images(cv, x + (size_t)i * chw, 1, h, w, y + (size_t)i * ochw, accumulate,
                        col ? col + (size_t)omp_get_thread_num() * col_size : NULL, NULL, 0);
    } else {
        for (int i0 = 0; i0 < n; i0 += group)
            conv_images(cv, x + (size_t)i0 * chw, n - i0 < group ? n - i0 : group, h, w,
                        y + (size_t)i0 * ochw, accumulate, col, tmp, 1);
    }
    arena_release(a, mark);
    return 0;
}
