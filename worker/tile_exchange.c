/* The rank group's model evaluation (group.h, tile_group): every step, the owners of rows send
 * them to the ranks whose windows read them (the halo), each rank computes its windows, and each
 * window's output on rows another rank owns travels to that owner on its own, so every owner sums
 * the same values in the same order (window index) whatever the rank count. Messages between two
 * ranks go in window order on one tag, and MPI does not let them overtake one another. Outputs are
 * posted only once all ranks agree that every window was computed, so a failed step leaves no
 * message behind to be matched by the next task. */
#include "worker/group.h"

#include <mpi.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { TAG_HALO = 1, TAG_OUTPUT = 2, EXCHANGE_MAX_SLEEP_US = 1000 };

/* The messages of one phase: sends packed first, then posted and waited for together. */
typedef struct exchange {
    MPI_Request *req;
    float **buf;
    int *peer, *count;
    int n, max;
} exchange;

static int clip(int a0, int a1, int b0, int b1, int *lo, int *hi)
{
    *lo = a0 > b0 ? a0 : b0;
    *hi = a1 < b1 ? a1 : b1;
    return *hi > *lo;
}

/* Copy rows [a, b) of every (image, channel) plane of width `width` from src to dst. */
static void copy_rows(const tile_eval *t, int width, const tile_rows *src, const tile_rows *dst,
                      int a, int b)
{
    for (size_t p = 0; p < (size_t)t->n * t->oc; p++)
        memcpy(dst->v + (p * dst->rows + a - dst->y0) * width,
               src->v + (p * src->rows + a - src->y0) * width,
               (size_t)(b - a) * width * sizeof(float));
}

static int exchange_new(exchange *x, int max)
{
    *x = (exchange){.max = max > 0 ? max : 1};
    x->req = malloc((size_t)x->max * sizeof *x->req);
    x->buf = calloc((size_t)x->max, sizeof *x->buf);
    x->peer = malloc((size_t)x->max * sizeof *x->peer);
    x->count = malloc((size_t)x->max * sizeof *x->count);
    return x->req && x->buf && x->peer && x->count ? 0 : ERR_NOMEM;
}

static void exchange_free(exchange *x)
{
    for (int i = 0; x->buf && i < x->n; i++)
        free(x->buf[i]);
    free(x->req), free(x->buf), free(x->peer), free(x->count);
}

/* Add a message of rows [a, b), width wide, for peer: packed from src for a send, or a buffer of
 * its own to receive into (src NULL). */
static int exchange_add(exchange *x, tile_group *g, int peer, int width, int a, int b,
                        const tile_rows *src)
{
    size_t count = (size_t)g->te->n * g->te->oc * (b - a) * width;
    float *buf = x->n < x->max ? malloc(count * sizeof(float)) : NULL;
    if (!buf) return ERR_NOMEM;
    x->buf[x->n] = buf, x->peer[x->n] = peer, x->count[x->n++] = (int)count;
    if (!src) return 0;
    double t0 = clock_now_s();
    copy_rows(g->te, width, src, &(tile_rows){buf, a, b - a}, a, b);
    g->stats.exchange_s += clock_now_s() - t0;
    g->stats.bytes += (double)count * sizeof(float);
    return 0;
}

/* Post every message of x (sends or receives) with tag, then wait for all of them, testing
 * with sleeps. 0 or ERR_RUNTIME. */
static int exchange_run(exchange *x, tile_group *g, int send, int tag)
{
    int rc = 0;
    for (int i = 0; i < x->n && !rc; i++)
        rc = send ? MPI_Isend(x->buf[i], x->count[i], MPI_FLOAT, x->peer[i], tag, MPI_COMM_WORLD,
                              &x->req[i])
                  : MPI_Irecv(x->buf[i], x->count[i], MPI_FLOAT, x->peer[i], tag, MPI_COMM_WORLD,
                              &x->req[i]);
    double t0 = clock_now_s();
    if (!rc && x->n) rc = group_wait_all(x->req, x->n, EXCHANGE_MAX_SLEEP_US);
    g->stats.wait_s += clock_now_s() - t0;
    return rc ? ERR_RUNTIME : 0;
}

/* The halo: this rank's owned rows of x into its band and to every band that reads them; the
 * rows its band reads from other owners into the band. Receives are posted before sends. */
static int halo_exchange(tile_group *g, const float *x, strata_err *e)
{
    const rank_share *me = &g->share[g->r];
    tile_rows own = {(float *)x, me->own_lo, me->own_hi - me->own_lo};
    tile_rows band = {g->band, me->band_lo, me->band_hi - me->band_lo};
    int w = g->te->w, a, b, rc = 0;
    if (own.rows) copy_rows(g->te, w, &own, &band, me->own_lo, me->own_hi);
    exchange x_out = {0}, x_in = {0};
    if (exchange_new(&x_out, g->R) || exchange_new(&x_in, g->R)) rc = ERR_NOMEM;
    for (int q = 0; q < g->R && !rc; q++) {
        const rank_share *s = &g->share[q];
        if (q != g->r && clip(me->own_lo, me->own_hi, s->band_lo, s->band_hi, &a, &b))
            rc = exchange_add(&x_out, g, q, w, a, b, &own);
        if (!rc && q != g->r && clip(s->own_lo, s->own_hi, me->band_lo, me->band_hi, &a, &b))
            rc = exchange_add(&x_in, g, q, w, a, b, NULL);
    }
    /* both post before either waits: every rank sends and receives in this phase */
    for (int i = 0; i < x_in.n && !rc; i++)
        rc = MPI_Irecv(x_in.buf[i], x_in.count[i], MPI_FLOAT, x_in.peer[i], TAG_HALO,
                       MPI_COMM_WORLD, &x_in.req[i]);
    if (!rc) rc = exchange_run(&x_out, g, 1, TAG_HALO);
    double t0 = clock_now_s();
    if (!rc && x_in.n) rc = group_wait_all(x_in.req, x_in.n, EXCHANGE_MAX_SLEEP_US);
    g->stats.wait_s += clock_now_s() - t0;
    t0 = clock_now_s();
    for (int i = 0, q = 0; !rc && q < g->R; q++) {
        const rank_share *s = &g->share[q];
        if (q != g->r && clip(s->own_lo, s->own_hi, me->band_lo, me->band_hi, &a, &b))
            copy_rows(g->te, w, &(tile_rows){x_in.buf[i++], a, b - a}, &band, a, b);
    }
    g->stats.exchange_s += clock_now_s() - t0;
    exchange_free(&x_out);
    exchange_free(&x_in);
    return rc ? err_set(e, rc, "rank group: exchanging the rows of x failed") : 0;
}

/* Window k is computed (t->out): its rows another rank owns are packed for that owner, its owned
 * rows from early_hi on are blended into out at once, those above wait in the stash. */
static int window_done(tile_group *g, int k, exchange *x_out, const tile_rows *out)
{
    const tile_eval *t = g->te;
    const rank_share *me = &g->share[g->r];
    int y0 = t->ty[k / t->ntx], a, b, rc = 0;
    tile_rows src = {t->out, y0, t->th};
    for (int q = 0; q < g->R && !rc; q++)
        if (q != g->r && clip(y0, y0 + t->th, g->share[q].own_lo, g->share[q].own_hi, &a, &b))
            rc = exchange_add(x_out, g, q, t->tw, a, b, &src);
    if (rc || !clip(y0, y0 + t->th, me->own_lo, me->own_hi, &a, &b)) return rc;
    int split = a > g->early_hi ? a : (b < g->early_hi ? b : g->early_hi);
    if (split < b) tile_blend_rows(t, &src, k, split, b, out);
    size_t *at = &g->stash_at[k - me->klo];
    if (a < split)
        copy_rows(t, t->tw, &src, &(tile_rows){g->stash + at[0], a, split - a}, a, split);
    return 0;
}

/* The rank whose block holds window k. */
static int window_rank(const tile_group *g, int k)
{
    int q = 0;
    while (k >= g->share[q].khi)
        q++;
    return q;
}

/* Every window's output on the owned rows not blended yet, in window order: the stashed rows
 * of own windows and the other ranks' outputs from the inbox; then the division by the weights. */
static void blend_rest(tile_group *g, const tile_rows *out)
{
    const tile_eval *t = g->te;
    const rank_share *me = &g->share[g->r];
    for (int k = 0, a, b; k < t->nty * t->ntx; k++) {
        int y0 = t->ty[k / t->ntx];
        if (!clip(y0, y0 + t->th, me->own_lo, me->own_hi, &a, &b)) continue;
        if (k >= me->klo && k < me->khi) {
            b = b < g->early_hi ? b : g->early_hi;
            if (a < b)
                tile_blend_rows(t, &(tile_rows){g->stash + g->stash_at[k - me->klo], a, b - a}, k,
                                a, b, out);
        } else {
            tile_blend_rows(t, &(tile_rows){g->inbox + g->inbox_at[k], a, b - a}, k, a, b, out);
        }
    }
    tile_normalise_rows(t, out);
}

/* This rank's windows, each blended, packed or stashed as it is done. */
static int compute_windows(tile_group *g, float ts, exchange *x_out, const tile_rows *out,
                           strata_err *e)
{
    const rank_share *me = &g->share[g->r];
    tile_eval *t = g->te;
    int rc = 0;
    double t0 = clock_now_s();
    if (out->rows) memset(out->v, 0, (size_t)t->n * t->oc * out->rows * t->w * sizeof(float));
    for (int k = me->klo; k < me->khi && !rc; k++) {
        rc = tile_eval_window(t, g->band, k, ts, e);
        if (!rc && t->nty * t->ntx == 1) /* untiled: the output as it is, as tile_eval_model */
            memcpy(out->v, t->out, tile_window_numel(t) * sizeof(float));
        else if (!rc && (rc = window_done(g, k, x_out, out)))
            err_set(e, rc, "out of memory for a window's messages");
    }
    g->stats.compute_s += clock_now_s() - t0;
    return rc;
}

int tile_group_eval(void *ctx, int step, float ts, const float *x, float *out, strata_err *e)
{
    tile_group *g = ctx;
    const rank_share *me = &g->share[g->r];
    tile_rows dst = {out, me->own_lo, me->own_hi - me->own_lo};
    (void)step;
    int rc = halo_exchange(g, x, e);
    if (rc) return rc;
    exchange x_out = {0};
    if (exchange_new(&x_out, (me->khi - me->klo) * g->R))
        rc = err_set(e, ERR_NOMEM, "out of memory");
    if (!rc) rc = compute_windows(g, ts, &x_out, &dst, e);
    /* a rank that failed must not leave the others waiting for its outputs */
    double t0 = clock_now_s();
    rc = group_agree_err(rc, e);
    g->stats.wait_s += clock_now_s() - t0;
    if (rc) {
        exchange_free(&x_out);
        return rc;
    }
    MPI_Request *recv = NULL;
    int nrecv = 0, nt = g->te->nty * g->te->ntx;
    if (!(recv = malloc((size_t)(nt + 1) * sizeof *recv))) rc = ERR_NOMEM;
    for (int k = 0; k < nt && !rc; k++)
        if (g->inbox_at[k + 1] > g->inbox_at[k])
            rc =
                MPI_Irecv(g->inbox + g->inbox_at[k], (int)(g->inbox_at[k + 1] - g->inbox_at[k]),
                          MPI_FLOAT, window_rank(g, k), TAG_OUTPUT, MPI_COMM_WORLD, &recv[nrecv++]);
    if (!rc) rc = exchange_run(&x_out, g, 1, TAG_OUTPUT);
    t0 = clock_now_s();
    if (!rc && nrecv) rc = group_wait_all(recv, nrecv, EXCHANGE_MAX_SLEEP_US);
    g->stats.wait_s += clock_now_s() - t0;
    free(recv);
    exchange_free(&x_out);
    if (rc) return err_set(e, ERR_RUNTIME, "rank group: exchanging window outputs failed");
    t0 = clock_now_s();
    if (dst.rows && nt > 1) blend_rest(g, &dst);
    g->stats.compute_s += clock_now_s() - t0;
    g->stats.steps++;
    return 0;
}
