/* The job table and the job record (see job_table.h). */
#include "coordinator/job_table.h"
#include "common/common.h"
#include "coordinator/grow.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { REASON_SCAN = 32 }; /* recent reasons compared before storing a new copy */

struct coord_jobs {
    coord_job **jobs;
    uint32_t njobs, capjobs, arrivals;
    coord_job **running; /* jobs in state RUNNING, in arrival order */
    uint32_t nrunning, caprunning;
    coord_level_count retired[PIPELINE_MAX_LEVELS]; /* what forgotten jobs counted */
};

/* 10 ms to 10 min: a tiny test level's tasks to a large tiled level's. */
const uint32_t coord_task_bucket_ms[COORD_TASK_BUCKETS - 1] = {
    10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000, 300000, 600000};

/* ---------------------------------------------------------------- one job */

coord_job *coord_job_new(void)
{
    return calloc(1, sizeof(coord_job));
}

void coord_job_destroy(coord_job **jp)
{
    coord_job *j = jp ? *jp : NULL;
    if (!j) return;
    job_spec_free(&j->spec);
    for (uint32_t i = 0; i < j->nreasons; i++)
        free(j->reasons[i]);
    free(j->reasons);
    free(j->fails);
    free(j->strikes);
    free(j->text);
    free(j->finished);
    free(j->resume);
    free(j->stall);
    free(j->timings);
    free(j);
    *jp = NULL;
}

const char *coord_job_state_name(coord_job_state s)
{
    static const char *const names[] = {[COORD_JOB_RUNNING] = "running",
                                        [COORD_JOB_DONE] = "done",
                                        [COORD_JOB_CANCELLED] = "cancelled",
                                        [COORD_JOB_FAILED] = "failed"};
    return names[s];
}

const char *coord_job_state_shown(const coord_job *j)
{
    return j->state == COORD_JOB_RUNNING && j->stalled ? "stalled" : coord_job_state_name(j->state);
}

uint64_t coord_job_seed(const coord_job *j, uint32_t i)
{
    return j->spec.seeds ? j->spec.seeds[i] : j->spec.seed + i;
}

uint32_t coord_job_next_image(coord_job *j)
{
    while (j->cursor < j->count && coord_job_is_finished(j, j->cursor))
        j->cursor++;
    return j->cursor;
}

uint32_t coord_job_image_started(coord_job *j)
{
    coord_job_next_image(j);
    j->active++;
    j->next++;
    return j->cursor++;
}

void coord_job_mark_finished(coord_job *j, uint32_t image)
{
    if (j->finished && image < j->count) j->finished[image / 8] |= (uint8_t)(1u << (image % 8));
}

int coord_job_is_finished(const coord_job *j, uint32_t image)
{
    return j->finished && image < j->count && (j->finished[image / 8] >> (image % 8)) & 1;
}

void coord_job_image_finished(coord_job *j, int ok)
{
    if (ok)
        j->done++;
    else
        j->failed++;
    j->active--;
    j->version++;
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

void coord_job_image_written(coord_job *j, uint32_t image)
{
    j->latest = image + 1;
}

int coord_job_fail_image(coord_job *j, uint32_t image, const char *reason)
{
    uint32_t r = reason_intern(j, reason);
    if (r == UINT32_MAX || coord_grow(&j->fails, &j->capfails, j->nfails + 1, sizeof *j->fails))
        return -1;
    j->fails[j->nfails++] = (coord_failure){.image = image, .reason = r};
    return 0;
}

void coord_job_task_queued(coord_job *j, int level)
{
    j->lv[level].queued++;
    j->version++;
}

void coord_job_task_leased(coord_job *j, int level)
{
    j->lv[level].queued--;
    j->lv[level].running++;
    j->version++;
}

void coord_job_task_unqueued(coord_job *j, int level)
{
    j->lv[level].queued--;
    j->version++;
}

void coord_job_task_unleased(coord_job *j, int level)
{
    j->lv[level].running--;
    j->lv[level].ended++;
    j->version++;
}

void coord_job_task_done(coord_job *j, int level, uint64_t elapsed_ms)
{
    /* a day per task at most: a worker's bogus elapsed_ms cannot wrap the level's sum */
    j->lv[level].compute_ms += elapsed_ms < 86400000u ? elapsed_ms : 86400000u;
    j->lv[level].done++;
    int b = 0;
    while (b < COORD_TASK_BUCKETS - 1 && elapsed_ms > coord_task_bucket_ms[b])
        b++;
    j->lv[level].hist[b]++;
    j->version++;
}

void coord_job_write_queued(coord_job *j)
{
    j->pending_writes++;
}

void coord_job_write_done(coord_job *j)
{
    j->pending_writes--;
}

void coord_job_stall(coord_job *j, const char *reason)
{
    free(j->stall);
    j->stall = strdup(reason);
    j->stalled = 1;
    j->version++;
}

void coord_job_unstall(coord_job *j)
{
    free(j->stall);
    j->stall = NULL;
    j->stalled = 0;
    j->version++;
}

void coord_job_finished(coord_job *j)
{
    j->state = j->count && j->failed == j->count ? COORD_JOB_FAILED : COORD_JOB_DONE;
    j->version++;
}

void coord_job_cancelled(coord_job *j)
{
    j->active = j->held = 0;
    for (int l = 0; l < PIPELINE_MAX_LEVELS; l++)
        j->lv[l].queued = j->lv[l].running = 0;
    j->state = COORD_JOB_CANCELLED;
    j->version++;
}

void coord_job_shrink(coord_job *j)
{
    job_spec_free(&j->spec);
    j->spec.seeds = NULL;
    for (uint32_t i = 0; i < j->nreasons; i++)
        free(j->reasons[i]);
    free(j->reasons);
    free(j->fails);
    free(j->finished);
    free(j->resume);
    free(j->timings);
    j->timings = NULL;
    j->reasons = NULL;
    j->fails = NULL;
    j->finished = NULL;
    j->resume = NULL;
    j->nreasons = j->capreasons = j->nfails = j->capfails = j->nresume = j->resume_at = 0;
}

uint32_t *coord_job_strikes(coord_job *j, uint64_t h, int create)
{
    for (uint32_t i = 0; i < j->nstrikes; i++)
        if (j->strikes[i].rid_hash == h) return &j->strikes[i].count;
    if (!create || coord_grow(&j->strikes, &j->capstrikes, j->nstrikes + 1, sizeof *j->strikes))
        return NULL;
    j->strikes[j->nstrikes] = (struct coord_strike){h, 0};
    return &j->strikes[j->nstrikes++].count;
}

/* ---------------------------------------------------------------- the table */

int coord_jobs_new(coord_jobs_t **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? 0 : -1;
}

void coord_jobs_destroy(coord_jobs_t **tp)
{
    coord_jobs_t *t = tp ? *tp : NULL;
    if (!t) return;
    for (uint32_t i = 0; i < t->njobs; i++)
        coord_job_destroy(&t->jobs[i]);
    free(t->jobs);
    free(t->running);
    free(t);
    *tp = NULL;
}

uint32_t coord_jobs_arrival(coord_jobs_t *t)
{
    return ++t->arrivals;
}

/* Forget the job at index i of the table (its counts go to retired). */
static void jobs_forget(coord_jobs_t *t, uint32_t i)
{
    for (int l = 0; l < PIPELINE_MAX_LEVELS; l++) {
        const coord_level_count *from = &t->jobs[i]->lv[l];
        coord_level_count *to = &t->retired[l];
        to->done += from->done;
        to->ended += from->ended;
        to->compute_ms += from->compute_ms;
        for (int b = 0; b < COORD_TASK_BUCKETS; b++)
            to->hist[b] += from->hist[b];
    }
    coord_job_destroy(&t->jobs[i]);
    memmove(&t->jobs[i], &t->jobs[i + 1], (t->njobs - i - 1) * sizeof *t->jobs);
    t->njobs--;
}

int coord_jobs_make_room(coord_jobs_t *t, const char *id)
{
    for (uint32_t i = 0; i < t->njobs; i++) {
        if (strcmp(t->jobs[i]->id, id)) continue;
        /* the writer pool still points at a job with pending writes (a cancelled one) */
        if (t->jobs[i]->state == COORD_JOB_RUNNING || t->jobs[i]->pending_writes) return -1;
        jobs_forget(t, i);
        return 0;
    }
    return 0;
}

/* Forget the oldest ended jobs beyond COORD_KEEP_ENDED (their outputs stay on disk). */
static void jobs_trim(coord_jobs_t *t)
{
    uint32_t ended = t->njobs - t->nrunning;
    for (uint32_t i = 0; i < t->njobs && ended > COORD_KEEP_ENDED;) {
        coord_job *j = t->jobs[i];
        if (j->state == COORD_JOB_RUNNING || j->pending_writes) {
            i++;
            continue;
        }
        jobs_forget(t, i);
        ended--;
    }
}

int coord_jobs_add(coord_jobs_t *t, coord_job *j)
{
    if (coord_grow(&t->jobs, &t->capjobs, t->njobs + 1, sizeof *t->jobs) < 0 ||
        coord_grow(&t->running, &t->caprunning, t->nrunning + 1, sizeof *t->running) < 0)
        return -1;
    t->jobs[t->njobs++] = j;
    t->running[t->nrunning++] = j;
    j->added_ms = clock_now_ms();
    jobs_trim(t);
    return 0;
}

void coord_jobs_stopped(coord_jobs_t *t, coord_job *j)
{
    for (uint32_t i = 0; i < t->nrunning; i++)
        if (t->running[i] == j) {
            j->ended_ms = clock_now_ms();
            memmove(&t->running[i], &t->running[i + 1], (t->nrunning - i - 1) * sizeof *t->running);
            t->nrunning--;
            return;
        }
}

const coord_level_count *coord_jobs_retired(const coord_jobs_t *t)
{
    return t->retired;
}

coord_job *coord_jobs_find(const coord_jobs_t *t, const char *id)
{
    for (uint32_t i = 0; i < t->njobs; i++)
        if (!strcmp(t->jobs[i]->id, id)) return t->jobs[i];
    return NULL;
}

uint32_t coord_jobs_count(const coord_jobs_t *t)
{
    return t->njobs;
}

coord_job *coord_jobs_at(const coord_jobs_t *t, uint32_t i)
{
    return t->jobs[i];
}

uint32_t coord_jobs_running(const coord_jobs_t *t)
{
    return t->nrunning;
}

coord_job *coord_jobs_running_at(const coord_jobs_t *t, uint32_t i)
{
    return t->running[i];
}

int64_t coord_jobs_running_index(const coord_jobs_t *t, const coord_job *j)
{
    uint32_t lo = 0, hi = t->nrunning;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (t->running[mid]->arrival < j->arrival)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < t->nrunning && t->running[lo] == j ? (int64_t)lo : -1;
}

coord_job *coord_jobs_next_to_start(const coord_jobs_t *t, int level)
{
    coord_job *best = NULL;
    /* the running list is in arrival order: the first of the highest priority wins */
    for (uint32_t i = 0; i < t->nrunning; i++) {
        coord_job *j = t->running[i];
        if (j->first == level && j->next < j->count && !j->stalled &&
            (!best || j->spec.priority > best->spec.priority))
            best = j;
    }
    return best;
}

/* Job j's images add up: while it runs, every image started is done, failed or in flight;
 * once it ended, nothing is in flight. */
static int check_job(const coord_job *j, strata_err *e)
{
    uint32_t in_flight = 0;
    for (int l = 0; l < PIPELINE_MAX_LEVELS; l++)
        in_flight |= j->lv[l].queued | j->lv[l].running;
    if (j->state != COORD_JOB_RUNNING && (in_flight || j->active))
        return err_set(
            e, ERR_RUNTIME, "job %s: %s but %u images in flight (a level counts %s tasks)", j->id,
            coord_job_state_name(j->state), j->active, in_flight ? "queued or running" : "no");
    if (j->state == COORD_JOB_RUNNING &&
        ((uint64_t)j->done + j->failed + j->active != j->next || j->next > j->count))
        return err_set(e, ERR_RUNTIME,
                       "job %s: %u started of %u, but %u done + %u failed + %u in flight", j->id,
                       j->next, j->count, j->done, j->failed, j->active);
    return 0;
}

int coord_jobs_check(const coord_jobs_t *t, strata_err *e)
{
    uint32_t running = 0;
    for (uint32_t i = 0; i < t->njobs; i++) {
        if (check_job(t->jobs[i], e) < 0) return -1;
        running += t->jobs[i]->state == COORD_JOB_RUNNING;
    }
    for (uint32_t i = 0; i < t->nrunning; i++)
        if (t->running[i]->state != COORD_JOB_RUNNING ||
            (i > 0 && t->running[i - 1]->arrival >= t->running[i]->arrival))
            return err_set(e, ERR_RUNTIME, "jobs: running list entry %u (%s) out of place", i,
                           t->running[i]->id);
    if (running != t->nrunning)
        return err_set(e, ERR_RUNTIME, "jobs: %u jobs running, %u in the running list", running,
                       t->nrunning);
    return 0;
}
