/* Fuzz target pipeline: a pipeline file's YAML text (pipeline_load reads the file and gives it to
 * pipeline_from_yaml_text), then the level planner on what it accepted, as SUBMIT and
 * `strata render` use it. Promises checked: an error has a message; a pipeline parsed has 1 to
 * PIPELINE_MAX_LEVELS levels with terminated names; a plan lies within the pipeline. */
#include "cluster/config.h"
#include "tests/fuzz/fuzz.h"

#include <string.h>

/* Plan p for a few resolutions, from the first level and from each level by name. */
static void check_plans(const pipeline_spec *p)
{
    static const int resolutions[] = {1, 64, 1000, PROTO_MAX_SIDE};
    for (size_t r = 0; r < sizeof resolutions / sizeof resolutions[0]; r++)
        for (int start = -1; start < p->nlevels; start++) {
            pipeline_plan plan;
            strata_err e = {0};
            const char *name = start < 0 ? NULL : p->levels[start].name;
            if (pipeline_plan_levels(p, resolutions[r], name, &plan, &e) != 0) {
                if (e.msg[0] == 0) fuzz_fail("pipeline", "a plan error without a message");
                continue;
            }
            if (plan.first < 0 || plan.first >= plan.end || plan.end > p->nlevels)
                fuzz_fail("pipeline", "a plan outside the pipeline");
        }
}

int fuzz_pipeline_one(const uint8_t *data, size_t size)
{
    pipeline_spec p;
    strata_err e = {0};
    if (pipeline_from_yaml_text((const char *)data, size, "configs/pipelines/fuzz.yaml", &p, &e)) {
        if (e.msg[0] == 0) fuzz_fail("pipeline", "an error without a message");
        return 0;
    }
    if (p.nlevels < 1 || p.nlevels > PIPELINE_MAX_LEVELS) fuzz_fail("pipeline", "level count");
    for (int i = 0; i < p.nlevels; i++)
        if (!memchr(p.levels[i].name, 0, sizeof p.levels[i].name) ||
            !memchr(p.levels[i].model, 0, sizeof p.levels[i].model))
            fuzz_fail("pipeline", "a level's string is not terminated");
    check_plans(&p);
    return 0;
}

FUZZ_TARGET(fuzz_pipeline_one)
