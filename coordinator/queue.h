/* coordinator internal: the task queue, an opaque table of the images in flight and the
 * per-level queues of their tasks. A leaf: it calls no other part of the coordinator, so what
 * a job counts (queued, running) is counted by the caller next to each call here.
 *
 * Shape (sized for 100,000-image jobs at thousands of level-tasks per second): an image that has
 * started and not finished owns a *slot* (a pool bounded by the backpressure limit, reused
 * through a free list); the slot holds its current task, its lease and its conditioning pixels.
 * A task id is (sequence << COORD_SLOT_BITS) | slot, so a RESULT finds its slot in O(1); the id
 * stays the same across retries, the attempt number changes (the lease is the pair). One binary
 * heap per level orders the queued slots (re-queued first, then job priority, job arrival, image
 * index); entries of slots that moved on (cancelled, re-tasked) go stale and are dropped when
 * popped. */
#ifndef STRATA_COORD_QUEUE_H
#define STRATA_COORD_QUEUE_H

#include "coordinator/coordinator.h"
#include "coordinator/journal.h"

#include <stdint.h>

enum {
    COORD_SLOT_BITS = 24, /* task id = seq << 24 | slot */
    COORD_MAX_SLOTS = 1 << 24,
    COORD_MAX_EXCLUDE = 16, /* max_attempts is capped to this */
};

typedef enum coord_slot_state {
    COORD_SLOT_FREE = 0,
    COORD_SLOT_QUEUED,
    COORD_SLOT_RUNNING,
    COORD_SLOT_WRITING, /* the last level is done; its PNG is with the writer pool */
} coord_slot_state;

struct coord_job;

/* One image in flight. The first group is the queue's: read it, change it only through
 * coord_queue_*. The second group is the caller's. */
typedef struct coord_slot {
    uint64_t task;      /* current task id; 0 when free */
    uint8_t state;      /* coord_slot_state */
    uint8_t level;      /* pipeline index of the current task */
    uint8_t front;      /* re-queued: goes before fresh tasks */
    uint32_t worker;    /* serial of the lease holder while RUNNING */
    uint32_t next_free; /* free-list link while FREE */
    struct coord_job *job;
    uint32_t image;
    int32_t priority; /* the job's, for the queue order */
    uint32_t arrival; /* the job's submission order, for the queue order */

    uint32_t attempt; /* 1 for the first try of each level's task (set by new tasks) */
    uint8_t failures; /* RESULT ok=false (or a bad output) for this task */
    uint8_t losses;   /* workers that died holding this task */
    uint8_t nexcluded;
    uint64_t excluded[COORD_MAX_EXCLUDE]; /* routing-id hashes of workers that failed it */
    uint8_t *cond; /* the previous level's output, cond_side^2 * 3 bytes (freed with the slot) */
    int cond_side;
    coord_spool_ref spool; /* with --state: where cond lies in the spool (seg 0: nowhere) */
} coord_slot;

typedef struct coord_queue coord_queue_t;

/* An empty queue whose task ids continue from first_seq. 0, or -1 when out of memory. */
int coord_queue_new(uint64_t first_seq, coord_queue_t **out);
/* Free the queue and every slot's pixels; *q becomes NULL. NULL is fine. */
void coord_queue_destroy(coord_queue_t **q);

/* Start image `image` of job: a slot with a fresh task at level (new id, attempt 1), not yet
 * queued. The slot index, or -1 when out of memory or slots. Slot pointers may move. */
int64_t coord_queue_start(coord_queue_t *q, struct coord_job *job, uint32_t image, int32_t priority,
                          uint32_t arrival, int level);
/* Give slot s a fresh task at level: new id, attempt 1, no failures, losses or exclusions. */
void coord_queue_new_task(coord_queue_t *q, uint32_t s, int level);
/* Queue slot s at its level (front: before fresh tasks). 0, or -1 when out of memory. */
int coord_queue_push(coord_queue_t *q, uint32_t s, int front);
/* Pop the best queued slot of level, dropping stale entries; -1 when none. */
int64_t coord_queue_pop(coord_queue_t *q, int level);
/* Slot s (popped) is leased to the worker with serial worker / its lease ended (it waits to be
 * queued again or freed) / its final PNG is being written. */
void coord_queue_lease(coord_queue_t *q, uint32_t s, uint32_t worker);
void coord_queue_lease_end(coord_queue_t *q, uint32_t s);
void coord_queue_writing(coord_queue_t *q, uint32_t s);
/* The image of slot s finished (or its job ended): the slot is free, its pixels released. */
void coord_queue_release(coord_queue_t *q, uint32_t s);

/* The slot whose current task is task, or -1 (an old, foreign or unknown id). */
int64_t coord_queue_find(const coord_queue_t *q, uint64_t task);
/* Slot s (s < coord_queue_slots); the pointer is good until the next coord_queue_start. */
coord_slot *coord_queue_slot(coord_queue_t *q, uint32_t s);
const coord_slot *coord_queue_slot_c(const coord_queue_t *q, uint32_t s);
/* Slots ever allocated (free ones included) / images in flight. */
uint32_t coord_queue_slots(const coord_queue_t *q);
uint32_t coord_queue_active(const coord_queue_t *q);

/* The queue's own invariants: the in-flight count, the free list, the heap order, and every
 * queued slot in its level's heap exactly once. 0, or -1 naming the first broken one in e. */
int coord_queue_check(coord_queue_t *q, strata_err *e);

#endif
