/* The farm and `strata sample` run the same loop: one image of each level kind (generate,
 * guided generate, refine, tiled refine, direct) made by `strata render` with the tiny fixture
 * models is made again, level by level, by `strata sample` from the same seed, image index,
 * level index and cond, and the pixels must be equal. */
#include "kernels/kernels.h"
#include "tests/test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GEN_MODEL "tests/fixtures/unet/small3/model"
#define SR_MODEL "tests/fixtures/unet/sr/model"

/* Every level kind, tiny models (absolute paths: the file is written elsewhere). */
static const char pipeline_text[] =
    "name: kinds\nlevels:\n"
    "  - {name: l16, kind: generate, model: @/" GEN_MODEL ", side: 16, steps: 3,"
    " guidance: 3.0}\n"
    "  - {name: l32, kind: refine, model: @/" SR_MODEL ", side: 32, steps: 2,"
    " noise_level: 50, sampler: ddpm}\n"
    "  - {name: l64, kind: refine, model: @/" SR_MODEL ", side: 64, steps: 2,"
    " noise_level: 20, tile: 32, overlap: 8}\n"
    "  - {name: l128, kind: direct, model: @/" SR_MODEL ", side: 128, steps: 1,"
    " noise_level: 10}\n";

/* 1 when the two PNGs decode to the same pixels, 0 when not, -1 when one cannot be read. */
static int same_pixels(const char *a, const char *b)
{
    uint8_t *pa = NULL, *pb = NULL;
    int wa, ha, wb, hb, same = -1;
    strata_err e = {0};
    if (png_read_rgb(a, &pa, &wa, &ha, &e) == 0 && png_read_rgb(b, &pb, &wb, &hb, &e) == 0)
        same = wa == wb && ha == hb && memcmp(pa, pb, (size_t)wa * ha * 3) == 0;
    else
        fprintf(stderr, "  %s\n", e.msg);
    free(pa);
    free(pb);
    return same;
}

/* `strata sample` of one level of image 1 (seed 6) into out; extra holds the level's flags. */
static int sample_level(const char *model, const char *level, const char *size,
                        const char *const *extra, const char *out, char *err, size_t errlen)
{
    const char *args[40] = {"sample",  "--model", model,    "--seed", "6",     "--image", "1",
                            "--level", level,     "--size", size,     "--out", out};
    int n = 13;
    while (*extra && n < 38)
        args[n++] = *extra++;
    args[n] = NULL;
    return test_run_strata(args, err, errlen, NULL, 0);
}

TEST(sample_reproduces_every_level_kind_of_the_farm)
{
    char pipe[4096], err[4096], farm[4096], out[4096], cond[4096], a[4096], b[4096];
    const char *dir = test_tmpdir();
    CHECK(test_write_pipeline(dir, pipeline_text, pipe, sizeof pipe) == 0);
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    /* a: guided generate, refine, tiled refine, direct; b: the unguided generate alone */
    const char *guided[] = {"render", "--pipeline",
                            pipe,     "--count",
                            "2",      "--seed",
                            "5",      "--class-label",
                            "2",      "--resolution",
                            "128",    "--keep-levels",
                            "--out",  a,
                            "--name", "j",
                            NULL};
    const char *plain[] = {
        "render",       "--pipeline", pipe,    "--count", "2",      "--seed", "5",
        "--resolution", "16",         "--out", b,         "--name", "j",      NULL};
    int rc = test_run_strata(guided, err, sizeof err, NULL, 0);
    CHECKF(rc == 0, "render exit %d: %s", rc, err);
    rc = test_run_strata(plain, err, sizeof err, NULL, 0);
    CHECKF(rc == 0, "render exit %d: %s", rc, err);

    static const struct {
        const char *farm, *level, *size, *model, *cond;
        const char *extra[12];
    } cases[] = {
        {"b/j/000001.png", "0", "16", GEN_MODEL, NULL, {"--steps", "3", "--guidance", "3"}},
        {"a/j/000001.l16.png",
         "0",
         "16",
         GEN_MODEL,
         NULL,
         {"--steps", "3", "--guidance", "3", "--class-label", "2"}},
        {"a/j/000001.l32.png",
         "1",
         "32",
         SR_MODEL,
         "a/j/000001.l16.png",
         {"--steps", "2", "--noise-level", "50", "--sampler", "ddpm", "--class-label", "2"}},
        {"a/j/000001.l64.png",
         "2",
         "64",
         SR_MODEL,
         "a/j/000001.l32.png",
         {"--steps", "2", "--noise-level", "20", "--tile", "32", "--overlap", "8"}},
        {"a/j/000001.l128.png",
         "3",
         "128",
         SR_MODEL,
         "a/j/000001.l64.png",
         {"--kind", "direct", "--noise-level", "10"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *extra[16] = {0};
        int n = 0;
        if (cases[i].cond) {
            snprintf(cond, sizeof cond, "%s/%s", dir, cases[i].cond);
            extra[n++] = "--cond", extra[n++] = cond;
        }
        for (int k = 0; cases[i].extra[k]; k++)
            extra[n++] = cases[i].extra[k];
        snprintf(out, sizeof out, "%s/sample%zu.png", dir, i);
        snprintf(farm, sizeof farm, "%s/%s", dir, cases[i].farm);
        rc = sample_level(cases[i].model, cases[i].level, cases[i].size, extra, out, err,
                          sizeof err);
        CHECKF(rc == 0, "%s: sample exit %d: %s", cases[i].farm, rc, err);
        CHECKF(same_pixels(farm, out) == 1, "%s: strata sample's image differs", cases[i].farm);
    }
    /* the comparison has teeth: guidance changed the generate level, and another level index
     * draws other noise */
    snprintf(farm, sizeof farm, "%s/b/j/000001.png", dir);
    snprintf(out, sizeof out, "%s/a/j/000001.l16.png", dir);
    CHECK(same_pixels(farm, out) == 0);
    const char *wrong[] = {"--steps", "3", "--guidance", "3", NULL};
    snprintf(out, sizeof out, "%s/wrong.png", dir);
    snprintf(farm, sizeof farm, "%s/b/j/000001.png", dir);
    CHECK(sample_level(GEN_MODEL, "1", "16", wrong, out, err, sizeof err) == 0);
    CHECK(same_pixels(farm, out) == 0);
}
