/* A rank group's level run around the exchange (group.h, tile_group): the shares and buffers,
 * the image gathered on rank 0 from the owners' rows, and the stats a benchmark reads. */
#include "worker/group.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* Rows [lo, hi) of window k's rows [y0, y0 + th) that fall in [a, b); 0 when none. */
static int rows_in(const tile_eval *t, int k, int a, int b, int *lo, int *hi)
{
    int y0 = t->ty[k / t->ntx];
    *lo = y0 > a ? y0 : a;
    *hi = y0 + t->th < b ? y0 + t->th : b;
    return *hi > *lo;
}

/* Where each window's values wait (cumulative offsets): other ranks' windows on the owned rows
 * in the inbox, own windows on the owned rows above early_hi in the stash. */
static void group_layout(tile_group *g)
{
    const tile_eval *t = g->te;
    const rank_share *me = &g->share[g->r];
    size_t in = 0, st = 0, plane = (size_t)t->n * t->oc * t->tw;
    int lo, hi;
    g->early_hi = me->klo > 0 ? t->ty[(me->klo - 1) / t->ntx] + t->th : 0;
    for (int k = 0; k < t->nty * t->ntx; k++) {
        int mine = k >= me->klo && k < me->khi;
        g->inbox_at[k] = in;
        if (mine) g->stash_at[k - me->klo] = st;
        if (!mine && rows_in(t, k, me->own_lo, me->own_hi, &lo, &hi))
            in += plane * (size_t)(hi - lo);
        int top = me->own_hi < g->early_hi ? me->own_hi : g->early_hi;
        if (mine && rows_in(t, k, me->own_lo, top, &lo, &hi)) st += plane * (size_t)(hi - lo);
    }
    g->inbox_at[t->nty * t->ntx] = in;
    g->stash_at[me->khi - me->klo] = st;
}

int tile_group_init(tile_group *g, tile_eval *te, strata_err *e)
{
    *g = (tile_group){.te = te, .R = worker_group_size(), .r = worker_group_rank()};
    int nt = te->nty * te->ntx;
    g->share = malloc((size_t)g->R * sizeof *g->share);
    g->inbox_at = malloc((size_t)(nt + 1) * sizeof *g->inbox_at);
    g->stash_at = malloc((size_t)(nt + 1) * sizeof *g->stash_at);
    if (!g->share || !g->inbox_at || !g->stash_at) return err_set(e, ERR_NOMEM, "out of memory");
    int rc = tile_plan_shares(te, g->R, g->share, e);
    if (rc) return rc;
    const rank_share *me = &g->share[g->r];
    group_layout(g);
    size_t plane = (size_t)te->n * te->oc * te->w;
    g->band = malloc((plane * (me->band_hi - me->band_lo) + 1) * sizeof(float));
    g->stash = malloc((g->stash_at[me->khi - me->klo] + 1) * sizeof(float));
    g->inbox = malloc((g->inbox_at[nt] + 1) * sizeof(float));
    if (!g->band || !g->stash || !g->inbox)
        return err_set(e, ERR_NOMEM, "out of memory for rows %d to %d of a %dx%d canvas",
                       me->band_lo, me->band_hi, te->h, te->w);
    te->y_lo = me->band_lo;
    te->rows = me->band_hi - me->band_lo;
    return tile_exchange_new(g, e);
}

int tile_group_gather(tile_group *g, const float *x, uint8_t *out, strata_err *e)
{
    const tile_eval *t = g->te;
    int R = g->R, counts[R], displs[R];
    for (int q = 0; q < R; q++) {
        displs[q] = g->share[q].own_lo * t->w * 3;
        counts[q] = (g->share[q].own_hi - g->share[q].own_lo) * t->w * 3;
    }
    uint8_t *mine = malloc((size_t)counts[g->r] + 1);
    if (!mine) return err_set(e, ERR_NOMEM, "out of memory");
    /* the conversion is per pixel: the owners' rows make the same bytes as the whole canvas */
    if (counts[g->r]) image_from_tensor(x, counts[g->r] / (t->w * 3), t->w, mine);
    MPI_Request req;
    int rc = MPI_Igatherv(mine, counts[g->r], MPI_BYTE, out, counts, displs, MPI_BYTE, 0,
                          MPI_COMM_WORLD, &req);
    if (!rc) rc = group_wait_all(&req, 1, 1000);
    free(mine);
    return rc ? err_set(e, ERR_RUNTIME, "rank group: gathering the image failed") : 0;
}

void tile_group_report(const tile_group *g)
{
    const char *path = getenv("STRATA_GROUP_STATS");
    if (!path || !*path) return;
    char name[4096];
    snprintf(name, sizeof name, "%s.%d", path, g->r);
    FILE *f = fopen(name, "a");
    if (!f) return;
    const group_stats *s = &g->stats;
    const rank_share *me = &g->share[g->r];
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    fprintf(f,
            "rank=%d ranks=%d side=%d windows=%d rows=%d steps=%d compute_s=%.3f exchange_s=%.3f "
            "wait_s=%.3f bytes_per_step=%.0f peak_rss_mb=%.1f\n",
            g->r, g->R, g->te->h, me->khi - me->klo, me->own_hi - me->own_lo, s->steps,
            s->compute_s, s->exchange_s, s->wait_s, s->steps ? s->bytes / s->steps : 0.0,
            (double)ru.ru_maxrss / 1024.0);
    fclose(f);
}

void tile_group_free(tile_group *g)
{
    tile_exchange_free(g);
    free(g->share), free(g->inbox_at), free(g->stash_at);
    free(g->band), free(g->stash), free(g->inbox);
    g->share = NULL, g->inbox_at = g->stash_at = NULL, g->band = g->stash = g->inbox = NULL;
}
