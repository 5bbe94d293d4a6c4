/* `strata plan`: how many workers each level's pool needs on a farm of N nodes of C cores, from
 * the levels' measured times (cluster/plan.h), as a table or as an Ansible group_vars fragment. */
#include "cluster/cluster.h"
#include "cluster/plan.h"
#include "cluster/render.h"

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char plan_help[] =
    "usage: strata plan --nodes N [--cores-per-node C] [--pipeline FILE] [--resolution PX]\n"
    "                   [--threads T] [--budget S] [--times DIR] [--reps R] [--class-label L]\n"
    "                   [--format text|yaml]\n\n"
    "Measures what one image costs at each level the resolution needs (each level run once in\n"
    "this process at 1 step and at up to 4, the upper quartile of R runs, CPU seconds), then gives "
    "each\n"
    "level the workers that balance the pipeline on N nodes of C cores: every level one worker,\n"
    "then each free worker slot to the level of least throughput (workers / seconds per image),\n"
    "which maximises the slowest level's. Prints the pools, the expected images per hour and\n"
    "the slowest level. The times are this machine's: plan on a node of the farm.\n\n"
    "  --nodes N           nodes of the farm (required)\n"
    "  --cores-per-node C  cores of each (default: this machine's)\n"
    "  --pipeline FILE     pipeline YAML (default: configs/pipelines/emoji.yaml of this install)\n"
    "  --resolution PX     output side (default 128): the levels a job of that side runs\n"
    "  --threads T         threads per worker (default 1: images are independent, so a core\n"
    "                      does most as one more one-thread worker; more for levels whose\n"
    "                      memory allows fewer workers per node)\n"
    "  --budget S          plan the sampling for a budget of S CPU seconds per image first (as\n"
    "                      strata render --budget), then balance at those steps\n"
    "  --times DIR         take the times from an earlier job's DIR/timings.jsonl instead of\n"
    "                      measuring (its mean CPU seconds per image and level)\n"
    "  --reps R            runs per measurement, the upper quartile counts (default 5)\n"
    "  --class-label L     the class jobs name (guided first levels cost twice; default none)\n"
    "  --format F          text (default) or yaml: an Ansible group_vars fragment,\n"
    "                      strata_pools: {LEVEL: {workers: N, threads: T, ...}} (README)\n";

typedef struct plan_args {
    const char *pipeline, *times, *format;
    long nodes, cores, resolution, threads, reps, class_label;
    float budget;
} plan_args;

static int plan_apply_option(int c, plan_args *a, char **argv)
{
    switch (c) {
    case 'p':
        a->pipeline = optarg;
        return 0;
    case 't':
        a->times = optarg;
        return 0;
    case 'f':
        if (strcmp(optarg, "text") && strcmp(optarg, "yaml"))
            return cli_usage("plan", "--format: '%s' is not text or yaml", optarg);
        a->format = optarg;
        return 0;
    case 'n':
        return cli_flag_long("plan", "nodes", optarg, 1, 100000, &a->nodes);
    case 'c':
        return cli_flag_long("plan", "cores-per-node", optarg, 1, 4096, &a->cores);
    case 'r':
        return cli_flag_long("plan", "resolution", optarg, 1, CONFIG_MAX_SIDE, &a->resolution);
    case 'j':
        return cli_flag_long("plan", "threads", optarg, 1, 256, &a->threads);
    case 'R':
        return cli_flag_long("plan", "reps", optarg, 1, PLAN_MAX_REPS, &a->reps);
    case 'L':
        return cli_flag_long("plan", "class-label", optarg, -1, 1 << 20, &a->class_label);
    case 'b':
        if (cli_parse_float(optarg, &a->budget) || !(a->budget > 0))
            return cli_usage("plan", "--budget: expected a positive number of seconds, got '%s'",
                             optarg);
        return 0;
    case 'h':
        fputs(plan_help, stdout);
        return -1;
    default:
        return cli_usage("plan", "unknown or incomplete option '%s'", argv[optind - 1]);
    }
}

static int parse_plan_args(int argc, char **argv, plan_args *a)
{
    static const struct option opts[] = {
        {"nodes", 1, 0, 'n'},      {"cores-per-node", 1, 0, 'c'}, {"pipeline", 1, 0, 'p'},
        {"resolution", 1, 0, 'r'}, {"threads", 1, 0, 'j'},        {"budget", 1, 0, 'b'},
        {"times", 1, 0, 't'},      {"reps", 1, 0, 'R'},           {"class-label", 1, 0, 'L'},
        {"format", 1, 0, 'f'},     {"help", 0, 0, 'h'},           {0, 0, 0, 0}};
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    *a = (plan_args){.format = "text",
                     .cores = online > 0 ? online : 1,
                     .resolution = 128,
                     .threads = 1,
                     .reps = 5,
                     .class_label = -1};
    int c, rc = 0;
    optind = 1;
    opterr = 0;
    while (!rc && (c = getopt_long(argc, argv, "", opts, NULL)) != -1)
        rc = plan_apply_option(c, a, argv);
    if (rc) return rc;
    if (optind < argc) return cli_usage("plan", "unexpected argument '%s'", argv[optind]);
    if (!a->nodes) return cli_usage("plan", "%s", "--nodes is required");
    return 0;
}

/* The plan: what it measured, what it chose. */
typedef struct plan_result {
    pipeline_spec pipe;
    int first, end, n, slowest;
    plan_cost cost[PIPELINE_MAX_LEVELS];
    plan_choice choice; /* with --budget */
    plan_pool pools[PIPELINE_MAX_LEVELS];
    double seconds[PIPELINE_MAX_LEVELS], per_hour;
} plan_result;

static void print_text(const plan_args *a, const plan_result *r)
{
    printf("strata plan: %s at %ld px on %ld node%s x %ld cores (%ld thread%s per worker)\n",
           r->pipe.name, a->resolution, a->nodes, a->nodes > 1 ? "s" : "", a->cores, a->threads,
           a->threads > 1 ? "s" : "");
    if (a->budget > 0) {
        printf("budget: %g CPU s per image, predicted %.4g; steps", a->budget,
               r->choice.predicted_s);
        for (int i = 0; i < r->n; i++)
            printf(" %s=%d", r->cost[i].name, r->choice.steps[i]);
        printf("%s%s\n", r->choice.direct ? ", direct " : "",
               r->choice.direct ? r->cost[r->n - 1].name : "");
    }
    printf("%-8s %8s %12s %8s %8s %12s\n", "level", "steps", "s/image", "workers", "threads",
           "images/h");
    for (int i = 0; i < r->n; i++)
        printf("%-8s %8d %12.4f %8d %8d %12.1f%s\n", r->cost[i].name,
               a->budget > 0 ? r->choice.steps[i] : r->cost[i].steps, r->seconds[i],
               r->pools[i].workers, r->pools[i].threads, r->pools[i].rate * 3600,
               i == r->slowest ? "  slowest" : "");
    printf("expected: %.1f images per hour; slowest level: %s\n", r->per_hour,
           r->cost[r->slowest].name);
}

static void print_yaml(const plan_args *a, const plan_result *r)
{
    printf("# strata plan --nodes %ld --cores-per-node %ld --resolution %ld --threads %ld\n"
           "# workers: the pool's size over the whole farm, at most cores_per_node / threads\n"
           "# per node; seconds_per_image: one image on one worker, as measured\n",
           a->nodes, a->cores, a->resolution, a->threads);
    printf("strata_plan:\n  pipeline: %s\n  resolution: %ld\n  nodes: %ld\n"
           "  cores_per_node: %ld\n  images_per_hour: %.1f\n  slowest_level: %s\n",
           r->pipe.name, a->resolution, a->nodes, a->cores, r->per_hour, r->cost[r->slowest].name);
    if (a->budget > 0) {
        printf("  budget_s: %g\n  predicted_s: %.6g\n  direct: %s\n  steps:", a->budget,
               r->choice.predicted_s, r->choice.direct ? "true" : "false");
        for (int i = 0; i < r->n; i++)
            printf("%s%s: %d", i ? ", " : " {", r->cost[i].name, r->choice.steps[i]);
        printf("}\n");
    }
    printf("strata_pools:\n");
    for (int i = 0; i < r->n; i++)
        printf("  %s: {workers: %d, threads: %d, seconds_per_image: %.6g}\n", r->cost[i].name,
               r->pools[i].workers, r->pools[i].threads, r->seconds[i]);
}

/* Measure (or read), fit the budget, balance. */
static int plan_run(const plan_args *a, plan_result *r, strata_err *e)
{
    int rc = 0;
    r->n = r->end - r->first;
    if (a->times)
        rc = plan_read_timings(&r->pipe, r->first, r->end, a->times, r->cost, e);
    else
        rc = plan_calibrate(&r->pipe, r->first, r->end, (int)a->threads, (int)a->class_label,
                            (int)a->reps, r->cost, stderr, e);
    if (!rc && a->budget > 0) rc = plan_budget_aimed(r->cost, r->n, a->budget, &r->choice, e);
    for (int i = 0; !rc && i < r->n; i++) {
        r->seconds[i] = plan_cost_image_s(&r->cost[i], (int)a->threads);
        if (a->budget > 0)
            r->seconds[i] *=
                plan_cost_s(&r->cost[i], r->choice.steps[i], r->choice.direct && i == r->n - 1) /
                plan_cost_s(&r->cost[i], r->cost[i].steps, 0);
    }
    if (!rc)
        rc = plan_balance(r->seconds, r->n, (int)a->nodes, (int)a->cores, (int)a->threads, r->pools,
                          &r->slowest, e);
    if (!rc) r->per_hour = r->pools[r->slowest].rate * 3600;
    return rc;
}

int cmd_plan(int argc, char **argv)
{
    plan_args a;
    int rc = parse_plan_args(argc, argv, &a);
    if (rc) return rc < 0 ? CLI_EXIT_OK : rc;
    char self[PATH_MAX], pipe_path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    self[n > 0 ? n : 0] = 0;
    if (a.pipeline)
        snprintf(pipe_path, sizeof pipe_path, "%s", a.pipeline);
    else
        render_default_pipeline(n > 0 ? self : argv[0], pipe_path, sizeof pipe_path);
    static plan_result r;
    pipeline_plan levels;
    strata_err e = {0};
    rc = pipeline_load(pipe_path, &r.pipe, &e);
    if (!rc) rc = pipeline_plan_levels(&r.pipe, (int)a.resolution, NULL, &levels, &e);
    r.first = levels.first;
    r.end = levels.end;
    if (!rc) rc = plan_run(&a, &r, &e);
    if (rc) return cli_fail("plan", rc, e.msg);
    if (!strcmp(a.format, "yaml"))
        print_yaml(&a, &r);
    else
        print_text(&a, &r);
    return CLI_EXIT_OK;
}
