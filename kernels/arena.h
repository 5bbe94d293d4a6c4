/* Internal to kernels/: the arena, a bump allocator for the scratch memory of one forward pass.
 * Not included outside kernels/. */
#ifndef STRATA_KERNELS_ARENA_H
#define STRATA_KERNELS_ARENA_H

#include <stddef.h>

/* A bump allocator for one forward pass. Allocation past the capacity falls back to the heap
 * and records the need; arena_reset() then grows the block to the peak, so from the second
 * forward of the same shape on there is no allocation at all. */
typedef struct arena {
    char *base;
    size_t cap;
    size_t used;
    size_t peak;
    struct arena_block {
        void *ptr;
        size_t offset; /* arena offset the block stands in for */
    } * overflow;
    int noverflow;
    int overflow_cap;
    int failed;
} arena;

/* An empty arena: no memory until the first allocation. */
void arena_init(arena *a);
/* Free everything; a is empty again. */
void arena_fini(arena *a);
/* 64-byte aligned, uninitialised; NULL only when the heap is exhausted. */
float *arena_floats(arena *a, size_t count);
/* The top of the arena now, for arena_release. */
size_t arena_mark(const arena *a);
/* Free every allocation made since mark (allocations are freed last in, first out). */
void arena_release(arena *a, size_t mark);
/* Forget every allocation and grow to the peak seen so far. Returns 0 or -1 (no memory). */
int arena_reset(arena *a);

#endif
