/* The GEMM every tensor operation runs on (C split into slices by work size, each slice one
 * single-threaded OpenBLAS call), the linear layer built on it, and the trace of every GEMM
 * that `strata bench` times alone. */
#include "kernels/gemm.h"

#include "kernels/kernels.h"
#include "kernels/ops.h"

#include <cblas.h>
#include <stddef.h>

/* The parallel GEMM splits C into 1, 2, 4 or 8 slices by work size alone, never by thread
 * count: each slice is one single-threaded OpenBLAS call, so every output element is computed
 * by the same instructions in the same order whatever the number of threads, and images are
 * bitwise identical for any --threads (docs/design.md section 2). OpenBLAS's own threading
 * partitions by thread count and changes the last bits, so it stays at one thread. Few slices
 * keep the cost of packing the shared operand again per slice small. */
int gemm_slices(double flops)
{
    return flops < 4e6 ? 1 : flops < 4e8 ? 2 : flops < 1.6e9 ? 4 : 8;
}

/* Every GEMM the engine asks for is noted here once (a sliced one as one). While a trace is on
 * (`strata bench`) its shape is recorded, so that the same GEMMs can be timed alone; otherwise
 * a note costs one test of a pointer. */
static kernels_gemm *gemm_log;
static int gemm_log_cap, gemm_log_count;

/* Safe from several threads at once: each note takes its own slot. */
void gemm_note(int trans_a, int trans_b, int m, int n, int k, int winograd)
{
    if (!gemm_log) return;
    int i;
#pragma omp atomic capture
    i = gemm_log_count++;
    if (i < gemm_log_cap) gemm_log[i] = (kernels_gemm){m, n, k, trans_a, trans_b, winograd};
}

/* Starts (log != NULL) or stops the trace; returns the count of the one before. */
int kernels_trace_gemms(kernels_gemm *log, int cap)
{
    int count = gemm_log_count;
    gemm_log = log, gemm_log_cap = cap, gemm_log_count = 0;
    return count;
}

/* One traced cblas_sgemm, row-major, on the calling thread. */
void gemm_traced(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    gemm_note(ta == CblasTrans, tb == CblasTrans, m, n, k, 0);
    cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm_traced_winograd(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                          float *c, int ldc)
{
    gemm_note(0, 0, m, n, k, 1);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c,
                ldc);
}

/* Sets OpenBLAS to one thread on the first call only (it is not free to call per GEMM). */
void gemm_once_single_threaded(void)
{
    static int done;
    if (!done) {
        openblas_set_num_threads(1);
        done = 1;
    }
}

/* C = alpha A B + beta C, the longer side of C cut into gemm_slices() chunks, one per thread. */
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
    gemm_note(0, trans_b, m, n, k, 0);
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

/* y = x W^T + b: y starts as the bias, then one GEMM adds x W^T. */
void op_linear(const float *x, int n, int in, const float *w, const float *b, int out, float *y)
{
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++)
            y[(size_t)i * out + o] = b ? b[o] : 0.0f;
    op_gemm(1, n, out, in, 1.0f, x, in, w, in, 1.0f, y, out);
}
