/* The arena: one block for the scratch memory of one UNet forward, allocations placed first-fit
 * and freed after their last reader, which grows to the peak of a pass so that the next passes
 * of the same shape allocate nothing. */
#include "kernels/arena.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

enum { ARENA_ALIGN = 64 };

/* An empty arena: no block until the first arena_reset() after a pass that needed one. */
void arena_init(arena *a)
{
    memset(a, 0, sizeof *a);
}

/* Drops live allocation i (its heap stand-in freed), keeping the rest in offset order. */
static void arena_drop(arena *a, int i)
{
    if (a->live[i].on_heap) free(a->live[i].ptr);
    memmove(&a->live[i], &a->live[i + 1], (size_t)(a->nlive - i - 1) * sizeof *a->live);
    a->nlive--;
}

/* Frees the block and any heap stand-ins; a is empty again. */
void arena_fini(arena *a)
{
    arena_release(a, 0);
    free(a->live);
    free(a->base);
    memset(a, 0, sizeof *a);
}

/* The lowest offset with bytes free between the live allocations (they are sorted by offset),
 * and the index where an allocation there goes in the list. */
static size_t arena_first_fit(const arena *a, size_t bytes, int *at)
{
    size_t end = 0;
    int i = 0;
    for (; i < a->nlive; i++) {
        if (a->live[i].offset - end >= bytes) break;
        end = a->live[i].offset + a->live[i].bytes;
    }
    *at = i;
    return end;
}

/* count floats, 64-byte aligned, at the first gap that holds them: in the block when it lies
 * inside, else from the heap, the need recorded in peak either way. NULL: heap exhausted. */
float *arena_floats(arena *a, size_t count)
{
    size_t bytes = (count * sizeof(float) + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (!bytes) bytes = ARENA_ALIGN; /* every allocation its own address, for arena_free */
    if (a->nlive == a->live_cap) {
        int cap = a->live_cap ? 2 * a->live_cap : 64;
        struct arena_block *grown = realloc(a->live, (size_t)cap * sizeof *grown);
        if (!grown) return NULL;
        a->live = grown;
        a->live_cap = cap;
    }
    int at;
    size_t offset = arena_first_fit(a, bytes, &at);
    if (offset + bytes > a->peak) a->peak = offset + bytes;
    int on_heap = offset + bytes > a->cap;
    /* past the block: serve this pass from the heap; arena_reset() grows the block */
    void *p = on_heap ? aligned_alloc(ARENA_ALIGN, bytes) : a->base + offset;
    if (!p) return NULL;
    memmove(&a->live[at + 1], &a->live[at], (size_t)(a->nlive - at) * sizeof *a->live);
    a->live[at] = (struct arena_block){offset, bytes, a->seq++, p, on_heap};
    a->nlive++;
    return p;
}

/* Frees p, an allocation of arena_floats still live. */
void arena_free(arena *a, const float *p)
{
    if (!p) return;
    for (int i = 0; i < a->nlive; i++)
        if (a->live[i].ptr == p) {
            arena_drop(a, i);
            return;
        }
    assert(!"arena_free: not a live allocation");
}

/* The allocations from now on: arena_release(a, mark) frees those still live. */
size_t arena_mark(const arena *a)
{
    return a->seq;
}

/* Frees every live allocation made since mark (the scratch of one operation). */
void arena_release(arena *a, size_t mark)
{
    for (int i = a->nlive - 1; i >= 0; i--)
        if (a->live[i].seq >= mark) arena_drop(a, i);
}

/* Empties the arena and grows its block to the peak of the passes so far, its pages touched
 * now, so that the next pass of the same shapes neither allocates nor faults a page in. 0, or -1
 * when the block cannot be allocated (the next pass then takes its memory from the heap). */
int arena_reset(arena *a)
{
    arena_release(a, 0);
    a->seq = 0;
    if (a->peak <= a->cap) return 0;
    free(a->base);
    a->cap = 0;
    a->base = aligned_alloc(ARENA_ALIGN, a->peak);
    if (!a->base) return -1;
    memset(a->base, 0, a->peak);
    a->cap = a->peak;
    return 0;
}
