/* cluster internals: the parts of `strata render` outside cmd_render.c: per level counts
 * (--workers, --ranks), where its coordinator listens for workers (--bind) and how a worker is
 * started, alone or as an MPI rank group (render_ranks.c); the --grid picture (render_grid.c). */
#ifndef STRATA_CLUSTER_RENDER_H
#define STRATA_CLUSTER_RENDER_H

#include "cluster/config.h"

#include <stddef.h>
#include <sys/types.h>

/* "L=N[,L=N]" (the value of --flag) into counts[level index] for levels of p, each N in
 * [1, max]; levels not named keep their value. 0 or CLI_EXIT_USAGE after saying what is wrong. */
int render_parse_counts(const pipeline_spec *p, const char *flag, const char *spec, int max,
                        int *counts);

/* --budget S, --steps L=N,..., --direct, --plan-of DIR (render_budget.c). */
typedef struct render_sampling {
    float budget;      /* CPU seconds per image; 0: none */
    const char *steps; /* "L=N,..." or NULL */
    int direct;
    const char *plan_of; /* an earlier job's directory: its manifest's plan */
    double predicted;    /* set by render_sampling_yaml */
} render_sampling;

/* Apply getopt option c ('B' budget, 'T' steps, 'D' direct, 'P' plan-of) with arg: 0, 1 when c
 * is none of them, or CLI_EXIT_USAGE after saying what is wrong. */
int render_sampling_option(int c, const char *arg, render_sampling *s);

/* The job keys for s (budget_s, predicted_s, direct, steps) for levels [first, end) of p into
 * out, "" when none: --plan-of's recorded choice, then --steps, else --budget's plan from times
 * measured here on threads threads (class_label: the job's), kept in the file saved (NULL: not
 * kept) and taken from it when it holds a choice for the same budget. 0, or an exit code after
 * saying what is wrong (a budget below the minimum: "budget_s: ... the minimum M s ..."). */
int render_sampling_yaml(render_sampling *s, const pipeline_spec *p, int first, int end,
                         int threads, int class_label, const char *saved, char *out, size_t len);

/* What `strata render` was asked (render_args.c). */
typedef struct render_args {
    const char *pipeline, *out, *name, *workers, *start_level, *init, *grid, *ranks, *mpirun_args;
    const char *bind, *http;
    long count, resolution, seed, threads, class_label;
    int keep_levels, verbose, fresh;
    render_sampling sampling;
} render_args;

/* Parse render's command line into a: 0, -1 after --help, or CLI_EXIT_USAGE after saying what
 * is wrong. */
int render_parse_args(int argc, char **argv, render_args *a);

/* The default pipeline of the install whose binary is self: configs/pipelines/emoji.yaml beside
 * the folder holding build/strata, else that path under the current directory. */
void render_default_pipeline(const char *self, char *out, size_t len);

/* Start `self worker ARGS` (argv: self, "worker", ...): directly when ranks is 0, else as one
 * rank group under `mpirun -np ranks` with mpirun_args (split at spaces, may be NULL) before the
 * program. stdout_fd >= 0 becomes the child's stdout. The child's pid (mpirun's), or -1. */
pid_t render_spawn(const char *self, char *const *argv, int stdout_fd, int ranks,
                   const char *mpirun_args);

/* The coordinator's worker endpoint for --bind ADDR: "tcp://ADDR:*" (a free port), or
 * "tcp://127.0.0.1:*" when addr is NULL. ADDR must be an address (or name) of this host that
 * every worker, rank groups on other nodes included, can connect to: a host name or IPv4
 * address, not a wildcard. 0, or CLI_EXIT_USAGE after saying what is wrong. */
int render_worker_endpoint(const char *addr, char *out, size_t len);

/* path made absolute against the working directory, into out: render's coordinator resolves a
 * job's out and init_images against its output root, "/", not where render runs. */
void render_abs_path(const char *path, char *out, size_t len);

/* The state directory of a render into out/job: out/job/.strata-state, into state (len bytes);
 * with fresh, removed first (the job starts over). 0, or an exit code after saying what failed. */
int render_state_prepare(const char *out, const char *job, int fresh, char *state, size_t len);

/* What --grid draws: the first images of DIR out/job/ (count of them, each resolution wide),
 * with keep_levels one column per planned level [first, end) of pipeline. */
typedef struct render_grid {
    const char *path, *out, *job;
    long count, resolution;
    int keep_levels;
    const pipeline_spec *pipeline;
    int first, end;
} render_grid;

/* Write the grid PNG to g->path: 0, or an exit code after saying what failed. */
int render_write_grid(const render_grid *g);

#endif
