/* Internal to kernels/: the schedule shared by the samplers (sampler*.c) and the forward
 * process: diffusers' noise schedule (noise_schedule.c), its inference timesteps
 * (timesteps.c) and the check of a scheduler config (sched_config.c). Not included outside
 * kernels/. */
#ifndef STRATA_KERNELS_SCHED_H
#define STRATA_KERNELS_SCHED_H

#include "kernels/kernels.h"

#include <stdint.h>

/* Element-wise loops shorter than this stay on one thread. */
#define SCHED_PAR_MIN 65536

/* Refuse settings the samplers do not implement; where names the config in the message. */
int sched_config_check(const sched_config *c, const char *where, strata_err *e);

/* alphas_cumprod[0..n) into out (may be NULL); returns alphas_cumprod[n - 1]. */
float sched_cumprod(const sched_config *c, int n, float *out);
/* DPM-Solver's sigma = sqrt((1 - abar) / abar), in float32. */
float sched_sigma_of(float abar);
/* DPM-Solver's _sigma_to_alpha_sigma_t: alpha = 1 / sqrt(sigma^2 + 1), sigma_t = sigma alpha. */
void sched_alpha_sigma(float sigma, float *alpha, float *sigma_t);

/* DDPMScheduler / DDIMScheduler.set_timesteps(n) into ts (room for cap). Returns the count,
 * which numpy's arange can make n + 1 (trailing spacing). */
int sched_timesteps_ddpm(const sched_config *c, int n, int64_t *ts, int cap);
/* DPMSolverMultistepScheduler.set_timesteps(n) into ts (room for cap). Returns the count. */
int sched_timesteps_dpm(const sched_config *c, int n, int64_t *ts, int cap);

#endif
