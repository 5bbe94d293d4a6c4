/* worker internals (not part of worker.h): the MPI rank group. Under `mpirun -np R` one worker
 * is R processes: rank 0 speaks to the coordinator and broadcasts each compute command, every
 * rank runs it, and a level's tile windows are spread over the ranks in contiguous blocks. Each
 * rank holds only the rows its windows read; every row has one owner rank that sums the row's
 * window outputs in window order and steps the sampler on it, so the bytes do not depend on R.
 * No MPI type appears here: only rank_group.c and tile_exchange.c see mpi.h. */
#ifndef STRATA_WORKER_GROUP_H
#define STRATA_WORKER_GROUP_H

#include "worker/compute.h"

/* Rank 0: send cmd (its kind, settings and cond) to the other ranks. 0 or an error code. */
int group_send_cmd(const compute_cmd *cmd, strata_err *e);

/* Other ranks: wait for rank 0's next command without spinning a core; cmd is filled (its
 * cond allocated, its answer fields cleared). 0 or an error code. */
int group_recv_cmd(compute_cmd *cmd, strata_err *e);

/* Every rank passes its rc (0 or a negative code); all get the smallest: 0 only when every rank
 * succeeded, else one rank's error code. */
int group_agree(int rc);
/* group_agree, with e set ("another rank of the group failed") when only another rank failed. */
int group_agree_err(int rc, strata_err *e);

/* Wait for `count` MPI requests (an MPI_Request array) by testing them with sleeps growing up to
 * max_us, so a waiting rank costs ~0 CPU (OpenMPI's blocking calls busy-poll). 0 or an MPI
 * error. */
int group_wait_all(void *requests, int count, int max_us);

/* Rows [y0, y0 + rows) of a canvas (n, oc, rows, w) or of a window's output (n, oc, rows, tw). */
typedef struct tile_rows {
    float *v;
    int y0, rows;
} tile_rows;

/* Add the feathered output of window k (src, holding rows of that window) on canvas rows [a, b)
 * into dst, as every blend does: the same expression per pixel, so the same bits wherever the
 * sum is made, as long as windows are added in index order. */
void tile_blend_rows(const tile_eval *t, const tile_rows *src, int k, int a, int b,
                     const tile_rows *dst);
/* Divide out's rows by the summed window weights. */
void tile_normalise_rows(const tile_eval *t, const tile_rows *out);

/* The window grid alone (what tile_eval_init sets first): no buffers, no cond yet. */
int tile_eval_grid(tile_eval *t, strata_err *e);

/* Window k's model output (n, oc, th, tw: tile_window_numel values) into t->out. */
int tile_eval_window(tile_eval *t, const float *x, int k, float ts, strata_err *e);
size_t tile_window_numel(const tile_eval *t);

/* One rank's share of a level's window grid (tile_plan.c). Windows go to ranks in contiguous
 * blocks of the window order; every canvas row has one owner rank, which holds the row's x
 * (steps the sampler on it) and sums its window contributions. A rank owns rows only inside its
 * band (the rows its windows read), so it never needs x it does not hold. */
typedef struct rank_share {
    int klo, khi;         /* its windows [klo, khi); empty when the group has more ranks */
    int band_lo, band_hi; /* the rows its windows read: the x and cond it holds */
    int own_lo, own_hi;   /* the rows it owns (empty exactly when it has no windows) */
} rank_share;

/* The shares of R ranks over t's grid (after tile_eval_grid) into share[0..R). ERR_INPUT when a
 * rank with windows would own no row (more ranks in one row of windows than it has rows). */
int tile_plan_shares(const tile_eval *t, int R, rank_share *share, strata_err *e);

/* Time and bytes of a rank's exchange, summed over a task's steps. */
typedef struct group_stats {
    int steps;
    double compute_s;  /* window forwards, blending of the owned rows */
    double exchange_s; /* packing and unpacking what travels */
    double wait_s;     /* blocked in MPI waits: transfers and the slowest rank */
    double bytes;      /* sent by this rank */
} group_stats;

/* The rank group's model evaluation (sample_eval_fn; ctx a tile_group; x and out are the rows
 * this rank owns). Every step: owners send their rows of x to the ranks whose band reads them;
 * each rank computes its windows; each window's output on rows another rank owns goes to that
 * owner, per window, never summed first; each owner blends its rows in window order, exactly as
 * tile_eval_model does, so the bytes do not depend on the rank count. Own windows are blended
 * as they are computed on the rows no lower rank's window reaches (rows from early_hi on); on
 * the rows above, their outputs wait in the stash until the lower ranks' outputs are in. */
typedef struct tile_group {
    tile_eval *te;
    int R, r;
    rank_share *share; /* every rank's share */
    int early_hi;      /* the rows below it are read by windows of lower ranks */
    float *band;       /* this rank's band of x: (n, oc, band rows, w) */
    float *stash;      /* own window k's output on its owned rows above early_hi */
    size_t *stash_at;  /* window klo + j's values are stash[stash_at[j], stash_at[j + 1]) */
    float *inbox;      /* other ranks' window outputs on the rows this rank owns */
    size_t *inbox_at;  /* window k's values are inbox[inbox_at[k], inbox_at[k + 1]) */
    struct group_exchange *xch; /* the messages of a step, planned once (tile_exchange.c) */
    group_stats stats;
} tile_group;

/* Plan the shares and allocate for te (after tile_eval_grid). 0 or an error code. */
int tile_group_init(tile_group *g, tile_eval *te, strata_err *e);
/* Plan the messages every step sends and receives, with their buffers (after the shares and
 * the layout): steps then allocate nothing. 0 or ERR_NOMEM. */
int tile_exchange_new(tile_group *g, strata_err *e);
void tile_exchange_free(tile_group *g);
int tile_group_eval(void *ctx, int step, float ts, const float *x, float *out, strata_err *e);
/* Every rank: its owned rows of x (1 image) as RGB8 into rank 0's out (side x side x 3). */
int tile_group_gather(tile_group *g, const float *x, uint8_t *out, strata_err *e);
/* Append this task's stats to $STRATA_GROUP_STATS.RANK when that is set. */
void tile_group_report(const tile_group *g);
void tile_group_free(tile_group *g);

/* Run one command (compute.c): on rank 0 of a group it is first sent to the others, and the
 * ranks agree on its outcome. */
void compute_run(compute *c, compute_cmd *cmd);

#endif
