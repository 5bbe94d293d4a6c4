/* Seams of tiled levels. On the shipped models: a 128-pixel emoji from l32 -> l128 refined to 512
 * by l512 untiled, in 4 x 4 tiles blended at every step (tile_blend: step), and in the same tiles
 * each sampled to the end and blended once (tile_blend: finished). The seam figure of an image is
 * the mean absolute gradient across the rows and columns where a tile starts or ends over the same
 * across every row and column; a tiled image's ratio is its figure over the untiled image's (the
 * same lines, the same job), so the content's own edges cancel out.
 * Finished tiles are not asserted to score worse: the feather is ~0 at every tile's edge (under
 * 2e-4 of the neighbour's weight at these lines), so any blend of these windows is continuous
 * there, and on this job the windows barely disagree (mean |finished - step| ~0.1 of 255).
 * Measured (2 to 6 steps, seeds 1 and 7, tiles overlapping by 11 to 43) it came out 0 to 0.2% above
 * step's, and on l128 in tiles of 40 up to 1.6% below: noise, not a seam. The test prints both
 * figures. On the fixture models: what tile_blend: finished is (one window: the level itself;
 * tiles: its own image, the same bytes whatever the threads). */
#include "kernels/kernels.h"
#include "tests/test.h"
#include "worker/worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { SIDE = 512, TILE = 160, OVERLAP = 32, STEPS = 2, SEED = 7 };

/* Mean |a - b| over the pixels and channels of neighbouring lines, rows (row = 1) or columns
 * b - 1 and b, of an RGB8 image. */
static double seam_across(const uint8_t *img, int b, int row)
{
    long long sum = 0;
    for (int i = 0; i < SIDE; i++)
        for (int c = 0; c < 3; c++) {
            int p = row ? (b * SIDE + i) * 3 + c : (i * SIDE + b) * 3 + c;
            int q = row ? ((b - 1) * SIDE + i) * 3 + c : (i * SIDE + b - 1) * 3 + c;
            sum += abs(img[p] - img[q]);
        }
    return (double)sum / (3.0 * SIDE);
}

/* The lines where a tile of the grid starts or ends inside the canvas (the same on both axes). */
static int seam_lines(int *lines)
{
    int pos[TILE_MAX_PER_AXIS], count = 0;
    int n = tile_positions(SIDE, TILE, OVERLAP, pos, TILE_MAX_PER_AXIS);
    for (int i = 0; i < n; i++) {
        if (pos[i] > 0) lines[count++] = pos[i];
        if (pos[i] + TILE < SIDE) lines[count++] = pos[i] + TILE;
    }
    return count;
}

/* The seam figure: the mean gradient across the lines (as rows and as columns) over the mean
 * across every line. */
static double seam_figure(const uint8_t *img, const int *lines, int nlines)
{
    double seam = 0, all = 0;
    for (int k = 0; k < nlines; k++)
        seam += seam_across(img, lines[k], 0) + seam_across(img, lines[k], 1);
    for (int b = 1; b < SIDE; b++)
        all += seam_across(img, b, 0) + seam_across(img, b, 1);
    return (seam / (2.0 * nlines)) / (all / (2.0 * (SIDE - 1)));
}

/* A level of the shipped cascade from models/NAME, with its model's scheduler (DDIM). */
static int seam_level(const char *name, level_kind kind, uint32_t index, int side, int noise_level,
                      level_params *p, unet_t **m, strata_err *e)
{
    char dir[64];
    snprintf(dir, sizeof dir, "models/%s", name);
    *p = (level_params){.kind = kind,
                        .index = index,
                        .side = side,
                        .steps = STEPS,
                        .noise_level = noise_level,
                        .guidance = 2.0f};
    int rc = worker_model_scheduler(dir, "", 0.0f, &p->sched, e);
    return rc ? rc : unet_load(dir, m, e);
}

/* l32 (class 1, guided) -> l128: the cond of the l512 runs. */
static int seam_cond(uint8_t *low, strata_err *e)
{
    uint8_t small[32 * 32 * 3];
    level_params p1, p2;
    unet_t *m1 = NULL, *m2 = NULL;
    level_task t1 = {.seed = SEED, .class_label = 1};
    level_task t2 = {.seed = SEED, .cond = small, .cond_side = 32, .class_label = -1};
    int rc = seam_level("l32", LEVEL_KIND_GENERATE, 0, 32, 0, &p1, &m1, e);
    if (!rc) rc = seam_level("l128", LEVEL_KIND_REFINE, 1, 128, 0, &p2, &m2, e);
    if (!rc) rc = level_run(m1, &p1, &t1, small, e);
    if (!rc) rc = level_run(m2, &p2, &t2, low, e);
    unet_free(m1);
    unet_free(m2);
    return rc;
}

/* l512 over low three ways: untiled, tiles blended at every step, tiles blended when finished. */
static int seam_runs(const uint8_t *low, uint8_t *out[3], strata_err *e)
{
    level_params p;
    unet_t *m = NULL;
    level_task t = {.seed = SEED, .cond = low, .cond_side = 128, .class_label = -1};
    int rc = seam_level("l512", LEVEL_KIND_REFINE, 2, SIDE, 50, &p, &m, e);
    for (int k = 0; k < 3 && !rc; k++) {
        p.tile = k ? TILE : 0;
        p.overlap = k ? OVERLAP : 0;
        p.tile_blend = k == 2 ? TILE_BLEND_FINISHED : TILE_BLEND_STEP;
        rc = level_run(m, &p, &t, out[k], e);
    }
    unet_free(m);
    return rc;
}

/* Mean |a - b| over two RGB8 images of SIDE x SIDE. */
static double seam_mean_diff(const uint8_t *a, const uint8_t *b)
{
    long long sum = 0;
    for (int i = 0; i < SIDE * SIDE * 3; i++)
        sum += abs(a[i] - b[i]);
    return (double)sum / (SIDE * SIDE * 3.0);
}

TEST_TIMEOUT(seams_l512_tiles_blended_at_every_step, 300)
{
    static uint8_t low[128 * 128 * 3], untiled[SIDE * SIDE * 3], step[SIDE * SIDE * 3],
        finished[SIDE * SIDE * 3];
    uint8_t *out[3] = {untiled, step, finished};
    strata_err e = {0};
    CHECKF(seam_cond(low, &e) == 0, "%s", e.msg);
    CHECKF(seam_runs(low, out, &e) == 0, "%s", e.msg);
    int lines[2 * TILE_MAX_PER_AXIS], n = seam_lines(lines);
    CHECKF(n == 6, "%d tile lines a side, not 6 (4 tiles a side)", n);
    double base = seam_figure(untiled, lines, n);
    double rs = seam_figure(step, lines, n) / base, rf = seam_figure(finished, lines, n) / base;
    printf("    seams, l512 at %d in 4x4 tiles of %d (overlap %d), %d steps: untiled figure %.4f; "
           "seam ratio step %.4f, finished %.4f; mean |step - untiled| %.3f, "
           "|finished - step| %.3f\n",
           SIDE, TILE, OVERLAP, STEPS, base, rs, rf, seam_mean_diff(step, untiled),
           seam_mean_diff(finished, step));
    CHECKF(rs <= 1.05, "tile_blend step: seam ratio %.4f above 1.05", rs);
    CHECK(memcmp(finished, step, sizeof step) != 0);
}

/* ---------------------------------------------------------------- on the fixture models */

#define SR_MODEL "tests/fixtures/unet/sr/model"

/* The fixture refine level at 32 from a 16-pixel cond, tiled 16 with overlap 8 when tile. */
static int finished_run(unet_t *sr, int tile, tile_blend_mode blend, int threads, uint8_t *out,
                        strata_err *e)
{
    static uint8_t low[16 * 16 * 3];
    for (int i = 0; i < (int)sizeof low; i++)
        low[i] = (uint8_t)(i * 37);
    level_params p = {.kind = LEVEL_KIND_REFINE,
                      .index = 1,
                      .side = 32,
                      .steps = 3,
                      .noise_level = 50,
                      .tile = tile,
                      .overlap = tile ? 8 : 0,
                      .tile_blend = blend};
    sched_config_default(SCHED_DDIM, &p.sched);
    level_task t = {.seed = 42, .image = 3, .cond = low, .cond_side = 16, .class_label = -1};
    kernels_set_threads(threads);
    int rc = level_run(sr, &p, &t, out, e);
    kernels_set_threads(2);
    return rc;
}

TEST(seams_finished_tiles_are_their_own_image)
{
    unet_t *sr;
    strata_err e = {0};
    uint8_t a[32 * 32 * 3], b[32 * 32 * 3];
    CHECKF(unet_load(SR_MODEL, &sr, &e) == 0, "%s", e.msg);
    /* one window is the whole canvas: its own sampler is the level's, its noise the canvas's */
    int rc = finished_run(sr, 0, TILE_BLEND_STEP, 2, a, &e);
    if (!rc) rc = finished_run(sr, 0, TILE_BLEND_FINISHED, 2, b, &e);
    CHECKF(rc == 0, "%s", e.msg);
    CHECK(memcmp(a, b, sizeof a) == 0);
    /* in tiles, each window's own trajectory is another image, the same whatever the threads */
    rc = finished_run(sr, 16, TILE_BLEND_STEP, 2, a, &e);
    if (!rc) rc = finished_run(sr, 16, TILE_BLEND_FINISHED, 2, b, &e);
    CHECKF(rc == 0, "%s", e.msg);
    CHECK(memcmp(a, b, sizeof a) != 0);
    rc = finished_run(sr, 16, TILE_BLEND_FINISHED, 1, a, &e);
    unet_free(sr);
    CHECKF(rc == 0, "%s", e.msg);
    CHECK(memcmp(a, b, sizeof a) == 0);
}

/* A rank group steps the sampler on the whole canvas only: its worker refuses tile_blend:
 * finished at WELCOME, and the render ends with 2 naming the key. */
TEST_TIMEOUT(seams_rank_group_refuses_finished_tiles, 60)
{
    const char *which[] = {"/bin/sh", "-c", "command -v mpirun", NULL};
    if (test_run_program(which, NULL, 0, NULL, 0) != 0) {
        fprintf(stderr, "  skipped: no mpirun on this machine (tools/deps.sh installs it)\n");
        return;
    }
    char pipe[4096], err[8192];
    const char *dir = test_tmpdir();
    CHECK(test_write_pipeline(dir,
                              "name: finished\nlevels:\n"
                              "  - {name: l16, kind: generate, model: @/tests/fixtures/unet/small3/"
                              "model, side: 16, steps: 2}\n"
                              "  - {name: l64, kind: refine, model: @/" SR_MODEL ", side: 64,"
                              " steps: 2, tile: 32, overlap: 8, tile_blend: finished}\n",
                              pipe, sizeof pipe) == 0);
    const char *args[] = {"render", "--pipeline", pipe, "--count", "1",     "--resolution",
                          "64",     "--out",      dir,  "--ranks", "l64=2", NULL};
    int rc = test_run_strata(args, err, sizeof err, NULL, 0);
    CHECKF(rc == 2, "render exit %d (expected 2): %s", rc, err);
    CHECKF(strstr(err, "'tile_blend': a rank group runs step only"), "%s", err);
}
