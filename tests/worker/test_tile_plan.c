/* The rank group's plan (worker/tile_plan.c): for many grids and rank counts, windows in
 * contiguous blocks, every row owned by exactly one rank, and owned rows inside the owner's band
 * (the rows its windows read), so an owner always holds the x it steps. */
#include "tests/test.h"
#include "worker/group.h"

#include <stdlib.h>
#include <string.h>

/* A grid of windows of side `tile` over a square of `side` (what tile_eval_grid sets). */
static tile_eval plan_grid(int side, int tile, int overlap)
{
    tile_eval t = {.n = 1, .h = side, .w = side, .tile = tile, .overlap = overlap};
    t.th = t.tw = tile < side ? tile : side;
    t.nty = tile_positions(side, t.th, overlap, t.ty, TILE_MAX_PER_AXIS);
    t.ntx = tile_positions(side, t.tw, overlap, t.tx, TILE_MAX_PER_AXIS);
    return t;
}

/* The properties of one plan; returns a description of the first broken one, or NULL. */
static const char *plan_broken(const tile_eval *t, int R, const rank_share *s)
{
    int next_k = 0, next_row = 0;
    for (int r = 0; r < R; r++) {
        if (s[r].klo != next_k || s[r].khi < s[r].klo) return "blocks not contiguous";
        next_k = s[r].khi;
        if (s[r].klo == s[r].khi) {
            if (s[r].own_hi != s[r].own_lo) return "a rank without windows owns rows";
            continue;
        }
        if (s[r].own_lo != next_row) return "owned rows are not a partition in rank order";
        if (s[r].own_hi <= s[r].own_lo) return "a rank with windows owns no row";
        next_row = s[r].own_hi;
        if (s[r].own_lo < s[r].band_lo || s[r].own_hi > s[r].band_hi) return "owns outside band";
        for (int k = s[r].klo; k < s[r].khi; k++) {
            int y0 = t->ty[k / t->ntx];
            if (y0 < s[r].band_lo || y0 + t->th > s[r].band_hi) return "a window outside band";
        }
    }
    if (next_k != t->nty * t->ntx) return "not every window has a rank";
    return next_row == t->h ? NULL : "not every row is owned";
}

TEST(tile_plan_owns_every_row_once_at_any_rank_count)
{
    const int grids[][3] = {{1024, 64, 16}, {2048, 704, 32}, {4096, 1056, 32}, {512, 128, 32},
                            {96, 32, 8},    {64, 64, 0},     {200, 48, 16}};
    int plans = 0;
    for (size_t g = 0; g < sizeof grids / sizeof grids[0]; g++) {
        tile_eval t = plan_grid(grids[g][0], grids[g][1], grids[g][2]);
        int nt = t.nty * t.ntx, maxr = nt + 3 < 40 ? nt + 3 : 40;
        for (int R = 1; R <= maxr; R++) {
            rank_share s[40];
            strata_err e = {0};
            CHECKF(tile_plan_shares(&t, R, s, &e) == 0, "side %d R %d: %s", t.h, R, e.msg);
            const char *why = plan_broken(&t, R, s);
            CHECKF(!why, "side %d tile %d R %d: %s", t.h, t.th, R, why);
            plans++;
        }
    }
    CHECK(plans > 100);
}

TEST(tile_plan_refuses_more_ranks_than_a_window_row_has_rows)
{
    /* 12 windows in one row of 4 rows: 12 ranks would share 4 rows */
    tile_eval t = plan_grid(4, 0, 0);
    t.h = 4, t.w = 48, t.th = 4, t.tw = 4, t.ntx = 12;
    for (int j = 0; j < 12; j++)
        t.tx[j] = 4 * j;
    rank_share s[12];
    strata_err e = {0};
    CHECK(tile_plan_shares(&t, 4, s, &e) == 0 && !plan_broken(&t, 4, s));
    CHECK(tile_plan_shares(&t, 12, s, &e) == ERR_INPUT);
    CHECKF(strstr(e.msg, "fewer ranks"), "%s", e.msg);
}
