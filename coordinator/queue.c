/* Slots (images in flight) and the per-level queues: binary heaps of slot indices ordered by
 * (re-queued first, higher job priority, earlier job, lower image index). */
#include "coordinator/coord_internal.h"

#include <stdlib.h>
#include <string.h>

#define SLOT_MASK ((uint64_t)COORD_MAX_SLOTS - 1)
#define NO_SLOT UINT32_MAX

void coord_slots_init(coord_t *c)
{
    c->free_head = NO_SLOT;
}

int64_t coord_slot_alloc(coord_t *c)
{
    uint32_t s;
    if (c->free_head != NO_SLOT) {
        s = c->free_head;
        c->free_head = c->slots[s].next_free;
    } else {
        if (c->nslots >= COORD_MAX_SLOTS) return -1;
        if (coord_grow(&c->slots, &c->capslots, c->nslots + 1, sizeof *c->slots) < 0) return -1;
        s = c->nslots++;
    }
    memset(&c->slots[s], 0, sizeof c->slots[s]);
    c->active++;
    return s;
}

void coord_slot_free(coord_t *c, uint32_t s)
{
    coord_slot *sl = &c->slots[s];
    if (sl->state == COORD_SLOT_FREE) return;
    free(sl->cond);
    memset(sl, 0, sizeof *sl);
    sl->next_free = c->free_head;
    c->free_head = s;
    c->active--;
}

void coord_slot_new_task(coord_t *c, uint32_t s, int level)
{
    coord_slot *sl = &c->slots[s];
    sl->task = (++c->task_seq << COORD_SLOT_BITS) | s;
    sl->level = (uint8_t)level;
    sl->attempt = 1;
    sl->failures = sl->losses = sl->nexcluded = 0;
    sl->front = 0;
    sl->state = COORD_SLOT_QUEUED;
}

coord_slot *coord_slot_of_task(coord_t *c, uint64_t task)
{
    uint64_t s = task & SLOT_MASK;
    if (task == 0 || s >= c->nslots || c->slots[s].task != task) return NULL;
    return &c->slots[s];
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

int coord_queue_push_raw(coord_t *c, int level, uint32_t s)
{
    coord_heap *h = &c->queues[level];
    const coord_slot *sl = &c->slots[s];
    if (coord_grow(&h->e, &h->cap, h->n + 1, sizeof *h->e) < 0) return -1;
    h->e[h->n] = (coord_qent){.task = sl->task,
                              .slot = s,
                              .arrival = sl->job->arrival,
                              .image = sl->image,
                              .priority = sl->job->spec.priority,
                              .front = sl->front};
    heap_up(h, h->n++);
    return 0;
}

int coord_enqueue(coord_t *c, uint32_t s, int front)
{
    coord_slot *sl = &c->slots[s];
    sl->state = COORD_SLOT_QUEUED;
    sl->front = (uint8_t)front;
    if (coord_queue_push_raw(c, sl->level, s) < 0) return -1;
    sl->job->lv[sl->level].queued++;
    sl->job->version++;
    return 0;
}

int64_t coord_queue_pop(coord_t *c, int level)
{
    coord_heap *h = &c->queues[level];
    while (h->n > 0) {
        coord_qent top = h->e[0];
        h->e[0] = h->e[--h->n];
        if (h->n) heap_down(h, 0);
        /* entries of cancelled or re-tasked slots are stale: the slot moved on */
        coord_slot *sl = coord_slot_of_task(c, top.task);
        if (sl && sl->state == COORD_SLOT_QUEUED && sl->level == level) return top.slot;
    }
    return -1;
}

void coord_queues_free(coord_t *c)
{
    for (int i = 0; i < PIPELINE_MAX_LEVELS; i++)
        free(c->queues[i].e);
    for (uint32_t s = 0; s < c->nslots; s++)
        free(c->slots[s].cond);
    free(c->slots);
}
