/* Scheduling and leases: queued tasks go to workers with credits (deepest level first), new
 * images start only within the backpressure bound, RESULTs count only on their current lease,
 * and failed or lost tasks are retried elsewhere up to max_attempts. */
#include "coordinator/coord_internal.h"
#include "coordinator/outputs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *level_name(const coord_t *c, int level)
{
    return c->pipe.levels[level].name;
}

static int is_excluded(const coord_slot *sl, uint64_t rid_hash)
{
    for (unsigned i = 0; i < sl->nexcluded; i++)
        if (sl->excluded[i] == rid_hash) return 1;
    return 0;
}

/* A worker that failed COORD_JOB_STRIKES tasks of a job is kept off it (docs/design.md section
 * 6): one broken worker must not fail a whole job while others could run it. */
static int kept_off(coord_job *j, uint64_t h)
{
    const uint32_t *n = coord_job_strikes(j, h, 0);
    return n && *n >= COORD_JOB_STRIKES;
}

/* The effective backpressure bound. */
static uint32_t max_in_flight(const coord_t *c)
{
    if (c->o.max_images_in_flight > 0) return (uint32_t)c->o.max_images_in_flight;
    uint32_t n = 4 * coord_registry_size(c->workers);
    return n < 8 ? 8 : n;
}

/* The side a level's output must have for job j (the job's resolution on its last level). */
static int out_side(const coord_t *c, const coord_job *j, int level)
{
    return level == j->end - 1 ? j->spec.resolution : c->pipe.levels[level].side;
}

/* Queue slot s at its level (front: before fresh tasks) and count it for its job; a slot that
 * cannot be queued (out of memory) fails its image. 0, or -1 when it failed. */
static int enqueue(coord_t *c, uint32_t s, int front)
{
    if (coord_queue_push(c->queue, s, front) < 0) {
        coord_image_failed(c, s, "coordinator out of memory");
        return -1;
    }
    const coord_slot *sl = coord_queue_slot(c->queue, s);
    coord_job_task_queued(sl->job, sl->level);
    return 0;
}

/* A worker of level with a credit for slot sl, round-robin, preferring workers that have not
 * failed the task. -1: wait (a worker that has not failed it exists but has no credit now);
 * -2: no worker can take it; -3: every worker of the level is kept off the job. When every
 * worker of the level failed the task, one of them may retry. */
static int pick_worker(coord_t *c, int level, const coord_slot *sl)
{
    uint32_t n = coord_registry_size(c->workers), rr = coord_registry_cursor(c->workers, level);
    int fallback = -1, eligible = 0, banned = 0, present = 0;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = (rr + k) % n;
        const coord_worker *w = coord_registry_at(c->workers, i);
        if (w->level != level) continue;
        present = 1;
        if (kept_off(sl->job, w->rid_hash)) {
            banned = 1;
            continue;
        }
        int excluded = is_excluded(sl, w->rid_hash);
        eligible |= !excluded;
        if (w->credits == 0) continue;
        if (!excluded) {
            coord_registry_set_cursor(c->workers, level, i + 1);
            return (int)i;
        }
        if (fallback < 0) fallback = (int)i;
    }
    if (eligible) return -1;
    if (fallback >= 0) coord_registry_set_cursor(c->workers, level, (uint32_t)fallback + 1);
    if (fallback < 0 && banned && present) return -3;
    return fallback >= 0 ? fallback : -2;
}

/* The TASK for slot s; its strings and cond are the slot's and must outlive the send. */
static void build_task(const coord_t *c, const coord_slot *sl, proto_msg *m)
{
    const coord_job *j = sl->job;
    const level_spec *l = &c->pipe.levels[sl->level];
    memset(m, 0, sizeof *m);
    m->type = PROTO_TASK;
    struct proto_task *t = &m->task;
    t->task = sl->task;
    t->attempt = sl->attempt;
    t->job = j->id;
    t->image = sl->image;
    t->seed = coord_job_seed(j, sl->image);
    t->level = l->name;
    t->level_index = sl->level;
    t->class_label = j->spec.class_label;
    if (sl->cond) {
        size_t side = (size_t)sl->cond_side;
        t->cond = (proto_tensor){.dtype = PROTO_DTYPE_U8,
                                 .ndim = 3,
                                 .shape = {side, side, 3},
                                 .data = sl->cond,
                                 .nbytes = side * side * 3};
    }
    if (sl->level == j->end - 1 && j->spec.resolution != l->side)
        t->params.resize = (uint32_t)j->spec.resolution;
    t->params.steps = (uint32_t)j->steps[sl->level];
    t->params.direct = j->spec.direct && sl->level == j->end - 1;
}

/* Fail the image of slot s, a task popped from its queue and not leased: it no longer counts as
 * queued at its level. */
static void fail_unqueued(coord_t *c, uint32_t s, const char *reason)
{
    coord_slot *sl = coord_queue_slot(c->queue, s);
    coord_job_task_unqueued(sl->job, sl->level);
    coord_image_failed(c, s, reason);
}

/* Lease slot s to worker w. A failed send puts it back in front and parks w's credits until
 * the next heartbeat tick (a retry, not a busy loop; liveness decides whether w is gone). */
static void send_task(coord_t *c, int w, uint32_t s)
{
    const coord_worker *wk = coord_registry_at(c->workers, (uint32_t)w);
    coord_slot *sl = coord_queue_slot(c->queue, s);
    proto_msg m;
    strata_err e = {0};
    build_task(c, sl, &m);
    if (proto_send(c->wsock, &wk->rid, &m, &e) < 0) {
        coord_log(c, 1, "task %llu to worker %s not sent: %s", (unsigned long long)sl->task,
                  wk->name, e.msg);
        coord_registry_park(c->workers, (uint32_t)w);
        if (coord_queue_push(c->queue, s, 1) < 0) fail_unqueued(c, s, "coordinator out of memory");
        return;
    }
    coord_registry_lease(c->workers, (uint32_t)w);
    coord_queue_lease(c->queue, s, wk->serial);
    coord_job_task_leased(sl->job, sl->level);
    coord_log(c, 0, "task %llu attempt %u (%s #%u %s) -> worker %s", (unsigned long long)sl->task,
              sl->attempt, sl->job->id, sl->image, level_name(c, sl->level), wk->name);
}

/* Start the next image of the best job beginning at level: 1 when one was queued, 0 when one
 * failed before starting (a bad init image), -1 when there is none. */
static int release_image(coord_t *c, int level)
{
    coord_job *j = coord_jobs_next_to_start(c->jobs, level);
    if (!j) return -1;
    int64_t s = coord_queue_start(c->queue, j, coord_job_next_image(j), j->spec.priority,
                                  j->arrival, level);
    if (s < 0) {
        coord_log(c, 1, "no memory for another image in flight");
        return -1;
    }
    coord_job_image_started(j);
    coord_slot *sl = coord_queue_slot(c->queue, (uint32_t)s);
    if (!coord_state_resume(c, (uint32_t)s) && j->first > 0) {
        strata_err e = {0};
        if (coord_read_init(&c->pipe, j, sl->image, &sl->cond, &sl->cond_side, &e) < 0) {
            coord_image_failed(c, (uint32_t)s, e.msg);
            return 0;
        }
    }
    coord_log(c, 0, "job %s image %u started at %s", j->id, sl->image, level_name(c, sl->level));
    return enqueue(c, (uint32_t)s, 0) < 0 ? 0 : 1;
}

/* Dispatch level while its workers have credits. Queued tasks that wait for a worker that has
 * not failed them are set aside for this pass (at most COORD_SKIP_MAX). */
static void dispatch_level(coord_t *c, int level)
{
    uint32_t skipped[COORD_SKIP_MAX], nskipped = 0, max = max_in_flight(c);
    while (coord_registry_credits(c->workers, level) > 0) {
        int64_t s = coord_queue_pop(c->queue, level);
        if (s < 0) {
            if (coord_queue_active(c->queue) >= max || release_image(c, level) < 0) break;
            continue;
        }
        int w = pick_worker(c, level, coord_queue_slot(c->queue, (uint32_t)s));
        if (w >= 0) {
            send_task(c, w, (uint32_t)s);
            continue;
        }
        if (w == -3) {
            char reason[128];
            snprintf(reason, sizeof reason, "%s: every worker was kept off this job",
                     level_name(c, level));
            fail_unqueued(c, (uint32_t)s, reason);
            continue;
        }
        skipped[nskipped++] = (uint32_t)s;
        if (w == -2 || nskipped == COORD_SKIP_MAX) break;
    }
    for (uint32_t i = 0; i < nskipped; i++) {
        uint32_t s = skipped[i];
        if (coord_queue_push(c->queue, s, coord_queue_slot(c->queue, s)->front) < 0)
            fail_unqueued(c, s, "coordinator out of memory");
    }
}

void coord_dispatch(coord_t *c)
{
    for (int l = c->pipe.nlevels - 1; l >= 0; l--)
        dispatch_level(c, l);
}

/* The lease of slot s ended (a RESULT or a lost worker): uncount it as running. */
static void lease_end(coord_t *c, uint32_t s)
{
    const coord_slot *sl = coord_queue_slot(c->queue, s);
    coord_registry_lease_end(c->workers, sl->worker);
    coord_job_task_unleased(sl->job, sl->level);
    coord_queue_lease_end(c->queue, s);
}

/* Slot s, its lease ended, goes back to the front of its queue with a new attempt (a RESULT of
 * the old one is then not current). */
static void requeue(coord_t *c, uint32_t s, const char *why)
{
    coord_slot *sl = coord_queue_slot(c->queue, s);
    sl->attempt++;
    coord_log(c, 1, "task %llu attempt %u re-queued: %s", (unsigned long long)sl->task, sl->attempt,
              why);
    enqueue(c, s, 1);
}

void coord_task_lost(coord_t *c, uint32_t s, const char *why)
{
    lease_end(c, s);
    coord_slot *sl = coord_queue_slot(c->queue, s);
    if (++sl->losses >= c->o.max_losses) {
        char reason[128];
        snprintf(reason, sizeof reason, "%s: lost its worker %d times", level_name(c, sl->level),
                 c->o.max_losses);
        coord_log(c, 1, "task %llu (%s #%u) failed: %s", (unsigned long long)sl->task, sl->job->id,
                  sl->image, reason);
        coord_image_failed(c, s, reason);
        return;
    }
    requeue(c, s, why);
}

void coord_task_returned(coord_t *c, uint32_t s, const char *why)
{
    lease_end(c, s);
    requeue(c, s, why);
}

/* Slot s's task failed on worker w: retry elsewhere, or fail the image after max_attempts. */
static void attempt_failed(coord_t *c, uint32_t s, const coord_worker *w, const char *error)
{
    coord_slot *sl = coord_queue_slot(c->queue, s);
    coord_log(c, 1, "task %llu attempt %u (%s #%u %s) failed on worker %s: %s",
              (unsigned long long)sl->task, sl->attempt, sl->job->id, sl->image,
              level_name(c, sl->level), w->name, error);
    if (!is_excluded(sl, w->rid_hash) && sl->nexcluded < COORD_MAX_EXCLUDE)
        sl->excluded[sl->nexcluded++] = w->rid_hash;
    uint32_t *strikes = coord_job_strikes(sl->job, w->rid_hash, 1);
    if (strikes && ++*strikes == COORD_JOB_STRIKES)
        coord_log(c, 1, "worker %s failed %d tasks of job %s: kept off it", w->name,
                  COORD_JOB_STRIKES, sl->job->id);
    if (++sl->failures >= c->o.max_attempts) {
        /* no worker names or counts that vary with the farm: the manifest stays deterministic */
        char reason[600];
        snprintf(reason, sizeof reason, "%s: %s", level_name(c, sl->level), error);
        coord_image_failed(c, s, reason);
        return;
    }
    sl->attempt++;
    enqueue(c, s, 1);
}

/* Slot s finished its level with output (side x side x 3): queue its PNGs, then the next
 * level's task or, on the last level, wait for the final PNG to be written. */
static void level_done(coord_t *c, uint32_t s, const uint8_t *rgb, int side)
{
    coord_slot *sl = coord_queue_slot(c->queue, s);
    coord_job *j = sl->job;
    int level = sl->level, last = level == j->end - 1;
    if ((j->spec.keep_levels && coord_png_queue(c, s, 0, rgb, side) < 0) ||
        (last && coord_png_queue(c, s, 1, rgb, side) < 0)) {
        coord_image_failed(c, s, "coordinator out of memory");
        return;
    }
    if (last) {
        coord_queue_writing(c->queue, s);
        return;
    }
    size_t n = (size_t)side * side * 3;
    uint8_t *copy = malloc(n);
    if (!copy) {
        coord_image_failed(c, s, "coordinator out of memory");
        return;
    }
    memcpy(copy, rgb, n);
    free(sl->cond);
    sl->cond = copy;
    sl->cond_side = side;
    coord_state_level(c, s, rgb, side);
    coord_queue_new_task(c->queue, s, level + 1);
    enqueue(c, s, 0);
}

/* "" when t is a u8 [side, side, 3] tensor, else what is wrong, in buf. */
static const char *check_output(const proto_tensor *t, int side, char *buf, size_t len)
{
    if (t->dtype == PROTO_DTYPE_U8 && t->ndim == 3 && t->shape[0] == (uint64_t)side &&
        t->shape[1] == (uint64_t)side && t->shape[2] == 3)
        return "";
    snprintf(buf, len, "output is not a u8 [%d, %d, 3] image (dtype %d, %u dims, %llux%llu)", side,
             side, (int)t->dtype, t->ndim, (unsigned long long)t->shape[0],
             (unsigned long long)(t->ndim > 1 ? t->shape[1] : 0));
    return buf;
}

void coord_on_result(coord_t *c, int w, const struct proto_result *r)
{
    const coord_worker *wk = coord_registry_at(c->workers, (uint32_t)w);
    int64_t found = coord_queue_find(c->queue, r->task);
    coord_slot *sl = found >= 0 ? coord_queue_slot(c->queue, (uint32_t)found) : NULL;
    if (!sl || sl->state != COORD_SLOT_RUNNING || sl->attempt != r->attempt ||
        sl->worker != wk->serial) {
        coord_log(c, 1,
                  "RESULT for task %llu attempt %u from worker %s dropped: not a current "
                  "lease",
                  (unsigned long long)r->task, r->attempt, wk->name);
        return;
    }
    uint32_t s = (uint32_t)found;
    lease_end(c, s);
    if (!r->ok) {
        attempt_failed(c, s, wk, r->error ? r->error : "failed");
        return;
    }
    char buf[160];
    int side = out_side(c, sl->job, sl->level);
    const char *bad = check_output(&r->output, side, buf, sizeof buf);
    if (*bad) {
        attempt_failed(c, s, wk, bad);
        return;
    }
    coord_log(c, 0, "task %llu attempt %u (%s #%u %s) done by worker %s in %llu ms",
              (unsigned long long)sl->task, sl->attempt, sl->job->id, sl->image,
              level_name(c, sl->level), wk->name, (unsigned long long)r->elapsed_ms);
    coord_job_task_done(sl->job, sl->level, r->elapsed_ms);
    coord_job_task_timed(sl->job, sl->level, sl->image, r->elapsed_ms, r->cpu_us);
    level_done(c, s, r->output.data, side);
}
