/* Internal to kernels/: the Philox4x32-10 generator and the single noise value behind
 * noise_fill (philox.c). Not included outside kernels/. */
#ifndef STRATA_KERNELS_PHILOX_H
#define STRATA_KERNELS_PHILOX_H

#include "kernels/kernels.h"

#include <stdint.h>

/* Philox4x32-10: out = PRF(key, counter). Pure function, no state. */
void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);
/* Standard normal value at channel c, global pixel (y, x). */
float noise_at(const noise_key *k, int c, int y, int x);

#endif
