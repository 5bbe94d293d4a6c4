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

/* One message of a step: rows [a, b) of planes `width` wide, to or from peer (for window
 * outputs, of window k). Its buffer lives as long as the task: every step sends the same
 * messages, so they are planned once (tile_exchange_new) and no step allocates. */
typedef struct message {
    float *buf;
    int peer, k, a, b, width, count;
} message;

/* The messages of one phase, posted and waited for together; `next` walks them while packing. */
typedef struct phase {
    message *m;
    MPI_Request *req;
    int n, max, next;
} phase;

struct group_exchange {
    phase halo_out, halo_in; /* owned rows of x to the bands reading them; the band's others */
    phase out;               /* own windows' outputs on rows other ranks own, in window order */
    MPI_Request *recv;       /* one per window whose output reaches this rank's owned rows */
};

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

static int phase_new(phase *p, int max)
{
    *p = (phase){.max = max > 0 ? max : 1};
    p->m = calloc((size_t)p->max, sizeof *p->m);
    p->req = malloc((size_t)p->max * sizeof *p->req);
    return p->m && p->req ? 0 : ERR_NOMEM;
}

static void phase_free(phase *p)
{
    for (int i = 0; p->m && i < p->n; i++)
        free(p->m[i].buf);
    free(p->m), free(p->req);
}

static int phase_add(phase *p, const tile_eval *t, int peer, int k, int width, int a, int b)
{
    size_t count = (size_t)t->n * t->oc * (b - a) * width;
    float *buf = p->n < p->max ? malloc(count * sizeof(float)) : NULL;
    if (!buf) return ERR_NOMEM;
    p->m[p->n++] = (message){buf, peer, k, a, b, width, (int)count};
    return 0;
}

/* Pack message m from src (rows of planes m->width wide). */
static void message_pack(tile_group *g, const message *m, const tile_rows *src)
{
    double t0 = clock_now_s();
    copy_rows(g->te, m->width, src, &(tile_rows){m->buf, m->a, m->b - m->a}, m->a, m->b);
    g->stats.exchange_s += clock_now_s() - t0;
    g->stats.bytes += (double)m->count * sizeof(float);
}

/* Post every message of p (sends or receives) with tag. 0 or an MPI error. */
static int phase_post(phase *p, int send, int tag)
{
    int rc = 0;
    for (int i = 0; i < p->n && !rc; i++) {
        message *m = &p->m[i];
        rc = send
                 ? MPI_Isend(m->buf, m->count, MPI_FLOAT, m->peer, tag, MPI_COMM_WORLD, &p->req[i])
                 : MPI_Irecv(m->buf, m->count, MPI_FLOAT, m->peer, tag, MPI_COMM_WORLD, &p->req[i]);
    }
    return rc;
}

/* Wait for `count` requests, testing with sleeps; the time counts as waiting. */
static int wait_all(tile_group *g, MPI_Request *req, int count)
{
    double t0 = clock_now_s();
    int rc = count ? group_wait_all(req, count, EXCHANGE_MAX_SLEEP_US) : 0;
    g->stats.wait_s += clock_now_s() - t0;
    return rc;
}

/* The halo's messages: this rank's owned rows to every other band reading them, and the rows
 * its band reads from other owners. */
static int plan_halo(tile_group *g, struct group_exchange *x)
{
    const rank_share *me = &g->share[g->r];
    int w = g->te->w, a, b, rc = 0;
    for (int q = 0; q < g->R && !rc; q++) {
        const rank_share *s = &g->share[q];
        if (q != g->r && clip(me->own_lo, me->own_hi, s->band_lo, s->band_hi, &a, &b))
            rc = phase_add(&x->halo_out, g->te, q, -1, w, a, b);
        if (!rc && q != g->r && clip(s->own_lo, s->own_hi, me->band_lo, me->band_hi, &a, &b))
            rc = phase_add(&x->halo_in, g->te, q, -1, w, a, b);
    }
    return rc;
}

int tile_exchange_new(tile_group *g, strata_err *e)
{
    const tile_eval *t = g->te;
    const rank_share *me = &g->share[g->r];
    int nt = t->nty * t->ntx, a, b, rc = ERR_NOMEM;
    struct group_exchange *x = calloc(1, sizeof *x);
    if ((g->xch = x) && !phase_new(&x->halo_out, g->R) && !phase_new(&x->halo_in, g->R) &&
        !phase_new(&x->out, (me->khi - me->klo) * g->R) &&
        (x->recv = malloc((size_t)(nt + 1) * sizeof *x->recv)))
        rc = plan_halo(g, x);
    /* in window order, then rank order: the order window_done packs them in */
    for (int k = me->klo; k < me->khi && !rc && nt > 1; k++)
        for (int q = 0, y0 = t->ty[k / t->ntx]; q < g->R && !rc; q++)
            if (q != g->r && clip(y0, y0 + t->th, g->share[q].own_lo, g->share[q].own_hi, &a, &b))
                rc = phase_add(&x->out, t, q, k, t->tw, a, b);
    return rc ? err_set(e, rc, "out of memory for the rank group's messages") : 0;
}

void tile_exchange_free(tile_group *g)
{
    struct group_exchange *x = g->xch;
    if (!x) return;
    phase_free(&x->halo_out), phase_free(&x->halo_in), phase_free(&x->out);
    free(x->recv), free(x);
    g->xch = NULL;
}

/* The halo: this rank's owned rows of x into its band and to every band that reads them; the
 * rows its band reads from other owners into the band. Receives are posted before sends. */
static int halo_exchange(tile_group *g, const float *x, strata_err *e)
{
    const rank_share *me = &g->share[g->r];
    struct group_exchange *xch = g->xch;
    tile_rows own = {(float *)x, me->own_lo, me->own_hi - me->own_lo};
    tile_rows band = {g->band, me->band_lo, me->band_hi - me->band_lo};
    if (own.rows) copy_rows(g->te, g->te->w, &own, &band, me->own_lo, me->own_hi);
    /* both post before either waits: every rank sends and receives in this phase */
    int rc = phase_post(&xch->halo_in, 0, TAG_HALO);
    for (int i = 0; i < xch->halo_out.n && !rc; i++)
        message_pack(g, &xch->halo_out.m[i], &own);
    if (!rc) rc = phase_post(&xch->halo_out, 1, TAG_HALO);
    if (!rc) rc = wait_all(g, xch->halo_out.req, xch->halo_out.n);
    if (!rc) rc = wait_all(g, xch->halo_in.req, xch->halo_in.n);
    double t0 = clock_now_s();
    for (int i = 0; i < xch->halo_in.n && !rc; i++) {
        const message *m = &xch->halo_in.m[i];
        copy_rows(g->te, m->width, &(tile_rows){m->buf, m->a, m->b - m->a}, &band, m->a, m->b);
    }
    g->stats.exchange_s += clock_now_s() - t0;
    return rc ? err_set(e, ERR_RUNTIME, "rank group: exchanging the rows of x failed") : 0;
}

/* Window k is computed (t->out): its rows another rank owns are packed for that owner, its owned
 * rows from early_hi on are blended into out at once, those above wait in the stash. */
static void window_done(tile_group *g, int k, const tile_rows *out)
{
    const tile_eval *t = g->te;
    const rank_share *me = &g->share[g->r];
    phase *p = &g->xch->out;
    int y0 = t->ty[k / t->ntx], a, b;
    tile_rows src = {t->out, y0, t->th};
    for (; p->next < p->n && p->m[p->next].k == k; p->next++)
        message_pack(g, &p->m[p->next], &src);
    if (!clip(y0, y0 + t->th, me->own_lo, me->own_hi, &a, &b)) return;
    int split = a > g->early_hi ? a : (b < g->early_hi ? b : g->early_hi);
    if (split < b) tile_blend_rows(t, &src, k, split, b, out);
    size_t *at = &g->stash_at[k - me->klo];
    if (a < split)
        copy_rows(t, t->tw, &src, &(tile_rows){g->stash + at[0], a, split - a}, a, split);
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
static int compute_windows(tile_group *g, float ts, const tile_rows *out, strata_err *e)
{
    const rank_share *me = &g->share[g->r];
    tile_eval *t = g->te;
    int rc = 0;
    double t0 = clock_now_s();
    if (out->rows) memset(out->v, 0, (size_t)t->n * t->oc * out->rows * t->w * sizeof(float));
    g->xch->out.next = 0;
    for (int k = me->klo; k < me->khi && !rc; k++) {
        rc = tile_eval_window(t, g->band, k, ts, e);
        if (!rc && t->nty * t->ntx == 1) /* untiled: the output as it is, as tile_eval_model */
            memcpy(out->v, t->out, tile_window_numel(t) * sizeof(float));
        else if (!rc)
            window_done(g, k, out);
    }
    g->stats.compute_s += clock_now_s() - t0;
    return rc;
}

/* The window outputs: receives for every other rank's window reaching the owned rows, then the
 * packed sends, then the wait for both. 0 or an MPI error. */
static int outputs_exchange(tile_group *g)
{
    struct group_exchange *x = g->xch;
    int nrecv = 0, nt = g->te->nty * g->te->ntx, rc = 0;
    for (int k = 0; k < nt && !rc; k++)
        if (g->inbox_at[k + 1] > g->inbox_at[k])
            rc = MPI_Irecv(g->inbox + g->inbox_at[k], (int)(g->inbox_at[k + 1] - g->inbox_at[k]),
                           MPI_FLOAT, window_rank(g, k), TAG_OUTPUT, MPI_COMM_WORLD,
                           &x->recv[nrecv++]);
    if (!rc) rc = phase_post(&x->out, 1, TAG_OUTPUT);
    if (!rc) rc = wait_all(g, x->out.req, x->out.n);
    if (!rc) rc = wait_all(g, x->recv, nrecv);
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
    rc = compute_windows(g, ts, &dst, e);
    /* a rank that failed must not leave the others waiting for its outputs */
    double t0 = clock_now_s();
    rc = group_agree_err(rc, e);
    g->stats.wait_s += clock_now_s() - t0;
    if (rc) return rc;
    if (outputs_exchange(g))
        return err_set(e, ERR_RUNTIME, "rank group: exchanging window outputs failed");
    t0 = clock_now_s();
    if (dst.rows && g->te->nty * g->te->ntx > 1) blend_rest(g, &dst);
    g->stats.compute_s += clock_now_s() - t0;
    g->stats.steps++;
    return 0;
}
