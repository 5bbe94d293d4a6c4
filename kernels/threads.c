/* The thread setting shared by every kernel, and the OpenBLAS set-up at start. */
#include "kernels/threads.h"

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

static int kernel_threads;

void kernels_set_threads(int n)
{
    if (n < 1) n = 1;
    kernel_threads = n;
    /* OpenBLAS stays single-threaded: gemm.c splits GEMMs itself (see op_gemm) */
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

void kernels_setup_blas(char **argv)
{
    const char *core = getenv("OPENBLAS_CORETYPE") ? NULL : better_blas_core();
    int set_threads = !getenv("OPENBLAS_NUM_THREADS");
    if (!core && !set_threads) return;
    if (core) setenv("OPENBLAS_CORETYPE", core, 1);
    if (set_threads) setenv("OPENBLAS_NUM_THREADS", "1", 1);
    execv("/proc/self/exe", argv);
    /* no /proc: go on as loaded, and keep the children from choosing differently */
    fprintf(stderr, "strata: could not re-execute with OpenBLAS's settings (%s)%s%s\n",
            strerror(errno), core ? "; for full speed set OPENBLAS_CORETYPE=" : "",
            core ? core : "");
    if (core) unsetenv("OPENBLAS_CORETYPE");
    if (set_threads) unsetenv("OPENBLAS_NUM_THREADS");
}

const char *kernels_blas_core(void)
{
    return openblas_get_corename();
}
