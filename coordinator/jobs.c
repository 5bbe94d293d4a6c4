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

/* A job's own sampling (steps per level, a direct last level) against the levels it runs. */
static int job_plan_sampling(const coord_t *c, coord_job *j, strata_err *e)
{
    const job_spec *s = &j->spec;
    /* a budget is chosen where the levels were measured (strata render --budget): the
     * coordinator measures nothing, so the job must bring the choice */
    if (s->budget_s > 0 && !s->nsteps && !s->direct)
        return err_set(e, ERR_INPUT,
                       "SUBMIT: budget_s: give the steps (and direct) chosen for "
                       "it: strata render --budget or strata plan --budget");
    for (int i = 0; i < s->nsteps; i++) {
        int l = j->first;
        while (l < j->end && strcmp(c->pipe.levels[l].name, s->step_levels[i]))
            l++;
        if (l == j->end)
            return err_set(e, ERR_INPUT, "SUBMIT: steps: '%s' is not a level this job runs",
                           s->step_levels[i]);
        j->steps[l] = s->steps[i];
    }
    if (s->direct && c->pipe.levels[j->end - 1].kind != LEVEL_KIND_REFINE &&
        c->pipe.levels[j->end - 1].kind != LEVEL_KIND_DIRECT)
        return err_set(e, ERR_INPUT,
                       "SUBMIT: direct: the job's last level %s is not a refine level",
                       c->pipe.levels[j->end - 1].name);
    return 0;
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
    return job_plan_sampling(c, j, e);
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

/* Register j as running, its output directory made and (with --state, when text is given) its
 * spec journaled; a negative code with e (j is then freed). */
static int job_register(coord_t *c, coord_job *j, const char *text, strata_err *e)
{
    int rc = ERR_INPUT;
    if (coord_jobs_make_room(c->jobs, j->id) < 0) {
        err_set(e, rc, "SUBMIT: job %s is already running (or still writing)", j->id);
    } else if ((rc = coord_job_paths(c, j, e)) == 0 && (rc = coord_mkdirs(j->dir, e)) == 0 &&
               (rc = coord_state_accept(c, j, text, e)) == 0) {
        if (coord_jobs_add(c->jobs, j) == 0) return 0;
        rc = err_set(e, ERR_NOMEM, "coordinator out of memory");
    }
    coord_job_destroy(&j);
    return rc;
}

/* The spec of ended job old again, from its text (its seeds were released), compared with
 * spec: the first difference in buf, "" when none. */
static const char *ended_diff(coord_t *c, const coord_job *old, const job_spec *spec, char *buf,
                              size_t len)
{
    job_spec was = {0};
    strata_err pe = {0};
    if (!old->text || c->o.parse_job(old->text, strlen(old->text), "state", &was, &pe) < 0) {
        snprintf(buf, len, "its spec cannot be read again");
        return buf;
    }
    const char *diff = job_spec_diff(spec, &was, buf, len);
    job_spec_free(&was);
    return diff;
}

/* With --state, a SUBMIT of a known job's id (one restored after a restart, or a render run
 * again): the same spec as a running or done job is that job again (1); another spec is
 * refused naming the first difference (a negative code); 0 when the id is free to take (no such
 * job, or one cancelled or failed). */
static int job_same_as_known(coord_t *c, const coord_job *j, strata_err *e)
{
    const coord_job *old = coord_jobs_find(c->jobs, j->id);
    if (!c->journal || !old || (old->state != COORD_JOB_RUNNING && old->state != COORD_JOB_DONE))
        return 0;
    char buf[600];
    const char *diff = old->state == COORD_JOB_RUNNING
                           ? job_spec_diff(&j->spec, &old->spec, buf, sizeof buf)
                           : ended_diff(c, old, &j->spec, buf, sizeof buf);
    if (!*diff) return 1;
    return err_set(e, ERR_INPUT,
                   "SUBMIT: job %s exists with other settings in the state directory (%s): "
                   "choose another name",
                   j->id, diff);
}

int coord_job_submit(coord_t *c, const char *text, const char *owner, char *id_out, strata_err *e)
{
    coord_job *j = job_from_text(c, text, e);
    if (!j) return e->code < 0 ? e->code : ERR_INPUT;
    int same = job_same_as_known(c, j, e);
    if (same) {
        snprintf(id_out, COORD_ID_MAX, "%s", j->id);
        if (same > 0) coord_log(c, 0, "job %s submitted again: the same job", j->id);
        coord_job_destroy(&j);
        return same < 0 ? same : 0;
    }
    j->count = (uint32_t)j->spec.count;
    j->arrival = coord_jobs_arrival(c->jobs);
    snprintf(j->owner, sizeof j->owner, "%s", owner); /* journaled with the job */
    int rc = job_register(c, j, text, e);
    if (rc < 0) return rc;
    snprintf(id_out, COORD_ID_MAX, "%s", j->id);
    coord_log(c, 0, "job %s accepted: %u images, %s to %s at %d px, into %s", j->id, j->count,
              c->pipe.levels[j->first].name, c->pipe.levels[j->end - 1].name, j->spec.resolution,
              j->dir);
    coord_job_check_end(c, j); /* a job of 0 images ends at once */
    return 0;
}

coord_job *coord_job_restore(coord_t *c, const char *text, strata_err *e)
{
    coord_job *j = job_from_text(c, text, e);
    if (!j) return NULL;
    j->count = (uint32_t)j->spec.count;
    j->arrival = coord_jobs_arrival(c->jobs);
    size_t bytes = ((size_t)j->count + 7) / 8;
    j->text = strdup(text);
    j->finished = calloc(bytes ? bytes : 1, 1);
    if (!j->text || !j->finished) {
        coord_job_destroy(&j);
        err_set(e, ERR_NOMEM, "coordinator out of memory");
        return NULL;
    }
    /* no text: job_register journals nothing (the record is being replayed) */
    return job_register(c, j, NULL, e) < 0 ? NULL : j;
}
