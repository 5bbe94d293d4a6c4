/* `strata worker`: one level's worker process, serving a coordinator (worker/loop.c). */
#include "cluster/client.h"
#include "cluster/cluster.h"
#include "cluster/config.h"
#include "worker/worker.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char worker_help[] =
    "usage: strata worker --level NAME --connect ENDPOINT (--model DIR | --pipeline FILE)\n"
    "                     [--threads N] [--id ID] [--stub-ms MS] [--key FILE --server-key "
    "FILE.pub]\n"
    "                     [--verbose]\n\n"
    "Serves one level of a cascade for the coordinator at ENDPOINT (its worker socket, e.g.\n"
    "tcp://host:5555): says HELLO, takes the level's settings from the WELCOME, loads its\n"
    "model (--model, or the level's in --pipeline) once, then runs one task at a time,\n"
    "heartbeating while it computes. It reconnects by itself when the coordinator restarts,\n"
    "and exits 0 on SHUTDOWN or SIGINT. SIGTERM drains it: no new task, the one it runs is\n"
    "finished and its result sent, then exit 0 (a second SIGTERM stops at once).\n"
    "Started under mpirun -np R, the R processes are one worker: rank 0 speaks to the\n"
    "coordinator, every rank computes a block of the level's tiles (same bytes at any R).\n\n"
    "  --level NAME       the level served (e.g. l128)\n"
    "  --connect ENDPOINT the coordinator's worker endpoint\n"
    "  --threads N        compute threads (default 1: scale with worker processes)\n"
    "  --id ID            worker id (default HOST-PID)\n"
    "  --stub-ms MS       for farm benchmarks: load no model; each task takes MS ms and returns\n"
    "                     the cond scaled up (nearest neighbour) or a flat grey from the seed\n"
    "  --model DIR        the level's model directory on this host (this or --pipeline is\n"
    "                     required: the coordinator sends no path): HELLO carries its SHA-256\n"
    "                     and a coordinator whose model differs refuses the worker (exit 2)\n"
    "  --pipeline FILE    find the level's model in this pipeline file (as --model)\n"
    "  --key FILE         this worker's CURVE secret key (strata keygen); default $STRATA_KEY\n"
    "  --server-key FILE.pub  the coordinator's public key; default $STRATA_SERVER_KEY\n"
    "  --verbose          log every event to stderr (errors are always logged)\n";

static volatile sig_atomic_t worker_stop_flag, worker_drain_flag;

/* The first SIGTERM drains (the task held is finished and its RESULT sent, then exit 0); a
 * second SIGTERM, or SIGINT, stops at once. */
static void worker_on_signal(int sig)
{
    if (sig == SIGTERM && !worker_drain_flag)
        worker_drain_flag = 1;
    else
        worker_stop_flag = 1;
}

static const char *worker_key_file, *worker_server_key_file, *worker_pipeline_file;

/* --model DIR, --key FILE, --server-key FILE (the keys are read once the flags are parsed). */
static void worker_path_flag(int c, worker_opts *o)
{
    if (c == 'm') o->model = optarg;
    if (c == 'p') worker_pipeline_file = optarg;
    if (c == 'k') worker_key_file = optarg;
    if (c == 'S') worker_server_key_file = optarg;
}

/* --pipeline FILE: the model of level o->level in that pipeline (a stub loads none). */
static int worker_model_from_pipeline(worker_opts *o)
{
    static pipeline_spec p; /* large: off the stack */
    strata_err e = {0};
    int rc = pipeline_load(worker_pipeline_file, &p, &e);
    if (rc < 0) return cli_fail("worker", rc, e.msg);
    for (int i = 0; i < p.nlevels; i++)
        if (!strcmp(p.levels[i].name, o->level)) {
            if (!o->model && o->stub_ms < 0) o->model = p.levels[i].model;
            return 0;
        }
    return cli_usage("worker", "--pipeline %s has no level '%s'", worker_pipeline_file, o->level);
}

/* Fill o from argv. Returns 0, -1 after --help, or CLI_EXIT_USAGE. */
static int worker_parse_args(int argc, char **argv, worker_opts *o)
{
    static const struct option opts[] = {
        {"level", 1, 0, 'l'}, {"connect", 1, 0, 'c'},    {"threads", 1, 0, 'j'},
        {"id", 1, 0, 'i'},    {"stub-ms", 1, 0, 's'},    {"verbose", 0, 0, 'v'},
        {"help", 0, 0, 'h'},  {"model", 1, 0, 'm'},      {"pipeline", 1, 0, 'p'},
        {"key", 1, 0, 'k'},   {"server-key", 1, 0, 'S'}, {0, 0, 0, 0}};
    int c;
    *o = (worker_opts){.threads = 1, .stub_ms = -1};
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            o->level = optarg;
            break;
        case 'c':
            o->connect = optarg;
            break;
        case 'i':
            if (!*optarg || strlen(optarg) > PROTO_MAX_RID)
                return cli_usage("worker", "--id: '%s' is not 1 to 255 bytes", optarg);
            o->id = optarg;
            break;
        case 'j':
            if (cli_parse_int(optarg, 1, 256, &o->threads))
                return cli_usage("worker", "--threads: '%s' is not 1 to 256", optarg);
            break;
        case 's':
            if (cli_parse_int(optarg, 0, 3600000, &o->stub_ms))
                return cli_usage("worker", "--stub-ms: '%s' is not 0 to 3600000", optarg);
            break;
        case 'v':
            o->verbose = 1;
            break;
        case 'm':
        case 'p':
        case 'k':
        case 'S':
            worker_path_flag(c, o);
            break;
        case 'h':
            fputs(worker_help, stdout);
            return -1;
        default:
            return cli_usage("worker", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage("worker", "unexpected argument '%s'", argv[optind]);
    if (!o->level || !*o->level) return cli_usage("worker", "%s", "--level is required");
    if (!o->connect || !*o->connect) return cli_usage("worker", "%s", "--connect is required");
    return 0;
}

/* SIGTERM drains the worker, SIGINT (or a second SIGTERM) stops it as SHUTDOWN does. No
 * SA_RESTART: the poll wakes at once. Ranks other than 0 of a group catch them too, so they do
 * not die mid-task: they stop when rank 0 tells them (worker_group_follow). */
static void worker_catch_signals(void)
{
    cli_on_stop_signals(worker_on_signal);
}

int cmd_worker(int argc, char **argv)
{
    worker_opts o;
    int rc = worker_parse_args(argc, argv, &o);
    if (rc) return rc < 0 ? CLI_EXIT_OK : rc;
    static cli_keys keys;
    if ((rc = cli_keys_load("worker", worker_key_file, worker_server_key_file, &keys))) return rc;
    o.key = keys.curve.secret_key;
    o.server_key = keys.curve.server_key;
    if (worker_pipeline_file && (rc = worker_model_from_pipeline(&o))) return rc;
    /* WELCOME carries the model's hash, not the coordinator's path: the worker finds it here */
    if (!o.model && o.stub_ms < 0)
        return cli_usage("worker", "%s",
                         "the level's model: say --model DIR or --pipeline FILE (the pipeline "
                         "file that names it)");
    worker_catch_signals();
    o.stop = &worker_stop_flag;
    o.drain = &worker_drain_flag;
    strata_err e = {0};
    int abandoned = 0;
    /* under mpirun -np R: one worker of R ranks; rank 0 speaks to the coordinator */
    rc = worker_group_init(&argc, &argv, &e);
    if (!rc)
        rc = worker_group_rank() ? worker_group_follow(&o, &e) : worker_run(&o, &abandoned, &e);
    int code = rc ? cli_fail("worker", rc, e.msg) : CLI_EXIT_OK;
    if (!abandoned) worker_group_finalize();
    if (abandoned) {
        /* a task still computes: leave before OpenBLAS/OpenMP destructors run under it */
        fflush(NULL);
        _exit(code);
    }
    return code;
}
