/* The client side: SUBMIT, STATUS, WATCH (PROGRESS at most every COORD_WATCH_MIN_MS, then DONE)
 * and CANCEL. Every request gets exactly one reply (WATCH: a stream ending in DONE); anything
 * else, garbage included, gets ERROR. */
#include "coordinator/coord_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void client_error(coord_t *c, const proto_rid *to, const char *message)
{
    proto_msg m = {.type = PROTO_ERROR, .error = {.message = message}};
    coord_client_send(c, to, &m);
}

void coord_client_garbage(coord_t *c, const proto_rid *from, const char *why)
{
    if (!from || from->len == 0) return;
    char msg[320];
    snprintf(msg, sizeof msg, "bad frame: %s", why);
    client_error(c, from, msg);
}

static void on_status(coord_t *c, const proto_rid *from, const char *id)
{
    uint32_t n = id ? 1 : coord_jobs_count(c->jobs);
    struct proto_job_status *st = calloc(n ? n : 1, sizeof *st);
    struct proto_level_status *lv = calloc((size_t)(n ? n : 1) * PIPELINE_MAX_LEVELS, sizeof *lv);
    char err[96];
    if (!st || !lv) {
        client_error(c, from, "STATUS: coordinator out of memory");
    } else if (id && !coord_jobs_find(c->jobs, id)) {
        snprintf(err, sizeof err, "STATUS: no job %s", id);
        client_error(c, from, err);
    } else {
        for (uint32_t i = 0; i < n; i++)
            coord_job_status(c, id ? coord_jobs_find(c->jobs, id) : coord_jobs_at(c->jobs, i),
                             &st[i], &lv[(size_t)i * PIPELINE_MAX_LEVELS]);
        proto_msg m = {.type = PROTO_STATUS_REPLY, .status_reply = {.njobs = n, .jobs = st}};
        coord_client_send(c, from, &m);
    }
    free(st);
    free(lv);
}

static void on_watch(coord_t *c, const proto_rid *from, const char *id)
{
    coord_job *j = coord_jobs_find(c->jobs, id);
    if (!j) {
        char err[96];
        snprintf(err, sizeof err, "WATCH: no job %s", id);
        client_error(c, from, err);
        return;
    }
    if (coord_watch(c, from, j) < 0) client_error(c, from, "WATCH: coordinator out of memory");
}

/* A job belongs to the key that submitted it (docs/design.md section 6). */
static void on_submit(coord_t *c, const proto_rid *from, const char *user, const char *spec)
{
    char id[COORD_ID_MAX];
    strata_err e = {0};
    if (coord_job_submit(c, spec, user, id, &e) < 0) {
        coord_log(c, 1, "SUBMIT refused: %s", e.msg);
        client_error(c, from, e.msg);
        return;
    }
    proto_msg m = {.type = PROTO_SUBMITTED, .submitted = {.job = id}};
    coord_client_send(c, from, &m);
}

/* Only the job's owner or an admin key may cancel it; anyone let in may read its status. */
static void on_cancel(coord_t *c, const proto_rid *from, const char *user, const char *id)
{
    strata_err e = {0};
    const coord_job *j = coord_jobs_find(c->jobs, id);
    if (j && !coord_access_may_cancel(c, user, j->owner)) {
        char err[160];
        snprintf(err, sizeof err, "CANCEL: job %s belongs to another key", id);
        coord_log(c, 1, "%s", err);
        client_error(c, from, err);
        return;
    }
    if (coord_job_cancel(c, id, &e) < 0) {
        client_error(c, from, e.msg);
        return;
    }
    proto_msg m = {.type = PROTO_CANCELLED, .cancelled = {.job = id}};
    coord_client_send(c, from, &m);
}

void coord_on_client_msg(coord_t *c, const proto_rid *from, const char *user, proto_msg *m)
{
    char err[96];
    switch (m->type) {
    case PROTO_SUBMIT:
        on_submit(c, from, user, m->submit.spec);
        break;
    case PROTO_STATUS:
        on_status(c, from, m->status.job);
        break;
    case PROTO_WATCH:
        on_watch(c, from, m->watch.job);
        break;
    case PROTO_CANCEL:
        on_cancel(c, from, user, m->cancel.job);
        break;
    default:
        coord_log(c, 1, "%s on the client socket dropped", proto_type_name(m->type));
        snprintf(err, sizeof err, "unexpected %s: clients send SUBMIT, STATUS, WATCH or CANCEL",
                 proto_type_name(m->type));
        client_error(c, from, err);
    }
}
