/* `strata render`'s sampling flags: --budget S plans the steps per level (and a direct last
 * level) for S CPU seconds per image from times measured here (cluster/plan.h); --steps and
 * --direct give a choice outright; --plan-of DIR takes an earlier job's recorded choice, so a
 * re-run gives the same bytes on any machine. All become job keys (budget_s, predicted_s, steps,
 * direct) that the coordinator records in the manifest and the PNGs. */
#include "cluster/cluster.h"
#include "cluster/plan.h"
#include "cluster/render.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>

int render_sampling_option(int c, const char *arg, render_sampling *s)
{
    switch (c) {
    case 'B':
        if (cli_parse_float(arg, &s->budget) || !(s->budget > 0) || s->budget > 1e9)
            return cli_usage("render", "--budget: expected a positive number of seconds, got '%s'",
                             arg);
        return 0;
    case 'T':
        s->steps = arg;
        return 0;
    case 'D':
        s->direct = 1;
        return 0;
    case 'P':
        s->plan_of = arg;
        return 0;
    default:
        return 1;
    }
}

/* The plan recorded in DIR/manifest.jsonl (its first line's "plan") into s and steps. */
static int sampling_from_manifest(const pipeline_spec *p, render_sampling *s, int *steps)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.jsonl", s->plan_of);
    json_error_t je;
    json_t *line = json_load_file(path, JSON_DISABLE_EOF_CHECK, &je);
    json_t *plan = json_object_get(line, "plan");
    int rc = 0;
    if (!json_is_object(plan)) {
        fprintf(stderr, "strata render: --plan-of: %s: no plan recorded (%s)\n", path,
                line ? "the job had no budget or steps" : je.text);
        rc = CLI_EXIT_USAGE;
    }
    for (int k = 0; !rc && k < p->nlevels; k++) {
        json_t *n = json_object_get(json_object_get(plan, "steps"), p->levels[k].name);
        if (json_is_integer(n)) steps[k] = (int)json_integer_value(n);
    }
    if (!rc) {
        s->budget = (float)json_number_value(json_object_get(plan, "budget_s"));
        s->predicted = json_number_value(json_object_get(plan, "predicted_s"));
        s->direct = json_is_string(json_object_get(plan, "direct"));
    }
    json_decref(line);
    return rc;
}

/* --budget: measure levels [first, end), fit the budget; the choice into s and steps. */
static int sampling_plan(const pipeline_spec *p, int first, int end, int threads, int class_label,
                         render_sampling *s, int *steps)
{
    plan_cost cost[PIPELINE_MAX_LEVELS];
    plan_choice ch;
    strata_err e = {0};
    int rc = plan_calibrate(p, first, end, threads, class_label, 5, cost, NULL, &e);
    if (!rc) rc = plan_budget_aimed(cost, end - first, s->budget, &ch, &e);
    if (rc) {
        fprintf(stderr, "strata render: %s\n", e.msg);
        return rc == ERR_INPUT ? CLI_EXIT_USAGE : CLI_EXIT_RUNTIME;
    }
    for (int k = first; k < end; k++)
        steps[k] = ch.steps[k - first];
    s->direct = ch.direct;
    s->predicted = ch.predicted_s;
    fprintf(stderr, "strata render: budget %g CPU s per image: predicted %.4g s,", s->budget,
            s->predicted);
    for (int k = first; k < end; k++)
        fprintf(stderr, " %s %s", p->levels[k].name,
                s->direct && k == end - 1 ? "direct" : "steps");
    fprintf(stderr, " (steps");
    for (int k = first; k < end; k++)
        fprintf(stderr, " %d", steps[k]);
    fprintf(stderr, ")\n");
    return 0;
}

/* The keys an earlier run of this render chose for the same budget (saved: OUT/JOB/.strata-plan),
 * so that an interrupted render run again resumes with its choice instead of measuring anew
 * (another choice would be another job). 1 when out holds them. */
static int sampling_saved(const render_sampling *s, const char *saved, char *out, size_t len)
{
    char want[64];
    FILE *f = saved ? fopen(saved, "r") : NULL;
    size_t n = f ? fread(out, 1, len - 1, f) : 0;
    if (f) fclose(f);
    out[n] = 0;
    snprintf(want, sizeof want, "budget_s: %.9g\n", (double)s->budget);
    if (n && !strncmp(out, want, strlen(want))) return 1;
    out[0] = 0;
    return 0;
}

/* Keep the keys chosen in saved (its folder made first; a failure only costs a resume its
 * choice). */
static void sampling_save(const char *saved, const char *text)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", saved);
    for (char *p = dir + 1; *p; p++)
        if (*p == '/') *p = 0, mkdir(dir, 0777), *p = '/';
    strata_err e = {0};
    file_write_atomic(saved, &(struct iovec){(void *)text, strlen(text)}, 1, 0, &e);
}

int render_sampling_yaml(render_sampling *s, const pipeline_spec *p, int first, int end,
                         int threads, int class_label, const char *saved, char *out, size_t len)
{
    int steps[PIPELINE_MAX_LEVELS] = {0}, rc = 0;
    int measure = s->budget > 0 && !s->steps && !s->plan_of;
    out[0] = 0;
    if (measure && sampling_saved(s, saved, out, len)) return 0;
    if (s->plan_of) rc = sampling_from_manifest(p, s, steps);
    if (!rc && s->steps) rc = render_parse_counts(p, "steps", s->steps, 10000, steps);
    if (!rc && measure) rc = sampling_plan(p, first, end, threads, class_label, s, steps);
    if (rc) return rc;
    size_t o = 0;
    if (s->budget > 0)
        o += (size_t)snprintf(out + o, len - o, "budget_s: %.9g\npredicted_s: %.9g\n",
                              (double)s->budget, s->predicted);
    if (s->direct) o += (size_t)snprintf(out + o, len - o, "direct: true\n");
    for (int k = first; k < end && o < len; k++)
        if (steps[k] > 0 && !(s->direct && k == end - 1))
            o += (size_t)snprintf(out + o, len - o, "%s%s: %d",
                                  o && out[o - 1] != '\n' ? ", " : "steps: {", p->levels[k].name,
                                  steps[k]);
    if (o && out[o - 1] != '\n' && o < len) snprintf(out + o, len - o, "}\n");
    if (measure && saved) sampling_save(saved, out);
    return 0;
}
