/* Micro-benchmarks of the kernels, for `strata bench`. */
#include "kernels/kernels.h"
#include "kernels/ops.h"

#include <cblas.h>
#include <stdlib.h>
#include <time.h>

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void fill(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++) p[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
}

int kernels_bench_conv(int cin, int cout, int k, int h, int w, int batch, int threads, int iters,
                       double *conv_gflops, double *sgemm_gflops)
{
    conv2d cv = {cin, cout, k, 1, {k / 2, k / 2, k / 2, k / 2}, NULL, NULL};
    size_t kdim = (size_t)cin * k * k, hw = (size_t)h * w;
    float *wt = malloc(kdim * cout * sizeof(float)), *bias = calloc((size_t)cout, sizeof(float));
    float *x = malloc((size_t)batch * cin * hw * sizeof(float));
    float *y = malloc((size_t)batch * cout * hw * sizeof(float));
    float *col = malloc(kdim * batch * hw * sizeof(float));
    arena a;
    arena_init(&a);
    if (!wt || !bias || !x || !y || !col) return KERR_NOMEM;
    fill(wt, kdim * cout), fill(x, (size_t)batch * cin * hw), fill(col, kdim * batch * hw);
    cv.weight = wt, cv.bias = bias;
    double flops = 2.0 * cout * kdim * hw * batch;
    kernels_set_threads(threads);
    op_conv2d(&cv, x, batch, h, w, y, 0, &a); /* warm-up, sizes the arena */
    arena_reset(&a);
    double t0 = now_seconds();
    for (int i = 0; i < iters; i++) op_conv2d(&cv, x, batch, h, w, y, 0, &a);
    *conv_gflops = flops * iters / (now_seconds() - t0) * 1e-9;
    openblas_set_num_threads(threads);
    int n = (int)(batch * hw);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, n, (int)kdim, 1.0f, wt,
                (int)kdim, col, n, 0.0f, y, n);
    t0 = now_seconds();
    for (int i = 0; i < iters; i++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, n, (int)kdim, 1.0f, wt,
                    (int)kdim, col, n, 0.0f, y, n);
    *sgemm_gflops = flops * iters / (now_seconds() - t0) * 1e-9;
    openblas_set_num_threads(1);
    arena_fini(&a);
    free(wt), free(bias), free(x), free(y), free(col);
    return 0;
}
