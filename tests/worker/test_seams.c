/* Seams of tiled levels, on the shipped models: a 128-pixel emoji from l32 -> l128 refined to
 * 512 by l512 untiled, in 4 x 4 tiles blended at every step (tile_blend: step), and in the same
 * tiles each sampled to the end and blended once (tile_blend: finished). The seam figure of an
 * image is the mean absolute gradient across the rows and columns where a tile starts or ends
 * over the same across every row and column; a tiled image's ratio is its figure over the untiled
 * image's (the same lines, the same job), so the content's own edges cancel out. */
#include "kernels/kernels.h"
#include "tests/test.h"
#include "worker/worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { SIDE = 512, TILE = 160, OVERLAP = 32, STEPS = 6 };

/* Mean |a - b| over the pixels and channels of neighbouring lines: rows (row = 1) or columns
 * b - 1 and b of an RGB8 image. */
static double seam_across(const uint8_t *img, int side, int b, int row)
{
    long long sum = 0;
    for (int i = 0; i < side; i++)
        for (int c = 0; c < 3; c++) {
            int p = row ? (b * side + i) * 3 + c : (i * side + b) * 3 + c;
            int q = row ? ((b - 1) * side + i) * 3 + c : (i * side + b - 1) * 3 + c;
            sum += abs(img[p] - img[q]);
        }
    return (double)sum / (3.0 * side);
}

/* The tile lines of the grid (where a tile starts or ends inside the canvas) into lines. */
static int seam_lines(int *lines)
{
    int pos[TILE_MAX_PER_AXIS], n = tile_positions(SIDE, TILE, OVERLAP, pos, TILE_MAX_PER_AXIS),
                                count = 0;
    for (int i = 0; i < n; i++) {
        if (pos[i] > 0) lines[count++] = pos[i];
        if (pos[i] + TILE < SIDE) lines[count++] = pos[i] + TILE;
    }
    return count;
}

/* The seam figure: mean gradient across the tile lines (rows and columns) over the mean across
 * every line. */
static double seam_figure(const uint8_t *img, const int *lines, int nlines)
{
    double seam = 0, all = 0;
    for (int k = 0; k < nlines; k++)
        seam += seam_across(img, SIDE, lines[k], 0) + seam_across(img, SIDE, lines[k], 1);
    for (int b = 1; b < SIDE; b++)
        all += seam_across(img, SIDE, b, 0) + seam_across(img, SIDE, b, 1);
    return (seam / (2.0 * nlines)) / (all / (2.0 * (SIDE - 1)));
}

/* One level of the shipped cascade from models/NAME with the model's scheduler (DDIM). */
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
static int seam_cond(uint64_t seed, uint8_t *low, strata_err *e)
{
    uint8_t small[32 * 32 * 3];
    level_params p1, p2;
    unet_t *m1 = NULL, *m2 = NULL;
    level_task t1 = {.seed = seed, .class_label = 1};
    level_task t2 = {.seed = seed, .cond = small, .cond_side = 32, .class_label = -1};
    int rc = seam_level("l32", LEVEL_KIND_GENERATE, 0, 32, 0, &p1, &m1, e);
    if (!rc) rc = seam_level("l128", LEVEL_KIND_REFINE, 1, 128, 0, &p2, &m2, e);
    if (!rc) rc = level_run(m1, &p1, &t1, small, e);
    if (!rc) rc = level_run(m2, &p2, &t2, low, e);
    unet_free(m1);
    unet_free(m2);
    return rc;
}

/* l512 over low three ways: untiled, tiled blended at every step, tiled blended when finished. */
static int seam_runs(uint64_t seed, const uint8_t *low, uint8_t *out[3], strata_err *e)
{
    level_params p;
    unet_t *m = NULL;
    level_task t = {.seed = seed, .cond = low, .cond_side = 128, .class_label = -1};
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

TEST_TIMEOUT(seams_step_blend_leaves_none_finished_tiles_do, 300)
{
    static uint8_t low[128 * 128 * 3], untiled[SIDE * SIDE * 3], step[SIDE * SIDE * 3],
        finished[SIDE * SIDE * 3];
    uint8_t *out[3] = {untiled, step, finished};
    strata_err e = {0};
    uint64_t seed = 7;
    CHECKF(seam_cond(seed, low, &e) == 0, "%s", e.msg);
    CHECKF(seam_runs(seed, low, out, &e) == 0, "%s", e.msg);
    int lines[2 * TILE_MAX_PER_AXIS], n = seam_lines(lines);
    CHECKF(n == 6, "%d tile lines a side, not 6 (4 tiles a side)", n);
    double base = seam_figure(untiled, lines, n);
    double rs = seam_figure(step, lines, n) / base, rf = seam_figure(finished, lines, n) / base;
    printf("    seams (l512, %d steps, 4x4 tiles of %d, overlap %d): untiled figure %.4f; "
           "ratio step %.4f, finished %.4f\n",
           STEPS, TILE, OVERLAP, base, rs, rf);
    CHECKF(rs <= 1.05, "tile_blend step: seam ratio %.4f above 1.05", rs);
    CHECKF(rf > rs, "tile_blend finished: seam ratio %.4f not above step's %.4f", rf, rs);
}
