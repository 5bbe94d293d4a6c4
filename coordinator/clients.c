/* The client side: SUBMIT, STATUS, WATCH (PROGRESS at most every COORD_WATCH_MIN_MS, then DONE)
 * and CANCEL. Every request gets exactly one reply (WATCH: a stream ending in DONE); anything
 * else, garbage included, gets ERROR. */
#include "coordinator/coord_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int client_send(coord_t *c, const proto_rid *to, const proto_msg *m)
{
    strata_err e = {0};
    int rc = proto_send(c->csock, to, m, &e);
    if (rc < 0) coord_log(c, 0, "%s to a client not sent: %s", proto_type_name(m->type), e.msg);
    return rc;
}

static void client_error(coord_t *c, const proto_rid *to, const char *message)
{
    proto_msg m = {.type = PROTO_ERROR, .error = {.message = message}};
    client_send(c, to, &m);
}

void coord_client_garbage(coord_t *c, const proto_rid *from, const char *why)
{
    if (!from || from->len == 0) return;
    char msg[320];
    snprintf(msg, sizeof msg, "bad frame: %s", why);
    client_error(c, from, msg);
}

/* j's entry; lv holds its levels (PIPELINE_MAX_LEVELS entries). */
static void job_status(const coord_t *c, const coord_job *j, struct proto_job_status *st,
                       struct proto_level_status *lv)
{
    *st = (struct proto_job_status){.id = j->id,
                                    .state = coord_job_state_name(j->state),
                                    .count = j->count,
                                    .done = j->done,
                                    .failed = j->failed,
                                    .nlevels = (uint32_t)(j->end - j->first),
                                    .levels = lv};
    for (int l = j->first; l < j->end; l++)
        lv[l - j->first] = (struct proto_level_status){.name = c->pipe.levels[l].name,
                                                       .queued = j->lv[l].queued,
                                                       .running = j->lv[l].running,
                                                       .done = j->lv[l].done,
                                                       .compute_ms = j->lv[l].compute_ms};
}

static void on_status(coord_t *c, const proto_rid *from, const char *id)
{
    uint32_t n = id ? 1 : c->njobs;
    struct proto_job_status *st = calloc(n ? n : 1, sizeof *st);
    struct proto_level_status *lv = calloc((size_t)(n ? n : 1) * PIPELINE_MAX_LEVELS, sizeof *lv);
    char err[96];
    if (!st || !lv) {
        client_error(c, from, "STATUS: coordinator out of memory");
    } else if (id && !coord_job_find(c, id)) {
        snprintf(err, sizeof err, "STATUS: no job %s", id);
        client_error(c, from, err);
    } else {
        for (uint32_t i = 0; i < n; i++)
            job_status(c, id ? coord_job_find(c, id) : c->jobs[i], &st[i],
                       &lv[(size_t)i * PIPELINE_MAX_LEVELS]);
        proto_msg m = {.type = PROTO_STATUS_REPLY, .status_reply = {.njobs = n, .jobs = st}};
        client_send(c, from, &m);
    }
    free(st);
    free(lv);
}

static int send_progress(coord_t *c, coord_watcher *w, long long now)
{
    struct proto_level_status lv[PIPELINE_MAX_LEVELS];
    proto_msg m = {.type = PROTO_PROGRESS};
    job_status(c, w->job, &m.progress, lv);
    w->sent_version = w->job->version;
    w->sent_ms = now;
    return client_send(c, &w->rid, &m);
}

static void send_done(coord_t *c, const proto_rid *to, const coord_job *j)
{
    proto_msg m = {.type = PROTO_DONE,
                   .done = {.job = j->id, .state = coord_job_state_name(j->state)}};
    client_send(c, to, &m);
}

static void watcher_remove(coord_t *c, uint32_t i)
{
    c->watchers[i] = c->watchers[--c->nwatchers];
}

static void on_watch(coord_t *c, const proto_rid *from, const char *id)
{
    coord_job *j = coord_job_find(c, id);
    if (!j) {
        char err[96];
        snprintf(err, sizeof err, "WATCH: no job %s", id);
        client_error(c, from, err);
        return;
    }
    coord_watcher w = {.rid = *from, .job = j};
    if (send_progress(c, &w, clock_now_ms()) < 0) return;
    if (j->state != COORD_JOB_RUNNING) {
        send_done(c, from, j);
        return;
    }
    for (uint32_t i = 0; i < c->nwatchers; i++) /* watching twice still gets one stream */
        if (c->watchers[i].job == j && proto_rid_equal(&c->watchers[i].rid, from)) {
            c->watchers[i] = w;
            return;
        }
    if (coord_grow(&c->watchers, &c->capwatchers, c->nwatchers + 1, sizeof *c->watchers) < 0) {
        client_error(c, from, "WATCH: coordinator out of memory");
        return;
    }
    c->watchers[c->nwatchers++] = w;
}

static void on_submit(coord_t *c, const proto_rid *from, const char *spec)
{
    char id[COORD_ID_MAX], err[600];
    if (coord_job_submit(c, spec, id, err, sizeof err) < 0) {
        coord_log(c, 1, "SUBMIT refused: %s", err);
        client_error(c, from, err);
        return;
    }
    proto_msg m = {.type = PROTO_SUBMITTED, .submitted = {.job = id}};
    client_send(c, from, &m);
}

static void on_cancel(coord_t *c, const proto_rid *from, const char *id)
{
    char err[160];
    if (coord_job_cancel(c, id, err, sizeof err) < 0) {
        client_error(c, from, err);
        return;
    }
    proto_msg m = {.type = PROTO_CANCELLED, .cancelled = {.job = id}};
    client_send(c, from, &m);
}

void coord_on_client_msg(coord_t *c, const proto_rid *from, proto_msg *m)
{
    char err[96];
    switch (m->type) {
    case PROTO_SUBMIT:
        on_submit(c, from, m->submit.spec);
        break;
    case PROTO_STATUS:
        on_status(c, from, m->status.job);
        break;
    case PROTO_WATCH:
        on_watch(c, from, m->watch.job);
        break;
    case PROTO_CANCEL:
        on_cancel(c, from, m->cancel.job);
        break;
    default:
        coord_log(c, 1, "%s on the client socket dropped", proto_type_name(m->type));
        snprintf(err, sizeof err, "unexpected %s: clients send SUBMIT, STATUS, WATCH or CANCEL",
                 proto_type_name(m->type));
        client_error(c, from, err);
    }
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
