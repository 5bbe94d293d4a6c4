/* Internal to kernels/: how the tensor operations call OpenBLAS. Every GEMM goes through here
 * so that the split over threads never depends on the thread count and `strata bench` can
 * record each one (kernels_trace_gemms). Not included outside kernels/. */
#ifndef STRATA_KERNELS_GEMM_H
#define STRATA_KERNELS_GEMM_H

#include <cblas.h>

/* How many slices (1, 2, 4 or 8) a GEMM of this many floating-point operations is cut into:
 * a function of the work alone, never of the thread count. */
int gemm_slices(double flops);
/* Records one GEMM of the engine in the trace, when one is on (a sliced GEMM counts once). */
void gemm_note(int trans_a, int trans_b, int m, int n, int k, int winograd);
/* One row-major cblas_sgemm call on the calling thread, recorded in the trace. */
void gemm_traced(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
/* The same for one GEMM of a Winograd band (no transposes), noted as such. */
void gemm_traced_winograd(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                          float *c, int ldc);
/* Keeps OpenBLAS on one thread (the first call sets it): strata splits GEMMs itself. */
void gemm_once_single_threaded(void);

#endif
