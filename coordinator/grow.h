/* coordinator internal: growing the arrays every part of the coordinator keeps. */
#ifndef STRATA_COORD_GROW_H
#define STRATA_COORD_GROW_H

#include <stddef.h>
#include <stdint.h>

/* Grow the array *arr (elements of size bytes, *cap of them) so that it holds at least need,
 * doubling from 8. 0, or -1 when out of memory (*arr and *cap are then unchanged). */
int coord_grow(void *arr, uint32_t *cap, uint32_t need, size_t size);

#endif
