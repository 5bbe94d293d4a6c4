/* `strata coordinator`: the farm's coordinator process (coordinator/), serving one pipeline. */
#include "cluster/cluster.h"
#include "cluster/config.h"
#include "coordinator/coordinator.h"
#include "kernels/kernels.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COORD_DEFAULT_PIPELINE "configs/pipelines/emoji.yaml"
#define COORD_DEFAULT_WORKERS "tcp://127.0.0.1:5555"
#define COORD_DEFAULT_CLIENTS "tcp://127.0.0.1:5556"

static const char coordinator_help[] =
    "usage: strata coordinator [--config FILE] [--pipeline FILE] [--workers ENDPOINT]\n"
    "                          [--clients ENDPOINT]\n"
    "                          [--heartbeat-ms MS] [--liveness N] [--max-in-flight N]\n"
    "                          [--max-losses N]\n"
    "                          [--state DIR] [--out-root DIR] [--key FILE --allow FILE.pub|DIR "
    "...]\n"
    "                          [--http ADDR:PORT] [--insecure] [--verbose]\n\n"
    "Runs the farm's coordinator for one pipeline: takes jobs from clients (strata submit,\n"
    "status, watch, cancel), hands each level's tasks to that level's workers (strata worker)\n"
    "and writes OUT/<job>/<index>.png and OUT/<job>/manifest.jsonl. Once bound it prints\n"
    "\"strata coordinator: workers=ENDPOINT clients=ENDPOINT\" (a port given as * is chosen\n"
    "then; with --http, \" http=ADDR:PORT\" follows) and serves until SIGTERM or SIGINT, when\n"
    "it tells its workers SHUTDOWN.\n\n"
    "  --config FILE       YAML with keys pipeline (relative to FILE), workers, clients,\n"
    "                      heartbeat_ms, liveness, max_in_flight, max_losses, verbose, state,\n"
    "                      curve, insecure, out_root, http; flags win over it\n"
    "  --pipeline FILE     the cascade (default " COORD_DEFAULT_PIPELINE ")\n"
    "  --workers ENDPOINT  where workers connect (default " COORD_DEFAULT_WORKERS ")\n"
    "  --clients ENDPOINT  where clients connect (default " COORD_DEFAULT_CLIENTS ")\n"
    "  --heartbeat-ms MS   heartbeat interval, both ways (default 1000)\n"
    "  --liveness N        heartbeats a worker may miss before its tasks go elsewhere (default 3)\n"
    "  --max-in-flight N   images started and not finished (default 4 per worker, at least 8)\n"
    "  --max-losses N      workers a task may lose (killed or gone while holding it) before its\n"
    "                      image fails (default 3)\n"
    "  --state DIR         keep a journal and a spool in DIR (created): after a restart on the\n"
    "                      same DIR, jobs resume where they were (docs/design.md section 6)\n"
    "  --out-root DIR      every job's out and init_images lie under DIR (default: the\n"
    "                      working directory); a path escaping it is refused\n"
    "  --key FILE          CURVE: the coordinator's secret key (strata keygen NAME: NAME.key)\n"
    "  --allow PATH        CURVE: a client or worker key let in (NAME.pub, or a directory of\n"
    "                      them); repeatable. Without keys only loopback endpoints bind\n"
    "  --http ADDR:PORT    serve /metrics (Prometheus) and a status page at / there (port 0:\n"
    "                      any); loopback only unless keys are set or --insecure\n"
    "  --insecure          bind other addresses without keys (anyone reaching them can join)\n"
    "  --verbose           log every event to stderr (failures are always logged)\n\n"
    "With STRATA_COORD_CHECK=1 in the environment the coordinator verifies its state's\n"
    "invariants after every message and aborts naming the first broken one (tests; slower).\n";

static coord_t *coordinator_running;

/* STRATA_COORD_CHECK set and not "0": verify the invariants after every message. */
static int coordinator_check_env(void)
{
    const char *v = getenv("STRATA_COORD_CHECK");
    return v && *v && strcmp(v, "0") != 0;
}

static void coordinator_on_signal(int sig)
{
    (void)sig;
    if (coordinator_running) coord_stop(coordinator_running);
}

typedef struct coordinator_args {
    const char *pipeline, *workers, *clients, *out_root, *http;
    coord_options o;
    coordinator_config file; /* --config: read before the other flags, which override it */
} coordinator_args;

/* The --config file, if any, as the defaults the other flags then override. */
static int coordinator_read_config(int argc, char **argv, coordinator_args *a)
{
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            path = argv[++i];
        else if (!strncmp(argv[i], "--config=", 9))
            path = argv[i] + 9;
    }
    if (!path) return 0;
    strata_err e = {0};
    int rc = coordinator_config_load(path, &a->file, &e);
    if (rc) return cli_fail("coordinator", rc, e.msg);
    a->pipeline = a->file.pipeline;
    if (*a->file.workers) a->workers = a->file.workers;
    if (*a->file.clients) a->clients = a->file.clients;
    if (*a->file.state) a->o.state_dir = a->file.state;
    a->o.heartbeat_ms = a->file.heartbeat_ms;
    a->o.liveness = a->file.liveness;
    a->o.max_images_in_flight = a->file.max_in_flight;
    a->o.max_losses = a->file.max_losses;
    a->o.verbose = a->file.verbose;
    a->o.insecure = a->file.insecure;
    if (*a->file.out_root) a->out_root = a->file.out_root;
    if (*a->file.http) a->http = a->file.http;
    return 0;
}

/* The flags of access: --out-root, --key, --allow (appended to the config's), --insecure. */
static int coordinator_access_flag(int opt, coordinator_args *a)
{
    coordinator_config *f = &a->file;
    if (opt == 'r') a->out_root = optarg;
    if (opt == 'i') a->o.insecure = 1;
    if (opt == 'k') snprintf(f->curve_key, sizeof f->curve_key, "%s", optarg);
    if (opt == 'a' && f->nallow == COORDINATOR_MAX_ALLOW)
        return cli_usage("coordinator", "--allow: more than %d (name a directory)",
                         COORDINATOR_MAX_ALLOW);
    if (opt == 'a') {
        snprintf(f->allow[f->nallow].path, sizeof f->allow[0].path, "%s", optarg);
        f->allow[f->nallow++].admin = 0;
    }
    return 0;
}

/* One option c (getopt's) into a. Returns 0, -1 after --help, or CLI_EXIT_USAGE. */
static int coordinator_option(int c, char **argv, coordinator_args *a)
{
    switch (c) {
    case 'p':
        a->pipeline = optarg;
        return 0;
    case 'w':
        a->workers = optarg;
        return 0;
    case 'c':
        a->clients = optarg;
        return 0;
    case 'b':
        if (cli_parse_int(optarg, 10, 3600000, &a->o.heartbeat_ms))
            return cli_usage("coordinator", "--heartbeat-ms: '%s' is not 10 to 3600000", optarg);
        return 0;
    case 'l':
        if (cli_parse_int(optarg, 1, 1000, &a->o.liveness))
            return cli_usage("coordinator", "--liveness: '%s' is not 1 to 1000", optarg);
        return 0;
    case 'L':
        if (cli_parse_int(optarg, 1, 1000, &a->o.max_losses))
            return cli_usage("coordinator", "--max-losses: '%s' is not 1 to 1000", optarg);
        return 0;
    case 'm':
        if (cli_parse_int(optarg, 1, 1 << 24, &a->o.max_images_in_flight))
            return cli_usage("coordinator", "--max-in-flight: '%s' is not 1 to 16777216", optarg);
        return 0;
    case 'v':
        a->o.verbose = 1;
        return 0;
    case 's':
        if (!*optarg) return cli_usage("coordinator", "--state: expected a directory");
        a->o.state_dir = optarg;
        return 0;
    case 'f': /* read by coordinator_read_config */
        return 0;
    case 't':
        a->http = optarg;
        return 0;
    case 'h':
        fputs(coordinator_help, stdout);
        return -1;
    default:
        if (c > 0 && strchr("rkai", c)) /* --out-root, --key, --allow, --insecure */
            return coordinator_access_flag(c, a);
        return cli_usage("coordinator", "unknown or incomplete option '%s'", argv[optind - 1]);
    }
}

/* Fill a from argv. Returns 0, -1 after --help, or CLI_EXIT_USAGE. */
static int coordinator_parse_args(int argc, char **argv, coordinator_args *a)
{
    static const struct option opts[] = {{"pipeline", 1, 0, 'p'},
                                         {"workers", 1, 0, 'w'},
                                         {"clients", 1, 0, 'c'},
                                         {"heartbeat-ms", 1, 0, 'b'},
                                         {"liveness", 1, 0, 'l'},
                                         {"max-in-flight", 1, 0, 'm'},
                                         {"verbose", 0, 0, 'v'},
                                         {"help", 0, 0, 'h'},
                                         {"config", 1, 0, 'f'},
                                         {"state", 1, 0, 's'},
                                         {"out-root", 1, 0, 'r'},
                                         {"key", 1, 0, 'k'},
                                         {"allow", 1, 0, 'a'},
                                         {"insecure", 0, 0, 'i'},
                                         {"http", 1, 0, 't'},
                                         {"max-losses", 1, 0, 'L'},
                                         {0, 0, 0, 0}};
    int c;
    *a = (coordinator_args){.pipeline = COORD_DEFAULT_PIPELINE,
                            .workers = COORD_DEFAULT_WORKERS,
                            .clients = COORD_DEFAULT_CLIENTS};
    int rc = coordinator_read_config(argc, argv, a);
    if (rc) return rc;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1)
        if ((rc = coordinator_option(c, argv, a))) return rc;
    if (optind < argc) return cli_usage("coordinator", "unexpected argument '%s'", argv[optind]);
    return 0;
}

static void coordinator_signals(void)
{
    cli_on_stop_signals(coordinator_on_signal);
    signal(SIGPIPE, SIG_IGN);
}

int cmd_coordinator(int argc, char **argv)
{
    coordinator_args a;
    int rc = coordinator_parse_args(argc, argv, &a);
    if (rc) return rc < 0 ? CLI_EXIT_OK : rc;
    static pipeline_spec pipe; /* large: off the stack */
    strata_err e = {0};
    rc = pipeline_load(a.pipeline, &pipe, &e);
    if (rc < 0) return cli_fail("coordinator", rc, e.msg);
    a.o.pipeline = &pipe;
    a.o.worker_endpoint = a.workers;
    a.o.client_endpoint = a.clients;
    a.o.parse_job = job_spec_from_yaml_text;
    a.o.check = coordinator_check_env();
    const char *compact = getenv("STRATA_STATE_COMPACT_BYTES"); /* tests: compact often */
    if (compact && *compact) a.o.state_compact_bytes = (size_t)strtoull(compact, NULL, 10);
    a.o.out_root = a.out_root;
    a.o.http = a.http;
    static char secret[PROTO_KEY_LEN + 1];
    coord_key *allow = NULL;
    if (*a.file.curve_key) {
        if ((rc = coordinator_keys_load(&a.file, secret, &allow, &a.o.nallow, &e)) < 0)
            return cli_fail("coordinator", rc, e.msg);
        a.o.curve_secret = secret;
        a.o.allow = allow;
    } else if (a.file.nallow) {
        return cli_usage("coordinator", "%s", "--allow needs --key (curve.key)");
    }
    coord_t *c = NULL;
    rc = coord_new(&a.o, &c, &e);
    free(allow);
    if (rc < 0) return cli_fail("coordinator", rc, e.msg);
    const char *http = coord_http_endpoint(c);
    printf("strata coordinator: workers=%s clients=%s%s%s\n", coord_worker_endpoint(c),
           coord_client_endpoint(c), http ? " http=" : "", http ? http : "");
    fflush(stdout);
    coordinator_running = c;
    coordinator_signals();
    rc = coord_run(c);
    coordinator_running = NULL;
    coord_destroy(&c);
    return rc ? CLI_EXIT_RUNTIME : CLI_EXIT_OK;
}
