/* Jobs: SUBMIT (parse, name, plan, accept), per-image completion, the end of a job (manifest,
 * watchers) and CANCEL. A job keeps counters and a list of failures, not a record per image. */
#include "coordinator/coord_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { REASON_SCAN = 32 }; /* recent reasons compared before storing a new copy */

const char *coord_job_state_name(coord_job_state s)
{
    static const char *const names[] = {[COORD_JOB_RUNNING] = "running",
                                        [COORD_JOB_DONE] = "done",
                                        [COORD_JOB_CANCELLED] = "cancelled",
                                        [COORD_JOB_FAILED] = "failed"};
    return names[s];
}

coord_job *coord_job_find(const coord_t *c, const char *id)
{
    for (uint32_t i = 0; i < c->njobs; i++)
        if (!strcmp(c->jobs[i]->id, id)) return c->jobs[i];
    return NULL;
}

uint64_t coord_job_seed(const coord_job *j, uint32_t i)
{
    return j->spec.seeds ? j->spec.seeds[i] : j->spec.seed + i;
}

int coord_job_out_side(const coord_t *c, const coord_job *j, int level)
{
    return level == j->end - 1 ? j->spec.resolution : c->pipe.levels[level].side;
}

coord_job *coord_job_next_to_start(const coord_t *c, int level)
{
    coord_job *best = NULL;
    /* c->running is in arrival order: the first of the highest priority wins */
    for (uint32_t i = 0; i < c->nrunning; i++) {
        coord_job *j = c->running[i];
        if (j->first == level && j->next < j->count &&
            (!best || j->spec.priority > best->spec.priority))
            best = j;
    }
    return best;
}

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

/* The levels [first, end) job j runs, from proto's planner. -1 with err when the spec does not
 * fit the pipeline. */
static int job_plan(const coord_t *c, coord_job *j, char *err, size_t errlen)
{
    const job_spec *s = &j->spec;
    strata_err e = {0};
    pipeline_plan plan;
    if (s->count < 0) {
        snprintf(err, errlen, "SUBMIT: count: must be positive");
        return -1;
    }
    if (pipeline_plan_levels(&c->pipe, s->resolution, s->start_level, &plan, &e) < 0) {
        snprintf(err, errlen, "SUBMIT: %s", e.msg);
        return -1;
    }
    /* the job parser pairs them; a parser that did not is caught here */
    if (s->start_level[0] && !s->init_images[0]) {
        snprintf(err, errlen, "SUBMIT: init_images: required with start_level");
        return -1;
    }
    j->first = plan.first;
    j->end = plan.end;
    return 0;
}

static void job_free(coord_job *j)
{
    if (!j) return;
    job_spec_free(&j->spec);
    for (uint32_t i = 0; i < j->nreasons; i++)
        free(j->reasons[i]);
    free(j->reasons);
    free(j->fails);
    free(j->strikes);
    free(j);
}

/* Drop j from the running list (kept in arrival order). */
static void running_remove(coord_t *c, coord_job *j)
{
    for (uint32_t i = 0; i < c->nrunning; i++)
        if (c->running[i] == j) {
            memmove(&c->running[i], &c->running[i + 1], (c->nrunning - i - 1) * sizeof *c->running);
            c->nrunning--;
            return;
        }
}

/* Replace the ended job with this id, if any; -1 when it is still running. */
static int job_replace_old(coord_t *c, const char *id)
{
    for (uint32_t i = 0; i < c->njobs; i++) {
        if (strcmp(c->jobs[i]->id, id)) continue;
        /* the writer pool still points at a job with pending writes (a cancelled one) */
        if (c->jobs[i]->state == COORD_JOB_RUNNING || c->jobs[i]->pending_writes) return -1;
        job_free(c->jobs[i]);
        memmove(&c->jobs[i], &c->jobs[i + 1], (c->njobs - i - 1) * sizeof *c->jobs);
        c->njobs--;
        return 0;
    }
    return 0;
}

/* Parse and check a SUBMIT into a new job (not yet registered); NULL with err on bad input. */
/* A job naming another pipeline file than the one served is refused. A path that does not
 * resolve here (written relative to a client elsewhere) cannot be compared and is accepted. */
static int job_pipeline_ok(const coord_t *c, const coord_job *j, char *err, size_t errlen)
{
    char mine[PATH_MAX], theirs[PATH_MAX];
    if (!realpath(c->pipe.path, mine) || !realpath(j->spec.pipeline, theirs)) return 1;
    if (!strcmp(mine, theirs)) return 1;
    snprintf(err, errlen, "SUBMIT: pipeline: %s is not the pipeline this coordinator serves (%s)",
             j->spec.pipeline, c->pipe.path);
    return 0;
}

static coord_job *job_from_text(coord_t *c, const char *text, char *err, size_t errlen)
{
    strata_err pe = {0};
    coord_job *j = calloc(1, sizeof *j);
    if (!j) {
        snprintf(err, errlen, "coordinator out of memory");
        return NULL;
    }
    if (!c->o.parse_job) {
        snprintf(err, errlen, "SUBMIT: this coordinator has no job parser");
    } else if (c->o.parse_job(text, strlen(text), "SUBMIT", &j->spec, &pe) < 0) {
        snprintf(err, errlen, "%s", pe.msg);
        free(j); /* on error the parser leaves nothing owned */
        return NULL;
    } else if (j->spec.name[0] && !job_id_ok(j->spec.name)) {
        snprintf(err, errlen, "SUBMIT: name: \"%s\" is not a valid job id", j->spec.name);
    } else if (job_pipeline_ok(c, j, err, errlen) && job_plan(c, j, err, errlen) == 0) {
        if (j->spec.name[0])
            snprintf(j->id, sizeof j->id, "%s", j->spec.name);
        else
            job_default_id(text, j->id, sizeof j->id);
        return j;
    }
    job_free(j);
    return NULL;
}

/* Forget the oldest ended jobs beyond COORD_KEEP_ENDED (their outputs stay on disk). */
static void jobs_trim(coord_t *c)
{
    uint32_t ended = c->njobs - c->nrunning;
    for (uint32_t i = 0; i < c->njobs && ended > COORD_KEEP_ENDED;) {
        coord_job *j = c->jobs[i];
        if (j->state == COORD_JOB_RUNNING || j->pending_writes) {
            i++;
            continue;
        }
        job_free(j);
        memmove(&c->jobs[i], &c->jobs[i + 1], (c->njobs - i - 1) * sizeof *c->jobs);
        c->njobs--;
        ended--;
    }
}

/* Register j as running; -1 with err (j is then freed). */
static int job_register(coord_t *c, coord_job *j, char *err, size_t errlen)
{
    if (job_replace_old(c, j->id) < 0) {
        snprintf(err, errlen, "SUBMIT: job %s is already running (or still writing)", j->id);
    } else if (snprintf(j->dir, sizeof j->dir, "%s/%s", j->spec.out[0] ? j->spec.out : ".",
                        j->id) >= (int)sizeof j->dir) {
        snprintf(err, errlen, "SUBMIT: out: path too long");
    } else if (coord_mkdirs(j->dir, err, errlen) == 0) {
        if (coord_grow(&c->jobs, &c->capjobs, c->njobs + 1, sizeof *c->jobs) == 0 &&
            coord_grow(&c->running, &c->caprunning, c->nrunning + 1, sizeof *c->running) == 0) {
            c->jobs[c->njobs++] = j;
            c->running[c->nrunning++] = j;
            jobs_trim(c);
            return 0;
        }
        snprintf(err, errlen, "coordinator out of memory");
    }
    job_free(j);
    return -1;
}

static void job_end(coord_t *c, coord_job *j);

int coord_job_submit(coord_t *c, const char *text, char *id_out, char *err, size_t errlen)
{
    coord_job *j = job_from_text(c, text, err, errlen);
    if (!j) return -1;
    j->count = (uint32_t)j->spec.count;
    j->arrival = ++c->arrivals;
    if (job_register(c, j, err, errlen) < 0) return -1;
    snprintf(id_out, COORD_ID_MAX, "%s", j->id);
    coord_log(c, 0, "job %s accepted: %u images, %s to %s at %d px, into %s", j->id, j->count,
              c->pipe.levels[j->first].name, c->pipe.levels[j->end - 1].name, j->spec.resolution,
              j->dir);
    coord_job_check_end(c, j); /* a job of 0 images ends at once */
    return 0;
}

/* Index of reason in j's table, stored once; UINT32_MAX when out of memory. */
static uint32_t reason_intern(coord_job *j, const char *reason)
{
    uint32_t lo = j->nreasons > REASON_SCAN ? j->nreasons - REASON_SCAN : 0;
    for (uint32_t i = j->nreasons; i-- > lo;)
        if (!strcmp(j->reasons[i], reason)) return i;
    char *copy = strdup(reason);
    if (!copy || coord_grow(&j->reasons, &j->capreasons, j->nreasons + 1, sizeof *j->reasons)) {
        free(copy);
        return UINT32_MAX;
    }
    j->reasons[j->nreasons] = copy;
    return j->nreasons++;
}

/* Release what only a running job needs. */
static void job_shrink(coord_job *j)
{
    job_spec_free(&j->spec);
    j->spec.seeds = NULL;
    for (uint32_t i = 0; i < j->nreasons; i++)
        free(j->reasons[i]);
    free(j->reasons);
    free(j->fails);
    j->reasons = NULL;
    j->fails = NULL;
    j->nreasons = j->capreasons = j->nfails = j->capfails = 0;
}

/* Every image of j is written or failed: the manifest, then the watchers. */
static void job_end(coord_t *c, coord_job *j)
{
    char err[600];
    j->state = j->count && j->failed == j->count ? COORD_JOB_FAILED : COORD_JOB_DONE;
    j->version++;
    if (coord_write_manifest(c, j, err, sizeof err) < 0) coord_log(c, 1, "job %s: %s", j->id, err);
    coord_log(c, j->failed > 0, "job %s %s: %u written, %u failed", j->id,
              coord_job_state_name(j->state), j->done, j->failed);
    running_remove(c, j);
    coord_watchers_job_ended(c, j);
    job_shrink(j);
}

void coord_job_check_end(coord_t *c, coord_job *j)
{
    if (j->state == COORD_JOB_RUNNING && j->done + j->failed == j->count && !j->pending_writes)
        job_end(c, j);
}

static void image_finished(coord_t *c, uint32_t s)
{
    coord_job *j = c->slots[s].job;
    coord_slot_free(c, s);
    j->active--;
    j->version++;
    coord_job_check_end(c, j);
}

void coord_image_ok(coord_t *c, uint32_t s)
{
    c->slots[s].job->done++;
    image_finished(c, s);
}

void coord_image_failed(coord_t *c, uint32_t s, const char *reason)
{
    coord_slot *sl = &c->slots[s];
    coord_job *j = sl->job;
    uint32_t r = reason_intern(j, reason);
    if (r != UINT32_MAX &&
        coord_grow(&j->fails, &j->capfails, j->nfails + 1, sizeof *j->fails) == 0)
        j->fails[j->nfails++] = (coord_failure){.image = sl->image, .reason = r};
    else
        coord_log(c, 1, "job %s image %u: reason not kept (out of memory)", j->id, sl->image);
    coord_log(c, 1, "job %s image %u failed: %s", j->id, sl->image, reason);
    j->failed++;
    image_finished(c, s);
}

int coord_job_cancel(coord_t *c, const char *id, char *err, size_t errlen)
{
    coord_job *j = coord_job_find(c, id);
    if (!j) {
        snprintf(err, errlen, "CANCEL: no job %s", id);
        return -1;
    }
    if (j->state != COORD_JOB_RUNNING) {
        snprintf(err, errlen, "CANCEL: job %s already ended (%s)", id,
                 coord_job_state_name(j->state));
        return -1;
    }
    /* queued entries go stale in their heaps; running leases end, so late RESULTs are dropped */
    for (uint32_t s = 0; s < c->nslots; s++) {
        coord_slot *sl = &c->slots[s];
        if (sl->state == COORD_SLOT_FREE || sl->job != j) continue;
        int w = sl->state == COORD_SLOT_RUNNING ? coord_worker_by_serial(c, sl->worker) : -1;
        if (w >= 0 && c->workers[w].running) c->workers[w].running--;
        coord_slot_free(c, s);
    }
    j->active = 0;
    for (int l = 0; l < PIPELINE_MAX_LEVELS; l++)
        j->lv[l].queued = j->lv[l].running = 0;
    j->state = COORD_JOB_CANCELLED;
    j->version++;
    coord_log(c, 0, "job %s cancelled: %u written, %u failed, %u not run", j->id, j->done,
              j->failed, j->count - j->done - j->failed);
    running_remove(c, j);
    coord_watchers_job_ended(c, j);
    job_shrink(j);
    return 0;
}

void coord_jobs_free(coord_t *c)
{
    for (uint32_t i = 0; i < c->njobs; i++)
        job_free(c->jobs[i]);
    free(c->jobs);
    free(c->running);
    c->jobs = c->running = NULL;
    c->njobs = c->nrunning = 0;
}
