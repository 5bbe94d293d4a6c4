/* Counter-based Gaussian noise: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy
 * as 1, 2, 3", SC'11; the Random123 reference) followed by one Box-Muller transform per counter.
 * No state: every value is a function of its coordinates (docs/design.md section 2). */
#include "kernels/philox.h"

#include "kernels/kernels.h"

#include <assert.h>
#include <math.h>

enum {
    PHILOX_M0 = 0xD2511F53u,
    PHILOX_M1 = 0xCD9E8D57u,
    PHILOX_W0 = 0x9E3779B9u, /* Weyl key increments */
    PHILOX_W1 = 0xBB67AE85u,
};

/* One Philox round: two 32x32->64 multiplies, then a mix with the other words and the key. */
static inline void philox_round(uint32_t c[4], const uint32_t k[2])
{
    uint64_t p0 = (uint64_t)PHILOX_M0 * c[0];
    uint64_t p1 = (uint64_t)PHILOX_M1 * c[2];
    uint32_t n0 = (uint32_t)(p1 >> 32) ^ c[1] ^ k[0];
    uint32_t n2 = (uint32_t)(p0 >> 32) ^ c[3] ^ k[1];
    c[0] = n0;
    c[1] = (uint32_t)p1;
    c[2] = n2;
    c[3] = (uint32_t)p0;
}

void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]};
    uint32_t k[2] = {key[0], key[1]};
    for (int r = 0; r < 10; r++) {
        if (r > 0) {
            k[0] += PHILOX_W0;
            k[1] += PHILOX_W1;
        }
        philox_round(c, k);
    }
    for (int i = 0; i < 4; i++)
        out[i] = c[i];
}

/* The (key, counter) of one noise value. The layout is injective over the whole domain
 * (seed < 2^64, image < 2^32, stream < 2^32, level, channel, y, x < 2^16), so no two values of
 * any job share a Philox input:
 *   key = (seed low 32 bits, seed high 32 bits)
 *   ctr = (x | y << 16, stream, channel | level << 16, image)
 * Changing this changes every image the farm has ever produced: treat it as a file format. */
static void noise_input(const noise_key *k, int c, int y, int x, uint32_t ctr[4], uint32_t key[2])
{
    assert(c >= 0 && c < 65536 && y >= 0 && y < 65536 && x >= 0 && x < 65536);
    assert(k->level < 65536);
    key[0] = (uint32_t)k->seed;
    key[1] = (uint32_t)(k->seed >> 32);
    ctr[0] = (uint32_t)x | (uint32_t)y << 16;
    ctr[1] = k->stream;
    ctr[2] = (uint32_t)c | k->level << 16;
    ctr[3] = k->image;
}

/* Box-Muller on the first two words, in double, rounded once to float: u1 in (0, 1] so the log
 * is finite, u2 in [0, 1). Same libm, same bits, on any machine and thread count. */
float noise_at(const noise_key *k, int c, int y, int x)
{
    uint32_t ctr[4], key[2], out[4];
    noise_input(k, c, y, x, ctr, key);
    philox4x32_10(ctr, key, out);
    double u1 = ((double)out[0] + 1.0) * 0x1p-32;
    double u2 = (double)out[1] * 0x1p-32;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* Each element is noise_at of its global coordinates, so any tiling gives the same field. */
void noise_fill(const noise_key *k, float *dst, int channels, int h, int w, int y0, int x0)
{
    long total = (long)channels * h * w;
#pragma omp parallel for collapse(2) schedule(static) if (total > 16384)
    for (int c = 0; c < channels; c++)
        for (int y = 0; y < h; y++) {
            float *row = dst + ((size_t)c * (size_t)h + (size_t)y) * (size_t)w;
            for (int x = 0; x < w; x++)
                row[x] = noise_at(k, c, y0 + y, x0 + x);
        }
}
