/* --state as things happen: each event that must survive a restart becomes a journal record
 * (job accepted, level output spooled, image finished, job ended), committed in groups: the
 * spool's new data is fsync'd first, then the journal, so no durable record names bytes that
 * are not. Refs superseded by a record are dropped only once that record is durable. */
#include "coordinator/coord_internal.h"
#include "coordinator/grow.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Buffer r; out of memory is logged (the record is lost: the work is redone after a restart). */
static void record(coord_t *c, const coord_rec *r)
{
    if (coord_journal_append(c->journal, r) < 0) {
        coord_log(c, 1, "journal: out of memory, a record is lost");
        return;
    }
    if (!c->dirty_since_ms) c->dirty_since_ms = clock_now_ms();
}

/* Drop ref after the next commit. */
static void drop_later(coord_t *c, const coord_spool_ref *ref)
{
    if (!ref->seg) return;
    if (coord_grow(&c->drops, &c->capdrops, c->ndrops + 1, sizeof *c->drops) < 0) {
        coord_spool_drop(c->spool, ref); /* no memory to wait: drop now, at worst redo */
        return;
    }
    c->drops[c->ndrops++] = *ref;
}

/* Job j's OWNER (when it has one) then JOB records into f: a JOB record is never durable
 * without its owner before it. 0, or -1 when out of memory. */
static int append_job(coord_journal_t *f, const coord_job *j, const char *text)
{
    coord_rec owner = {.type = COORD_REC_OWNER,
                       .job = j->id,
                       .text = j->owner,
                       .textlen = (uint32_t)strlen(j->owner)};
    coord_rec r = {.type = COORD_REC_JOB,
                   .job = j->id,
                   .arrival = j->arrival,
                   .text = text,
                   .textlen = (uint32_t)strlen(text)};
    if (j->owner[0] && coord_journal_append(f, &owner) < 0) return -1;
    return coord_journal_append(f, &r);
}

int coord_state_accept(coord_t *c, coord_job *j, const char *text, strata_err *e)
{
    if (!c->journal || !text) return 0;
    if (c->state_error[0])
        return err_set(e, ERR_RUNTIME, "SUBMIT: refused, the state directory cannot take it: %s",
                       c->state_error);
    size_t bytes = ((size_t)j->count + 7) / 8;
    j->text = strdup(text);
    j->finished = calloc(bytes ? bytes : 1, 1);
    if (!j->text || !j->finished) return err_set(e, ERR_NOMEM, "coordinator out of memory");
    size_t mark = coord_journal_mark(c->journal);
    if (append_job(c->journal, j, text) < 0) {
        coord_journal_rewind(c->journal, mark);
        return err_set(e, ERR_NOMEM, "coordinator out of memory");
    }
    if (!c->dirty_since_ms) c->dirty_since_ms = clock_now_ms();
    /* the client hears SUBMITTED only once the job is durable */
    if (coord_state_commit(c, clock_now_ms(), 1) != -1) {
        coord_journal_rewind(c->journal, mark);
        return err_set(e, ERR_RUNTIME, "SUBMIT: refused, the state directory cannot take it: %s",
                       c->state_error);
    }
    return 0;
}

void coord_state_level(coord_t *c, uint32_t s, const uint8_t *rgb, int side)
{
    if (!c->journal) return;
    coord_slot *sl = coord_queue_slot(c->queue, s);
    coord_spool_ref ref;
    strata_err e = {0};
    if (coord_spool_put(c->spool, rgb, (size_t)side * side * 3, (uint32_t)side, &ref, &e) < 0) {
        /* kept in memory only (the slot's cond), spooled by the commit's retries once the spool
         * takes writes again; its older spooled level goes (the slot's ref names its input) */
        if (!c->spool_full) coord_log(c, 1, "spool: %s (new jobs are refused)", e.msg);
        snprintf(c->state_error, sizeof c->state_error, "%s", e.msg);
        c->spool_full = 1;
        c->spool_need = (uint32_t)side;
        if (!c->retry_at_ms) c->retry_at_ms = clock_now_ms() + COORD_STATE_RETRY_MS;
        coord_state_drop(c, &sl->spool);
        return;
    }
    coord_rec r = {.type = COORD_REC_LEVEL,
                   .job = sl->job->id,
                   .image = sl->image,
                   .level = sl->level,
                   .ref = ref};
    record(c, &r);
    drop_later(c, &sl->spool);
    sl->spool = ref;
}

void coord_state_image(coord_t *c, coord_job *j, uint32_t image, coord_spool_ref *spool, int ok,
                       const char *reason)
{
    if (!c->journal) return;
    coord_rec r = {.type = COORD_REC_IMAGE, .job = j->id, .image = image, .ok = !!ok};
    if (!ok) {
        r.text = reason;
        r.textlen = (uint32_t)strlen(reason);
    }
    record(c, &r);
    coord_job_mark_finished(j, image);
    coord_state_drop(c, spool);
}

void coord_state_drop(coord_t *c, coord_spool_ref *ref)
{
    if (!c->journal || !ref->seg) return;
    drop_later(c, ref);
    ref->seg = 0;
}

void coord_state_slot_gone(coord_t *c, uint32_t s)
{
    if (!c->journal) return;
    coord_slot *sl = coord_queue_slot(c->queue, s);
    drop_later(c, &sl->spool);
    sl->spool.seg = 0;
}

void coord_state_job_end(coord_t *c, coord_job *j)
{
    if (!c->journal) return;
    coord_rec r = {.type = COORD_REC_END,
                   .job = j->id,
                   .state = (uint8_t)j->state,
                   .done = j->done,
                   .failed = j->failed};
    record(c, &r);
    for (uint32_t i = j->resume_at; i < j->nresume; i++)
        drop_later(c, &j->resume[i].ref);
    j->resume_at = j->nresume;
}

/* The resume entry of image in j's list, or NULL; entries of images before it (none: images
 * start in order) are dropped. */
static coord_resume *resume_find(coord_t *c, coord_job *j, uint32_t image)
{
    while (j->resume_at < j->nresume && j->resume[j->resume_at].image < image)
        drop_later(c, &j->resume[j->resume_at++].ref);
    if (j->resume_at < j->nresume && j->resume[j->resume_at].image == image)
        return &j->resume[j->resume_at++];
    return NULL;
}

int coord_state_resume(coord_t *c, uint32_t s)
{
    if (!c->journal) return 0;
    coord_slot *sl = coord_queue_slot(c->queue, s);
    coord_resume *rs = resume_find(c, sl->job, sl->image);
    if (!rs) return 0;
    uint8_t *rgb = NULL;
    strata_err e = {0};
    if (rs->level + 1 >= sl->job->end || coord_spool_get(c->spool, &rs->ref, &rgb, &e) < 0) {
        coord_log(c, 1, "job %s image %u: spooled %s output not usable, starting over: %s",
                  sl->job->id, sl->image, c->pipe.levels[rs->level].name, e.msg);
        drop_later(c, &rs->ref);
        return 0;
    }
    free(sl->cond);
    sl->cond = rgb;
    sl->cond_side = (int)rs->ref.side;
    sl->spool = rs->ref;
    coord_queue_new_task(c->queue, s, rs->level + 1);
    coord_log(c, 0, "job %s image %u resumes at %s", sl->job->id, sl->image,
              c->pipe.levels[rs->level + 1].name);
    return 1;
}

/* Apply the drops waiting for a commit. */
static void drops_apply(coord_t *c)
{
    for (uint32_t i = 0; i < c->ndrops; i++)
        coord_spool_drop(c->spool, &c->drops[i]);
    c->ndrops = 0;
}

/* With no output left to spool: one of the size that failed last is written and let go, so a
 * spool that takes only smaller writes (a journal record) still refuses new jobs. */
static int spool_probe(coord_t *c, strata_err *e)
{
    size_t n = (size_t)c->spool_need * c->spool_need * 3;
    uint8_t *zeros = calloc(n ? n : 1, 1);
    coord_spool_ref ref;
    if (!zeros) return err_set(e, ERR_NOMEM, "out of memory");
    int rc = coord_spool_put(c->spool, zeros, n, c->spool_need, &ref, e);
    free(zeros);
    if (rc == 0) coord_spool_drop(c->spool, &ref);
    return rc;
}

/* After a spool write failed: the level outputs kept in memory only (slots past their first
 * level with no spooled input) go to the spool now, with their LEVEL records (with none, a
 * probe). 0 when all did (the spool takes writes again), or a negative code with e. */
static int spool_catch_up(coord_t *c, strata_err *e)
{
    uint32_t spooled = 0;
    for (uint32_t s = 0; s < coord_queue_slots(c->queue); s++) {
        coord_slot *sl = coord_queue_slot(c->queue, s);
        if (sl->state == COORD_SLOT_FREE || sl->spool.seg || !sl->cond ||
            sl->level <= sl->job->first)
            continue;
        coord_spool_ref ref;
        int rc = coord_spool_put(c->spool, sl->cond, (size_t)sl->cond_side * sl->cond_side * 3,
                                 (uint32_t)sl->cond_side, &ref, e);
        if (rc < 0) return rc;
        coord_rec r = {.type = COORD_REC_LEVEL,
                       .job = sl->job->id,
                       .image = sl->image,
                       .level = (uint8_t)(sl->level - 1),
                       .ref = ref};
        record(c, &r);
        sl->spool = ref;
        spooled++;
    }
    int rc = spooled ? 0 : spool_probe(c, e);
    if (rc == 0) c->spool_full = 0;
    return rc;
}

/* A commit failed with e: new jobs are refused until one succeeds. */
static int commit_failed(coord_t *c, long long now, const strata_err *e)
{
    if (!c->state_error[0])
        coord_log(c, 1, "state: %s (new jobs are refused until a write succeeds)", e->msg);
    snprintf(c->state_error, sizeof c->state_error, "%s", e->msg);
    c->retry_at_ms = now + COORD_STATE_RETRY_MS;
    return COORD_STATE_RETRY_MS;
}

/* What is durable: a job's JOB record before its client hears SUBMITTED (coord_state_accept
 * commits at once, and refuses the job when that fails); every later record once a group commit
 * returned. While the state directory cannot be written (full), the records of accepted jobs
 * wait in memory and are tried again every COORD_STATE_RETRY_MS: the jobs run on, and only a
 * crash meanwhile loses those records (after a restart their images are redone, to the same
 * bytes). New jobs are refused until a commit succeeds. */
int coord_state_commit(coord_t *c, long long now, int force)
{
    if (!c->journal || (!c->dirty_since_ms && !c->spool_full)) return -1;
    if (!force) {
        if (c->retry_at_ms && now < c->retry_at_ms) return (int)(c->retry_at_ms - now);
        long long due = c->dirty_since_ms + COORD_GROUP_MS;
        if (now < due) return (int)(due - now);
    }
    strata_err e = {0};
    if ((c->spool_full && spool_catch_up(c, &e) < 0) || coord_spool_sync(c->spool, &e) < 0 ||
        coord_journal_sync(c->journal, &e) < 0)
        return commit_failed(c, now, &e);
    if (c->state_error[0] && !c->spool_full) {
        coord_log(c, 1, "state: writes succeed again");
        c->state_error[0] = 0;
    }
    c->retry_at_ms = 0;
    c->dirty_since_ms = 0;
    drops_apply(c);
    if (coord_journal_size(c->journal) > c->compact_at && coord_state_compact(c, &e) < 0) {
        coord_log(c, 1, "state: compaction failed: %s", e.msg);
        c->compact_at = 2 * coord_journal_size(c->journal);
    }
    return -1;
}

static int by_image(const void *a, const void *b)
{
    uint32_t x = ((const coord_failure *)a)->image, y = ((const coord_failure *)b)->image;
    return (x > y) - (x < y);
}

/* The records of running job j's finished images and unstarted resumes into f. */
static int compact_running(coord_journal_t *f, coord_job *j)
{
    if (j->nfails) qsort(j->fails, j->nfails, sizeof *j->fails, by_image);
    uint32_t k = 0;
    int rc = 0;
    for (uint32_t i = 0; i < j->count && rc == 0; i++) {
        if (!coord_job_is_finished(j, i)) continue;
        coord_rec r = {.type = COORD_REC_IMAGE, .job = j->id, .image = i, .ok = 1};
        while (k < j->nfails && j->fails[k].image < i)
            k++;
        if (k < j->nfails && j->fails[k].image == i) {
            r.ok = 0;
            r.text = j->reasons[j->fails[k].reason];
            r.textlen = (uint32_t)strlen(r.text);
        }
        rc = coord_journal_append(f, &r);
    }
    for (uint32_t i = j->resume_at; i < j->nresume && rc == 0; i++) {
        coord_rec r = {.type = COORD_REC_LEVEL,
                       .job = j->id,
                       .image = j->resume[i].image,
                       .level = j->resume[i].level,
                       .ref = j->resume[i].ref};
        rc = coord_journal_append(f, &r);
    }
    return rc;
}

/* Every job's records into f: JOB, then END or what a running one finished and spooled. */
static int compact_jobs(coord_t *c, coord_journal_t *f)
{
    int rc = 0;
    for (uint32_t i = 0; i < coord_jobs_count(c->jobs) && rc == 0; i++) {
        coord_job *j = coord_jobs_at(c->jobs, i);
        if (!j->text) continue;
        rc = append_job(f, j, j->text);
        coord_rec end = {.type = COORD_REC_END,
                         .job = j->id,
                         .state = (uint8_t)j->state,
                         .done = j->done,
                         .failed = j->failed};
        if (rc == 0)
            rc = j->state != COORD_JOB_RUNNING ? coord_journal_append(f, &end)
                                               : compact_running(f, j);
    }
    return rc;
}

/* The slots' spooled outputs into f: each is the output of the level before the slot's; then
 * those of the images whose final PNG waits for the disk (a restart redoes their last level;
 * one being retried with the pool right now is left out: a restart redoes it from scratch). */
static int compact_slots(coord_t *c, coord_journal_t *f)
{
    int rc = 0;
    for (const coord_write *w = coord_writer_held_list(c->writer); w && rc == 0; w = w->next) {
        if (!w->final || !w->spool.seg) continue;
        coord_rec r = {.type = COORD_REC_LEVEL,
                       .job = w->job->id,
                       .image = w->image,
                       .level = w->spool_level,
                       .ref = w->spool};
        rc = coord_journal_append(f, &r);
    }
    for (uint32_t s = 0; s < coord_queue_slots(c->queue) && rc == 0; s++) {
        const coord_slot *sl = coord_queue_slot_c(c->queue, s);
        if (sl->state == COORD_SLOT_FREE || !sl->spool.seg) continue;
        coord_rec r = {.type = COORD_REC_LEVEL,
                       .job = sl->job->id,
                       .image = sl->image,
                       .level = (uint8_t)(sl->level - 1),
                       .ref = sl->spool};
        rc = coord_journal_append(f, &r);
    }
    return rc;
}

int coord_state_compact(coord_t *c, strata_err *e)
{
    if (!c->journal) return 0;
    strata_err ce = {0};
    /* what waits must be durable first: the new file names spooled bytes */
    if (coord_state_commit(c, clock_now_ms(), 1) != -1)
        return err_set(e, ERR_IO, "%s", c->state_error);
    coord_journal_t *f = NULL;
    if (coord_journal_new_buffer(&f) < 0 || compact_jobs(c, f) < 0 || compact_slots(c, f) < 0) {
        coord_journal_close(&f);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    int rc = coord_journal_replace(c->journal, &f, &ce);
    coord_journal_close(&f);
    if (rc < 0) return err_set(e, rc, "%s", ce.msg);
    uint64_t size = coord_journal_size(c->journal),
             min = c->o.state_compact_bytes ? c->o.state_compact_bytes : COORD_COMPACT_MIN;
    c->compact_at = size * 4 > min ? size * 4 : min;
    coord_log(c, 0, "state: journal compacted to %llu bytes", (unsigned long long)size);
    c->compactions++;
    return 0;
}

int coord_state_check(const coord_t *c, strata_err *e)
{
    if (!c->journal) return 0;
    uint64_t refs = c->ndrops + c->held_refs;
    for (uint32_t s = 0; s < coord_queue_slots(c->queue); s++) {
        const coord_slot *sl = coord_queue_slot_c(c->queue, s);
        refs += sl->state != COORD_SLOT_FREE && sl->spool.seg;
    }
    for (uint32_t i = 0; i < coord_jobs_count(c->jobs); i++) {
        const coord_job *j = coord_jobs_at(c->jobs, i);
        refs += j->nresume - j->resume_at;
    }
    if (refs != coord_spool_live(c->spool))
        return err_set(e, ERR_RUNTIME,
                       "spool: %llu outputs live, but slots, resumes, held writes and drops "
                       "name %llu",
                       (unsigned long long)coord_spool_live(c->spool), (unsigned long long)refs);
    return 0;
}
