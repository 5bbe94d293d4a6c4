/* The arena: a recorded pass planned into a block no larger than the bytes alive at once, the
 * next pass of the same sequence placed inside it without overlaps, a pass of another sequence
 * served (and then planned) all the same, and the second UNet forward of a shape faulting no
 * page in. */
#include "kernels/arena.h"
#include "kernels/kernels.h"
#include "tests/test.h"

#include <stdlib.h>
#include <sys/resource.h>

/* One step of a pass: allocate slot's buffer of floats, or (floats 0) free it. */
typedef struct step {
    int slot;
    size_t floats;
} step;

/* Fills buffer slot with its own pattern. */
static void fill_slot(float *p, size_t n, int slot)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (float)(slot * 1000 + (int)(i % 997));
}

static int slot_intact(const float *p, size_t n, int slot)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (float)(slot * 1000 + (int)(i % 997))) return 0;
    return 1;
}

/* Runs the steps as one pass; every live buffer keeps its pattern to its free (no two live
 * buffers overlap). *in_block: how many buffers lay inside the block. -1 on a broken buffer. */
static int run_pass(arena *a, const step *steps, int count, int *in_block)
{
    float *buf[8] = {0};
    size_t len[8] = {0};
    *in_block = 0;
    for (int i = 0; i < count; i++) {
        int s = steps[i].slot;
        if (steps[i].floats) {
            buf[s] = arena_floats(a, len[s] = steps[i].floats);
            if (!buf[s]) return -1;
            if ((char *)buf[s] >= a->base && (char *)(buf[s] + len[s]) <= a->base + a->cap)
                (*in_block)++;
            fill_slot(buf[s], len[s], s);
        } else {
            if (!slot_intact(buf[s], len[s], s)) return -1;
            arena_free(a, buf[s]);
            buf[s] = NULL;
        }
    }
    for (int s = 0; s < 8; s++) /* still live at the end: freed by arena_reset */
        if (buf[s] && !slot_intact(buf[s], len[s], s)) return -1;
    return arena_reset(a);
}

/* 448, 832, 448 and 1216 bytes; at most C and D (1664 bytes) are alive at once. */
static const step pass_a[] = {{0, 100}, {1, 200}, {0, 0}, {2, 100}, {1, 0}, {3, 300}, {2, 0}};

TEST(arena_plans_a_pass_into_the_bytes_alive_at_once)
{
    arena a;
    arena_init(&a);
    int in_block, count = sizeof pass_a / sizeof pass_a[0];
    CHECK(run_pass(&a, pass_a, count, &in_block) == 0);
    CHECK(in_block == 0); /* the first pass has no block yet: all from the heap */
    CHECKF(a.cap == 448 + 1216, "block of %zu bytes, want %d", a.cap, 448 + 1216);
    for (int pass = 0; pass < 3; pass++) {
        CHECK(run_pass(&a, pass_a, count, &in_block) == 0);
        CHECKF(in_block == 4, "pass %d: %d of 4 buffers in the block", pass, in_block);
    }
    CHECK(a.cap == 448 + 1216);
    arena_fini(&a);
}

TEST(arena_pass_of_another_sequence_runs_and_is_planned_in_turn)
{
    static const step pass_b[] = {{0, 100}, {1, 500}, {2, 100}, {0, 0}, {3, 100}, {1, 0}};
    arena a;
    arena_init(&a);
    int in_block, na = sizeof pass_a / sizeof pass_a[0], nb = sizeof pass_b / sizeof pass_b[0];
    CHECK(run_pass(&a, pass_a, na, &in_block) == 0);
    CHECK(run_pass(&a, pass_b, nb, &in_block) == 0);
    CHECKF(in_block == 1, "%d buffers in the block: only the first follows the plan", in_block);
    CHECK(run_pass(&a, pass_b, nb, &in_block) == 0);
    CHECK(in_block == 4);
    CHECK(run_pass(&a, pass_a, na, &in_block) == 0); /* the block never shrinks */
    CHECK(run_pass(&a, pass_a, na, &in_block) == 0);
    CHECK(in_block == 4);
    arena_fini(&a);
}

TEST(arena_release_frees_only_what_came_after_the_mark)
{
    arena a;
    arena_init(&a);
    float *keep = arena_floats(&a, 10);
    size_t mark = arena_mark(&a);
    CHECK(keep && arena_floats(&a, 20) && arena_floats(&a, 30));
    arena_release(&a, mark);
    CHECK(a.nlive == 1 && a.live[0].ptr == keep);
    arena_free(&a, keep);
    arena_free(&a, NULL);
    CHECK(a.nlive == 0);
    arena_fini(&a);
}

static long minor_faults(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

/* The arena of the first forward is reused by the second: its pages are not faulted in
 * again. */
TEST(unet_second_forward_of_a_shape_faults_no_page_in)
{
    enum { N = 1, C = 6, S = 128 };
    unet_t *m = NULL;
    strata_err e = {0};
    CHECKF(unet_load("models/l512", &m, &e) == 0, "%s", e.msg);
    float *x = malloc(sizeof(float) * N * C * S * S), *y = malloc(sizeof(float) * N * 3 * S * S);
    float t[N] = {500}, labels[N] = {0};
    CHECK(x && y);
    for (size_t i = 0; i < (size_t)N * C * S * S; i++)
        x[i] = (float)(i % 13) / 13.0f - 0.5f;
    const float *lab = unet_get_info(m)->needs_class_labels ? labels : NULL;
    long faults[2];
    for (int pass = 0; pass < 2; pass++) {
        long before = minor_faults();
        CHECKF(unet_forward(m, x, N, S, S, t, lab, y, &e) == 0, "%s", e.msg);
        faults[pass] = minor_faults() - before;
    }
    /* a few dozen come and go with the threads; the arena alone is some 3400 pages (14 MB) */
    CHECKF(faults[0] > 3000 && faults[1] < 1000,
           "page faults: %ld in the first forward, %ld in the second", faults[0], faults[1]);
    free(x), free(y);
    unet_free(m);
}
