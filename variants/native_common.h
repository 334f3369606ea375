/* What attnbench's C kernels (selective_scan.c, recurrent_kernels.c) share: the thread count for a
   number of items, the name glue of their once-per-precision includes, and exp and softplus written
   out so that gcc vectorises the loops that call them, without a vector math library or -ffast-math.

   exp(x) = 2^k · e^r with k = round(x / ln2) and a polynomial for e^r on |r| ≤ ln2/2: ~2 ulp in float32
   and float64, clamped to the finite range. */

#ifndef ATTNBENCH_NATIVE_COMMON_H
#define ATTNBENCH_NATIVE_COMMON_H

#include <stdint.h>
#include <string.h>

#define GLUE(a, b) a##_##b
#define NAMED(a, b) GLUE(a, b)

/* At least one thread, and no more than there are items. */
static inline int64_t thread_count(int64_t threads, int64_t items) {
    threads = threads < 1 ? 1 : threads;
    return threads > items ? items : threads;
}

static inline float exp_f32(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;   /* round(x / ln2) */
    float r = x - k * 0.693145751953125f - k * 1.428606765330187e-06f;   /* x − k·ln2, in two parts */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline double exp_f64(double x) {
    x = x < -708.0 ? -708.0 : (x > 709.0 ? 709.0 : x);
    double k = (x * 1.4426950408889634 + 6755399441055744.0) - 6755399441055744.0;
    double r = x - k * 6.93147180369123816490e-01 - k * 1.90821492927058770002e-10;
    double p = 1.0 / 479001600.0;                                        /* Taylor to r^12, |r| ≤ 0.347 */
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r * r + r + 1.0;
    int64_t bits = ((int64_t)k + 1023) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* softplus(z) = max(z, 0) + log1p(e^−|z|), log1p(u) = 2 atanh(s) = 2 Σ s^(2i+1)/(2i+1) with s = u/(2+u) ≤ 1/3:
   to s^15 in float32 (coefficients 1/15 … 1/1) and s^33 in float64, under one ulp. */
static inline float softplus_f32(float z) {
    float u = exp_f32(z < 0 ? z : -z), s = u / (2.0f + u), s2 = s * s, p = 1.0f / 15;
    p = p * s2 + 1.0f / 13; p = p * s2 + 1.0f / 11; p = p * s2 + 1.0f / 9; p = p * s2 + 1.0f / 7;
    p = p * s2 + 1.0f / 5; p = p * s2 + 1.0f / 3; p = p * s2 + 1.0f;
    return (z > 0 ? z : 0.0f) + 2.0f * s * p;
}

static inline double softplus_f64(double z) {
    double u = exp_f64(z < 0 ? z : -z), s = u / (2.0 + u), s2 = s * s, p = 1.0 / 33;
    p = p * s2 + 1.0 / 31; p = p * s2 + 1.0 / 29; p = p * s2 + 1.0 / 27; p = p * s2 + 1.0 / 25;
    p = p * s2 + 1.0 / 23; p = p * s2 + 1.0 / 21; p = p * s2 + 1.0 / 19; p = p * s2 + 1.0 / 17;
    p = p * s2 + 1.0 / 15; p = p * s2 + 1.0 / 13; p = p * s2 + 1.0 / 11; p = p * s2 + 1.0 / 9;
    p = p * s2 + 1.0 / 7; p = p * s2 + 1.0 / 5; p = p * s2 + 1.0 / 3; p = p * s2 + 1.0;
    return (z > 0 ? z : 0.0) + 2.0 * s * p;
}

#endif
