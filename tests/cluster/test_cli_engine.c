/* `strata unet` and `strata sample` as a user runs them: outputs, determinism, and one-line
 * errors with exit code 2 for bad model directories and flags. */
#include "kernels/kernels.h"
#include "tests/test.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define SMALL_MODEL "tests/fixtures/unet/small3/model"
#define SMALL_IO "tests/fixtures/unet/small3/unet.safetensors"

static int copy_model(const char *dst)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", SMALL_MODEL, dst);
    return system(cmd);
}

/* Replace the first occurrence of `from` with `to` in a text file. */
static int edit_file(const char *path, const char *from, const char *to)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    static char buf[1 << 16], out[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *at = strstr(buf, from);
    if (!at) return -1;
    snprintf(out, sizeof out, "%.*s%s%s", (int)(at - buf), buf, to, at + strlen(from));
    f = fopen(path, "wb");
    if (!f) return -1;
    fputs(out, f);
    return fclose(f);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* Runs `strata unet` on the small fixture input with model dir, writing out; fills err. */
static int run_unet(const char *model, const char *out, char *err, size_t errlen)
{
    const char *args[] = {"unet", "--model",        model, "--input", SMALL_IO, "--timestep",
                          "10",   "--class-labels", "3",   "--out",   out,      NULL};
    return test_run_strata(args, err, errlen, NULL, 0);
}

/* A model dir in a fresh temp dir, broken by `breakit`; returns strata's exit code. */
static int run_broken(int (*breakit)(const char *dir), char *err, size_t errlen)
{
    static char dir[1024];
    snprintf(dir, sizeof dir, "%s/m", test_tmpdir());
    if (copy_model(dir) || breakit(dir)) return -100;
    char out[1100];
    snprintf(out, sizeof out, "%s/out.safetensors", dir);
    const char *args[] = {"unet", "--model",        dir, "--input", SMALL_IO, "--timestep",
                          "10",   "--class-labels", "3", "--out",   out,      NULL};
    return test_run_strata(args, err, errlen, NULL, 0);
}

static int remove_weights(const char *dir)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/diffusion_pytorch_model.safetensors", dir);
    return unlink(p);
}

static int truncate_weights(const char *dir)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/diffusion_pytorch_model.safetensors", dir);
    FILE *f = fopen(p, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    return truncate(p, size / 2);
}

/* Rewrites the weights with conv_in.weight's dimensions permuted (same element count). */
static int reshape_weight(const char *dir)
{
    char p[1200];
    strata_err e;
    st_file_t *f;
    snprintf(p, sizeof p, "%s/diffusion_pytorch_model.safetensors", dir);
    if (st_open(p, &f, &e)) return -1;
    int n = st_count(f);
    st_out *outs = calloc((size_t)n, sizeof *outs);
    for (int i = 0; i < n; i++) {
        const st_tensor *t = st_at(f, i);
        float *data = malloc((size_t)st_numel(t) * sizeof(float) + 1);
        st_to_f32(t, data);
        outs[i].name = t->name;
        outs[i].data = data;
        outs[i].ndim = t->ndim;
        memcpy(outs[i].shape, t->shape, sizeof t->shape);
        if (!strcmp(t->name, "conv_in.weight")) {
            int64_t tmp = outs[i].shape[0];
            outs[i].shape[0] = outs[i].shape[1];
            outs[i].shape[1] = tmp;
        }
    }
    char tmp[1300];
    snprintf(tmp, sizeof tmp, "%s.new", p);
    int rc = st_write_f32(tmp, outs, n, &e);
    for (int i = 0; i < n; i++)
        free((void *)outs[i].data);
    free(outs);
    st_close(f);
    return rc ? rc : rename(tmp, p);
}

static int unknown_block(const char *dir)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/config.json", dir);
    return edit_file(p, "\"AttnDownBlock2D\"", "\"CrossAttnDownBlock2D\"");
}

static int wrong_type(const char *dir)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/config.json", dir);
    return edit_file(p, "\"layers_per_block\": 1", "\"layers_per_block\": \"one\"");
}

static int bad_json(const char *dir)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/config.json", dir);
    return edit_file(p, "{", "{{");
}

#define CHECK_BAD_INPUT(fn, must_name_1, must_name_2)                                              \
    do {                                                                                           \
        char err[2048] = "";                                                                       \
        int rc = run_broken(fn, err, sizeof err);                                                  \
        CHECKF(rc == 2, "exit code %d, stderr: %s", rc, err);                                      \
        CHECKF(count_lines(err) == 1, "expected one line, got: %s", err);                          \
        CHECKF(strstr(err, must_name_1), "'%s' not named in: %s", must_name_1, err);               \
        CHECKF(strstr(err, must_name_2), "'%s' not named in: %s", must_name_2, err);               \
    } while (0)

TEST(cli_unet_missing_weights)
{
    CHECK_BAD_INPUT(remove_weights, "diffusion_pytorch_model.safetensors", "strata unet");
}

TEST(cli_unet_truncated_weights)
{
    CHECK_BAD_INPUT(truncate_weights, "diffusion_pytorch_model.safetensors", "trunc");
}

TEST(cli_unet_wrong_shape)
{
    CHECK_BAD_INPUT(reshape_weight, "diffusion_pytorch_model.safetensors", "conv_in.weight");
}

TEST(cli_unet_unknown_block_type)
{
    CHECK_BAD_INPUT(unknown_block, "config.json", "down_block_types");
}

TEST(cli_unet_config_field_wrong_type)
{
    CHECK_BAD_INPUT(wrong_type, "config.json", "layers_per_block");
}

TEST(cli_unet_config_not_json)
{
    CHECK_BAD_INPUT(bad_json, "config.json", ":1:");
}

/* The command's output equals the library's forward on the same input: no file-format or
 * flag-handling error in between. (The forward itself is checked against diffusers in
 * test_unet.c; the fixture's timestep differs from 10, so compare with a library forward.) */
TEST(cli_unet_output_is_the_forward)
{
    char err[2048] = "", out[1024];
    strata_err e;
    snprintf(out, sizeof out, "%s/out.safetensors", test_tmpdir());
    int rc = run_unet(SMALL_MODEL, out, err, sizeof err);
    CHECKF(rc == 0, "exit %d: %s", rc, err);
    unet_t *m;
    st_file_t *in, *res;
    CHECK(unet_load(SMALL_MODEL, &m, &e) == 0);
    CHECK(st_open(SMALL_IO, &in, &e) == 0);
    CHECKF(st_open(out, &res, &e) == 0, "%s", e.msg);
    const st_tensor *x = st_find(in, "sample"), *y = st_find(res, "sample");
    CHECK(x && y && st_numel(x) == st_numel(y));
    int n = (int)x->shape[0], h = (int)x->shape[2], w = (int)x->shape[3];
    float *xs = malloc((size_t)st_numel(x) * 4), *want = malloc((size_t)st_numel(x) * 4);
    float *got = malloc((size_t)st_numel(x) * 4), t[64], labels[64];
    for (int i = 0; i < n; i++)
        t[i] = 10, labels[i] = 3;
    st_to_f32(x, xs);
    st_to_f32(y, got);
    CHECK(unet_forward(m, xs, n, h, w, t, labels, want, &e) == 0);
    CHECK(memcmp(got, want, (size_t)st_numel(x) * 4) == 0);
    free(xs), free(want), free(got);
    st_close(in), st_close(res), unet_free(m);
}

/* Same seed, same bytes; another seed, other bytes. */
TEST(cli_sample_png_is_deterministic)
{
    char err[2048], a[1024], b[1024], c[1024];
    const char *dir = test_tmpdir();
    snprintf(a, sizeof a, "%s/a.png", dir);
    snprintf(b, sizeof b, "%s/b.png", dir);
    snprintf(c, sizeof c, "%s/c.png", dir);
    const char *run_a[] = {"sample", "--model",       SMALL_MODEL, "--steps", "3", "--seed",
                           "7",      "--class-label", "2",         "--out",   a,   NULL};
    const char *run_b[] = {
        "sample",        "--model", SMALL_MODEL, "--steps", "3",     "--seed", "7",
        "--class-label", "2",       "--threads", "1",       "--out", b,        NULL};
    const char *run_c[] = {"sample", "--model",       SMALL_MODEL, "--steps", "3", "--seed",
                           "8",      "--class-label", "2",         "--out",   c,   NULL};
    CHECKF(test_run_strata(run_a, err, sizeof err, NULL, 0) == 0, "%s", err);
    CHECKF(test_run_strata(run_b, err, sizeof err, NULL, 0) == 0, "%s", err);
    CHECKF(test_run_strata(run_c, err, sizeof err, NULL, 0) == 0, "%s", err);
    uint8_t *pa, *pb, *pc;
    int w, h, w2, h2;
    strata_err e;
    CHECK(png_read_rgb(a, &pa, &w, &h, &e) == 0);
    CHECK(png_read_rgb(b, &pb, &w2, &h2, &e) == 0);
    CHECK(w == 16 && h == 16 && w2 == w && h2 == h);
    int same_ab = memcmp(pa, pb, (size_t)w * h * 3) == 0;
    free(pb);
    CHECK(png_read_rgb(c, &pc, &w2, &h2, &e) == 0);
    int same_ac = memcmp(pa, pc, (size_t)w * h * 3) == 0;
    free(pa), free(pc);
    CHECKF(same_ab, "%s", "same seed, different threads: pixels differ");
    CHECKF(!same_ac, "%s", "different seeds gave the same image");
}

TEST(cli_usage_errors)
{
    char err[2048];
    const char *no_args[] = {"unet", NULL};
    CHECK(test_run_strata(no_args, err, sizeof err, NULL, 0) == 2);
    CHECKF(strstr(err, "--model"), "%s", err);
    const char *bad_steps[] = {"sample", "--model", SMALL_MODEL, "--steps", "x",
                               "--seed", "1",       "--out",     "a.png",   NULL};
    CHECK(test_run_strata(bad_steps, err, sizeof err, NULL, 0) == 2);
    CHECKF(strstr(err, "--steps"), "%s", err);
    const char *unknown[] = {"frobnicate", NULL};
    CHECK(test_run_strata(unknown, err, sizeof err, NULL, 0) == 2);
    const char *help[] = {"sample", "--help", NULL};
    char out[4096];
    CHECK(test_run_strata(help, err, sizeof err, out, sizeof out) == 0);
    CHECKF(strstr(out, "usage: strata sample"), "%s", out);
}

/* Each strata sets up OpenBLAS on its own, from a clean environment, the same way as this test
 * process did (tests/main.c): otherwise cli_unet_output_is_the_forward compares different
 * kernels' roundings, and a farm's processes could too. Never the generic kernels where the CPU
 * has AVX2. */
TEST(cli_blas_kernels_same_in_every_process)
{
    char core[64] = "", threads[16] = "", out[256], err[1024];
    if (getenv("OPENBLAS_CORETYPE")) snprintf(core, sizeof core, "%s", getenv("OPENBLAS_CORETYPE"));
    if (getenv("OPENBLAS_NUM_THREADS"))
        snprintf(threads, sizeof threads, "%s", getenv("OPENBLAS_NUM_THREADS"));
    unsetenv("OPENBLAS_CORETYPE"), unsetenv("OPENBLAS_NUM_THREADS");
    const char *version[] = {"--version", NULL};
    int rc = test_run_strata(version, err, sizeof err, out, sizeof out);
    if (core[0]) setenv("OPENBLAS_CORETYPE", core, 1);
    if (threads[0]) setenv("OPENBLAS_NUM_THREADS", threads, 1);
    CHECKF(rc == 0, "%s", err);
    CHECKF(strstr(out, kernels_blas_core()), "strata says '%s', this process uses %s", out,
           kernels_blas_core());
#if defined(__x86_64__)
    __builtin_cpu_init();
    CHECKF(strcasecmp(kernels_blas_core(), "Prescott") || !__builtin_cpu_supports("avx2"),
           "OpenBLAS runs its generic kernels on a CPU with AVX2");
#endif
}

static double bench_field(const char *out, const char *key)
{
    const char *p = strstr(out, key);
    return p ? atof(p + strlen(key)) : -1;
}

/* `strata bench unet` traces the GEMMs of a forward, from every thread, growing its log past its
 * first 1,024 entries (cifar10 at batch 4 has about 1,090): their work is then exactly 4x that of
 * batch 1, and the trace, replayed alone, takes time. */
TEST(cli_bench_unet_traces_every_gemm)
{
    char out1[512], out4[512], err[1024];
    const char *one[] = {"bench",   "unet", "--model", "tests/fixtures/unet/cifar10/model",
                         "--batch", "1",    "--iters", "1",
                         NULL};
    const char *four[] = {"bench",   "unet", "--model",   "tests/fixtures/unet/cifar10/model",
                          "--batch", "4",    "--threads", "2",
                          "--iters", "1",    NULL};
    CHECKF(test_run_strata(one, err, sizeof err, out1, sizeof out1) == 0, "%s", err);
    CHECKF(test_run_strata(four, err, sizeof err, out4, sizeof out4) == 0, "%s", err);
    double g1 = bench_field(out1, " gemm_gflop="), g4 = bench_field(out4, " gemm_gflop=");
    CHECKF(bench_field(out4, " gemms=") > 1024, "%s", out4);
    CHECKF(g1 > 0 && fabs(g4 / g1 - 4.0) < 1e-3, "batch 1: %s batch 4: %s", out1, out4);
    CHECKF(bench_field(out4, " gemm_alone_ms=") > 0, "%s", out4);
}

/* ---------------------------------------------------------------- strata sample's level flags */

/* Runs `strata sample` of the small model with the args after the required ones. */
static int run_sample(const char *const *extra, const char *out, char *err, size_t errlen)
{
    const char *args[32] = {"sample", "--model", SMALL_MODEL, "--steps", "2",
                            "--seed", "3",       "--out",     out};
    int n = 9;
    while (*extra && n < 31)
        args[n++] = *extra++;
    args[n] = NULL;
    return test_run_strata(args, err, errlen, NULL, 0);
}

/* Every bad value of a level flag: exit 2 and one line naming the flag. */
TEST(cli_sample_level_flags_bad_values)
{
    static const struct {
        const char *args[6], *named;
    } bad[] = {
        {{"--noise-level", "1000"}, "--noise-level"},
        {{"--noise-level", "-1"}, "--noise-level"},
        {{"--guidance", "0.5"}, "--guidance"},
        {{"--guidance", "nan"}, "--guidance"},
        {{"--class-label", "x"}, "--class-label"},
        {{"--class-label", "-2"}, "--class-label"},
        {{"--tile", "-8"}, "--tile"},
        {{"--overlap", "4"}, "--overlap"},
        {{"--tile", "16", "--overlap", "16"}, "--overlap"},
        {{"--kind", "upscale"}, "--kind"},
        {{"--kind", "refine"}, "--cond"},
        {{"--kind", "direct"}, "--cond"},
        {{"--kind", "generate", "--cond", "x.png"}, "--cond"},
        {{"--noise-level", "10"}, "--noise-level"},
        {{"--level", "-1"}, "--level"},
        {{"--image", "4294967296"}, "--image"},
        {{"--cond"}, "--cond"},
    };
    char err[2048], out[1024];
    snprintf(out, sizeof out, "%s/x.png", test_tmpdir());
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = run_sample(bad[i].args, out, err, sizeof err);
        CHECKF(rc == 2, "%s %s: exit %d: %s", bad[i].args[0], bad[i].args[1], rc, err);
        CHECKF(count_lines(err) == 1, "%s: expected one line, got: %s", bad[i].args[0], err);
        CHECKF(strstr(err, bad[i].named), "%s not named in: %s", bad[i].named, err);
    }
    /* run-time refusals are one line and exit 2 too: a tile not a multiple of the model's 4 */
    const char *odd_tile[] = {"--size", "16", "--tile", "6", NULL};
    CHECK(run_sample(odd_tile, out, err, sizeof err) == 2 && count_lines(err) == 1);
    CHECKF(strstr(err, "tile"), "%s", err);
    const char *help[] = {"sample", "--help", NULL};
    char text[8192];
    CHECK(test_run_strata(help, err, sizeof err, text, sizeof text) == 0);
    const char *flags[] = {"--cond",    "--noise-level", "--guidance", "--class-label", "--tile",
                           "--overlap", "--level",       "--image",    "--kind",        "--noise"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        CHECKF(strstr(text, flags[i]), "--help does not document %s", flags[i]);
}

/* Writes a safetensors file at path holding `count` copies of the same (2, 3, 16, 16) noise,
 * under the given names. */
static int write_noise(const char *path, const char *const *names, int count)
{
    static float v[2 * 3 * 16 * 16];
    noise_key k = {11, 0, 0, 0};
    noise_fill(&k, v, 6, 16, 16, 0, 0);
    st_out t[4];
    for (int i = 0; i < count; i++)
        t[i] = (st_out){names[i], v, 4, {2, 3, 16, 16}};
    strata_err e;
    return st_write_f32(path, t, count, &e);
}

/* --noise takes a file's only tensor whatever its name (diffusers and safetensors' own tools
 * call it 'sample' or anything), or the one named 'noise'; with several other names the
 * error lists them. */
TEST(cli_sample_noise_file_any_name)
{
    static const char *const noise[] = {"noise"}, *const sample[] = {"sample"},
                             *const both[] = {"latents", "noise"}, *const two[] = {"a", "b"};
    const char *dir = test_tmpdir();
    char err[2048], f[4][1024], out[4][1024];
    const char *const *names[] = {noise, sample, both, two};
    const int counts[] = {1, 1, 2, 2};
    for (int i = 0; i < 4; i++) {
        snprintf(f[i], sizeof f[i], "%s/n%d.safetensors", dir, i);
        snprintf(out[i], sizeof out[i], "%s/o%d.safetensors", dir, i);
        CHECK(write_noise(f[i], names[i], counts[i]) == 0);
        const char *extra[] = {"--class-label", "2", "--noise", f[i], NULL};
        int rc = run_sample(extra, out[i], err, sizeof err);
        CHECKF(rc == (i == 3 ? 2 : 0), "%s: exit %d: %s", f[i], rc, err);
    }
    CHECKF(count_lines(err) == 1 && strstr(err, "'a'") && strstr(err, "'b'"),
           "the choices are not named: %s", err);
    st_file_t *s[3];
    strata_err e;
    for (int i = 0; i < 3; i++)
        CHECKF(st_open(out[i], &s[i], &e) == 0, "%s", e.msg);
    const st_tensor *t0 = st_find(s[0], "sample"), *t1 = st_find(s[1], "sample"),
                    *t2 = st_find(s[2], "sample");
    int same = t0 && t1 && t2 && t0->shape[0] == 2 && t0->nbytes == t1->nbytes &&
               t0->nbytes == t2->nbytes && !memcmp(t0->data, t1->data, t0->nbytes) &&
               !memcmp(t0->data, t2->data, t0->nbytes);
    for (int i = 0; i < 3; i++)
        st_close(s[i]);
    CHECKF(same, "%s", "the same noise under another name gave another sample");
}
