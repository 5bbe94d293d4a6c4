/* The arena: a bump allocator for the scratch memory of one UNet forward, which grows to the
 * peak of a pass so that the next passes of the same shape allocate nothing. */
#include "kernels/arena.h"

#include <stdlib.h>
#include <string.h>

enum { ARENA_ALIGN = 64 };

/* An empty arena: no block until the first arena_reset() after a pass that needed one. */
void arena_init(arena *a)
{
    memset(a, 0, sizeof *a);
}

/* Free the heap blocks standing in for offsets >= from (they are LIFO like the arena). */
static void arena_drop_overflow(arena *a, size_t from)
{
    while (a->noverflow && a->overflow[a->noverflow - 1].offset >= from)
        free(a->overflow[--a->noverflow].ptr);
}

/* Frees the block and any heap stand-ins; a is empty again. */
void arena_fini(arena *a)
{
    arena_drop_overflow(a, 0);
    free(a->overflow);
    free(a->base);
    memset(a, 0, sizeof *a);
}

/* count floats at the top, 64-byte aligned: from the block while it has room, else from the
 * heap, the need recorded in peak either way. NULL only when the heap is exhausted. */
float *arena_floats(arena *a, size_t count)
{
    size_t bytes = (count * sizeof(float) + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    size_t end = a->used + bytes;
    if (end > a->peak) a->peak = end;
    if (end <= a->cap) {
        float *p = (float *)(a->base + a->used);
        a->used = end;
        return p;
    }
    /* Past the block: serve this pass from the heap; arena_reset() grows the block. */
    size_t offset = a->used;
    a->used = end;
    if (a->noverflow == a->overflow_cap) {
        int cap = a->overflow_cap ? 2 * a->overflow_cap : 16;
        struct arena_block *grown = realloc(a->overflow, (size_t)cap * sizeof *grown);
        if (!grown) return NULL;
        a->overflow = grown;
        a->overflow_cap = cap;
    }
    void *p = aligned_alloc(ARENA_ALIGN, bytes ? bytes : ARENA_ALIGN);
    if (!p) return NULL;
    a->overflow[a->noverflow].ptr = p;
    a->overflow[a->noverflow++].offset = offset;
    return p;
}

/* The top now: arena_release(a, mark) frees everything allocated after this call. */
size_t arena_mark(const arena *a)
{
    return a->used;
}

/* Frees back to mark (last in, first out), heap stand-ins included. */
void arena_release(arena *a, size_t mark)
{
    arena_drop_overflow(a, mark);
    a->used = mark;
}

/* Empties the arena and grows its block to the peak of the passes so far, so that the next
 * pass of the same shapes allocates nothing. 0, or -1 when the block cannot be allocated. */
int arena_reset(arena *a)
{
    arena_drop_overflow(a, 0);
    a->used = 0;
    if (a->peak <= a->cap) return 0;
    free(a->base);
    a->cap = 0;
    a->base = aligned_alloc(ARENA_ALIGN, a->peak);
    if (!a->base) return -1;
    a->cap = a->peak;
    return 0;
}
