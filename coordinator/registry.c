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
    w->last_seen_ms = now_ms;
    return (int)r->n++;
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

void coord_registry_credit(coord_registry_t *r, uint32_t i, uint32_t n)
{
    coord_worker *w = &r->w[i];
    uint32_t room = COORD_MAX_CREDITS - w->credits;
    if (n > room) n = room;
    w->credits += n;
    r->credits[w->level] += n;
}

void coord_registry_lease(coord_registry_t *r, uint32_t i)
{
    coord_worker *w = &r->w[i];
    w->credits--;
    r->credits[w->level]--;
    w->running++;
}

void coord_registry_lease_end(coord_registry_t *r, uint32_t serial)
{
    int i = coord_registry_by_serial(r, serial);
    if (i >= 0 && r->w[i].running) r->w[i].running--;
}

void coord_registry_park(coord_registry_t *r, uint32_t i)
{
    coord_worker *w = &r->w[i];
    r->credits[w->level] -= w->credits;
    w->parked += w->credits;
    w->credits = 0;
}

void coord_registry_unpark(coord_registry_t *r, uint32_t i)
{
    coord_worker *w = &r->w[i];
    w->credits += w->parked;
    r->credits[w->level] += w->parked;
    w->parked = 0;
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
    return 0;
}
