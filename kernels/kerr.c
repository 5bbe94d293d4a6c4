/* Error values and the thread setting shared by every kernel. */
#include "kernels/kernels.h"

#include <cblas.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>

int kerr_set(kerr *e, int code, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        e->code = code;
    }
    return code;
}

static int kernel_threads;

void kernels_set_threads(int n)
{
    if (n < 1) n = 1;
    kernel_threads = n;
    /* OpenBLAS stays single-threaded: ops.c splits GEMMs itself (see op_gemm) */
    openblas_set_num_threads(1);
    omp_set_num_threads(n);
}

int kernels_get_threads(void)
{
    return kernel_threads ? kernel_threads : omp_get_max_threads();
}
