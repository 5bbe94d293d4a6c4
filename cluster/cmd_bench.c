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
    "                         [--no-gemms-alone]\n"
    "       strata bench conv [--shapes cifar|sr|all] [--side PX] [--threads T] [--iters K]\n\n"
    "unet: mean and fastest time of one UNet2DModel forward (after 2 warm-up passes, the first\n"
    "tracing its GEMMs), its GFLOP in GEMMs and GFLOP/s (that / the fastest time), the same as\n"
    "the direct convolutions' work (direct_gflop: a Winograd GEMM counts 4 times its own), those\n"
    "GEMMs timed alone as plain OpenBLAS sgemm calls (not with --no-gemms-alone: that costs about\n"
    "2 x (iters + 1) forwards' GEMMs), and peak RSS.\n"
    "conv: GFLOP/s of the UNet's convolutions (their direct work) beside plain OpenBLAS sgemm\n"
    "GFLOP/s for the same GEMM shapes (N at most 8192 columns), one line per shape with how many\n"
    "convolutions of the forward have it (count), then OpenBLAS's peak sgemm rate. cifar:\n"
    "ddpm-cifar10's main shapes; sr: every shape of the shipped super-resolution models\n"
    "(models/l128, l512, l4096) at tile side --side (default 1056, l4096's tile; a multiple of\n"
    "4); all (default): both.\n";

enum { SHAPES_CIFAR = 1, SHAPES_SR = 2 };

typedef struct bench_args {
    const char *what, *model;
    int batch, threads, iters, size, side, shapes, gemms_alone;
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
 * forward's work in GEMMs (convolutions, projections, attention), gemms of them, traced in the
 * first warm-up pass; gflops: that work over the fastest forward, to set beside the sgemm peak;
 * direct_gflop(s): the same with each Winograd GEMM counted as the direct convolution's work it
 * replaces (KERNELS_WINOGRAD_WORK times its own), the work PyTorch's forward does;
 * gemm_alone_ms: those GEMMs timed alone as plain sgemm calls, their weights in cache unlike in
 * the forward, that is what the forward would cost if nothing but its GEMMs took time. */
static int bench_forwards(const bench_args *a, const bench_forward *f, strata_err *e)
{
    int count = 0;
    kernels_gemm *log = NULL;
    int rc = trace_gemms(f, &log, &count, e);
    if (!rc) rc = forward(f, e);
    double t0 = clock_now_s(), fastest = 1e30;
    for (int i = 0; i < a->iters && !rc; i++) {
        double ti = clock_now_s();
        rc = forward(f, e);
        double took = clock_now_s() - ti;
        fastest = took < fastest ? took : fastest;
    }
    double ms = (clock_now_s() - t0) * 1e3 / a->iters, gemm_ms = -1, flops = 0, direct = 0;
    long rss_kb = peak_rss_kb(); /* before the GEMMs alone allocate their operands */
    if (!rc && a->gemms_alone && kernels_bench_gemms(log, count, a->threads, a->iters, &gemm_ms))
        rc = err_set(e, ERR_NOMEM, "out of memory");
    for (int i = 0; i < count && !rc; i++) {
        flops += 2.0 * log[i].m * log[i].n * log[i].k;
        direct +=
            2.0 * log[i].m * log[i].n * log[i].k * (log[i].winograd ? KERNELS_WINOGRAD_WORK : 1.0);
    }
    char alone[32] = "-";
    if (gemm_ms >= 0) snprintf(alone, sizeof alone, "%.2f", gemm_ms);
    if (!rc)
        printf("unet batch=%d side=%d threads=%d ms=%.2f min_ms=%.2f gemms=%d gemm_gflop=%.3f "
               "gflops=%.1f direct_gflop=%.3f direct_gflops=%.1f gemm_alone_ms=%s peak_rss_mb=%.1f "
               "params=%lld\n",
               f->n, f->side, a->threads, ms, fastest * 1e3, count, flops * 1e-9,
               flops * 1e-9 / fastest, direct * 1e-9, direct * 1e-9 / fastest, alone,
               rss_kb / 1024.0, (long long)unet_get_info(f->m)->num_params);
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

/* One convolution shape of a forward: side is its input's (padding k/2 on every side), count how
 * many convolutions of the forward have this shape. */
typedef struct conv_shape {
    int k, stride, cin, cout, side, count;
} conv_shape;

/* ddpm-cifar10's main convolutions at batch 1. */
static const conv_shape cifar_shapes[] = {
    {3, 1, 128, 128, 32, 7}, {3, 1, 256, 256, 16, 7}, {3, 1, 256, 256, 8, 8},
    {3, 1, 256, 256, 4, 11}, {3, 1, 384, 128, 32, 1}, {3, 1, 512, 256, 16, 2},
    {1, 1, 384, 128, 32, 1}, {1, 1, 128, 256, 16, 1},
};

/* Every convolution of the shipped SR models (UNet2DModel, block_out_channels (32, 64, 64), one
 * resnet a down block, two an up block, no attention, in_channels 6 = noisy x + the level below,
 * Downsample2D with padding 1), as diffusers builds them; side here is the divisor of the tile
 * side S. The up path's resnets take their input concatenated with a skip (128, 96, 64 channels)
 * and so have 1x1 shortcuts; each Upsample2D's conv runs at the side it upsampled to. */
static const conv_shape sr_shapes[] = {
    /* S: conv_in, down 0, its downsample, up 2, up 1's upsampler, conv_out */
    {3, 1, 6, 32, 1, 1},
    {3, 1, 32, 32, 1, 4},
    {3, 2, 32, 32, 1, 1},
    {3, 1, 96, 32, 1, 1},
    {3, 1, 64, 32, 1, 1},
    {3, 1, 64, 64, 1, 1},
    {3, 1, 32, 3, 1, 1},
    {1, 1, 96, 32, 1, 1},
    {1, 1, 64, 32, 1, 1},
    /* S/2: down 1, its downsample, up 1, up 0's upsampler */
    {3, 1, 32, 64, 2, 1},
    {3, 1, 64, 64, 2, 4},
    {3, 2, 64, 64, 2, 1},
    {3, 1, 128, 64, 2, 1},
    {3, 1, 96, 64, 2, 1},
    {1, 1, 32, 64, 2, 1},
    {1, 1, 128, 64, 2, 1},
    {1, 1, 96, 64, 2, 1},
    /* S/4: down 2, the mid block's two resnets, up 0 */
    {3, 1, 64, 64, 4, 8},
    {3, 1, 128, 64, 4, 2},
    {1, 1, 128, 64, 4, 2},
};

enum {
    NCIFAR = sizeof cifar_shapes / sizeof cifar_shapes[0],
    NSR = sizeof sr_shapes / sizeof sr_shapes[0],
    /* The sgemm reference of a wider GEMM (the SR shapes') has this many columns: what a
     * convolution slicing its columns can reach. One plain sgemm of all the columns is up to
     * 40% slower on the thin M of these shapes (measured at M 32-64, K 288-1152: the rate falls
     * between 8192 and 16384 columns, when the packed panel of B leaves the cache). */
    SGEMM_MAX_N = 8192,
};

/* The shapes --shapes and --side ask for, into out (room for NCIFAR + NSR); their count. */
static int conv_shapes(const bench_args *a, conv_shape *out)
{
    int n = 0;
    for (int i = 0; (a->shapes & SHAPES_CIFAR) && i < NCIFAR; i++)
        out[n++] = cifar_shapes[i];
    for (int i = 0; (a->shapes & SHAPES_SR) && i < NSR; i++) {
        out[n] = sr_shapes[i];
        out[n++].side = a->side / sr_shapes[i].side;
    }
    return n;
}

/* OpenBLAS's best rate here: `floor` (the shapes' own best) or the large GEMMs of a batch of 8. */
static int sgemm_peak(const bench_args *a, double floor, double *peak)
{
    static const int large[][3] = {{128, 8192, 1152}, {256, 2048, 2304}, {1024, 1024, 1024}};
    double g;
    *peak = floor;
    for (int i = 0; i < 3; i++) {
        if (kernels_bench_sgemm(large[i][0], large[i][1], large[i][2], a->threads, a->iters, &g))
            return ERR_NOMEM;
        *peak = g > *peak ? g : *peak;
    }
    return 0;
}

static int bench_conv(const bench_args *a, strata_err *e)
{
    conv_shape sh[NCIFAR + NSR];
    double conv[NCIFAR + NSR], gemm[NCIFAR + NSR], peak = 0;
    int n = conv_shapes(a, sh);
    /* every convolution first: OpenBLAS's threads keep spinning after a threaded sgemm */
    for (int i = 0; i < n; i++)
        if (kernels_bench_conv_strided(sh[i].cin, sh[i].cout, sh[i].k, sh[i].stride, sh[i].side,
                                       sh[i].side, a->batch, a->threads, a->iters, &conv[i]))
            return err_set(e, ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        int out_side = (sh[i].side - 1) / sh[i].stride + 1, cols = out_side * out_side * a->batch;
        if (kernels_bench_sgemm(sh[i].cout, cols < SGEMM_MAX_N ? cols : SGEMM_MAX_N,
                                sh[i].cin * sh[i].k * sh[i].k, a->threads, a->iters, &gemm[i]))
            return err_set(e, ERR_NOMEM, "out of memory");
        peak = gemm[i] > peak ? gemm[i] : peak;
    }
    for (int i = 0; i < n; i++)
        printf("conv k=%d stride=%d cin=%d cout=%d side=%d count=%d batch=%d threads=%d "
               "conv_gflops=%.1f sgemm_gflops=%.1f ratio=%.2f\n",
               sh[i].k, sh[i].stride, sh[i].cin, sh[i].cout, sh[i].side, sh[i].count, a->batch,
               a->threads, conv[i], gemm[i], conv[i] / gemm[i]);
    if (sgemm_peak(a, peak, &peak)) return err_set(e, ERR_NOMEM, "out of memory");
    printf("sgemm_peak threads=%d gflops=%.1f\n", a->threads, peak);
    return 0;
}

/* --shapes and --side, checked: 0 or CLI_EXIT_USAGE after saying why. */
static int parse_conv_opt(int c, const char *val, bench_args *a)
{
    long v;
    if (c == 'x') {
        a->shapes = !strcmp(val, "cifar") ? SHAPES_CIFAR
                    : !strcmp(val, "sr")  ? SHAPES_SR
                    : !strcmp(val, "all") ? SHAPES_CIFAR | SHAPES_SR
                                          : 0;
        return a->shapes ? 0 : cli_usage("bench", "--shapes: '%s' is not cifar, sr or all", val);
    }
    if (cli_flag_long("bench", "side", val, 4, 4096, &v)) return CLI_EXIT_USAGE;
    if (v % 4) return cli_usage("bench", "--side: '%s' is not a multiple of 4", val);
    a->side = (int)v;
    return 0;
}

static const struct option bench_opts[] = {{"model", 1, 0, 'm'},   {"batch", 1, 0, 'b'},
                                           {"threads", 1, 0, 'j'}, {"iters", 1, 0, 'i'},
                                           {"size", 1, 0, 's'},    {"shapes", 1, 0, 'x'},
                                           {"side", 1, 0, 'p'},    {"no-gemms-alone", 0, 0, 'g'},
                                           {"help", 0, 0, 'h'},    {0, 0, 0, 0}};

/* One known option of getopt's, into a: 0, -1 for --help, or CLI_EXIT_USAGE after saying why. */
static int parse_bench_opt(int c, bench_args *a)
{
    int *slot = c == 'b'   ? &a->batch
                : c == 'j' ? &a->threads
                : c == 'i' ? &a->iters
                : c == 's' ? &a->size
                           : NULL;
    long v;
    if (c == 'm') {
        a->model = optarg;
    } else if (c == 'g') {
        a->gemms_alone = 0;
    } else if (c == 'h') {
        fputs(bench_help, stdout);
        return -1;
    } else if (c == 'x' || c == 'p') {
        return parse_conv_opt(c, optarg, a);
    } else if (slot) {
        const struct option *o = bench_opts;
        while (o->val != c)
            o++;
        if (cli_flag_long("bench", o->name, optarg, 1, 4096, &v)) return CLI_EXIT_USAGE;
        *slot = (int)v;
    }
    return 0;
}

static int parse_bench_args(int argc, char **argv, bench_args *a)
{
    int c, rc;
    *a = (bench_args){.batch = 1,
                      .threads = 1,
                      .iters = 10,
                      .side = 1056,
                      .shapes = SHAPES_CIFAR | SHAPES_SR,
                      .gemms_alone = 1};
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", bench_opts, NULL)) != -1) {
        if (c == '?' || c == ':') {
            fprintf(stderr, "strata bench: unknown or incomplete option '%s'\n", argv[optind - 1]);
            return CLI_EXIT_USAGE;
        }
        if ((rc = parse_bench_opt(c, a))) return rc;
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
