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

static int kernel_threads = 1;

void kernels_set_threads(int n)
{
    if (n < 1) n = 1;
    kernel_threads = n;
    openblas_set_num_threads(n);
    omp_set_num_threads(n);
}

int kernels_get_threads(void)
{
    return kernel_threads;
}
