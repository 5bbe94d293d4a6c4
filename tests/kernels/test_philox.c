/* Philox4x32-10 against the Random123 known answers, and the noise field built on it: its
 * documented (key, counter) layout, its statistics, and its independence from tiling and
 * thread count (docs/design.md section 2). */
#include "kernels/kernels.h"
#include "kernels/philox.h"
#include "kernels/threads.h"
#include "tests/test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

TEST(philox_known_answers)
{
    /* Random123 kat_vectors, philox4x32_10 */
    static const uint32_t v[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
         0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
         0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int i = 0; i < 3; i++) {
        uint32_t out[4];
        philox4x32_10(v[i], v[i] + 4, out);
        CHECKF(memcmp(out, v[i] + 6, sizeof out) == 0, "vector %d: %08x %08x %08x %08x", i, out[0],
               out[1], out[2], out[3]);
    }
}

/* noise_at is Box-Muller over Philox at the layout documented in philox.c; pinning it here
 * makes a layout change (which would change every image ever rendered) fail loudly. */
TEST(philox_noise_layout)
{
    noise_key k = {.seed = 0x0123456789abcdefull, .image = 77, .level = 3, .stream = 12};
    const int c = 2, y = 1000, x = 4095;
    uint32_t ctr[4] = {(uint32_t)x | (uint32_t)y << 16, k.stream, (uint32_t)c | k.level << 16,
                       k.image};
    uint32_t key[2] = {0x89abcdefu, 0x01234567u}, out[4];
    philox4x32_10(ctr, key, out);
    double u1 = ((double)out[0] + 1.0) / 4294967296.0, u2 = (double)out[1] / 4294967296.0;
    float want = (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
    float got = noise_at(&k, c, y, x);
    CHECKF(memcmp(&want, &got, sizeof got) == 0, "%a vs %a", got, want);
}

TEST(philox_noise_statistics)
{
    enum { C = 4, H = 500, W = 500, N = C * H * W };
    float *v = malloc(N * sizeof *v);
    CHECK(v);
    noise_key k = {.seed = 1234, .image = 5, .level = 1, .stream = NOISE_STREAM_INIT};
    noise_fill(&k, v, C, H, W, 0, 0);
    double sum = 0, sq = 0, quad = 0;
    int finite = 1;
    for (int i = 0; i < N; i++) {
        finite &= isfinite(v[i]);
        sum += v[i];
        sq += (double)v[i] * v[i];
        quad += (double)v[i] * v[i] * v[i] * v[i];
    }
    free(v);
    double mean = sum / N, var = sq / N - mean * mean, kurt = quad / N;
    CHECK(finite);
    /* 5 sigma: sd(mean) = 1/sqrt(N), sd(var) = sqrt(2/N), sd(E[z^4]) = sqrt(96/N) */
    CHECKF(fabs(mean) < 5.0 / sqrt(N), "mean %g", mean);
    CHECKF(fabs(var - 1.0) < 5.0 * sqrt(2.0 / N), "variance %g", var);
    CHECKF(fabs(kurt - 3.0) < 5.0 * sqrt(96.0 / N), "fourth moment %g", kurt);
}

/* A block drawn at its global origin equals the same region of a full fill, bit for bit. */
TEST(philox_fill_tile_independent)
{
    enum { C = 3, H = 64, W = 80, Y0 = 17, X0 = 23, BH = 20, BW = 31 };
    static float full[C * H * W], block[C * BH * BW];
    noise_key k = {.seed = 99, .image = 1, .level = 2, .stream = 7};
    noise_fill(&k, full, C, H, W, 0, 0);
    noise_fill(&k, block, C, BH, BW, Y0, X0);
    for (int c = 0; c < C; c++)
        for (int y = 0; y < BH; y++)
            for (int x = 0; x < BW; x++) {
                float a = block[(c * BH + y) * BW + x], b = full[(c * H + Y0 + y) * W + X0 + x];
                CHECKF(memcmp(&a, &b, sizeof a) == 0, "c %d y %d x %d", c, y, x);
            }
    float at = noise_at(&k, 2, 63, 79);
    CHECK(memcmp(&at, &full[C * H * W - 1], sizeof at) == 0);
}

/* The thread count does not change a single bit. */
TEST(philox_fill_thread_independent)
{
    enum { C = 4, H = 96, W = 96, N = C * H * W };
    static float one[N], many[N];
    noise_key k = {.seed = 5, .image = 2, .level = 0, .stream = NOISE_STREAM_AUG};
    int saved = kernels_get_threads();
    kernels_set_threads(1);
    noise_fill(&k, one, C, H, W, 8, 16);
    kernels_set_threads(4);
    noise_fill(&k, many, C, H, W, 8, 16);
    kernels_set_threads(saved);
    CHECK(memcmp(one, many, sizeof one) == 0);
}

/* Fraction of equal values between the fields of two keys over a small block. */
static double overlap(const noise_key *a, const noise_key *b)
{
    enum { C = 2, H = 16, W = 16, N = C * H * W };
    float va[N], vb[N];
    noise_fill(a, va, C, H, W, 0, 0);
    noise_fill(b, vb, C, H, W, 0, 0);
    int same = 0;
    for (int i = 0; i < N; i++)
        same += va[i] == vb[i];
    return (double)same / N;
}

/* Each coordinate of the key selects an unrelated field, and channels / pixels differ too. */
TEST(philox_fields_differ)
{
    noise_key base = {.seed = 42, .image = 3, .level = 1, .stream = 0};
    noise_key vary[] = {base, base, base, base, base, base, base};
    vary[0].seed = 43;
    vary[1].seed = 42 | 1ull << 32;
    vary[2].image = 4;
    vary[3].level = 2;
    vary[4].stream = 1;
    vary[5].stream = NOISE_STREAM_INIT;
    vary[6].stream = NOISE_STREAM_AUG;
    for (int i = 0; i < 7; i++)
        CHECKF(overlap(&base, &vary[i]) < 0.01, "variant %d", i);
    CHECK(overlap(&vary[5], &vary[6]) < 0.01);
    CHECK(overlap(&base, &base) == 1.0);
    CHECK(noise_at(&base, 0, 5, 5) != noise_at(&base, 1, 5, 5));
    CHECK(noise_at(&base, 0, 5, 6) != noise_at(&base, 0, 6, 5));
}
