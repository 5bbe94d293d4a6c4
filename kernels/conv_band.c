/* Convolutions that read their inputs as they are stored and build what the GEMM needs on the
 * fly: the channels of several maps concatenated, a map nearest-upsampled by 2, each channel
 * normalised and activated (GroupNorm's apply and SiLU), none of it written out as a map of its
 * own. 3x3 stride-1 layers on large maps run in bands of output rows, each band one job of one
 * thread from start to end: it builds its padded input rows, runs the nine GEMMs of the taps
 * on them in cache, and writes its output rows with the bias (and the time embedding, and the
 * residual when accumulating) added on the way: no barrier between the steps. A loaded model's
 * layers carry their kernels in Winograd's domain too, and on maps whose sides are multiples of 4
 * their bands run Winograd F(4x4, 3x3) instead of the nine taps (conv_winograd.c): 36 GEMMs of a
 * sixteenth of the columns, a quarter of the multiply-adds. */
#include "kernels/arena.h"
#include "kernels/gemm.h"
#include "kernels/ops.h"

#include <cblas.h>
#include <stddef.h>
#include <string.h>

#include <omp.h>

/* Channels of the concatenation. */
static int inputs_channels(const conv_input *in, int nin)
{
    int c = 0;
    for (int s = 0; s < nin; s++)
        c += in[s].c;
    return c;
}

/* Row iy (of h x w, the convolution's input size) of channel ch of image i of one input, as the
 * convolution reads it: upsampled and transformed. */
static void input_row(const conv_input *in, int i, int ch, int iy, int h, int w, float *dst)
{
    int sh = in->up ? h / 2 : h, sw = in->up ? w / 2 : w;
    const float *src =
        in->data + (((size_t)i * in->c + ch) * sh + (in->up ? iy / 2 : iy)) * (size_t)sw;
    if (in->up) {
        for (int x = 0; x < sw; x++)
            dst[2 * x] = dst[2 * x + 1] = src[x];
    } else if (!in->a) {
        memcpy(dst, src, (size_t)w * sizeof *dst);
        return;
    }
    if (in->a) {
        size_t k = (size_t)i * in->coef_stride + ch;
        op_affine_act(in->up ? dst : src, w, in->a[k], in->b[k], in->act, dst);
    }
}

/* Output rows per band: a band's padded input rows about 2 MB (512 Ki floats), the size at
 * which its nine GEMMs ran fastest on the SR models' layers (32-96 channels at 264-1056 px,
 * OpenBLAS's Haswell and Cooperlake kernels), and at least BAND_MIN_BANDS bands an image.
 * Depends on the shape alone, so the arithmetic does not depend on the thread count. */
enum { BAND_TARGET_FLOATS = 512 * 1024, BAND_MIN_BANDS = 8, BAND_SLACK = 16 };

static int band_rows(int cin, int h, int w)
{
    long rows = BAND_TARGET_FLOATS / ((long)cin * (w + 2)) - 2;
    long most = (h + BAND_MIN_BANDS - 1) / BAND_MIN_BANDS;
    return rows < 1 ? 1 : rows > most ? (int)most : (int)rows;
}

/* A band of the Winograd path: as many rows as the direct path's, made a multiple of 4, and its
 * tiles taken WINO_CHUNK_TILES at a time (whole columns of the band's tile rows), so that a chunk's
 * transformed input and products stay in cache between the transforms and the GEMMs. */
enum { WINO_CHUNK_TILES = 192 };

static int wino_rows(int cin, int h, int w)
{
    int rows = band_rows(cin, h, w) / WINO_TILE * WINO_TILE;
    return rows < WINO_TILE ? WINO_TILE : rows;
}

static int wino_chunk_columns(int rows, int w)
{
    int n = WINO_CHUNK_TILES / (rows / WINO_TILE);
    return n < 1 ? 1 : n > w / WINO_TILE ? w / WINO_TILE : n;
}

/* Whether the banded layer runs as Winograd F(4x4, 3x3): its kernels transformed, both sides
 * multiples of 4 (the tiles are 4x4 blocks of output, and the bands' rows are whole tiles). */
static int uses_winograd(const conv2d *cv, int h, int w)
{
    return cv->winograd && h % WINO_TILE == 0 && w % WINO_TILE == 0;
}

/* Floats of one thread's scratch: the padded input rows and their slack, then the band's output;
 * for Winograd, a chunk's transformed input and products and the transforms' rows. */
static size_t band_scratch_floats(const conv2d *cv, int h, int w, int rows)
{
    size_t pw = (size_t)w + 2, pad = ((size_t)rows + 2) * pw * cv->cin + BAND_SLACK;
    if (uses_winograd(cv, h, w))
        return pad +
               (size_t)rows / WINO_TILE * wino_chunk_columns(rows, w) * WINO_POINTS *
                   (cv->cin + cv->cout) +
               WINO_TMP_FLOATS(w / WINO_TILE);
    return pad + (size_t)rows * pw * cv->cout;
}

/* pad [cin, rows + 2, w + 2]: input rows oy0 - 1 .. oy0 + rows as the convolution reads them,
 * a zero column each side, zero rows outside the image. The last tap reads two floats past
 * the last plane, so a zeroed slack follows it. */
static void build_band(const conv_input *in, int nin, int i, int h, int w, int oy0, int rows,
                       float *pad)
{
    size_t pw = (size_t)w + 2;
    float *dst = pad;
    for (int s = 0; s < nin; s++)
        for (int ch = 0; ch < in[s].c; ch++)
            for (int r = 0; r < rows + 2; r++, dst += pw) {
                int iy = oy0 - 1 + r;
                if (iy < 0 || iy >= h) {
                    memset(dst, 0, pw * sizeof *dst);
                    continue;
                }
                dst[0] = dst[w + 1] = 0.0f;
                input_row(&in[s], i, ch, iy, h, w, dst + 1);
            }
    memset(dst, 0, BAND_SLACK * sizeof *dst);
}

/* y's rows (plane hw apart) = out [cout, rows, w + 2] without its two extra columns, plus the
 * bias and add; added to y when accumulate. */
OP_VECTOR_CLONES
static void write_band(const conv2d *cv, const float *add, const float *out, int rows, int w,
                       float *y, size_t hw, int accumulate)
{
    size_t pw = (size_t)w + 2;
    for (int co = 0; co < cv->cout; co++) {
        float v = (cv->bias ? cv->bias[co] : 0.0f) + (add ? add[co] : 0.0f);
        for (int r = 0; r < rows; r++) {
            const float *src = out + ((size_t)co * rows + r) * pw;
            float *dst = y + co * hw + (size_t)r * w;
            if (accumulate) {
#pragma omp simd
                for (int x = 0; x < w; x++)
                    dst[x] += src[x] + v;
            } else {
#pragma omp simd
                for (int x = 0; x < w; x++)
                    dst[x] = src[x] + v;
            }
        }
    }
}

/* One banded convolution: its layer, inputs and output. */
typedef struct bands {
    const conv2d *cv;
    const conv_input *in;
    int nin, h, w, rows; /* rows: of a band, the last one's possibly fewer */
    int winograd;
    const float *add;
    int add_stride, accumulate;
    float *y;
} bands;

/* One band of image i from output row oy0: its padded input rows, the nine GEMMs of the taps (with
 * rows w + 2 wide, tap (ky, kx) is the padded planes shifted by ky (w + 2) + kx), then the write to
 * y. */
static void conv_band(const bands *b, int i, int oy0, float *scratch)
{
    const conv2d *cv = b->cv;
    int cin = cv->cin, w = b->w, pw = w + 2, rows = b->h - oy0 < b->rows ? b->h - oy0 : b->rows;
    int cols = rows * pw;
    size_t plane = (size_t)(rows + 2) * pw, hw = (size_t)b->h * w;
    float *pad = scratch, *out = scratch + plane * cin + BAND_SLACK;
    build_band(b->in, b->nin, i, b->h, w, oy0, rows, pad);
    for (int t = 0; t < 9; t++)
        gemm_traced(CblasNoTrans, CblasNoTrans, cv->cout, cols, cin, 1.0f,
                    cv->weight + (size_t)t * cin, 9 * cin, pad + (t / 3) * pw + t % 3, (int)plane,
                    t ? 1.0f : 0.0f, out, cols);
    write_band(cv, b->add ? b->add + (size_t)i * b->add_stride : NULL, out, rows, w,
               b->y + (size_t)i * cv->cout * hw + (size_t)oy0 * w, hw, b->accumulate);
}

/* The same band by Winograd F(4x4, 3x3): its padded input rows, then chunk by chunk of tile
 * columns their transform, one GEMM per transformed point (K = cin, one column per 4x4 tile), and
 * the inverse transform written to y. */
static void wino_band(const bands *b, int i, int oy0, float *scratch)
{
    const conv2d *cv = b->cv;
    int cin = cv->cin, cout = cv->cout, w = b->w, pw = w + 2;
    int rows = b->h - oy0 < b->rows ? b->h - oy0 : b->rows, chunk = wino_chunk_columns(b->rows, w);
    size_t hw = (size_t)b->h * w, most = (size_t)(rows / WINO_TILE) * chunk;
    float *pad = scratch, *v = pad + (size_t)(rows + 2) * pw * cin + BAND_SLACK;
    float *m = v + WINO_POINTS * cin * most, *tmp = m + WINO_POINTS * cout * most;
    float *y = b->y + (size_t)i * cout * hw + (size_t)oy0 * w;
    const float *add = b->add ? b->add + (size_t)i * b->add_stride : NULL;
    build_band(b->in, b->nin, i, b->h, w, oy0, rows, pad);
    for (int tx0 = 0; tx0 < w / WINO_TILE; tx0 += chunk) {
        int n = w / WINO_TILE - tx0 < chunk ? w / WINO_TILE - tx0 : chunk;
        int tiles = rows / WINO_TILE * n;
        winograd_input(pad, cin, rows, w, tx0, n, v, tmp);
        for (int p = 0; p < WINO_POINTS; p++)
            gemm_traced_winograd(cout, tiles, cin, cv->winograd + (size_t)p * cout * cin, cin,
                                 v + (size_t)p * cin * tiles, tiles, m + (size_t)p * cout * tiles,
                                 tiles);
        winograd_output(cv, add, m, rows, w, tx0, n, y, hw, b->accumulate, tmp);
    }
}

/* The 3x3 stride-1 pad-1 layer on large maps: every (image, band) one job, the jobs spread
 * over the threads in one parallel region (no barrier between the steps of a band). What a job
 * computes does not depend on which thread runs it. */
static int conv_banded_inputs(const bands *b, int n, arena *a)
{
    int count = (b->h + b->rows - 1) / b->rows;
    size_t scratch_floats = band_scratch_floats(b->cv, b->h, b->w, b->rows);
    float *scratch = arena_floats(a, scratch_floats * omp_get_max_threads());
    if (!scratch) return -1;
    gemm_once_single_threaded();
#pragma omp parallel for schedule(static) if (n * count > 1)
    for (int job = 0; job < n * count; job++) {
        float *mine = scratch + (size_t)omp_get_thread_num() * scratch_floats;
        if (b->winograd)
            wino_band(b, job / count, job % count * b->rows, mine);
        else
            conv_band(b, job / count, job % count * b->rows, mine);
    }
    arena_free(a, scratch);
    return 0;
}

/* Whether the layer takes the banded path: 3x3 stride 1 on 128 x 128 pixels or more, where a
 * band of at least BAND_MIN_BANDS per image is still a GEMM of 2,048 columns or more. Smaller
 * maps (a 32 x 32 generator's) run as before, their few bands too few to share out. */
int conv2d_is_banded(const conv2d *cv, int h, int w)
{
    return cv->k == 3 && cv->stride == 1 && cv->pad[0] == 1 && cv->pad[1] == 1 && cv->pad[2] == 1 &&
           cv->pad[3] == 1 && w >= 16 && (long)h * w >= 128 * 128 && cv->cin >= 16;
}

/* A 1x1 layer on plain inputs: one GEMM per input and image, each adding its block of the
 * weight's columns. */
static void conv_pointwise_inputs(const conv2d *cv, const conv_input *in, int nin, int n, size_t hw,
                                  float *y, int accumulate)
{
    for (int i = 0; i < n; i++) {
        float *yi = y + (size_t)i * cv->cout * hw;
        op_conv_bias(cv, yi, hw, hw, accumulate);
        for (int s = 0, col = 0; s < nin; col += in[s].c, s++)
            op_gemm(0, cv->cout, (int)hw, in[s].c, 1.0f, cv->weight + col, cv->cin,
                    in[s].data + (size_t)i * in[s].c * hw, (int)hw, 1.0f, yi, (int)hw);
    }
}

/* Whether every input is plain: stored at the convolution's size, untransformed. */
static int inputs_plain(const conv_input *in, int nin)
{
    for (int s = 0; s < nin; s++)
        if (in[s].up || in[s].a) return 0;
    return 1;
}

/* Any other layer: the inputs written out as one map, then op_conv2d. */
static int conv_materialised(const conv2d *cv, const conv_input *in, int nin, int n, int h, int w,
                             const float *add, int add_stride, float *y, int accumulate, arena *a)
{
    size_t hw = (size_t)h * w, mark = arena_mark(a);
    const float *x = in[0].data;
    if (nin > 1 || !inputs_plain(in, nin)) {
        float *m = arena_floats(a, (size_t)n * cv->cin * hw);
        if (!m) return -1;
#pragma omp parallel for schedule(static) if ((size_t)n * cv->cin * hw > 65536)
        for (int ic = 0; ic < n * cv->cin; ic++) {
            int i = ic / cv->cin, c = ic % cv->cin, s = 0;
            for (; c >= in[s].c; s++)
                c -= in[s].c;
            for (int iy = 0; iy < h; iy++)
                input_row(&in[s], i, c, iy, h, w, m + (size_t)ic * hw + (size_t)iy * w);
        }
        x = m;
    }
    int rc = op_conv2d(cv, x, n, h, w, y, accumulate, a);
    arena_release(a, mark);
    int oh, ow;
    conv2d_out_size(cv, h, w, &oh, &ow);
    if (!rc && add) op_add_channel_values(y, n, cv->cout, (size_t)oh * ow, add, add_stride);
    return rc;
}

/* y (+)= conv(the inputs concatenated on channels, each read through its transform) + add. */
int op_conv2d_inputs(const conv2d *cv, const conv_input *in, int nin, int n, int h, int w,
                     const float *add, int add_stride, float *y, int accumulate, arena *a)
{
    if (nin < 1 || nin > CONV_MAX_INPUTS || inputs_channels(in, nin) != cv->cin) return -1;
    if (conv2d_is_banded(cv, h, w)) {
        int wino = uses_winograd(cv, h, w);
        bands b = {.cv = cv,
                   .in = in,
                   .nin = nin,
                   .h = h,
                   .w = w,
                   .winograd = wino,
                   .add = add,
                   .add_stride = add_stride,
                   .accumulate = accumulate,
                   .y = y};
        b.rows = wino ? wino_rows(cv->cin, h, w) : band_rows(cv->cin, h, w);
        return conv_banded_inputs(&b, n, a);
    }
    if (nin > 1 && cv->k == 1 && cv->stride == 1 && !cv->pad[0] && !cv->pad[1] && !cv->pad[2] &&
        !cv->pad[3] && inputs_plain(in, nin) && !add) {
        conv_pointwise_inputs(cv, in, nin, n, (size_t)h * w, y, accumulate);
        return 0;
    }
    return conv_materialised(cv, in, nin, n, h, w, add, add_stride, y, accumulate, a);
}
