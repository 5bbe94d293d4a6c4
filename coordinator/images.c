/* The end of an image and of a job: an image is written (its final PNG came back from the writer
 * pool) or fails (a reason kept for the manifest); a job whose images are all written or failed
 * ends (manifest, then its watchers); CANCEL ends a job at once. */
#include "coordinator/coord_internal.h"
#include "coordinator/outputs.h"

#include <stdio.h>
#include <stdlib.h>

/* Every image of j is written or failed: the manifest, then the watchers. */
static void job_end(coord_t *c, coord_job *j)
{
    strata_err e = {0};
    coord_job_finished(j);
    if (coord_write_manifest(&c->pipe, j, &e) < 0) coord_log(c, 1, "job %s: %s", j->id, e.msg);
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
    if (j->state == COORD_JOB_RUNNING && j->done + j->failed == j->count && !j->pending_writes)
        job_end(c, j);
}

/* The image of slot s is written (ok) or failed: its slot is released. */
static void image_finished(coord_t *c, uint32_t s, int ok)
{
    coord_job *j = coord_queue_slot(c->queue, s)->job;
    coord_queue_release(c->queue, s);
    coord_job_image_finished(j, ok);
    coord_job_check_end(c, j);
}

void coord_image_ok(coord_t *c, uint32_t s)
{
    coord_state_image(c, s, 1, NULL);
    image_finished(c, s, 1);
}

void coord_image_failed(coord_t *c, uint32_t s, const char *reason)
{
    const coord_slot *sl = coord_queue_slot(c->queue, s);
    coord_job *j = sl->job;
    if (coord_job_fail_image(j, sl->image, reason) < 0)
        coord_log(c, 1, "job %s image %u: reason not kept (out of memory)", j->id, sl->image);
    coord_log(c, 1, "job %s image %u failed: %s", j->id, sl->image, reason);
    coord_state_image(c, s, 0, reason);
    image_finished(c, s, 0);
}

int coord_png_queue(coord_t *c, uint32_t s, int final, const uint8_t *rgb, int side)
{
    const coord_slot *sl = coord_queue_slot(c->queue, s);
    coord_write *w = coord_png_request(&c->pipe, sl, s, final, rgb, side);
    if (!w) return -1;
    coord_job_write_queued(sl->job);
    c->writes++;
    coord_writer_submit(c->writer, w);
    return 0;
}

/* A finished write: a final image completes (if its slot is still waiting for it: a cancel
 * may have freed it); a keep_levels copy that failed is only reported. */
static void write_finished(coord_t *c, coord_write *w)
{
    coord_job *j = w->job;
    coord_job_write_done(j);
    c->writes--;
    if (w->final) {
        int64_t s = coord_queue_find(c->queue, w->task);
        if (s >= 0 && coord_queue_slot(c->queue, (uint32_t)s)->state == COORD_SLOT_WRITING) {
            if (w->ok)
                coord_image_ok(c, w->slot);
            else
                coord_image_failed(c, w->slot, w->err);
        }
    } else if (!w->ok) {
        coord_log(c, 1, "job %s: %s", j->id, w->err);
    }
    coord_job_check_end(c, j);
}

void coord_writes_collect(coord_t *c)
{
    for (coord_write *w = coord_writer_take_done(c->writer), *next; w; w = next) {
        next = w->next;
        write_finished(c, w);
        coord_write_free(w);
    }
}

/* Drop every image of j in flight: queued entries go stale in their heaps; running leases end,
 * so late RESULTs are dropped. */
static void drop_images(coord_t *c, const coord_job *j)
{
    for (uint32_t s = 0; s < coord_queue_slots(c->queue); s++) {
        const coord_slot *sl = coord_queue_slot(c->queue, s);
        if (sl->state == COORD_SLOT_FREE || sl->job != j) continue;
        if (sl->state == COORD_SLOT_RUNNING) coord_registry_lease_end(c->workers, sl->worker);
        coord_state_slot_gone(c, s);
        coord_queue_release(c->queue, s);
    }
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
