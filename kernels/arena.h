/* Internal to kernels/: the arena, the scratch memory of one forward pass.
 * Not included outside kernels/. */
#ifndef STRATA_KERNELS_ARENA_H
#define STRATA_KERNELS_ARENA_H

#include <stddef.h>

/* One block of memory for a forward pass, its allocations placed first-fit and freed in any
 * order, so that a buffer's memory is reused as soon as its last reader is done with it.
 * Placement depends on the sequence of allocations and frees alone, so every pass of the same
 * shapes puts every buffer at the same offset. An allocation past the block falls back to the
 * heap and records the need; arena_reset() then grows the block to the highest offset used,
 * so from the second forward of the same shape on there is no allocation (nor page fault). */
typedef struct arena {
    char *base;
    size_t cap;  /* bytes in the block */
    size_t peak; /* highest end of an allocation so far */
    struct arena_block {
        size_t offset, bytes;
        size_t seq; /* allocation order, for arena_release */
        void *ptr;
        int on_heap; /* a stand-in from the heap: the block was too small */
    } * live;        /* sorted by offset */
    int nlive;
    int live_cap;
    size_t seq; /* allocations so far in this pass */
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
/* Forget every allocation and grow to the peak seen so far. Returns 0 or -1 (no memory). */
int arena_reset(arena *a);

#endif
