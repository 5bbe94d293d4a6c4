/* The arena's planner: an offset for every allocation of a recorded pass, so that allocations
 * alive at the same time never overlap and the block is about as small as the most bytes ever
 * alive at once (greedy by size: the large buffers, which fragment worst, placed first). */
#include "kernels/arena.h"

#include <stdlib.h>

typedef struct plan_item {
    size_t bytes;
    int seq;
} plan_item;

/* Largest first; ties in allocation order, so that the plan depends on the pass alone. */
static int plan_item_cmp(const void *pa, const void *pb)
{
    const plan_item *a = pa, *b = pb;
    if (a->bytes != b->bytes) return a->bytes > b->bytes ? -1 : 1;
    return (a->seq > b->seq) - (a->seq < b->seq);
}

/* Whether r and s are alive at the same time. */
static int plan_overlap(const arena_rec *r, const arena_rec *s)
{
    return r->born < s->died && s->born < r->died;
}

/* The lowest offset where r overlaps none of the np placed allocations (sorted by offset) that
 * are alive while it is; *at: where r goes in that order. */
static size_t plan_lowest_gap(const arena_rec *rec, const int *placed, int np, const arena_rec *r,
                              int *at)
{
    size_t end = 0;
    int i = 0, found = 0;
    for (; i < np && !found; i++) {
        const arena_rec *s = &rec[placed[i]];
        if (!plan_overlap(r, s)) continue;
        if (s->offset >= end + r->bytes) {
            found = 1;
        } else if (s->offset + s->bytes > end) {
            end = s->offset + s->bytes;
        }
    }
    for (i = 0; i < np && rec[placed[i]].offset <= end; i++)
        ;
    *at = i;
    return end;
}

/* Fills rec[i].offset for every allocation, largest first at the lowest offset free throughout
 * its lifetime. 0, or -1 when there is no memory for the working lists. */
int arena_plan_offsets(arena_rec *rec, int n, size_t *peak)
{
    plan_item *items = malloc((size_t)(n ? n : 1) * sizeof *items);
    int *placed = malloc((size_t)(n ? n : 1) * sizeof *placed);
    if (!items || !placed) {
        free(items), free(placed);
        return -1;
    }
    for (int i = 0; i < n; i++)
        items[i] = (plan_item){rec[i].bytes, i};
    qsort(items, (size_t)n, sizeof *items, plan_item_cmp);
    *peak = 0;
    for (int k = 0; k < n; k++) {
        arena_rec *r = &rec[items[k].seq];
        int at;
        r->offset = plan_lowest_gap(rec, placed, k, r, &at);
        for (int j = k; j > at; j--)
            placed[j] = placed[j - 1];
        placed[at] = items[k].seq;
        if (r->offset + r->bytes > *peak) *peak = r->offset + r->bytes;
    }
    free(items), free(placed);
    return 0;
}
