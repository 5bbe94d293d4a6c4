/* `strata render`: the embedded farm. Starts a coordinator and one pool per planned level on
 * this machine, as real processes talking ZeroMQ over loopback (the workers' side on --bind's
 * address instead, for rank groups on other nodes), submits one job, follows it, and shuts
 * everything down when the images are written. */
#include "cluster/client.h"
#include "cluster/cluster.h"
#include "cluster/config.h"
#include "cluster/render.h"
#include "kernels/kernels.h"

#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { RENDER_MAX_WORKERS = 256, RENDER_READY_MS = 30000, RENDER_STOP_MS = 10000 };

typedef struct render_child {
    pid_t pid;
    int k; /* its level's index */
    char level[SPEC_NAME_MAX];
} render_child;

typedef struct render_farm {
    char self[PATH_MAX];
    char worker_ep[256], client_ep[256], http[256];
    char state[PATH_MAX]; /* OUT/JOB/.strata-state */
    const render_args *args;
    pipeline_spec pipeline;
    int first, nlevels; /* planned levels [first, nlevels) */
    int pool[PIPELINE_MAX_LEVELS];
    int ranks[PIPELINE_MAX_LEVELS]; /* MPI ranks per worker (0: a plain process) */
    pid_t coord;
    render_child workers[RENDER_MAX_WORKERS];
    int nworkers;
    int next_id;         /* worker ids only grow: a replacement never takes a live worker's id */
    char sampling[1024]; /* the job keys of --budget, --steps, --direct, --plan-of */
} render_farm;

/* --workers l32=2,l128=1: pool sizes by level name; --ranks l1024=2: ranks per worker. */
static int parse_pools(render_farm *f)
{
    for (int i = 0; i < f->pipeline.nlevels; i++) {
        f->pool[i] = f->pipeline.levels[i].pool > 0 ? f->pipeline.levels[i].pool : 1;
        f->ranks[i] = 0;
    }
    const render_args *a = f->args;
    int rc = a->workers ? render_parse_counts(&f->pipeline, "workers", a->workers, 64, f->pool) : 0;
    if (!rc && a->ranks) rc = render_parse_counts(&f->pipeline, "ranks", a->ranks, 256, f->ranks);
    return rc;
}

static int plan_farm(render_farm *f)
{
    char pipe_path[PATH_MAX];
    strata_err e = {0};
    pipeline_plan plan;
    const render_args *a = f->args;
    if (!a->pipeline)
        render_default_pipeline(f->self, pipe_path, sizeof pipe_path);
    else
        snprintf(pipe_path, sizeof pipe_path, "%s", a->pipeline);
    if (pipeline_load(pipe_path, &f->pipeline, &e) ||
        pipeline_plan_levels(&f->pipeline, (int)a->resolution, a->start_level, &plan, &e)) {
        fprintf(stderr, "strata render: %s\n", e.msg);
        return CLI_EXIT_USAGE;
    }
    f->first = plan.first;
    f->nlevels = plan.end;
    render_sampling s = a->sampling; /* its predicted time is filled in */
    char saved[PATH_MAX];            /* --budget's choice, for a resume (--fresh: chosen again) */
    snprintf(saved, sizeof saved, "%s/%s/.strata-plan", a->out, a->name);
    if (a->fresh) unlink(saved);
    int rc = parse_pools(f);
    if (!rc)
        rc = render_sampling_yaml(&s, &f->pipeline, f->first, f->nlevels, (int)a->threads,
                                  (int)a->class_label, saved, f->sampling, sizeof f->sampling);
    return rc;
}

/* Reads the coordinator's "strata coordinator: workers=EP clients=EP" line. */
static int read_ready_line(render_farm *f, int fd)
{
    char line[1024];
    size_t used = 0;
    struct pollfd p = {fd, POLLIN, 0};
    while (used + 1 < sizeof line) {
        if (poll(&p, 1, RENDER_READY_MS) <= 0) break;
        ssize_t got = read(fd, line + used, 1);
        if (got <= 0) break;
        if (line[used++] == '\n') {
            line[used] = 0;
            int n = sscanf(line, "strata coordinator: workers=%255s clients=%255s http=%255s",
                           f->worker_ep, f->client_ep, f->http);
            if (n == 3) fprintf(stderr, "strata render: status page at http://%s/\n", f->http);
            if (n >= 2) return 0;
            break;
        }
    }
    fprintf(stderr, "strata render: the coordinator did not start (see its messages above)\n");
    return CLI_EXIT_RUNTIME;
}

static int start_coordinator(render_farm *f)
{
    int fds[2];
    char workers[256];
    int rc = render_worker_endpoint(f->args->bind, workers, sizeof workers);
    if (rc) return rc;
    if (pipe(fds)) return CLI_EXIT_RUNTIME;
    char *argv[] = {f->self, "coordinator", "--pipeline", f->pipeline.path, "--workers", workers,
                    "--clients", "tcp://127.0.0.1:*", "--state", f->state,
                    /* render's own job names its paths: no root to keep them in */
                    "--out-root", "/", NULL, NULL, NULL, NULL, NULL};
    int n = 12;
    if (f->args->verbose) argv[n++] = "--verbose";
    /* --bind: workers on other nodes, no keys; the operator asked for that network */
    if (f->args->bind) argv[n++] = "--insecure";
    if (f->args->http) {
        argv[n++] = "--http";
        argv[n++] = (char *)f->args->http;
    }
    f->coord = render_spawn(f->self, argv, fds[1], 0, NULL);
    close(fds[1]);
    rc = f->coord < 0 ? CLI_EXIT_RUNTIME : read_ready_line(f, fds[0]);
    close(fds[0]);
    return rc;
}

static int start_worker(render_farm *f, int k)
{
    const char *level = f->pipeline.levels[k].name;
    if (f->nworkers == RENDER_MAX_WORKERS) return CLI_EXIT_USAGE;
    char threads[32], id[64];
    snprintf(threads, sizeof threads, "%ld", f->args->threads);
    snprintf(id, sizeof id, "%s-%d", level, f->next_id++);
    char *argv[] = {f->self,      "worker",         "--level", (char *)level, "--connect",
                    f->worker_ep, "--threads",      threads,   "--id",        id,
                    "--pipeline", f->pipeline.path, NULL};
    render_child *w = &f->workers[f->nworkers];
    w->pid = render_spawn(f->self, argv, -1, f->ranks[k], f->args->mpirun_args);
    w->k = k;
    memcpy(w->level, level, sizeof w->level);
    if (w->pid < 0) return CLI_EXIT_RUNTIME;
    f->nworkers++;
    return 0;
}

static int start_pools(render_farm *f)
{
    for (int i = f->first; i < f->nlevels; i++) {
        if (f->ranks[i] > 0)
            fprintf(stderr, "strata render: %s: %d worker%s of %d MPI ranks each\n",
                    f->pipeline.levels[i].name, f->pool[i], f->pool[i] > 1 ? "s" : "", f->ranks[i]);
        for (int k = 0; k < f->pool[i]; k++) {
            int rc = start_worker(f, i);
            if (rc) return rc;
        }
    }
    return 0;
}

/* A YAML double-quoted scalar. */
static void yaml_quote(char *out, size_t len, const char *s)
{
    size_t n = 0;
    out[n++] = '"';
    for (; *s && n + 3 < len; s++) {
        if (*s == '"' || *s == '\\') out[n++] = '\\';
        out[n++] = *s;
    }
    out[n++] = '"';
    out[n] = 0;
}

static void job_yaml(const render_farm *f, char *text, size_t len)
{
    const render_args *a = f->args;
    char pipe_q[PATH_MAX + 8], out_q[PATH_MAX + 8], name_q[256], start_q[256], init_q[PATH_MAX + 8];
    char path[PATH_MAX];
    yaml_quote(pipe_q, sizeof pipe_q, f->pipeline.path);
    render_abs_path(a->out, path, sizeof path);
    yaml_quote(out_q, sizeof out_q, path);
    yaml_quote(name_q, sizeof name_q, a->name);
    int n = snprintf(text, len,
                     "pipeline: %s\nname: %s\ncount: %ld\nseed: %ld\nresolution: %ld\nout: %s\n"
                     "class_label: %ld\nkeep_levels: %s\n",
                     pipe_q, name_q, a->count, a->seed, a->resolution, out_q, a->class_label,
                     a->keep_levels ? "true" : "false");
    if (a->start_level) {
        yaml_quote(start_q, sizeof start_q, a->start_level);
        render_abs_path(a->init, path, sizeof path);
        yaml_quote(init_q, sizeof init_q, path);
        n += snprintf(text + n, len - (size_t)n, "start_level: %s\ninit_images: %s\n", start_q,
                      init_q);
    }
    snprintf(text + n, len - (size_t)n, "%s", f->sampling);
}

static volatile sig_atomic_t render_stop_signal;

static void render_on_signal(int sig)
{
    render_stop_signal = sig;
}

/* SIGINT/SIGTERM end the render through stop_farm, so no coordinator or worker outlives it. */
static void render_signals(void)
{
    cli_on_stop_signals(render_on_signal);
}

/* While the job runs: a worker that died is replaced, so a pool never empties; a dead
 * coordinator or a signal ends the render. */
static int render_tick(void *ctx)
{
    render_farm *f = ctx;
    if (render_stop_signal) {
        fprintf(stderr, "strata render: stopped by signal %d\n", (int)render_stop_signal);
        return CLI_EXIT_RUNTIME;
    }
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid == f->coord) {
            fprintf(stderr, "strata render: the coordinator exited\n");
            f->coord = 0;
            return CLI_EXIT_RUNTIME;
        }
        for (int i = 0; i < f->nworkers; i++)
            if (f->workers[i].pid == pid) {
                char level[SPEC_NAME_MAX];
                snprintf(level, sizeof level, "%s", f->workers[i].level);
                if (WIFEXITED(status) && WEXITSTATUS(status) == CLI_EXIT_USAGE) {
                    /* its level's settings or model are wrong: another would fail the same */
                    fprintf(stderr,
                            "strata render: the %s worker refused its level (see its "
                            "message above)\n",
                            level);
                    f->workers[i] = f->workers[--f->nworkers];
                    return CLI_EXIT_USAGE;
                }
                fprintf(stderr, "strata render: worker %d (%s) exited; starting another\n",
                        (int)pid, level);
                int k = f->workers[i].k;
                f->workers[i] = f->workers[--f->nworkers];
                if (start_worker(f, k) != 0) return CLI_EXIT_RUNTIME;
                break;
            }
    }
    return 0;
}

static int submit_and_watch(render_farm *f)
{
    char text[8192];
    job_yaml(f, text, sizeof text);
    client c;
    strata_err e = {0};
    proto_msg req = {.type = PROTO_SUBMIT, .submit = {text}}, reply = {0};
    int rc = client_open(&c, f->client_ep, &e);
    if (!rc) rc = client_call(&c, &req, &reply, 10000, &e);
    if (!rc && reply.type == PROTO_ERROR) {
        fprintf(stderr, "strata render: %s%s\n", reply.error.message,
                strstr(reply.error.message, "other settings") ? ", or --fresh to start over" : "");
        rc = CLI_EXIT_USAGE;
    } else if (!rc && reply.type == PROTO_SUBMITTED) {
        rc = client_watch(&c, reply.submitted.job, stderr, render_tick, f, &e);
    }
    if (rc < 0) {
        fprintf(stderr, "strata render: %s\n", e.msg);
        rc = CLI_EXIT_RUNTIME;
    }
    proto_msg_free(&reply);
    client_close(&c);
    return rc;
}

/* Wait for pid up to ms, then kill it. */
static void reap(pid_t pid, int ms)
{
    struct timespec step = {0, 20 * 1000 * 1000};
    for (int waited = 0; pid > 0; waited += 20) {
        pid_t got = waitpid(pid, NULL, WNOHANG);
        if (got == pid || (got < 0 && errno == ECHILD)) return;
        if (waited >= ms) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            return;
        }
        nanosleep(&step, NULL);
    }
}

/* The coordinator sends SHUTDOWN to the workers when it stops. */
static void stop_farm(render_farm *f)
{
    if (f->coord > 0) kill(f->coord, SIGTERM);
    reap(f->coord, RENDER_STOP_MS);
    /* most workers already left on SHUTDOWN; SIGINT is the same request for the rest (SIGTERM
     * would let a worker finish its task first) */
    for (int i = 0; i < f->nworkers; i++)
        kill(f->workers[i].pid, SIGINT);
    for (int i = 0; i < f->nworkers; i++)
        reap(f->workers[i].pid, RENDER_STOP_MS);
}

/* --grid FILE, from the images the render wrote. */
static int write_grid(const render_farm *f)
{
    const render_args *a = f->args;
    render_grid g = {.path = a->grid,
                     .out = a->out,
                     .job = a->name,
                     .count = a->count,
                     .resolution = a->resolution,
                     .keep_levels = a->keep_levels,
                     .pipeline = &f->pipeline,
                     .first = f->first,
                     .end = f->nlevels};
    return render_write_grid(&g);
}

int cmd_render(int argc, char **argv)
{
    render_args a;
    int rc = render_parse_args(argc, argv, &a);
    if (rc) return rc < 0 ? CLI_EXIT_OK : rc;
    render_farm *f = calloc(1, sizeof *f);
    if (!f) return CLI_EXIT_RUNTIME;
    f->args = &a;
    render_signals();
    ssize_t n = readlink("/proc/self/exe", f->self, sizeof f->self - 1);
    if (n <= 0) snprintf(f->self, sizeof f->self, "%s", argv[0]);
    rc = plan_farm(f);
    if (!rc) rc = render_state_prepare(a.out, a.name, a.fresh, f->state, sizeof f->state);
    if (!rc) rc = start_coordinator(f);
    if (!rc) rc = start_pools(f);
    if (!rc) rc = submit_and_watch(f);
    stop_farm(f);
    if (!rc && a.grid) rc = write_grid(f);
    if (!rc) fprintf(stderr, "strata render: images in %s/%s/\n", a.out, a.name);
    free(f);
    return rc;
}
