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

Ordering is deterministic: score descending, ties broken by the lower item id.
Rows with fewer than k eligible items are padded with id -1 and score -inf.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport INFINITY, sqrt, fabs, lrintf
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy
from scipy.linalg.cython_blas cimport sgemm, dgemm

include "_common.pxi"
include "_heap.pxi"

ctypedef fused index_t:
    int
    long long

cdef extern from *:
    """
    #include <immintrin.h>
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

    /* out[r] = c_r . q for the four int8 rows c, c + f, c + 2f, c + 3f and an int16
       query: exact integer dots (f <= 512 keeps every sum below 2^31). */
    static inline void fr_i8_dot4(const signed char *c, int f, const short *q, int *out) {
        int j = 0;
        int t0 = 0, t1 = 0, t2 = 0, t3 = 0;
    #if defined(__AVX512BW__)
        __m512i z0 = _mm512_setzero_si512(), z1 = z0, z2 = z0, z3 = z0;
        for (; j + 32 <= f; j += 32) {
            __m512i x = _mm512_loadu_si512((const void *)(q + j));
            z0 = _mm512_add_epi32(z0, _mm512_madd_epi16(_mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(c + j))), x));
            z1 = _mm512_add_epi32(z1, _mm512_madd_epi16(_mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(c + f + j))), x));
            z2 = _mm512_add_epi32(z2, _mm512_madd_epi16(_mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(c + 2 * f + j))), x));
            z3 = _mm512_add_epi32(z3, _mm512_madd_epi16(_mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(c + 3 * f + j))), x));
        }
        t0 = _mm512_reduce_add_epi32(z0); t1 = _mm512_reduce_add_epi32(z1);
        t2 = _mm512_reduce_add_epi32(z2); t3 = _mm512_reduce_add_epi32(z3);
    #endif
    #if defined(__AVX2__)
        __m256i y0 = _mm256_setzero_si256(), y1 = y0, y2 = y0, y3 = y0;
        for (; j + 16 <= f; j += 16) {
            __m256i x = _mm256_loadu_si256((const __m256i *)(q + j));
            y0 = _mm256_add_epi32(y0, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(c + j))), x));
            y1 = _mm256_add_epi32(y1, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(c + f + j))), x));
            y2 = _mm256_add_epi32(y2, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(c + 2 * f + j))), x));
            y3 = _mm256_add_epi32(y3, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(c + 3 * f + j))), x));
        }
        __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(y0, y1), _mm256_hadd_epi32(y2, y3));
        __m128i r = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
        t0 += _mm_extract_epi32(r, 0); t1 += _mm_extract_epi32(r, 1);
        t2 += _mm_extract_epi32(r, 2); t3 += _mm_extract_epi32(r, 3);
    #endif
        for (; j < f; j++) {
            t0 += c[j] * q[j]; t1 += c[f + j] * q[j]; t2 += c[2 * f + j] * q[j]; t3 += c[3 * f + j] * q[j];
        }
        out[0] = t0; out[1] = t1; out[2] = t2; out[3] = t3;
    }

    static inline int fr_i8_dot(const signed char *c, const short *q, int f) {
        int t = 0;
        for (int j = 0; j < f; j++) t += c[j] * q[j];
        return t;
    }
    """
    int fr_topk_next(const float *row, const float *bias, int j, int n, float thr) nogil
    void fr_i8_dot4(const signed char *c, int f, const short *q, int *out) nogil
    int fr_i8_dot(const signed char *c, const short *q, int f) nogil


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
    cdef int a, n_active
    cdef floating qq
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
        slot = <int *> malloc(<size_t> block_users * sizeof(int))
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
                    qq = dot(&Q[u0 + u, 0], &Q[u0 + u, 0], f) + (1 if use_bias else 0)
                    qproj[2 * u] = dot(&Q[u0 + u, 0], &direction[0], f)
                    qq = qq - qproj[2 * u] * qproj[2 * u]
                    qproj[2 * u + 1] = sqrt(qq) if qq > 0 else 0
            for ib in range(n_iblocks):
                i0 = ib * block_items
                i1 = min(i0 + block_items, n)
                bi = i1 - i0
                if use_prune and ib > 0:
                    a = 0
                    while a < n_active:
                        u = slot[a]
                        if user_done(hs + <size_t> u * k, hsize[u], k, qproj[2 * u],
                                     qproj[2 * u + 1], &suffix_bounds[i0, 0]):
                            n_active = n_active - 1
                            slot[a] = slot[n_active]
                            memcpy(&Qb[<size_t> a * f], &Qb[<size_t> n_active * f], f * sizeof(floating))
                        else:
                            a = a + 1
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


def topk_one(const float[::1] q, const float[:, ::1] Y, const float[::1] bias,
             const signed char[:, ::1] codes, const float[::1] code_scale, const float[::1] code_err,
             const int[::1] seen, const unsigned char[::1] exclude_mask, const int[::1] item_ids,
             int[::1] out_ids, float[::1] out_scores, const float[::1] direction,
             const float[:, ::1] suffix_bounds, int block_items=256):
    """One query's best items from an int8 copy of the rows, rescored exactly.

    Row i of ``codes`` holds y_i / code_scale[i] rounded to int8; the query is
    rounded to int16 (step max|q| / 32767) and the integer dots are exact.
    ``code_err[i]`` (see ``fastrec.kernels.topk.compact_rows``) bounds, per
    unit of the query's norm, how far the exact float32 score computed here can
    lie above ``step * code_scale[i] * (codes[i] . q16) + b_i``: the rows'
    rounding residual, the query's (at most sqrt(f) 2^-16 |q| |y_i|) and the
    float rounding of both scores.  The scan reads the int8 rows (a quarter of
    the float32 bytes) and computes the exact score only of rows whose bound
    reaches the k-th best exact score so far; a row whose bound is below it
    cannot enter, not even on a tie.  Blocks stop on the same norm-sorted
    pruning bound as ``topk``.  ``seen`` holds the query's skipped item ids,
    sorted; the other arguments are as in ``topk``.  f must be at most 512.
    """
    cdef int n = Y.shape[0]
    cdef int f = Y.shape[1]
    cdef int k = out_ids.shape[0]
    cdef bint use_bias = bias.shape[0] > 0
    cdef bint use_mask = exclude_mask.shape[0] > 0
    cdef bint use_map = item_ids.shape[0] > 0
    cdef long long n_seen = seen.shape[0]
    cdef const int *seen_ptr = &seen[0] if n_seen > 0 else NULL
    cdef int ib, n_iblocks, i0, i1, bi, i, j, item, hsize = 0
    cdef float qq, qn, a, p, s, qmax, step
    cdef short *q16
    cdef int *idot
    cdef float *ub
    cdef float *hs
    cdef int *hi
    if (q.shape[0] != f or codes.shape[0] != n or codes.shape[1] != f or code_scale.shape[0] != n
            or code_err.shape[0] != n or direction.shape[0] != f or suffix_bounds.shape[0] != n
            or suffix_bounds.shape[1] != 3 or out_scores.shape[0] != k):
        raise ValueError("topk_one: inconsistent array shapes")
    if f > 512:
        raise ValueError("topk_one takes at most 512 factors")
    if use_bias and bias.shape[0] != n:
        raise ValueError("bias must have one value per item row")
    if use_map and item_ids.shape[0] != n:
        raise ValueError("item_ids must have one id per item row")
    if k == 0:
        return
    block_items = max(4, min(block_items, n)) if n > 0 else 4
    n_iblocks = (n + block_items - 1) // block_items
    ub = <float *> malloc(<size_t> block_items * sizeof(float))
    idot = <int *> malloc(<size_t> block_items * sizeof(int))
    q16 = <short *> malloc(<size_t> (f + 1) * sizeof(short))
    hs = <float *> malloc(<size_t> k * sizeof(float))
    hi = <int *> malloc(<size_t> k * sizeof(int))
    if ub == NULL or idot == NULL or q16 == NULL or hs == NULL or hi == NULL:
        free(ub)
        free(idot)
        free(q16)
        free(hs)
        free(hi)
        raise MemoryError("top-K scratch buffers could not be allocated")
    with nogil:
        qmax = 0
        for j in range(f):
            if fabs(q[j]) > qmax:
                qmax = fabs(q[j])
        step = qmax / 32767
        for j in range(f):
            s = q[j] / step if step > 0 else 0
            s = min(max(s, -32767), 32767)
            q16[j] = <short> lrintf(s)
        qq = dot(&q[0], &q[0], f) + (1 if use_bias else 0)
        # |(q, 1)| and the int16 query's own norm at most sqrt(f) 2^-16 |q| beyond |q|
        qn = sqrt(qq) * (1 + <float> 1e-5 + sqrt(<float> f) * <float> 3.0517578125e-05)
        a = dot(&q[0], &direction[0], f)
        qq = qq - a * a
        p = sqrt(qq) if qq > 0 else 0
        for ib in range(n_iblocks):
            i0 = ib * block_items
            i1 = min(i0 + block_items, n)
            bi = i1 - i0
            if ib > 0 and user_done(hs, hsize, k, a, p, &suffix_bounds[i0, 0]):
                break
            j = 0
            while j + 4 <= bi:
                fr_i8_dot4(&codes[i0 + j, 0], f, q16, &idot[j])
                j = j + 4
            while j < bi:
                idot[j] = fr_i8_dot(&codes[i0 + j, 0], q16, f)
                j = j + 1
            for j in range(bi):
                ub[j] = <float> idot[j] * (step * code_scale[i0 + j]) + qn * code_err[i0 + j]
            if use_bias:
                for j in range(bi):
                    ub[j] = ub[j] + bias[i0 + j]
            j = 0
            while j < bi:
                if hsize == k:
                    j = fr_topk_next(ub, NULL, j, bi, hs[0])
                    if j >= bi:
                        break
                i = i0 + j
                j = j + 1
                item = item_ids[i] if use_map else i
                if use_mask and exclude_mask[item]:
                    continue
                if n_seen > 0 and in_sorted(seen_ptr, 0, n_seen, item):
                    continue
                s = dot(&Y[i, 0], &q[0], f)
                if use_bias:
                    s = s + bias[i]
                if hsize == k and s < hs[0]:
                    continue
                heap_push(hs, hi, &hsize, k, s, item)
        heap_drain_sorted(hs, hi, hsize, k, &out_scores[0], &out_ids[0])
    free(ub)
    free(idot)
    free(q16)
    free(hs)
    free(hi)
