/* `strata render`'s command line: its help, its options into render_args, the default pipeline. */
#include "cluster/cluster.h"
#include "cluster/render.h"

#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <unistd.h>

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

int render_parse_args(int argc, char **argv, render_args *a)
{
    static const struct option opts[] = {{"pipeline", 1, 0, 'p'},
                                         {"count", 1, 0, 'n'},
                                         {"resolution", 1, 0, 'r'},
                                         {"seed", 1, 0, 's'},
                                         {"out", 1, 0, 'o'},
                                         {"name", 1, 0, 'N'},
                                         {"workers", 1, 0, 'w'},
                                         {"threads", 1, 0, 'j'},
                                         {"class-label", 1, 0, 'c'},
                                         {"keep-levels", 0, 0, 'k'},
                                         {"start-level", 1, 0, 'S'},
                                         {"init", 1, 0, 'i'},
                                         {"grid", 1, 0, 'g'},
                                         {"verbose", 0, 0, 'v'},
                                         {"ranks", 1, 0, 'R'},
                                         {"mpirun-args", 1, 0, 'M'},
                                         {"bind", 1, 0, 'b'},
                                         {"fresh", 0, 0, 'F'},
                                         {"budget", 1, 0, 'B'},
                                         {"steps", 1, 0, 'T'},
                                         {"direct", 0, 0, 'D'},
                                         {"plan-of", 1, 0, 'P'},
                                         {"help", 0, 0, 'h'},
                                         {"http", 1, 0, 'H'},
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
