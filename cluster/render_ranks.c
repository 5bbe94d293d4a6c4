/* `strata render`'s pools: sizes and rank counts per level, and how a worker process (or an MPI
 * rank group of R processes serving as one worker) is started. */
#include "cluster/cluster.h"
#include "cluster/render.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { RANKS_MAX_ARGS = 96 };

int render_parse_counts(const pipeline_spec *p, const char *flag, const char *spec, int max,
                        int *counts)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", spec);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        long n;
        if (!eq) return cli_usage("render", "--%s: '%s' is not LEVEL=N", flag, tok);
        *eq = 0;
        int k = -1;
        for (int i = 0; i < p->nlevels; i++)
            if (!strcmp(p->levels[i].name, tok)) k = i;
        if (k < 0) return cli_usage("render", "--%s: no level '%s' in the pipeline", flag, tok);
        if (cli_flag_long("render", flag, eq + 1, 1, max, &n)) return CLI_EXIT_USAGE;
        counts[k] = (int)n;
    }
    return 0;
}

/* The environment variables that make every rank compute the same bits (the OpenBLAS kernels
 * and threads), forwarded with -x when set (mpirun gives remote ranks only what it is told). */
static const char *const ranks_env[] = {"OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS",
                                        "OMP_NUM_THREADS", "ASAN_OPTIONS", "UBSAN_OPTIONS"};

/* mpirun's argv: its options, the user's, then the worker's own argv. */
static int ranks_argv(char **out, char *np, char *extra, char *const *argv)
{
    int n = 0;
    out[n++] = "mpirun";
    if (geteuid() == 0) out[n++] = "--allow-run-as-root";
    /* more ranks than cores is fine on one machine; ranks sleep while they wait */
    out[n++] = "--oversubscribe";
    out[n++] = "--bind-to";
    out[n++] = "none";
    out[n++] = "--stdin";
    out[n++] = "none";
    for (size_t i = 0; i < sizeof ranks_env / sizeof *ranks_env; i++)
        if (getenv(ranks_env[i])) {
            out[n++] = "-x";
            out[n++] = (char *)ranks_env[i];
        }
    out[n++] = "-np";
    out[n++] = np;
    for (char *save = NULL, *tok = extra ? strtok_r(extra, " ", &save) : NULL;
         tok && n < RANKS_MAX_ARGS / 2; tok = strtok_r(NULL, " ", &save))
        out[n++] = tok;
    for (int i = 0; argv[i] && n < RANKS_MAX_ARGS - 1; i++)
        out[n++] = argv[i];
    out[n] = NULL;
    return n;
}

pid_t render_spawn(const char *self, char *const *argv, int stdout_fd, int ranks,
                   const char *mpirun_args)
{
    pid_t pid = fork();
    if (pid != 0) return pid;
    if (stdout_fd >= 0) dup2(stdout_fd, 1);
    if (ranks <= 0) { /* a plain process; --ranks L=1 is a group of one rank under mpirun */
        execv(self, argv);
        fprintf(stderr, "strata render: cannot run %s: %s\n", self, strerror(errno));
        _exit(127);
    }
    /* under AddressSanitizer (make asan) the ranks' leak check would report OpenMPI's own
     * allocations at exit and change their exit status (a refused level would be retried) */
    const char *asan = getenv("ASAN_OPTIONS");
    char asan_opts[1024];
    if (asan) {
        snprintf(asan_opts, sizeof asan_opts, "%s:detect_leaks=0", asan);
        setenv("ASAN_OPTIONS", asan_opts, 1);
    }
    char np[16], *extra = mpirun_args ? strdup(mpirun_args) : NULL, *margv[RANKS_MAX_ARGS];
    snprintf(np, sizeof np, "%d", ranks);
    ranks_argv(margv, np, extra, argv);
    execvp("mpirun", margv);
    fprintf(stderr, "strata render: cannot run mpirun: %s\n", strerror(errno));
    _exit(127);
}

int render_worker_endpoint(const char *addr, char *out, size_t len)
{
    if (!addr) addr = "127.0.0.1";
    size_t n = strlen(addr);
    if (n == 0 || n > 200 ||
        strspn(addr, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                     "0123456789.-_") != n)
        return cli_usage("render", "--bind: '%s' is not a host name or IPv4 address", addr);
    /* a wildcard would be printed back as the workers' endpoint, which they cannot connect to */
    if (!strcmp(addr, "0.0.0.0"))
        return cli_usage("render",
                         "--bind: %s is no address to connect to; give this host's "
                         "address on the workers' network",
                         addr);
    snprintf(out, len, "tcp://%s:*", addr);
    return 0;
}
