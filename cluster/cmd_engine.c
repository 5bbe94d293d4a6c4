/* `strata unet`: one UNet2DModel forward, the engine on its own (no sampler, no farm). */
#include "cluster/cluster.h"
#include "kernels/kernels.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
