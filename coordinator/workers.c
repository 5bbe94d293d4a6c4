/* Worker messages: HELLO/WELCOME, credits (READY), liveness (HEARTBEAT both ways), BYE, into
 * the worker registry. A worker is known by its routing id from HELLO until it says BYE,
 * re-HELLOs or falls silent for liveness x heartbeat_ms; then its leased tasks are re-queued
 * and it is forgotten. */
#include "coordinator/coord_internal.h"

#include <stdio.h>
#include <string.h>

static int level_by_name(const coord_t *c, const char *name)
{
    for (int i = 0; i < c->pipe.nlevels; i++)
        if (!strcmp(c->pipe.levels[i].name, name)) return i;
    return -1;
}

/* Forget worker w: its leased tasks go back to the front of their queues. */
static void worker_forget(coord_t *c, int w, const char *why)
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
                coord_task_lost(c, s, full);
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

/* WELCOME: the settings of level i, the contract with the worker. */
static void send_welcome(coord_t *c, const proto_rid *to, int i, const char *name)
{
    const level_spec *l = &c->pipe.levels[i];
    proto_msg m = {.type = PROTO_WELCOME,
                   .welcome.config = {.model = l->model,
                                      .kind = l->kind,
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
                                      .tile_blend = tile_blend_name(l->tile_blend)}};
    send_to_worker(c, to, &m, name);
}

static void on_hello(coord_t *c, const proto_rid *from, const struct proto_hello *h)
{
    int old = coord_registry_find(c->workers, from);
    if (old >= 0) worker_forget(c, old, "said HELLO again");
    int level = level_by_name(c, h->level);
    if (level < 0) {
        coord_log(c, 1, "worker %s asked for level '%s', not in pipeline %s: SHUTDOWN", h->worker,
                  h->level, c->pipe.name);
        proto_msg m = {.type = PROTO_SHUTDOWN};
        send_to_worker(c, from, &m, h->worker);
        return;
    }
    int w = coord_registry_add(c->workers, from, h->worker, level, clock_now_ms());
    if (w < 0) {
        coord_log(c, 1, "worker %s not registered: out of memory", h->worker);
        return;
    }
    coord_registry_set_ranks(c->workers, (uint32_t)w, h->ranks);
    coord_log(c, 0, "worker %s (%s) joined from %s pid %u ranks %u",
              coord_registry_at(c->workers, (uint32_t)w)->name, h->level, h->host, h->pid,
              h->ranks);
    send_welcome(c, from, level, h->worker);
}

void coord_on_worker_msg(coord_t *c, const proto_rid *from, proto_msg *m)
{
    if (m->type == PROTO_HELLO) {
        on_hello(c, from, &m->hello);
        return;
    }
    int w = coord_registry_find(c->workers, from);
    if (w < 0) {
        /* a worker we forgot (or never met): it re-HELLOs once our heartbeats stop */
        coord_log(c, 1, "%s from unknown worker '%.*s' dropped", proto_type_name(m->type),
                  (int)from->len, (const char *)from->id);
        return;
    }
    coord_registry_seen(c->workers, (uint32_t)w, clock_now_ms());
    switch (m->type) {
    case PROTO_READY:
        coord_registry_credit(c->workers, (uint32_t)w, m->ready.credits);
        break;
    case PROTO_RESULT:
        coord_on_result(c, w, &m->result);
        break;
    case PROTO_HEARTBEAT:
        break;
    case PROTO_BYE:
        worker_forget(c, w, "said BYE");
        break;
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
            worker_forget(c, (int)i, why); /* moves the last worker into i */
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
