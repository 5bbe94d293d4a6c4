/* `strata sample`: one level of a pipeline on its own, run by the farm's own level runner
 * (level_sample, the one sampling loop) with the farm's noise keys, so that any level of a farm
 * image can be reproduced, and the loop checked, outside the farm. */
#include "cluster/cluster.h"
#include "kernels/kernels.h"
#include "worker/worker.h"

#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char sample_help[] =
    "usage: strata sample --model DIR --steps N --seed S --out IMG.png|OUT.safetensors\n"
    "                     [--kind generate|refine|direct] [--cond IMG.png] [--noise-level T]\n"
    "                     [--guidance G] [--class-label L] [--tile PX [--overlap PX]]\n"
    "                     [--level I] [--image I] [--count N] [--size PX]\n"
    "                     [--noise IN.safetensors] [--sampler ddim|ddpm|dpm++2m] [--eta E]\n"
    "                     [--threads N]\n\n"
    "Runs one level of a pipeline on one diffusers model directory, with the sampling loop and\n"
    "the noise of `strata render`. The sampler and its settings come from the model's\n"
    "scheduler_config.json (or scheduler/scheduler_config.json).\n\n"
    "  --model DIR        diffusers UNet2DModel directory\n"
    "  --steps N          sampling steps, 1..10000 (a direct level takes none)\n"
    "  --seed S           the image's seed (the farm's image i of a job seeded S uses S + i)\n"
    "  --out FILE         .png: the image (with --count > 1, FILE-000000.png, FILE-000001.png,\n"
    "                     ...); .safetensors: the final tensor 'sample' (N, C, H, W)\n"
    "  --kind K           generate (the default), refine (the default with --cond) or direct\n"
    "                     (one model evaluation at the top timestep)\n"
    "  --cond IMG.png     the level below's image, upsampled to the canvas: refine and direct\n"
    "  --noise-level T    noise the cond once to timestep T, which models with class_embed_type\n"
    "                     \"timestep\" receive as their class (0..999, default 0: none)\n"
    "  --guidance G       classifier-free guidance scale, applied with --class-label (1..1000,\n"
    "                     default 1: off)\n"
    "  --class-label L    class of a class-conditional model (default -1: its null class)\n"
    "  --tile PX          sample in tiles of PX x PX blended at every step (default 0: one tile)\n"
    "  --overlap PX       overlap of neighbouring tiles, below the tile (default 0)\n"
    "  --level I          the level's index in its pipeline, part of every noise key (default 0)\n"
    "  --image I          the first image's index, part of its noise keys (default 0); image k\n"
    "                     of --count uses I + k\n"
    "  --count N          images, sharing seed, cond and class (default 1)\n"
    "  --size PX          canvas side (default: the model's sample_size)\n"
    "  --noise FILE       initial noise (N, C, H, W) instead of the drawn noise: the file's only\n"
    "                     tensor, whatever its name, or the one named 'noise'; it sets N and H, W\n"
    "  --sampler K        the scheduler class instead of the model's (schedule kept)\n"
    "  --eta E            DDIM eta, >= 0 (default 0)\n"
    "  --threads N        compute threads, 1..256\n\n"
    "A farm image's level is reproduced bit for bit with that level's settings from the\n"
    "pipeline, --seed S+i --image i --level L, and (refine, direct) --cond the level below's\n"
    "PNG as `strata render --keep-levels` writes it.\n";

typedef struct sample_args {
    const char *model, *noise, *out, *sampler, *cond, *kind;
    long steps, seed, count, size, threads, noise_level, class_label, tile, overlap, level, image;
    float eta, guidance;
    unsigned given; /* bit i: flag i of sample_flags was given */
} sample_args;

/* One flag: a string, an integer or a float in [lo, hi], stored at off in sample_args. */
typedef struct sample_flag {
    const char *name;
    char type; /* 's', 'l' or 'f' */
    long lo, hi;
    size_t off;
} sample_flag;

#define FLAG_S(n, f)                                                                               \
    {                                                                                              \
        n, 's', 0, 0, offsetof(sample_args, f)                                                     \
    }
#define FLAG_L(n, lo, hi, f)                                                                       \
    {                                                                                              \
        n, 'l', lo, hi, offsetof(sample_args, f)                                                   \
    }
#define FLAG_F(n, lo, hi, f)                                                                       \
    {                                                                                              \
        n, 'f', lo, hi, offsetof(sample_args, f)                                                   \
    }

/* The flags, in the order --help lists them; the values are getopt's and bits of `given`. */
enum sample_flag_id {
    SF_MODEL,
    SF_STEPS,
    SF_SEED,
    SF_OUT,
    SF_KIND,
    SF_COND,
    SF_NOISE_LEVEL,
    SF_GUIDANCE,
    SF_CLASS_LABEL,
    SF_TILE,
    SF_OVERLAP,
    SF_LEVEL,
    SF_IMAGE,
    SF_COUNT,
    SF_SIZE,
    SF_NOISE,
    SF_SAMPLER,
    SF_ETA,
    SF_THREADS,
    SF_HELP,
    SAMPLE_NFLAGS
};

static const sample_flag sample_flags[SAMPLE_NFLAGS] = {
    [SF_MODEL] = FLAG_S("model", model),
    [SF_STEPS] = FLAG_L("steps", 1, 10000, steps),
    [SF_SEED] = FLAG_L("seed", 0, 0x7fffffffffffffffL, seed),
    [SF_OUT] = FLAG_S("out", out),
    [SF_KIND] = FLAG_S("kind", kind),
    [SF_COND] = FLAG_S("cond", cond),
    [SF_NOISE_LEVEL] = FLAG_L("noise-level", 0, 999, noise_level),
    [SF_GUIDANCE] = FLAG_F("guidance", 1, 1000, guidance),
    [SF_CLASS_LABEL] = FLAG_L("class-label", -1, 1 << 20, class_label),
    [SF_TILE] = FLAG_L("tile", 0, 16384, tile),
    [SF_OVERLAP] = FLAG_L("overlap", 0, 16384, overlap),
    [SF_LEVEL] = FLAG_L("level", 0, 65535, level), /* the noise key holds 16 bits */
    [SF_IMAGE] = FLAG_L("image", 0, 0xffffffffL, image),
    [SF_COUNT] = FLAG_L("count", 1, 4096, count),
    [SF_SIZE] = FLAG_L("size", 1, 16384, size),
    [SF_NOISE] = FLAG_S("noise", noise),
    [SF_SAMPLER] = FLAG_S("sampler", sampler),
    [SF_ETA] = FLAG_F("eta", 0, 1000000, eta),
    [SF_THREADS] = FLAG_L("threads", 1, 256, threads),
    [SF_HELP] = {"help", 0, 0, 0, 0},
};

/* Store the value v of flag f in a: 0, or CLI_EXIT_USAGE after a one-line message. */
static int sample_set(const sample_flag *f, const char *v, sample_args *a)
{
    char *p = (char *)a + f->off;
    float x;
    if (f->type == 's') {
        *(const char **)p = v;
        return 0;
    }
    if (f->type == 'l') return cli_flag_long("sample", f->name, v, f->lo, f->hi, (long *)p);
    if (cli_parse_float(v, &x) || !(x >= (float)f->lo && x <= (float)f->hi))
        return cli_usage("sample", "--%s: '%s' is not a number in [%ld, %ld]", f->name, v, f->lo,
                         f->hi);
    *(float *)p = x;
    return 0;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* The level kind from --kind (default: refine with --cond, else generate) and the flags that
 * only some kinds take. */
static int sample_kind(const sample_args *a, level_kind *mode)
{
    *mode = a->cond ? LEVEL_KIND_REFINE : LEVEL_KIND_GENERATE;
    if (a->kind && level_kind_parse(a->kind, mode) != 0)
        return cli_usage("sample", "--kind: '%s' is not generate, refine or direct", a->kind);
    if (*mode == LEVEL_KIND_GENERATE && a->cond)
        return cli_usage("sample", "%s", "--cond: a generate level takes no cond (--kind refine)");
    if (*mode != LEVEL_KIND_GENERATE && !a->cond)
        return cli_usage("sample", "--kind %s: needs --cond IMG.png", level_kind_name(*mode));
    if (*mode == LEVEL_KIND_GENERATE && a->noise_level)
        return cli_usage("sample", "%s", "--noise-level: only refine and direct levels take one");
    if (*mode != LEVEL_KIND_DIRECT && !(a->given & 1u << SF_STEPS))
        return cli_usage("sample", "%s", "--steps is required (except for --kind direct)");
    return 0;
}

/* The checks between flags, once all are read. */
static int sample_check(const sample_args *a, level_kind *mode)
{
    if (!a->model || !(a->given & 1u << SF_SEED) || !a->out)
        return cli_usage("sample", "%s", "--model, --steps, --seed and --out are required");
    if (!ends_with(a->out, ".png") && !ends_with(a->out, ".safetensors"))
        return cli_usage("sample", "--out: '%s' must end in .png or .safetensors", a->out);
    if ((a->given & 1u << SF_OVERLAP) && !a->tile)
        return cli_usage("sample", "%s", "--overlap: needs --tile");
    if (a->tile && a->overlap >= a->tile)
        return cli_usage("sample", "--overlap: %ld must be below the tile (%ld)", a->overlap,
                         a->tile);
    return sample_kind(a, mode);
}

/* Parse argv into a: 0, -1 after --help, or CLI_EXIT_USAGE after a one-line message. */
static int parse_sample_args(int argc, char **argv, sample_args *a, level_kind *mode)
{
    struct option opts[SAMPLE_NFLAGS + 1];
    for (int i = 0; i < SAMPLE_NFLAGS; i++)
        opts[i] = (struct option){sample_flags[i].name, i != SF_HELP, NULL, i};
    opts[SAMPLE_NFLAGS] = (struct option){0, 0, 0, 0};
    memset(a, 0, sizeof *a);
    a->count = 1;
    a->class_label = -1;
    a->guidance = 1;
    optind = 1;
    opterr = 0;
    int c, rc = 0;
    while (!rc && (c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == SF_HELP) {
            fputs(sample_help, stdout);
            return -1;
        }
        if (c < 0 || c >= SAMPLE_NFLAGS)
            return cli_usage("sample", "unknown or incomplete option '%s'", argv[optind - 1]);
        a->given |= 1u << c;
        rc = sample_set(&sample_flags[c], optarg, a);
    }
    return rc ? rc : sample_check(a, mode);
}

/* The tensor of the --noise file f (opened from path): its only one, else the one named "noise";
 * otherwise an error naming the choices. */
static const st_tensor *noise_tensor(const st_file_t *f, const char *path, strata_err *e)
{
    const st_tensor *t = st_count(f) == 1 ? st_at(f, 0) : st_find(f, "noise");
    if (t) return t;
    char names[400] = "";
    size_t len = 0;
    for (int i = 0; i < st_count(f) && len < sizeof names; i++)
        len += (size_t)snprintf(names + len, sizeof names - len, "%s'%s'", i ? ", " : "",
                                st_at(f, i)->name);
    if (!st_count(f))
        err_set(e, ERR_INPUT, "%s: holds no tensor: expected the noise", path);
    else
        err_set(e, ERR_INPUT, "%s: holds %d tensors (%s): keep one, or name the noise 'noise'",
                path, st_count(f), names);
    return NULL;
}

/* The initial noise of --noise into *init (malloc'd), with the canvas it sets. */
static int sample_read_noise(const char *path, int channels, float **init, level_canvas *c,
                             strata_err *e)
{
    st_file_t *f = NULL;
    int rc = st_open(path, &f, e);
    const st_tensor *t = rc ? NULL : noise_tensor(f, path, e);
    if (!rc && !t) rc = ERR_INPUT;
    if (!rc &&
        (t->ndim != 4 || t->shape[1] != channels || t->dtype == ST_DTYPE_OTHER ||
         st_numel(t) <= 0 || t->shape[0] > 4096 || t->shape[2] > 16384 || t->shape[3] > 16384))
        rc = err_set(e, ERR_INPUT, "%s: tensor '%s': expected a float tensor (N, %d, H, W)", path,
                     t->name, channels);
    if (!rc && !(*init = malloc((size_t)st_numel(t) * sizeof(float))))
        rc = err_set(e, ERR_NOMEM, "out of memory");
    if (!rc) {
        st_to_f32(t, *init);
        c->n = (int)t->shape[0], c->h = (int)t->shape[2], c->w = (int)t->shape[3];
    }
    st_close(f);
    return rc;
}

static void print_progress(void *ctx, int step, int steps)
{
    (void)ctx;
    fprintf(stderr, "\rstep %d/%d", step, steps);
    if (step == steps) fputc('\n', stderr);
}

/* The canvas of the run: count and size from the flags or --noise, cond from --cond. */
static int sample_canvas(const sample_args *a, const unet_info *info, level_canvas *c, float **init,
                         uint8_t **cond, strata_err *e)
{
    int size = a->size ? (int)a->size : info->sample_size, rc = 0;
    *c = (level_canvas){.n = (int)a->count,
                        .h = size,
                        .w = size,
                        .seed = (uint64_t)a->seed,
                        .first_image = (uint32_t)a->image,
                        .class_label = (int)a->class_label,
                        .progress = isatty(2) ? print_progress : NULL};
    if (a->noise) rc = sample_read_noise(a->noise, info->out_channels, init, c, e);
    if (!rc && c->h <= 0)
        rc = err_set(e, ERR_INPUT, "%s: config.json has no sample_size: give --size", a->model);
    if (!rc && a->cond) rc = png_read_rgb(a->cond, cond, &c->cond_w, &c->cond_h, e);
    c->init_noise = *init;
    c->cond = *cond;
    return rc;
}

/* The level's settings from the flags, the scheduler from the model directory. */
static int sample_level(const sample_args *a, level_kind mode, level_params *p, strata_err *e)
{
    *p = (level_params){.kind = mode,
                        .index = (uint32_t)a->level,
                        .steps = (int)a->steps,
                        .noise_level = (int)a->noise_level,
                        .guidance = a->guidance,
                        .tile = (int)a->tile,
                        .overlap = (int)a->overlap};
    return worker_model_scheduler(a->model, a->sampler, a->eta, &p->sched, e);
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

static int run_sample(const sample_args *a, level_kind mode, strata_err *e)
{
    unet_t *m = NULL;
    level_params p;
    level_canvas c;
    float *x = NULL, *init = NULL;
    uint8_t *cond = NULL;
    int rc = unet_load(a->model, &m, e);
    if (!rc) rc = sample_level(a, mode, &p, e);
    const unet_info *info = rc ? NULL : unet_get_info(m);
    if (!rc && mode == LEVEL_KIND_GENERATE && info->in_channels != info->out_channels)
        rc = err_set(e, ERR_INPUT,
                     "%s: the model takes a cond (%d input channels, %d output): "
                     "give --cond IMG.png",
                     a->model, info->in_channels, info->out_channels);
    if (!rc) rc = sample_canvas(a, info, &c, &init, &cond, e);
    size_t numel = rc ? 0 : (size_t)c.n * info->out_channels * c.h * c.w;
    if (!rc && !(x = malloc(numel * sizeof(float)))) rc = err_set(e, ERR_NOMEM, "out of memory");
    if (!rc) rc = level_sample(m, &p, &c, x, e);
    if (!rc) rc = write_sample_output(a, x, c.n, info->out_channels, c.h, c.w, e);
    free(x);
    free(init);
    free(cond);
    unet_free(m);
    return rc;
}

int cmd_sample(int argc, char **argv)
{
    sample_args a;
    level_kind mode = LEVEL_KIND_GENERATE;
    int rc = parse_sample_args(argc, argv, &a, &mode);
    if (rc) return rc < 0 ? CLI_EXIT_OK : rc;
    if (a.threads) kernels_set_threads((int)a.threads);
    strata_err e = {0};
    rc = run_sample(&a, mode, &e);
    return rc ? cli_fail("sample", rc, e.msg) : CLI_EXIT_OK;
}
