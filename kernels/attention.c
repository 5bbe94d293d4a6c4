/* Multi-head self-attention over the pixels of a feature map, as diffusers' Attention: the
 * projections as GEMMs, the scores in blocks of query rows. */
#include "kernels/arena.h"
#include "kernels/gemm.h"
#include "kernels/ops.h"

#include <cblas.h>
#include <math.h>
#include <stddef.h>

#include <omp.h>

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
        gemm_traced(CblasTrans, CblasNoTrans, qb, hw, d, scale, q + off + q0, hw, k + off, hw, 0.0f,
                    s, hw);
        op_softmax_rows(s, qb, hw);
        gemm_traced(CblasNoTrans, CblasTrans, d, qb, hw, 1.0f, v + off, hw, s, hw, 0.0f,
                    o + off + q0, hw);
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

/* y = attention(x) for n images of hw positions; several images run one per thread. -1 when
 * the arena cannot hold the buffers. */
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
