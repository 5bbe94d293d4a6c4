/* SUBMIT: a job's text is parsed (by the parser cluster/ gives), named, checked against the
 * pipeline served, planned (the levels it runs) and accepted into the job table. */
#include "coordinator/coord_internal.h"
#include "coordinator/outputs.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "job-" and the first 12 hex digits of the 64-bit FNV-1a hash of the spec text: the same job
 * text gives the same id, so the same outputs. */
static void job_default_id(const char *text, char *id, size_t len)
{
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)text; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)h);
    snprintf(id, len, "job-%.12s", hex);
}

/* Letters, digits, _ . - and not starting with . or -: safe as a directory name. */
static int job_id_ok(const char *id)
{
    if (!*id || *id == '.' || *id == '-') return 0;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '.' || *p == '-'))
            return 0;
    return 1;
}

/* The levels [first, end) job j runs, from proto's planner. ERR_INPUT with e when the spec does
 * not fit the pipeline. */
static int job_plan(const coord_t *c, coord_job *j, strata_err *e)
{
    const job_spec *s = &j->spec;
    strata_err pe = {0};
    pipeline_plan plan;
    if (s->count < 0) return err_set(e, ERR_INPUT, "SUBMIT: count: must be positive");
    if (pipeline_plan_levels(&c->pipe, s->resolution, s->start_level, &plan, &pe) < 0)
        return err_set(e, ERR_INPUT, "SUBMIT: %s", pe.msg);
    /* the job parser pairs them; a parser that did not is caught here */
    if (s->start_level[0] && !s->init_images[0])
        return err_set(e, ERR_INPUT, "SUBMIT: init_images: required with start_level");
    j->first = plan.first;
    j->end = plan.end;
    return 0;
}

/* A job naming another pipeline file than the one served is refused. A path that does not
 * resolve here (written relative to a client elsewhere) cannot be compared and is accepted. */
static int job_pipeline_ok(const coord_t *c, const coord_job *j, strata_err *e)
{
    char mine[PATH_MAX], theirs[PATH_MAX];
    if (!realpath(c->pipe.path, mine) || !realpath(j->spec.pipeline, theirs)) return 1;
    if (!strcmp(mine, theirs)) return 1;
    err_set(e, ERR_INPUT, "SUBMIT: pipeline: %s is not the pipeline this coordinator serves (%s)",
            j->spec.pipeline, c->pipe.path);
    return 0;
}

/* Parse and check a SUBMIT into a new job (not yet registered); NULL with e on bad input. */
static coord_job *job_from_text(coord_t *c, const char *text, strata_err *e)
{
    coord_job *j = coord_job_new();
    if (!j) {
        err_set(e, ERR_NOMEM, "coordinator out of memory");
        return NULL;
    }
    if (!c->o.parse_job) {
        err_set(e, ERR_INPUT, "SUBMIT: this coordinator has no job parser");
    } else if (c->o.parse_job(text, strlen(text), "SUBMIT", &j->spec, e) < 0) {
        coord_job_destroy(&j); /* on error the parser leaves nothing owned */
        return NULL;
    } else if (j->spec.name[0] && !job_id_ok(j->spec.name)) {
        err_set(e, ERR_INPUT, "SUBMIT: name: \"%s\" is not a valid job id", j->spec.name);
    } else if (job_pipeline_ok(c, j, e) && job_plan(c, j, e) == 0) {
        if (j->spec.name[0])
            snprintf(j->id, sizeof j->id, "%s", j->spec.name);
        else
            job_default_id(text, j->id, sizeof j->id);
        return j;
    }
    coord_job_destroy(&j);
    return NULL;
}

/* Register j as running, its output directory made; a negative code with e (j is then
 * freed). */
static int job_register(coord_t *c, coord_job *j, strata_err *e)
{
    int rc = ERR_INPUT;
    if (coord_jobs_make_room(c->jobs, j->id) < 0) {
        err_set(e, rc, "SUBMIT: job %s is already running (or still writing)", j->id);
    } else if ((rc = coord_job_paths(c, j, e)) == 0 && (rc = coord_mkdirs(j->dir, e)) == 0) {
        if (coord_jobs_add(c->jobs, j) == 0) return 0;
        rc = err_set(e, ERR_NOMEM, "coordinator out of memory");
    }
    coord_job_destroy(&j);
    return rc;
}

int coord_job_submit(coord_t *c, const char *text, char *id_out, strata_err *e)
{
    coord_job *j = job_from_text(c, text, e);
    if (!j) return e->code < 0 ? e->code : ERR_INPUT;
    j->count = (uint32_t)j->spec.count;
    j->arrival = coord_jobs_arrival(c->jobs);
    int rc = job_register(c, j, e);
    if (rc < 0) return rc;
    snprintf(id_out, COORD_ID_MAX, "%s", j->id);
    coord_log(c, 0, "job %s accepted: %u images, %s to %s at %d px, into %s", j->id, j->count,
              c->pipe.levels[j->first].name, c->pipe.levels[j->end - 1].name, j->spec.resolution,
              j->dir);
    coord_job_check_end(c, j); /* a job of 0 images ends at once */
    return 0;
}
