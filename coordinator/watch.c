/* WATCH streams: a client watching a job gets PROGRESS at once, then whenever the job changes
 * (at most every COORD_WATCH_MIN_MS), and DONE when it ends; STATUS entries are built here too.
 * The watchers are this file's part of the coordinator's state. */
#include "coordinator/coord_internal.h"
#include "coordinator/grow.h"

#include <string.h>

int coord_client_send(coord_t *c, const proto_rid *to, const proto_msg *m)
{
    strata_err e = {0};
    int rc = proto_send(c->csock, to, m, &e);
    if (rc < 0) coord_log(c, 0, "%s to a client not sent: %s", proto_type_name(m->type), e.msg);
    return rc;
}

void coord_job_status(const coord_t *c, const coord_job *j, struct proto_job_status *st,
                      struct proto_level_status *lv)
{
    int stalled = j->state == COORD_JOB_RUNNING && j->stalled;
    /* "stalled" on the wire only: the job runs, waiting for its disk */
    *st =
        (struct proto_job_status){.id = j->id,
                                  .state = coord_job_state_shown(j),
                                  .reason = stalled ? (j->stall ? j->stall : "disk trouble") : NULL,
                                  .count = j->count,
                                  .done = j->done,
                                  .failed = j->failed,
                                  .nlevels = (uint32_t)(j->end - j->first),
                                  .levels = lv};
    for (int l = j->first; l < j->end; l++)
        lv[l - j->first] =
            (struct proto_level_status){.name = c->pipe.levels[l].name,
                                        .queued = j->lv[l].queued,
                                        .running = j->lv[l].running,
                                        .done = j->lv[l].done,
                                        .compute_ms = j->lv[l].compute_ms,
                                        .ranks = coord_registry_ranks(c->workers, l)};
}

static int send_progress(coord_t *c, coord_watcher *w, long long now)
{
    struct proto_level_status lv[PIPELINE_MAX_LEVELS];
    proto_msg m = {.type = PROTO_PROGRESS};
    coord_job_status(c, w->job, &m.progress, lv);
    w->sent_version = w->job->version;
    w->sent_ms = now;
    return coord_client_send(c, &w->rid, &m);
}

static void send_done(coord_t *c, const proto_rid *to, const coord_job *j)
{
    proto_msg m = {.type = PROTO_DONE,
                   .done = {.job = j->id, .state = coord_job_state_name(j->state)}};
    coord_client_send(c, to, &m);
}

static void watcher_remove(coord_t *c, uint32_t i)
{
    c->watchers[i] = c->watchers[--c->nwatchers];
}

int coord_watch(coord_t *c, const proto_rid *from, coord_job *j)
{
    coord_watcher w = {.rid = *from, .job = j};
    if (send_progress(c, &w, clock_now_ms()) < 0) return 0;
    if (j->state != COORD_JOB_RUNNING) {
        send_done(c, from, j);
        return 0;
    }
    for (uint32_t i = 0; i < c->nwatchers; i++) /* watching twice still gets one stream */
        if (c->watchers[i].job == j && proto_rid_equal(&c->watchers[i].rid, from)) {
            c->watchers[i] = w;
            return 0;
        }
    if (coord_grow(&c->watchers, &c->capwatchers, c->nwatchers + 1, sizeof *c->watchers) < 0)
        return -1;
    c->watchers[c->nwatchers++] = w;
    return 0;
}

int coord_watchers_flush(coord_t *c, long long now)
{
    int next = -1;
    for (uint32_t i = 0; i < c->nwatchers;) {
        coord_watcher *w = &c->watchers[i];
        if (w->sent_version == w->job->version) {
            i++;
            continue;
        }
        long long due = w->sent_ms + COORD_WATCH_MIN_MS;
        if (now < due) {
            if (next < 0 || due - now < next) next = (int)(due - now);
            i++;
            continue;
        }
        if (send_progress(c, w, now) < 0) { /* the watcher is gone */
            watcher_remove(c, i);
            continue;
        }
        i++;
    }
    return next;
}

void coord_watchers_job_ended(coord_t *c, coord_job *j)
{
    long long now = clock_now_ms();
    for (uint32_t i = 0; i < c->nwatchers;) {
        coord_watcher *w = &c->watchers[i];
        if (w->job != j) {
            i++;
            continue;
        }
        if (send_progress(c, w, now) == 0) send_done(c, &w->rid, j);
        watcher_remove(c, i);
    }
}
