/* The job spec's life cycle (what a job_spec owns: the explicit seeds list) and comparison. */
#include "coordinator/coordinator.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Free what j owns and leave j without it; job_spec_free(NULL) is fine. */
void job_spec_free(job_spec *j)
{
    if (!j) return;
    free(j->seeds);
    j->seeds = NULL;
}

/* "" when a and b ask for the same images, else the first field that differs as
 * "FIELD A, was B" in buf. */
const char *job_spec_diff(const job_spec *a, const job_spec *b, char *buf, size_t len)
{
    struct {
        const char *name;
        long long x, y;
    } nums[] = {{"count", a->count, b->count},
                {"seed", (long long)a->seed, (long long)b->seed},
                {"resolution", a->resolution, b->resolution},
                {"priority", a->priority, b->priority},
                {"class_label", a->class_label, b->class_label},
                {"keep_levels", a->keep_levels, b->keep_levels},
                {"seeds", a->seeds != NULL, b->seeds != NULL},
                {"direct", a->direct, b->direct},
                {"steps (levels)", a->nsteps, b->nsteps},
                /* the budget is recorded in every PNG: a different one is another job */
                {"budget_s (us)", llround(a->budget_s * 1e6), llround(b->budget_s * 1e6)},
                {"predicted_s (us)", llround(a->predicted_s * 1e6), llround(b->predicted_s * 1e6)}};
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++)
        if (nums[i].x != nums[i].y) {
            snprintf(buf, len, "%s %lld, was %lld", nums[i].name, nums[i].x, nums[i].y);
            return buf;
        }
    for (int i = 0; a->seeds && i < a->count; i++)
        if (a->seeds[i] != b->seeds[i]) {
            snprintf(buf, len, "seeds[%d] %llu, was %llu", i, (unsigned long long)a->seeds[i],
                     (unsigned long long)b->seeds[i]);
            return buf;
        }
    for (int i = 0; i < a->nsteps; i++)
        if (strcmp(a->step_levels[i], b->step_levels[i]) || a->steps[i] != b->steps[i]) {
            snprintf(buf, len, "steps %s: %d, was %s: %d", a->step_levels[i], a->steps[i],
                     b->step_levels[i], b->steps[i]);
            return buf;
        }
    struct {
        const char *name, *x, *y;
    } strs[] = {{"out", a->out, b->out},
                {"start_level", a->start_level, b->start_level},
                {"init_images", a->init_images, b->init_images}};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if (strcmp(strs[i].x, strs[i].y)) {
            snprintf(buf, len, "%s \"%s\", was \"%s\"", strs[i].name, strs[i].x, strs[i].y);
            return buf;
        }
    return "";
}
