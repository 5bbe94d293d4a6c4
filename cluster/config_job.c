/* The job file's schema (docs/config.md), also the text of a SUBMIT: read strictly into the
 * coordinator's job_spec, with every default. Whether its pipeline and start_level exist is
 * for pipeline_load and the planner. */
#include "cluster/yaml.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const job_keys[] = {"pipeline",    "name",        "count",       "seed",
                                       "seeds",       "resolution",  "out",         "priority",
                                       "class_label", "keep_levels", "start_level", "init_images",
                                       "budget_s",    "steps",       "direct",      "predicted_s"};
enum {
    JOB_KEY_PIPELINE,
    JOB_KEY_NAME,
    JOB_KEY_COUNT,
    JOB_KEY_SEED,
    JOB_KEY_SEEDS,
    JOB_KEY_RESOLUTION,
    JOB_KEY_OUT,
    JOB_KEY_PRIORITY,
    JOB_KEY_CLASS_LABEL,
    JOB_KEY_KEEP_LEVELS,
    JOB_KEY_START_LEVEL,
    JOB_KEY_INIT_IMAGES,
    JOB_KEY_BUDGET_S,
    JOB_KEY_STEPS,
    JOB_KEY_DIRECT,
    JOB_KEY_PREDICTED_S,
    JOB_KEY_COUNT_
};
_Static_assert(sizeof job_keys / sizeof job_keys[0] == JOB_KEY_COUNT_, "job_keys");

void job_defaults(job_spec *j)
{
    memset(j, 0, sizeof *j);
    j->count = 1;
    j->class_label = -1;
    snprintf(j->out, sizeof j->out, "out");
}

/* The explicit seeds list (malloc'd into j->seeds) and count: the list's length, or equal to it. */
static int job_parse_seeds(cfg *c, yaml_node_t **v, job_spec *j)
{
    const yaml_node_t *n = v[JOB_KEY_SEEDS];
    char field[32];
    if (v[JOB_KEY_SEED])
        return cfg_fail(c, n, "", "seeds", "give seed (the first of count) or seeds, not both");
    long count = n->type == YAML_SEQUENCE_NODE
                     ? n->data.sequence.items.top - n->data.sequence.items.start
                     : 0;
    if (count < 1 || count > CONFIG_MAX_COUNT)
        return cfg_fail(c, n, "", "seeds", "expected a list of 1..%d integers", CONFIG_MAX_COUNT);
    if (v[JOB_KEY_COUNT] && j->count != count)
        return cfg_fail(c, v[JOB_KEY_COUNT], "", "count", "%d, but seeds lists %ld", j->count,
                        count);
    j->seeds = malloc((size_t)count * sizeof *j->seeds);
    if (!j->seeds) {
        cfg_fail(c, n, "", "seeds", "out of memory");
        return ERR_NOMEM;
    }
    for (long i = 0; i < count; i++) {
        snprintf(field, sizeof field, "seeds[%ld]", i);
        int r =
            cfg_get_u64(c, cfg_node(c, n->data.sequence.items.start[i]), field, NULL, &j->seeds[i]);
        if (r) return r;
    }
    j->count = (int)count;
    return 0;
}

/* start_level and init_images: both or neither. */
static int job_parse_start(const cfg *c, const yaml_node_t *root, yaml_node_t **v, job_spec *j)
{
    const yaml_node_t *start = v[JOB_KEY_START_LEVEL], *init = v[JOB_KEY_INIT_IMAGES];
    int r = cfg_get_level_name(c, start, "", "start_level", 1, j->start_level);
    if (!r) r = cfg_get_str(c, init, "", "init_images", j->init_images, sizeof j->init_images);
    if (!r && *j->start_level && !*j->init_images)
        r = cfg_fail(c, init ? init : root, "", "init_images", "needed with start_level");
    if (!r && *j->init_images && !*j->start_level)
        r = cfg_fail(c, start ? start : root, "", "start_level", "needed with init_images");
    return r;
}

/* steps: {LEVEL: N, ...}, the job's steps per level (the pipeline's levels are checked by the
 * coordinator, which knows them). */
static int job_parse_steps(cfg *c, const yaml_node_t *n, job_spec *j)
{
    if (!n) return 0;
    if (n->type != YAML_MAPPING_NODE)
        return cfg_fail(c, n, "", "steps", "expected a map of level: steps");
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        if (j->nsteps == PIPELINE_MAX_LEVELS)
            return cfg_fail(c, n, "", "steps", "at most %d levels", PIPELINE_MAX_LEVELS);
        char *name = j->step_levels[j->nsteps];
        int r = cfg_get_level_name(c, cfg_node(c, p->key), "steps", "level", 0, name);
        for (int i = 0; !r && i < j->nsteps; i++)
            if (!strcmp(j->step_levels[i], name))
                r = cfg_fail(c, cfg_node(c, p->key), "steps", name, "given twice");
        if (!r)
            r = cfg_get_int(c, cfg_node(c, p->value), "steps", name, 1, 10000,
                            &j->steps[j->nsteps]);
        if (r) return r;
        j->nsteps++;
    }
    return 0;
}

/* budget_s, steps, direct, predicted_s: a compute budget and the sampling chosen for it. */
static int job_parse_budget(cfg *c, yaml_node_t **v, job_spec *j)
{
    float budget = 0, predicted = 0;
    int r = cfg_get_float(c, v[JOB_KEY_BUDGET_S], "", "budget_s", 1e-6, 1e9, &budget);
    if (!r) r = cfg_get_float(c, v[JOB_KEY_PREDICTED_S], "", "predicted_s", 0, 1e9, &predicted);
    if (!r) r = cfg_get_bool(c, v[JOB_KEY_DIRECT], "", "direct", &j->direct);
    if (!r) r = job_parse_steps(c, v[JOB_KEY_STEPS], j);
    j->budget_s = budget;
    j->predicted_s = predicted;
    return r;
}

/* The whole job document. */
static int job_parse(cfg *c, job_spec *j)
{
    yaml_node_t *root = yaml_document_get_root_node(&c->doc), *v[JOB_KEY_COUNT_];
    int r = cfg_map(c, root, "", job_keys, JOB_KEY_COUNT_, v);
    if (!r) r = cfg_require(c, root, "", job_keys, v, JOB_KEY_PIPELINE);
    if (!r) r = cfg_require(c, root, "", job_keys, v, JOB_KEY_RESOLUTION);
    if (!r)
        r = cfg_get_path(c, v[JOB_KEY_PIPELINE], "", "pipeline", j->pipeline, sizeof j->pipeline);
    if (!r) r = cfg_get_id(c, v[JOB_KEY_NAME], "", "name", j->name);
    if (!r) r = cfg_get_int(c, v[JOB_KEY_COUNT], "", "count", 1, CONFIG_MAX_COUNT, &j->count);
    if (!r) r = cfg_get_u64(c, v[JOB_KEY_SEED], "", "seed", &j->seed);
    if (!r && v[JOB_KEY_SEEDS]) r = job_parse_seeds(c, v, j);
    if (!r)
        r = cfg_get_int(c, v[JOB_KEY_RESOLUTION], "", "resolution", 1, CONFIG_MAX_SIDE,
                        &j->resolution);
    if (!r) r = cfg_get_path(c, v[JOB_KEY_OUT], "", "out", j->out, sizeof j->out);
    if (!r) r = cfg_get_int(c, v[JOB_KEY_PRIORITY], "", "priority", INT_MIN, INT_MAX, &j->priority);
    if (!r)
        r = cfg_get_int(c, v[JOB_KEY_CLASS_LABEL], "", "class_label", -1, INT_MAX, &j->class_label);
    if (!r) r = cfg_get_bool(c, v[JOB_KEY_KEEP_LEVELS], "", "keep_levels", &j->keep_levels);
    if (!r) r = job_parse_start(c, root, v, j);
    if (!r) r = job_parse_budget(c, v, j);
    return r;
}

int job_spec_from_yaml_text(const char *text, size_t len, const char *origin, job_spec *j,
                            strata_err *e)
{
    cfg c = {.origin = origin, .e = e};
    job_defaults(j);
    int r = cfg_load(&c, text, len);
    if (r) return r;
    r = job_parse(&c, j);
    yaml_document_delete(&c.doc);
    if (r) {
        job_spec_free(j);
        job_defaults(j);
    }
    return r;
}

int job_load(const char *path, job_spec *j, strata_err *e)
{
    cfg c = {.origin = path, .e = e};
    char *text = NULL;
    size_t len = 0;
    job_defaults(j);
    int r = cfg_read_file(&c, &text, &len);
    if (!r) r = job_spec_from_yaml_text(text, len, path, j, e);
    free(text);
    return r;
}
