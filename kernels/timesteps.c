/* The inference timesteps of diffusers' set_timesteps (leading, trailing and linspace
 * spacing), reproducing numpy's arithmetic so that every step count gives diffusers' list. */
#include "kernels/kernels.h"
#include "kernels/sched.h"

#include <math.h>
#include <stdint.h>

/* np.arange(start, 0, -ratio).round() - 1 into ts, numpy's way: length ceil(start / ratio),
 * element i = start + i * ((start - ratio) - start). Returns the length (at most cap). */
static int sched_arange_trailing(double start, double ratio, int64_t *ts, int cap)
{
    double len = ceil((0.0 - start) / -ratio);
    int n = len > cap ? cap : (int)len;
    double delta = (start + -ratio) - start;
    for (int i = 0; i < n; i++) {
        double v = i == 0 ? start : i == 1 ? start + -ratio : start + i * delta;
        ts[i] = (int64_t)rint(v) - 1; /* np.round rounds half to even, as rint does */
    }
    return n;
}

/* np.linspace(0, stop, num)[i], numpy's way: i * (stop / (num - 1)), the last one exact. */
static double sched_np_linspace(double stop, int num, int i)
{
    if (num == 1) return 0.0;
    if (i == num - 1) return stop;
    return i * (stop / (num - 1));
}

/* DDPMScheduler / DDIMScheduler.set_timesteps(n). Returns the count. */
int sched_timesteps_ddpm(const sched_config *c, int n, int64_t *ts, int cap)
{
    int T = c->num_train_timesteps;
    switch (c->timestep_spacing) {
    case SCHED_SPACING_LINSPACE:
        for (int k = 0; k < n; k++)
            ts[k] = (int64_t)rint(sched_np_linspace(T - 1, n, n - 1 - k));
        return n;
    case SCHED_SPACING_TRAILING:
        return sched_arange_trailing(T, (double)T / n, ts, cap);
    case SCHED_SPACING_LEADING:
    default:
        for (int k = 0; k < n; k++)
            ts[k] = (int64_t)(n - 1 - k) * (T / n) + c->steps_offset;
        return n;
    }
}

/* DPMSolverMultistepScheduler.set_timesteps(n), with lambda_min_clipped = -inf. diffusers
 * quirk: linspace and leading space n + 1 points and drop the last, so t = 0 never comes. */
int sched_timesteps_dpm(const sched_config *c, int n, int64_t *ts, int cap)
{
    int T = c->num_train_timesteps, last = T;
    switch (c->timestep_spacing) {
    case SCHED_SPACING_LINSPACE:
        for (int k = 0; k < n; k++)
            ts[k] = (int64_t)rint(sched_np_linspace(last - 1, n + 1, n - k));
        return n;
    case SCHED_SPACING_TRAILING:
        return sched_arange_trailing(last, (double)T / n, ts, cap);
    case SCHED_SPACING_LEADING:
    default:
        for (int k = 0; k < n; k++)
            ts[k] = (int64_t)(n - k) * (last / (n + 1)) + c->steps_offset;
        return n;
    }
}
