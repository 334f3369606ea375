/* The chunk-parallel recurrences' C kernels: the state entering every chunk, and GLA's and RetNet's whole chunked forms.

       delta chain    (deltanet, gated-deltanet)   U'_j = U_j − W_j S_j,  S_{j+1} = Γ_j S_j + K̃_jᵀ U'_j
       diagonal chain (gla, retnet: their torch     S_{j+1} = a_j ⊙ S_j + B_j    a_j (d_k), one per row
                       forms, where the gates are
                       too steep for gated_forward)
       gated_forward  (gla, retnet)                the whole chunked form, below

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
   with W. gated_forward (below) runs all of GLA's chunked form (RetNet's
   with constant gates): the gates, the chunk's factored scores, its
   outputs and end state, and the chain, each thread walking whole
   sequence·heads with every intermediate in its own cache, where the torch
   form makes a dozen passes over (B, H, N, d_k) tensors and four batched
   products of 32 × 64 matrices.

   Layouts, all contiguous: the diagonal chain's a (items, chunks, d_k) and
   b (items, chunks, d_k, d_v); the delta chain's wu (items, chunks, Q,
   d_k + d_v), k (items, chunks, Q, d_k), to_end (items, chunks, Q) or
   NULL, u_new (items, chunks, Q, d_v) and decay (items, chunks) or NULL;
   first (items, d_k, d_v), the state entering chunk 0; entering (items,
   chunks, d_k, d_v) receives S_0 … S_{c−1} and final (items, d_k, d_v)
   S_c. The inner loops run over d_v in blocks of BLOCK with a fixed trip
   count so that the compiler vectorises them and keeps ROWS output rows in
   registers across a product's inner dimension (8 × 32 floats or 4 × 32
   doubles: 16 AVX-512 registers). This file includes itself
   once per precision (float, double), with exp and softplus from
   native_common.h. */

#ifndef REAL

#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "native_common.h"

#define BLOCK 32

#define REAL float
#define SUFFIX f32
#define EXP exp_f32
#define SOFTPLUS softplus_f32
#define ROWS 8                                                          /* 8 × 32 accumulators: 16 AVX-512 registers */
#include "recurrent_kernels.c"
#undef REAL
#undef SUFFIX
#undef EXP
#undef SOFTPLUS
#undef ROWS

#define REAL double
#define SUFFIX f64
#define EXP exp_f64
#define SOFTPLUS softplus_f64
#define ROWS 4
#include "recurrent_kernels.c"

#else  /* the kernels, once per precision */

/* out (rows × dv) = β b + α A diag(sk) s: A (rows × inner) read through its strides (ra between rows, ca
   between columns, so Aᵀ of a stored matrix is a stride swap), sk a scale per inner index (NULL: none),
   s (inner × dv) with rows of dv, b with rows rb apart (NULL: none; it may be out itself), out with rows
   of dv. Where `lower` is set, A is lower triangular (A_ik = 0 for k > i) and those terms are skipped. */
static void NAMED(gemm, SUFFIX)(const REAL *restrict a, int64_t ra, int64_t ca, const REAL *restrict sk,
                                const REAL *restrict s, const REAL *b, int64_t rb, REAL beta, REAL alpha,
                                REAL *out, int64_t rows, int64_t inner, int64_t dv, int lower) {
    int64_t i = 0;
    for (; i + ROWS <= rows; i += ROWS) {
        const int64_t reach = lower && i + ROWS < inner ? i + ROWS : inner;
        int64_t n0 = 0;
        for (; n0 + BLOCK <= dv; n0 += BLOCK) {
            REAL acc[ROWS][BLOCK];
            for (int r = 0; r < ROWS; r++)
                for (int n = 0; n < BLOCK; n++) acc[r][n] = 0;
            for (int64_t k = 0; k < reach; k++) {
                const REAL *row = s + k * dv + n0, scale = sk ? sk[k] : 1;
                for (int r = 0; r < ROWS; r++) {
                    const REAL weight = a[(i + r) * ra + k * ca] * scale;
                    for (int n = 0; n < BLOCK; n++) acc[r][n] += weight * row[n];
                }
            }
            for (int r = 0; r < ROWS; r++)
                for (int n = 0; n < BLOCK; n++)
                    out[(i + r) * dv + n0 + n] = (b ? beta * b[(i + r) * rb + n0 + n] : 0) + alpha * acc[r][n];
        }
        for (int r = 0; r < ROWS; r++)                                  /* the last columns, fewer than BLOCK */
            for (int64_t n = n0; n < dv; n++) {
                REAL sum = 0;
                for (int64_t k = 0; k < reach; k++) sum += a[(i + r) * ra + k * ca] * (sk ? sk[k] : 1) * s[k * dv + n];
                out[(i + r) * dv + n] = (b ? beta * b[(i + r) * rb + n] : 0) + alpha * sum;
            }
    }
    for (; i < rows; i++) {                                              /* the last rows, fewer than ROWS */
        const int64_t reach = lower && i + 1 < inner ? i + 1 : inner;
        for (int64_t n = 0; n < dv; n++) {
            REAL sum = 0;
            for (int64_t k = 0; k < reach; k++) sum += a[i * ra + k * ca] * (sk ? sk[k] : 1) * s[k * dv + n];
            out[i * dv + n] = (b ? beta * b[i * rb + n] : 0) + alpha * sum;
        }
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
            NAMED(gemm, SUFFIX)(w, width, 1, NULL, now, w + dk, width, 1, -1, pseudo, chunk, dk, dv, 0);
            NAMED(gemm, SUFFIX)(k + at * chunk * dk, 1, dk, to_end ? to_end + at * chunk : NULL, pseudo, now, dv,
                                decay ? decay[at] : 1, 1, next, dk, chunk, dv, 0);
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

/* One row t of GLA's factors (restrict parameters, so that the loop vectorises without alias checks):
   q_mid, k_mid (written down a column of kt, `stride` apart), q_start and k_end. */
static inline void NAMED(gla_row, SUFFIX)(const REAL *restrict now, const REAL *restrict mid,
                                          const REAL *restrict from_start, const REAL *restrict to_end,
                                          const REAL *restrict qt, const REAL *restrict kt, REAL *restrict qm,
                                          REAL *restrict km_column, int64_t stride, REAL *restrict qs,
                                          REAL *restrict ke, int64_t dk) {
    for (int64_t i = 0; i < dk; i++) {
        const REAL to_middle = EXP(now[i] - mid[i]);
        const REAL scaled_q = qt[i] * to_middle, scaled_k = kt[i] / to_middle;
        qm[i] = scaled_q;
        km_column[i * stride] = scaled_k;
        qs[i] = scaled_q * from_start[i];
        ke[i] = scaled_k * to_end[i];
    }
}

/* GLA's chunked forward in one call, from its gate logits x = k W↓ W↑ (before the bias), or RetNet's where
   logits is NULL: then log α_t = bias, a constant per head and channel (log γ_h). Each thread walks
   whole sequence·heads, chunk by chunk, with the state S (d_k × d_v) and every per-chunk factor in its own
   cache; for chunk j of Q steps, with b_t the cumulative log gate since the chunk began, m = b at its
   middle row and e at its last:
       log α_t = −softplus(−(x_t + bias)) / normalizer          (logsigmoid over the normaliser, < 0)
       A_j = tril((q ∘ e^(b − m)) (k ∘ e^(m − b))ᵀ)                (Q × Q, the pairs' decays factored about m)
       o_j = A_j V_j + (q ∘ e^b) S_j                                (its own part, and the entering state's)
       S_{j+1} = e^e ⊙ S_j + (k ∘ e^(e − b))ᵀ V_j                   (S_0 = first, or 0 where first is NULL)
   q and k (B·H, seq_len, d_k), v and out (B·H, seq_len, d_v), logits as q, bias (heads, d_k); the last chunk
   is cut at seq_len. final (B·H, d_k, d_v) receives S_c. work holds (5·Q + 6)·d_k + Q² + d_k·d_v values
   per thread. A chunk whose steepest gate |log α| exceeds `limit` would overflow a factor: its sequence
   stops there, 2 is returned, and the caller runs sub-blocks instead. Returns 0, 1 for a size it cannot
   take, or 2. */
int NAMED(gated_forward, SUFFIX)(const REAL *logits, const REAL *bias, const REAL *q, const REAL *k, const REAL *v,
                               const REAL *first, REAL normalizer, REAL limit, REAL *out, REAL *final, REAL *work,
                               int64_t sequences, int64_t heads, int64_t seq_len, int64_t chunk, int64_t dk,
                               int64_t dv, int64_t threads) {
    if (sequences < 1 || heads < 1 || seq_len < 1 || chunk < 1 || dk < 1 || dv < 1) return 1;
    const int64_t state = dk * dv, chunks = (seq_len + chunk - 1) / chunk;
    int too_steep = 0;
#pragma omp parallel num_threads(thread_count(threads, sequences))
    {
        REAL *b = work + (int64_t)omp_get_thread_num() * ((5 * chunk + 6) * dk + chunk * chunk + state);
        REAL *q_mid = b + chunk * dk, *k_mid_t = q_mid + chunk * dk, *k_end = k_mid_t + dk * chunk;
        REAL *q_start = k_end + chunk * dk, *scores = q_start + chunk * dk, *ends = scores + chunk * chunk;
        REAL *zero = ends + state, *peak = zero + dk, *from_start = peak + dk, *to_end = from_start + dk;
        REAL *mid = to_end + dk, *decay = mid + dk;
#pragma omp for schedule(static) reduction(| : too_steep)
        for (int64_t bh = 0; bh < sequences; bh++) {
            REAL *s = final + bh * state;
            if (first) memcpy(s, first + bh * state, (size_t)state * sizeof(REAL));
            else memset(s, 0, (size_t)state * sizeof(REAL));
            for (int64_t j = 0; j < chunks; j++) {
                const int64_t at = bh * seq_len + j * chunk;
                const int64_t rows = seq_len - j * chunk < chunk ? seq_len - j * chunk : chunk;
                const REAL *x = logits ? logits + at * dk : NULL, *shift = bias + (bh % heads) * dk;
                const REAL *qi = q + at * dk, *ki = k + at * dk, *vi = v + at * dv;
                REAL *oi = out + at * dv;
                for (int64_t i = 0; i < dk; i++) zero[i] = peak[i] = 0;
                for (int64_t t = 0; t < chunk; t++) {                    /* past seq_len: no decay */
                    REAL *now = b + t * dk;
                    const REAL *before = t ? now - dk : zero, *xt = x ? x + t * dk : NULL;
                    if (t < rows && !logits)
                        for (int64_t i = 0; i < dk; i++) {
                            peak[i] = peak[i] > -shift[i] ? peak[i] : -shift[i];
                            now[i] = before[i] + shift[i];
                        }
                    else if (t < rows)
                        for (int64_t i = 0; i < dk; i++) {
                            const REAL g = -SOFTPLUS(-(xt[i] + shift[i])) / normalizer;
                            peak[i] = peak[i] > -g ? peak[i] : -g;
                            now[i] = before[i] + g;
                        }
                    else
                        for (int64_t i = 0; i < dk; i++) now[i] = before[i];
                }
                REAL steep = 0;
                for (int64_t i = 0; i < dk; i++) steep = peak[i] > steep ? peak[i] : steep;
                if (!(steep <= limit)) {
                    too_steep = 1;
                    break;
                }
                const REAL *middle = b + (chunk / 2) * dk, *last = b + (chunk - 1) * dk;
                for (int64_t i = 0; i < dk; i++) {
                    decay[i] = EXP(last[i]);
                    from_start[i] = EXP(middle[i]);                      /* e^m and e^(e − m), both <= 1 */
                    to_end[i] = EXP(last[i] - middle[i]);
                    mid[i] = middle[i];
                }
                memset(k_mid_t, 0, (size_t)(dk * chunk) * sizeof(REAL));
                for (int64_t t = 0; t < rows; t++)
                    NAMED(gla_row, SUFFIX)(b + t * dk, mid, from_start, to_end, qi + t * dk, ki + t * dk,
                                           q_mid + t * dk, k_mid_t + t, chunk, q_start + t * dk, k_end + t * dk, dk);
                NAMED(gemm, SUFFIX)(q_mid, dk, 1, NULL, k_mid_t, NULL, 0, 0, 1, scores, rows, dk, chunk, 0);
                for (int64_t t = 0; t < rows; t++)
                    for (int64_t c = t + 1; c < chunk; c++) scores[t * chunk + c] = 0;
                NAMED(gemm, SUFFIX)(scores, chunk, 1, NULL, vi, NULL, 0, 0, 1, oi, rows, rows, dv, 1);
                NAMED(gemm, SUFFIX)(q_start, dk, 1, NULL, s, oi, dv, 1, 1, oi, rows, dk, dv, 0);
                for (int64_t i = 0; i < dk; i++)
                    for (int64_t n = 0; n < dv; n++) s[i * dv + n] *= decay[i];
                NAMED(gemm, SUFFIX)(k_end, 1, dk, NULL, vi, s, dv, 1, 1, s, dk, rows, dv, 0);
            }
        }
    }
    return too_steep ? 2 : 0;
}

#endif
