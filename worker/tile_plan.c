/* Which rank computes which windows and owns which rows (group.h, rank_share): a pure function
 * of the window grid and the rank count, computed alike on every rank. */
#include "worker/group.h"

/* Windows in contiguous blocks (window k on rank r when r*K/R <= k < (r+1)*K/R), each with the
 * band of rows its windows read. */
static void plan_blocks(const tile_eval *t, int R, rank_share *share)
{
    long long nt = (long long)t->nty * t->ntx;
    for (int r = 0; r < R; r++) {
        rank_share *s = &share[r];
        s->klo = (int)(r * nt / R);
        s->khi = (int)((r + 1) * nt / R);
        s->band_lo = s->band_hi = s->own_lo = s->own_hi = 0;
        if (s->klo == s->khi) continue;
        s->band_lo = t->ty[s->klo / t->ntx];
        s->band_hi = t->ty[(s->khi - 1) / t->ntx] + t->th;
    }
}

/* Rows for the ranks with windows in [first, last], whose blocks all start in the same row of
 * windows: they all read [start, start + th), so they split the part of it below `next` (where
 * the next rank's rows begin) evenly; the last of them also takes the rows from there to `next`,
 * which its later windows read. */
static int plan_split(const tile_eval *t, rank_share *share, int first, int last, int next,
                      strata_err *e)
{
    int start = share[first].band_lo, m = 0, j = 0;
    for (int r = first; r <= last; r++)
        m += share[r].khi > share[r].klo;
    int cap = next < start + t->th ? next : start + t->th;
    if (cap - start < m)
        return err_set(e, ERR_INPUT,
                       "%d ranks start in the row of windows at %d, which has %d rows: use fewer "
                       "ranks",
                       m, start, cap - start);
    for (int r = first; r <= last; r++) {
        if (share[r].khi == share[r].klo) continue;
        share[r].own_lo = start + (int)((long long)(cap - start) * j / m);
        share[r].own_hi = start + (int)((long long)(cap - start) * (j + 1) / m);
        j++;
    }
    share[last].own_hi = next;
    return 0;
}

int tile_plan_shares(const tile_eval *t, int R, rank_share *share, strata_err *e)
{
    if (R < 1) return err_set(e, ERR_INPUT, "a rank group needs at least 1 rank, not %d", R);
    plan_blocks(t, R, share);
    /* walk the ranks with windows in order, grouping those whose bands start together */
    int first = -1;
    for (int r = 0; r <= R; r++) {
        if (r < R && share[r].klo == share[r].khi) continue;
        if (first >= 0 && (r == R || share[r].band_lo != share[first].band_lo)) {
            int last = r - 1;
            while (share[last].klo == share[last].khi)
                last--;
            int rc = plan_split(t, share, first, last, r == R ? t->h : share[r].band_lo, e);
            if (rc) return rc;
            first = -1;
        }
        if (r < R && first < 0) first = r;
    }
    return 0;
}
