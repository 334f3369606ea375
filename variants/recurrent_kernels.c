/* The chunk-parallel recurrences' forwards in C, where autograd records nothing (see _recurrent_kernels.py):

       delta_forward  (deltanet, gated-deltanet)  the whole chunked form (UT transform within each chunk)
       gated_forward  (gla, retnet)               the whole chunked form (one block per chunk)
       diagonal_chain (gla's and retnet's torch   S_{j+1} = a_j ⊙ S_j + B_j, a_j (d_k) scaling S's rows
                       forms, where their gates
                       are too steep for gated_forward)

   In torch a chunked form is a dozen passes over (B, H, N, ·) tensors and
   batched products of small (16–64 row) matrices, whose per-call overhead
   costs more than their arithmetic, and its chain over chunks a batched
   matmul per chunk. Here the sequence·heads are independent, so each
   thread walks whole sequence·heads chunk by chunk, forming a chunk's
   factors, its products and its outputs and carrying the state S
   (d_k × d_v) on, every intermediate in its own L1/L2, with no
   synchronisation between steps; out, final and a per-thread work area are
   all it writes.

   Layouts, all contiguous: q, k (B·H, N, d_k), v and out (B·H, N, d_v),
   per-step scalars (B·H, N), first and final (B·H, d_k, d_v); the diagonal
   chain's a (items, chunks, d_k), b and entering (items, chunks, d_k, d_v).
   Every product goes through `gemm`, whose tiles keep ROWS output rows of
   BLOCK (or BLOCK/2) columns in registers across the inner dimension, with
   fixed trip counts so that the compiler vectorises them (8 × 32 floats or
   4 × 32 doubles: 16 AVX-512 registers). This file includes itself once
   per precision (float, double), with exp and softplus from
   native_common.h. */

#ifndef REAL

#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "native_common.h"

#define BLOCK 32

/* The steps of chunk j: `chunk`, or fewer in the last chunk, cut at seq_len. */
static inline int64_t chunk_rows(int64_t seq_len, int64_t j, int64_t chunk) {
    return seq_len - j * chunk < chunk ? seq_len - j * chunk : chunk;
}

/* The values of `work` one thread of delta_forward and of gated_forward uses (the callers allocate threads
   times this; the kernels lay their per-chunk matrices out in it in the order these sums list them). */
int64_t delta_forward_work(int64_t chunk, int64_t dk, int64_t dv) {
    return 3 * chunk * dk + 3 * chunk * chunk + 2 * chunk * dv + 3 * chunk;
}

int64_t gated_forward_work(int64_t chunk, int64_t dk) {
    return (5 * chunk + 5) * dk + chunk * chunk;
}

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

/* One tile of `gemm`: output rows i … i + ROWS − 1 and columns n0 … n0 + width − 1 (width BLOCK or BLOCK/2,
   a constant once inlined, so that the compiler unrolls and vectorises the columns and keeps the tile in
   registers across the inner dimension, of which the first `reach` indices are read). */
static inline __attribute__((always_inline)) void NAMED(tile, SUFFIX)(
        const REAL *restrict a, int64_t ra, int64_t ca, const REAL *restrict sk, const REAL *restrict s,
        const REAL *b, int64_t rb, REAL beta, REAL alpha, REAL *out, int64_t i, int64_t n0, int64_t reach,
        int64_t dv, const int width) {
    REAL acc[ROWS][BLOCK] = {{0}};
    for (int64_t k = 0; k < reach; k++) {
        const REAL *row = s + k * dv + n0, scale = sk ? sk[k] : 1;
        for (int r = 0; r < ROWS; r++) {
            const REAL weight = a[(i + r) * ra + k * ca] * scale;
            for (int n = 0; n < width; n++) acc[r][n] += weight * row[n];
        }
    }
    for (int r = 0; r < ROWS; r++)
        for (int n = 0; n < width; n++)
            out[(i + r) * dv + n0 + n] = (b ? beta * b[(i + r) * rb + n0 + n] : 0) + alpha * acc[r][n];
}

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
        for (; n0 + BLOCK <= dv; n0 += BLOCK)
            NAMED(tile, SUFFIX)(a, ra, ca, sk, s, b, rb, beta, alpha, out, i, n0, reach, dv, BLOCK);
        if (n0 + BLOCK / 2 <= dv) {
            NAMED(tile, SUFFIX)(a, ra, ca, sk, s, b, rb, beta, alpha, out, i, n0, reach, dv, BLOCK / 2);
            n0 += BLOCK / 2;
        }
        for (int r = 0; r < ROWS; r++)                                  /* the last columns, fewer than BLOCK/2 */
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

/* Sequence·head bh's state, in final: a copy of its first state, or zeros where first is NULL. */
static inline REAL *NAMED(entering_state, SUFFIX)(const REAL *first, REAL *final, int64_t bh, int64_t state) {
    REAL *s = final + bh * state;
    if (first) memcpy(s, first + bh * state, (size_t)state * sizeof(REAL));
    else memset(s, 0, (size_t)state * sizeof(REAL));
    return s;
}

/* The delta rule's chunked forward in one call (DeltaNet; Gated DeltaNet where log_alpha is given). Each
   thread walks whole sequence·heads chunk by chunk with S (d_k × d_v) and every per-chunk matrix in its own
   cache. For chunk j of Q steps, with b_t the cumulative log α since the chunk began (0 without decay),
   Γ_t = e^(b_t), Γ_ts = e^(b_t − b_s) and e its last b:
       T = (I + L)⁻¹ diag(β),  L_ts = β_t (k_t · k_s) Γ_ts for s < t     (the UT transform, by substitution)
       U' = T (V − diag(Γ_t) K S_j)                                      (the pseudo-values)
       o_j = diag(Γ_t) Q S_j + A U',  A_ts = (q_t · k_s) Γ_ts for s <= t
       S_{j+1} = e^e S_j + (K ∘ e^(e − b))ᵀ U'                           (S_0 = first, or 0 where first is NULL)
   q (already scaled), k and v as in gated_forward (the delta rule's q and k L2-normalised by the caller),
   beta and log_alpha (B·H, seq_len); the last chunk is cut at seq_len. final (B·H, d_k, d_v) receives S_c.
   work holds delta_forward_work values per thread. Returns 0, or 1 for a size it cannot take. */
int NAMED(delta_forward, SUFFIX)(const REAL *q, const REAL *k, const REAL *v, const REAL *beta,
                                 const REAL *log_alpha, const REAL *first, REAL *out, REAL *final, REAL *work,
                                 int64_t sequences, int64_t seq_len, int64_t chunk, int64_t dk, int64_t dv,
                                 int64_t threads) {
    if (sequences < 1 || seq_len < 1 || chunk < 1 || dk < 1 || dv < 1) return 1;
    const int64_t state = dk * dv, chunks = (seq_len + chunk - 1) / chunk;
#pragma omp parallel num_threads(thread_count(threads, sequences))
    {
        REAL *k_t = work + (int64_t)omp_get_thread_num() * delta_forward_work(chunk, dk, dv);
        REAL *k_now = k_t + dk * chunk, *q_now = k_now + chunk * dk, *gram = q_now + chunk * dk;
        REAL *t_mat = gram + chunk * chunk, *scores = t_mat + chunk * chunk, *rest = scores + chunk * chunk;
        REAL *pseudo = rest + chunk * dv, *cum = pseudo + chunk * dv, *to_now = cum + chunk, *to_end = to_now + chunk;
#pragma omp for schedule(static)
        for (int64_t bh = 0; bh < sequences; bh++) {
            REAL *s = NAMED(entering_state, SUFFIX)(first, final, bh, state);
            for (int64_t j = 0; j < chunks; j++) {
                const int64_t at = bh * seq_len + j * chunk, rows = chunk_rows(seq_len, j, chunk);
                const REAL *qi = q + at * dk, *ki = k + at * dk, *vi = v + at * dv, *bi = beta + at;
                REAL *oi = out + at * dv;
                for (int64_t t = 0; t < rows; t++) cum[t] = (t ? cum[t - 1] : 0) + (log_alpha ? log_alpha[at + t] : 0);
                const REAL last = cum[rows - 1];
                for (int64_t t = 0; t < rows; t++) {
                    to_now[t] = EXP(cum[t]);
                    to_end[t] = EXP(last - cum[t]);
                }
                memset(k_t, 0, (size_t)(dk * chunk) * sizeof(REAL));
                for (int64_t t = 0; t < rows; t++)
                    for (int64_t i = 0; i < dk; i++) {
                        k_t[i * chunk + t] = ki[t * dk + i];
                        k_now[t * dk + i] = ki[t * dk + i] * to_now[t];
                        q_now[t * dk + i] = qi[t * dk + i] * to_now[t];
                    }
                NAMED(gemm, SUFFIX)(ki, dk, 1, NULL, k_t, NULL, 0, 0, 1, gram, rows, dk, chunk, 0);       /* K Kᵀ */
                NAMED(gemm, SUFFIX)(qi, dk, 1, NULL, k_t, NULL, 0, 0, 1, scores, rows, dk, chunk, 0);     /* Q Kᵀ */
                for (int64_t t = 0; t < rows; t++) {
                    REAL *row = t_mat + t * chunk;
                    for (int64_t c = 0; c < chunk; c++) row[c] = 0;
                    for (int64_t c = 0; c < t; c++) {                    /* row t of T = −Σ_s L_ts T_s, then β_t */
                        const REAL l = bi[t] * gram[t * chunk + c] * EXP(cum[t] - cum[c]);
                        const REAL *above = t_mat + c * chunk;
                        for (int64_t m = 0; m <= c; m++) row[m] -= l * above[m];
                    }
                    row[t] = bi[t];
                    for (int64_t c = 0; c <= t; c++) scores[t * chunk + c] *= EXP(cum[t] - cum[c]);
                    for (int64_t c = t + 1; c < chunk; c++) scores[t * chunk + c] = 0;
                }
                NAMED(gemm, SUFFIX)(k_now, dk, 1, NULL, s, vi, dv, 1, -1, rest, rows, dk, dv, 0);   /* V − Γ K S */
                NAMED(gemm, SUFFIX)(t_mat, chunk, 1, NULL, rest, NULL, 0, 0, 1, pseudo, rows, rows, dv, 1);  /* U' */
                NAMED(gemm, SUFFIX)(q_now, dk, 1, NULL, s, NULL, 0, 0, 1, oi, rows, dk, dv, 0);     /* Γ Q S */
                NAMED(gemm, SUFFIX)(scores, chunk, 1, NULL, pseudo, oi, dv, 1, 1, oi, rows, rows, dv, 1);   /* + A U' */
                NAMED(gemm, SUFFIX)(ki, 1, dk, to_end, pseudo, s, dv, EXP(last), 1, s, dk, rows, dv, 0);
            }
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
   is cut at seq_len. final (B·H, d_k, d_v) receives S_c. work holds gated_forward_work values per
   thread. A chunk whose steepest gate |log α| exceeds `limit` would overflow a factor: its sequence
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
        REAL *b = work + (int64_t)omp_get_thread_num() * gated_forward_work(chunk, dk);
        REAL *q_mid = b + chunk * dk, *k_mid_t = q_mid + chunk * dk, *k_end = k_mid_t + dk * chunk;
        REAL *q_start = k_end + chunk * dk, *scores = q_start + chunk * dk, *zero = scores + chunk * chunk;
        REAL *peak = zero + dk, *from_start = peak + dk, *to_end = from_start + dk, *decay = to_end + dk;
#pragma omp for schedule(static) reduction(| : too_steep)
        for (int64_t bh = 0; bh < sequences; bh++) {
            REAL *s = NAMED(entering_state, SUFFIX)(first, final, bh, state);
            for (int64_t j = 0; j < chunks; j++) {
                const int64_t at = bh * seq_len + j * chunk, rows = chunk_rows(seq_len, j, chunk);
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
                }
                memset(k_mid_t, 0, (size_t)(dk * chunk) * sizeof(REAL));
                for (int64_t t = 0; t < rows; t++)
                    NAMED(gla_row, SUFFIX)(b + t * dk, middle, from_start, to_end, qi + t * dk, ki + t * dk,
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
