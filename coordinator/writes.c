/* The PNGs of the jobs on their way to disk: requests go to the writer pool, finished ones come
 * back here. A write that fails because the disk cannot take it now (full, over quota, read-only,
 * not writable, an I/O error) is not an image failure: the request, pixels and all, is held by the
 * pool, its image gives up its slot (so other jobs go on within the backpressure bound), and the
 * job stalls: it starts no new image and STATUS says why. From the loop's timer the oldest held
 * write is tried again after 1 s, then 2, 4 ... up to 30 s; once one succeeds (space is back),
 * every held write of the job goes to the pool again and the job goes on. Nothing accepted is
 * dropped; with --state, a held image's spooled input stays named in the journal, so a restart
 * redoes only its last level. */
#include "coordinator/coord_internal.h"
#include "coordinator/outputs.h"

#include <stdio.h>
#include <stdlib.h>

int coord_png_queue(coord_t *c, uint32_t s, int final, const uint8_t *rgb, int side)
{
    const coord_slot *sl = coord_queue_slot(c->queue, s);
    coord_write *w = coord_png_request(&c->pipe, sl, s, final, rgb, side);
    if (!w) return -1;
    w->image = sl->image;
    coord_job_write_queued(sl->job);
    c->writes++;
    coord_writer_submit(c->writer, w);
    return 0;
}

/* w failed for lack of disk: held by the pool; a final image leaves its slot (its spooled input
 * goes with w); the job stalls, or backs off further when w was its retry. */
static void write_hold(coord_t *c, coord_write *w)
{
    coord_job *j = w->job;
    if (w->final && !w->held) {
        int64_t s = coord_queue_find(c->queue, w->task);
        coord_slot *sl = coord_queue_slot(c->queue, (uint32_t)s);
        w->spool = sl->spool;
        w->spool_level = (uint8_t)(sl->level - 1);
        c->held_refs += w->spool.seg != 0;
        sl->spool.seg = 0;
        j->held++;
        coord_queue_release(c->queue, (uint32_t)s); /* the image stays counted active by its job */
    }
    w->held = 1;
    coord_job_stalls(c, j, j->dir, w->err_no, w->probe);
    w->probe = 0;
    coord_writer_hold(c->writer, w);
}

/* A write of stalled job j succeeded: the disk takes writes again, its held ones go back to
 * the pool. */
static void disk_back(coord_t *c, coord_job *j)
{
    uint32_t n = 0;
    for (coord_write *w = coord_writer_unhold(c->writer, j, 1), *next; w; w = next) {
        next = w->next;
        coord_writer_submit(c->writer, w);
        n++;
    }
    coord_job_unstall(j);
    j->stall_retry_ms = 0;
    coord_log(c, 1, "job %s: its outputs can be written again (%u kept results written now)", j->id,
              n);
}

/* A held final write came back written or failed for good: its image ends (no slot). */
static void held_final_done(coord_t *c, coord_write *w)
{
    coord_job *j = w->job;
    if (w->spool.seg) c->held_refs--;
    if (j->state != COORD_JOB_RUNNING) { /* cancelled meanwhile */
        coord_state_drop(c, &w->spool);
        return;
    }
    j->held--;
    coord_job_image_end(c, j, w->image, &w->spool, w->ok, w->err);
}

/* A finished write: a final image completes (if its slot is still waiting for it: a cancel
 * may have freed it); a keep_levels copy that failed is only reported. 1 when w is held. */
static int write_finished(coord_t *c, coord_write *w)
{
    coord_job *j = w->job;
    c->write_errors += !w->ok; /* every failed try, retries of held writes too */
    if (w->probe) j->stall_probe = 0;
    int final_waits = 0;
    if (w->final && !w->held) {
        int64_t s = coord_queue_find(c->queue, w->task);
        final_waits =
            s >= 0 && coord_queue_slot(c->queue, (uint32_t)s)->state == COORD_SLOT_WRITING;
    }
    if (!w->ok && j->state == COORD_JOB_RUNNING && coord_disk_trouble(w->err_no) &&
        (final_waits || w->held || !w->final)) {
        write_hold(c, w);
        return 1;
    }
    coord_job_write_done(j);
    c->writes--;
    if (w->ok && j->stalled) disk_back(c, j);
    if (w->final && w->held)
        held_final_done(c, w);
    else if (final_waits && w->ok)
        coord_image_ok(c, w->slot);
    else if (final_waits)
        coord_image_failed(c, w->slot, w->err);
    else if (!w->final && !w->ok)
        coord_log(c, 1, "job %s: %s", j->id, w->err);
    coord_job_check_end(c, j);
    return 0;
}

void coord_writes_collect(coord_t *c)
{
    for (coord_write *w = coord_writer_take_done(c->writer), *next; w; w = next) {
        next = w->next;
        if (!write_finished(c, w)) coord_write_free(w);
    }
}

/* Stalled job j's retry is due: its oldest held write goes to the pool, or, with none held
 * (its manifest waits), the job tries to end again. */
static void retry_job(coord_t *c, coord_job *j)
{
    coord_write *w = coord_writer_unhold(c->writer, j, 0);
    if (w) {
        w->probe = 1;
        j->stall_probe = 1;
        coord_writer_submit(c->writer, w);
        return;
    }
    coord_job_unstall(j);
    coord_job_check_end(c, j); /* may stall it again, backing off further */
}

int coord_writes_retry(coord_t *c, long long now, int *retried)
{
    int wait = -1;
    *retried = 0;
    /* backwards: a job that ends leaves the running list, shifting only those after it */
    for (uint32_t i = coord_jobs_running(c->jobs); i-- > 0;) {
        coord_job *j = coord_jobs_running_at(c->jobs, i);
        if (!j->stalled || j->stall_probe) continue;
        if (now >= j->stall_retry_at) {
            retry_job(c, j);
            *retried = 1;
            continue;
        }
        long long left = j->stall_retry_at - now;
        if (wait < 0 || left < wait) wait = (int)left;
    }
    return wait;
}

uint32_t coord_writes_in_pool(const coord_t *c)
{
    return c->writes - coord_writer_held(c->writer, NULL, NULL);
}
