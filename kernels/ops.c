/* Tensor operations on OpenBLAS: convolution (nine shifted GEMMs for 3x3 stride-1 layers, else
 * im2col + GEMM), GroupNorm, attention. */
#include "kernels/ops.h"

#include "kernels/kernels.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

/* ---------------------------------------------------------------- GEMM */

/* The parallel GEMM splits C into 1, 2, 4 or 8 slices by work size alone, never by thread
 * count: each slice is one single-threaded OpenBLAS call, so every output element is computed
 * by the same instructions in the same order whatever the number of threads, and images are
 * bitwise identical for any --threads (DESIGN.md section 2). OpenBLAS's own threading
 * partitions by thread count and changes the last bits, so it stays at one thread. Few slices
 * keep the cost of packing the shared operand again per slice small. */
static int gemm_slices(double flops)
{
    return flops < 4e6 ? 1 : flops < 4e8 ? 2 : flops < 1.6e9 ? 4 : 8;
}

/* Every GEMM the engine asks for is noted here once (a sliced one as one). While a trace is on
 * (`strata bench`) its shape is recorded, so that the same GEMMs can be timed alone; otherwise
 * a note costs one test of a pointer. */
static kernels_gemm *gemm_log;
static int gemm_log_cap, gemm_log_count;

static void note_gemm(int trans_a, int trans_b, int m, int n, int k)
{
    if (!gemm_log) return;
    int i;
#pragma omp atomic capture
    i = gemm_log_count++;
    if (i < gemm_log_cap) gemm_log[i] = (kernels_gemm){m, n, k, trans_a, trans_b};
}

int kernels_trace_gemms(kernels_gemm *log, int cap)
{
    int count = gemm_log_count;
    gemm_log = log, gemm_log_cap = cap, gemm_log_count = 0;
    return count;
}

static void sgemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha,
                  const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    note_gemm(ta == CblasTrans, tb == CblasTrans, m, n, k);
    cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

static void gemm_once_single_threaded(void)
{
    static int done;
    if (!done) {
        openblas_set_num_threads(1);
        done = 1;
    }
}

void op_gemm(int trans_b, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
             int ldb, float beta, float *c, int ldc)
{
    gemm_once_single_threaded();
    int slices = gemm_slices(2.0 * m * n * k);
    /* slice the longer side of C, in multiples of 16 (whole micro-tiles) */
    int by_cols = n >= m, len = by_cols ? n : m;
    int chunk = ((len + slices - 1) / slices + 15) / 16 * 16;
    int chunks = (len + chunk - 1) / chunk;
    CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
    note_gemm(0, trans_b, m, n, k);
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (int i = 0; i < chunks; i++) {
        int lo = i * chunk, cnt = len - lo < chunk ? len - lo : chunk;
        if (by_cols)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, tb, m, cnt, k, alpha, a, lda,
                        trans_b ? b + (size_t)lo * ldb : b + lo, ldb, beta, c + lo, ldc);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, tb, cnt, n, k, alpha, a + (size_t)lo * lda,
                        lda, b, ldb, beta, c + (size_t)lo * ldc, ldc);
    }
}

/* ---------------------------------------------------------------- arena */

enum { ARENA_ALIGN = 64 };

void arena_init(arena *a)
{
    memset(a, 0, sizeof *a);
}

/* Free the heap blocks standing in for offsets >= from (they are LIFO like the arena). */
static void arena_drop_overflow(arena *a, size_t from)
{
    while (a->noverflow && a->overflow[a->noverflow - 1].offset >= from)
        free(a->overflow[--a->noverflow].ptr);
}

void arena_fini(arena *a)
{
    arena_drop_overflow(a, 0);
    free(a->overflow);
    free(a->base);
    memset(a, 0, sizeof *a);
}

float *arena_floats(arena *a, size_t count)
{
    size_t bytes = (count * sizeof(float) + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    size_t end = a->used + bytes;
    if (end > a->peak) a->peak = end;
    if (end <= a->cap) {
        float *p = (float *)(a->base + a->used);
        a->used = end;
        return p;
    }
    /* Past the block: serve this pass from the heap; arena_reset() grows the block. */
    size_t offset = a->used;
    a->used = end;
    if (a->noverflow == a->overflow_cap) {
        int cap = a->overflow_cap ? 2 * a->overflow_cap : 16;
        struct arena_block *grown = realloc(a->overflow, (size_t)cap * sizeof *grown);
        if (!grown) return NULL;
        a->overflow = grown;
        a->overflow_cap = cap;
    }
    void *p = aligned_alloc(ARENA_ALIGN, bytes ? bytes : ARENA_ALIGN);
    if (!p) return NULL;
    a->overflow[a->noverflow].ptr = p;
    a->overflow[a->noverflow++].offset = offset;
    return p;
}

size_t arena_mark(const arena *a)
{
    return a->used;
}

void arena_release(arena *a, size_t mark)
{
    arena_drop_overflow(a, mark);
    a->used = mark;
}

int arena_reset(arena *a)
{
    arena_drop_overflow(a, 0);
    a->used = 0;
    if (a->peak <= a->cap) return 0;
    free(a->base);
    a->cap = 0;
    a->base = aligned_alloc(ARENA_ALIGN, a->peak);
    if (!a->base) return -1;
    a->cap = a->peak;
    return 0;
}

/* ---------------------------------------------------------------- convolution */

void conv2d_out_size(const conv2d *cv, int h, int w, int *oh, int *ow)
{
    *oh = (h + cv->pad[0] + cv->pad[2] - cv->k) / cv->stride + 1;
    *ow = (w + cv->pad[1] + cv->pad[3] - cv->k) / cv->stride + 1;
}

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

static int conv_band_rows(int kdim, int oh, int ow)
{
    long rows = CONV_BAND_FLOATS / ((long)kdim * ow);
    return rows < 1 ? 1 : rows > oh ? oh : (int)rows;
}

static int conv_is_pointwise(const conv2d *cv)
{
    return cv->k == 1 && cv->stride == 1 && !cv->pad[0] && !cv->pad[1] && !cv->pad[2] &&
           !cv->pad[3];
}

/* out [cout, ld] (ld >= ohw) starts as the bias, or is added to when accumulate. */
OP_VECTOR_CLONES
static void conv_init_out(const conv2d *cv, float *out, size_t ohw, size_t ld, int accumulate)
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

static void conv_gemm(const conv2d *cv, int n, int kdim, const float *b, float *c, int ldc,
                      int sliced)
{
    if (sliced)
        op_gemm(0, cv->cout, n, kdim, 1.0f, cv->weight, kdim, b, n, 1.0f, c, ldc);
    else
        sgemm(CblasNoTrans, CblasNoTrans, cv->cout, n, kdim, 1.0f, cv->weight, kdim, b, n, 1.0f, c,
              ldc);
}

/* One image, its im2col built and multiplied band by band (CONV_BAND_FLOATS). */
static void conv_banded(const conv2d *cv, const float *x, int h, int w, float *y, int accumulate,
                        float *col, int sliced)
{
    int oh, ow, kdim = cv->cin * cv->k * cv->k;
    conv2d_out_size(cv, h, w, &oh, &ow);
    size_t ohw = (size_t)oh * ow;
    conv_init_out(cv, y, ohw, ohw, accumulate);
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
        note_gemm(0, 0, cv->cout, cols, cv->cin);
#pragma omp parallel for schedule(static) if (parallel && chunks > 1)
    for (int i = 0; i < chunks; i++) {
        int lo = i * chunk, cnt = cols - lo < chunk ? cols - lo : chunk;
        conv_init_out(cv, out + lo, cnt, cols, 0);
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
    conv_init_out(cv, out, ld, ld, accumulate);
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

int op_conv2d(const conv2d *cv, const float *x, int n, int h, int w, float *y, int accumulate,
              arena *a)
{
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

/* ---------------------------------------------------------------- normalisation */

OP_VECTOR_CLONES
static void group_stats(const float *x, size_t n, float eps, float *mean, float *rstd)
{
    float lane[8] = {0}, sq[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            lane[k] += x[i + k];
    double sum = 0;
    for (int k = 0; k < 8; k++)
        sum += lane[k];
    for (; i < n; i++)
        sum += x[i];
    float m = (float)(sum / (double)n);
    for (i = 0; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) {
            float d = x[i + k] - m;
            sq[k] += d * d;
        }
    double var = 0;
    for (int k = 0; k < 8; k++)
        var += sq[k];
    for (; i < n; i++)
        var += (double)(x[i] - m) * (x[i] - m);
    *mean = m;
    *rstd = (float)(1.0 / sqrt(var / (double)n + eps));
}

void op_groupnorm(const groupnorm *gn, const float *x, int n, int hw, const float *scale,
                  const float *shift, int shift_stride, op_act act, float *y)
{
    int cpg = gn->channels / gn->groups;
    size_t gsize = (size_t)cpg * hw;
#pragma omp parallel for schedule(static) if ((size_t)n * gn->groups * gsize > 16384)
    for (int ng = 0; ng < n * gn->groups; ng++) {
        int img = ng / gn->groups, g = ng % gn->groups;
        const float *xg = x + ((size_t)img * gn->channels + (size_t)g * cpg) * hw;
        float *yg = y + ((size_t)img * gn->channels + (size_t)g * cpg) * hw;
        float m, rstd;
        group_stats(xg, gsize, gn->eps, &m, &rstd);
        for (int c = 0; c < cpg; c++) {
            int ch = g * cpg + c;
            /* ((x - m) rstd gamma + beta)(1 + scale) + shift as one multiply-add per value */
            float a = gn->gamma[ch] * rstd, b = gn->beta[ch] - m * a;
            float s = scale ? 1.0f + scale[(size_t)img * shift_stride + ch] : 1.0f;
            float t = shift ? shift[(size_t)img * shift_stride + ch] : 0.0f;
            op_affine_act(xg + (size_t)c * hw, hw, a * s, b * s + t, act, yg + (size_t)c * hw);
        }
    }
}

/* ---------------------------------------------------------------- small ops */

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

void op_linear(const float *x, int n, int in, const float *w, const float *b, int out, float *y)
{
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++)
            y[(size_t)i * out + o] = b ? b[o] : 0.0f;
    op_gemm(1, n, out, in, 1.0f, x, in, w, in, 1.0f, y, out);
}

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

void op_timestep_embedding(const float *t, int n, int dim, int flip_sin_to_cos, float freq_shift,
                           float *y)
{
    int half = dim / 2;
    /* float32 throughout, in diffusers' order of operations */
    const float neg_log_period = (float)-log(10000.0);
    for (int i = 0; i < n; i++) {
        float *row = y + (size_t)i * dim;
        for (int k = 0; k < half; k++) {
            float e = expf(neg_log_period * (float)k / ((float)half - freq_shift));
            float arg = t[i] * e;
            float s = sinf(arg), c = cosf(arg);
            row[flip_sin_to_cos ? half + k : k] = s;
            row[flip_sin_to_cos ? k : half + k] = c;
        }
        if (dim % 2) row[dim - 1] = 0.0f;
    }
}

/* ---------------------------------------------------------------- attention */

/* Rows of queries handled at once: bounds the score block to ATTN_QBLOCK x hw floats. */
enum { ATTN_QBLOCK = 128 };

/* proj [rows, hw] = w [rows, c] x [c, hw] + b */
static void project(const float *w, const float *b, int rows, int c, const float *x, int hw,
                    float *proj)
{
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < hw; i++)
            proj[(size_t)r * hw + i] = b ? b[r] : 0.0f;
    op_gemm(0, rows, hw, c, 1.0f, w, c, x, hw, 1.0f, proj, hw);
}

/* Each (head, query block) pair is one task with its own score buffer: the parallel split
 * never changes what a task computes. */
static void attention_heads(const attention *at, const float *q, const float *k, const float *v,
                            int hw, float *scores, float *o)
{
    int d = at->dim_head, qblocks = (hw + ATTN_QBLOCK - 1) / ATTN_QBLOCK;
    int qb_max = hw < ATTN_QBLOCK ? hw : ATTN_QBLOCK;
    float scale = 1.0f / sqrtf((float)d);
    double flops = 4.0 * at->heads * (double)hw * hw * d;
#pragma omp parallel for schedule(static) if (at->heads * qblocks > 1 && flops > 2e6)
    for (int task = 0; task < at->heads * qblocks; task++) {
        int head = task / qblocks, q0 = (task % qblocks) * ATTN_QBLOCK;
        int qb = hw - q0 < ATTN_QBLOCK ? hw - q0 : ATTN_QBLOCK;
        float *s = scores + (size_t)omp_get_thread_num() * qb_max * hw;
        size_t off = (size_t)head * d * hw;
        sgemm(CblasTrans, CblasNoTrans, qb, hw, d, scale, q + off + q0, hw, k + off, hw, 0.0f, s,
              hw);
        op_softmax_rows(s, qb, hw);
        sgemm(CblasNoTrans, CblasTrans, d, qb, hw, 1.0f, v + off, hw, s, hw, 0.0f, o + off + q0,
              hw);
    }
}

/* One image: y = out(attention(norm(x))) (+ x) (/ rescale). buf holds xn, q, k, v, o and the
 * score rows of every thread. */
static void attention_image(const attention *at, const float *x, int hw, float *y, float *buf)
{
    int c = at->channels, inner = at->heads * at->dim_head;
    size_t plane = (size_t)inner * hw;
    float *xn = buf, *q = xn + (size_t)c * hw, *k = q + plane, *v = k + plane, *o = v + plane;
    const float *src = x;
    if (at->has_norm) {
        op_groupnorm(&at->norm, x, 1, hw, NULL, NULL, 0, OP_ACT_NONE, xn);
        src = xn;
    }
    project(at->wq, at->bq, inner, c, src, hw, q);
    project(at->wk, at->bk, inner, c, src, hw, k);
    project(at->wv, at->bv, inner, c, src, hw, v);
    attention_heads(at, q, k, v, hw, o + plane, o);
    project(at->wo, at->bo, c, inner, o, hw, y);
    for (size_t j = 0; j < (size_t)c * hw; j++) {
        float r = at->residual ? y[j] + x[j] : y[j];
        y[j] = at->rescale == 1.0f ? r : r / at->rescale;
    }
}

int op_attention(const attention *at, const float *x, int n, int hw, float *y, arena *a)
{
    int c = at->channels, inner = at->heads * at->dim_head, threads = omp_get_max_threads();
    int qb = hw < ATTN_QBLOCK ? hw : ATTN_QBLOCK;
    /* several images: one per thread, each whole on its thread (the ops inside then run on
     * that thread alone, split the same way), so the bits do not depend on the thread count */
    int workers = n < threads ? n : threads;
    size_t per = (size_t)c * hw + 4 * (size_t)inner * hw + (size_t)threads * qb * hw;
    size_t mark = arena_mark(a);
    float *buf = arena_floats(a, per * workers);
    if (!buf) return -1;
    if (n == 1) { /* not in a parallel region, even an inactive one: the ops inside split */
        attention_image(at, x, hw, y, buf);
    } else {
#pragma omp parallel for schedule(static)
        for (int i = 0; i < n; i++)
            attention_image(at, x + (size_t)i * c * hw, hw, y + (size_t)i * c * hw,
                            buf + per * (size_t)omp_get_thread_num());
    }
    arena_release(a, mark);
    return 0;
}
