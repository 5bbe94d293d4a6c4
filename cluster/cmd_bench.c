/* `strata bench`: timings of the engine, printed as one line per measurement so that
 * tools/bench.sh can put them beside PyTorch's. */
#include "cluster/cluster.h"
#include "kernels/kernels.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static const char bench_help[] =
    "usage: strata bench unet --model DIR [--batch N] [--threads T] [--iters K] [--size PX]\n"
    "       strata bench conv [--threads T] [--iters K]\n\n"
    "unet: mean and fastest time of one UNet2DModel forward (after 2 warm-up passes), its\n"
    "GFLOP in GEMMs, those GEMMs timed alone as plain OpenBLAS sgemm calls, and peak RSS.\n"
    "conv: GFLOP/s of the UNet's 3x3 and 1x1 convolutions (ddpm-cifar10 shapes) beside plain\n"
    "OpenBLAS sgemm GFLOP/s for the same GEMM shapes, and OpenBLAS's peak sgemm rate.\n";

typedef struct bench_args {
    const char *what, *model;
    int batch, threads, iters, size;
} bench_args;

static long peak_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* One model and its inputs, run forward again and again. */
typedef struct bench_forward {
    unet_t *m;
    float *x, *y, *t, *labels;
    const float *class_labels;
    int n, side;
} bench_forward;

static int forward(const bench_forward *f, strata_err *e)
{
    return unet_forward(f->m, f->x, f->n, f->side, f->side, f->t, f->class_labels, f->y, e);
}

/* The GEMMs of one forward, recorded; again with room for all when the log was too short.
 * *log is the caller's to free. */
static int trace_gemms(const bench_forward *f, kernels_gemm **log, int *count, strata_err *e)
{
    int cap = 1024, rc = 0;
    *log = NULL;
    for (;;) {
        kernels_gemm *grown = realloc(*log, (size_t)cap * sizeof **log);
        if (!grown) return err_set(e, ERR_NOMEM, "out of memory");
        *log = grown;
        kernels_trace_gemms(*log, cap);
        rc = forward(f, e);
        *count = kernels_trace_gemms(NULL, 0);
        if (rc || *count <= cap) return rc;
        cap = *count;
    }
}

/* ms: the mean forward; min_ms: the fastest one, steadier on a shared machine; gemm_gflop: the
 * forward's work in GEMMs (convolutions, projections, attention), gemms of them; gemm_alone_ms:
 * those GEMMs timed alone as plain sgemm calls, their weights in cache unlike in the forward, that
 * is what the forward would cost if nothing but its GEMMs took time. */
static int bench_forwards(const bench_args *a, const bench_forward *f, strata_err *e)
{
    int rc = 0, count = 0;
    for (int i = 0; i < 2 && !rc; i++)
        rc = forward(f, e);
    double t0 = clock_now_s(), fastest = 1e30;
    for (int i = 0; i < a->iters && !rc; i++) {
        double ti = clock_now_s();
        rc = forward(f, e);
        double took = clock_now_s() - ti;
        fastest = took < fastest ? took : fastest;
    }
    double ms = (clock_now_s() - t0) * 1e3 / a->iters, gemm_ms = 0, flops = 0;
    long rss_kb = peak_rss_kb(); /* before the GEMMs alone allocate their operands */
    kernels_gemm *log = NULL;
    if (!rc) rc = trace_gemms(f, &log, &count, e);
    if (!rc && kernels_bench_gemms(log, count, a->threads, a->iters, &gemm_ms))
        rc = err_set(e, ERR_NOMEM, "out of memory");
    for (int i = 0; i < count && !rc; i++)
        flops += 2.0 * log[i].m * log[i].n * log[i].k;
    if (!rc)
        printf("unet batch=%d threads=%d ms=%.2f min_ms=%.2f gemms=%d gemm_gflop=%.3f "
               "gemm_alone_ms=%.2f peak_rss_mb=%.1f params=%lld\n",
               f->n, a->threads, ms, fastest * 1e3, count, flops * 1e-9, gemm_ms, rss_kb / 1024.0,
               (long long)unet_get_info(f->m)->num_params);
    free(log);
    return rc;
}

static int bench_unet(const bench_args *a, strata_err *e)
{
    bench_forward f = {.n = a->batch};
    int rc = unet_load(a->model, &f.m, e);
    if (rc) return rc;
    const unet_info *info = unet_get_info(f.m);
    f.side = a->size ? a->size : info->sample_size;
    size_t plane = (size_t)f.n * f.side * f.side;
    f.x = malloc(plane * info->in_channels * sizeof(float));
    f.y = malloc(plane * info->out_channels * sizeof(float));
    f.t = malloc((size_t)f.n * sizeof(float));
    f.labels = calloc((size_t)f.n * info->class_label_dim + 1, sizeof(float)); /* never 0 */
    if (!f.x || !f.y || !f.t || !f.labels) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
    } else {
        for (size_t i = 0; i < plane * info->in_channels; i++)
            f.x[i] = (float)(i % 17) / 17.0f - 0.5f;
        for (int i = 0; i < f.n; i++)
            f.t[i] = 500;
        f.class_labels = info->needs_class_labels ? f.labels : NULL;
        rc = bench_forwards(a, &f, e);
    }
    free(f.x), free(f.y), free(f.t), free(f.labels);
    unet_free(f.m);
    return rc;
}

/* ddpm-cifar10's convolutions at batch 1: (cin, cout, k, side). */
static const int conv_shapes[][4] = {
    {128, 128, 3, 32}, {256, 256, 3, 16}, {256, 256, 3, 8},  {256, 256, 3, 4},
    {384, 128, 3, 32}, {512, 256, 3, 16}, {384, 128, 1, 32}, {128, 256, 1, 16},
};

static int bench_conv(const bench_args *a, strata_err *e)
{
    enum { NSHAPES = sizeof conv_shapes / sizeof conv_shapes[0] };
    double conv[NSHAPES], gemm[NSHAPES];
    /* every convolution first: OpenBLAS's threads keep spinning after a threaded sgemm */
    for (int i = 0; i < NSHAPES; i++) {
        const int *s = conv_shapes[i];
        if (kernels_bench_conv(s[0], s[1], s[2], s[3], s[3], a->batch, a->threads, a->iters,
                               &conv[i]))
            return err_set(e, ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < NSHAPES; i++) {
        const int *s = conv_shapes[i];
        if (kernels_bench_sgemm(s[1], s[3] * s[3] * a->batch, s[0] * s[2] * s[2], a->threads,
                                a->iters, &gemm[i]))
            return err_set(e, ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < NSHAPES; i++) {
        const int *s = conv_shapes[i];
        printf("conv k=%d cin=%d cout=%d side=%d batch=%d threads=%d conv_gflops=%.1f "
               "sgemm_gflops=%.1f ratio=%.2f\n",
               s[2], s[0], s[1], s[3], a->batch, a->threads, conv[i], gemm[i], conv[i] / gemm[i]);
    }
    /* OpenBLAS's best rate here: the shapes above and the large ones of a batch of 8 */
    double peak = 0, g;
    for (int i = 0; i < NSHAPES; i++)
        peak = gemm[i] > peak ? gemm[i] : peak;
    static const int large[][3] = {{128, 8192, 1152}, {256, 2048, 2304}, {1024, 1024, 1024}};
    for (int i = 0; i < 3; i++) {
        if (kernels_bench_sgemm(large[i][0], large[i][1], large[i][2], a->threads, a->iters, &g))
            return err_set(e, ERR_NOMEM, "out of memory");
        peak = g > peak ? g : peak;
    }
    printf("sgemm_peak threads=%d gflops=%.1f\n", a->threads, peak);
    return 0;
}

static int parse_bench_args(int argc, char **argv, bench_args *a)
{
    static const struct option opts[] = {
        {"model", 1, 0, 'm'}, {"batch", 1, 0, 'b'}, {"threads", 1, 0, 'j'},
        {"iters", 1, 0, 'i'}, {"size", 1, 0, 's'},  {"help", 0, 0, 'h'},
        {0, 0, 0, 0}};
    int c;
    *a = (bench_args){.batch = 1, .threads = 1, .iters = 10};
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int *slot = c == 'b'   ? &a->batch
                    : c == 'j' ? &a->threads
                    : c == 'i' ? &a->iters
                    : c == 's' ? &a->size
                               : NULL;
        if (c == 'm') {
            a->model = optarg;
        } else if (c == 'h') {
            fputs(bench_help, stdout);
            return -1;
        } else if (slot) {
            *slot = atoi(optarg);
            if (*slot < 1 || *slot > 4096) {
                fprintf(stderr, "strata bench: --%s: '%s' is not 1 to 4096\n",
                        opts[c == 'b'   ? 1
                             : c == 'j' ? 2
                             : c == 'i' ? 3
                                        : 4]
                            .name,
                        optarg);
                return CLI_EXIT_USAGE;
            }
        } else {
            fprintf(stderr, "strata bench: unknown or incomplete option '%s'\n", argv[optind - 1]);
            return CLI_EXIT_USAGE;
        }
    }
    a->what = optind < argc ? argv[optind] : "unet";
    if (strcmp(a->what, "unet") && strcmp(a->what, "conv")) {
        fprintf(stderr, "strata bench: unknown benchmark '%s' (unet or conv)\n", a->what);
        return CLI_EXIT_USAGE;
    }
    if (!strcmp(a->what, "unet") && !a->model) {
        fprintf(stderr, "strata bench: unet needs --model DIR\n");
        return CLI_EXIT_USAGE;
    }
    return 0;
}

int cmd_bench(int argc, char **argv)
{
    bench_args a;
    int rc = parse_bench_args(argc, argv, &a);
    if (rc) return rc < 0 ? CLI_EXIT_OK : rc;
    kernels_set_threads(a.threads);
    strata_err e = {0};
    rc = !strcmp(a.what, "unet") ? bench_unet(&a, &e) : bench_conv(&a, &e);
    return rc ? cli_fail("bench", rc, e.msg) : CLI_EXIT_OK;
}
