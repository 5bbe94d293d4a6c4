/* The level runner: the tile grid, bilinear conditioning against torch, and determinism of
 * generate and tiled refine levels across threads. */
#include "kernels/kernels.h"
#include "tests/test.h"
#include "worker/worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GEN_MODEL "tests/fixtures/unet/small3/model"
#define SR_MODEL "tests/fixtures/unet/sr/model"

TEST(level_tile_positions_cover_evenly)
{
    int pos[64];
    int n = tile_positions(100, 32, 8, pos, 64);
    CHECKF(n == 4, "n = %d", n);
    CHECK(pos[0] == 0 && pos[n - 1] == 100 - 32);
    for (int i = 1; i < n; i++) {
        CHECKF(pos[i] - pos[i - 1] <= 32 - 8, "gap %d at %d: overlap below 8", pos[i] - pos[i - 1],
               i);
        CHECK(pos[i] > pos[i - 1]);
    }
    CHECK(tile_positions(32, 32, 8, pos, 64) == 1 && pos[0] == 0);
    CHECK(tile_positions(32, 0, 0, pos, 64) == 1);
    /* the grid is a function of (side, tile, overlap) only */
    int again[64];
    CHECK(tile_positions(100, 32, 8, again, 64) == n && !memcmp(pos, again, sizeof(int) * 4));
}

TEST(level_bilinear_matches_torch)
{
    strata_err e;
    st_file_t *f;
    CHECK(st_open("tests/fixtures/resize/bilinear.safetensors", &f, &e) == 0);
    const st_tensor *src = st_find(f, "src");
    CHECK(src);
    float s[3 * 7 * 5], got[3 * 32 * 32], want[3 * 32 * 32];
    st_to_f32(src, s);
    int sizes[][2] = {{14, 10}, {28, 20}, {32, 32}, {7, 5}};
    for (int i = 0; i < 4; i++) {
        char name[32];
        snprintf(name, sizeof name, "dst_%dx%d", sizes[i][0], sizes[i][1]);
        const st_tensor *d = st_find(f, name);
        CHECK(d);
        st_to_f32(d, want);
        image_resize_bilinear(s, 3, 7, 5, got, sizes[i][0], sizes[i][1]);
        float diff, ref;
        test_max_abs_diff(got, want, (size_t)3 * sizes[i][0] * sizes[i][1], &diff, &ref);
        CHECKF(diff <= 1e-6f, "%s: max abs error %g", name, diff);
    }
    st_close(f);
}

static void level_defaults(level_params *p, level_kind kind, int side, int steps)
{
    memset(p, 0, sizeof *p);
    p->kind = kind;
    p->side = side;
    p->steps = steps;
    sched_config_default(SCHED_DDIM, &p->sched);
}

/* generate 16 -> refine 32 (tiled 16 with overlap 8 when tiled). */
static int run_two_levels(int threads, int tiled, float guidance, uint8_t *low, uint8_t *high,
                          strata_err *e)
{
    unet_t *gen = NULL, *sr = NULL;
    int rc = unet_load(GEN_MODEL, &gen, e);
    if (!rc) rc = unet_load(SR_MODEL, &sr, e);
    kernels_set_threads(threads);
    level_params p1, p2;
    level_defaults(&p1, LEVEL_KIND_GENERATE, 16, 3);
    p1.guidance = guidance;
    level_defaults(&p2, LEVEL_KIND_REFINE, 32, 3);
    p2.index = 1;
    p2.noise_level = 50;
    p2.tile = tiled ? 16 : 0;
    p2.overlap = tiled ? 8 : 0;
    level_task t1 = {.seed = 42, .image = 3, .class_label = 2};
    level_task t2 = {.seed = 42, .image = 3, .cond = low, .cond_side = 16, .class_label = -1};
    if (!rc) rc = level_run(gen, &p1, &t1, low, e);
    if (!rc) rc = level_run(sr, &p2, &t2, high, e);
    unet_free(gen);
    unet_free(sr);
    kernels_set_threads(2);
    return rc;
}

TEST(level_runs_are_thread_invariant)
{
    uint8_t low1[16 * 16 * 3], high1[32 * 32 * 3], low2[16 * 16 * 3], high2[32 * 32 * 3];
    strata_err e = {0};
    for (int tiled = 0; tiled < 2; tiled++) {
        CHECKF(run_two_levels(1, tiled, 3.0f, low1, high1, &e) == 0, "%s", e.msg);
        CHECKF(run_two_levels(2, tiled, 3.0f, low2, high2, &e) == 0, "%s", e.msg);
        CHECK(memcmp(low1, low2, sizeof low1) == 0);
        CHECKF(memcmp(high1, high2, sizeof high1) == 0, "tiled=%d: 1 and 2 threads differ", tiled);
    }
}

TEST(level_guidance_and_tiling_change_the_image)
{
    uint8_t low1[16 * 16 * 3], high1[32 * 32 * 3], low2[16 * 16 * 3], high2[32 * 32 * 3];
    strata_err e = {0};
    CHECKF(run_two_levels(2, 0, 1.0f, low1, high1, &e) == 0, "%s", e.msg);
    CHECKF(run_two_levels(2, 1, 3.0f, low2, high2, &e) == 0, "%s", e.msg);
    CHECK(memcmp(low1, low2, sizeof low1) != 0);
    CHECK(memcmp(high1, high2, sizeof high1) != 0);
}

TEST(level_rejects_mismatched_models)
{
    unet_t *gen;
    strata_err e = {0};
    uint8_t out[32 * 32 * 3];
    CHECK(unet_load(GEN_MODEL, &gen, &e) == 0);
    level_params p;
    level_defaults(&p, LEVEL_KIND_REFINE, 16, 2);
    level_task t = {.seed = 1, .class_label = -1};
    CHECK(level_run(gen, &p, &t, out, &e) == ERR_INPUT);
    CHECKF(strstr(e.msg, "cond"), "%s", e.msg);
    level_defaults(&p, LEVEL_KIND_GENERATE, 10, 2); /* not a multiple of 4 */
    CHECK(level_run(gen, &p, &t, out, &e) == ERR_INPUT);
    unet_free(gen);
}

/* A canvas of n images is n level runs: image k's noise keys use first_image + k, and the
 * batch (guided: n conditional images, then n null-class ones) changes no pixel. */
TEST(level_sample_batch_equals_single_runs)
{
    unet_t *gen;
    strata_err e = {0};
    CHECK(unet_load(GEN_MODEL, &gen, &e) == 0);
    level_params p;
    level_defaults(&p, LEVEL_KIND_GENERATE, 16, 3);
    p.guidance = 3.0f;
    p.index = 2;
    float x[2 * 3 * 16 * 16];
    uint8_t batch[16 * 16 * 3], single[16 * 16 * 3];
    level_canvas c = {.n = 2, .h = 16, .w = 16, .seed = 42, .first_image = 3, .class_label = 2};
    int rc = level_sample(gen, &p, &c, x, &e);
    for (int k = 0; k < 2 && !rc; k++) {
        level_task t = {.seed = 42, .image = 3 + (uint32_t)k, .class_label = 2};
        rc = level_run(gen, &p, &t, single, &e);
        image_from_tensor(x + k * 3 * 16 * 16, 16, 16, batch);
        if (!rc && memcmp(batch, single, sizeof batch) != 0) rc = -1 - k;
    }
    unet_free(gen);
    CHECKF(rc == 0, "rc %d: %s", rc, rc > 0 ? e.msg : "an image of the batch differs");
}

/* A refine batch noises each image's cond once, with its own key: image 1 of a batch equals its
 * own level_run (it once got image 0's noised cond noised again). */
TEST(level_sample_refine_batch_equals_single_runs)
{
    unet_t *sr;
    strata_err e = {0};
    CHECK(unet_load(SR_MODEL, &sr, &e) == 0);
    level_params p;
    level_defaults(&p, LEVEL_KIND_REFINE, 32, 2);
    p.index = 1;
    p.noise_level = 50;
    static uint8_t low[16 * 16 * 3];
    for (int i = 0; i < (int)sizeof low; i++)
        low[i] = (uint8_t)(i * 37);
    static float x[2 * 3 * 32 * 32];
    uint8_t batch[32 * 32 * 3], single[32 * 32 * 3];
    level_canvas c = {.n = 2,
                      .h = 32,
                      .w = 32,
                      .seed = 42,
                      .first_image = 3,
                      .class_label = -1,
                      .cond = low,
                      .cond_h = 16,
                      .cond_w = 16};
    int rc = level_sample(sr, &p, &c, x, &e);
    for (int k = 0; k < 2 && !rc; k++) {
        level_task t = {
            .seed = 42, .image = 3 + (uint32_t)k, .cond = low, .cond_side = 16, .class_label = -1};
        rc = level_run(sr, &p, &t, single, &e);
        image_from_tensor(x + k * 3 * 32 * 32, 32, 32, batch);
        if (!rc && memcmp(batch, single, sizeof batch) != 0) rc = -1 - k;
    }
    unet_free(sr);
    CHECKF(rc == 0, "rc %d: %s", rc, rc > 0 ? e.msg : "an image of the batch differs");
}
