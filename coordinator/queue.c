/* The task queue (see queue.h): slots of the images in flight and one binary heap of queued
 * slots per level. */
#include "coordinator/queue.h"
#include "coordinator/grow.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLOT_MASK ((uint64_t)COORD_MAX_SLOTS - 1)
#define NO_SLOT UINT32_MAX

/* A heap entry: a copy of what orders it, so that comparing touches no slot. */
typedef struct coord_qent {
    uint64_t task;
    uint32_t slot;
    uint32_t arrival;
    uint32_t image;
    int32_t priority;
    uint8_t front;
} coord_qent;

typedef struct coord_heap {
    coord_qent *e;
    uint32_t n, cap;
} coord_heap;

struct coord_queue {
    coord_slot *slots;
    uint32_t nslots, capslots, free_head, active;
    uint64_t task_seq;
    coord_heap heaps[PIPELINE_MAX_LEVELS];
    uint8_t *seen; /* coord_queue_check's scratch: live heap entries per slot */
    uint32_t capseen;
};

int coord_queue_new(uint64_t first_seq, coord_queue_t **out)
{
    coord_queue_t *q = calloc(1, sizeof *q);
    *out = q;
    if (!q) return -1;
    q->free_head = NO_SLOT;
    q->task_seq = first_seq;
    return 0;
}

void coord_queue_destroy(coord_queue_t **qp)
{
    coord_queue_t *q = qp ? *qp : NULL;
    if (!q) return;
    for (int i = 0; i < PIPELINE_MAX_LEVELS; i++)
        free(q->heaps[i].e);
    for (uint32_t s = 0; s < q->nslots; s++)
        free(q->slots[s].cond);
    free(q->slots);
    free(q->seen);
    free(q);
    *qp = NULL;
}

/* A zeroed slot (index), or -1 when out of memory or slots. */
static int64_t slot_alloc(coord_queue_t *q)
{
    uint32_t s;
    if (q->free_head != NO_SLOT) {
        s = q->free_head;
        q->free_head = q->slots[s].next_free;
    } else {
        if (q->nslots >= COORD_MAX_SLOTS) return -1;
        if (coord_grow(&q->slots, &q->capslots, q->nslots + 1, sizeof *q->slots) < 0) return -1;
        s = q->nslots++;
    }
    memset(&q->slots[s], 0, sizeof q->slots[s]);
    q->active++;
    return s;
}

int64_t coord_queue_start(coord_queue_t *q, struct coord_job *job, uint32_t image, int32_t priority,
                          uint32_t arrival, int level)
{
    int64_t s = slot_alloc(q);
    if (s < 0) return -1;
    coord_slot *sl = &q->slots[s];
    sl->job = job;
    sl->image = image;
    sl->priority = priority;
    sl->arrival = arrival;
    coord_queue_new_task(q, (uint32_t)s, level);
    return s;
}

void coord_queue_release(coord_queue_t *q, uint32_t s)
{
    coord_slot *sl = &q->slots[s];
    if (sl->state == COORD_SLOT_FREE) return;
    free(sl->cond);
    memset(sl, 0, sizeof *sl);
    sl->next_free = q->free_head;
    q->free_head = s;
    q->active--;
}

void coord_queue_new_task(coord_queue_t *q, uint32_t s, int level)
{
    coord_slot *sl = &q->slots[s];
    sl->task = (++q->task_seq << COORD_SLOT_BITS) | s;
    sl->level = (uint8_t)level;
    sl->attempt = 1;
    sl->failures = sl->losses = sl->nexcluded = 0;
    sl->front = 0;
    sl->state = COORD_SLOT_QUEUED;
}

int64_t coord_queue_find(const coord_queue_t *q, uint64_t task)
{
    uint64_t s = task & SLOT_MASK;
    if (task == 0 || s >= q->nslots || q->slots[s].task != task) return -1;
    return (int64_t)s;
}

coord_slot *coord_queue_slot(coord_queue_t *q, uint32_t s)
{
    return &q->slots[s];
}

const coord_slot *coord_queue_slot_c(const coord_queue_t *q, uint32_t s)
{
    return &q->slots[s];
}

uint32_t coord_queue_slots(const coord_queue_t *q)
{
    return q->nslots;
}

uint32_t coord_queue_active(const coord_queue_t *q)
{
    return q->active;
}

void coord_queue_lease(coord_queue_t *q, uint32_t s, uint32_t worker)
{
    q->slots[s].state = COORD_SLOT_RUNNING;
    q->slots[s].worker = worker;
}

void coord_queue_lease_end(coord_queue_t *q, uint32_t s)
{
    q->slots[s].state = COORD_SLOT_QUEUED;
}

void coord_queue_writing(coord_queue_t *q, uint32_t s)
{
    q->slots[s].state = COORD_SLOT_WRITING;
}

/* 1 when a goes before b. */
static int qent_before(const coord_qent *a, const coord_qent *b)
{
    if (a->front != b->front) return a->front > b->front;
    if (a->priority != b->priority) return a->priority > b->priority;
    if (a->arrival != b->arrival) return a->arrival < b->arrival;
    return a->image < b->image;
}

static void heap_up(coord_heap *h, uint32_t i)
{
    coord_qent x = h->e[i];
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (!qent_before(&x, &h->e[p])) break;
        h->e[i] = h->e[p];
        i = p;
    }
    h->e[i] = x;
}

static void heap_down(coord_heap *h, uint32_t i)
{
    coord_qent x = h->e[i];
    for (;;) {
        uint32_t l = 2 * i + 1, best = l;
        if (l >= h->n) break;
        if (l + 1 < h->n && qent_before(&h->e[l + 1], &h->e[l])) best = l + 1;
        if (!qent_before(&h->e[best], &x)) break;
        h->e[i] = h->e[best];
        i = best;
    }
    h->e[i] = x;
}

int coord_queue_push(coord_queue_t *q, uint32_t s, int front)
{
    coord_slot *sl = &q->slots[s];
    sl->state = COORD_SLOT_QUEUED;
    sl->front = (uint8_t)front;
    coord_heap *h = &q->heaps[sl->level];
    if (coord_grow(&h->e, &h->cap, h->n + 1, sizeof *h->e) < 0) return -1;
    h->e[h->n] = (coord_qent){.task = sl->task,
                              .slot = s,
                              .arrival = sl->arrival,
                              .image = sl->image,
                              .priority = sl->priority,
                              .front = sl->front};
    heap_up(h, h->n++);
    return 0;
}

/* 1 when entry x is the current queue entry of its slot at level. */
static int qent_live(const coord_queue_t *q, const coord_qent *x, int level)
{
    int64_t s = coord_queue_find(q, x->task);
    return s >= 0 && q->slots[s].state == COORD_SLOT_QUEUED && q->slots[s].level == level;
}

int64_t coord_queue_pop(coord_queue_t *q, int level)
{
    coord_heap *h = &q->heaps[level];
    while (h->n > 0) {
        coord_qent top = h->e[0];
        h->e[0] = h->e[--h->n];
        if (h->n) heap_down(h, 0);
        /* entries of cancelled or re-tasked slots are stale: the slot moved on */
        if (qent_live(q, &top, level)) return top.slot;
    }
    return -1;
}

/* The slots' own invariants: each in-flight slot names itself in its task id, the free list
 * holds exactly the free slots, and the in-flight count matches. */
static int check_slots(const coord_queue_t *q, strata_err *e)
{
    uint32_t busy = 0, nfree = 0;
    for (uint32_t s = 0; s < q->nslots; s++) {
        const coord_slot *sl = &q->slots[s];
        if (sl->state == COORD_SLOT_FREE) continue;
        busy++;
        if ((sl->task & SLOT_MASK) != s || sl->level >= PIPELINE_MAX_LEVELS || !sl->job)
            return err_set(e, ERR_RUNTIME, "queue: slot %u holds task %llu (level %u)", s,
                           (unsigned long long)sl->task, sl->level);
    }
    if (busy != q->active)
        return err_set(e, ERR_RUNTIME, "queue: %u images in flight counted, %u slots in use",
                       q->active, busy);
    for (uint32_t s = q->free_head; s != NO_SLOT; s = q->slots[s].next_free)
        if (s >= q->nslots || q->slots[s].state != COORD_SLOT_FREE || ++nfree > q->nslots)
            return err_set(e, ERR_RUNTIME, "queue: the free list holds slot %u, not a free one", s);
    if (nfree + busy != q->nslots)
        return err_set(e, ERR_RUNTIME, "queue: %u free + %u in use slots, %u allocated", nfree,
                       busy, q->nslots);
    return 0;
}

/* Level l's heap is a heap, and marks in q->seen the slots it holds a live entry for. */
static int check_heap(coord_queue_t *q, int l, strata_err *e)
{
    const coord_heap *h = &q->heaps[l];
    for (uint32_t i = 0; i < h->n; i++) {
        if (i > 0 && qent_before(&h->e[i], &h->e[(i - 1) / 2]))
            return err_set(e, ERR_RUNTIME, "queue: level %d: entry %u goes before its parent", l,
                           i);
        if (!qent_live(q, &h->e[i], l)) continue;
        if (q->seen[h->e[i].slot]++)
            return err_set(e, ERR_RUNTIME, "queue: level %d: task %llu queued twice", l,
                           (unsigned long long)h->e[i].task);
    }
    return 0;
}

int coord_queue_check(coord_queue_t *q, strata_err *e)
{
    if (check_slots(q, e) < 0) return -1;
    if (coord_grow(&q->seen, &q->capseen, q->nslots, 1) < 0)
        return err_set(e, ERR_NOMEM, "queue: no memory to check the queue");
    if (q->nslots) memset(q->seen, 0, q->nslots); /* seen is NULL before the first slot */
    for (int l = 0; l < PIPELINE_MAX_LEVELS; l++)
        if (check_heap(q, l, e) < 0) return -1;
    for (uint32_t s = 0; s < q->nslots; s++)
        if (q->slots[s].state == COORD_SLOT_QUEUED && !q->seen[s])
            return err_set(e, ERR_RUNTIME, "queue: task %llu is queued but in no queue",
                           (unsigned long long)q->slots[s].task);
    return 0;
}
