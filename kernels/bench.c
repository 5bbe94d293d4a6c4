/* Micro-benchmarks of the kernels, for `strata bench`. */
#include "kernels/kernels.h"
#include "kernels/ops.h"

#include <cblas.h>
#include <stdlib.h>
#include <time.h>

static void fill(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
}

int kernels_bench_conv_strided(int cin, int cout, int k, int stride, int h, int w, int batch,
                               int threads, int iters, double *gflops)
{
    conv2d cv = {cin, cout, k, stride, {k / 2, k / 2, k / 2, k / 2}, NULL, NULL, NULL};
    int oh, ow;
    conv2d_out_size(&cv, h, w, &oh, &ow);
    size_t kdim = (size_t)cin * k * k, hw = (size_t)h * w, ohw = (size_t)oh * ow;
    float *wt = malloc(kdim * cout * sizeof(float)), *bias = calloc((size_t)cout, sizeof(float));
    float *wino = malloc((conv2d_winograd_floats(&cv) + 1) * sizeof(float));
    float *x = malloc((size_t)batch * cin * hw * sizeof(float));
    float *y = malloc((size_t)batch * cout * ohw * sizeof(float));
    arena a;
    arena_init(&a);
    int rc = wt && bias && wino && x && y ? 0 : ERR_NOMEM;
    if (!rc) {
        fill(wt, kdim * cout), fill(x, (size_t)batch * cin * hw);
        cv.weight = wt, cv.bias = bias;
        if (conv2d_winograd_floats(&cv)) conv2d_winograd_weights(&cv, wino);
        kernels_set_threads(threads);
        /* warm-up, sizes the arena; -1 only when the arena cannot grow */
        rc = op_conv2d(&cv, x, batch, h, w, y, 0, &a) ? ERR_NOMEM : 0;
        arena_reset(&a);
        double t0 = clock_now_s();
        for (int i = 0; i < iters && !rc; i++) { /* each a pass of its own, as planned */
            op_conv2d(&cv, x, batch, h, w, y, 0, &a);
            arena_reset(&a);
        }
        *gflops = 2.0 * cout * kdim * ohw * batch * iters / (clock_now_s() - t0) * 1e-9;
    }
    arena_fini(&a);
    free(wt), free(bias), free(wino), free(x), free(y);
    return rc;
}

int kernels_bench_conv(int cin, int cout, int k, int h, int w, int batch, int threads, int iters,
                       double *gflops)
{
    return kernels_bench_conv_strided(cin, cout, k, 1, h, w, batch, threads, iters, gflops);
}

int kernels_bench_sgemm(int m, int n, int k, int threads, int iters, double *gflops)
{
    float *a = malloc((size_t)m * k * sizeof(float)), *b = malloc((size_t)k * n * sizeof(float));
    float *c = malloc((size_t)m * n * sizeof(float));
    if (!a || !b || !c) {
        free(a), free(b), free(c);
        return ERR_NOMEM;
    }
    fill(a, (size_t)m * k), fill(b, (size_t)k * n);
    /* OpenBLAS's own threads: afterwards they spin for a while, so callers time every
     * convolution before any plain sgemm */
    openblas_set_num_threads(threads);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, k, b, n, 0.0f, c, n);
    double t0 = clock_now_s();
    for (int i = 0; i < iters; i++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, k, b, n, 0.0f, c,
                    n);
    *gflops = 2.0 * m * n * k * iters / (clock_now_s() - t0) * 1e-9;
    openblas_set_num_threads(1);
    free(a), free(b), free(c);
    return 0;
}

/* On OpenBLAS's threads, or split by strata's op_gemm (which has no transposed A). */
static void run_gemms(const kernels_gemm *g, int count, const float *a, const float *b, float *c,
                      int split_by_strata)
{
    for (int i = 0; i < count; i++) {
        int lda = g[i].trans_a ? g[i].m : g[i].k, ldb = g[i].trans_b ? g[i].k : g[i].n;
        if (split_by_strata && !g[i].trans_a)
            op_gemm(g[i].trans_b, g[i].m, g[i].n, g[i].k, 1.0f, a, lda, b, ldb, 0.0f, c, g[i].n);
        else
            cblas_sgemm(CblasRowMajor, g[i].trans_a ? CblasTrans : CblasNoTrans,
                        g[i].trans_b ? CblasTrans : CblasNoTrans, g[i].m, g[i].n, g[i].k, 1.0f, a,
                        lda, b, ldb, 0.0f, c, g[i].n);
    }
}

static double time_gemms(const kernels_gemm *g, int count, const float *a, const float *b, float *c,
                         int split_by_strata, int iters)
{
    run_gemms(g, count, a, b, c, split_by_strata);
    double fastest = 1e30;
    for (int i = 0; i < iters; i++) {
        double t0 = clock_now_s();
        run_gemms(g, count, a, b, c, split_by_strata);
        double took = clock_now_s() - t0;
        fastest = took < fastest ? took : fastest;
    }
    return fastest * 1e3;
}

int kernels_bench_gemms(const kernels_gemm *g, int count, int threads, int iters, double *ms)
{
    size_t na = 1, nb = 1, nc = 1;
    for (int i = 0; i < count; i++) {
        size_t m = (size_t)g[i].m, n = (size_t)g[i].n, k = (size_t)g[i].k;
        na = m * k > na ? m * k : na, nb = k * n > nb ? k * n : nb, nc = m * n > nc ? m * n : nc;
    }
    float *a = malloc(na * sizeof(float)), *b = malloc(nb * sizeof(float));
    float *c = malloc(nc * sizeof(float));
    if (!a || !b || !c) {
        free(a), free(b), free(c);
        return ERR_NOMEM;
    }
    fill(a, na), fill(b, nb);
    /* the better of the two ways to spread them over the threads */
    kernels_set_threads(threads);
    double split = time_gemms(g, count, a, b, c, 1, iters);
    openblas_set_num_threads(threads);
    double blas = time_gemms(g, count, a, b, c, 0, iters);
    openblas_set_num_threads(1);
    *ms = split < blas ? split : blas;
    free(a), free(b), free(c);
    return 0;
}
