/* `strata unet` and `strata sample`: the engine on its own, one model, no farm. */
#include "cluster/cluster.h"
#include "kernels/kernels.h"
#include "worker/worker.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Comma-separated numbers: fills up to max values, returns the count or -1. */
static int parse_float_list(const char *s, float *out, int max)
{
    char buf[1024];
    int n = 0;
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (n == max || cli_parse_float(tok, &out[n])) return -1;
        n++;
    }
    return n ? n : -1;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* ---------------------------------------------------------------- strata unet */

static const char unet_help[] =
    "usage: strata unet --model DIR --input IN.safetensors --timestep T\n"
    "                   [--class-labels L[,L...]] [--threads N] --out OUT.safetensors\n\n"
    "One UNet2DModel forward. IN holds tensor 'sample' (N, C, H, W) and, for models with\n"
    "class_embed_type \"identity\", 'class_labels' (N, D). OUT receives 'sample'.\n";

typedef struct unet_args {
    const char *model, *input, *out;
    float timestep;
    int has_timestep, nlabels, threads;
    float labels[256];
} unet_args;

static int parse_unet_args(int argc, char **argv, unet_args *a)
{
    static const struct option opts[] = {{"model", 1, 0, 'm'},        {"input", 1, 0, 'i'},
                                         {"timestep", 1, 0, 't'},     {"out", 1, 0, 'o'},
                                         {"class-labels", 1, 0, 'c'}, {"threads", 1, 0, 'j'},
                                         {"help", 0, 0, 'h'},         {0, 0, 0, 0}};
    int c;
    long v;
    memset(a, 0, sizeof *a);
    a->threads = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            a->model = optarg;
            break;
        case 'i':
            a->input = optarg;
            break;
        case 'o':
            a->out = optarg;
            break;
        case 't':
            if (cli_parse_float(optarg, &a->timestep))
                return cli_usage("unet", "--timestep: '%s' is not a number", optarg);
            a->has_timestep = 1;
            break;
        case 'c':
            if ((a->nlabels = parse_float_list(optarg, a->labels, 256)) < 0)
                return cli_usage("unet", "--class-labels: '%s' is not a list of numbers", optarg);
            break;
        case 'j':
            if (cli_parse_long(optarg, 1, 256, &v))
                return cli_usage("unet", "--threads: '%s' is not 1 to 256", optarg);
            a->threads = (int)v;
            break;
        case 'h':
            fputs(unet_help, stdout);
            return -1;
        default:
            return cli_usage("unet", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (!a->model || !a->input || !a->out || !a->has_timestep)
        return cli_usage("unet", "%s", "--model, --input, --timestep and --out are required");
    return 0;
}

/* Class labels for n images: from the flag (one for all, or one each) or from IN. */
static int unet_class_labels(const unet_args *a, const st_file_t *in, const unet_info *info, int n,
                             float **labels, strata_err *e)
{
    *labels = NULL;
    if (!info->needs_class_labels) {
        if (a->nlabels) return err_set(e, ERR_INPUT, "--class-labels: model has no classes");
        return 0;
    }
    int d = info->class_label_dim;
    if (!(*labels = malloc((size_t)n * d * sizeof(float))))
        return err_set(e, ERR_NOMEM, "out of memory");
    if (d > 1 || !a->nlabels) {
        int64_t shape[2] = {n, d};
        return st_read_f32(in, "class_labels", d > 1 ? 2 : 1, shape, *labels, e);
    }
    if (a->nlabels != 1 && a->nlabels != n)
        return err_set(e, ERR_INPUT, "--class-labels: give 1 or %d values, not %d", n, a->nlabels);
    for (int i = 0; i < n; i++)
        (*labels)[i] = a->labels[a->nlabels == 1 ? 0 : i];
    return 0;
}

static int run_unet(const unet_args *a, strata_err *e)
{
    unet_t *m = NULL;
    st_file_t *in = NULL;
    float *x = NULL, *y = NULL, *t = NULL, *labels = NULL;
    int rc = unet_load(a->model, &m, e);
    if (!rc) rc = st_open(a->input, &in, e);
    const st_tensor *s = rc ? NULL : st_find(in, "sample");
    if (!rc && (!s || s->ndim != 4 || s->dtype == ST_DTYPE_OTHER))
        rc = err_set(e, ERR_INPUT, "%s: tensor 'sample': expected a 4-d float tensor (N, C, H, W)",
                     a->input);
    if (!rc && s->shape[1] != unet_get_info(m)->in_channels)
        rc = err_set(e, ERR_INPUT, "%s: tensor 'sample': has %lld channels, the model takes %d",
                     a->input, (long long)s->shape[1], unet_get_info(m)->in_channels);
    if (!rc) {
        int n = (int)s->shape[0], h = (int)s->shape[2], w = (int)s->shape[3];
        int oc = unet_get_info(m)->out_channels;
        x = malloc((size_t)st_numel(s) * sizeof(float));
        y = malloc((size_t)n * oc * h * w * sizeof(float));
        t = malloc((size_t)n * sizeof(float));
        if (!x || !y || !t) rc = err_set(e, ERR_NOMEM, "out of memory");
        if (!rc) rc = unet_class_labels(a, in, unet_get_info(m), n, &labels, e);
        if (!rc) {
            st_to_f32(s, x);
            for (int i = 0; i < n; i++)
                t[i] = a->timestep;
            rc = unet_forward(m, x, n, h, w, t, labels, y, e);
        }
        st_out o = {"sample", y, 4, {n, oc, h, w}};
        if (!rc) rc = st_write_f32(a->out, &o, 1, e);
    }
    free(x);
    free(y);
    free(t);
    free(labels);
    st_close(in);
    unet_free(m);
    return rc;
}

int cmd_unet(int argc, char **argv)
{
    unet_args a;
    int rc = parse_unet_args(argc, argv, &a);
    if (rc) return rc < 0 ? CLI_EXIT_OK : rc;
    strata_err e = {0};
    if (a.threads) kernels_set_threads(a.threads);
    rc = run_unet(&a, &e);
    return rc ? cli_fail("unet", rc, e.msg) : CLI_EXIT_OK;
}

/* ---------------------------------------------------------------- strata sample */

static const char sample_help[] =
    "usage: strata sample --model DIR --steps N --seed S [--sampler ddim|ddpm|dpm++2m]\n"
    "                     [--noise IN.safetensors] [--count N] [--size PX] [--class-label L]\n"
    "                     [--eta E] [--threads N] --out IMG.png|OUT.safetensors\n\n"
    "Samples images from one diffusers model directory. The sampler and its settings come\n"
    "from the model's scheduler_config.json (or scheduler/scheduler_config.json); --sampler\n"
    "overrides the class only. --noise replaces the drawn initial noise with tensor 'noise'\n"
    "(N, C, H, W). A .safetensors output holds the final 'sample'; a .png output holds the\n"
    "image (with --count > 1, OUT-000000.png, OUT-000001.png, ...).\n";

typedef struct sample_args {
    const char *model, *noise, *out, *sampler;
    long steps, seed, count, size, threads;
    float class_label, eta;
    int has_class_label, has_seed;
} sample_args;

static int parse_sample_args(int argc, char **argv, sample_args *a)
{
    static const struct option opts[] = {{"model", 1, 0, 'm'},
                                         {"steps", 1, 0, 'n'},
                                         {"seed", 1, 0, 's'},
                                         {"sampler", 1, 0, 'S'},
                                         {"noise", 1, 0, 'z'},
                                         {"out", 1, 0, 'o'},
                                         {"count", 1, 0, 'c'},
                                         {"size", 1, 0, 'p'},
                                         {"class-label", 1, 0, 'l'},
                                         {"eta", 1, 0, 'e'},
                                         {"threads", 1, 0, 'j'},
                                         {"help", 0, 0, 'h'},
                                         {0, 0, 0, 0}};
    int c, rc = 0;
    memset(a, 0, sizeof *a);
    a->count = 1;
    optind = 1;
    opterr = 0;
    while (!rc && (c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            a->model = optarg;
            break;
        case 'z':
            a->noise = optarg;
            break;
        case 'o':
            a->out = optarg;
            break;
        case 'S':
            a->sampler = optarg;
            break;
        case 'n':
            rc = cli_flag_long("sample", "steps", optarg, 1, 10000, &a->steps);
            break;
        case 's':
            rc = cli_flag_long("sample", "seed", optarg, 0, 0x7fffffffffffffffL, &a->seed);
            a->has_seed = 1;
            break;
        case 'c':
            rc = cli_flag_long("sample", "count", optarg, 1, 4096, &a->count);
            break;
        case 'p':
            rc = cli_flag_long("sample", "size", optarg, 1, 16384, &a->size);
            break;
        case 'j':
            rc = cli_flag_long("sample", "threads", optarg, 1, 256, &a->threads);
            break;
        case 'l':
            if (cli_parse_float(optarg, &a->class_label))
                return cli_usage("sample", "--class-label: '%s' is not a number", optarg);
            a->has_class_label = 1;
            break;
        case 'e':
            if (cli_parse_float(optarg, &a->eta) || a->eta < 0)
                return cli_usage("sample", "--eta: '%s' is not a number >= 0", optarg);
            break;
        case 'h':
            fputs(sample_help, stdout);
            return -1;
        default:
            return cli_usage("sample", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (rc) return rc;
    if (!a->model || !a->steps || !a->has_seed || !a->out)
        return cli_usage("sample", "%s", "--model, --steps, --seed and --out are required");
    if (!ends_with(a->out, ".png") && !ends_with(a->out, ".safetensors"))
        return cli_usage("sample", "--out: '%s' must end in .png or .safetensors", a->out);
    return 0;
}

static void print_progress(void *ctx, int step, int steps)
{
    (void)ctx;
    fprintf(stderr, "\rstep %d/%d", step, steps);
    if (step == steps) fputc('\n', stderr);
}

static int write_sample_output(const sample_args *a, const float *x, int n, int c, int h, int w,
                               strata_err *e)
{
    if (ends_with(a->out, ".safetensors")) {
        st_out o = {"sample", x, 4, {n, c, h, w}};
        return st_write_f32(a->out, &o, 1, e);
    }
    if (c != 3) return err_set(e, ERR_INPUT, "--out: a PNG needs 3 channels, the model has %d", c);
    uint8_t *rgb = malloc((size_t)h * w * 3);
    if (!rgb) return err_set(e, ERR_NOMEM, "out of memory");
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        char path[4096];
        if (n == 1)
            snprintf(path, sizeof path, "%s", a->out);
        else
            snprintf(path, sizeof path, "%.*s-%06d.png", (int)(strlen(a->out) - 4), a->out, i);
        image_from_tensor(x + (size_t)i * 3 * h * w, h, w, rgb);
        rc = png_write_rgb(path, rgb, w, h, NULL, 0, e);
    }
    free(rgb);
    return rc;
}

static int run_sample(const sample_args *a, strata_err *e)
{
    unet_t *m = NULL;
    st_file_t *nf = NULL;
    sched_config sc;
    float *x = NULL, *init = NULL, *labels = NULL;
    int rc = unet_load(a->model, &m, e);
    if (!rc) rc = worker_model_scheduler(a->model, a->sampler, a->eta, &sc, e);
    if (rc) goto done;
    const unet_info *info = unet_get_info(m);
    int n = (int)a->count, size = a->size ? (int)a->size : info->sample_size;
    int h = size, w = size, oc = info->out_channels;
    if (info->in_channels != oc) {
        rc = err_set(e, ERR_INPUT,
                     "%s: model is conditional (%d input channels, %d output): "
                     "run it in a pipeline with strata render",
                     a->model, info->in_channels, oc);
        goto done;
    }
    if (a->noise) {
        if ((rc = st_open(a->noise, &nf, e))) goto done;
        const st_tensor *t = st_find(nf, "noise");
        if (!t || t->ndim != 4 || t->shape[1] != oc || t->dtype == ST_DTYPE_OTHER) {
            rc = err_set(e, ERR_INPUT, "%s: tensor 'noise': expected shape (N, %d, H, W)", a->noise,
                         oc);
            goto done;
        }
        n = (int)t->shape[0], h = (int)t->shape[2], w = (int)t->shape[3];
        if (!(init = malloc((size_t)st_numel(t) * sizeof(float)))) goto nomem;
        st_to_f32(t, init);
    }
    if (h <= 0) {
        rc = err_set(e, ERR_INPUT, "%s: config.json has no sample_size: give --size", a->model);
        goto done;
    }
    if (info->needs_class_labels) {
        if (!a->has_class_label || info->class_label_dim != 1) {
            rc = err_set(e, ERR_INPUT, "%s: model is class-conditional: give --class-label",
                         a->model);
            goto done;
        }
        if (!(labels = malloc((size_t)n * sizeof(float)))) goto nomem;
        for (int i = 0; i < n; i++)
            labels[i] = a->class_label;
    }
    if (!(x = malloc((size_t)n * oc * h * w * sizeof(float)))) goto nomem;
    sample_job job = {.model = m,
                      .sched = &sc,
                      .steps = (int)a->steps,
                      .n = n,
                      .h = h,
                      .w = w,
                      .class_labels = labels,
                      .init_noise = init,
                      .seed = (uint64_t)a->seed,
                      .progress = isatty(2) ? print_progress : NULL};
    rc = runner_sample(&job, x, e);
    if (!rc) rc = write_sample_output(a, x, n, oc, h, w, e);
    goto done;
nomem:
    rc = err_set(e, ERR_NOMEM, "out of memory");
done:
    free(x);
    free(init);
    free(labels);
    st_close(nf);
    unet_free(m);
    return rc;
}

int cmd_sample(int argc, char **argv)
{
    sample_args a;
    int rc = parse_sample_args(argc, argv, &a);
    if (rc) return rc < 0 ? CLI_EXIT_OK : rc;
    if (a.threads) kernels_set_threads((int)a.threads);
    strata_err e = {0};
    rc = run_sample(&a, &e);
    return rc ? cli_fail("sample", rc, e.msg) : CLI_EXIT_OK;
}
