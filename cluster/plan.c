/* The arithmetic of planning (cluster/plan.h): pools balanced on a farm's cores, and sampling
 * steps fitted to a compute budget. Pure functions of measured times. */
#include "cluster/plan.h"

#include <math.h>
#include <stdio.h>

double plan_cost_s(const plan_cost *c, int steps, int direct)
{
    return c->fixed_s + c->step_s * (direct ? 1 : steps);
}

double plan_cost_image_s(const plan_cost *c, int threads)
{
    double cpu = plan_cost_s(c, c->steps, c->kind == LEVEL_KIND_DIRECT);
    return threads > 1 ? cpu * c->wall_per_cpu : cpu;
}

int plan_balance(const double *seconds, int n, int nodes, int cores, int threads, plan_pool *out,
                 int *slowest, strata_err *e)
{
    if (n < 1 || n > PIPELINE_MAX_LEVELS || nodes < 1 || cores < 1 || threads < 1)
        return err_set(e, ERR_INPUT, "plan: levels, nodes, cores and threads must be positive");
    if (threads > cores)
        return err_set(e, ERR_INPUT, "plan: %d threads per worker do not fit a node of %d cores",
                       threads, cores);
    long slots = (long)nodes * (cores / threads);
    if (slots < n)
        return err_set(e, ERR_INPUT,
                       "plan: %d levels need at least %d workers; %d nodes x %d cores at %d "
                       "threads give %ld",
                       n, n, nodes, cores, threads, slots);
    for (int i = 0; i < n; i++) {
        if (!(seconds[i] > 0))
            return err_set(e, ERR_INPUT, "plan: level %d: seconds per image must be positive", i);
        out[i] = (plan_pool){.workers = 1, .threads = threads, .rate = 1.0 / seconds[i]};
    }
    /* max-min by one slot at a time: the level of least throughput is the only one whose next
     * worker raises the minimum, and ties go to the earlier level so the plan is deterministic */
    int low = 0;
    for (long s = n;; s++) {
        low = 0;
        for (int i = 1; i < n; i++)
            if (out[i].rate < out[low].rate) low = i;
        if (s == slots) break;
        out[low].workers++;
        out[low].rate = out[low].workers / seconds[low];
    }
    *slowest = low;
    return 0;
}

int plan_step_floor(int steps)
{
    return steps < 2 ? 1 : (steps + 1) / 2;
}

static double choice_cost(const plan_cost *c, int n, const plan_choice *ch)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += plan_cost_s(&c[i], ch->steps[i], ch->direct && i == n - 1);
    return s;
}

/* From the pipeline's steps (the last level direct or not), one step less at a time on the
 * costliest level above its floor until the cost fits: 0, or -1 at the floors. */
static int fit_steps(const plan_cost *c, int n, double budget_s, int direct, plan_choice *ch)
{
    ch->direct = direct;
    for (int i = 0; i < n; i++)
        ch->steps[i] = direct && i == n - 1 ? 1 : c[i].steps;
    for (;;) {
        ch->predicted_s = choice_cost(c, n, ch);
        if (ch->predicted_s <= budget_s) return 0;
        int top = -1;
        for (int i = 0; i < n; i++) {
            if (direct && i == n - 1) continue;
            if (ch->steps[i] <= plan_step_floor(c[i].steps)) continue;
            if (top < 0 || c[i].step_s * ch->steps[i] > c[top].step_s * ch->steps[top]) top = i;
        }
        if (top < 0) return -1;
        ch->steps[top]--;
    }
}

enum { PLAN_BUDGET_AIM_PERCENT = 90 };

int plan_budget_aimed(const plan_cost *c, int n, double budget_s, plan_choice *out, strata_err *e)
{
    if (!plan_budget(c, n, budget_s * PLAN_BUDGET_AIM_PERCENT / 100.0, out, e)) return 0;
    return plan_budget(c, n, budget_s, out, e);
}

int plan_budget(const plan_cost *c, int n, double budget_s, plan_choice *out, strata_err *e)
{
    if (n < 1 || n > PIPELINE_MAX_LEVELS) return err_set(e, ERR_INPUT, "plan: %d levels", n);
    if (!fit_steps(c, n, budget_s, 0, out)) return 0;
    int can_direct = n > 1 || c[0].kind != LEVEL_KIND_GENERATE;
    can_direct = can_direct && c[n - 1].kind != LEVEL_KIND_GENERATE;
    if (can_direct && !fit_steps(c, n, budget_s, 1, out)) return 0;
    /* out holds the floors of the last try: the cheapest sampling there is */
    char direct[SPEC_NAME_MAX + 16] = "";
    if (can_direct) snprintf(direct, sizeof direct, ", %s direct", c[n - 1].name);
    return err_set(e, ERR_INPUT,
                   "budget_s: %g is below the minimum %.4g s per image (each level at half its "
                   "steps%s)",
                   budget_s, out->predicted_s, direct);
}
