/* Mamba-1's selective scan on the CPU, one pass over time, no (N, D, n) tensor.

       h_t = exp(Δ_t A) ⊙ h_{t−1} + (Δ_t x_t) ⊗ B_t      (D, n) per sequence
       y_t = h_t C_t + D_skip ⊙ x_t                       (D)

   Channels are independent, so each thread takes whole blocks of LANES
   channels of one sequence and walks time in order; a block's state
   h[n][LANES] stays in L1 and every line below vectorises over the lanes.
   exp is written out (range reduction to 2^k · e^r, a polynomial for e^r on
   |r| ≤ ln2/2) so the compiler vectorises it without a vector math library
   or -ffast-math: relative error ~2 float32 ulp, ~2 float64 ulp.

   Layouts: delta (B, N, D), b and c (B, N, n) and a_t (n, D) (A transposed)
   contiguous; x and y as (B, H, N, P) through their strides (batch, head,
   time; P contiguous), channel = head·P + p, so the case's v is read and the
   output written in place with no layout copy. P (the head width) must be a
   multiple of LANES: the caller passes a padded single-head layout otherwise. */

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define LANES 16
#define MAX_STATE 256

static inline float exp_f32(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;   /* round(x / ln2) */
    float r = x - k * 0.693145751953125f - k * 1.428606765330187e-06f;   /* x − k·ln2, two parts */
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

#define DEFINE_SCAN(REAL, EXP, NAME)                                                         \
    typedef struct {                                                                         \
        const REAL *delta, *x, *b, *c, *a_t, *d_skip;                                        \
        REAL *y;                                                                             \
        int64_t seq_len, channels, state, head_dim, first, last;                             \
        int64_t xs_batch, xs_head, xs_time, ys_batch, ys_head, ys_time;                      \
    } NAME##_work;                                                                           \
                                                                                             \
    static void NAME##_block(const NAME##_work *w, int64_t item) {                           \
        int64_t blocks = w->channels / LANES;                                                \
        int64_t seq = item / blocks, d0 = (item % blocks) * LANES;                           \
        int64_t n = w->state, D = w->channels;                                               \
        int64_t head = d0 / w->head_dim, p0 = d0 % w->head_dim;                              \
        const REAL *x_seq = w->x + seq * w->xs_batch + head * w->xs_head + p0;               \
        REAL *y_seq = w->y + seq * w->ys_batch + head * w->ys_head + p0;                     \
        REAL h[MAX_STATE][LANES], a[MAX_STATE][LANES], skip[LANES];                          \
        for (int l = 0; l < LANES; l++) skip[l] = w->d_skip[d0 + l];                         \
        for (int64_t j = 0; j < n; j++)                                                      \
            for (int l = 0; l < LANES; l++) {                                                \
                h[j][l] = 0;                                                                 \
                a[j][l] = w->a_t[j * D + d0 + l];                                            \
            }                                                                                \
        for (int64_t t = 0; t < w->seq_len; t++) {                                           \
            int64_t row = (seq * w->seq_len + t);                                            \
            const REAL *dl = w->delta + row * D + d0, *xl = x_seq + t * w->xs_time;          \
            const REAL *bt = w->b + row * n, *ct = w->c + row * n;                           \
            REAL dx[LANES], out[LANES];                                                      \
            for (int l = 0; l < LANES; l++) {                                                \
                dx[l] = dl[l] * xl[l];                                                       \
                out[l] = skip[l] * xl[l];                                                    \
            }                                                                                \
            for (int64_t j = 0; j < n; j++) {                                                \
                REAL bj = bt[j], cj = ct[j];                                                 \
                for (int l = 0; l < LANES; l++) {                                            \
                    h[j][l] = EXP(dl[l] * a[j][l]) * h[j][l] + dx[l] * bj;                   \
                    out[l] += h[j][l] * cj;                                                  \
                }                                                                            \
            }                                                                                \
            memcpy(y_seq + t * w->ys_time, out, sizeof out);                                 \
        }                                                                                    \
    }                                                                                        \
                                                                                             \
    static void *NAME##_thread(void *arg) {                                                  \
        const NAME##_work *w = arg;                                                          \
        for (int64_t item = w->first; item < w->last; item++) NAME##_block(w, item);         \
        return NULL;                                                                         \
    }                                                                                        \
                                                                                             \
    int NAME(const REAL *delta, const REAL *x, const REAL *b, const REAL *c,                 \
             const REAL *a_t, const REAL *d_skip, REAL *y, int64_t batch, int64_t seq_len,   \
             int64_t channels, int64_t state, int64_t head_dim, const int64_t *x_strides,    \
             const int64_t *y_strides, int64_t threads) {                                    \
        if (head_dim % LANES != 0 || channels % head_dim != 0) return 1;                     \
        if (state < 1 || state > MAX_STATE) return 2;                                        \
        int64_t items = batch * (channels / LANES);                                          \
        if (items < 1 || seq_len < 1) return 0;                                              \
        if (threads < 1) threads = 1;                                                        \
        if (threads > items) threads = items;                                                \
        if (threads > 64) threads = 64;                                                      \
        NAME##_work work[64];                                                                \
        pthread_t ids[64];                                                                   \
        for (int64_t i = 0; i < threads; i++) {                                              \
            NAME##_work w = {delta, x, b, c, a_t, d_skip, y, seq_len, channels, state,      \
                             head_dim, items * i / threads, items * (i + 1) / threads,       \
                             x_strides[0], x_strides[1], x_strides[2],                       \
                             y_strides[0], y_strides[1], y_strides[2]};                      \
            work[i] = w;                                                                     \
        }                                                                                    \
        int64_t started = 1;                                                                 \
        for (; started < threads; started++)                                                 \
            if (pthread_create(&ids[started], NULL, NAME##_thread, &work[started])) break;   \
        NAME##_thread(&work[0]);                                                             \
        for (int64_t i = started; i < threads; i++) NAME##_thread(&work[i]);                 \
        for (int64_t i = 1; i < started; i++) pthread_join(ids[i], NULL);                    \
        return 0;                                                                            \
    }

DEFINE_SCAN(float, exp_f32, selective_scan_f32)
DEFINE_SCAN(double, exp_f64, selective_scan_f64)
