/* --state at start: the journal is replayed into the job table. A JOB record makes the job
 * again from its SUBMIT text (the same parser and checks as a SUBMIT), IMAGE records mark its
 * images finished (counted, failures with their reasons), LEVEL records give the outputs that
 * wait in the spool (the deepest per image not finished is kept), END records end it. The
 * journal is then rewritten with only that state, so finished work never slows a start. */
#include "coordinator/coord_internal.h"
#include "coordinator/outputs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct restore {
    coord_t *c;
    coord_job *last; /* the job of the previous record: records of one job come in runs */
    uint64_t records;
    char owner_job[COORD_ID_MAX]; /* the last OWNER record's job and key: its JOB is next */
    char owner[PROTO_KEY_LEN + 1];
} restore;

/* The running job named id, or NULL (an ended or forgotten one: its records are moot). */
static coord_job *running_job(restore *r, const char *id)
{
    if (!r->last || strcmp(r->last->id, id)) r->last = coord_jobs_find(r->c->jobs, id);
    return r->last && r->last->state == COORD_JOB_RUNNING ? r->last : NULL;
}

/* JOB: the job again, from its text. A spec this coordinator can no longer take (another
 * pipeline file, say) is logged and skipped: the rest of the journal still counts. */
static int on_job(restore *r, const coord_rec *rec)
{
    coord_t *c = r->c;
    coord_job *old = coord_jobs_find(c->jobs, rec->job);
    if (old && old->state == COORD_JOB_RUNNING) { /* superseded: it ended unrecorded */
        old->state = COORD_JOB_CANCELLED;
        coord_jobs_stopped(c->jobs, old);
    }
    strata_err e = {0};
    r->last = coord_job_restore(c, rec->text, &e);
    if (!r->last) coord_log(c, 1, "state: job %s not restored: %s", rec->job, e.msg);
    if (r->last && !strcmp(r->owner_job, rec->job))
        snprintf(r->last->owner, sizeof r->last->owner, "%s", r->owner);
    r->owner_job[0] = 0;
    return 0;
}

/* OWNER: the key of the JOB record that follows. */
static int on_owner(restore *r, const coord_rec *rec)
{
    snprintf(r->owner_job, sizeof r->owner_job, "%s", rec->job);
    snprintf(r->owner, sizeof r->owner, "%s", rec->text);
    return 0;
}

static int on_image(restore *r, const coord_rec *rec)
{
    coord_job *j = running_job(r, rec->job);
    if (!j || rec->image >= j->count || coord_job_is_finished(j, rec->image)) return 0;
    coord_job_mark_finished(j, rec->image);
    if (rec->ok) {
        j->done++;
        j->lv[j->end - 1].done++;
    } else {
        j->failed++;
        if (coord_job_fail_image(j, rec->image, rec->text) < 0) return ERR_NOMEM;
    }
    return 0;
}

static int on_level(restore *r, const coord_rec *rec)
{
    coord_job *j = running_job(r, rec->job);
    if (!j || rec->image >= j->count || rec->level < j->first || rec->level + 1 >= j->end) return 0;
    /* the capacity is 8, then the powers of two nresume reaches */
    uint32_t n = j->nresume;
    if (n == 0 || (n >= 8 && (n & (n - 1)) == 0)) {
        coord_resume *g = realloc(j->resume, (n ? 2 * (size_t)n : 8) * sizeof *g);
        if (!g) return ERR_NOMEM;
        j->resume = g;
    }
    j->resume[j->nresume++] =
        (coord_resume){.image = rec->image, .level = rec->level, .ref = rec->ref};
    j->lv[rec->level].done++;
    return 0;
}

static int on_end(restore *r, const coord_rec *rec)
{
    coord_job *j = running_job(r, rec->job);
    if (!j) return 0;
    j->state = rec->state >= COORD_JOB_DONE && rec->state <= COORD_JOB_FAILED
                   ? (coord_job_state)rec->state
                   : COORD_JOB_DONE;
    j->done = rec->done;
    j->failed = rec->failed;
    j->lv[j->end - 1].done = rec->done;
    coord_jobs_stopped(r->c->jobs, j);
    coord_job_shrink(j);
    return 0;
}

static int on_record(void *ctx, const coord_rec *rec)
{
    restore *r = ctx;
    r->records++;
    switch (rec->type) {
    case COORD_REC_JOB:
        return on_job(r, rec);
    case COORD_REC_IMAGE:
        return on_image(r, rec);
    case COORD_REC_LEVEL:
        return on_level(r, rec);
    case COORD_REC_END:
        return on_end(r, rec);
    case COORD_REC_OWNER:
        return on_owner(r, rec);
    default:
        return 0; /* a newer kind of record: not ours to understand */
    }
}

static int by_image_level(const void *a, const void *b)
{
    const coord_resume *x = a, *y = b;
    if (x->image != y->image) return (x->image > y->image) - (x->image < y->image);
    return (x->level > y->level) - (x->level < y->level);
}

/* Running job j after replay: its counters add up, and of its spooled outputs only the
 * deepest of each image not finished is kept (held in the spool). Returns how many. */
static uint32_t settle(coord_t *c, coord_job *j)
{
    j->next = j->done + j->failed;
    if (j->nresume) /* qsort must not be given NULL, even for no elements */
        qsort(j->resume, j->nresume, sizeof *j->resume, by_image_level);
    uint32_t n = 0;
    for (uint32_t i = 0; i < j->nresume; i++) {
        const coord_resume *rs = &j->resume[i];
        int deepest = i + 1 == j->nresume || j->resume[i + 1].image != rs->image;
        if (!deepest || coord_job_is_finished(j, rs->image)) continue;
        coord_spool_hold(c->spool, &rs->ref);
        j->resume[n++] = *rs;
    }
    j->nresume = n;
    j->resume_at = 0;
    return n;
}

/* Every running job settled; the counts for the log. */
static void settle_all(coord_t *c, uint32_t *running, uint64_t *finished, uint64_t *spooled)
{
    for (uint32_t i = 0; i < coord_jobs_running(c->jobs); i++) {
        coord_job *j = coord_jobs_running_at(c->jobs, i);
        *spooled += settle(c, j);
        *finished += j->done + j->failed;
        (*running)++;
    }
}

/* The journal read into the job table, then opened for appending after its last intact
 * record. */
static int replay(coord_t *c, const char *path, strata_err *e)
{
    restore r = {.c = c};
    uint64_t end = 0, dropped = 0;
    long long t0 = clock_now_ms();
    int rc = coord_journal_read(path, on_record, &r, &end, &dropped, e);
    if (rc < 0) return rc;
    if (dropped)
        coord_log(c, 1, "state: %s: dropped %llu bytes after offset %llu (a torn last record)",
                  path, (unsigned long long)dropped, (unsigned long long)end);
    if ((rc = coord_journal_open(path, end, &c->journal, e)) < 0) return rc;
    uint32_t running = 0;
    uint64_t finished = 0, spooled = 0;
    settle_all(c, &running, &finished, &spooled);
    coord_spool_start(c->spool);
    /* an empty state says nothing unless asked: strata render starts on one every time */
    coord_log(c, r.records > 0 || dropped,
              "state %s: %llu records replayed in %lld ms: %u jobs to resume (%llu images "
              "already finished, %llu level outputs spooled), %u known",
              c->o.state_dir, (unsigned long long)r.records, clock_now_ms() - t0, running,
              (unsigned long long)finished, (unsigned long long)spooled, coord_jobs_count(c->jobs));
    return 0;
}

/* One coordinator per state directory: flock on DIR/lock (released by the kernel when the
 * holder dies, so a SIGKILLed coordinator's restart finds it free). */
static int lock(coord_t *c, strata_err *e)
{
    char path[SPEC_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/lock", c->o.state_dir);
    c->state_lock = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (c->state_lock < 0) return err_set(e, ERR_IO, "state: %s: %s", path, strerror(errno));
    if (flock(c->state_lock, LOCK_EX | LOCK_NB) < 0)
        return err_set(e, ERR_RUNTIME, "state: %s is in use by another coordinator",
                       c->o.state_dir);
    return 0;
}

int coord_restore(coord_t *c, strata_err *e)
{
    if (!c->o.state_dir) return 0;
    char path[SPEC_PATH_MAX + 32];
    if (snprintf(path, sizeof path, "%s/journal", c->o.state_dir) >= (int)sizeof path)
        return err_set(e, ERR_INPUT, "state: %s: path too long", c->o.state_dir);
    strata_err me = {0};
    int rc = coord_mkdirs(c->o.state_dir, &me);
    if (rc < 0) return err_set(e, rc, "state: %s", me.msg);
    if ((rc = lock(c, e)) < 0) return rc;
    if ((rc = coord_spool_open(c->o.state_dir, &c->spool, e)) < 0 || (rc = replay(c, path, e)) < 0)
        return rc;
    return coord_state_compact(c, e);
}
