/* The sequential part of the chunk-parallel recurrences: the state entering every chunk.

       delta chain    (deltanet, gated-deltanet)   U'_j = U_j − W_j S_j,  S_{j+1} = Γ_j S_j + K̃_jᵀ U'_j
       diagonal chain (gla, retnet)                S_{j+1} = a_j ⊙ S_j + B_j    a_j (d_k), one per row

   with S_j and B_j (d_k × d_v), and for the delta rule W_j, K̃_j (Q × d_k) and
   U_j, U'_j (Q × d_v) from the UT transform (see deltanet.py). Everything
   else in the chunked forms is batched over all chunks at once; this chain
   is the one loop over chunks, and in torch each of its steps is a batched
   matmul of a few small matrices, where per-call overhead (a select, an
   addmm, a copy per sequence·head) costs more than the arithmetic. Here the
   items (one sequence·head each) are independent, so each thread walks
   whole chains of its own items, its S (d_k × d_v) staying in L1/L2, with
   no synchronisation between steps. The delta chain also hands back U'
   (the pseudo-values the outputs read), so the caller needs neither the
   per-chunk transition matrices nor a second product with W.

   Layouts, all contiguous: the diagonal chain's a (items, chunks, d_k) and
   b (items, chunks, d_k, d_v); the delta chain's w, k_end (items, chunks,
   Q, d_k), u, u_new (items, chunks, Q, d_v) and decay (items, chunks) or
   NULL; first (items, d_k, d_v), the state entering chunk 0; entering
   (items, chunks, d_k, d_v) receives S_0 … S_{c−1} and final (items, d_k,
   d_v) S_c. The inner loops run over d_v in blocks of BLOCK with a fixed
   trip count so that the compiler vectorises them and keeps ROWS output
   rows in registers across a product's inner dimension. This file includes
   itself once per precision (float, double). */

#ifndef REAL

#include <omp.h>
#include <stdint.h>
#include <string.h>

#define BLOCK 32
#define ROWS 4

static int64_t thread_count(int64_t threads, int64_t items) {
    threads = threads < 1 ? 1 : threads;
    return threads > items ? items : threads;
}

#define GLUE(a, b) a##_##b
#define NAMED(a, b) GLUE(a, b)

#define REAL float
#define SUFFIX f32
#include "state_chain.c"
#undef REAL
#undef SUFFIX

#define REAL double
#define SUFFIX f64
#include "state_chain.c"

#else  /* the kernels, once per precision */

/* out (rows × dv) = β b + α A s, A (rows × inner) read through its strides (ra between rows, ca between
   columns, so Aᵀ of a stored matrix is a stride swap), s (inner × dv), b and out with rows of dv. */
static void NAMED(gemm, SUFFIX)(const REAL *restrict a, int64_t ra, int64_t ca, const REAL *restrict s,
                                const REAL *restrict b, REAL beta, REAL alpha, REAL *restrict out,
                                int64_t rows, int64_t inner, int64_t dv) {
    int64_t i = 0;
    for (; i + ROWS <= rows; i += ROWS) {
        int64_t n0 = 0;
        for (; n0 + BLOCK <= dv; n0 += BLOCK) {
            REAL acc[ROWS][BLOCK];
            for (int r = 0; r < ROWS; r++)
                for (int n = 0; n < BLOCK; n++) acc[r][n] = 0;
            for (int64_t k = 0; k < inner; k++) {
                const REAL *row = s + k * dv + n0;
                for (int r = 0; r < ROWS; r++) {
                    const REAL weight = a[(i + r) * ra + k * ca];
                    for (int n = 0; n < BLOCK; n++) acc[r][n] += weight * row[n];
                }
            }
            for (int r = 0; r < ROWS; r++)
                for (int n = 0; n < BLOCK; n++)
                    out[(i + r) * dv + n0 + n] = beta * b[(i + r) * dv + n0 + n] + alpha * acc[r][n];
        }
        for (int r = 0; r < ROWS; r++)                                  /* the last columns, fewer than BLOCK */
            for (int64_t n = n0; n < dv; n++) {
                REAL sum = 0;
                for (int64_t k = 0; k < inner; k++) sum += a[(i + r) * ra + k * ca] * s[k * dv + n];
                out[(i + r) * dv + n] = beta * b[(i + r) * dv + n] + alpha * sum;
            }
    }
    for (; i < rows; i++)                                                /* the last rows, fewer than ROWS */
        for (int64_t n = 0; n < dv; n++) {
            REAL sum = 0;
            for (int64_t k = 0; k < inner; k++) sum += a[i * ra + k * ca] * s[k * dv + n];
            out[i * dv + n] = beta * b[i * dv + n] + alpha * sum;
        }
}

/* The delta rule's chain: for every item and chunk j, with W_j, K̃_j (Q × d_k) and U_j (Q × d_v),
       U'_j = U_j − W_j S_j          (the chunk's pseudo-values, written to u_new)
       S_{j+1} = Γ_j S_j + K̃_jᵀ U'_j  (Γ_j the chunk's total decay; 1 where decay is NULL)
   Returns 0, or 1 for a size it cannot take. */
int NAMED(delta_chain, SUFFIX)(const REAL *w, const REAL *u, const REAL *k_end, const REAL *decay, const REAL *first,
                               REAL *entering, REAL *final, REAL *u_new, int64_t items, int64_t chunks,
                               int64_t chunk, int64_t dk, int64_t dv, int64_t threads) {
    if (items < 1 || chunks < 1 || chunk < 1 || dk < 1 || dv < 1) return 1;
    const int64_t keys = chunk * dk, values = chunk * dv, state = dk * dv;
#pragma omp parallel for schedule(static) num_threads(thread_count(threads, items))
    for (int64_t item = 0; item < items; item++) {
        REAL *s = entering + item * chunks * state;
        memcpy(s, first + item * state, (size_t)state * sizeof(REAL));
        for (int64_t j = 0; j < chunks; j++) {
            const int64_t at = item * chunks + j;
            REAL *now = s + j * state, *next = j + 1 < chunks ? now + state : final + item * state;
            REAL *pseudo = u_new + at * values;
            NAMED(gemm, SUFFIX)(w + at * keys, dk, 1, now, u + at * values, 1, -1, pseudo, chunk, dk, dv);
            NAMED(gemm, SUFFIX)(k_end + at * keys, 1, dk, pseudo, now, decay ? decay[at] : 1, 1, next, dk, chunk, dv);
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

#endif
