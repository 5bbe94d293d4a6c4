/* IEEE half (binary16) and bfloat16 conversions, bit-exact and independent of the FPU's
 * rounding mode (integer arithmetic only). */
#include "kernels/half.h"

#include <string.h>

static float bits_to_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Exact: every half value is a float. */
float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp == 0x1f) return bits_to_f32(sign | 0x7f800000u | mant << 13); /* inf, NaN payload */
    if (exp != 0) return bits_to_f32(sign | (exp + 112) << 23 | mant << 13);
    /* subnormal (or zero): mant * 2^-24, exact in float */
    float v = (float)mant * 0x1p-24f;
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    return bits_to_f32(sign | bits);
}

/* Exact: bfloat16 is the top half of a float. */
float bf16_to_f32(uint16_t h)
{
    return bits_to_f32((uint32_t)h << 16);
}

/* Round to nearest, ties to even; overflow gives inf, NaN stays NaN (quiet, top payload bits
 * kept), tiny values become half subnormals or signed zero. */
uint16_t f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t a = x & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00 | (uint16_t)((a >> 13) & 0x3ff);
    if (a >= 0x477ff000u) return sign | 0x7c00; /* >= 65520 rounds to inf (65504 is odd) */
    if (a >= 0x38800000u) {                     /* normal half: rebias 127 -> 15 */
        uint32_t r = a - 0x38000000u;
        return sign | (uint16_t)((r + 0xfffu + ((r >> 13) & 1)) >> 13);
    }
    if (a < 0x33000000u) return sign; /* below 2^-25: rounds to zero */
    /* subnormal half: value / 2^-24 = mant >> (126 - exp), rounded to nearest even;
     * a carry into 0x400 correctly yields the smallest normal */
    uint32_t exp = a >> 23, mant = (a & 0x7fffffu) | 0x800000u;
    int shift = 126 - (int)exp; /* 14..24 */
    uint32_t h = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1))) h++;
    return sign | (uint16_t)h;
}
