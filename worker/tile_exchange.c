/* The rank group's model evaluation (group.h, tile_group): every step, the owners of rows send
 * them to the ranks whose windows read them (the halo), each rank computes its windows, and each
 * window's output on rows another rank owns travels to that owner on its own, so every owner sums
 * the same values in the same order (window index) whatever the rank count. Messages between two
 * ranks go in window order on one tag, and MPI does not let them overtake one another. */
#include "worker/group.h"

#include <mpi.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { TAG_HALO = 1, TAG_OUTPUT = 2, EXCHANGE_MAX_SLEEP_US = 1000 };

/* The messages of one phase: posted, then waited for together. */
typedef struct exchange {
    MPI_Request *req;
    float **buf;
    int n;
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

/* Post a send or a receive of rows [a, b) (width wide) with a buffer of its own. */
static int post(exchange *x, tile_group *g, int send, int peer, int tag, int width, int a, int b,
                const tile_rows *src)
{
    size_t count = (size_t)g->te->n * g->te->oc * (b - a) * width;
    float *buf = malloc(count * sizeof(float));
    if (!buf) return ERR_NOMEM;
    x->buf[x->n] = buf;
    MPI_Request *r = &x->req[x->n++];
    if (!send) return MPI_Irecv(buf, (int)count, MPI_FLOAT, peer, tag, MPI_COMM_WORLD, r);
    double t0 = clock_now_s();
    copy_rows(g->te, width, src, &(tile_rows){buf, a, b - a}, a, b);
    g->stats.exchange_s += clock_now_s() - t0;
    g->stats.bytes += (double)count * sizeof(float);
    return MPI_Isend(buf, (int)count, MPI_FLOAT, peer, tag, MPI_COMM_WORLD, r);
}

static int exchange_new(exchange *x, int max)
{
    x->n = 0;
    x->req = malloc((size_t)(max ? max : 1) * sizeof *x->req);
    x->buf = calloc((size_t)(max ? max : 1), sizeof *x->buf);
    return x->req && x->buf ? 0 : ERR_NOMEM;
}

/* Wait for every message of x; 0 or ERR_RUNTIME. The buffers stay until exchange_free. */
static int exchange_wait(exchange *x, tile_group *g)
{
    double t0 = clock_now_s();
    int rc = x->n ? group_wait_all(x->req, x->n, EXCHANGE_MAX_SLEEP_US) : 0;
    g->stats.wait_s += clock_now_s() - t0;
    return rc ? ERR_RUNTIME : 0;
}

static void exchange_free(exchange *x)
{
    for (int i = 0; x->buf && i < x->n; i++)
        free(x->buf[i]);
    free(x->req);
    free(x->buf);
}

/* The halo: this rank's owned rows of x into its band and to every band that reads them; the
 * rows its band reads from other owners into the band. */
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
        if (q == g->r) continue;
        if (clip(me->own_lo, me->own_hi, s->band_lo, s->band_hi, &a, &b))
            rc = post(&x_out, g, 1, q, TAG_HALO, w, a, b, &own);
        if (!rc && clip(s->own_lo, s->own_hi, me->band_lo, me->band_hi, &a, &b))
            rc = post(&x_in, g, 0, q, TAG_HALO, w, a, b, NULL);
    }
    if (!rc) rc = exchange_wait(&x_in, g);
    double t0 = clock_now_s();
    for (int i = 0, q = 0; !rc && q < g->R; q++) {
        const rank_share *s = &g->share[q];
        if (q != g->r && clip(s->own_lo, s->own_hi, me->band_lo, me->band_hi, &a, &b))
            copy_rows(g->te, w, &(tile_rows){x_in.buf[i++], a, b - a}, &band, a, b);
    }
    g->stats.exchange_s += clock_now_s() - t0;
    if (!rc) rc = exchange_wait(&x_out, g);
    exchange_free(&x_out);
    exchange_free(&x_in);
    return rc ? err_set(e, rc, "rank group: exchanging the rows of x failed") : 0;
}

/* The rank whose block holds window k. */
static int window_rank(const tile_group *g, int k)
{
    int q = 0;
    while (k >= g->share[q].khi)
        q++;
    return q;
}

/* Each of this rank's window outputs, on the rows another rank owns, to that owner; the outputs
 * of other ranks' windows on the rows this rank owns into the inbox. */
static int output_exchange(tile_group *g, strata_err *e)
{
    const tile_eval *t = g->te;
    const rank_share *me = &g->share[g->r];
    int nt = t->nty * t->ntx, mine = me->khi - me->klo, a, b, rc = 0;
    size_t per = tile_window_numel(t);
    exchange x_out = {0}, x_in = {0};
    if (exchange_new(&x_out, mine * g->R) || exchange_new(&x_in, nt)) rc = ERR_NOMEM;
    for (int k = me->klo; k < me->khi && !rc; k++) {
        int y0 = t->ty[k / t->ntx];
        tile_rows src = {g->windows + (k - me->klo) * per, y0, t->th};
        for (int q = 0; q < g->R && !rc; q++)
            if (q != g->r && clip(y0, y0 + t->th, g->share[q].own_lo, g->share[q].own_hi, &a, &b))
                rc = post(&x_out, g, 1, q, TAG_OUTPUT, t->tw, a, b, &src);
    }
    for (int k = 0; k < nt && !rc; k++) {
        if (g->inbox_at[k + 1] == g->inbox_at[k]) continue;
        rc = MPI_Irecv(g->inbox + g->inbox_at[k], (int)(g->inbox_at[k + 1] - g->inbox_at[k]),
                       MPI_FLOAT, window_rank(g, k), TAG_OUTPUT, MPI_COMM_WORLD,
                       &x_in.req[x_in.n++]);
    }
    if (!rc) rc = exchange_wait(&x_in, g);
    if (!rc) rc = exchange_wait(&x_out, g);
    exchange_free(&x_out);
    free(x_in.req);
    free(x_in.buf);
    return rc ? err_set(e, rc, "rank group: exchanging window outputs failed") : 0;
}

/* out (the owned rows) = the windows' outputs on them, blended in window order. */
static void blend_owned(tile_group *g, float *out)
{
    const tile_eval *t = g->te;
    const rank_share *me = &g->share[g->r];
    tile_rows dst = {out, me->own_lo, me->own_hi - me->own_lo};
    size_t per = tile_window_numel(t);
    if (t->nty * t->ntx == 1) { /* untiled: the one output as it is, as tile_eval_model does */
        memcpy(out, g->windows, per * sizeof(float));
        return;
    }
    memset(out, 0, (size_t)t->n * t->oc * dst.rows * t->w * sizeof(float));
    for (int k = 0, a, b; k < t->nty * t->ntx; k++) {
        int y0 = t->ty[k / t->ntx];
        if (!clip(y0, y0 + t->th, me->own_lo, me->own_hi, &a, &b)) continue;
        tile_rows src = k >= me->klo && k < me->khi
                            ? (tile_rows){g->windows + (k - me->klo) * per, y0, t->th}
                            : (tile_rows){g->inbox + g->inbox_at[k], a, b - a};
        tile_blend_rows(t, &src, k, a, b, &dst);
    }
    tile_normalise_rows(t, &dst);
}

int tile_group_eval(void *ctx, int step, float ts, const float *x, float *out, strata_err *e)
{
    tile_group *g = ctx;
    const rank_share *me = &g->share[g->r];
    size_t per = tile_window_numel(g->te);
    (void)step;
    int rc = halo_exchange(g, x, e);
    if (rc) return rc;
    double t0 = clock_now_s();
    for (int k = me->klo; k < me->khi && !rc; k++)
        rc = tile_eval_window(g->te, g->band, k, ts, g->windows + (k - me->klo) * per, e);
    g->stats.compute_s += clock_now_s() - t0;
    /* a rank that failed must not leave the others waiting for its outputs */
    t0 = clock_now_s();
    rc = group_agree_err(rc, e);
    g->stats.wait_s += clock_now_s() - t0;
    if (rc) return rc;
    if ((rc = output_exchange(g, e))) return rc;
    t0 = clock_now_s();
    if (me->own_hi > me->own_lo) blend_owned(g, out);
    g->stats.compute_s += clock_now_s() - t0;
    g->stats.steps++;
    return 0;
}
