/* The arena: one block for the scratch memory of the UNet forwards of one shape, each buffer at
 * the offset planned for it from a recorded pass (arena_plan.c), so that the block holds only
 * the buffers alive at once and the passes after the first allocate nothing. */
#include "kernels/arena.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

enum { ARENA_ALIGN = 64 };

/* An empty arena: no block until the arena_reset() that ends a pass. */
void arena_init(arena *a)
{
    memset(a, 0, sizeof *a);
}

/* Frees the block, the stand-ins from the heap and the records; a is empty again. */
void arena_fini(arena *a)
{
    arena_release(a, 0);
    free(a->rec);
    free(a->plan);
    free(a->live);
    free(a->base);
    memset(a, 0, sizeof *a);
}

/* Room for one more element in *list (count used, *cap allocated). -1: no memory. */
static int arena_room(void **list, int count, int *cap, size_t size)
{
    if (count < *cap) return 0;
    int grown_cap = *cap ? 2 * *cap : 64;
    void *grown = realloc(*list, (size_t)grown_cap * size);
    if (!grown) return -1;
    *list = grown;
    *cap = grown_cap;
    return 0;
}

/* Whether allocation seq of bytes, made now, is the one the plan expects at this time, and its
 * planned place lies in the block. */
static int arena_on_plan(const arena *a, int seq, size_t bytes)
{
    if (a->off_plan || seq >= a->nplan) return 0;
    const arena_rec *p = &a->plan[seq];
    return p->bytes == bytes && p->born == a->clock && p->offset + bytes <= a->cap;
}

/* count floats, 64-byte aligned: at the planned offset while the pass follows the plan, else
 * from the heap. NULL only when the heap is exhausted. */
float *arena_floats(arena *a, size_t count)
{
    size_t bytes = (count * sizeof(float) + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (!bytes) bytes = ARENA_ALIGN; /* every allocation its own address, for arena_free */
    if (arena_room((void **)&a->rec, a->nrec, &a->rec_cap, sizeof *a->rec) ||
        arena_room((void **)&a->live, a->nlive, &a->live_cap, sizeof *a->live))
        return NULL;
    int seq = a->nrec, on = arena_on_plan(a, seq, bytes);
    if (!on) a->off_plan = 1;
    void *p = on ? a->base + a->plan[seq].offset : aligned_alloc(ARENA_ALIGN, bytes);
    if (!p) return NULL;
    a->rec[a->nrec++] = (arena_rec){bytes, 0, a->clock++, -1};
    a->live[a->nlive++] = (struct arena_live){p, seq, !on};
    return p;
}

/* Frees live allocation i, recording its death (off the plan unless the plan has it now). */
static void arena_drop(arena *a, int i)
{
    int seq = a->live[i].seq;
    a->rec[seq].died = a->clock;
    if (seq >= a->nplan || a->plan[seq].died != a->clock) a->off_plan = 1;
    a->clock++;
    if (a->live[i].on_heap) free(a->live[i].ptr);
    memmove(&a->live[i], &a->live[i + 1], (size_t)(a->nlive - i - 1) * sizeof *a->live);
    a->nlive--;
}

/* Frees p, an allocation of arena_floats still live. */
void arena_free(arena *a, const float *p)
{
    if (!p) return;
    for (int i = a->nlive - 1; i >= 0; i--)
        if (a->live[i].ptr == p) {
            arena_drop(a, i);
            return;
        }
    assert(!"arena_free: not a live allocation");
}

/* The allocations from now on: arena_release(a, mark) frees those still live. */
size_t arena_mark(const arena *a)
{
    return (size_t)a->nrec;
}

/* Frees every live allocation made since mark (the scratch of one operation), newest first. */
void arena_release(arena *a, size_t mark)
{
    for (int i = a->nlive - 1; i >= 0; i--)
        if ((size_t)a->live[i].seq >= mark) arena_drop(a, i);
}

/* The pass just recorded becomes the plan, the block grown to hold it and its pages touched. */
static int arena_replan(arena *a)
{
    size_t peak;
    if (arena_plan_offsets(a->rec, a->nrec, &peak)) return -1;
    arena_rec *rec = a->rec;
    int cap = a->rec_cap;
    a->rec = a->plan, a->rec_cap = a->plan_cap;
    a->plan = rec, a->plan_cap = cap, a->nplan = a->nrec;
    if (peak <= a->cap) return 0;
    free(a->base);
    a->cap = 0;
    a->base = aligned_alloc(ARENA_ALIGN, peak);
    if (!a->base) return -1;
    memset(a->base, 0, peak); /* the page faults now rather than in the next pass */
    a->cap = peak;
    return 0;
}

/* Ends a pass: everything freed, the pass planned when it left the plan. 0, or -1 when the
 * plan or the block cannot be allocated (the next pass then runs from the heap). */
int arena_reset(arena *a)
{
    arena_release(a, 0);
    int rc = a->off_plan ? arena_replan(a) : 0;
    a->nrec = 0;
    a->clock = 0;
    a->off_plan = 0;
    return rc;
}
