/* diffusers' noise schedule: the betas (linear, scaled linear, squaredcos_cap_v2, rescaled to
 * zero terminal SNR), alphas_cumprod and DPM-Solver's sigmas, each in the precision diffusers
 * computes it in (float64 where it uses numpy or Python floats, float32 where it uses torch
 * tensors); and the forward process q(x_t | x_0) built on them. */
#include "kernels/kernels.h"
#include "kernels/sched.h"

#include <assert.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

/* Element i of torch.linspace(start, end, n, dtype=float32). A torch detail we match: it
 * fills the first half from start and the second from end, and its build fuses the
 * multiply-add, hence fmaf. */
static float sched_linspace_f32(float start, float end, int n, int i)
{
    if (n == 1) return start;
    float step = (end - start) / (float)(n - 1);
    if (i < n / 2) return fmaf(step, (float)i, start);
    return fmaf(-step, (float)(n - i - 1), end);
}

/* The squaredcos_cap_v2 alpha_bar of betas_for_alpha_bar, in float64 as Python computes it. */
static double sched_alpha_bar(double t)
{
    double c = cos((t + 0.008) / 1.008 * M_PI / 2);
    return c * c;
}

/* beta_i before any rescaling, as diffusers' float32 betas tensor holds it. */
static float sched_beta_plain(const sched_config *c, int i)
{
    int n = c->num_train_timesteps;
    switch (c->beta_schedule) {
    case SCHED_BETA_SCALED_LINEAR: {
        /* square roots in float64 (Python floats), the linspace and the square in float32 */
        float b = sched_linspace_f32((float)sqrt(c->beta_start), (float)sqrt(c->beta_end), n, i);
        return b * b;
    }
    case SCHED_BETA_COSINE: {
        double t1 = (double)i / n, t2 = (double)(i + 1) / n;
        return (float)fmin(1 - sched_alpha_bar(t2) / sched_alpha_bar(t1), 0.999);
    }
    case SCHED_BETA_LINEAR:
    default:
        return sched_linspace_f32((float)c->beta_start, (float)c->beta_end, n, i);
    }
}

/* Walks the betas in order, rescaled to zero terminal SNR when configured
 * (rescale_zero_terminal_snr, all in float32 like the torch code). */
typedef struct sched_betas {
    const sched_config *c;
    double acc;       /* cumprod of the plain alphas */
    float sqrt_first; /* sqrt(alphas_cumprod[0]) of the plain betas */
    float sqrt_last;  /* sqrt(alphas_cumprod[-1]) of the plain betas */
    float scale;
    float prev_bar;
} sched_betas;

/* Ready to walk c's betas from i = 0; the rescaling constants computed from the plain betas. */
static void sched_betas_init(sched_betas *b, const sched_config *c)
{
    memset(b, 0, sizeof *b);
    b->c = c;
    b->acc = 1.0;
    if (!c->rescale_betas_zero_snr) return;
    double acc = 1.0;
    for (int i = 0; i < c->num_train_timesteps; i++) {
        acc *= (double)(1.0f - sched_beta_plain(c, i));
        if (i == 0) b->sqrt_first = sqrtf((float)acc);
    }
    b->sqrt_last = sqrtf((float)acc);
    b->scale = b->sqrt_first / (b->sqrt_first - b->sqrt_last);
}

/* beta_i; calls must come with i = 0, 1, 2, ... */
static float sched_betas_next(sched_betas *b, int i)
{
    float beta = sched_beta_plain(b->c, i);
    if (!b->c->rescale_betas_zero_snr) return beta;
    /* diffusers quirk: torch.cumprod on CPU accumulates float32 in double */
    b->acc *= (double)(1.0f - beta);
    float s = sqrtf((float)b->acc) - b->sqrt_last;
    s *= b->scale;
    float bar = s * s;
    float alpha = i == 0 ? bar : bar / b->prev_bar;
    b->prev_bar = bar;
    return 1.0f - alpha;
}

/* alphas_cumprod[0..n) into out (may be NULL); returns alphas_cumprod[n - 1]. */
float sched_cumprod(const sched_config *c, int n, float *out)
{
    sched_betas b;
    double acc = 1.0; /* torch.cumprod accumulates in double, rounding each element to float */
    float last = 1.0f;
    sched_betas_init(&b, c);
    for (int i = 0; i < n; i++) {
        acc *= (double)(1.0f - sched_betas_next(&b, i));
        last = (float)acc;
        /* diffusers quirk: DPM-Solver replaces a zero terminal alphas_cumprod with 2^-24 */
        if (c->kind == SCHED_DPMPP_2M && c->rescale_betas_zero_snr &&
            i == c->num_train_timesteps - 1)
            last = 0x1p-24f;
        if (out) out[i] = last;
    }
    return last;
}

/* DPM-Solver's sigma = sqrt((1 - abar) / abar), in float32. */
float sched_sigma_of(float abar)
{
    return sqrtf((1.0f - abar) / abar);
}

/* DPM-Solver's _sigma_to_alpha_sigma_t. */
void sched_alpha_sigma(float sigma, float *alpha, float *sigma_t)
{
    *alpha = 1.0f / sqrtf(sigma * sigma + 1.0f);
    *sigma_t = sigma * *alpha;
}

/* out = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (through the sigma table for DPM-Solver, as
 * diffusers does), element-wise over numel floats. */
void sched_add_noise(const sched_config *c, int t, const float *x0, const float *noise, float *out,
                     size_t numel)
{
    assert(t >= 0 && t < c->num_train_timesteps);
    float abar = sched_cumprod(c, t + 1, NULL), a, b;
    if (c->kind == SCHED_DPMPP_2M) {
        /* DPM-Solver goes through its sigma table: alpha = 1 / sqrt(sigma^2 + 1) */
        sched_alpha_sigma(sched_sigma_of(abar), &a, &b);
    } else {
        a = sqrtf(abar);
        b = sqrtf(1.0f - abar);
    }
#pragma omp parallel for schedule(static) if (numel >= SCHED_PAR_MIN)
    for (size_t j = 0; j < numel; j++)
        out[j] = a * x0[j] + b * noise[j];
}
