# cython: language_level=3
"""Multithreaded top-K over a block of query vectors times the item factors.

Scores are computed tile by tile (users x items) with GEMM into a small
per-thread buffer, and each user keeps a running top-K heap, so memory stays
bounded however many users are asked for.  Once a heap is full, a vector scan
(AVX-512 or AVX2 compares of 16 or 8 scores) skips every score below its root,
so selection costs a fraction of the GEMM.  Filters are checked only for
scores that would enter the heap, so they cost almost nothing:

* seen items: a sorted CSR row per query, searched by bisection;
* a global exclusion mask over items;
* a candidate subset: the caller passes the gathered candidate rows and the
  map from local position to item id.

Exact pruning: the caller may pass the item rows sorted by norm (descending),
a unit direction e (the items' dominant direction) and, for every position,
suffix bounds over the rows from there on: max and min of y.e and max of
|y_perp| (the part of y orthogonal to e).  For a query q with q.e = a and
orthogonal part of norm p, every remaining score is at most
max(a * max_e, a * min_e) + p * max_perp, which is much tighter than
Cauchy-Schwarz because trained factors share a strong popularity direction.
A block of queries stops as soon as every query's k-th best score beats that
bound; on trained factors the scan typically ends after a few percent of the
catalogue.

``topk_codes`` replaces the float32 GEMM by exact integer dots of 8-bit query
codes with 7-bit item codes (VNNI ``vpdpbusd`` or ``vpmaddubsw``), which bound
every score from above; only items whose bound reaches a query's k-th best so
far are scored in float32, so its answers are the float scan's.

Ordering is deterministic: score descending, ties broken by the lower item id.
Rows with fewer than k eligible items are padded with id -1 and score -inf.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport INFINITY, NAN, sqrt, fabs, lrintf
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy
from scipy.linalg.cython_blas cimport sgemm, dgemm
cimport numpy as cnp

cnp.import_array()

include "_common.pxi"
include "_heap.pxi"

ctypedef fused index_t:
    int
    long long

cdef extern from *:
    """
    #include <immintrin.h>
    #include <stdint.h>
    /* The first j in [j, n) whose score row[j] (+ bias[j]) is >= thr, or n.  The
       vector compare sees the same float sums as the scalar code that follows. */
    static inline int fr_topk_next(const float *row, const float *bias, int j, int n, float thr) {
    #if defined(__AVX512F__)
        __m512 t = _mm512_set1_ps(thr);
        for (; j + 16 <= n; j += 16) {
            __m512 s = _mm512_loadu_ps(row + j);
            if (bias) s = _mm512_add_ps(s, _mm512_loadu_ps(bias + j));
            __mmask16 m = _mm512_cmp_ps_mask(s, t, _CMP_GE_OQ);
            if (m) return j + __builtin_ctz((unsigned) m);
        }
    #elif defined(__AVX2__)
        __m256 t = _mm256_set1_ps(thr);
        for (; j + 8 <= n; j += 8) {
            __m256 s = _mm256_loadu_ps(row + j);
            if (bias) s = _mm256_add_ps(s, _mm256_loadu_ps(bias + j));
            int m = _mm256_movemask_ps(_mm256_cmp_ps(s, t, _CMP_GE_OQ));
            if (m) return j + __builtin_ctz((unsigned) m);
        }
    #endif
        for (; j < n; j++) {
            float s = row[j];
            if (bias) s += bias[j];
            if (s >= thr) return j;
        }
        return n;
    }

    static inline int fr_ctz64(unsigned long long x) { return __builtin_ctzll(x); }

    /* ---- int8 codes for a batch of queries (topk_codes) ----
       Items: 7-bit signed codes (|c| <= 63) packed in groups of 16 items, each group
       F4 quads of 64 bytes (16 items x 4 codes). Queries: 8-bit codes + 128 (unsigned),
       one int32 per quad.  acc = sum (qc + 128) * c = qc . c + 128 sum c: exact in int32,
       and vpmaddubsw never saturates (2 * 255 * 63 < 32767).  The AVX2 build rounds queries to
       7-bit codes + 64 instead (FR_QMAX, FR_QOFF): two vpmaddubsw results then add in 16 bits
       (2 * 2 * 127 * 63 < 32767) before one vpmaddwd, a quarter fewer multiply instructions
       where there is no VNNI; its corr is then 64 sum c, half the stored 128 sum c. */
    #if defined(__AVX2__) && !defined(__AVX512BW__)
    #define FR_HEAD 1  /* the head/tail split of the tile (no VNNI here) */
    #define FR_QMAX 63
    #define FR_QOFF 64
    #define FR_CORR_SHIFT 1
    #else
    #define FR_HEAD 0
    #define FR_QMAX 127
    #define FR_QOFF 128
    #define FR_CORR_SHIFT 0
    #endif
    static inline void fr_ub_store16(const int *acc, int col, const float *isc, const int *icorr,
                                     const float *ierr, const float *inorm, const float *ibias,
                                     float qs, float qa, float qb, float *out, float thr,
                                     unsigned long long *flag) {
        for (int t = 0; t < 16; t++) {
            float v = (float)(acc[t] - icorr[col + t]) * (qs * isc[col + t]);
            v = v + qa * ierr[col + t];
            v = v + qb * inorm[col + t];
            if (ibias) v = v + ibias[col + t];
            out[col + t] = v;
            if (v >= thr) *flag |= 1ULL << ((col + t) >> 3);
        }
    }
    #if defined(__AVX512BW__)
    static inline void fr_ub_epi512(__m512i a, int col, const float *isc, const int *icorr,
                                    const float *ierr, const float *inorm, const float *ibias,
                                    float qs, float qa, float qb, float *out, float thr,
                                    unsigned long long *flag, int branchless) {
        __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(a, _mm512_loadu_si512((const void *)(icorr + col))));
        v = _mm512_mul_ps(v, _mm512_mul_ps(_mm512_set1_ps(qs), _mm512_loadu_ps(isc + col)));
        v = _mm512_fmadd_ps(_mm512_set1_ps(qa), _mm512_loadu_ps(ierr + col), v);
        v = _mm512_fmadd_ps(_mm512_set1_ps(qb), _mm512_loadu_ps(inorm + col), v);
        if (ibias) v = _mm512_add_ps(v, _mm512_loadu_ps(ibias + col));
        __mmask16 m = _mm512_cmp_ps_mask(v, _mm512_set1_ps(thr), _CMP_GE_OQ);
        if (branchless || m) {  /* rare once the heap is full: the rest is never stored nor read */
            _mm512_storeu_ps(out + col, v);  /* (one query's row: storing costs less than the branch) */
            *flag |= (unsigned long long)((m & 0xff) != 0) << (col >> 3)
                     | (unsigned long long)((m >> 8) != 0) << ((col >> 3) + 1);
        }
    }
    #define FR_R 8
    /* FR_R queries against a pair of 16-row groups: acc[2r], acc[2r + 1] */
    #define FR_STEP(DP, r) u = _mm512_set1_epi32(U[(r) * F4 + k]); a##r = DP(a##r, u, y0); b##r = DP(b##r, u, y1);
    #define FR_ROWS_BODY(DP)                                                                     \
        __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;  \
        __m512i b0 = a0, b1 = a0, b2 = a0, b3 = a0, b4 = a0, b5 = a0, b6 = a0, b7 = a0;           \
        for (int k = 0; k < F4; k++) {                                                           \
            __m512i y0 = _mm512_loadu_si512((const void *)(p0 + (size_t)k * 64));                 \
            __m512i y1 = _mm512_loadu_si512((const void *)(p1 + (size_t)k * 64));                 \
            __m512i u;                                                                           \
            FR_STEP(DP, 0) FR_STEP(DP, 1) FR_STEP(DP, 2) FR_STEP(DP, 3)                          \
            FR_STEP(DP, 4) FR_STEP(DP, 5) FR_STEP(DP, 6) FR_STEP(DP, 7)                          \
        }                                                                                        \
        acc[0] = a0; acc[1] = b0; acc[2] = a1; acc[3] = b1; acc[4] = a2; acc[5] = b2; acc[6] = a3; acc[7] = b3;  \
        acc[8] = a4; acc[9] = b4; acc[10] = a5; acc[11] = b5; acc[12] = a6; acc[13] = b6; acc[14] = a7; acc[15] = b7;
    /* One query against every group of the tile (ng2 pairs), bounds written straight to out:
       four groups in flight, so the chains of dependent dot steps overlap. */
    #define FR_ROW_BODY(DP)                                                                      \
        int g = 0;                                                                               \
        for (; g + 4 <= 2 * ng2; g += 4) {                                                       \
            const signed char *p0 = P + (size_t)g * F4 * 64;                                     \
            const signed char *p1 = p0 + (size_t)F4 * 64, *p2 = p1 + (size_t)F4 * 64;            \
            const signed char *p3 = p2 + (size_t)F4 * 64;                                        \
            __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;                      \
            for (int k = 0; k < F4; k++) {                                                       \
                __m512i u = _mm512_set1_epi32(U[k]);                                             \
                a0 = DP(a0, u, _mm512_loadu_si512((const void *)(p0 + (size_t)k * 64)));          \
                a1 = DP(a1, u, _mm512_loadu_si512((const void *)(p1 + (size_t)k * 64)));          \
                a2 = DP(a2, u, _mm512_loadu_si512((const void *)(p2 + (size_t)k * 64)));          \
                a3 = DP(a3, u, _mm512_loadu_si512((const void *)(p3 + (size_t)k * 64)));          \
            }                                                                                    \
            fr_ub_epi512(a0, 16 * g, isc, icorr, ierr, inorm, ibias, qs, qa, qb, out, thr, flag, 1);           \
            fr_ub_epi512(a1, 16 * g + 16, isc, icorr, ierr, inorm, ibias, qs, qa, qb, out, thr, flag, 1);      \
            fr_ub_epi512(a2, 16 * g + 32, isc, icorr, ierr, inorm, ibias, qs, qa, qb, out, thr, flag, 1);      \
            fr_ub_epi512(a3, 16 * g + 48, isc, icorr, ierr, inorm, ibias, qs, qa, qb, out, thr, flag, 1);      \
        }                                                                                        \
        for (; g < 2 * ng2; g++) {                                                               \
            const signed char *p0 = P + (size_t)g * F4 * 64;                                     \
            __m512i a0 = _mm512_setzero_si512(), a1 = a0;                                        \
            int k = 0;                                                                           \
            for (; k + 2 <= F4; k += 2) {                                                        \
                a0 = DP(a0, _mm512_set1_epi32(U[k]), _mm512_loadu_si512((const void *)(p0 + (size_t)k * 64)));  \
                a1 = DP(a1, _mm512_set1_epi32(U[k + 1]), _mm512_loadu_si512((const void *)(p0 + (size_t)(k + 1) * 64)));  \
            }                                                                                    \
            if (k < F4) a0 = DP(a0, _mm512_set1_epi32(U[k]), _mm512_loadu_si512((const void *)(p0 + (size_t)k * 64)));  \
            fr_ub_epi512(_mm512_add_epi32(a0, a1), 16 * g, isc, icorr, ierr, inorm, ibias, qs, qa, qb, out, thr, flag, 1);  \
        }
    #define FR_DP_VNNI(a, u, y) _mm512_dpbusd_epi32(a, u, y)
    #define FR_DP_BW(a, u, y) _mm512_add_epi32(a, _mm512_madd_epi16(_mm512_maddubs_epi16(u, y), ones))
    __attribute__((target("avx512vnni")))
    static void fr_rows_vnni(const int *U, int F4, const signed char *p0, const signed char *p1, __m512i *acc) {
        FR_ROWS_BODY(FR_DP_VNNI)
    }
    static void fr_rows_bw(const int *U, int F4, const signed char *p0, const signed char *p1, __m512i *acc) {
        const __m512i ones = _mm512_set1_epi16(1);
        FR_ROWS_BODY(FR_DP_BW)
    }
    __attribute__((target("avx512vnni")))
    static void fr_row_vnni(const int *U, int F4, const signed char *P, int ng2, float qs, float qa, float qb,
                            const float *isc, const int *icorr, const float *ierr, const float *inorm,
                            const float *ibias, float *out, float thr, unsigned long long *flag) {
        FR_ROW_BODY(FR_DP_VNNI)
    }
    static void fr_row_bw(const int *U, int F4, const signed char *P, int ng2, float qs, float qa, float qb,
                          const float *isc, const int *icorr, const float *ierr, const float *inorm,
                          const float *ibias, float *out, float thr, unsigned long long *flag) {
        const __m512i ones = _mm512_set1_epi16(1);
        FR_ROW_BODY(FR_DP_BW)
    }
    #elif defined(__AVX2__)
    #define FR_R 4
    static inline void fr_ub_epi256(__m256i a, int col, const float *isc, const int *icorr,
                                    const float *ierr, const float *inorm, const float *ibias,
                                    float qs, float qa, float qb, float *out, float thr,
                                    unsigned long long *flag) {
        __m256 v = _mm256_cvtepi32_ps(_mm256_sub_epi32(
            a, _mm256_srai_epi32(_mm256_loadu_si256((const __m256i *)(icorr + col)), FR_CORR_SHIFT)));
        v = _mm256_mul_ps(v, _mm256_mul_ps(_mm256_set1_ps(qs), _mm256_loadu_ps(isc + col)));
        v = _mm256_fmadd_ps(_mm256_set1_ps(qa), _mm256_loadu_ps(ierr + col), v);
        v = _mm256_fmadd_ps(_mm256_set1_ps(qb), _mm256_loadu_ps(inorm + col), v);
        if (ibias) v = _mm256_add_ps(v, _mm256_loadu_ps(ibias + col));
        if (_mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_set1_ps(thr), _CMP_GE_OQ))) {
            _mm256_storeu_ps(out + col, v);
            *flag |= 1ULL << (col >> 3);
        }
    }
    static inline __m256i fr_dp_avx2(__m256i a, __m256i u, __m256i y, __m256i ones) {
        return _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_maddubs_epi16(u, y), ones));
    }
    /* acc += one query's products with a quad pair of 8 rows (quad y, quad z; 7-bit query codes,
       FR_QMAX 63): the two quads' products add in 16 bits, one vpmaddwd widens them.  The codes
       are read where they are used (a memory operand of vpmaddubsw, from L1), so fr_rows_avx2's 8
       accumulators, the two broadcast query words, two temporaries and the ones fit AVX2's 16
       registers without spills. */
    #define FR_PAIR_AVX2(acc, u, v, y, z) \
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_add_epi16( \
            _mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i *)(y))), \
            _mm256_maddubs_epi16(v, _mm256_loadu_si256((const __m256i *)(z)))), ones));
    /* Quad k of the 4 queries rows[0..3] (rows of U, F4 quads each) against 16 rows, added to
       acc[2 rows[i]], acc[2 rows[i] + 1] (its own function: in the pair loop's, the extra live
       values made GCC spill accumulators to the stack). */
    __attribute__((noinline))
    static void fr_rows_tail_avx2(const int *U, int F4, const int *rows, size_t k, const signed char *p0,
                                  __m256i *acc) {
        const __m256i ones = _mm256_set1_epi16(1);
        __m256i y0 = _mm256_loadu_si256((const __m256i *)(p0 + k * 64));
        __m256i y1 = _mm256_loadu_si256((const __m256i *)(p0 + k * 64 + 32));
        for (int r = 0; r < 4; r++) {
            __m256i u = _mm256_set1_epi32(U[(size_t)rows[r] * F4 + k]);
            __m256i *c = acc + 2 * (size_t)rows[r];
            c[0] = fr_dp_avx2(c[0], u, y0, ones);
            c[1] = fr_dp_avx2(c[1], u, y1, ones);
        }
    }
    /* The queries rows[0..n_rows) (n_rows a multiple of 4) against 16 rows over quads [k0, k1), four
       at a time, added to acc[2 rows[i]] (rows 0-7) and acc[2 rows[i] + 1] (or written there,
       from_zero).  Not inlined: inside fr_i8_tile three accumulators went to the stack. */
    __attribute__((noinline))
    static void fr_rows_avx2(const int *U, int F4, const int *rows_all, int n_rows, int k0, int k1,
                             const signed char *p0, __m256i *acc, int from_zero) {
      const __m256i ones = _mm256_set1_epi16(1);
      for (int blk = 0; blk + 4 <= n_rows; blk += 4) {
        const int *rows = rows_all + blk;
        const int *q0 = U + (size_t)rows[0] * F4, *q1 = U + (size_t)rows[1] * F4;
        const int *q2 = U + (size_t)rows[2] * F4, *q3 = U + (size_t)rows[3] * F4;
        __m256i *c0 = acc + 2 * (size_t)rows[0], *c1 = acc + 2 * (size_t)rows[1];
        __m256i *c2 = acc + 2 * (size_t)rows[2], *c3 = acc + 2 * (size_t)rows[3];
        __m256i a0, b0, a1, b1, a2, b2, a3, b3;
        if (from_zero) {
            a0 = _mm256_setzero_si256(); b0 = a0; a1 = a0; b1 = a0; a2 = a0; b2 = a0; a3 = a0; b3 = a0;
        } else {
            a0 = c0[0]; b0 = c0[1]; a1 = c1[0]; b1 = c1[1]; a2 = c2[0]; b2 = c2[1]; a3 = c3[0]; b3 = c3[1];
        }
        size_t k = (size_t)k0, end = (size_t)k1;
        for (; k + 2 <= end; k += 2) {
            const signed char *pk = p0 + k * 64;
            __m256i u, v;
            u = _mm256_set1_epi32(q0[k]); v = _mm256_set1_epi32(q0[k + 1]);
            FR_PAIR_AVX2(a0, u, v, pk, pk + 64) FR_PAIR_AVX2(b0, u, v, pk + 32, pk + 96)
            u = _mm256_set1_epi32(q1[k]); v = _mm256_set1_epi32(q1[k + 1]);
            FR_PAIR_AVX2(a1, u, v, pk, pk + 64) FR_PAIR_AVX2(b1, u, v, pk + 32, pk + 96)
            u = _mm256_set1_epi32(q2[k]); v = _mm256_set1_epi32(q2[k + 1]);
            FR_PAIR_AVX2(a2, u, v, pk, pk + 64) FR_PAIR_AVX2(b2, u, v, pk + 32, pk + 96)
            u = _mm256_set1_epi32(q3[k]); v = _mm256_set1_epi32(q3[k + 1]);
            FR_PAIR_AVX2(a3, u, v, pk, pk + 64) FR_PAIR_AVX2(b3, u, v, pk + 32, pk + 96)
        }
        c0[0] = a0; c0[1] = b0; c1[0] = a1; c1[1] = b1; c2[0] = a2; c2[1] = b2; c3[0] = a3; c3[1] = b3;
        if (k < end) fr_rows_tail_avx2(U, F4, rows, k, p0, acc);
      }
    }
    /* One query (Ur) against 16 rows over quads [k0, k1), added to acc[0] (rows 0-7), acc[1]. */
    __attribute__((noinline))
    static void fr_row16_avx2(const int *Ur, int k0, int k1, const signed char *p0, __m256i *acc) {
        const __m256i ones = _mm256_set1_epi16(1);
        __m256i a = acc[0], b = acc[1];
        size_t k = (size_t)k0, end = (size_t)k1;
        for (; k + 2 <= end; k += 2) {
            const signed char *pk = p0 + k * 64;
            __m256i u = _mm256_set1_epi32(Ur[k]), v = _mm256_set1_epi32(Ur[k + 1]);
            FR_PAIR_AVX2(a, u, v, pk, pk + 64) FR_PAIR_AVX2(b, u, v, pk + 32, pk + 96)
        }
        if (k < end) {
            __m256i u = _mm256_set1_epi32(Ur[k]);
            a = fr_dp_avx2(a, u, _mm256_loadu_si256((const __m256i *)(p0 + k * 64)), ones);
            b = fr_dp_avx2(b, u, _mm256_loadu_si256((const __m256i *)(p0 + k * 64 + 32)), ones);
        }
        acc[0] = a; acc[1] = b;
    }
    /* For each query r < nu and run of 8 rows g < ng, the least value of isc[i] x_i (x_i: row i's
       head dot less its correction) at which row i's head bound can reach thr[r], written to
       tau[r * 64 + g]: the head bound qs isc[i] x_i + qa ierr[i] + qb inorm[i] + qt itail[i] + bias[i]
       is at most qs isc[i] x_i + (the run's largest error terms); -inf where every row may reach
       (a heap not yet full, a zero query).  Rounded down by a margin far above float32's errors. */
    static void fr_head_tau(int nu, int ng, const float *ierr, const float *inorm, const float *itail,
                            const float *ibias, const float *qs, const float *qa, const float *qb, const float *qt,
                            const float *thr, float *tau) {
        float ge[64], gn[64], gt[64], gb[64], gabs[64];
        for (int g = ng; g < 64; g++) ge[g] = gn[g] = gt[g] = gb[g] = gabs[g] = 0;
        for (int g = 0; g < ng; g++) {
            float e = 0, nm = 0, t = 0, b = -INFINITY, ab = 0;
            for (int j = 8 * g; j < 8 * g + 8; j++) {
                e = fmaxf(e, ierr[j]); nm = fmaxf(nm, inorm[j]); t = fmaxf(t, itail[j]);
                if (ibias) { b = fmaxf(b, ibias[j]); ab = fmaxf(ab, fabsf(ibias[j])); }
            }
            ge[g] = e; gn[g] = nm; gt[g] = t; gb[g] = ibias ? b : 0; gabs[g] = ab;
        }
        for (int r = 0; r < nu; r++) {
            float *out = tau + (size_t)r * 64;
            if (!(qs[r] > 0) || !(thr[r] > -INFINITY)) {
                for (int g = 0; g < ng; g++) out[g] = -INFINITY;
                continue;
            }
            const __m256 inv = _mm256_set1_ps(1.0f / qs[r]), a = _mm256_set1_ps(qa[r]);
            const __m256 b = _mm256_set1_ps(qb[r]), t = _mm256_set1_ps(qt[r]), th = _mm256_set1_ps(thr[r]);
            const __m256 margin = _mm256_set1_ps(0x1p-18f), sign = _mm256_set1_ps(-0.0f);
            for (int g = 0; g < ng; g += 8) {  /* up to 64 runs: the rows past ng are zeros */
                __m256 slack = _mm256_fmadd_ps(a, _mm256_loadu_ps(ge + g), _mm256_fmadd_ps(
                    b, _mm256_loadu_ps(gn + g), _mm256_mul_ps(t, _mm256_loadu_ps(gt + g))));
                __m256 s = _mm256_fmadd_ps(_mm256_add_ps(slack, _mm256_loadu_ps(gabs + g)), margin,
                                           _mm256_add_ps(slack, _mm256_loadu_ps(gb + g)));  /* rounded up */
                __m256 v = _mm256_mul_ps(_mm256_sub_ps(th, s), inv);
                v = _mm256_fnmadd_ps(_mm256_andnot_ps(sign, v), margin, v);  /* rounded down */
                _mm256_storeu_ps(out + g, v);
            }
        }
    }
    /* One query against every group (2 ng2 of them), bounds written straight to out: two groups
       (four chains) in flight. */
    static void fr_row_avx2(const int *U, int F4, const signed char *P, int ng2, float qs, float qa, float qb,
                            const float *isc, const int *icorr, const float *ierr, const float *inorm,
                            const float *ibias, float *out, float thr, unsigned long long *flag) {
        const __m256i ones = _mm256_set1_epi16(1);
        for (int g = 0; g < 2 * ng2; g += 2) {
            const signed char *p0 = P + (size_t)g * F4 * 64, *p1 = p0 + (size_t)F4 * 64;
            __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
            int k = 0;
            for (; k + 2 <= F4; k += 2) {
                __m256i u = _mm256_set1_epi32(U[k]), v = _mm256_set1_epi32(U[k + 1]);
                const signed char *q0 = p0 + (size_t)k * 64, *q1 = p1 + (size_t)k * 64;
                FR_PAIR_AVX2(a0, u, v, q0, q0 + 64) FR_PAIR_AVX2(a1, u, v, q0 + 32, q0 + 96)
                FR_PAIR_AVX2(a2, u, v, q1, q1 + 64) FR_PAIR_AVX2(a3, u, v, q1 + 32, q1 + 96)
            }
            if (k < F4) {
                __m256i u = _mm256_set1_epi32(U[k]);
                a0 = fr_dp_avx2(a0, u, _mm256_loadu_si256((const __m256i *)(p0 + (size_t)k * 64)), ones);
                a1 = fr_dp_avx2(a1, u, _mm256_loadu_si256((const __m256i *)(p0 + (size_t)k * 64 + 32)), ones);
                a2 = fr_dp_avx2(a2, u, _mm256_loadu_si256((const __m256i *)(p1 + (size_t)k * 64)), ones);
                a3 = fr_dp_avx2(a3, u, _mm256_loadu_si256((const __m256i *)(p1 + (size_t)k * 64 + 32)), ones);
            }
            fr_ub_epi256(a0, 16 * g, isc, icorr, ierr, inorm, ibias, qs, qa, qb, out, thr, flag);
            fr_ub_epi256(a1, 16 * g + 8, isc, icorr, ierr, inorm, ibias, qs, qa, qb, out, thr, flag);
            fr_ub_epi256(a2, 16 * g + 16, isc, icorr, ierr, inorm, ibias, qs, qa, qb, out, thr, flag);
            fr_ub_epi256(a3, 16 * g + 24, isc, icorr, ierr, inorm, ibias, qs, qa, qb, out, thr, flag);
        }
    }
    #else
    #define FR_R 1
    #endif

    /* Upper bounds of the scores of nu queries (U: nu x F4 quads) against ng2 pairs of
       16-item groups starting at P.  Query r's bounds are written to out[r * ldo + j], j < 32 * ng2,
       only in the runs of 8 rows (j / 8 = c) with a bound >= thr[r], each marked by bit c of
       flags[r]; the others are left unwritten (the caller reads flagged runs only).  A full heap
       sees few such runs, so the scan stores and rereads almost nothing. */
    static void fr_i8_tile(const int *U, int nu, int F4, const signed char *P, int ng2,
                           const float *qs, const float *qa, const float *qb,
                           const float *isc, const int *icorr, const float *ierr, const float *inorm,
                           const float *ibias, float *out, int ldo, const float *thr,
                           unsigned long long *flags, const int *ichead, const float *itail, const float *qt,
                           int H4, void *work_space, int *need, int vnni) {
        int full = nu - nu % FR_R;
        for (int r = 0; r < nu; r++) flags[r] = 0;
    #if defined(__AVX512BW__) || defined(__AVX2__)
        for (int r = full; r < nu; r++) {  /* the last few queries, one at a time */
            const int *Ur = U + (size_t)r * F4;
            float *o = out + (size_t)r * ldo;
    #if defined(__AVX512BW__)
            if (vnni) fr_row_vnni(Ur, F4, P, ng2, qs[r], qa[r], qb[r], isc, icorr, ierr, inorm, ibias, o, thr[r], flags + r);
            else fr_row_bw(Ur, F4, P, ng2, qs[r], qa[r], qb[r], isc, icorr, ierr, inorm, ibias, o, thr[r], flags + r);
    #else
            fr_row_avx2(Ur, F4, P, ng2, qs[r], qa[r], qb[r], isc, icorr, ierr, inorm, ibias, o, thr[r], flags + r);
    #endif
        }
    #endif
    #if defined(__AVX512BW__)
        (void)ichead; (void)itail; (void)qt; (void)H4; (void)work_space; (void)need;  /* no head here */
        for (int g = 0; g < ng2; g++) {  /* pairs of 16-row groups x FR_R queries */
            const signed char *p0 = P + (size_t)(2 * g) * F4 * 64;
            const signed char *p1 = p0 + (size_t)F4 * 64;
            for (int r0 = 0; r0 < full; r0 += FR_R) {
                __m512i acc[16];
                if (vnni) fr_rows_vnni(U + (size_t)r0 * F4, F4, p0, p1, acc);
                else fr_rows_bw(U + (size_t)r0 * F4, F4, p0, p1, acc);
                for (int r = 0; r < FR_R; r++) {
                    float *o = out + (size_t)(r0 + r) * ldo;
                    fr_ub_epi512(acc[2 * r], 32 * g, isc, icorr, ierr, inorm, ibias, qs[r0 + r], qa[r0 + r], qb[r0 + r], o, thr[r0 + r], flags + r0 + r, 0);
                    fr_ub_epi512(acc[2 * r + 1], 32 * g + 16, isc, icorr, ierr, inorm, ibias, qs[r0 + r], qa[r0 + r], qb[r0 + r], o, thr[r0 + r], flags + r0 + r, 0);
                }
            }
        }
    #elif defined(__AVX2__)
        /* the head's dots of every query with a group: 2 vectors each, 64-byte aligned */
        __m256i *work = (__m256i *)(((uintptr_t)work_space + 63) & ~(uintptr_t)63);
        float *tau = (float *)(work + 2 * (size_t)nu);
        const int head = H4 > 0 && H4 < F4;
        int *every = need + nu;
        for (int r = 0; r < full; r++) every[r] = r;
        if (head && full > 0) fr_head_tau(full, 4 * ng2, ierr, inorm, itail, ibias, qs, qa, qb, qt, thr, tau);
        for (int g = 0; g < (full > 0 ? 2 * ng2 : 0); g++) {  /* 16-row groups x FR_R queries (if any) */
            const signed char *p0 = P + (size_t)g * F4 * 64;
            /* every query's dots over the head (or all quads); then, with a head, the tails, four
               queries at a time, of the queries whose head bound still reaches their threshold */
            fr_rows_avx2(U, F4, every, full, 0, head ? H4 : F4, p0, work, 1);
            const int *kept = every;
            int n_kept = full;
            if (head) {
                const __m256i ch0 = _mm256_srai_epi32(_mm256_loadu_si256((const __m256i *)(ichead + 16 * g)), FR_CORR_SHIFT);
                const __m256i ch1 = _mm256_srai_epi32(_mm256_loadu_si256((const __m256i *)(ichead + 16 * g + 8)), FR_CORR_SHIFT);
                const __m256 sc0 = _mm256_loadu_ps(isc + 16 * g), sc1 = _mm256_loadu_ps(isc + 16 * g + 8);
                n_kept = 0;
                for (int r = 0; r < full; r++) {  /* may a row of the group reach thr[r]? (no branch) */
                    const float *tr = tau + (size_t)r * 64 + 2 * g;
                    __m256 v0 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(work[2 * r], ch0)), sc0);
                    __m256 v1 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(work[2 * r + 1], ch1)), sc1);
                    need[n_kept] = r;
                    n_kept += _mm256_movemask_ps(_mm256_or_ps(_mm256_cmp_ps(v0, _mm256_set1_ps(tr[0]), _CMP_GE_OQ),
                                                              _mm256_cmp_ps(v1, _mm256_set1_ps(tr[1]), _CMP_GE_OQ))) != 0;
                }
                int i = n_kept - n_kept % 4;
                fr_rows_avx2(U, F4, need, i, H4, F4, p0, work, 0);
                for (; i < n_kept; i++) fr_row16_avx2(U + (size_t)need[i] * F4, H4, F4, p0, work + 2 * need[i]);
                kept = need;
            }
            for (int i = 0; i < n_kept; i++) {  /* the others are out of reach: nothing stored, nothing flagged */
                int r = kept[i];
                float *o = out + (size_t)r * ldo;
                fr_ub_epi256(work[2 * r], 16 * g, isc, icorr, ierr, inorm, ibias, qs[r], qa[r], qb[r], o, thr[r], flags + r);
                fr_ub_epi256(work[2 * r + 1], 16 * g + 8, isc, icorr, ierr, inorm, ibias, qs[r], qa[r], qb[r], o, thr[r], flags + r);
            }
        }
    #else
        (void)full; (void)vnni; (void)ichead; (void)itail; (void)qt; (void)H4; (void)work_space; (void)need;
        for (int r = 0; r < nu; r++) {  /* portable build: plain loops */
            const unsigned char *u = (const unsigned char *)(U + (size_t)r * F4);
            for (int g = 0; g < 2 * ng2; g++) {
                const signed char *p0 = P + (size_t)g * F4 * 64;
                int tmp[16];
                for (int t = 0; t < 16; t++) tmp[t] = 0;
                for (int k = 0; k < F4; k++)
                    for (int t = 0; t < 16; t++)
                        for (int e = 0; e < 4; e++)
                            tmp[t] += u[4 * k + e] * p0[(size_t)k * 64 + 4 * t + e];
                fr_ub_store16(tmp, 16 * g, isc, icorr, ierr, inorm, ibias, qs[r], qa[r], qb[r], out + (size_t)r * ldo, thr[r], flags + r);
            }
        }
    #endif
    }

    """
    int fr_topk_next(const float *row, const float *bias, int j, int n, float thr) nogil
    int fr_ctz64(unsigned long long x) nogil
    const int FR_QMAX
    const int FR_HEAD
    const int FR_QOFF
    void fr_i8_tile(const int *U, int nu, int F4, const signed char *P, int ng2,
                    const float *qs, const float *qa, const float *qb,
                    const float *isc, const int *icorr, const float *ierr, const float *inorm,
                    const float *ibias, float *out, int ldo, const float *thr,
                    unsigned long long *flags, const int *ichead, const float *itail, const float *qt,
                    int H4, void *work_space, int *need, int vnni) nogil


cdef inline int next_candidate(const floating *row, const floating *bias, int j, int n,
                               floating thr) noexcept nogil:
    """The first j' >= j whose score (row + bias, bias may be NULL) is >= ``thr``, or n."""
    cdef floating s
    if floating is float:
        j = fr_topk_next(row, bias, j, n, thr)
    else:
        while j < n:
            s = row[j]
            if bias != NULL:
                s = s + bias[j]
            if s >= thr:
                break
            j += 1
    return j


cdef inline void gemm_tile(const floating *Q, const floating *Y, floating *S,
                           int n_users, int n_items, int f) noexcept nogil:
    """S (n_users x n_items, row-major) = Q (n_users x f) @ Y (n_items x f)^T."""
    cdef char ta = b'T'
    cdef char tb = b'N'
    cdef floating one = 1, zero = 0
    if floating is float:
        sgemm(&ta, &tb, &n_items, &n_users, &f, &one, <float *> Y, &f,
              <float *> Q, &f, &zero, S, &n_items)
    else:
        dgemm(&ta, &tb, &n_items, &n_users, &f, &one, <double *> Y, &f,
              <double *> Q, &f, &zero, S, &n_items)


cdef inline void score_tile(const floating *Q, const floating *Y, floating *S,
                            int n_users, int n_items, int f) noexcept nogil:
    """Scores of a tile; a single query uses fused dots (GEMM packing costs more)."""
    cdef int j = 0
    if n_users > 1:
        gemm_tile(Q, Y, S, n_users, n_items, f)
        return
    while j + 4 <= n_items:
        dot4(&Y[<size_t> j * f], &Y[<size_t> (j + 1) * f], &Y[<size_t> (j + 2) * f],
             &Y[<size_t> (j + 3) * f], Q, f, &S[j])
        j += 4
    while j < n_items:
        S[j] = dot(&Y[<size_t> j * f], Q, f)
        j += 1


cdef inline bint user_done(const floating *heap_scores, int size, int k, floating a,
                           floating p, const floating *suffix) noexcept nogil:
    """True when no remaining item can enter this query's heap.

    ``a`` = q.e and ``p`` = |q_perp|; ``suffix`` holds (max y.e, min y.e,
    max |y_perp|) of the remaining rows.  The bound is inflated by 1e-4 of its
    magnitude so float rounding of the computed scores can never let a pruned
    item beat or tie the k-th score.
    """
    cdef floating hi, lo, bound, scale
    if size < k:
        return False
    hi = a * suffix[0]
    lo = a * suffix[1]
    bound = (hi if hi > lo else lo) + p * suffix[2]
    scale = fabs(hi) + fabs(lo) + p * suffix[2]
    return heap_scores[0] > bound + scale * <floating> 1e-4


cdef inline int prune_active(const floating *hs, const int *hsize, int k, const floating *qproj,
                             const floating *suffix, int *slot, int *src, int n_active) noexcept nogil:
    """Drop the block's queries that no remaining item can enter (``user_done``).

    ``slot[:n_active]`` holds the active queries; a dropped one takes the last
    active one's place.  Returns the new count; ``src[a]`` is the old position
    of the query now at ``a``: always at or past the new count, so the caller
    moves each one's packed data from ``src[a]`` to ``a`` without overlap.
    """
    cdef int a = 0, u
    for u in range(n_active):
        src[u] = u
    while a < n_active:
        u = slot[a]
        if user_done(hs + <size_t> u * k, hsize[u], k, qproj[2 * u], qproj[2 * u + 1], suffix):
            n_active = n_active - 1
            slot[a] = slot[n_active]
            src[a] = src[n_active]
        else:
            a = a + 1
    return n_active


cdef int merge_sorted_rows(int[:, ::1] ids, float[:, ::1] scores, int rows) except -1:
    """Row 0 := the best k of ``rows`` sorted answers (score desc, id asc; padding -1 / -inf last)."""
    cdef int k = ids.shape[1]
    cdef int t, r, best
    cdef int *pos = <int *> malloc(<size_t> (rows + 2 * k + 1) * sizeof(int))
    cdef int *out_id
    cdef float *out_score
    if pos == NULL:
        raise MemoryError("top-K: no memory to merge the split query's rows")
    out_id = pos + rows
    out_score = <float *> (out_id + k)  # a float per int slot
    for r in range(rows):
        pos[r] = 0
    for t in range(k):
        best = -1
        for r in range(rows):
            if pos[r] < k and ids[r, pos[r]] >= 0 and (
                    best < 0 or scores[r, pos[r]] > scores[best, pos[best]]
                    or (scores[r, pos[r]] == scores[best, pos[best]] and ids[r, pos[r]] < ids[best, pos[best]])):
                best = r
        if best < 0:
            out_id[t] = -1
            out_score[t] = -INFINITY
        else:
            out_id[t] = ids[best, pos[best]]
            out_score[t] = scores[best, pos[best]]
            pos[best] += 1
    for t in range(k):
        ids[0, t] = out_id[t]
        scores[0, t] = out_score[t]
    free(pos)
    return 0


def topk(const floating[:, ::1] Q, const floating[:, ::1] Y, const floating[::1] bias,
         const index_t[::1] seen_indptr, const int[::1] seen_indices,
         const unsigned char[::1] exclude_mask, const int[::1] item_ids,
         int[:, ::1] out_ids, floating[:, ::1] out_scores,
         int num_threads, int block_users=64, int block_items=2048,
         const floating[::1] direction=None, const floating[:, ::1] suffix_bounds=None):
    """Fill ``out_ids``/``out_scores`` (m x k) with each query's best items.

    Parameters
    ----------
    Q : (m, f) query vectors.
    Y : (n, f) item vectors (possibly a gathered candidate subset).
    bias : (n,) added to every score, or empty.
    seen_indptr, seen_indices : CSR (m rows) of item ids each query must skip,
        sorted within rows; empty ``seen_indptr`` disables this filter.
    exclude_mask : (n_all_items,) nonzero marks a globally excluded item id, or empty.
    item_ids : (n,) item id of each row of Y (candidate subsets), or empty for identity.
    direction : (f,) optional unit vector e; with ``suffix_bounds`` enables
        exact early termination (see the module docstring).
    suffix_bounds : (n, 3) for each row position, over the rows from there on:
        max y.e, min y.e, max |y_perp|, where y_perp includes the bias as an
        extra coordinate when ``bias`` is given.
    """
    cdef int m = Q.shape[0]
    cdef int f = Q.shape[1]
    cdef int n = Y.shape[0]
    cdef int k = out_ids.shape[1]
    cdef bint use_bias = bias.shape[0] > 0
    cdef bint use_seen = seen_indptr.shape[0] > 0
    cdef bint use_mask = exclude_mask.shape[0] > 0
    cdef bint use_map = item_ids.shape[0] > 0
    cdef bint use_prune = direction is not None and suffix_bounds is not None
    cdef floating *qproj
    cdef floating *Qb
    cdef int *slot
    cdef int *src
    cdef int a, n_active
    cdef floating qq
    cdef double qd
    cdef int n_blocks, n_iblocks, ib, blk, u0, u1, bu, i0, i1, bi, u, j, item
    cdef floating s
    cdef floating *S
    cdef floating *hs
    cdef int *hi
    cdef int *hsize
    cdef const floating *row
    cdef const floating *bptr
    cdef floating *hsu
    cdef int *hiu
    cdef const int *seen_ptr
    cdef long long seen_lo, seen_hi
    cdef int failed = 0

    if Y.shape[1] != f:
        raise ValueError("query and item factors must have the same number of columns")
    if out_scores.shape[0] != m or out_ids.shape[0] != m or out_scores.shape[1] != k:
        raise ValueError("output arrays must be (n_queries, k)")
    if use_bias and bias.shape[0] != n:
        raise ValueError("bias must have one value per item row")
    if use_seen and seen_indptr.shape[0] != m + 1:
        raise ValueError("seen_indptr must have n_queries + 1 entries")
    if use_map and item_ids.shape[0] != n:
        raise ValueError("item_ids must have one id per item row")
    if use_prune and (direction.shape[0] != f or suffix_bounds.shape[0] != n
                      or suffix_bounds.shape[1] != 3):
        raise ValueError("direction must have f entries and suffix_bounds shape (n_items, 3)")
    if m == 0 or k == 0:
        return
    block_users = max(1, min(block_users, m))
    block_items = max(1, min(block_items, n)) if n > 0 else 1
    n_blocks = (m + block_users - 1) // block_users
    n_iblocks = (n + block_items - 1) // block_items
    seen_ptr = &seen_indices[0] if seen_indices.shape[0] > 0 else NULL

    with nogil, parallel(num_threads=num_threads):
        S = <floating *> malloc(<size_t> block_users * block_items * sizeof(floating))
        hs = <floating *> malloc(<size_t> block_users * k * sizeof(floating))
        hi = <int *> malloc(<size_t> block_users * k * sizeof(int))
        hsize = <int *> malloc(<size_t> block_users * sizeof(int))
        qproj = <floating *> malloc(<size_t> 2 * block_users * sizeof(floating))
        # the block's still-active queries, packed so GEMM skips finished ones
        Qb = <floating *> malloc(<size_t> block_users * f * sizeof(floating))
        slot = <int *> malloc(<size_t> 2 * block_users * sizeof(int))  # and src, the second half
        src = slot + block_users
        for blk in prange(n_blocks, schedule="dynamic", chunksize=1):
            if (S == NULL or hs == NULL or hi == NULL or hsize == NULL or qproj == NULL
                    or Qb == NULL or slot == NULL):
                failed += 1
                continue
            u0 = blk * block_users
            u1 = min(u0 + block_users, m)
            bu = u1 - u0
            n_active = bu
            for u in range(bu):
                hsize[u] = 0
                slot[u] = u
                memcpy(&Qb[<size_t> u * f], &Q[u0 + u, 0], f * sizeof(floating))
                if use_prune:
                    # |q_perp|^2 in double: a float32 q.q underflows to 0 for |q| < ~1e-19 (and
                    # overflows past ~1e19), which would make the pruning bound too small
                    qd = 1 if use_bias else 0
                    for j in range(f):
                        qd = qd + <double> Q[u0 + u, j] * <double> Q[u0 + u, j]
                    qproj[2 * u] = dot(&Q[u0 + u, 0], &direction[0], f)
                    qd = qd - <double> qproj[2 * u] * <double> qproj[2 * u]
                    qproj[2 * u + 1] = <floating> sqrt(qd) if qd > 0 else 0
            for ib in range(n_iblocks):
                i0 = ib * block_items
                i1 = min(i0 + block_items, n)
                bi = i1 - i0
                if use_prune and ib > 0:
                    n_active = prune_active(hs, hsize, k, qproj, &suffix_bounds[i0, 0], slot, src, n_active)
                    for a in range(n_active):
                        if src[a] != a:
                            memcpy(&Qb[<size_t> a * f], &Qb[<size_t> src[a] * f], f * sizeof(floating))
                    if n_active == 0:
                        break
                score_tile(Qb, &Y[i0, 0], S, n_active, bi, f)
                bptr = &bias[i0] if use_bias else NULL
                for a in range(n_active):
                    u = slot[a]
                    row = S + <size_t> a * bi
                    hsu = hs + <size_t> u * k
                    hiu = hi + <size_t> u * k
                    if use_seen:
                        seen_lo = seen_indptr[u0 + u]
                        seen_hi = seen_indptr[u0 + u + 1]
                    j = 0
                    while j < bi:
                        # once the heap is full, a vector scan skips every score below
                        # its root; filters run only for would-be entries
                        if hsize[u] == k:
                            j = next_candidate(row, bptr, j, bi, hsu[0])
                            if j >= bi:
                                break
                        s = row[j]
                        if use_bias:
                            s = s + bptr[j]
                        item = item_ids[i0 + j] if use_map else i0 + j
                        j = j + 1
                        if use_mask and exclude_mask[item]:
                            continue
                        if use_seen and seen_lo < seen_hi and in_sorted(seen_ptr, seen_lo, seen_hi, item):
                            continue
                        heap_push(hsu, hiu, &hsize[u], k, s, item)
            for u in range(bu):
                heap_drain_sorted(hs + <size_t> u * k, hi + <size_t> u * k, hsize[u], k,
                                  &out_scores[u0 + u, 0], &out_ids[u0 + u, 0])
        free(S)
        free(hs)
        free(hi)
        free(hsize)
        free(qproj)
        free(Qb)
        free(slot)
    if failed:
        raise MemoryError("top-K scratch buffers could not be allocated")


def pair_scores(const floating[:, ::1] U, const floating[:, ::1] Y, const floating[::1] bias,
                const int[::1] users, const int[::1] items, floating[::1] out, int num_threads):
    """out[t] = U[users[t]] . Y[items[t]] (+ bias[items[t]]), in parallel."""
    cdef Py_ssize_t t, n = users.shape[0]
    cdef int f = U.shape[1]
    cdef bint use_bias = bias.shape[0] > 0
    if items.shape[0] != n or out.shape[0] != n:
        raise ValueError("users, items and out must have the same length")
    with nogil:
        for t in prange(n, schedule="static", num_threads=num_threads):
            out[t] = dot(&U[users[t], 0], &Y[items[t], 0], f)
            if use_bias:
                out[t] = out[t] + bias[items[t]]


# one-query calls running now (``topk_codes`` with one query, ``CodesScan``): a query is dealt to several
# threads only while it runs alone, so requests answered at once each take one core
cdef int _one_queries_in_flight = 0


cdef inline int begin_one_query(int split) noexcept:
    """Count a one-query call in (the GIL held: no atomics) and give the threads it may be dealt to."""
    global _one_queries_in_flight
    _one_queries_in_flight += 1
    return split if _one_queries_in_flight == 1 else 1


cdef inline void end_one_query() noexcept:
    global _one_queries_in_flight
    _one_queries_in_flight -= 1


def one_queries_in_flight():
    """How many one-query calls are running now (in other threads; for tests and diagnostics)."""
    return _one_queries_in_flight


def topk_codes(const float[:, ::1] Q, const float[:, ::1] Y, const float[::1] bias,
               const signed char[::1] packed, const float[::1] code_scale, const int[::1] code_corr,
               const float[::1] code_err, const float[::1] code_norm,
               const index_t[::1] seen_indptr, const int[::1] seen_indices, const int[::1] positions,
               const unsigned char[::1] exclude_mask, const int[::1] item_ids,
               int[:, ::1] out_ids, float[:, ::1] out_scores, int num_threads,
               const float[::1] direction, const float[:, ::1] suffix_bounds,
               int block_users=256, int block_items=512, bint vnni=False, int split=1,
               const int[::1] code_corr_head=None, const float[::1] code_tail=None, int head_quads=0):
    """A batch of queries' best items from 7-bit codes of the rows, rescored exactly.

    The items are the norm-sorted rows of a ``RankingIndex`` (``Y``), and
    ``packed`` their codes from ``fastrec.kernels.topk.packed_codes``: row i is
    ``code_scale[i] * c_i`` up to a residual, |c_i| <= 63, in groups of 16
    rows, one 64-byte quad of four codes per row and factor quad.  Each query
    is rounded to 8-bit codes per tile of users; the integer dots are exact
    (VNNI ``vpdpbusd`` with ``vnni``, else ``vpmaddubsw``), and with the
    residual norms of both sides they give an upper bound of every score
    (``code_err[i]`` per unit of |(q, 1)| + |e_q|, ``code_norm[i]`` per unit of
    |e_q|; float rounding included).  Only items whose bound reaches the
    query's k-th best exact score so far are scored in float32, with the same
    dot as ``pair_scores``; a bound below it cannot enter, not even on a tie.  The
    per-item arrays (and ``bias``, if not empty) are padded to a multiple of 32
    rows; ``block_items`` must be a power of two, at least 32.  Blocks of queries stop on
    the norm-sorted pruning bound as in ``topk``.  ``positions[item]`` is the
    row of each item id (the inverse of ``item_ids``, or empty with it): each
    query's seen items are bucketed by block of rows once, and a block's get
    NaN bounds in the tile, which no compare passes: the scan never stops on
    them and they cost no exact dot.  ``split`` > 1 (one query, ``out_*`` of
    ``split`` rows): the item blocks are dealt round robin to ``split`` threads,
    each with its own heap and pruning, and the rows are merged into row 0 (the
    union of the threads' best k holds the best k), so one query over a large
    catalogue reads it with several cores; while another one-query call runs
    (another thread), it runs on one thread instead, and only row 0 is
    written.  ``head_quads`` > 0 (with ``code_corr_head`` and ``code_tail`` from
    ``packed_codes``): the AVX2 build computes each query's dot with 16 rows over the head
    quads first and skips the rest where the head's bound (plus |q_tail| ``code_tail[i]``)
    cannot reach the query's k-th best.  Other arguments as in ``topk``.
    """
    cdef int k = out_ids.shape[1]
    if split < 1 or (split > 1 and Q.shape[0] != 1):
        raise ValueError("split must be 1, or more for one query")
    if (out_scores.shape[0] != (split if split > 1 else Q.shape[0]) or out_ids.shape[0] != out_scores.shape[0]
            or out_scores.shape[1] != k):
        raise ValueError("output arrays must be (n_queries, k), or (split, k) for a split query")
    cdef bint empty = out_ids.shape[0] == 0 or k == 0
    cdef bint one = Q.shape[0] == 1
    if one:  # dealt to threads only while no other one-query call runs: row 0 holds the answer
        split = begin_one_query(split)
        num_threads = min(num_threads, split)
    try:
        codes_scan(Q, Y, bias, packed, code_scale, code_corr, code_err, code_norm, seen_indptr, seen_indices,
                   positions, exclude_mask, item_ids, NULL if empty else &out_ids[0, 0],
                   NULL if empty else &out_scores[0, 0], k, num_threads, direction, suffix_bounds, block_users,
                   block_items, vnni, split, code_corr_head, code_tail, head_quads)
    finally:
        if one:
            end_one_query()
    if split > 1:
        merge_sorted_rows(out_ids, out_scores, split)


# a query's first block scores the rows of its k highest bounds first, for k up to this
DEF WARM_ROWS = 32


cdef inline void offer_row(const float *y, const float *q, int f, const float *bias, int item, float *heap_scores,
                           int *heap_ids, int *size, int k) noexcept nogil:
    """Score row ``y`` for query ``q`` exactly (the dot of ``pair_scores``, plus ``*bias`` if given) and
    push ``item`` into the query's heap if it enters."""
    cdef float s = dot(y, q, f)
    if bias != NULL:
        s = s + bias[0]
    if size[0] == k and s < heap_scores[0]:
        return
    heap_push(heap_scores, heap_ids, size, k, s, item)


cdef inline size_t _up64(size_t nbytes) noexcept nogil:
    """``nbytes`` rounded up to a multiple of 64 (a cache line)."""
    return (nbytes + 63) & ~(<size_t> 63)


cdef int codes_scan(const float[:, ::1] Q, const float[:, ::1] Y, const float[::1] bias,
                    const signed char[::1] packed, const float[::1] code_scale, const int[::1] code_corr,
                    const float[::1] code_err, const float[::1] code_norm,
                    const index_t[::1] seen_indptr, const int[::1] seen_indices, const int[::1] positions,
                    const unsigned char[::1] exclude_mask, const int[::1] item_ids,
                    int *out_ids, float *out_scores, int k, int num_threads,
                    const float[::1] direction, const float[:, ::1] suffix_bounds,
                    int block_users, int block_items, bint vnni, int split,
                    const int[::1] code_corr_head, const float[::1] code_tail, int head_quads) except -1:
    """``topk_codes`` on typed arguments (``CodesScan`` calls it without converting any): the outputs
    are ``split`` (or m) rows of ``k``, contiguous; a split query's rows are left for the caller to merge."""
    cdef int m = Q.shape[0]
    cdef int f = Q.shape[1]
    cdef int n = Y.shape[0]
    cdef int F4 = (f + 3) // 4
    cdef int n_pad = (n + 31) // 32 * 32
    cdef bint use_bias = bias.shape[0] > 0
    cdef bint use_seen = seen_indptr.shape[0] > 0
    cdef bint use_mask = exclude_mask.shape[0] > 0
    cdef bint use_map = item_ids.shape[0] > 0
    cdef int n_blocks, n_iblocks, blk, u0, u1, bu, ib, i0, i1, bi, a, u, j, i, item, t, n_active
    cdef int failed = 0
    cdef float s, qmax, step, code
    cdef double qq, eq, diff, qn
    cdef float *S
    cdef float *hs
    cdef int *hi
    cdef int *hsize
    cdef float *qproj
    cdef int *Ub
    cdef float *qsb
    cdef float *qab
    cdef float *qbb
    cdef float *thr
    cdef float *qtb
    cdef char *scratch
    cdef size_t o_hs, o_hi, o_hsize, o_qproj, o_ub, o_qsb, o_runs, o_head, o_need, o_warm_s, o_warm_j
    cdef size_t o_slot, o_counts, o_sstart, o_scur, scratch_bytes
    cdef void *head_work
    cdef int *need_rows
    cdef const int *ichead
    cdef const float *itail
    cdef int head_from
    cdef double qt
    cdef unsigned long long *runs
    cdef unsigned long long left
    cdef float *warm_s
    cdef int *warm_j
    cdef int n_warm
    cdef float warm_min
    cdef int run_end
    cdef int *slot
    cdef int *src
    cdef unsigned char *ubytes
    cdef float *hsu
    cdef int *hiu
    cdef const float *row
    cdef const float *ibias
    cdef long long seen_lo, seen_hi, c, c1, n_seen_block
    cdef int *counts
    cdef int *spos
    cdef long long *sstart
    cdef long long *scur
    cdef int p, b
    cdef int block_shift = 0

    if Y.shape[1] != f or direction.shape[0] != f or suffix_bounds.shape[0] != n or suffix_bounds.shape[1] != 3:
        raise ValueError("topk_codes: inconsistent factor shapes")
    if (packed.shape[0] != <long long> n_pad * F4 * 4 or code_scale.shape[0] != n_pad
            or code_corr.shape[0] != n_pad or code_err.shape[0] != n_pad or code_norm.shape[0] != n_pad):
        raise ValueError("topk_codes: the codes must cover the rows padded to a multiple of 32")
    if use_bias and bias.shape[0] != n_pad:
        raise ValueError("topk_codes: bias must be padded like the codes")
    if split < 1 or (split > 1 and m != 1):
        raise ValueError("split must be 1, or more for one query")
    if use_seen and seen_indptr.shape[0] != m + 1:
        raise ValueError("seen_indptr must have n_queries + 1 entries")
    if use_seen and (seen_indptr[0] < 0 or seen_indptr[m] > seen_indices.shape[0] or seen_indptr[0] > seen_indptr[m]):
        raise ValueError("seen_indptr must point into seen_indices")
    if use_map and (item_ids.shape[0] != n or positions.shape[0] != n):
        raise ValueError("item_ids and positions must have one entry per item row")
    if head_quads != 0 and (head_quads < 0 or head_quads >= F4 or head_quads % 2 or code_corr_head is None
                            or code_tail is None or code_corr_head.shape[0] != n_pad
                            or code_tail.shape[0] != n_pad):
        raise ValueError("topk_codes: head_quads must be 0, or even and below the quads, with its arrays")
    if block_items < 32 or block_items > 512 or block_items & (block_items - 1):
        raise ValueError("block_items must be a power of two from 32 to 512")  # a 64-bit word of 8-row runs
    while (1 << block_shift) < block_items:
        block_shift += 1
    if m == 0 or k == 0:
        return 0
    if n == 0:
        for i in range((split if split > 1 else m) * k):
            out_ids[i] = -1
            out_scores[i] = -INFINITY
        return 0
    block_users = max(1, min(block_users, m))
    n_blocks = (m + block_users - 1) // block_users if split == 1 else split
    n_iblocks = (n + block_items - 1) // block_items
    ibias = &bias[0] if use_bias else NULL
    ichead = &code_corr_head[0] if head_quads > 0 else NULL
    itail = &code_tail[0] if head_quads > 0 else NULL
    head_from = 4 * head_quads
    o_hs = 0
    o_hi = o_hs + _up64(<size_t> block_users * k * sizeof(float))
    o_hsize = o_hi + _up64(<size_t> block_users * k * sizeof(int))
    o_qproj = o_hsize + _up64(<size_t> block_users * sizeof(int))
    o_ub = o_qproj + _up64(<size_t> 2 * block_users * sizeof(float))
    o_qsb = o_ub + _up64(<size_t> block_users * F4 * sizeof(int))
    o_runs = o_qsb + _up64(<size_t> 5 * block_users * sizeof(float))
    o_head = o_runs + _up64(<size_t> block_users * sizeof(unsigned long long))
    o_need = o_head + _up64(<size_t> block_users * 320 + 64)
    o_warm_s = o_need + _up64(<size_t> 2 * block_users * sizeof(int))
    o_warm_j = o_warm_s + _up64(WARM_ROWS * sizeof(float))
    o_slot = o_warm_j + _up64(WARM_ROWS * sizeof(int))
    o_counts = o_slot + _up64(<size_t> 2 * block_users * sizeof(int))
    o_sstart = o_counts + _up64(<size_t> (n_iblocks + 1) * sizeof(int))
    o_scur = o_sstart + _up64(<size_t> (block_users + 1) * sizeof(long long))
    scratch_bytes = o_scur + _up64(<size_t> block_users * sizeof(long long))

    with nogil, parallel(num_threads=num_threads):
        S = <float *> malloc(<size_t> block_users * block_items * sizeof(float))
        # the per-query arrays in one block (a one-user query makes a few calls less to malloc)
        scratch = <char *> malloc(scratch_bytes)
        hs = <float *> (scratch + o_hs)
        hi = <int *> (scratch + o_hi)
        hsize = <int *> (scratch + o_hsize)
        qproj = <float *> (scratch + o_qproj)
        Ub = <int *> (scratch + o_ub)
        qsb = <float *> (scratch + o_qsb)  # qs, qa, qb, threshold, qt
        runs = <unsigned long long *> (scratch + o_runs)
        head_work = <void *> (scratch + o_head)  # per query 2 AVX2 vectors, 64 floats; aligned by the tile
        need_rows = <int *> (scratch + o_need)  # and every row, the second half
        warm_s = <float *> (scratch + o_warm_s)
        warm_j = <int *> (scratch + o_warm_j)
        slot = <int *> (scratch + o_slot)  # and src, the second half
        src = slot + block_users
        counts = <int *> (scratch + o_counts)
        sstart = <long long *> (scratch + o_sstart)
        scur = <long long *> (scratch + o_scur)
        for blk in prange(n_blocks, schedule="dynamic", chunksize=1):
            if S == NULL or scratch == NULL:
                failed += 1
                continue
            spos = NULL
            u0 = blk * block_users if split == 1 else 0
            u1 = min(u0 + block_users, m)
            if use_seen:
                # every query's seen rows, bucketed by block of rows (a counting sort)
                n_seen_block = seen_indptr[u1] - seen_indptr[u0]
                spos = <int *> malloc(<size_t> max(n_seen_block, 1) * sizeof(int))
                if spos == NULL:
                    failed += 1
                    continue
                for u in range(u1 - u0):
                    seen_lo = seen_indptr[u0 + u]
                    seen_hi = seen_indptr[u0 + u + 1]
                    sstart[u] = seen_lo - seen_indptr[u0]
                    scur[u] = sstart[u]
                    for b in range(n_iblocks + 1):
                        counts[b] = 0
                    for c in range(seen_lo, seen_hi):
                        p = positions[seen_indices[c]] if use_map else seen_indices[c]
                        counts[(p >> block_shift) + 1] += 1
                    for b in range(n_iblocks):
                        counts[b + 1] += counts[b]
                    for c in range(seen_lo, seen_hi):
                        p = positions[seen_indices[c]] if use_map else seen_indices[c]
                        b = p >> block_shift
                        spos[sstart[u] + counts[b]] = p
                        counts[b] += 1
                sstart[u1 - u0] = n_seen_block
            qab = qsb + block_users
            qbb = qsb + 2 * block_users
            thr = qsb + 3 * block_users
            qtb = qsb + 4 * block_users
            bu = u1 - u0
            n_active = bu
            for u in range(bu):
                hsize[u] = 0
                slot[u] = u
                # 8-bit codes of the query (+ 128; 7-bit + 64 on AVX2), its step and residual norm
                qmax = 0
                for j in range(f):
                    if fabs(Q[u0 + u, j]) > qmax:
                        qmax = fabs(Q[u0 + u, j])
                step = qmax / FR_QMAX
                ubytes = <unsigned char *> &Ub[<size_t> u * F4]
                eq = 0
                for j in range(4 * F4):
                    code = 0
                    if j < f and step > 0:
                        code = min(max(<float> lrintf(Q[u0 + u, j] / step), <float> -FR_QMAX), <float> FR_QMAX)
                    ubytes[j] = <unsigned char> (<int> code + FR_QOFF)
                    if j < f:
                        diff = <double> Q[u0 + u, j] - <double> step * <double> code
                        eq = eq + diff * diff
                eq = sqrt(eq) * (1 + 1e-6)
                qq = 0
                for j in range(f):
                    qq = qq + <double> Q[u0 + u, j] * <double> Q[u0 + u, j]
                qn = sqrt(qq + (1 if use_bias else 0))
                qsb[u] = step
                qab[u] = <float> ((qn + eq) * (1 + 1e-5))
                qbb[u] = <float> (eq * (1 + 1e-5))
                qtb[u] = 0
                if head_quads > 0 and FR_HEAD and bu >= 4:  # |q_tail|, the factors after the head
                    qt = 0
                    for j in range(head_from, f):
                        qt = qt + <double> Q[u0 + u, j] * <double> Q[u0 + u, j]
                    qtb[u] = <float> (sqrt(qt) * (1 + 1e-5))
                s = dot(&Q[u0 + u, 0], &direction[0], f)
                qproj[2 * u] = s
                # q.q from the double sum above: a float32 dot underflows to 0 for |q| < ~1e-19
                qq = qq + (1 if use_bias else 0) - <double> s * <double> s
                qproj[2 * u + 1] = <float> sqrt(qq) if qq > 0 else 0
            ib = 0 if split == 1 else blk
            while ib < n_iblocks:  # every block, or every split-th from blk
                i0 = ib * block_items
                i1 = min(i0 + block_items, n)
                bi = i1 - i0
                if ib > 0:
                    n_active = prune_active(hs, hsize, k, qproj, &suffix_bounds[i0, 0], slot, src, n_active)
                    for a in range(n_active):
                        if src[a] != a:
                            memcpy(&Ub[<size_t> a * F4], &Ub[<size_t> src[a] * F4], F4 * sizeof(int))
                            qsb[a] = qsb[src[a]]
                            qab[a] = qab[src[a]]
                            qbb[a] = qbb[src[a]]
                            qtb[a] = qtb[src[a]]
                    if n_active == 0:
                        break
                for a in range(n_active):  # rows below a full heap's root cannot enter: not even stored
                    u = slot[a]
                    thr[a] = hs[<size_t> u * k] if hsize[u] == k else -INFINITY
                fr_i8_tile(Ub, n_active, F4, &packed[<size_t> i0 * F4 * 4], (bi + 31) // 32,
                           qsb, qab, qbb, &code_scale[i0], &code_corr[i0], &code_err[i0], &code_norm[i0],
                           ibias + i0 if use_bias else NULL, S, block_items, thr, runs,
                           ichead + i0 if head_quads > 0 else NULL, itail + i0 if head_quads > 0 else NULL,
                           qtb, head_quads, head_work, need_rows, vnni)
                for a in range(n_active):
                    u = slot[a]
                    row = S + <size_t> a * block_items
                    hsu = hs + <size_t> u * k
                    hiu = hi + <size_t> u * k
                    if use_seen:  # this block's seen rows: NaN bounds, which no compare passes
                        c1 = scur[u]
                        while c1 < sstart[u + 1] and spos[c1] < i0:  # blocks another thread scans
                            c1 = c1 + 1
                        while c1 < sstart[u + 1] and spos[c1] < i1:
                            S[<size_t> a * block_items + spos[c1] - i0] = NAN
                            c1 = c1 + 1
                        scur[u] = c1
                    if hsize[u] < k <= WARM_ROWS:
                        # an empty heap: the rows with the k highest bounds are scored first, so the
                        # heap's root is nearly final before the rest of the block is compared with it
                        n_warm = 0
                        warm_min = -INFINITY
                        left = runs[a]
                        while left != 0:
                            j = 8 * fr_ctz64(left)
                            left = left & (left - 1)
                            run_end = min(j + 8, bi)
                            while True:
                                j = fr_topk_next(row, NULL, j, run_end, warm_min)
                                if j >= run_end:
                                    break
                                if n_warm < k or row[j] > warm_s[k - 1]:
                                    t = n_warm if n_warm < k else k - 1
                                    while t > 0 and warm_s[t - 1] < row[j]:  # insertion, descending
                                        warm_s[t] = warm_s[t - 1]
                                        warm_j[t] = warm_j[t - 1]
                                        t = t - 1
                                    warm_s[t] = row[j]
                                    warm_j[t] = j
                                    if n_warm < k:
                                        n_warm = n_warm + 1
                                    if n_warm == k:
                                        warm_min = warm_s[k - 1]
                                j = j + 1
                        for t in range(n_warm):
                            i = i0 + warm_j[t]
                            S[<size_t> a * block_items + warm_j[t]] = NAN  # scored now: the scan below passes it by
                            item = item_ids[i] if use_map else i
                            if not (use_mask and exclude_mask[item]):
                                offer_row(&Y[i, 0], &Q[u0 + u, 0], f, ibias + i if use_bias else NULL, item,
                                          hsu, hiu, &hsize[u], k)
                    left = runs[a]
                    while left != 0:  # the runs of 8 rows the tile stored: some bound reached thr[a]
                        j = 8 * fr_ctz64(left)
                        left = left & (left - 1)
                        run_end = min(j + 8, bi)
                        while j < run_end:
                            if hsize[u] == k:
                                j = fr_topk_next(row, NULL, j, run_end, hsu[0])
                                if j >= run_end:
                                    break
                            i = i0 + j
                            j = j + 1
                            if row[i - i0] != row[i - i0]:  # seen (reached only while the heap fills)
                                continue
                            item = item_ids[i] if use_map else i
                            if not (use_mask and exclude_mask[item]):
                                offer_row(&Y[i, 0], &Q[u0 + u, 0], f, ibias + i if use_bias else NULL, item,
                                          hsu, hiu, &hsize[u], k)
                ib = ib + split
            for u in range(bu):
                heap_drain_sorted(hs + <size_t> u * k, hi + <size_t> u * k, hsize[u], k,
                                  out_scores + <size_t> (u0 + u if split == 1 else blk) * k,
                                  out_ids + <size_t> (u0 + u if split == 1 else blk) * k)
            free(spos)
        free(S)
        free(scratch)
    if failed:
        raise MemoryError("top-K scratch buffers could not be allocated")
    return 0




cdef class CodesScan:
    """A ``RankingIndex``'s codes bound once for ``topk_codes``, with the stored users' factors and
    seen rows: a query through it converts no per-item argument (the one-user serving path).

    It keeps references to the arrays and never writes them; it stays valid while they are not
    modified (the model's state binds a new one when its index or user arrays change).
    ``seen_indptr`` is int32 or int64.  A query is dealt to up to ``max_split`` of its
    ``num_threads`` threads while no other one-query call runs (in another thread): a service
    answering requests at once gives each one core, never more threads than cores.
    """
    cdef const float[:, ::1] Y
    cdef const float[::1] bias
    cdef const signed char[::1] packed
    cdef const float[::1] scale
    cdef const int[::1] corr
    cdef const float[::1] err
    cdef const float[::1] norm
    cdef const int[::1] positions
    cdef const int[::1] item_ids
    cdef const float[::1] direction
    cdef const float[:, ::1] suffix
    cdef const float[:, ::1] users
    cdef const int[::1] seen_indptr32
    cdef const long long[::1] seen_indptr64
    cdef const int[::1] seen_indices
    cdef const int[::1] no_seen
    cdef const unsigned char[::1] no_mask
    cdef const int[::1] corr_head
    cdef const float[::1] tail
    cdef int block_items, max_split, n_items, head_quads
    cdef bint vnni, wide
    cdef readonly int n_users

    def __init__(self, const float[:, ::1] Y, const float[::1] bias, const signed char[::1] packed,
                 const float[::1] code_scale, const int[::1] code_corr, const float[::1] code_err,
                 const float[::1] code_norm, const int[::1] positions, const int[::1] item_ids,
                 const float[::1] direction, const float[:, ::1] suffix_bounds,
                 const float[:, ::1] users, seen_indptr, const int[::1] seen_indices,
                 int block_items, bint vnni, int max_split, const int[::1] code_corr_head=None,
                 const float[::1] code_tail=None, int head_quads=0):
        import numpy as np
        self.wide = seen_indptr.dtype == np.int64
        if self.wide:
            self.seen_indptr64 = seen_indptr
            self.seen_indptr32 = np.zeros(1, dtype=np.int32)
        else:
            self.seen_indptr32 = seen_indptr
            self.seen_indptr64 = np.zeros(1, dtype=np.int64)
        if users.shape[1] != Y.shape[1]:
            raise ValueError("CodesScan: users and items must have the same number of factors")
        if (seen_indptr.shape[0] != users.shape[0] + 1 or seen_indptr[0] < 0
                or seen_indptr[users.shape[0]] > seen_indices.shape[0]):
            raise ValueError("CodesScan: seen_indptr must have n_users + 1 entries pointing into seen_indices")
        self.Y, self.bias, self.packed = Y, bias, packed
        self.scale, self.corr, self.err, self.norm = code_scale, code_corr, code_err, code_norm
        self.positions, self.item_ids, self.direction, self.suffix = positions, item_ids, direction, suffix_bounds
        self.users, self.seen_indices = users, seen_indices
        self.no_seen = np.empty(0, dtype=np.int32)
        self.no_mask = np.empty(0, dtype=np.uint8)
        self.block_items, self.vnni, self.n_users, self.n_items = block_items, vnni, users.shape[0], Y.shape[0]
        if max_split < 1:
            raise ValueError("CodesScan: max_split must be at least 1")
        self.max_split = max_split  # threads one query may be dealt to (``one_query_split``)
        self.corr_head, self.tail, self.head_quads = code_corr_head, code_tail, head_quads

    def stored(self, int user, long long n, bint exclude_seen, int num_threads):
        """``(ids, scores)`` of stored user ``user``'s best ``n`` items, 1-D, sorted (score desc, id
        asc), only eligible items: fewer than ``n`` where fewer are eligible."""
        if not 0 <= user < self.n_users:
            raise IndexError("user out of range")
        if not exclude_seen:
            return self._answer(self.users[user:user + 1], self.no_seen, self.seen_indices, n, num_threads)
        if self.wide:
            return self._answer(self.users[user:user + 1], self.seen_indptr64[user:user + 2], self.seen_indices,
                                n, num_threads)
        return self._answer(self.users[user:user + 1], self.seen_indptr32[user:user + 2], self.seen_indices,
                            n, num_threads)

    def query(self, const float[:, ::1] Q, const int[::1] seen_row, long long n, int num_threads):
        """``stored`` for one query vector (a 1 x f array) and its seen items (ids, or empty)."""
        cdef int[2] ptr = [0, seen_row.shape[0]]
        cdef const int[::1] indptr
        if Q.shape[0] != 1 or Q.shape[1] != self.Y.shape[1]:
            raise ValueError("CodesScan.query: Q must be one row of n_factors")
        if seen_row.shape[0] == 0:
            return self._answer(Q, self.no_seen, seen_row, n, num_threads)
        indptr = <int[:2]> ptr
        return self._answer(Q, indptr, seen_row, n, num_threads)

    cdef tuple _answer(self, const float[:, ::1] Q, const index_t[::1] seen_indptr, const int[::1] seen_indices,
                       long long n, int num_threads):
        cdef int split = min(num_threads, self.max_split) if num_threads > 1 else 1
        cdef int k = <int> min(max(n, 0), self.n_items)
        cdef int valid = k
        cdef cnp.npy_intp dims[2]
        cdef cnp.ndarray ids, scores
        cdef int *ip
        split = begin_one_query(split)
        dims[0], dims[1] = split, k
        try:
            ids = cnp.PyArray_EMPTY(2 if split > 1 else 1, &dims[0] if split > 1 else &dims[1], cnp.NPY_INT32, 0)
            scores = cnp.PyArray_EMPTY(2 if split > 1 else 1, &dims[0] if split > 1 else &dims[1],
                                       cnp.NPY_FLOAT32, 0)
            ip = <int *> cnp.PyArray_DATA(ids)
            codes_scan(Q, self.Y, self.bias, self.packed, self.scale, self.corr, self.err, self.norm, seen_indptr,
                       seen_indices, self.positions, self.no_mask, self.item_ids, ip,
                       <float *> cnp.PyArray_DATA(scores), k, split, self.direction, self.suffix, 1,
                       self.block_items, self.vnni, split, self.corr_head, self.tail, self.head_quads)
        finally:
            end_one_query()
        if split > 1:
            merge_sorted_rows(ids, scores, split)
            ids, scores = ids[0], scores[0]
            ip = <int *> cnp.PyArray_DATA(ids)
        while valid > 0 and ip[valid - 1] < 0:  # fewer eligible items than n
            valid -= 1
        if valid < k:
            return ids[:valid], scores[:valid]
        return ids, scores
