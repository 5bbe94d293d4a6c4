/* Error values and the thread setting shared by every kernel. */
#include "kernels/kernels.h"

#include <cblas.h>
#include <errno.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

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

/* The kernels to ask for on a CPU the library fell back to generic code on, or NULL. */
static const char *better_blas_core(void)
{
#if defined(__x86_64__)
    if (strcasecmp(openblas_get_corename(), "Prescott") != 0) return NULL;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
    return NULL;
}

void kernels_pick_blas_core(char **argv)
{
    if (getenv("OPENBLAS_CORETYPE")) return;
    const char *core = better_blas_core();
    if (!core) return;
    setenv("OPENBLAS_CORETYPE", core, 1);
    execv("/proc/self/exe", argv);
    /* no /proc: go on with the generic kernels; children inherit the variable and use `core`,
     * so say so rather than mix results silently */
    fprintf(stderr, "strata: could not re-execute with OPENBLAS_CORETYPE=%s (%s); set it "
                    "yourself for full speed\n", core, strerror(errno));
    unsetenv("OPENBLAS_CORETYPE");
}

const char *kernels_blas_core(void)
{
    return openblas_get_corename();
}
