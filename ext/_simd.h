/* Small vector helpers shared by the kernels.
 *
 * They are plain C so that `#pragma omp simd reduction` lets the compiler
 * vectorise float reductions without -ffast-math; each kernel module is
 * compiled once with baseline flags and once with -mavx2 -mfma, and the
 * same source serves both.
 */
#ifndef FASTREC_SIMD_H
#define FASTREC_SIMD_H

static inline float fr_sdot(const float *a, const float *b, int n) {
    float s = 0.0f;
#pragma omp simd reduction(+:s)
    for (int i = 0; i < n; ++i) s += a[i] * b[i];
    return s;
}

static inline double fr_ddot(const double *a, const double *b, int n) {
    double s = 0.0;
#pragma omp simd reduction(+:s)
    for (int i = 0; i < n; ++i) s += a[i] * b[i];
    return s;
}

/* Ask for the cache lines of a factor row that will be read soon. */
static inline void fr_prefetch(const void *p, int bytes) {
    const char *c = (const char *)p;
    for (int off = 0; off < bytes; off += 64) __builtin_prefetch(c + off, 0, 3);
}

/* y += a * x */
static inline void fr_saxpy(float a, const float *x, float *y, int n) {
#pragma omp simd
    for (int i = 0; i < n; ++i) y[i] += a * x[i];
}

static inline void fr_daxpy(double a, const double *x, double *y, int n) {
#pragma omp simd
    for (int i = 0; i < n; ++i) y[i] += a * x[i];
}

/* y = x + b * y  (CG direction update) */
static inline void fr_sxpby(const float *x, float b, float *y, int n) {
#pragma omp simd
    for (int i = 0; i < n; ++i) y[i] = x[i] + b * y[i];
}

static inline void fr_dxpby(const double *x, double b, double *y, int n) {
#pragma omp simd
    for (int i = 0; i < n; ++i) y[i] = x[i] + b * y[i];
}

/* y = a * x */
static inline void fr_sscal_copy(float a, const float *x, float *y, int n) {
#pragma omp simd
    for (int i = 0; i < n; ++i) y[i] = a * x[i];
}

static inline void fr_dscal_copy(double a, const double *x, double *y, int n) {
#pragma omp simd
    for (int i = 0; i < n; ++i) y[i] = a * x[i];
}

/* In-place Cholesky of a small SPD matrix, A = U^T U, for the ALS row solves.
 *
 * Row-major, reads and writes the upper triangle only.  Right-looking with
 * rank-4 trailing updates, so the inner loops are long contiguous FMAs that
 * vectorise (LAPACK's unblocked potf2 is ~4x slower at n = 64 because of
 * per-column BLAS-2 call overhead).  Returns 0, or r + 1 when the leading
 * minor r is not positive definite.
 */
#define FR_DEFINE_CHOLESKY(T, NAME, SQRT)                                      \
static inline int NAME##_potrf_upper(T *A, int n) {                           \
    for (int j = 0; j < n; j += 4) {                                          \
        int jb = n - j < 4 ? n - j : 4;                                       \
        for (int t = 0; t < jb; ++t) {                                        \
            int r = j + t;                                                    \
            T d = A[(long)r * n + r];                                         \
            if (!(d > 0)) return r + 1;                                       \
            d = SQRT(d);                                                      \
            A[(long)r * n + r] = d;                                           \
            T inv = (T)1 / d;                                                 \
            T *row = A + (long)r * n;                                         \
            _Pragma("omp simd")                                               \
            for (int c = r + 1; c < n; ++c) row[c] *= inv;                    \
            for (int i = r + 1; i < j + jb; ++i) {                            \
                T u = row[i];                                                 \
                T *dst = A + (long)i * n;                                     \
                _Pragma("omp simd")                                           \
                for (int c = i; c < n; ++c) dst[c] -= u * row[c];             \
            }                                                                 \
        }                                                                     \
        const T *u0 = A + (long)j * n;                                        \
        if (jb == 4) {                                                        \
            const T *u1 = u0 + n, *u2 = u0 + 2 * n, *u3 = u0 + 3 * n;         \
            for (int i = j + 4; i < n; ++i) {                                 \
                T a0 = u0[i], a1 = u1[i], a2 = u2[i], a3 = u3[i];             \
                T *dst = A + (long)i * n;                                     \
                /* from the 16-aligned column below i: whole vectors; what  \
                 * it writes left of the diagonal is never read */           \
                _Pragma("omp simd")                                           \
                for (int c = i & ~15; c < n; ++c)                             \
                    dst[c] -= a0 * u0[c] + a1 * u1[c] + a2 * u2[c] + a3 * u3[c]; \
            }                                                                 \
        } else {                                                              \
            for (int i = j + jb; i < n; ++i) {                                \
                T *dst = A + (long)i * n;                                     \
                for (int t = 0; t < jb; ++t) {                                \
                    const T *ut = u0 + (long)t * n;                           \
                    T a = ut[i];                                              \
                    _Pragma("omp simd")                                       \
                    for (int c = i; c < n; ++c) dst[c] -= a * ut[c];          \
                }                                                             \
            }                                                                 \
        }                                                                     \
    }                                                                         \
    return 0;                                                                 \
}                                                                             \
/* Solve U^T U x = b in place (b becomes x), U from NAME_potrf_upper.        \
 * The back substitution takes four rows per step, so four dot products over \
 * the solved tail run as independent chains. */                              \
static inline void NAME##_potrs_upper(const T *U, T *b, int n) {              \
    for (int r = 0; r < n; ++r) {                                             \
        const T *row = U + (long)r * n;                                       \
        T y = b[r] / row[r];                                                  \
        b[r] = y;                                                             \
        _Pragma("omp simd")                                                   \
        for (int c = r + 1; c < n; ++c) b[c] -= y * row[c];                   \
    }                                                                         \
    int r = n - 1;                                                            \
    for (; r >= 3; r -= 4) {                                                  \
        const T *u0 = U + (long)(r - 3) * n, *u1 = u0 + n, *u2 = u1 + n, *u3 = u2 + n; \
        T s0 = 0, s1 = 0, s2 = 0, s3 = 0;                                     \
        _Pragma("omp simd reduction(+:s0,s1,s2,s3)")                          \
        for (int c = r + 1; c < n; ++c) {                                     \
            s0 += u0[c] * b[c]; s1 += u1[c] * b[c];                           \
            s2 += u2[c] * b[c]; s3 += u3[c] * b[c];                           \
        }                                                                     \
        T x3 = (b[r] - s3) / u3[r];                                           \
        T x2 = (b[r - 1] - s2 - u2[r] * x3) / u2[r - 1];                      \
        T x1 = (b[r - 2] - s1 - u1[r] * x3 - u1[r - 1] * x2) / u1[r - 2];     \
        T x0 = (b[r - 3] - s0 - u0[r] * x3 - u0[r - 1] * x2 - u0[r - 2] * x1) / u0[r - 3]; \
        b[r] = x3; b[r - 1] = x2; b[r - 2] = x1; b[r - 3] = x0;               \
    }                                                                         \
    for (; r >= 0; --r) {                                                     \
        const T *row = U + (long)r * n;                                       \
        T s = 0;                                                              \
        _Pragma("omp simd reduction(+:s)")                                    \
        for (int c = r + 1; c < n; ++c) s += row[c] * b[c];                   \
        b[r] = (b[r] - s) / row[r];                                           \
    }                                                                         \
}

#include <math.h>
FR_DEFINE_CHOLESKY(float, fr_s, sqrtf)
FR_DEFINE_CHOLESKY(double, fr_d, sqrt)


/* Four dot products against one vector at once: four independent FMA chains
 * instead of one latency-bound chain, and x is loaded once. */
#define FR_DEFINE_MULTI(T, NAME)                                               \
static inline void NAME##_dot4(const T *r0, const T *r1, const T *r2,          \
                               const T *r3, const T *x, int n, T *out) {       \
    T s0 = 0, s1 = 0, s2 = 0, s3 = 0;                                         \
    _Pragma("omp simd reduction(+:s0,s1,s2,s3)")                              \
    for (int i = 0; i < n; ++i) {                                             \
        T xi = x[i];                                                          \
        s0 += r0[i] * xi; s1 += r1[i] * xi; s2 += r2[i] * xi; s3 += r3[i] * xi; \
    }                                                                         \
    out[0] = s0; out[1] = s1; out[2] = s2; out[3] = s3;                       \
}                                                                             \
/* y += a0 r0 + a1 r1 + a2 r2 + a3 r3 in one pass over y. */                  \
static inline void NAME##_axpy4(T a0, T a1, T a2, T a3, const T *r0,           \
                                const T *r1, const T *r2, const T *r3,         \
                                T *y, int n) {                                 \
    _Pragma("omp simd")                                                       \
    for (int i = 0; i < n; ++i)                                               \
        y[i] += a0 * r0[i] + a1 * r1[i] + a2 * r2[i] + a3 * r3[i];            \
}                                                                             \
/* out = A x for a symmetric row-major n x n A, as a sum of rows (no         \
 * reductions, so no dependency chains). */                                   \
static inline void NAME##_rows_symv(const T *A, const T *x, T *out, int n) {  \
    int k = 0;                                                                \
    for (int i = 0; i < n; ++i) out[i] = 0;                                   \
    for (; k + 4 <= n; k += 4)                                                \
        NAME##_axpy4(x[k], x[k + 1], x[k + 2], x[k + 3], A + (long)k * n,      \
                     A + (long)(k + 1) * n, A + (long)(k + 2) * n,            \
                     A + (long)(k + 3) * n, out, n);                          \
    for (; k < n; ++k) {                                                      \
        const T *row = A + (long)k * n; T a = x[k];                           \
        _Pragma("omp simd")                                                   \
        for (int i = 0; i < n; ++i) out[i] += a * row[i];                     \
    }                                                                         \
}

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
/* AVX2 build: four dots reduced together (3 hadds instead of 4 full
 * horizontal sums), which matters at f = 64 where each dot is only 8 FMAs. */
FR_DEFINE_MULTI(float, fr_s_generic_)
static inline __attribute__((always_inline)) void fr_s_dot4(
        const float *r0, const float *r1, const float *r2, const float *r3,
        const float *x, int n, float *out) {
    if (n & 7) { fr_s_generic__dot4(r0, r1, r2, r3, x, n, out); return; }
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int i = 0;
#if defined(__AVX512F__)
    /* AVX-512 build: 16 lanes, folded to 8 before the shared reduction */
    __m512 z0 = _mm512_setzero_ps(), z1 = z0, z2 = z0, z3 = z0;
    for (; i + 16 <= n; i += 16) {
        __m512 xi = _mm512_loadu_ps(x + i);
        z0 = _mm512_fmadd_ps(_mm512_loadu_ps(r0 + i), xi, z0);
        z1 = _mm512_fmadd_ps(_mm512_loadu_ps(r1 + i), xi, z1);
        z2 = _mm512_fmadd_ps(_mm512_loadu_ps(r2 + i), xi, z2);
        z3 = _mm512_fmadd_ps(_mm512_loadu_ps(r3 + i), xi, z3);
    }
#define FR_FOLD(z) _mm256_add_ps(_mm512_castps512_ps256(z), \
        _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(z), 1)))
    s0 = FR_FOLD(z0); s1 = FR_FOLD(z1); s2 = FR_FOLD(z2); s3 = FR_FOLD(z3);
#undef FR_FOLD
#endif
    for (; i < n; i += 8) {
        __m256 xi = _mm256_loadu_ps(x + i);
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(r0 + i), xi, s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(r1 + i), xi, s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(r2 + i), xi, s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(r3 + i), xi, s3);
    }
    __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(s0, s1), _mm256_hadd_ps(s2, s3));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1)));
}
static inline __attribute__((always_inline)) void fr_s_axpy4(
        float a0, float a1, float a2, float a3, const float *r0, const float *r1,
        const float *r2, const float *r3, float *y, int n) {
    fr_s_generic__axpy4(a0, a1, a2, a3, r0, r1, r2, r3, y, n);
}
static inline void fr_s_rows_symv(const float *A, const float *x, float *out, int n) {
    fr_s_generic__rows_symv(A, x, out, n);
}
#else
FR_DEFINE_MULTI(float, fr_s)
#endif
FR_DEFINE_MULTI(double, fr_d)

/* A += sum_t w_t y_t y_t^T on the row-major upper triangle, reading the rows
 * in place (no gather, no sqrt, signed weights), four rows per pass over A.
 * Each row of A starts at a multiple of 16 columns, so the vector loop has no
 * unaligned head; the few lower-triangle entries it touches are never read.
 * For short rows this beats a BLAS SYRK call, whose packing and call overhead
 * dominate at k < ~100. */
#define FR_DEFINE_SYRK(T, NAME)                                                \
static inline void NAME##_syrk_rows(T *A, const T *const *rows, const T *w,    \
                                    int m, int n) {                            \
    int t = 0;                                                                \
    for (; t + 4 <= m; t += 4) {                                              \
        const T *y0 = rows[t], *y1 = rows[t + 1], *y2 = rows[t + 2], *y3 = rows[t + 3]; \
        T w0 = w[t], w1 = w[t + 1], w2 = w[t + 2], w3 = w[t + 3];             \
        for (int i = 0; i < n; ++i) {                                         \
            T a0 = w0 * y0[i], a1 = w1 * y1[i], a2 = w2 * y2[i], a3 = w3 * y3[i]; \
            T *dst = A + (long)i * n;                                         \
            _Pragma("omp simd")                                               \
            for (int c = i & ~15; c < n; ++c)                                 \
                dst[c] += a0 * y0[c] + a1 * y1[c] + a2 * y2[c] + a3 * y3[c];  \
        }                                                                     \
    }                                                                         \
    for (; t < m; ++t) {                                                      \
        const T *y = rows[t];                                                 \
        for (int i = 0; i < n; ++i) {                                         \
            T a = w[t] * y[i];                                                \
            T *dst = A + (long)i * n;                                         \
            _Pragma("omp simd")                                               \
            for (int c = i & ~15; c < n; ++c) dst[c] += a * y[c];             \
        }                                                                     \
    }                                                                         \
}
#if defined(__AVX512F__)
FR_DEFINE_SYRK(float, fr_s_generic_)
/* AVX-512 float, n a multiple of 16: tiles of 4 rows x NQ 16-lane chunks of
 * A are accumulated in registers over all m vectors (FMA-bound, where the
 * rank-4 row updates above are bound by loading and storing A). Only tiles
 * reaching the upper triangle are computed; a tile starts at the 16-aligned
 * column below its first row, and what it adds left of the diagonal is
 * never read. */
static inline __attribute__((always_inline)) void fr_s_syrk_tile(
        float *A, const float *const *rows, const float *w, int m, int n, int i0,
        int q0, int NQ) {
    __m512 acc[4][4], y[4];
    for (int r = 0; r < 4; ++r)
        for (int q = 0; q < NQ; ++q)
            acc[r][q] = _mm512_loadu_ps(A + (long)(i0 + r) * n + 16 * (q0 + q));
    for (int t = 0; t < m; ++t) {
        /* the weight goes on the vector side, so the row factors are plain
         * broadcast loads (no scalar multiply per factor) */
        const float *yt = rows[t];
        __m512 wt = _mm512_set1_ps(w[t]);
        for (int q = 0; q < NQ; ++q) y[q] = _mm512_mul_ps(wt, _mm512_loadu_ps(yt + 16 * (q0 + q)));
        for (int r = 0; r < 4; ++r) {
            __m512 s = _mm512_set1_ps(yt[i0 + r]);
            for (int q = 0; q < NQ; ++q) acc[r][q] = _mm512_fmadd_ps(s, y[q], acc[r][q]);
        }
    }
    for (int r = 0; r < 4; ++r)
        for (int q = 0; q < NQ; ++q)
            _mm512_storeu_ps(A + (long)(i0 + r) * n + 16 * (q0 + q), acc[r][q]);
}
/* rows first..n-1 only (first a multiple of 4): the trailing block of a
 * blocked Cholesky, with the same tiles. */
static inline void fr_s_syrk_rows_from(float *A, const float *const *rows, const float *w, int m,
                                       int n, int first) {
    for (int i0 = first; i0 < n; i0 += 4) {
        int q = i0 / 16, chunks = n / 16;
        for (; q + 4 <= chunks; q += 4) fr_s_syrk_tile(A, rows, w, m, n, i0, q, 4);
        switch (chunks - q) {
            case 3: fr_s_syrk_tile(A, rows, w, m, n, i0, q, 3); break;
            case 2: fr_s_syrk_tile(A, rows, w, m, n, i0, q, 2); break;
            case 1: fr_s_syrk_tile(A, rows, w, m, n, i0, q, 1); break;
            default: break;
        }
    }
}
static inline void fr_s_syrk_rows(float *A, const float *const *rows, const float *w, int m, int n) {
    if (n & 15) { fr_s_generic__syrk_rows(A, rows, w, m, n); return; }
    fr_s_syrk_rows_from(A, rows, w, m, n, 0);
}
#elif defined(__AVX2__) && defined(__FMA__)
FR_DEFINE_SYRK(float, fr_s_generic_)
/* AVX2 float, n a multiple of 16: the same tiles, 4 rows x 16 columns (two
 * 8-lane registers each: 8 accumulators, within AVX2's 16 registers),
 * accumulated in registers over all m vectors. */
static inline __attribute__((always_inline)) void fr_s_syrk_tile8(
        float *A, const float *const *rows, const float *w, int m, int n, int i0, int c0) {
    float *a0 = A + (long)i0 * n + c0, *a1 = a0 + n, *a2 = a1 + n, *a3 = a2 + n;
    __m256 p0 = _mm256_loadu_ps(a0), q0 = _mm256_loadu_ps(a0 + 8);
    __m256 p1 = _mm256_loadu_ps(a1), q1 = _mm256_loadu_ps(a1 + 8);
    __m256 p2 = _mm256_loadu_ps(a2), q2 = _mm256_loadu_ps(a2 + 8);
    __m256 p3 = _mm256_loadu_ps(a3), q3 = _mm256_loadu_ps(a3 + 8);
    for (int t = 0; t < m; ++t) {
        const float *yt = rows[t];
        __m256 wt = _mm256_set1_ps(w[t]);
        __m256 y0 = _mm256_mul_ps(wt, _mm256_loadu_ps(yt + c0));
        __m256 y1 = _mm256_mul_ps(wt, _mm256_loadu_ps(yt + c0 + 8));
        __m256 s = _mm256_broadcast_ss(yt + i0);
        p0 = _mm256_fmadd_ps(s, y0, p0); q0 = _mm256_fmadd_ps(s, y1, q0);
        s = _mm256_broadcast_ss(yt + i0 + 1);
        p1 = _mm256_fmadd_ps(s, y0, p1); q1 = _mm256_fmadd_ps(s, y1, q1);
        s = _mm256_broadcast_ss(yt + i0 + 2);
        p2 = _mm256_fmadd_ps(s, y0, p2); q2 = _mm256_fmadd_ps(s, y1, q2);
        s = _mm256_broadcast_ss(yt + i0 + 3);
        p3 = _mm256_fmadd_ps(s, y0, p3); q3 = _mm256_fmadd_ps(s, y1, q3);
    }
    _mm256_storeu_ps(a0, p0); _mm256_storeu_ps(a0 + 8, q0);
    _mm256_storeu_ps(a1, p1); _mm256_storeu_ps(a1 + 8, q1);
    _mm256_storeu_ps(a2, p2); _mm256_storeu_ps(a2 + 8, q2);
    _mm256_storeu_ps(a3, p3); _mm256_storeu_ps(a3 + 8, q3);
}
/* rows first..n-1 only (first a multiple of 4): also the trailing block of fr_s_posv8 */
static inline void fr_s_syrk_rows_from(float *A, const float *const *rows, const float *w, int m,
                                       int n, int first) {
    for (int i0 = first; i0 < n; i0 += 4)
        for (int c0 = i0 & ~15; c0 < n; c0 += 16) fr_s_syrk_tile8(A, rows, w, m, n, i0, c0);
}
static inline void fr_s_syrk_rows(float *A, const float *const *rows, const float *w, int m, int n) {
    if (n & 15) { fr_s_generic__syrk_rows(A, rows, w, m, n); return; }
    fr_s_syrk_rows_from(A, rows, w, m, n, 0);
}
#else
FR_DEFINE_SYRK(float, fr_s)
#endif
FR_DEFINE_SYRK(double, fr_d)

/* Factor and solve in one call.  AVX-512 float with n a multiple of 16 (up
 * to 1024, the stack holds n reciprocals) takes the blocked kernel below,
 * about twice as fast as potrf + potrs at n = 64; everything else those two. */
#if defined(__AVX512F__)
static inline __m512 fr_s_lane(__m512 v, int l) {
    return _mm512_permutexvar_ps(_mm512_set1_epi32(l), v);
}

/* 1/sqrt(d) to about 1 ulp: the 14-bit estimate and one Newton step. */
static inline __m512 fr_s_rsqrt_nr(__m512 d) {
    __m512 y = _mm512_rsqrt14_ps(d);
    __m512 t = _mm512_mul_ps(_mm512_mul_ps(d, y), y);
    t = _mm512_fnmadd_ps(t, _mm512_set1_ps(0.5f), _mm512_set1_ps(1.5f));
    return _mm512_mul_ps(y, t);
}

/* Solve A x = b for SPD A (row-major, upper triangle read and overwritten,
 * the lower triangle used as scratch); b becomes x.  Blocked by 16: each
 * diagonal tile is factored in registers, the forward substitution rides
 * along with the factorisation, trailing updates are register-tiled rank-16
 * products.  Returns 0, or r + 1 when the leading minor r is not positive
 * definite. */
static inline int fr_s_posv16(float *A, float *b, int n) {
    int nb = n / 16;
    float invd[n];
    static const float minus_one[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                        -1, -1, -1, -1, -1, -1, -1, -1};
    const __m512 zero = _mm512_setzero_ps();
    for (int J = 0; J < nb; ++J) {
        int c0 = 16 * J;
        float *P = A + (long)c0 * n + c0;
        __m512 D[16];
        for (int l = 0; l < 16; ++l) D[l] = _mm512_loadu_ps(P + (long)l * n);
        __m512 bv = _mm512_loadu_ps(b + c0);
        _Pragma("GCC unroll 16")
        for (int l = 0; l < 16; ++l) {
            __m512 d = fr_s_lane(D[l], l);
            if (!(_mm512_cmp_ps_mask(d, zero, _CMP_GT_OQ) & 1)) return c0 + l + 1;
            __m512 r = fr_s_rsqrt_nr(d);
            invd[c0 + l] = _mm512_cvtss_f32(r);
            D[l] = _mm512_mul_ps(D[l], r);
            __m512 z = _mm512_mul_ps(fr_s_lane(bv, l), r);
            __mmask16 later = (__mmask16)(0xFFFFu << (l + 1));
            bv = _mm512_mask3_fnmadd_ps(D[l], z, bv, later);
            bv = _mm512_mask_mov_ps(bv, (__mmask16)(1u << l), z);
            _Pragma("GCC unroll 16")
            for (int i = l + 1; i < 16; ++i)
                D[i] = _mm512_fnmadd_ps(fr_s_lane(D[l], i), D[l], D[i]);
        }
        for (int l = 0; l < 16; ++l) _mm512_storeu_ps(P + (long)l * n, D[l]);
        _mm512_storeu_ps(b + c0, bv);
        /* the rest of the 16 rows: U_JJ^-T A_J,q, and b_q -= U_J,q^T z_J */
        for (int q = J + 1; q < nb; ++q) {
            __m512 R[16];
            float *Q = A + (long)c0 * n + 16 * q;
            for (int l = 0; l < 16; ++l) R[l] = _mm512_loadu_ps(Q + (long)l * n);
            __m512 bq = _mm512_loadu_ps(b + 16 * q);
            _Pragma("GCC unroll 16")
            for (int l = 0; l < 16; ++l) {
                R[l] = _mm512_mul_ps(R[l], _mm512_set1_ps(invd[c0 + l]));
                _Pragma("GCC unroll 16")
                for (int i = l + 1; i < 16; ++i)
                    R[i] = _mm512_fnmadd_ps(_mm512_set1_ps(P[(long)l * n + i]), R[l], R[i]);
                bq = _mm512_fnmadd_ps(_mm512_set1_ps(b[c0 + l]), R[l], bq);
                _mm512_storeu_ps(Q + (long)l * n, R[l]);
            }
            _mm512_storeu_ps(b + 16 * q, bq);
        }
        /* trailing update of the rows below: A -= U_J^T U_J, a weight -1 SYRK
         * over the 16 panel rows (read in place) */
        const float *panel[16];
        for (int p = 0; p < 16; ++p) panel[p] = A + (long)(c0 + p) * n;
        fr_s_syrk_rows_from(A, panel, minus_one, 16, n, c0 + 16);
    }
    /* back substitution U x = z */
    for (int J = nb - 1; J >= 0; --J) {
        int c0 = 16 * J;
        float y[16];
        for (int l = 0; l < 16; ++l) y[l] = b[c0 + l];
        if (J + 1 < nb) {
            for (int l = 0; l < 16; ++l) {
                const float *row = A + (long)(c0 + l) * n;
                __m512 acc = _mm512_mul_ps(_mm512_loadu_ps(row + c0 + 16), _mm512_loadu_ps(b + c0 + 16));
                for (int c = c0 + 32; c < n; c += 16)
                    acc = _mm512_fmadd_ps(_mm512_loadu_ps(row + c), _mm512_loadu_ps(b + c), acc);
                y[l] -= _mm512_reduce_add_ps(acc);
            }
        }
        const float *P = A + (long)c0 * n + c0;
        for (int l = 15; l >= 0; --l) {
            float x = y[l] * invd[c0 + l];
            b[c0 + l] = x;
            for (int i = 0; i < l; ++i) y[i] -= P[(long)i * n + l] * x;
        }
    }
    return 0;
}
#endif
#if !defined(__AVX512F__) && defined(__AVX2__) && defined(__FMA__)
static inline float fr_s_lane8(__m256 v, int l) {
    return _mm256_cvtss_f32(_mm256_permutevar8x32_ps(v, _mm256_set1_epi32(l)));
}

/* fr_s_posv16 for the AVX2 build, blocked by 8 (n a multiple of 16, up to
 * 1024): each 8 x 8 diagonal tile is factored in registers with the
 * forward substitution riding along (exact 1/sqrt: AVX2 has no 14-bit
 * estimate), the panel solve is register-tiled, the rank-8 trailing updates
 * are syrk_rows' tiles.  Returns 0, or r + 1 when the leading minor r is
 * not positive definite. */
static inline int fr_s_posv8(float *A, float *b, int n) {
    int nb = n / 8;
    float invd[n];
    static const float minus_one[8] = {-1, -1, -1, -1, -1, -1, -1, -1};
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int J = 0; J < nb; ++J) {
        int c0 = 8 * J;
        float *P = A + (long)c0 * n + c0;
        __m256 D[8];
        for (int l = 0; l < 8; ++l) D[l] = _mm256_loadu_ps(P + (long)l * n);
        __m256 bv = _mm256_loadu_ps(b + c0);
        _Pragma("GCC unroll 8")
        for (int l = 0; l < 8; ++l) {
            float d = fr_s_lane8(D[l], l);
            if (!(d > 0)) return c0 + l + 1;
            float r = 1.0f / sqrtf(d);
            invd[c0 + l] = r;
            D[l] = _mm256_mul_ps(D[l], _mm256_set1_ps(r));
            __m256 z = _mm256_set1_ps(fr_s_lane8(bv, l) * r);
            __m256 later = _mm256_castsi256_ps(_mm256_cmpgt_epi32(lanes, _mm256_set1_epi32(l)));
            __m256 at = _mm256_castsi256_ps(_mm256_cmpeq_epi32(lanes, _mm256_set1_epi32(l)));
            bv = _mm256_blendv_ps(bv, _mm256_fnmadd_ps(D[l], z, bv), later);
            bv = _mm256_blendv_ps(bv, z, at);
            _Pragma("GCC unroll 8")
            for (int i = l + 1; i < 8; ++i)
                D[i] = _mm256_fnmadd_ps(_mm256_set1_ps(fr_s_lane8(D[l], i)), D[l], D[i]);
        }
        for (int l = 0; l < 8; ++l) _mm256_storeu_ps(P + (long)l * n, D[l]);
        _mm256_storeu_ps(b + c0, bv);
        /* the rest of the 8 rows: U_JJ^-T A_J,q, and b_q -= U_J,q^T z_J */
        for (int q = J + 1; q < nb; ++q) {
            __m256 R[8];
            float *Q = A + (long)c0 * n + 8 * q;
            for (int l = 0; l < 8; ++l) R[l] = _mm256_loadu_ps(Q + (long)l * n);
            __m256 bq = _mm256_loadu_ps(b + 8 * q);
            _Pragma("GCC unroll 8")
            for (int l = 0; l < 8; ++l) {
                R[l] = _mm256_mul_ps(R[l], _mm256_set1_ps(invd[c0 + l]));
                _Pragma("GCC unroll 8")
                for (int i = l + 1; i < 8; ++i)
                    R[i] = _mm256_fnmadd_ps(_mm256_set1_ps(P[(long)l * n + i]), R[l], R[i]);
                bq = _mm256_fnmadd_ps(_mm256_set1_ps(b[c0 + l]), R[l], bq);
                _mm256_storeu_ps(Q + (long)l * n, R[l]);
            }
            _mm256_storeu_ps(b + 8 * q, bq);
        }
        /* trailing update of the rows below: A -= U_J^T U_J over the 8 panel rows (read in place) */
        const float *panel[8];
        for (int p = 0; p < 8; ++p) panel[p] = A + (long)(c0 + p) * n;
        fr_s_syrk_rows_from(A, panel, minus_one, 8, n, c0 + 8);
    }
    /* back substitution U x = z */
    for (int J = nb - 1; J >= 0; --J) {
        int c0 = 8 * J;
        float y[8];
        for (int l = 0; l < 8; ++l) y[l] = b[c0 + l];
        if (J + 1 < nb) {
            for (int l = 0; l < 8; ++l) {
                const float *row = A + (long)(c0 + l) * n;
                __m256 acc = _mm256_mul_ps(_mm256_loadu_ps(row + c0 + 8), _mm256_loadu_ps(b + c0 + 8));
                for (int c = c0 + 16; c < n; c += 8)
                    acc = _mm256_fmadd_ps(_mm256_loadu_ps(row + c), _mm256_loadu_ps(b + c), acc);
                __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
                h = _mm_add_ps(h, _mm_movehl_ps(h, h));
                h = _mm_add_ss(h, _mm_movehdup_ps(h));
                y[l] -= _mm_cvtss_f32(h);
            }
        }
        const float *P = A + (long)c0 * n + c0;
        for (int l = 7; l >= 0; --l) {
            float x = y[l] * invd[c0 + l];
            b[c0 + l] = x;
            for (int i = 0; i < l; ++i) y[i] -= P[(long)i * n + l] * x;
        }
    }
    return 0;
}
#endif
static inline int fr_s_posv_upper(float *A, float *b, int n) {
#if defined(__AVX512F__)
    if (n > 0 && (n & 15) == 0 && n <= 1024) return fr_s_posv16(A, b, n);
#elif defined(__AVX2__) && defined(__FMA__)
    if (n > 0 && (n & 15) == 0 && n <= 1024) return fr_s_posv8(A, b, n);
#endif
    int info = fr_s_potrf_upper(A, n);
    if (info == 0) fr_s_potrs_upper(A, b, n);
    return info;
}
static inline int fr_d_posv_upper(double *A, double *b, int n) {
    int info = fr_d_potrf_upper(A, n);
    if (info == 0) fr_d_potrs_upper(A, b, n);
    return info;
}

/* out_v = A x_v for a symmetric row-major n x n A, for one vector or four.
 * Portable builds: four symv calls (each a sum of rows of A, see above).
 * AVX-512 float: columns in chunks of registers, accumulated over all n
 * rows of A with out never reloaded, so the loop is bound by FMAs instead of
 * loads and stores (2x faster at f = 128), and four vectors read A from L2
 * once.  Every out[c] is the same chain of fused multiply-adds over k in
 * either function, so symv and symv4 agree bit for bit within a build. */
#if defined(__AVX512F__)
#define FR_SYMV_CHUNK(NV, Q)                                                   \
static inline __attribute__((always_inline)) void fr_s_symv_chunk_##NV##_##Q( \
        const float *A, const float *const *x, float *const *out, int n, int c, \
        __mmask16 mask) {                                                     \
    __m512 acc[NV * Q], a[Q];                                                 \
    for (int t = 0; t < NV * Q; ++t) acc[t] = _mm512_setzero_ps();            \
    for (int k = 0; k < n; ++k) {                                             \
        const float *row = A + (long)k * n + c;                               \
        for (int q = 0; q < Q; ++q) a[q] = _mm512_maskz_loadu_ps(mask, row + 16 * q); \
        for (int v = 0; v < NV; ++v) {                                        \
            __m512 xv = _mm512_set1_ps(x[v][k]);                              \
            for (int q = 0; q < Q; ++q)                                       \
                acc[v * Q + q] = _mm512_fmadd_ps(a[q], xv, acc[v * Q + q]);   \
        }                                                                     \
    }                                                                         \
    for (int v = 0; v < NV; ++v)                                              \
        for (int q = 0; q < Q; ++q)                                           \
            _mm512_mask_storeu_ps(out[v] + c + 16 * q, mask, acc[v * Q + q]); \
}
FR_SYMV_CHUNK(1, 8)
FR_SYMV_CHUNK(1, 4)
FR_SYMV_CHUNK(1, 1)
FR_SYMV_CHUNK(4, 4)
FR_SYMV_CHUNK(4, 1)
#undef FR_SYMV_CHUNK
static inline void fr_s_symv(const float *A, const float *x, float *out, int n) {
    const float *xs[1] = {x}; float *outs[1] = {out};
    int c = 0;
    for (; c + 128 <= n; c += 128) fr_s_symv_chunk_1_8(A, xs, outs, n, c, 0xFFFF);
    for (; c + 64 <= n; c += 64) fr_s_symv_chunk_1_4(A, xs, outs, n, c, 0xFFFF);
    for (; c + 16 <= n; c += 16) fr_s_symv_chunk_1_1(A, xs, outs, n, c, 0xFFFF);
    if (c < n) fr_s_symv_chunk_1_1(A, xs, outs, n, c, (__mmask16)((1u << (n - c)) - 1));
}
static inline void fr_s_symv4(const float *A, const float *const *x, float *const *out, int n) {
    int c = 0;
    for (; c + 64 <= n; c += 64) fr_s_symv_chunk_4_4(A, x, out, n, c, 0xFFFF);
    for (; c + 16 <= n; c += 16) fr_s_symv_chunk_4_1(A, x, out, n, c, 0xFFFF);
    if (c < n) fr_s_symv_chunk_4_1(A, x, out, n, c, (__mmask16)((1u << (n - c)) - 1));
}
#else
static inline void fr_s_symv(const float *A, const float *x, float *out, int n) {
    fr_s_rows_symv(A, x, out, n);
}
static inline void fr_s_symv4(const float *A, const float *const *x, float *const *out, int n) {
    for (int v = 0; v < 4; ++v) fr_s_rows_symv(A, x[v], out[v], n);
}
#endif
static inline void fr_d_symv(const double *A, const double *x, double *out, int n) {
    fr_d_rows_symv(A, x, out, n);
}
static inline void fr_d_symv4(const double *A, const double *const *x, double *const *out, int n) {
    for (int v = 0; v < 4; ++v) fr_d_rows_symv(A, x[v], out[v], n);
}

/* out += sum_t (off_t + w_t (y_t . v)) y_t in one pass over the rows (the
 * sparse part of an ALS row system applied to v; off may be NULL).  AVX-512
 * float with n = 16 NQ, NQ <= 8: out stays in registers and each y_t is
 * loaded once for both its dot product and its update, two rows at a time,
 * so a CG pass reads the gathered vectors once instead of twice.  Returns 0
 * (nothing done) for other shapes and builds. */
#if defined(__AVX512F__)
#define FR_GRAM_APPLY(NQ)                                                      \
static inline void fr_s_gram_apply_##NQ(const float *const *rows, const float *w, \
        const float *off, int m, const float *v, float *out) {                \
    __m512 o[NQ], a0[NQ], a1[NQ];                                             \
    for (int q = 0; q < NQ; ++q) o[q] = _mm512_loadu_ps(out + 16 * q);        \
    int t = 0;                                                                \
    for (; t + 2 <= m; t += 2) {                                              \
        const float *y0 = rows[t], *y1 = rows[t + 1];                         \
        __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();           \
        for (int q = 0; q < NQ; ++q) {                                        \
            __m512 vq = _mm512_loadu_ps(v + 16 * q);                          \
            a0[q] = _mm512_loadu_ps(y0 + 16 * q);                             \
            a1[q] = _mm512_loadu_ps(y1 + 16 * q);                             \
            s0 = _mm512_fmadd_ps(a0[q], vq, s0);                              \
            s1 = _mm512_fmadd_ps(a1[q], vq, s1);                              \
        }                                                                     \
        float c0 = w[t] * _mm512_reduce_add_ps(s0);                           \
        float c1 = w[t + 1] * _mm512_reduce_add_ps(s1);                       \
        if (off) { c0 += off[t]; c1 += off[t + 1]; }                          \
        __m512 b0 = _mm512_set1_ps(c0), b1 = _mm512_set1_ps(c1);              \
        for (int q = 0; q < NQ; ++q)                                          \
            o[q] = _mm512_fmadd_ps(b1, a1[q], _mm512_fmadd_ps(b0, a0[q], o[q])); \
    }                                                                         \
    if (t < m) {                                                              \
        const float *y0 = rows[t];                                            \
        __m512 s0 = _mm512_setzero_ps();                                      \
        for (int q = 0; q < NQ; ++q) {                                        \
            a0[q] = _mm512_loadu_ps(y0 + 16 * q);                             \
            s0 = _mm512_fmadd_ps(a0[q], _mm512_loadu_ps(v + 16 * q), s0);     \
        }                                                                     \
        float c0 = w[t] * _mm512_reduce_add_ps(s0);                           \
        if (off) c0 += off[t];                                                \
        __m512 b0 = _mm512_set1_ps(c0);                                       \
        for (int q = 0; q < NQ; ++q) o[q] = _mm512_fmadd_ps(b0, a0[q], o[q]); \
    }                                                                         \
    for (int q = 0; q < NQ; ++q) _mm512_storeu_ps(out + 16 * q, o[q]);        \
}
FR_GRAM_APPLY(1)
FR_GRAM_APPLY(2)
FR_GRAM_APPLY(3)
FR_GRAM_APPLY(4)
FR_GRAM_APPLY(5)
FR_GRAM_APPLY(6)
FR_GRAM_APPLY(7)
FR_GRAM_APPLY(8)
#undef FR_GRAM_APPLY
static inline int fr_s_gram_apply(const float *const *rows, const float *w, const float *off,
                                  int m, const float *v, float *out, int n) {
    if (n & 15) return 0;
    switch (n / 16) {
        case 1: fr_s_gram_apply_1(rows, w, off, m, v, out); return 1;
        case 2: fr_s_gram_apply_2(rows, w, off, m, v, out); return 1;
        case 3: fr_s_gram_apply_3(rows, w, off, m, v, out); return 1;
        case 4: fr_s_gram_apply_4(rows, w, off, m, v, out); return 1;
        case 5: fr_s_gram_apply_5(rows, w, off, m, v, out); return 1;
        case 6: fr_s_gram_apply_6(rows, w, off, m, v, out); return 1;
        case 7: fr_s_gram_apply_7(rows, w, off, m, v, out); return 1;
        case 8: fr_s_gram_apply_8(rows, w, off, m, v, out); return 1;
        default: return 0;
    }
}
#else
static inline int fr_s_gram_apply(const float *const *rows, const float *w, const float *off,
                                  int m, const float *v, float *out, int n) {
    (void)rows; (void)w; (void)off; (void)m; (void)v; (void)out; (void)n;
    return 0;
}
#endif

#endif
