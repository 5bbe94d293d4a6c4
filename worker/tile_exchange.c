/* The rank group's model evaluation: the tile windows of a level split over the ranks in
 * contiguous blocks (window k on rank r when r*K/R <= k < (r+1)*K/R), every window's output
 * gathered on every rank and blended in window order, so the sum per pixel, and the bytes, are
 * the same at any rank count. Every rank keeps the whole canvas and steps the sampler on it. */
#include "worker/group.h"

#include <mpi.h>
#include <stdlib.h>

/* Gather every rank's block of windows into g->windows on every rank. */
static int tile_group_gather(tile_group *g, int nt, strata_err *e)
{
    int R = worker_group_size(), counts[R], displs[R];
    for (int r = 0; r < R; r++) {
        displs[r] = (int)((long long)r * nt / R);
        counts[r] = (int)((long long)(r + 1) * nt / R) - displs[r];
    }
    MPI_Datatype window;
    MPI_Type_contiguous((int)tile_window_numel(g->te), MPI_FLOAT, &window);
    MPI_Type_commit(&window);
    MPI_Request req;
    int rc = MPI_Iallgatherv(MPI_IN_PLACE, 0, window, g->windows, counts, displs, window,
                             MPI_COMM_WORLD, &req);
    if (!rc) rc = group_wait(&req, 1000);
    MPI_Type_free(&window);
    return rc ? err_set(e, ERR_RUNTIME, "rank group: gathering the windows failed") : 0;
}

int tile_group_eval(void *ctx, int step, float ts, const float *x, float *out, strata_err *e)
{
    tile_group *g = ctx;
    tile_eval *t = g->te;
    int nt = t->nty * t->ntx, R = worker_group_size(), r = worker_group_rank(), rc = 0;
    size_t per = tile_window_numel(t);
    (void)step;
    if (!g->windows && !(g->windows = malloc((size_t)nt * per * sizeof(float))))
        rc = err_set(e, ERR_NOMEM, "out of memory for %d windows", nt);
    int lo = (int)((long long)r * nt / R), hi = (int)((long long)(r + 1) * nt / R);
    for (int k = lo; k < hi && !rc; k++)
        rc = tile_eval_window(t, x, k, ts, g->windows + (size_t)k * per, e);
    /* a rank that failed must not leave the others waiting in the gather */
    int all = group_agree(rc);
    if (all && !rc) return err_set(e, all, "another rank of the group failed");
    if (all) return rc;
    if ((rc = tile_group_gather(g, nt, e))) return rc;
    tile_eval_blend(t, g->windows, out);
    return 0;
}

void tile_group_free(tile_group *g)
{
    free(g->windows);
    g->windows = NULL;
}
