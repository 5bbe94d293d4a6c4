/* cluster internals: planning a farm (`strata plan`, `strata render --budget`). Two pure
 * functions of measured times, so tests check their arithmetic on given numbers: how many
 * workers each level's pool needs on N nodes of C cores (plan_balance), and which sampling steps
 * (and a one-pass direct last level) fit a compute budget per image (plan_budget). Where the
 * times come from: plan_calibrate runs each level in this process, or plan_read_timings takes
 * them from an earlier job's timings.jsonl. */
#ifndef STRATA_CLUSTER_PLAN_H
#define STRATA_CLUSTER_PLAN_H

#include "cluster/config.h"

#include <stdio.h>

/* What one image costs at a level, in CPU seconds: fixed_s + step_s x steps (a direct level:
 * fixed_s + step_s, one model evaluation). */
typedef struct plan_cost {
    char name[SPEC_NAME_MAX];
    level_kind kind;
    int steps; /* the pipeline's steps */
    double fixed_s, step_s;
    double wall_per_cpu; /* wall over CPU seconds as measured (threads > 1 spend CPU on several
                            cores at once); 1 when unknown */
} plan_cost;

/* Seconds per image of a worker at the pipeline's steps, for balancing: CPU seconds on one
 * thread (a core of its own), wall seconds on more. */
double plan_cost_image_s(const plan_cost *c, int threads);

/* The seconds per image of cost c at steps (direct: one evaluation). */
double plan_cost_s(const plan_cost *c, int steps, int direct);

/* One level's pool in a balanced farm. */
typedef struct plan_pool {
    int workers, threads;
    double rate; /* images per second of the pool: workers / seconds per image */
} plan_pool;

/* Pools for n levels whose image takes seconds[i] on one worker of threads threads, on nodes x
 * cores cores (floor(cores / threads) workers per node): each level at least one worker, every
 * worker slot given, one at a time, to the level of least throughput, which maximises the
 * slowest level's throughput. *slowest is that level. ERR_INPUT with e when the farm has fewer
 * worker slots than levels or an argument is out of range. */
int plan_balance(const double *seconds, int n, int nodes, int cores, int threads, plan_pool *out,
                 int *slowest, strata_err *e);

/* A choice of sampling for a budget: steps per level (the cost's order), the last level direct
 * or not, and the predicted CPU seconds per image. */
typedef struct plan_choice {
    int steps[PIPELINE_MAX_LEVELS];
    int direct;
    double predicted_s;
} plan_choice;

/* The fewest steps plan_budget gives a level of s steps: half of them (rounded up). The shipped
 * models' detail ratio doubles at half their tuned DDIM steps and explodes below (docs/training.md,
 * "Sampling steps of the upper levels": l4096 1.06 at 15, 2.15 at 10, 8.64 at 2), so below
 * half a one-pass direct level, which leaves no grain, is the better way to save. */
int plan_step_floor(int steps);

/* The sampling of n levels (costs c) that fits budget_s CPU seconds per image: the pipeline's
 * steps, then one step less at a time on the costliest level (step_s x steps) above its floor;
 * when the floors still cost too much and the last level refines, the last level direct and the
 * others from their pipeline's steps again. ERR_INPUT "budget_s: B is below the minimum M s per
 * image ..." (M: the floors, with a direct last level when it refines) when nothing fits. */
int plan_budget(const plan_cost *c, int n, double budget_s, plan_choice *out, strata_err *e);

enum { PLAN_MAX_REPS = 25 };

/* plan_budget for a farm: aimed at 90% of budget_s, at all of it only when 90% cannot be
 * reached, as a farm's images cost up to ~20% more CPU than the calibration on a busy machine
 * (`strata render --budget` and `strata plan --budget`). */
int plan_budget_aimed(const plan_cost *c, int n, double budget_s, plan_choice *out, strata_err *e);

/* Measure costs of the pipeline's levels [first, end) in this process on threads threads: each
 * level's image (the previous level's side of grey as its cond) at 1 and at min(steps, 4)
 * steps, the upper quartile of reps runs each (at most PLAN_MAX_REPS) after a warm-up, CPU time;
 * step_s is the slope. progress (may be NULL)
 * gets one line per level. ERR_INPUT when a model does not load. */
int plan_calibrate(const pipeline_spec *p, int first, int end, int threads, int class_label,
                   int reps, plan_cost *out, FILE *progress, strata_err *e);

/* Costs of levels [first, end) from an earlier job's OUT/JOB/timings.jsonl and manifest.jsonl
 * (its steps, from the manifest's plan or the pipeline): the mean CPU seconds per image over its
 * images, all counted as step_s x steps (fixed_s 0). ERR_INPUT when a level has no time. */
int plan_read_timings(const pipeline_spec *p, int first, int end, const char *dir, plan_cost *out,
                      strata_err *e);

#endif
