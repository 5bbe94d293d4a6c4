/* cluster internals: the parts of `strata render` outside cmd_render.c (render_ranks.c): per
 * level counts (--workers, --ranks) and how a worker is started, alone or as an MPI rank group. */
#ifndef STRATA_CLUSTER_RENDER_H
#define STRATA_CLUSTER_RENDER_H

#include "cluster/config.h"

#include <sys/types.h>

/* "L=N[,L=N]" (the value of --flag) into counts[level index] for levels of p, each N in
 * [1, max]; levels not named keep their value. 0 or CLI_EXIT_USAGE after saying what is wrong. */
int render_parse_counts(const pipeline_spec *p, const char *flag, const char *spec, int max,
                        int *counts);

/* Start `self worker ARGS` (argv: self, "worker", ...): directly when ranks <= 1, else as one
 * rank group under `mpirun -np ranks` with mpirun_args (split at spaces, may be NULL) before the
 * program. stdout_fd >= 0 becomes the child's stdout. The child's pid (mpirun's), or -1. */
pid_t render_spawn(const char *self, char *const *argv, int stdout_fd, int ranks,
                   const char *mpirun_args);

#endif
