/* Worker messages: HELLO/WELCOME, capacity (READY), liveness (HEARTBEAT both ways), BYE, into
 * the worker registry. A worker is known by its routing id from HELLO until it says BYE,
 * re-HELLOs or falls silent for liveness x heartbeat_ms; then its leased tasks are re-queued
 * and it is forgotten. READY also finds TASKs that never arrived (on_ready) and workers that
 * drain (they get nothing more, and their leaving is no loss). */
#include "coordinator/coord_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int level_by_name(const coord_t *c, const char *name)
{
    for (int i = 0; i < c->pipe.nlevels; i++)
        if (!strcmp(c->pipe.levels[i].name, name)) return i;
    return -1;
}

/* Forget worker w: its leased tasks go back to the front of their queues, each counted as a
 * loss unless lost is 0 (a drained worker leaving). */
static void worker_forget(coord_t *c, int w, const char *why, int lost)
{
    const coord_worker *wk = coord_registry_at(c->workers, (uint32_t)w);
    uint32_t serial = wk->serial;
    char full[160];
    snprintf(full, sizeof full, "worker %s %s", wk->name, why);
    coord_log(c, !!wk->running, "worker %s (%s) forgotten: %s", wk->name,
              c->pipe.levels[wk->level].name, why);
    /* O(images in flight); workers leave rarely */
    if (wk->running)
        for (uint32_t s = 0; s < coord_queue_slots(c->queue); s++) {
            const coord_slot *sl = coord_queue_slot(c->queue, s);
            if (sl->state == COORD_SLOT_RUNNING && sl->worker == serial)
                (lost ? coord_task_lost : coord_task_returned)(c, s, full);
        }
    w = coord_registry_by_serial(c->workers, serial); /* task_lost removes no worker; be sure */
    if (w >= 0) coord_registry_remove(c->workers, (uint32_t)w);
}

static void send_to_worker(coord_t *c, const proto_rid *to, const proto_msg *m, const char *name)
{
    strata_err e = {0};
    if (proto_send(c->wsock, to, m, &e) < 0)
        coord_log(c, 1, "%s to worker %s not sent: %s", proto_type_name(m->type), name, e.msg);
}

/* WELCOME: the settings of level i, the contract with the worker, and the model's hash; no
 * path of this host's (the worker finds the model itself). */
static void send_welcome(coord_t *c, const proto_rid *to, int i, const char *name)
{
    const level_spec *l = &c->pipe.levels[i];
    proto_msg m = {.type = PROTO_WELCOME,
                   .welcome.config = {.kind = l->kind,
                                      .index = (uint32_t)i,
                                      .side = l->side,
                                      .steps = l->steps,
                                      .sampler = l->sampler,
                                      .eta = l->eta,
                                      .noise_level = l->noise_level,
                                      .guidance = l->guidance,
                                      .tile = l->tile,
                                      .overlap = l->overlap,
                                      .heartbeat_ms = c->o.heartbeat_ms,
                                      .liveness = c->o.liveness,
                                      .tile_blend = tile_blend_name(l->tile_blend),
                                      .model_hash = c->model_hash[i][0] ? c->model_hash[i] : NULL}};
    send_to_worker(c, to, &m, name);
}

/* ERROR to a worker: "refused: ..." ends it (it cannot serve); anything else makes it say
 * HELLO again. */
static void send_error(coord_t *c, const proto_rid *to, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void send_error(coord_t *c, const proto_rid *to, const char *fmt, ...)
{
    char text[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    proto_msg m = {.type = PROTO_ERROR, .error = {.message = text}};
    strata_err e = {0};
    proto_send(c->wsock, to, &m, &e); /* a peer gone or unknown to libzmq: nothing to tell */
}

/* 1 when a HELLO's model matches the level's (or either is unknown); else the worker is told
 * why, naming both hashes. */
static int model_ok(coord_t *c, const proto_rid *from, int level, const struct proto_hello *h)
{
    const char *mine = c->model_hash[level];
    if (!h->model_hash || !*h->model_hash || !*mine || !strcmp(h->model_hash, mine)) return 1;
    coord_log(c, 1, "worker %s refused: level %s's model is sha256 %s here, %s there", h->worker,
              h->level, mine, h->model_hash);
    send_error(c, from,
               "refused: level %s's model differs: the coordinator's is sha256 %s, this "
               "worker's %s",
               h->level, mine, h->model_hash);
    return 0;
}

/* A worker says HELLO again on a fresh connection (a new routing id): its registration under
 * the old one, same name and key, ends now rather than after liveness x heartbeat_ms. */
static void forget_earlier(coord_t *c, const proto_rid *from, const char *user, const char *name)
{
    for (uint32_t i = 0; i < coord_registry_size(c->workers); i++) {
        const coord_worker *w = coord_registry_at(c->workers, i);
        if (!strncmp(w->name, name, sizeof w->name - 1) && !strcmp(w->key, user) &&
            !proto_rid_equal(&w->rid, from)) {
            worker_forget(c, (int)i, "said HELLO again on a new connection", 1);
            return;
        }
    }
}

static void on_hello(coord_t *c, const proto_rid *from, const char *user,
                     const struct proto_hello *h)
{
    int old = coord_registry_find(c->workers, from);
    if (old >= 0 && strcmp(coord_registry_at(c->workers, (uint32_t)old)->key, user)) {
        coord_log(c, 1, "HELLO from '%s' refused: its identity belongs to another key", h->worker);
        send_error(c, from, "identity in use by another key: reconnect");
        return;
    }
    if (old >= 0) worker_forget(c, old, "said HELLO again", 1);
    forget_earlier(c, from, user, h->worker);
    int level = level_by_name(c, h->level);
    if (level < 0) {
        coord_log(c, 1, "worker %s asked for level '%s', not in pipeline %s: SHUTDOWN", h->worker,
                  h->level, c->pipe.name);
        proto_msg m = {.type = PROTO_SHUTDOWN};
        send_to_worker(c, from, &m, h->worker);
        return;
    }
    if (!model_ok(c, from, level, h)) return;
    int w = coord_registry_add(c->workers, from, h->worker, level, clock_now_ms());
    if (w < 0) {
        coord_log(c, 1, "worker %s not registered: out of memory", h->worker);
        return;
    }
    coord_registry_set_slots(c->workers, (uint32_t)w, h->slots);
    coord_registry_set_ranks(c->workers, (uint32_t)w, h->ranks);
    coord_registry_set_key(c->workers, (uint32_t)w, user);
    coord_log(c, 0, "worker %s (%s) joined from %s pid %u ranks %u",
              coord_registry_at(c->workers, (uint32_t)w)->name, h->level, h->host, h->pid,
              h->ranks);
    send_welcome(c, from, level, h->worker);
}

/* TASKs sent to worker w that it never received: its READY says it holds none (capacity ==
 * slots) and counts fewer TASKs received than were sent, and still does a heartbeat later with
 * nothing sent in between (a TASK on its way when a READY left shows on the next one; an idle
 * worker sends one every heartbeat). Its leases then all name tasks it does not hold: they go
 * back to the queue at once, as neither a failure nor a loss, and the counts agree again. */
static void find_lost_tasks(coord_t *c, int w, const struct proto_ready *r, long long now)
{
    const coord_worker *wk = coord_registry_at(c->workers, (uint32_t)w);
    if (wk->draining || r->capacity < wk->slots || r->received >= wk->sent) {
        coord_registry_set_gap(c->workers, (uint32_t)w, 0);
        return;
    }
    if (!wk->gap_ms || wk->gap_sent != wk->sent) {
        coord_registry_set_gap(c->workers, (uint32_t)w, now);
        return;
    }
    if (now - wk->gap_ms < c->o.heartbeat_ms) return;
    char why[160];
    snprintf(why, sizeof why, "worker %s received %u of the %u TASKs sent to it", wk->name,
             r->received, wk->sent);
    uint32_t serial = wk->serial;
    for (uint32_t s = 0; wk->running && s < coord_queue_slots(c->queue); s++) {
        const coord_slot *sl = coord_queue_slot(c->queue, s);
        if (sl->state == COORD_SLOT_RUNNING && sl->worker == serial) coord_task_returned(c, s, why);
    }
    coord_registry_lost_forgiven(c->workers, (uint32_t)w);
}

static void on_ready(coord_t *c, int w, const struct proto_ready *r)
{
    const coord_worker *wk = coord_registry_at(c->workers, (uint32_t)w);
    if (r->draining && !wk->draining)
        coord_log(c, 1, "worker %s (%s) draining: no more tasks to it", wk->name,
                  c->pipe.levels[wk->level].name);
    coord_registry_ready(c->workers, (uint32_t)w, r->capacity, r->received, r->draining);
    find_lost_tasks(c, w, r, clock_now_ms());
}

/* The registered worker this frame comes from, or -1: a routing id that has not said HELLO (or
 * one now used by another key) gets ERROR, never a task. */
static int sender(coord_t *c, const proto_rid *from, const char *user, const proto_msg *m)
{
    int w = coord_registry_find(c->workers, from);
    if (w >= 0 && !strcmp(coord_registry_at(c->workers, (uint32_t)w)->key, user)) return w;
    coord_log(c, 1, "%s from unregistered worker '%.*s' refused", proto_type_name(m->type),
              (int)from->len, (const char *)from->id);
    send_error(c, from, "%s before HELLO: say HELLO first", proto_type_name(m->type));
    return -1;
}

void coord_on_worker_msg(coord_t *c, const proto_rid *from, const char *user, proto_msg *m)
{
    if (m->type == PROTO_HELLO) {
        on_hello(c, from, user, &m->hello);
        return;
    }
    int w = sender(c, from, user, m);
    if (w < 0) return;
    coord_registry_seen(c->workers, (uint32_t)w, clock_now_ms());
    switch (m->type) {
    case PROTO_READY:
        on_ready(c, w, &m->ready);
        break;
    case PROTO_RESULT:
        coord_on_result(c, w, &m->result);
        break;
    case PROTO_HEARTBEAT:
        break;
    case PROTO_BYE: {
        int drained = coord_registry_at(c->workers, (uint32_t)w)->draining;
        worker_forget(c, w, drained ? "said BYE after draining" : "said BYE", !drained);
        break;
    }
    default:
        coord_log(c, 1, "%s from worker %s dropped: not a worker message", proto_type_name(m->type),
                  coord_registry_at(c->workers, (uint32_t)w)->name);
    }
}

/* Time the loop itself was stuck (a long write, a big SUBMIT): workers could not be heard
 * then, so it does not count against them. */
static long long stalled_ms(coord_t *c, long long now)
{
    long long gap = c->last_tick_ms ? now - c->last_tick_ms - c->o.heartbeat_ms : 0;
    c->last_tick_ms = now;
    if (gap <= c->o.heartbeat_ms / 2) return 0;
    coord_log(c, 1, "the loop stalled %.1f s; not counted against workers", (double)gap / 1000.0);
    return gap;
}

void coord_workers_tick(coord_t *c, long long now)
{
    long long limit = (long long)c->o.liveness * c->o.heartbeat_ms, stall = stalled_ms(c, now);
    for (uint32_t i = 0; i < coord_registry_size(c->workers);) {
        coord_registry_forgive(c->workers, i, stall);
        coord_registry_unpark(c->workers, i); /* credits parked by a failed send: try again */
        const coord_worker *w = coord_registry_at(c->workers, i);
        if (now - w->last_seen_ms > limit) {
            char why[64];
            snprintf(why, sizeof why, "silent %.1f s", (double)(now - w->last_seen_ms) / 1000.0);
            worker_forget(c, (int)i, why, 1); /* moves the last worker into i */
            continue;
        }
        proto_msg m = {.type = PROTO_HEARTBEAT};
        strata_err e = {0};
        /* a failed heartbeat is not a death: liveness decides */
        proto_send(c->wsock, &w->rid, &m, &e);
        i++;
    }
}

void coord_workers_shutdown(coord_t *c)
{
    for (uint32_t i = 0; i < coord_registry_size(c->workers); i++) {
        const coord_worker *w = coord_registry_at(c->workers, i);
        proto_msg m = {.type = PROTO_SHUTDOWN};
        send_to_worker(c, &w->rid, &m, w->name);
    }
}
