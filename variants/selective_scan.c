/* Mamba-1's selective scan on the CPU, forward and backward, one pass over time, no (N, D, n) tensor.

       h_t = exp(Δ_t A) ⊙ h_{t−1} + (Δ_t x_t) ⊗ B_t      (D, n) per sequence
       y_t = h_t C_t + D_skip ⊙ x_t                       (D)

   Channels are independent, so the work is cut into items, one block of
   LANES channels of one sequence each, spread over threads; an item walks
   time in order with its state h[n][LANES] in L1, and every inner loop runs
   over the lanes, so it vectorises (exp and softplus from native_common.h).

   The backward runs time in reverse with the adjoint G_t = ∂L/∂h_t:

       G_t = dy_t C_tᵀ + exp(Δ_{t+1} A) ⊙ G_{t+1}
       ∂C_t = Σ_d dy_t h_t          ∂B_t = Σ_d G_t Δ_t x_t       ∂x_t = Σ_n G_t Δ_t B_t
       ∂Δ_t = Σ_n G_t ⊙ (h_{t−1} e_t A + x_t B_t)            ∂A = Σ_t G_t ⊙ h_{t−1} e_t Δ_t

   (e_t = exp(Δ_t A); the skip's gradients are left to the caller). The
   forward states are kept every CHECKPOINT steps and recomputed within a
   span, so the backward holds O(N/CHECKPOINT · n) per item, not O(N · n).
   B, C and A are shared across items, so their gradients go to one partial
   sum per thread, which the caller adds up.

   Layouts: delta (B, N, D), b and c (B, N, n) and a_t (n, D) (A transposed)
   contiguous; x, y and dy as (B, H, N, P) through their strides (batch,
   head, time; P contiguous), channel = head·P + p, so the case's v is read
   and the output written in place with no layout copy. P (the head width)
   must be a multiple of LANES: the caller passes a padded single-head layout
   otherwise. ddelta and dx are written contiguous (B, N, D). This file
   includes itself once per precision (float, double). */

#ifndef REAL

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#define LANES 16
#define MAX_STATE 256
#define CHECKPOINT 16

#include "native_common.h"

/* Items [0, items) split into `threads` contiguous ranges, each run by `body(context, thread, first, last)`.
   OpenMP's team: the library links the libgomp that torch has already loaded, so its threads are
   torch's own intra-op threads (no second pool spinning against the first on the same cores). */
typedef void (*item_range)(const void *context, int64_t thread, int64_t first, int64_t last);

static void run_items(item_range body, const void *context, int64_t items, int64_t threads) {
#pragma omp parallel num_threads(threads)
    {
        const int64_t thread = omp_get_thread_num(), team = omp_get_num_threads();
        body(context, thread, items * thread / team, items * (thread + 1) / team);
    }
}

#define REAL float
#define EXP exp_f32
#define SOFTPLUS softplus_f32
#define SUFFIX f32
#include "selective_scan.c"
#undef REAL
#undef EXP
#undef SOFTPLUS
#undef SUFFIX

#define REAL double
#define EXP exp_f64
#define SOFTPLUS softplus_f64
#define SUFFIX f64
#include "selective_scan.c"

#else  /* the kernels, once per precision */

typedef struct {
    const REAL *delta, *x, *b, *c, *a_t, *d_skip, *dy;
    REAL *y, *ddelta, *dx, *db, *dc, *da;           /* db, dc, da: one partial sum per thread */
    REAL *workspace;                                 /* per thread: the span starts, h_t and e_t in a span */
    int64_t batch, seq_len, channels, state, head_dim;
    int64_t xs_batch, xs_head, xs_time, ys_batch, ys_head, ys_time;
} NAMED(scan, SUFFIX);

/* Where an item's channels start in a (B, H, N, P) tensor with strides (batch, head, time). */
static inline int64_t NAMED(item_offset, SUFFIX)(const NAMED(scan, SUFFIX) *s, int64_t seq, int64_t d0,
                                                 int64_t s_batch, int64_t s_head) {
    return seq * s_batch + (d0 / s->head_dim) * s_head + d0 % s->head_dim;
}

static void NAMED(forward_items, SUFFIX)(const void *context, int64_t thread, int64_t first, int64_t last) {
    const NAMED(scan, SUFFIX) *s = context;
    const int64_t n = s->state, D = s->channels, blocks = D / LANES;
    (void)thread;
    for (int64_t item = first; item < last; item++) {
        const int64_t seq = item / blocks, d0 = (item % blocks) * LANES;
        const REAL *x_item = s->x + NAMED(item_offset, SUFFIX)(s, seq, d0, s->xs_batch, s->xs_head);
        REAL *y_item = s->y + NAMED(item_offset, SUFFIX)(s, seq, d0, s->ys_batch, s->ys_head);
        REAL h[MAX_STATE][LANES], a[MAX_STATE][LANES], skip[LANES];
        for (int l = 0; l < LANES; l++) skip[l] = s->d_skip[d0 + l];
        for (int64_t j = 0; j < n; j++)
            for (int l = 0; l < LANES; l++) {
                h[j][l] = 0;
                a[j][l] = s->a_t[j * D + d0 + l];
            }
        for (int64_t t = 0; t < s->seq_len; t++) {
            const int64_t row = seq * s->seq_len + t;
            const REAL *dl = s->delta + row * D + d0, *xl = x_item + t * s->xs_time;
            const REAL *bt = s->b + row * n, *ct = s->c + row * n;
            REAL drive[LANES], out[LANES];
            for (int l = 0; l < LANES; l++) {
                drive[l] = dl[l] * xl[l];                                  /* Δ_t x_t */
                out[l] = skip[l] * xl[l];                                  /* D ⊙ x_t */
            }
            for (int64_t j = 0; j < n; j++) {
                const REAL bj = bt[j], cj = ct[j];
                for (int l = 0; l < LANES; l++) {
                    h[j][l] = EXP(dl[l] * a[j][l]) * h[j][l] + drive[l] * bj;
                    out[l] += h[j][l] * cj;
                }
            }
            memcpy(y_item + t * s->ys_time, out, sizeof out);
        }
    }
}

static void NAMED(backward_items, SUFFIX)(const void *context, int64_t thread, int64_t first, int64_t last) {
    const NAMED(scan, SUFFIX) *s = context;
    const int64_t n = s->state, D = s->channels, N = s->seq_len, blocks = D / LANES;
    const int64_t spans = (N + CHECKPOINT - 1) / CHECKPOINT, cell = n * LANES;
    REAL *db = s->db + thread * s->batch * N * n, *dc = s->dc + thread * s->batch * N * n;
    REAL *da = s->da + thread * n * D;
    REAL *saved = s->workspace + thread * (spans + 2 * CHECKPOINT) * cell;
    REAL *hs = saved + spans * cell, *es = hs + CHECKPOINT * cell;  /* h_t and e_t within one span */
    for (int64_t item = first; item < last; item++) {
        const int64_t seq = item / blocks, d0 = (item % blocks) * LANES;
        const REAL *x_item = s->x + NAMED(item_offset, SUFFIX)(s, seq, d0, s->xs_batch, s->xs_head);
        const REAL *dy_item = s->dy + NAMED(item_offset, SUFFIX)(s, seq, d0, s->ys_batch, s->ys_head);
        REAL h[MAX_STATE][LANES], a[MAX_STATE][LANES], g[MAX_STATE][LANES], da_item[MAX_STATE][LANES];
        for (int64_t j = 0; j < n; j++)
            for (int l = 0; l < LANES; l++) {
                h[j][l] = g[j][l] = da_item[j][l] = 0;
                a[j][l] = s->a_t[j * D + d0 + l];
            }
        for (int64_t t = 0; t < N; t++) {                                  /* forward: keep h at each span's start */
            if (t % CHECKPOINT == 0) memcpy(saved + (t / CHECKPOINT) * cell, h, sizeof(REAL) * cell);
            const int64_t row = seq * N + t;
            const REAL *dl = s->delta + row * D + d0, *xl = x_item + t * s->xs_time, *bt = s->b + row * n;
            for (int64_t j = 0; j < n; j++)
                for (int l = 0; l < LANES; l++)
                    h[j][l] = EXP(dl[l] * a[j][l]) * h[j][l] + dl[l] * xl[l] * bt[j];
        }
        for (int64_t span = spans - 1; span >= 0; span--) {
            const int64_t t0 = span * CHECKPOINT, t1 = t0 + CHECKPOINT < N ? t0 + CHECKPOINT : N;
            const REAL *start = saved + span * cell;
            for (int64_t t = t0; t < t1; t++) {                          /* recompute h_t, e_t in the span */
                const int64_t row = seq * N + t;
                const REAL *dl = s->delta + row * D + d0, *xl = x_item + t * s->xs_time, *bt = s->b + row * n;
                const REAL *before = t == t0 ? start : hs + (t - t0 - 1) * cell;
                REAL *now = hs + (t - t0) * cell, *e = es + (t - t0) * cell;
                for (int64_t j = 0; j < n; j++)
                    for (int l = 0; l < LANES; l++) {
                        e[j * LANES + l] = EXP(dl[l] * a[j][l]);
                        now[j * LANES + l] = e[j * LANES + l] * before[j * LANES + l] + dl[l] * xl[l] * bt[j];
                    }
            }
            for (int64_t t = t1 - 1; t >= t0; t--) {                     /* then walk the span backwards */
                const int64_t row = seq * N + t;
                const REAL *dl = s->delta + row * D + d0, *xl = x_item + t * s->xs_time;
                const REAL *dyl = dy_item + t * s->ys_time, *bt = s->b + row * n, *ct = s->c + row * n;
                const REAL *now = hs + (t - t0) * cell, *e = es + (t - t0) * cell;
                const REAL *before = t == t0 ? start : hs + (t - t0 - 1) * cell;
                REAL d_delta[LANES], d_x[LANES];
                for (int l = 0; l < LANES; l++) d_delta[l] = d_x[l] = 0;
                for (int64_t j = 0; j < n; j++) {
                    const REAL bj = bt[j], cj = ct[j];
                    REAL dc_sum = 0, db_sum = 0;
                    for (int l = 0; l < LANES; l++) {
                        const REAL adj = g[j][l] + dyl[l] * cj;            /* G_t */
                        const REAL through_decay = adj * before[j * LANES + l] * e[j * LANES + l];
                        dc_sum += dyl[l] * now[j * LANES + l];
                        db_sum += adj * dl[l] * xl[l];
                        d_delta[l] += through_decay * a[j][l] + adj * xl[l] * bj;
                        d_x[l] += adj * dl[l] * bj;
                        da_item[j][l] += through_decay * dl[l];
                        g[j][l] = adj * e[j * LANES + l];                   /* carried to step t − 1 */
                    }
                    dc[row * n + j] += dc_sum;
                    db[row * n + j] += db_sum;
                }
                memcpy(s->ddelta + row * D + d0, d_delta, sizeof d_delta);
                memcpy(s->dx + row * D + d0, d_x, sizeof d_x);
            }
        }
        for (int64_t j = 0; j < n; j++)
            for (int l = 0; l < LANES; l++) da[j * D + d0 + l] += da_item[j][l];
    }
}

/* Check the arguments, then run `body` over every item: 0, or 1 for a head width off the lanes, 2 for a bad
   state size (nothing runs). */
static int NAMED(run_checked, SUFFIX)(const NAMED(scan, SUFFIX) *s, item_range body, int64_t threads) {
    if (s->head_dim % LANES != 0 || s->channels % s->head_dim != 0) return 1;
    if (s->state < 1 || s->state > MAX_STATE) return 2;
    const int64_t items = s->batch * (s->channels / LANES);
    if (items >= 1 && s->seq_len >= 1) run_items(body, s, items, thread_count(threads, items));
    return 0;
}

/* y (B, H, N, P) = the scan plus D ⊙ x. Returns 0, or 1 for a head width off the lanes, 2 for a bad state size. */
int NAMED(selective_scan, SUFFIX)(const REAL *delta, const REAL *x, const REAL *b, const REAL *c,
                                  const REAL *a_t, const REAL *d_skip, REAL *y, int64_t batch,
                                  int64_t seq_len, int64_t channels, int64_t state, int64_t head_dim,
                                  const int64_t *x_strides, const int64_t *y_strides, int64_t threads) {
    NAMED(scan, SUFFIX) s = {.delta = delta, .x = x, .b = b, .c = c, .a_t = a_t, .d_skip = d_skip, .y = y,
                             .batch = batch, .seq_len = seq_len, .channels = channels, .state = state,
                             .head_dim = head_dim,
                             .xs_batch = x_strides[0], .xs_head = x_strides[1], .xs_time = x_strides[2],
                             .ys_batch = y_strides[0], .ys_head = y_strides[1], .ys_time = y_strides[2]};
    return NAMED(run_checked, SUFFIX)(&s, NAMED(forward_items, SUFFIX), threads);
}

/* The scan's gradients for dy (B, H, N, P, strides as y): ddelta and dx (B, N, D), and per thread
   db, dc (threads, B, N, n) and da (threads, n, D), which must start at zero; workspace holds
   threads × (⌈N / CHECKPOINT⌉ + 2·CHECKPOINT) × n × LANES values. Returns as the forward. */
int NAMED(selective_scan_backward, SUFFIX)(const REAL *delta, const REAL *x, const REAL *b, const REAL *c,
                                           const REAL *a_t, const REAL *dy, REAL *ddelta, REAL *dx,
                                           REAL *db, REAL *dc, REAL *da, REAL *workspace,
                                           int64_t batch, int64_t seq_len,
                                           int64_t channels, int64_t state, int64_t head_dim,
                                           const int64_t *x_strides, const int64_t *dy_strides,
                                           int64_t threads) {
    NAMED(scan, SUFFIX) s = {.delta = delta, .x = x, .b = b, .c = c, .a_t = a_t, .dy = dy, .ddelta = ddelta,
                             .dx = dx, .db = db, .dc = dc, .da = da, .workspace = workspace,
                             .batch = batch, .seq_len = seq_len, .channels = channels, .state = state,
                             .head_dim = head_dim,
                             .xs_batch = x_strides[0], .xs_head = x_strides[1], .xs_time = x_strides[2],
                             .ys_batch = dy_strides[0], .ys_head = dy_strides[1], .ys_time = dy_strides[2]};
    return NAMED(run_checked, SUFFIX)(&s, NAMED(backward_items, SUFFIX), threads);
}

/* Δ = softplus(z + bias) in place over z (rows, D), bias (D): one vectorised pass, rows over the threads. */
void NAMED(softplus_bias, SUFFIX)(REAL *z, const REAL *bias, int64_t rows, int64_t channels, int64_t threads) {
#pragma omp parallel for schedule(static) num_threads(thread_count(threads, rows))
    for (int64_t row = 0; row < rows; row++) {
        REAL *line = z + row * channels;
        for (int64_t d = 0; d < channels; d++) line[d] = SOFTPLUS(line[d] + bias[d]);
    }
}

#endif
