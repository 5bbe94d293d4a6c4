/* Internal to kernels/: what the model loader and the tests use of an open safetensors file
 * beyond the public st_* functions (safetensors.c). Not included outside kernels/. */
#ifndef STRATA_KERNELS_SAFETENSORS_H
#define STRATA_KERNELS_SAFETENSORS_H

#include "kernels/kernels.h"

/* The path the file was opened with. */
const char *st_path(const st_file_t *f);
/* Drop the mapped pages wholly inside t's data from memory (a loader that has converted t
 * keeps peak memory at one copy of the weights). t stays readable. */
void st_release(const st_file_t *f, const st_tensor *t);

#endif
