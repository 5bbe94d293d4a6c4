/* worker internals (not part of worker.h): the MPI rank group. Under `mpirun -np R` one worker
 * is R processes: rank 0 speaks to the coordinator and broadcasts each compute command, every
 * rank runs it, and a level's tile windows are spread over the ranks in contiguous blocks. Every
 * rank gathers every window's output and blends them in window order, so the bytes do not depend
 * on R. No MPI type appears here: only rank_group.c and tile_exchange.c see mpi.h. */
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

/* Wait for an MPI request (an MPI_Request *) by testing it with sleeps growing up to max_us,
 * so a waiting rank costs ~0 CPU (OpenMPI's blocking calls busy-poll). 0 or an MPI error. */
int group_wait(void *request, int max_us);

/* The rank group's model evaluation (sample_eval_fn; ctx a tile_group): each rank computes the
 * windows of its block, every rank gathers all windows, then blends them as tile_eval_model
 * does, in window order. */
typedef struct tile_group {
    tile_eval *te;
    float *windows; /* every window's output, window after window */
} tile_group;

int tile_group_eval(void *ctx, int step, float ts, const float *x, float *out, strata_err *e);
void tile_group_free(tile_group *g);

/* Window k's model output (n, oc, th, tw: tile_window_numel values) into dst. */
int tile_eval_window(tile_eval *t, const float *x, int k, float ts, float *dst, strata_err *e);
size_t tile_window_numel(const tile_eval *t);

/* The blended output from every window's output (window after window): the same bits as
 * tile_eval_model computes. */
void tile_eval_blend(const tile_eval *t, const float *windows, float *out);

/* Run one command (compute.c): on rank 0 of a group it is first sent to the others, and the
 * ranks agree on its outcome. */
void compute_run(compute *c, compute_cmd *cmd);

#endif
