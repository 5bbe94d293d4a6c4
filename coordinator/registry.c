/* The worker registry (see registry.h): workers, their credits and leases, per-level credit
 * totals. */
#include "coordinator/registry.h"
#include "coordinator/grow.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct coord_registry {
    coord_worker *w;
    uint32_t n, cap, next_serial;
    int nlevels;
    uint32_t credits[PIPELINE_MAX_LEVELS]; /* sum of the credits of each level's workers */
    uint32_t rr[PIPELINE_MAX_LEVELS];      /* round-robin cursor per level */
};

int coord_registry_new(int nlevels, coord_registry_t **out)
{
    coord_registry_t *r = calloc(1, sizeof *r);
    *out = r;
    if (!r) return -1;
    r->nlevels = nlevels;
    return 0;
}

void coord_registry_destroy(coord_registry_t **rp)
{
    coord_registry_t *r = rp ? *rp : NULL;
    if (!r) return;
    free(r->w);
    free(r);
    *rp = NULL;
}

uint64_t coord_rid_hash(const proto_rid *rid)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (unsigned i = 0; i < rid->len; i++)
        h = (h ^ rid->id[i]) * 1099511628211ull;
    return h;
}

uint32_t coord_registry_size(const coord_registry_t *r)
{
    return r->n;
}

const coord_worker *coord_registry_at(const coord_registry_t *r, uint32_t i)
{
    return &r->w[i];
}

int coord_registry_find(const coord_registry_t *r, const proto_rid *rid)
{
    uint64_t h = coord_rid_hash(rid);
    for (uint32_t i = 0; i < r->n; i++)
        if (r->w[i].rid_hash == h && proto_rid_equal(&r->w[i].rid, rid)) return (int)i;
    return -1;
}

int coord_registry_by_serial(const coord_registry_t *r, uint32_t serial)
{
    for (uint32_t i = 0; i < r->n; i++)
        if (r->w[i].serial == serial) return (int)i;
    return -1;
}

int coord_registry_add(coord_registry_t *r, const proto_rid *rid, const char *name, int level,
                       long long now_ms)
{
    if (coord_grow(&r->w, &r->cap, r->n + 1, sizeof *r->w) < 0) return -1;
    coord_worker *w = &r->w[r->n];
    memset(w, 0, sizeof *w);
    w->rid = *rid;
    w->rid_hash = coord_rid_hash(rid);
    snprintf(w->name, sizeof w->name, "%s", name);
    w->serial = ++r->next_serial;
    w->level = level;
    w->ranks = 1;
    w->slots = 1;
    w->last_seen_ms = now_ms;
    return (int)r->n++;
}

void coord_registry_set_slots(coord_registry_t *r, uint32_t i, uint32_t slots)
{
    r->w[i].slots = slots ? slots : 1;
}

void coord_registry_set_ranks(coord_registry_t *r, uint32_t i, uint32_t ranks)
{
    r->w[i].ranks = ranks ? ranks : 1;
}

void coord_registry_set_key(coord_registry_t *r, uint32_t i, const char *key)
{
    snprintf(r->w[i].key, sizeof r->w[i].key, "%s", key);
}

uint32_t coord_registry_ranks(const coord_registry_t *r, int level)
{
    uint32_t most = 0;
    for (uint32_t i = 0; i < r->n; i++)
        if (r->w[i].level == level && r->w[i].ranks > most) most = r->w[i].ranks;
    return most;
}

void coord_registry_remove(coord_registry_t *r, uint32_t i)
{
    r->credits[r->w[i].level] -= r->w[i].credits;
    r->w[i] = r->w[--r->n];
}

/* The credits w's last READY and the TASKs sent since leave it. */
static uint32_t registry_due(const coord_worker *w)
{
    uint32_t on_the_way = w->sent > w->received ? w->sent - w->received : 0, n = 0;
    if (!w->parked && !w->draining && w->capacity > on_the_way) n = w->capacity - on_the_way;
    return n > COORD_MAX_CREDITS ? COORD_MAX_CREDITS : n;
}

/* Worker i's credits recomputed, and the level's total with them. */
static void registry_recount(coord_registry_t *r, uint32_t i)
{
    coord_worker *w = &r->w[i];
    uint32_t n = registry_due(w);
    r->credits[w->level] = r->credits[w->level] - w->credits + n;
    w->credits = n;
}

void coord_registry_ready(coord_registry_t *r, uint32_t i, uint32_t capacity, uint32_t received,
                          int draining)
{
    coord_worker *w = &r->w[i];
    w->capacity = capacity;
    w->received = received;
    w->draining |= !!draining;
    registry_recount(r, i);
}

void coord_registry_lease(coord_registry_t *r, uint32_t i)
{
    r->w[i].sent++;
    r->w[i].running++;
    registry_recount(r, i);
}

void coord_registry_lost_forgiven(coord_registry_t *r, uint32_t i)
{
    r->w[i].sent = r->w[i].received;
    r->w[i].gap_ms = 0;
    registry_recount(r, i);
}

void coord_registry_set_gap(coord_registry_t *r, uint32_t i, long long ms)
{
    r->w[i].gap_ms = ms;
    r->w[i].gap_sent = r->w[i].sent;
}

void coord_registry_lease_end(coord_registry_t *r, uint32_t serial)
{
    int i = coord_registry_by_serial(r, serial);
    if (i >= 0 && r->w[i].running) r->w[i].running--;
}

void coord_registry_park(coord_registry_t *r, uint32_t i)
{
    r->w[i].parked = 1;
    registry_recount(r, i);
}

void coord_registry_unpark(coord_registry_t *r, uint32_t i)
{
    r->w[i].parked = 0;
    registry_recount(r, i);
}

void coord_registry_seen(coord_registry_t *r, uint32_t i, long long now_ms)
{
    r->w[i].last_seen_ms = now_ms;
}

void coord_registry_forgive(coord_registry_t *r, uint32_t i, long long ms)
{
    r->w[i].last_seen_ms += ms;
}

uint32_t coord_registry_credits(const coord_registry_t *r, int level)
{
    return r->credits[level];
}

uint32_t coord_registry_cursor(const coord_registry_t *r, int level)
{
    return r->rr[level];
}

void coord_registry_set_cursor(coord_registry_t *r, int level, uint32_t cursor)
{
    r->rr[level] = cursor;
}

/* Worker i against the ones before it: a level in range, a serial and a routing id of its own. */
static int check_worker(const coord_registry_t *r, uint32_t i, strata_err *e)
{
    const coord_worker *w = &r->w[i];
    if (w->level < 0 || w->level >= r->nlevels)
        return err_set(e, ERR_RUNTIME, "registry: worker %s has level %d of %d", w->name, w->level,
                       r->nlevels);
    if (w->serial == 0 || w->serial > r->next_serial || w->rid_hash != coord_rid_hash(&w->rid))
        return err_set(e, ERR_RUNTIME, "registry: worker %s: serial %u, routing id hash wrong",
                       w->name, w->serial);
    for (uint32_t k = 0; k < i; k++)
        if (r->w[k].serial == w->serial || proto_rid_equal(&r->w[k].rid, &w->rid))
            return err_set(e, ERR_RUNTIME, "registry: workers %s and %s share a %s", r->w[k].name,
                           w->name, r->w[k].serial == w->serial ? "serial" : "routing id");
    return 0;
}

int coord_registry_check(const coord_registry_t *r, strata_err *e)
{
    uint64_t sum[PIPELINE_MAX_LEVELS] = {0};
    for (uint32_t i = 0; i < r->n; i++) {
        if (check_worker(r, i, e) < 0) return -1;
        sum[r->w[i].level] += r->w[i].credits;
    }
    for (int l = 0; l < PIPELINE_MAX_LEVELS; l++)
        if (sum[l] != r->credits[l])
            return err_set(e, ERR_RUNTIME,
                           "credits: level %d's workers hold %llu credits, its total says %u", l,
                           (unsigned long long)sum[l], r->credits[l]);
    for (uint32_t i = 0; i < r->n; i++) {
        const coord_worker *w = &r->w[i];
        if (w->credits != registry_due(w))
            return err_set(e, ERR_RUNTIME,
                           "credits: worker %s holds %u; capacity %u, %u sent and %u received "
                           "leave %u",
                           w->name, w->credits, w->capacity, w->sent, w->received, registry_due(w));
    }
    return 0;
}
