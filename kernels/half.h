/* Internal to kernels/: IEEE half and bfloat16 to float32 and back (half.c), for the
 * safetensors reader. Not included outside kernels/. */
#ifndef STRATA_KERNELS_HALF_H
#define STRATA_KERNELS_HALF_H

#include <stdint.h>

/* Exact: every half value is a float. */
float f16_to_f32(uint16_t h);
/* Exact: bfloat16 is the top half of a float. */
float bf16_to_f32(uint16_t h);
/* Round to nearest, ties to even; overflow gives inf, NaN stays NaN. */
uint16_t f32_to_f16(float f);

#endif
