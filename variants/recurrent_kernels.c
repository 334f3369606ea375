/* The chunk-parallel recurrences' C kernels: the state entering every chunk, and GLA's gate factors.

       delta chain    (deltanet, gated-deltanet)   U'_j = U_j − W_j S_j,  S_{j+1} = Γ_j S_j + K̃_jᵀ U'_j
       diagonal chain (gla, retnet)                S_{j+1} = a_j ⊙ S_j + B_j    a_j (d_k), one per row

   with S_j and B_j (d_k × d_v), and for the delta rule W_j, K̃_j (Q × d_k)
   and U_j, U'_j (Q × d_v) from the UT transform (see deltanet.py). Every
   other part of the chunked forms is batched over all chunks at once; the
   chain is the one loop over chunks, and in torch each of its steps is a
   batched matmul of a few small matrices, where per-call overhead (a
   select, an addmm, a copy per sequence·head) costs more than the
   arithmetic. Here the items (one sequence·head each) are independent, so
   each thread walks whole chains of its own items, its S (d_k × d_v)
   staying in L1/L2, with no synchronisation between steps. The delta chain
   also hands back U' (the pseudo-values the outputs read), so the caller
   needs neither the per-chunk transition matrices nor a second product
   with W. gla_factors (below) forms GLA's gates, their sums within each
   chunk and its scaled q and k in one pass where torch makes eleven.

   Layouts, all contiguous: the diagonal chain's a (items, chunks, d_k) and
   b (items, chunks, d_k, d_v); the delta chain's wu (items, chunks, Q,
   d_k + d_v), k (items, chunks, Q, d_k), to_end (items, chunks, Q) or
   NULL, u_new (items, chunks, Q, d_v) and decay (items, chunks) or NULL;
   first (items, d_k, d_v), the state entering chunk 0; entering (items,
   chunks, d_k, d_v) receives S_0 … S_{c−1} and final (items, d_k, d_v)
   S_c. The inner loops run over d_v in blocks of BLOCK with a fixed trip
   count so that the compiler vectorises them and keeps ROWS output rows in
   registers across a product's inner dimension. This file includes itself
   once per precision (float, double), with exp and softplus from
   native_common.h. */

#ifndef REAL

#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "native_common.h"

#define BLOCK 32
#define ROWS 4

#define REAL float
#define SUFFIX f32
#define EXP exp_f32
#define SOFTPLUS softplus_f32
#include "recurrent_kernels.c"
#undef REAL
#undef SUFFIX
#undef EXP
#undef SOFTPLUS

#define REAL double
#define SUFFIX f64
#define EXP exp_f64
#define SOFTPLUS softplus_f64
#include "recurrent_kernels.c"

#else  /* the kernels, once per precision */

/* out (rows × dv) = β b + α A diag(sk) s: A (rows × inner) read through its strides (ra between rows, ca
   between columns, so Aᵀ of a stored matrix is a stride swap), sk a scale per inner index (NULL: none),
   s (inner × dv) with rows of dv, b with rows rb apart, out with rows of dv. */
static void NAMED(gemm, SUFFIX)(const REAL *restrict a, int64_t ra, int64_t ca, const REAL *restrict sk,
                                const REAL *restrict s, const REAL *restrict b, int64_t rb, REAL beta, REAL alpha,
                                REAL *restrict out, int64_t rows, int64_t inner, int64_t dv) {
    int64_t i = 0;
    for (; i + ROWS <= rows; i += ROWS) {
        int64_t n0 = 0;
        for (; n0 + BLOCK <= dv; n0 += BLOCK) {
            REAL acc[ROWS][BLOCK];
            for (int r = 0; r < ROWS; r++)
                for (int n = 0; n < BLOCK; n++) acc[r][n] = 0;
            for (int64_t k = 0; k < inner; k++) {
                const REAL *row = s + k * dv + n0, scale = sk ? sk[k] : 1;
                for (int r = 0; r < ROWS; r++) {
                    const REAL weight = a[(i + r) * ra + k * ca] * scale;
                    for (int n = 0; n < BLOCK; n++) acc[r][n] += weight * row[n];
                }
            }
            for (int r = 0; r < ROWS; r++)
                for (int n = 0; n < BLOCK; n++)
                    out[(i + r) * dv + n0 + n] = beta * b[(i + r) * rb + n0 + n] + alpha * acc[r][n];
        }
        for (int r = 0; r < ROWS; r++)                                  /* the last columns, fewer than BLOCK */
            for (int64_t n = n0; n < dv; n++) {
                REAL sum = 0;
                for (int64_t k = 0; k < inner; k++) sum += a[(i + r) * ra + k * ca] * (sk ? sk[k] : 1) * s[k * dv + n];
                out[(i + r) * dv + n] = beta * b[(i + r) * rb + n] + alpha * sum;
            }
    }
    for (; i < rows; i++)                                                /* the last rows, fewer than ROWS */
        for (int64_t n = 0; n < dv; n++) {
            REAL sum = 0;
            for (int64_t k = 0; k < inner; k++) sum += a[i * ra + k * ca] * (sk ? sk[k] : 1) * s[k * dv + n];
            out[i * dv + n] = beta * b[i * rb + n] + alpha * sum;
        }
}

/* The delta rule's chain: for every item and chunk j, with W_j (Q × d_k) and U_j (Q × d_v) side by side in
   the rows of wu (Q × (d_k + d_v)), K_j (Q × d_k) and the decays to the chunk's end γ_j (Q; NULL for 1),
       U'_j = U_j − W_j S_j                   (the chunk's pseudo-values, written to u_new)
       S_{j+1} = Γ_j S_j + K_jᵀ diag(γ_j) U'_j  (K̃ = K ∘ γ; Γ_j the chunk's total decay, 1 where decay is NULL)
   Returns 0, or 1 for a size it cannot take. */
int NAMED(delta_chain, SUFFIX)(const REAL *wu, const REAL *k, const REAL *to_end, const REAL *decay,
                               const REAL *first, REAL *entering, REAL *final, REAL *u_new, int64_t items,
                               int64_t chunks, int64_t chunk, int64_t dk, int64_t dv, int64_t threads) {
    if (items < 1 || chunks < 1 || chunk < 1 || dk < 1 || dv < 1) return 1;
    const int64_t width = dk + dv, state = dk * dv;
#pragma omp parallel for schedule(static) num_threads(thread_count(threads, items))
    for (int64_t item = 0; item < items; item++) {
        REAL *s = entering + item * chunks * state;
        memcpy(s, first + item * state, (size_t)state * sizeof(REAL));
        for (int64_t j = 0; j < chunks; j++) {
            const int64_t at = item * chunks + j;
            const REAL *w = wu + at * chunk * width;
            REAL *now = s + j * state, *next = j + 1 < chunks ? now + state : final + item * state;
            REAL *pseudo = u_new + at * chunk * dv;
            NAMED(gemm, SUFFIX)(w, width, 1, NULL, now, w + dk, width, 1, -1, pseudo, chunk, dk, dv);
            NAMED(gemm, SUFFIX)(k + at * chunk * dk, 1, dk, to_end ? to_end + at * chunk : NULL, pseudo, now, dv,
                                decay ? decay[at] : 1, 1, next, dk, chunk, dv);
        }
    }
    return 0;
}

/* S_{j+1} = a_j ⊙ S_j + B_j (a_j scales row i of S_j) for every item; returns 0, or 1 for a size it cannot take. */
int NAMED(diagonal_chain, SUFFIX)(const REAL *a, const REAL *b, const REAL *first, REAL *entering, REAL *final,
                                  int64_t items, int64_t chunks, int64_t dk, int64_t dv, int64_t threads) {
    if (items < 1 || chunks < 1 || dk < 1 || dv < 1) return 1;
    const int64_t state = dk * dv;
#pragma omp parallel for schedule(static) num_threads(thread_count(threads, items))
    for (int64_t item = 0; item < items; item++) {
        const REAL *a_item = a + item * chunks * dk, *b_item = b + item * chunks * state;
        REAL *s = entering + item * chunks * state;
        memcpy(s, first + item * state, (size_t)state * sizeof(REAL));
        for (int64_t j = 0; j < chunks; j++) {
            const REAL *now = s + j * state, *add = b_item + j * state, *decay = a_item + j * dk;
            REAL *next = j + 1 < chunks ? s + (j + 1) * state : final + item * state;
            for (int64_t i = 0; i < dk; i++)
                for (int64_t n = 0; n < dv; n++) next[i * dv + n] = decay[i] * now[i * dv + n] + add[i * dv + n];
        }
    }
    return 0;
}

/* One row of GLA's factors (restrict parameters, so that the loop vectorises without alias checks). */
static inline void NAMED(gla_row, SUFFIX)(const REAL *restrict now, const REAL *restrict mid,
                                          const REAL *restrict from_start, const REAL *restrict to_end,
                                          const REAL *restrict qt, const REAL *restrict kt, REAL *restrict qm,
                                          REAL *restrict km, REAL *restrict qs, REAL *restrict ke, int64_t dk) {
    for (int64_t i = 0; i < dk; i++) {
        const REAL to_middle = EXP(now[i] - mid[i]);
        const REAL scaled_q = qt[i] * to_middle, scaled_k = kt[i] / to_middle;
        qm[i] = scaled_q;
        km[i] = scaled_k;
        qs[i] = scaled_q * from_start[i];
        ke[i] = scaled_k * to_end[i];
    }
}

/* GLA's factors for one block per chunk, from its gate logits x = k W↓ W↑ (before the bias), in one pass:
       log α_t = −softplus(−(x_t + b)) / normalizer       (logsigmoid over the normaliser, < 0 per channel)
       b_t = Σ_{r <= t} log α_r within the chunk, m = b at the chunk's middle row, e = b at its last row
       q_mid = q e^(b_t − m)   k_mid = k e^(m − b_t)   q_start = q e^(b_t)   k_end = k e^(e − b_t)
   and end_decay = e^e per chunk and channel. Rows at or past seq_len (the last chunk's padding) have
   q = k = 0 and log α = 0. steepest[item] receives the chunk's largest |log α|, so the caller can tell
   whether one block per chunk keeps every factor finite. Items are (sequence·head, chunk) pairs, item =
   (bh·chunks + j); logits, q and k are (B·H, seq_len, d_k), bias (heads, d_k), the factors (items, chunk,
   d_k) and end_decay (items, d_k). work holds (chunk + 5)·d_k values per thread. Returns 0, or 1 for a size it
   cannot take. */
int NAMED(gla_factors, SUFFIX)(const REAL *logits, const REAL *bias, const REAL *q, const REAL *k, REAL normalizer,
                               REAL *q_mid, REAL *k_mid, REAL *q_start, REAL *k_end, REAL *end_decay,
                               REAL *steepest, REAL *work, int64_t sequences, int64_t heads, int64_t seq_len,
                               int64_t chunks, int64_t chunk, int64_t dk, int64_t threads) {
    if (sequences < 1 || heads < 1 || seq_len < 1 || chunk < 1 || dk < 1 || chunks * chunk < seq_len) return 1;
    const int64_t items = sequences * chunks;
#pragma omp parallel num_threads(thread_count(threads, items))
    {
        REAL *b = work + (int64_t)omp_get_thread_num() * (chunk + 5) * dk;   /* the chunk's cumulative log α */
        REAL *zero = b + chunk * dk, *peak = zero + dk;
        REAL *from_start = peak + dk, *to_end = from_start + dk, *mid = to_end + dk;
#pragma omp for schedule(static)
        for (int64_t item = 0; item < items; item++) {
            const int64_t bh = item / chunks, j = item % chunks, first = j * chunk;
            const int64_t rows = seq_len - first < chunk ? seq_len - first : chunk;
            const REAL *x = logits + (bh * seq_len + first) * dk, *shift = bias + (bh % heads) * dk;
            const REAL *qi = q + (bh * seq_len + first) * dk, *ki = k + (bh * seq_len + first) * dk;
            for (int64_t i = 0; i < dk; i++) zero[i] = peak[i] = 0;
            for (int64_t t = 0; t < rows; t++) {
                REAL *now = b + t * dk;
                const REAL *before = t ? now - dk : zero, *xt = x + t * dk;
                for (int64_t i = 0; i < dk; i++) {
                    const REAL g = -SOFTPLUS(-(xt[i] + shift[i])) / normalizer;
                    peak[i] = peak[i] > -g ? peak[i] : -g;
                    now[i] = before[i] + g;
                }
            }
            for (int64_t t = rows; t < chunk; t++) {                     /* padding: no decay */
                const REAL *before = t ? b + (t - 1) * dk : zero;
                for (int64_t i = 0; i < dk; i++) b[t * dk + i] = before[i];
            }
            REAL steep = 0;
            for (int64_t i = 0; i < dk; i++) steep = peak[i] > steep ? peak[i] : steep;
            steepest[item] = steep;
            const REAL *middle = b + (chunk / 2) * dk, *last = b + (chunk - 1) * dk;
            REAL *decay = end_decay + item * dk;
            for (int64_t i = 0; i < dk; i++) {
                decay[i] = EXP(last[i]);
                from_start[i] = EXP(middle[i]);                          /* e^m and e^(e − m), both <= 1 */
                to_end[i] = EXP(last[i] - middle[i]);
                mid[i] = middle[i];
            }
            const int64_t at = item * chunk * dk;
            for (int64_t t = 0; t < rows; t++) {
                const int64_t o = at + t * dk;
                NAMED(gla_row, SUFFIX)(b + t * dk, mid, from_start, to_end, qi + t * dk, ki + t * dk,
                                       q_mid + o, k_mid + o, q_start + o, k_end + o, dk);
            }
            const size_t padding = (size_t)(chunk - rows) * dk * sizeof(REAL);   /* q = k = 0 past seq_len */
            if (padding) {
                memset(q_mid + at + rows * dk, 0, padding);
                memset(k_mid + at + rows * dk, 0, padding);
                memset(q_start + at + rows * dk, 0, padding);
                memset(k_end + at + rows * dk, 0, padding);
            }
        }
    }
    return 0;
}

#endif
