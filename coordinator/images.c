/* The end of an image and of a job: an image is written (its final PNG came back from the writer
 * pool) or fails (a reason kept for the manifest); a job whose images are all written or failed
 * ends (manifest, then its watchers); CANCEL ends a job at once. A manifest the disk cannot take
 * (full, read-only) stalls the job instead: writes.c tries again. */
#include "coordinator/coord_internal.h"
#include "coordinator/outputs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int coord_disk_trouble(int err)
{
    return err == ENOSPC || err == EDQUOT || err == EACCES || err == EROFS || err == EIO;
}

void coord_job_stalls(coord_t *c, coord_job *j, const char *path, int err, int again)
{
    char reason[SPEC_PATH_MAX + 160];
    snprintf(reason, sizeof reason, "cannot write %s: %s", path, strerror(err));
    int fresh = !j->stall_retry_ms; /* a new stall, not a retry that failed */
    if (!j->stalled || again) {
        int next = fresh ? COORD_DISK_RETRY_MS : 2 * j->stall_retry_ms;
        j->stall_retry_ms = next < COORD_DISK_RETRY_MAX_MS ? next : COORD_DISK_RETRY_MAX_MS;
        j->stall_retry_at = clock_now_ms() + j->stall_retry_ms;
    }
    if (!j->stalled || !j->stall || strcmp(j->stall, reason)) coord_job_stall(j, reason);
    if (fresh)
        coord_log(c, 1, "job %s stalled: %s (its results are kept, tried again from 1 s to %d s)",
                  j->id, reason, COORD_DISK_RETRY_MAX_MS / 1000);
}

/* Every image of j is written or failed: the manifest, then the watchers. */
static void job_end(coord_t *c, coord_job *j)
{
    strata_err e = {0};
    if (coord_write_manifest(&c->pipe, j, &e) < 0) {
        int err = errno;
        if (coord_disk_trouble(err)) { /* the job waits for its manifest, then ends */
            coord_job_stalls(c, j, j->dir, err, 1);
            return;
        }
        coord_log(c, 1, "job %s: %s", j->id, e.msg);
    }
    j->stall_retry_ms = 0;
    coord_job_finished(j);
    /* timings are a record of the run, not an output: their trouble only says so */
    if (coord_write_timings(&c->pipe, j, &e) < 0) coord_log(c, 1, "job %s: %s", j->id, e.msg);
    coord_log(c, j->failed > 0, "job %s %s: %u written, %u failed", j->id,
              coord_job_state_name(j->state), j->done, j->failed);
    coord_jobs_stopped(c->jobs, j);
    coord_state_job_end(c, j);
    coord_watchers_job_ended(c, j);
    coord_job_shrink(j);
}

void coord_job_check_end(coord_t *c, coord_job *j)
{
    if (j->state == COORD_JOB_RUNNING && !j->stalled && j->done + j->failed == j->count &&
        !j->pending_writes)
        job_end(c, j);
}

void coord_job_image_end(coord_t *c, coord_job *j, uint32_t image, coord_spool_ref *spool, int ok,
                         const char *reason)
{
    if (ok) {
        coord_job_image_written(j, image);
    } else {
        if (coord_job_fail_image(j, image, reason) < 0)
            coord_log(c, 1, "job %s image %u: reason not kept (out of memory)", j->id, image);
        coord_log(c, 1, "job %s image %u failed: %s", j->id, image, reason);
    }
    coord_state_image(c, j, image, spool, ok, reason);
    coord_job_image_finished(j, ok);
}

/* The image of slot s is written (ok) or failed: its slot is released. */
static void image_finished(coord_t *c, uint32_t s, int ok, const char *reason)
{
    coord_slot *sl = coord_queue_slot(c->queue, s);
    coord_job *j = sl->job;
    coord_job_image_end(c, j, sl->image, &sl->spool, ok, reason);
    coord_queue_release(c->queue, s);
    coord_job_check_end(c, j);
}

void coord_image_ok(coord_t *c, uint32_t s)
{
    image_finished(c, s, 1, NULL);
}

void coord_image_failed(coord_t *c, uint32_t s, const char *reason)
{
    image_finished(c, s, 0, reason);
}

/* Drop every image of j in flight: queued entries go stale in their heaps; running leases end,
 * so late RESULTs are dropped. Its writes held for the disk go too. */
static void drop_images(coord_t *c, coord_job *j)
{
    for (uint32_t s = 0; s < coord_queue_slots(c->queue); s++) {
        const coord_slot *sl = coord_queue_slot(c->queue, s);
        if (sl->state == COORD_SLOT_FREE || sl->job != j) continue;
        if (sl->state == COORD_SLOT_RUNNING) coord_registry_lease_end(c->workers, sl->worker);
        coord_state_slot_gone(c, s);
        coord_queue_release(c->queue, s);
    }
    for (coord_write *w = coord_writer_unhold(c->writer, j, 1), *next; w; w = next) {
        next = w->next;
        if (w->spool.seg) c->held_refs--;
        coord_state_drop(c, &w->spool);
        coord_job_write_done(j);
        c->writes--;
        coord_write_free(w);
    }
    if (j->stalled) coord_job_unstall(j);
}

int coord_job_cancel(coord_t *c, const char *id, strata_err *e)
{
    coord_job *j = coord_jobs_find(c->jobs, id);
    if (!j) return err_set(e, ERR_INPUT, "CANCEL: no job %s", id);
    if (j->state != COORD_JOB_RUNNING)
        return err_set(e, ERR_INPUT, "CANCEL: job %s already ended (%s)", id,
                       coord_job_state_name(j->state));
    drop_images(c, j);
    coord_job_cancelled(j);
    coord_log(c, 0, "job %s cancelled: %u written, %u failed, %u not run", j->id, j->done,
              j->failed, j->count - j->done - j->failed);
    coord_jobs_stopped(c->jobs, j);
    coord_state_job_end(c, j);
    coord_watchers_job_ended(c, j);
    coord_job_shrink(j);
    return 0;
}
