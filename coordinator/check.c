/* coord_check: the invariants of the coordinator's state, each part's own and those across the
 * parts, verified after every message when options.check is set (tests turn it on; it costs a
 * pass over the slots, workers and jobs, so a production farm leaves it off). */
#include "coordinator/coord_internal.h"

#include <stdio.h>
#include <stdlib.h>

/* Slot sl (in flight) belongs to a running job whose levels include its level; a running task
 * is leased to a live worker of that level. */
static int check_slot(const coord_t *c, const coord_slot *sl, strata_err *e)
{
    const coord_job *j = sl->job;
    if (coord_jobs_running_index(c->jobs, j) < 0)
        return err_set(e, ERR_RUNTIME, "task %llu: its job %s is not running",
                       (unsigned long long)sl->task, j->id);
    if (sl->level < j->first || sl->level >= j->end || sl->image >= j->cursor)
        return err_set(e, ERR_RUNTIME, "task %llu: job %s image %u at level %u is not planned",
                       (unsigned long long)sl->task, j->id, sl->image, sl->level);
    if (coord_job_is_finished(j, sl->image))
        return err_set(e, ERR_RUNTIME, "task %llu: job %s image %u is in flight but finished",
                       (unsigned long long)sl->task, j->id, sl->image);
    if (sl->state != COORD_SLOT_RUNNING) return 0;
    int w = coord_registry_by_serial(c->workers, sl->worker);
    if (w < 0)
        return err_set(e, ERR_RUNTIME, "task %llu: leased to worker #%u, which is gone",
                       (unsigned long long)sl->task, sl->worker);
    const coord_worker *wk = coord_registry_at(c->workers, (uint32_t)w);
    if (wk->level != sl->level)
        return err_set(e, ERR_RUNTIME, "task %llu: a level %u task leased to worker %s of level %d",
                       (unsigned long long)sl->task, sl->level, wk->name, wk->level);
    return 0;
}

/* What the slots hold, counted per running job and level, and per worker. */
typedef struct tally {
    uint32_t *queued, *running, *active; /* [job * PIPELINE_MAX_LEVELS + level], [job] */
    uint32_t *leases;                    /* [worker index] */
    uint32_t writing;                    /* slots waiting for their final PNG */
} tally;

static void tally_free(tally *t)
{
    free(t->queued);
    free(t->running);
    free(t->active);
    free(t->leases);
}

/* Count every slot in flight into t, checking each. */
static int tally_slots(const coord_t *c, tally *t, strata_err *e)
{
    uint32_t njobs = coord_jobs_running(c->jobs), nw = coord_registry_size(c->workers);
    size_t nl = (size_t)njobs * PIPELINE_MAX_LEVELS;
    t->queued = calloc(nl + 1, sizeof *t->queued);
    t->running = calloc(nl + 1, sizeof *t->running);
    t->active = calloc(njobs + 1, sizeof *t->active);
    t->leases = calloc(nw + 1, sizeof *t->leases);
    if (!t->queued || !t->running || !t->active || !t->leases)
        return err_set(e, ERR_NOMEM, "no memory to check the state");
    for (uint32_t s = 0; s < coord_queue_slots(c->queue); s++) {
        const coord_slot *sl = coord_queue_slot_c(c->queue, s);
        if (sl->state == COORD_SLOT_FREE) continue;
        if (check_slot(c, sl, e) < 0) return -1;
        int64_t ji = coord_jobs_running_index(c->jobs, sl->job);
        size_t at = (size_t)ji * PIPELINE_MAX_LEVELS + sl->level;
        t->active[ji]++;
        t->queued[at] += sl->state == COORD_SLOT_QUEUED;
        t->running[at] += sl->state == COORD_SLOT_RUNNING;
        t->writing += sl->state == COORD_SLOT_WRITING;
        if (sl->state == COORD_SLOT_RUNNING)
            t->leases[coord_registry_by_serial(c->workers, sl->worker)]++;
    }
    return 0;
}

/* Each running job counts exactly the images and tasks the queue holds for it, plus its images
 * whose final PNG waits for the disk (at least those the pool holds). */
static int check_job_counts(const coord_t *c, const tally *t, strata_err *e)
{
    for (uint32_t i = 0; i < coord_jobs_running(c->jobs); i++) {
        const coord_job *j = coord_jobs_running_at(c->jobs, i);
        uint32_t finals = 0;
        coord_writer_held(c->writer, j, &finals);
        if (j->active != t->active[i] + j->held || finals > j->held)
            return err_set(e, ERR_RUNTIME,
                           "job %s: %u images in flight counted, %u in the queue, %u held for the "
                           "disk (%u by the pool)",
                           j->id, j->active, t->active[i], j->held, finals);
        for (int l = 0; l < PIPELINE_MAX_LEVELS; l++) {
            size_t at = (size_t)i * PIPELINE_MAX_LEVELS + l;
            if (j->lv[l].queued != t->queued[at] || j->lv[l].running != t->running[at])
                return err_set(e, ERR_RUNTIME,
                               "job %s level %d: counts %u queued, %u running; the queue holds "
                               "%u queued, %u running",
                               j->id, l, j->lv[l].queued, j->lv[l].running, t->queued[at],
                               t->running[at]);
        }
    }
    return 0;
}

/* Each worker counts exactly the tasks leased to it. */
static int check_leases(const coord_t *c, const tally *t, strata_err *e)
{
    for (uint32_t i = 0; i < coord_registry_size(c->workers); i++) {
        const coord_worker *w = coord_registry_at(c->workers, i);
        if (w->running != t->leases[i])
            return err_set(e, ERR_RUNTIME, "worker %s: %u tasks running counted, %u leased to it",
                           w->name, w->running, t->leases[i]);
    }
    return 0;
}

/* The writes pending per job add up to the requests with the pool, and cover the slots waiting
 * for their final PNG; a write held for the disk belongs to a running job. */
static int check_writes(const coord_t *c, const tally *t, strata_err *e)
{
    for (const coord_write *w = coord_writer_held_list(c->writer); w; w = w->next)
        if (coord_jobs_running_index(c->jobs, w->job) < 0)
            return err_set(e, ERR_RUNTIME, "a write of job %s is held, but the job is not running",
                           w->job->id);
    uint64_t pending = 0;
    for (uint32_t i = 0; i < coord_jobs_count(c->jobs); i++)
        pending += coord_jobs_at(c->jobs, i)->pending_writes;
    if (pending != c->writes || t->writing > pending)
        return err_set(e, ERR_RUNTIME,
                       "writes: jobs wait for %llu, the pool holds %u, %u images wait for theirs",
                       (unsigned long long)pending, c->writes, t->writing);
    return 0;
}

int coord_check(coord_t *c, strata_err *e)
{
    if (coord_registry_check(c->workers, e) < 0 || coord_queue_check(c->queue, e) < 0 ||
        coord_jobs_check(c->jobs, e) < 0)
        return ERR_RUNTIME;
    tally t = {0};
    int rc = tally_slots(c, &t, e);
    if (rc == 0) rc = check_job_counts(c, &t, e);
    if (rc == 0) rc = check_leases(c, &t, e);
    if (rc == 0) rc = check_writes(c, &t, e);
    if (rc == 0) rc = coord_state_check(c, e);
    tally_free(&t);
    return rc < 0 ? ERR_RUNTIME : 0;
}

void coord_check_after(coord_t *c, const char *event)
{
    if (!c->o.check) return;
    c->checks++;
    strata_err e = {0};
    if (coord_check(c, &e) == 0) return;
    fprintf(stderr, "coordinator: invariant broken after %s: %s\n", event, e.msg);
    abort();
}
