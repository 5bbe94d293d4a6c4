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

static const char render_help[] =
    "usage: strata render [--pipeline FILE] [--count N] [--resolution PX] [--seed S]\n"
    "                     [--out DIR] [--name JOB] [--workers LEVEL=N,...] [--threads N]\n"
    "                     [--class-label L] [--keep-levels] [--start-level LEVEL --init DIR]\n"
    "                     [--ranks LEVEL=R,...] [--mpirun-args ARGS] [--bind ADDR] [--grid FILE]\n"
    "                     [--budget S | --steps LEVEL=N,... [--direct] | --plan-of DIR]\n"
    "                     [--http ADDR:PORT] [--fresh] [--verbose]\n\n"
    "Renders a job on this machine: a coordinator and a pool of workers per level, as separate\n"
    "processes over loopback ZeroMQ, exactly as a cluster runs it. Its coordinator keeps its\n"
    "state in DIR/JOB/.strata-state: an interrupted render run again with the same arguments\n"
    "resumes (images written are not redone); other arguments for the same JOB are refused.\n\n"
    "  --pipeline FILE     pipeline YAML (default: configs/pipelines/emoji.yaml of this install)\n"
    "  --count N           images (default 8); image i uses seed S + i\n"
    "  --resolution PX     output side (default 128); the shortest prefix of levels that\n"
    "                      reaches it runs, then the image is resized exactly\n"
    "  --seed S            first seed (default 0)\n"
    "  --out DIR           writes DIR/JOB/<index>.png and DIR/JOB/manifest.jsonl (default out)\n"
    "  --name JOB          job id (default render)\n"
    "  --workers L=N,...   pool sizes per level (default: the pipeline's pool, else 1)\n"
    "  --threads N         threads per worker process (default 1)\n"
    "  --ranks L=R,...     run each worker of level L as one MPI group of R ranks (mpirun),\n"
    "                      sharing its tiles; the images are the same at any R\n"
    "  --mpirun-args ARGS  options for mpirun (a hostfile...), split at spaces\n"
    "  --bind ADDR         the coordinator takes workers on ADDR, this host's address on the\n"
    "                      nodes' network, instead of loopback: needed when --mpirun-args puts\n"
    "                      ranks on other nodes (default 127.0.0.1; clients stay on loopback)\n"
    "  --class-label L     class of class-conditional first levels (default: the null class)\n"
    "  --keep-levels       also write every level's output as <index>.<level>.png\n"
    "  --start-level L     start at level L from --init DIR/<index>.png instead of level 1\n"
    "  --grid FILE         also write one PNG of the first images (up to 16); with\n"
    "                      --keep-levels, one row per image and one column per level\n"
    "  --budget S          S CPU seconds per image: steps per level (and a one-pass direct last\n"
    "                      level) planned from times measured here, recorded in the manifest\n"
    "  --steps L=N,...     the job's steps per level instead of the pipeline's; --direct: its\n"
    "                      last level in one pass; --plan-of DIR: those of DIR's manifest\n"
    "  --fresh             forget DIR/JOB/.strata-state first: start the job over\n"
    "  --http ADDR:PORT    the coordinator serves /metrics and its status page there (port 0:\n"
    "                      any; loopback unless --bind); the address is said on stderr\n"
    "  --verbose           the coordinator logs every task (with its time) to stderr\n";

typedef struct render_args {
    const char *pipeline, *out, *name, *workers, *start_level, *init, *grid, *ranks, *mpirun_args;
    const char *bind, *http;
    long count, resolution, seed, threads, class_label;
    int keep_levels, verbose, fresh;
    render_sampling sampling;
} render_args;

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

/* Applies getopt_long's option c (with optarg) to a: 0, -1 after --help, or a usage exit code. */
static int render_apply_option(int c, char **argv, render_args *a)
{
    switch (c) {
    case 'p':
        a->pipeline = optarg;
        return 0;
    case 'o':
        a->out = optarg;
        return 0;
    case 'N':
        a->name = optarg;
        return 0;
    case 'w':
        a->workers = optarg;
        return 0;
    case 'S':
        a->start_level = optarg;
        return 0;
    case 'i':
        a->init = optarg;
        return 0;
    case 'g':
        a->grid = optarg;
        return 0;
    case 'R':
        a->ranks = optarg;
        return 0;
    case 'M':
        a->mpirun_args = optarg;
        return 0;
    case 'b':
    case 'H':
        *(c == 'b' ? &a->bind : &a->http) = optarg;
        return 0;
    case 'v':
        a->verbose = 1;
        return 0;
    case 'k':
        a->keep_levels = 1;
        return 0;
    case 'F':
        a->fresh = 1;
        return 0;
    case 'n':
        return cli_flag_long("render", "count", optarg, 1, CONFIG_MAX_COUNT, &a->count);
    case 'r':
        return cli_flag_long("render", "resolution", optarg, 1, CONFIG_MAX_SIDE, &a->resolution);
    case 's':
        return cli_flag_long("render", "seed", optarg, 0, LONG_MAX, &a->seed);
    case 'j':
        return cli_flag_long("render", "threads", optarg, 1, 256, &a->threads);
    case 'c':
        return cli_flag_long("render", "class-label", optarg, -1, 1 << 20, &a->class_label);
    case 'h':
        fputs(render_help, stdout);
        return -1;
    default:
        if ((c = render_sampling_option(c, optarg, &a->sampling)) != 1) return c;
        return cli_usage("render", "unknown or incomplete option '%s'", argv[optind - 1]);
    }
}

static int parse_render_args(int argc, char **argv, render_args *a)
{
    static const struct option opts[] = {
        {"pipeline", 1, 0, 'p'},    {"count", 1, 0, 'n'},       {"resolution", 1, 0, 'r'},
        {"seed", 1, 0, 's'},        {"out", 1, 0, 'o'},         {"name", 1, 0, 'N'},
        {"workers", 1, 0, 'w'},     {"threads", 1, 0, 'j'},     {"class-label", 1, 0, 'c'},
        {"keep-levels", 0, 0, 'k'}, {"start-level", 1, 0, 'S'}, {"init", 1, 0, 'i'},
        {"grid", 1, 0, 'g'},        {"verbose", 0, 0, 'v'},     {"ranks", 1, 0, 'R'},
        {"mpirun-args", 1, 0, 'M'}, {"bind", 1, 0, 'b'},        {"fresh", 0, 0, 'F'},
        {"budget", 1, 0, 'B'},      {"steps", 1, 0, 'T'},       {"direct", 0, 0, 'D'},
        {"plan-of", 1, 0, 'P'},     {"help", 0, 0, 'h'},        {"http", 1, 0, 'H'},
        {0, 0, 0, 0}};
    int c, rc = 0;
    *a = (render_args){.out = "out",
                       .name = "render",
                       .count = 8,
                       .resolution = 128,
                       .threads = 1,
                       .class_label = -1};
    optind = 1;
    opterr = 0;
    while (!rc && (c = getopt_long(argc, argv, "", opts, NULL)) != -1)
        rc = render_apply_option(c, argv, a);
    if (rc) return rc;
    if (optind < argc) return cli_usage("render", "unexpected argument '%s'", argv[optind]);
    if (!a->start_level != !a->init)
        return cli_usage("render", "%s", "--start-level and --init go together");
    return 0;
}

void render_default_pipeline(const char *self, char *out, size_t len)
{
    char copy[PATH_MAX];
    snprintf(copy, sizeof copy, "%s", self);
    char *bin_dir = dirname(copy);
    snprintf(out, len, "%s/../configs/pipelines/emoji.yaml", bin_dir);
    if (access(out, R_OK)) snprintf(out, len, "configs/pipelines/emoji.yaml");
}

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
    int rc = parse_render_args(argc, argv, &a);
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
