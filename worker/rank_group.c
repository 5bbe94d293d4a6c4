/* The MPI rank group of one worker (group.h): start-up, the commands rank 0 broadcasts, and the
 * loop of the other ranks. Waits test a nonblocking request with growing sleeps, because
 * OpenMPI's blocking calls busy-poll a core for as long as they wait. */
#include "worker/group.h"

#include <mpi.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { GROUP_IDLE_MAX_US = 20000 };

static int group_r, group_n = 1, group_on;

int worker_group_init(int *argc, char ***argv, strata_err *e)
{
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMIX_RANK")) return 0;
    int provided = 0;
    /* rank 0 calls MPI from its compute thread, never from two threads at once */
    if (MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
        return err_set(e, ERR_RUNTIME, "MPI_Init_thread failed");
    if (provided < MPI_THREAD_SERIALIZED) {
        MPI_Finalize();
        return err_set(e, ERR_RUNTIME, "this MPI does not allow calls from a second thread");
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &group_r);
    MPI_Comm_size(MPI_COMM_WORLD, &group_n);
    group_on = 1;
    return 0;
}

int worker_group_rank(void)
{
    return group_r;
}

int worker_group_size(void)
{
    return group_n;
}

int worker_group_on(void)
{
    return group_on;
}

void worker_group_finalize(void)
{
    int up = 0, down = 0;
    MPI_Initialized(&up);
    MPI_Finalized(&down);
    if (up && !down) MPI_Finalize();
}

int group_wait_all(void *requests, int count, int max_us)
{
    long us = 20;
    for (;;) {
        int done = 0;
        int rc = MPI_Testall(count, requests, &done, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS) return rc;
        if (done) return 0;
        struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
        nanosleep(&ts, NULL);
        if ((us *= 2) > max_us) us = max_us;
    }
}

int group_agree(int rc)
{
    if (group_n < 2) return rc;
    int all = rc;
    MPI_Request r;
    /* codes are negative: MIN, so one failing rank is never outvoted by the 0s */
    MPI_Iallreduce(&rc, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD, &r);
    if (group_wait_all(&r, 1, 1000)) return ERR_RUNTIME;
    return all;
}

int group_agree_err(int rc, strata_err *e)
{
    int all = group_agree(rc);
    if (all && !rc) err_set(e, all, "another rank of the group failed");
    return all;
}

/* The cond's bytes, when the command carries one. */
static size_t group_cond_bytes(const compute_cmd *cmd)
{
    return cmd->kind == COMPUTE_TASK && cmd->cond
               ? (size_t)cmd->lt.cond_side * cmd->lt.cond_side * 3
               : 0;
}

int group_send_cmd(const compute_cmd *cmd, strata_err *e)
{
    if (group_n < 2) return 0;
    MPI_Request r;
    if (MPI_Ibcast((void *)cmd, (int)sizeof *cmd, MPI_BYTE, 0, MPI_COMM_WORLD, &r) ||
        group_wait_all(&r, 1, 1000))
        return err_set(e, ERR_RUNTIME, "rank group: broadcasting a command failed");
    size_t n = group_cond_bytes(cmd);
    if (n && MPI_Bcast(cmd->cond, (int)n, MPI_BYTE, 0, MPI_COMM_WORLD))
        return err_set(e, ERR_RUNTIME, "rank group: broadcasting a cond failed");
    return 0;
}

int group_recv_cmd(compute_cmd *cmd, strata_err *e)
{
    MPI_Request r;
    if (MPI_Ibcast(cmd, (int)sizeof *cmd, MPI_BYTE, 0, MPI_COMM_WORLD, &r) ||
        group_wait_all(&r, 1, GROUP_IDLE_MAX_US))
        return err_set(e, ERR_RUNTIME, "rank group: receiving a command failed");
    size_t n = group_cond_bytes(cmd);
    cmd->cond = NULL;
    cmd->out = NULL;
    cmd->resize = 0; /* only rank 0 returns the image */
    cmd->lt.cond = NULL;
    if (!n) return 0;
    if (!(cmd->cond = malloc(n))) return err_set(e, ERR_NOMEM, "out of memory for a cond");
    if (MPI_Bcast(cmd->cond, (int)n, MPI_BYTE, 0, MPI_COMM_WORLD))
        return err_set(e, ERR_RUNTIME, "rank group: receiving a cond failed");
    cmd->lt.cond = cmd->cond;
    return 0;
}

int worker_group_follow(const worker_opts *o, strata_err *e)
{
    compute c = {.threads = o->threads < 1 ? 1 : o->threads, .stub_ms = o->stub_ms};
    kernels_set_threads(c.threads);
    int rc = 0;
    for (;;) {
        compute_cmd *cmd = calloc(1, sizeof *cmd);
        if (!cmd) {
            rc = err_set(e, ERR_NOMEM, "out of memory");
            break;
        }
        rc = group_recv_cmd(cmd, e);
        int stop = rc || cmd->kind == COMPUTE_STOP;
        if (!stop) compute_run(&c, cmd);
        compute_cmd_free(cmd);
        if (stop) break;
    }
    unet_free(c.model);
    return rc;
}
