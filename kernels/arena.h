/* Internal to kernels/: the arena, the scratch memory of one forward pass.
 * Not included outside kernels/. */
#ifndef STRATA_KERNELS_ARENA_H
#define STRATA_KERNELS_ARENA_H

#include <stddef.h>

/* One allocation of a pass: its size, its place in the block, and the times (counted in
 * allocations and frees since the pass began) it was made and freed. */
typedef struct arena_rec {
    size_t bytes, offset;
    int born, died;
} arena_rec;

/* One block of memory for the passes of one shape, its buffers freed in any order. A pass
 * records what it allocates and when it frees it; arena_reset() then plans an offset for each
 * allocation from their sizes and lifetimes, and grows the block to hold the plan. A later pass
 * that allocates and frees in the same order (the same shapes) gets every buffer at its planned
 * offset: no allocation, no page fault, and the block no larger than the plan. A pass that
 * leaves the plan (another shape) takes its memory from the heap from there on, and is
 * planned in turn. */
typedef struct arena {
    char *base;
    size_t cap;     /* bytes in the block */
    arena_rec *rec; /* this pass's allocations, in order */
    int nrec, rec_cap;
    arena_rec *plan; /* the pass the offsets were planned for */
    int nplan, plan_cap;
    struct arena_live {
        void *ptr;
        int seq; /* index in rec */
        int on_heap;
    } * live; /* not yet freed, in allocation order */
    int nlive, live_cap;
    int clock;    /* allocations and frees so far in this pass */
    int off_plan; /* this pass has left the plan */
} arena;

/* An empty arena: no memory until the first allocation. */
void arena_init(arena *a);
/* Free everything; a is empty again. */
void arena_fini(arena *a);
/* 64-byte aligned, uninitialised; NULL only when the heap is exhausted. */
float *arena_floats(arena *a, size_t count);
/* Free one allocation of arena_floats; NULL is a no-op. */
void arena_free(arena *a, const float *p);
/* A mark for arena_release: the allocations from now on. */
size_t arena_mark(const arena *a);
/* Free every allocation made since mark that is still live. */
void arena_release(arena *a, size_t mark);
/* End a pass: free what is live, plan the pass if it left the plan, and grow the block to the
 * plan (its pages touched now, not in the next pass). 0, or -1 when there is no memory for the
 * plan or the block (the next pass then takes its memory from the heap). */
int arena_reset(arena *a);

/* Offsets for the n allocations of one pass (arena_plan.c); *peak: the bytes they span.
 * 0, or -1 when there is no memory to plan. */
int arena_plan_offsets(arena_rec *rec, int n, size_t *peak);

#endif
