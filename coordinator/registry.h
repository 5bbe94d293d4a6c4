/* coordinator internal: the worker registry, an opaque table of the workers that said HELLO,
 * with their credits (tasks each will take now), leases and liveness. A leaf: it sends nothing
 * and calls no other part of the coordinator. Each level's credit total (what the scheduler
 * reads before it looks for a worker) is private: only the functions here change a worker's
 * credits, and each changes the total with them.
 *
 * Credits are derived, never accumulated: a worker's last READY says its capacity and how many
 * TASKs it has received; the TASKs sent to it since (sent - received) are on their way and
 * take capacity too. So a lost READY or a lost TASK cannot make the count drift.
 *
 * Workers live in a small array scanned linearly (tens of entries). Removing one moves the last
 * into its place, as the round-robin cursors of the scheduler expect. */
#ifndef STRATA_COORD_REGISTRY_H
#define STRATA_COORD_REGISTRY_H

#include "coordinator/coordinator.h"
#include "proto/proto.h"

#include <stdint.h>

enum { COORD_MAX_CREDITS = 1 << 20 }; /* one worker's credits are bounded: no counter wraps */

/* One worker, read-only outside registry.c. */
typedef struct coord_worker {
    proto_rid rid;
    uint64_t rid_hash; /* coord_rid_hash(&rid) */
    char name[64];
    uint32_t serial; /* unique for the coordinator's life (leases name it) */
    int level;
    uint32_t credits;  /* tasks it will take now: capacity - (sent - received), 0 while parked or
                          draining */
    uint32_t capacity; /* its last READY's: tasks it can take (absolute) */
    uint32_t received; /* its last READY's: TASKs it has received on this registration */
    uint32_t sent;     /* TASKs sent to it on this registration (less those found lost) */
    uint32_t slots;    /* HELLO's: tasks it holds at most; capacity == slots: it holds none */
    int parked;        /* a send to it failed: no credits until the next tick */
    int draining;      /* it said so in READY: it gets nothing more */
    long long gap_ms;  /* when a READY first showed it idle with received < sent; 0: none */
    uint32_t gap_sent; /* sent then: a TASK sent since starts the wait again */
    uint32_t running;  /* tasks leased to it */
    uint32_t ranks;    /* HELLO's: the MPI ranks it is made of (1: one process) */
    char key[PROTO_KEY_LEN + 1]; /* the CURVE key it registered with ("" without CURVE) */
    long long last_seen_ms;
} coord_worker;

typedef struct coord_registry coord_registry_t;

/* An empty registry for a pipeline of nlevels. 0, or -1 when out of memory. */
int coord_registry_new(int nlevels, coord_registry_t **out);
/* Free it; *r becomes NULL. NULL is fine. */
void coord_registry_destroy(coord_registry_t **r);

/* FNV-1a of a routing id. */
uint64_t coord_rid_hash(const proto_rid *rid);

/* Workers known / worker i (i < coord_registry_size; the pointer is good until the next add). */
uint32_t coord_registry_size(const coord_registry_t *r);
const coord_worker *coord_registry_at(const coord_registry_t *r, uint32_t i);
/* Index of the worker with routing id rid / with this serial, or -1. */
int coord_registry_find(const coord_registry_t *r, const proto_rid *rid);
int coord_registry_by_serial(const coord_registry_t *r, uint32_t serial);

/* Register a worker of level, seen at now_ms, with no credits: its index, or -1 when out of
 * memory. */
int coord_registry_add(coord_registry_t *r, const proto_rid *rid, const char *name, int level,
                       long long now_ms);
/* Worker i holds at most slots tasks at once (HELLO's slots; 0 counts as 1). */
void coord_registry_set_slots(coord_registry_t *r, uint32_t i, uint32_t slots);
/* Worker i is a group of ranks MPI ranks (HELLO's ranks; 0 counts as 1). */
void coord_registry_set_ranks(coord_registry_t *r, uint32_t i, uint32_t ranks);
/* Worker i registered with the CURVE key (Z85; "" without CURVE): its frames must carry it. */
void coord_registry_set_key(coord_registry_t *r, uint32_t i, const char *key);
/* The most ranks of one worker of level (0 when the level has none). */
uint32_t coord_registry_ranks(const coord_registry_t *r, int level);
/* Forget worker i (its credits leave the total); the last worker moves into i. */
void coord_registry_remove(coord_registry_t *r, uint32_t i);

/* READY: worker i can take capacity tasks (bounded by COORD_MAX_CREDITS) and has received
 * received TASKs; draining (sticky): it gets no more. */
void coord_registry_ready(coord_registry_t *r, uint32_t i, uint32_t capacity, uint32_t received,
                          int draining);
/* Worker i got a task: one more sent (a credit spent until its READY counts it), one more
 * task running. */
void coord_registry_lease(coord_registry_t *r, uint32_t i);
/* The TASKs sent to worker i that it never received were re-queued: sent becomes received. */
void coord_registry_lost_forgiven(coord_registry_t *r, uint32_t i);
/* When a READY first showed worker i idle with TASKs missing, with the count sent then (ms 0:
 * it does not any more). */
void coord_registry_set_gap(coord_registry_t *r, uint32_t i, long long ms);
/* A task leased to the worker with this serial ended; nothing when it is gone. */
void coord_registry_lease_end(coord_registry_t *r, uint32_t serial);
/* A send to worker i failed: no credits until coord_registry_unpark (a retry at the next
 * heartbeat tick, not a busy loop). */
void coord_registry_park(coord_registry_t *r, uint32_t i);
void coord_registry_unpark(coord_registry_t *r, uint32_t i);

/* Worker i was heard at now_ms / its silence so far is forgiven by ms (the loop stalled). */
void coord_registry_seen(coord_registry_t *r, uint32_t i, long long now_ms);
void coord_registry_forgive(coord_registry_t *r, uint32_t i, long long ms);

/* The credits of level's workers together. */
uint32_t coord_registry_credits(const coord_registry_t *r, int level);
/* The scheduler's round-robin cursor of level (a worker index, may be past the end). */
uint32_t coord_registry_cursor(const coord_registry_t *r, int level);
void coord_registry_set_cursor(coord_registry_t *r, int level, uint32_t cursor);

/* The registry's own invariants: each level's credit total is the sum of its workers' credits,
 * levels are in range, serials and routing ids are unique. 0, or -1 naming the first broken
 * one in e. */
int coord_registry_check(const coord_registry_t *r, strata_err *e);

#endif
