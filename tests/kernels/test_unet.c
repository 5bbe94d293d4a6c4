/* UNet2DModel forward against diffusers' own outputs (fixtures from tools/make_fixtures.py) and
 * bad model directories. The fixtures' sampling loops are replayed through the worker's loop in
 * tests/worker/test_sample_loop.c. */
#include "kernels/kernels.h"
#include "tests/test.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define UNET_FIXTURES "tests/fixtures/unet"

/* Reads a whole tensor as float32 (malloc'd), or NULL when absent. */
static float *read_tensor(const st_file_t *f, const char *name, const st_tensor **info)
{
    const st_tensor *t = st_find(f, name);
    if (info) *info = t;
    if (!t) return NULL;
    float *data = malloc((size_t)st_numel(t) * sizeof(float));
    if (data) st_to_f32(t, data);
    return data;
}

/* Forward of one fixture case; returns the relative error, or -1 on a load failure. */
static double unet_case_error(const char *dir, char *why, size_t whylen)
{
    char path[1024];
    strata_err e = {0};
    unet_t *m = NULL;
    st_file_t *io = NULL;
    double rel = -1;
    snprintf(path, sizeof path, "%s/model", dir);
    if (unet_load(path, &m, &e)) {
        snprintf(why, whylen, "%s", e.msg);
        return -1;
    }
    snprintf(path, sizeof path, "%s/unet.safetensors", dir);
    if (st_open(path, &io, &e)) {
        snprintf(why, whylen, "%s", e.msg);
        unet_free(m);
        return -1;
    }
    const st_tensor *xs, *ys;
    float *x = read_tensor(io, "sample", &xs), *t = read_tensor(io, "timestep", NULL);
    float *labels = read_tensor(io, "class_labels", NULL), *want = read_tensor(io, "expected", &ys);
    float *got = want ? malloc((size_t)st_numel(ys) * sizeof(float)) : NULL;
    if (x && t && want && got &&
        !unet_forward(m, x, (int)xs->shape[0], (int)xs->shape[2], (int)xs->shape[3], t, labels, got,
                      &e)) {
        float d, r;
        test_max_abs_diff(got, want, (size_t)st_numel(ys), &d, &r);
        rel = d / r;
    } else {
        snprintf(why, whylen, "forward failed: %s", e.msg);
    }
    free(x), free(t), free(labels), free(want), free(got);
    st_close(io);
    unet_free(m);
    return rel;
}

static int list_dirs(const char *root, char names[][128], int max)
{
    DIR *d = opendir(root);
    struct dirent *ent;
    int n = 0;
    if (!d) return 0;
    while ((ent = readdir(d)) && n < max) {
        char p[1024];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", root, ent->d_name);
        if (ent->d_name[0] != '.' && !stat(p, &st) && S_ISDIR(st.st_mode))
            snprintf(names[n++], 128, "%s", ent->d_name);
    }
    closedir(d);
    return n;
}

TEST(unet_forward_matches_diffusers)
{
    char cases[32][128], dir[1024], why[600] = "";
    int n = list_dirs(UNET_FIXTURES, cases, 32), checked = 0;
    CHECKF(n >= 4, "expected the fixture cases under %s, found %d", UNET_FIXTURES, n);
    for (int i = 0; i < n; i++) {
        snprintf(dir, sizeof dir, "%s/%s", UNET_FIXTURES, cases[i]);
        double rel = unet_case_error(dir, why, sizeof why);
        CHECKF(rel >= 0, "%s: %s", cases[i], why);
        CHECKF(rel <= 1e-4, "%s: max abs error %.3g of the output's max abs value", cases[i], rel);
        printf("    %-12s relative error %.2e\n", cases[i], rel);
        checked++;
    }
    CHECK(checked == n);
}

/* The banded convolutions (kernels/conv_band.c) share their bands out over the threads: the
 * tiles case (160x160, the shipped SR architecture) gives the same bits on 1, 2 and 3 threads. */
TEST(unet_forward_bands_are_thread_invariant)
{
    strata_err e = {0};
    unet_t *m = NULL;
    st_file_t *io = NULL;
    CHECKF(unet_load(UNET_FIXTURES "/tiles/model", &m, &e) == 0, "%s", e.msg);
    CHECKF(st_open(UNET_FIXTURES "/tiles/unet.safetensors", &io, &e) == 0, "%s", e.msg);
    const st_tensor *xs, *ys;
    float *x = read_tensor(io, "sample", &xs), *t = read_tensor(io, "timestep", NULL);
    float *labels = read_tensor(io, "class_labels", NULL), *want = read_tensor(io, "expected", &ys);
    size_t count = (size_t)st_numel(ys);
    float *got[3] = {malloc(count * sizeof(float)), malloc(count * sizeof(float)),
                     malloc(count * sizeof(float))};
    CHECK(x && t && labels && got[0] && got[1] && got[2]);
    for (int threads = 1; threads <= 3; threads++) {
        kernels_set_threads(threads);
        CHECKF(unet_forward(m, x, (int)xs->shape[0], (int)xs->shape[2], (int)xs->shape[3], t,
                            labels, got[threads - 1], &e) == 0,
               "%s", e.msg);
    }
    kernels_set_threads(2);
    CHECK(memcmp(got[0], got[1], count * sizeof(float)) == 0);
    CHECK(memcmp(got[0], got[2], count * sizeof(float)) == 0);
    free(x), free(t), free(labels), free(want);
    free(got[0]), free(got[1]), free(got[2]);
    st_close(io);
    unet_free(m);
}

/* Random edits of a model's config.json: unet_load either refuses with ERR_INPUT and a
 * message naming the file, or loads a model whose forward runs. Never a crash. */
TEST(unet_config_mutations_never_crash)
{
    static const char *const bits[] = {
        "0",    "-1", "null", "\"x\"", "[]", "{}", "1e9", "true", "2", "[1]", "\"AttnDownBlock2D\"",
        "65536"};
    char dir[1024], path[1200], *orig = NULL;
    snprintf(dir, sizeof dir, "%s/m", test_tmpdir());
    char cmd[2400];
    snprintf(cmd, sizeof cmd, "cp -r tests/fixtures/unet/small3/model '%s'", dir);
    CHECK(system(cmd) == 0);
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "rb");
    CHECK(f);
    orig = calloc(1 << 16, 1);
    size_t len = fread(orig, 1, (1 << 16) - 1, f);
    fclose(f);
    uint32_t rng = 12345;
    int loaded = 0, refused = 0, runs = test_quick() ? 60 : 400;
    float x[2 * 3 * 16 * 16], y[2 * 3 * 16 * 16] = {0}, t[2] = {10, 500}, labels[2] = {1, 2};
    for (size_t i = 0; i < sizeof x / sizeof x[0]; i++)
        x[i] = (float)(i % 7) / 7.0f - 0.5f;
    for (int run = 0; run < runs; run++) {
        /* replace the value after a random ':' with a random token */
        rng = rng * 1664525u + 1013904223u;
        size_t at = (rng >> 8) % len;
        while (at < len && orig[at] != ':')
            at++;
        if (at >= len) continue;
        size_t end = at + 1;
        while (end < len && orig[end] != ',' && orig[end] != '\n' && orig[end] != '}')
            end++;
        rng = rng * 1664525u + 1013904223u;
        const char *bit = bits[(rng >> 8) % (sizeof bits / sizeof bits[0])];
        f = fopen(path, "wb");
        CHECK(f);
        fprintf(f, "%.*s %s%s", (int)(at + 1), orig, bit, orig + end);
        fclose(f);
        unet_t *m = NULL;
        strata_err e = {0};
        int rc = unet_load(dir, &m, &e);
        if (rc) {
            CHECKF(rc == ERR_INPUT &&
                       (strstr(e.msg, "config.json") || strstr(e.msg, ".safetensors")),
                   "run %d (%s after byte %zu): %d %s", run, bit, at, rc, e.msg);
            refused++;
            continue;
        }
        const unet_info *info = unet_get_info(m);
        if (info->in_channels == 3 && info->out_channels == 3 && info->class_label_dim == 1 &&
            16 % info->downsample_factor == 0)
            unet_forward(m, x, 2, 16, 16, t, info->needs_class_labels ? labels : NULL, y, &e);
        unet_free(m);
        loaded++;
    }
    free(orig);
    CHECKF(refused > 0 && loaded > 0, "refused %d, loaded %d", refused, loaded);
}
