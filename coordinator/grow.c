/* Array growth shared by the coordinator's tables (queue, registry, jobs, watchers). */
#include "coordinator/grow.h"

#include <stdlib.h>

int coord_grow(void *arr, uint32_t *cap, uint32_t need, size_t size)
{
    void **p = arr;
    if (need <= *cap) return 0;
    uint32_t n = *cap ? *cap : 8;
    while (n < need)
        n = n > UINT32_MAX / 2 ? UINT32_MAX : n * 2;
    void *q = realloc(*p, (size_t)n * size);
    if (!q) return -1;
    *p = q;
    *cap = n;
    return 0;
}
