# cython: language_level=3
"""Item-item neighbours: sparse similarity with top-k pruning, and scoring users from them.

``item_neighbours`` computes, for every item i, the dot products of its
(weighted) column with every other item's column, ``sum_u w_ui w_uj``, by
walking i's users and their items (a sparse product row by row, Gustavson's
method) into a per-thread dense accumulator, and keeps the best ``k``.  Memory
is O(threads x items), never items x items.  Items run in parallel over a
dynamic schedule (popular items cost much more than rare ones).

``score_rows`` scores users from their interaction rows: ``sum_j r_uj S[j, :]``
over the user's items j, again into a per-thread accumulator, and keeps the
top ``n`` eligible items (seen items of the row, a global mask and an optional
candidate mask filter them).  Only items some neighbour list reaches get a
score; a row with fewer such items is padded with id -1 and score -inf.

Selection is deterministic: score descending, ties broken by the lower item id
(``score_rows``); a neighbour list breaks equal similarities by the more popular
neighbour first (more users behind the same value), then the lower id.
``score_rows`` writes each row best-first; the neighbour kernels write each
item's kept neighbours sorted by id (the order of the CSR) and their count.
They keep an item's candidates in a buffer of ``2k`` behind a bar (the k-th
best at the last compaction) and compact it by quickselect when full: O(1) per
candidate on average, where a heap costs O(log k) for each one it admits.

``weigh_entries`` (cosine, TF-IDF, BM25 weights and item scales) and ``by_item``
(the by-item layout with each entry's place in the rows) prepare the inputs in
two serial passes each.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport INFINITY, log, log1p, sqrt
from libc.stdlib cimport calloc, malloc, free

include "_heap.pxi"

cdef extern from *:
    """
    #include <immintrin.h>
    /* acc[idx[q]] += w * d[q] for q < n, the idx distinct (one sorted CSR row), so a
       16-wide gather / fused multiply-add / scatter is exact: the same single rounding
       per element as the scalar loop. */
    static inline void fr_scatter_fma_f32(const int *idx, const float *d, long long n, float w, float *acc) {
        long long q = 0;
    #if defined(__AVX512F__)
        __m512 W = _mm512_set1_ps(w);
        for (; q + 16 <= n; q += 16) {
            __m512i I = _mm512_loadu_si512((const void *)(idx + q));
            __m512 a = _mm512_i32gather_ps(I, acc, 4);
            a = _mm512_fmadd_ps(W, _mm512_loadu_ps(d + q), a);
            _mm512_i32scatter_ps(acc, I, a, 4);
        }
    #endif
        for (; q < n; q++) acc[idx[q]] += w * d[q];
    }
    static inline void fr_knn_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }
    """
    void fr_scatter_fma_f32(const int *idx, const float *d, long long n, float w, float *acc) noexcept nogil
    void fr_knn_prefetch(const void *p) noexcept nogil

ctypedef fused index_t:
    int
    long long

ctypedef fused source_t:
    float
    double


cdef inline bint ranks_above(floating s1, int i1, floating s2, int i2, const int *pop) noexcept nogil:
    """True when neighbour (s1, i1) ranks above (s2, i2): a higher similarity; at equal similarity
    the more popular item (``pop``: users per item; more common users behind the same cosine,
    more evidence), then the lower id."""
    return s1 > s2 or (s1 == s2 and (pop[i1] > pop[i2] or (pop[i1] == pop[i2] and i1 < i2)))


cdef inline void swap_entries(floating *s, int *ids, int a, int b) noexcept nogil:
    s[a], s[b] = s[b], s[a]
    ids[a], ids[b] = ids[b], ids[a]


cdef void select_best(floating *s, int *ids, int n, int k, const int *pop) noexcept nogil:
    """Reorder ``n`` entries (distinct ids) so the ``k`` best come first, the k-th best at ``k - 1``.

    Quickselect with a median-of-three pivot: O(n) on average, against O(n log k) for
    a heap fed one entry at a time.
    """
    cdef int lo = 0, hi = n, mid, a, t, pi
    cdef floating ps
    if k <= 0 or k >= n:
        return
    while hi - lo > 1:
        mid = lo + (hi - lo) // 2
        if ranks_above(s[mid], ids[mid], s[lo], ids[lo], pop):
            swap_entries(s, ids, lo, mid)
        if ranks_above(s[hi - 1], ids[hi - 1], s[lo], ids[lo], pop):
            swap_entries(s, ids, lo, hi - 1)
        if ranks_above(s[hi - 1], ids[hi - 1], s[mid], ids[mid], pop):
            swap_entries(s, ids, mid, hi - 1)
        swap_entries(s, ids, mid, hi - 1)  # the median of the three is the pivot, at hi - 1
        ps = s[hi - 1]
        pi = ids[hi - 1]
        a = lo
        for t in range(lo, hi - 1):
            if ranks_above(s[t], ids[t], ps, pi, pop):
                swap_entries(s, ids, t, a)
                a = a + 1
        swap_entries(s, ids, a, hi - 1)
        if a == k - 1:
            return
        if a > k - 1:
            hi = a
        else:
            lo = a + 1


cdef inline void offer(floating *bs, int *bi, int *bn, floating *bar_s, int *bar_i, int k, floating s,
                       int item, const int *pop) noexcept nogil:
    """Add a candidate (similarity ``s`` > 0, ``s >= bar_s[0]``) to a buffer of ``2k`` entries.

    The bar is the k-th best entry at the last compaction (similarity 0 before
    the first): a candidate ranking below it can never be among the final ``k``.
    A full buffer is compacted to its ``k`` best (``select_best``), so each
    candidate costs O(1) on average instead of a heap's O(log k) sift.
    """
    cdef int n
    if s == bar_s[0] and ranks_above(s, bar_i[0], s, item, pop):
        return
    n = bn[0]
    bs[n] = s
    bi[n] = item
    n = n + 1
    if n == 2 * k:
        select_best(bs, bi, n, k, pop)
        n = k
        bar_s[0] = bs[k - 1]
        bar_i[0] = bi[k - 1]
    bn[0] = n


cdef inline void offer_pair(floating *bs, int *bi, int *bn, floating *bar_s, int *bar_i, int k, floating s,
                            int a, int b, const int *pop) noexcept nogil:
    """Offer the pair (a, b) of similarity ``s`` > 0 to both items' buffers (rows of ``2k`` in
    ``bs``/``bi``, sizes ``bn``, bars ``bar_s``/``bar_i``): the contiguous bars turn most pairs
    away without touching the buffers (2k entries apart, a cache miss each)."""
    if s >= bar_s[a]:
        offer(bs + <long long> a * 2 * k, bi + <long long> a * 2 * k, bn + a, bar_s + a, bar_i + a, k, s, b, pop)
    if s >= bar_s[b]:
        offer(bs + <long long> b * 2 * k, bi + <long long> b * 2 * k, bn + b, bar_s + b, bar_i + b, k, s, a, pop)


cdef inline int finish_row(floating *bs, int *bi, int n, int k, floating *out_s, int *out_i, const int *pop
                           ) noexcept nogil:
    """Write the ``k`` best of a buffer's ``n`` entries to ``out_*`` sorted by id; return how many."""
    cdef int m
    select_best(bs, bi, n, k, pop)
    if n > k:
        n = k
    sort_by_id(bi, bs, n)
    for m in range(n):
        out_s[m] = bs[m]
        out_i[m] = bi[m]
    return n


cdef void sort_by_id(int *ids, floating *vals, int n) noexcept nogil:
    """Sort ``ids`` ascending (distinct values) and ``vals`` with them: quicksort, insertion sort below 16."""
    cdef int lo, hi, mid, a, b, pivot, ti
    cdef floating tv
    for a in range(1, n):  # rows that never filled up often arrive in id order already
        if ids[a - 1] > ids[a]:
            break
    else:
        return
    while n > 16:
        mid = n >> 1
        # median of three to ids[n - 1] as the pivot
        if ids[mid] < ids[0]:
            ids[0], ids[mid] = ids[mid], ids[0]
            vals[0], vals[mid] = vals[mid], vals[0]
        if ids[n - 1] < ids[0]:
            ids[0], ids[n - 1] = ids[n - 1], ids[0]
            vals[0], vals[n - 1] = vals[n - 1], vals[0]
        if ids[mid] < ids[n - 1]:
            ids[mid], ids[n - 1] = ids[n - 1], ids[mid]
            vals[mid], vals[n - 1] = vals[n - 1], vals[mid]
        pivot = ids[n - 1]
        a = 0
        for b in range(n - 1):
            if ids[b] < pivot:
                ids[a], ids[b] = ids[b], ids[a]
                vals[a], vals[b] = vals[b], vals[a]
                a = a + 1
        ids[a], ids[n - 1] = ids[n - 1], ids[a]
        vals[a], vals[n - 1] = vals[n - 1], vals[a]
        # recurse on the smaller side, loop on the larger
        if a < n - 1 - a:
            sort_by_id(ids, vals, a)
            ids = ids + a + 1
            vals = vals + a + 1
            n = n - a - 1
        else:
            sort_by_id(ids + a + 1, vals + a + 1, n - a - 1)
            n = a
    for a in range(1, n):
        ti = ids[a]
        tv = vals[a]
        b = a - 1
        while b >= 0 and ids[b] > ti:
            ids[b + 1] = ids[b]
            vals[b + 1] = vals[b]
            b = b - 1
        ids[b + 1] = ti
        vals[b + 1] = tv


cdef inline void scatter_dense(const int *items, const floating *data, long long lo, long long hi, floating w,
                               floating *acc, int *common, bint use_common) noexcept nogil:
    """acc[items[q]] += w * data[q] (and common[items[q]] += 1) for q in [lo, hi): a dense scan follows."""
    cdef long long q
    if floating is float:
        if not use_common:
            fr_scatter_fma_f32(items + lo, data + lo, hi - lo, w, acc)
            return
    for q in range(lo, hi):
        acc[items[q]] += w * data[q]
        if use_common:
            common[items[q]] += 1


cdef inline int scatter_sparse(const int *items, const floating *data, long long lo, long long hi, floating w,
                               floating *acc, int *common, bint use_common, int *touched, char *marked,
                               int n_touched) noexcept nogil:
    """``scatter_dense`` that also lists each item touched for the first time; returns the list's new length."""
    cdef long long q
    cdef int j
    for q in range(lo, hi):
        j = items[q]
        if not marked[j]:
            marked[j] = 1
            touched[n_touched] = j
            n_touched = n_touched + 1
        acc[j] += w * data[q]
        if use_common:
            common[j] += 1
    return n_touched


def item_neighbours(const index_t[::1] col_indptr, const int[::1] col_users, const floating[::1] col_data,
                    const index_t[::1] row_indptr, const int[::1] row_items, const floating[::1] row_data,
                    const floating[::1] scale, const int[::1] popularity, double shrinkage, int k,
                    int[:, ::1] out_ids, floating[:, ::1] out_sims, int[::1] out_counts, int num_threads):
    """Top-``k`` neighbours of every item (itself excluded).

    ``col_*`` is the weighted matrix by item (items x users, CSR), ``row_*``
    the same matrix by user (users x items, CSR).  The similarity of items i
    and j is ``dot_ij * scale[i] * scale[j]`` (``scale`` = 1 / norm for
    cosine), times ``c_ij / (c_ij + shrinkage)`` with ``c_ij`` their common
    users when ``shrinkage > 0``.  Only pairs with at least one common user
    and a similarity > 0 are kept; equal similarities rank by ``popularity``
    (users per item, more first), then by the lower id.  Each row holds its
    ``out_counts[i]`` kept neighbours sorted by id (the rest of the row is left
    as it was).
    """
    cdef Py_ssize_t n_items = col_indptr.shape[0] - 1
    cdef Py_ssize_t i
    cdef index_t p, q
    cdef int u, j, t, n_touched, size, bar_i
    cdef long long work
    cdef bint dense
    cdef double s
    cdef floating w
    cdef floating *acc
    cdef int *common
    cdef int *touched
    cdef char *marked
    cdef floating *bs
    cdef int *bi
    cdef floating sv, bar_s
    cdef bint use_common = shrinkage > 0
    cdef int failed = 0
    if k <= 0 or n_items == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        acc = <floating *> calloc(n_items, sizeof(floating))
        common = <int *> calloc(n_items, sizeof(int))
        touched = <int *> malloc(n_items * sizeof(int))
        marked = <char *> calloc(n_items, sizeof(char))
        bs = <floating *> malloc(2 * k * sizeof(floating))
        bi = <int *> malloc(2 * k * sizeof(int))
        for i in prange(n_items, schedule="dynamic", chunksize=8):
            if acc == NULL or common == NULL or touched == NULL or marked == NULL or bs == NULL or bi == NULL:
                failed += 1
                continue
            # an item whose users reach a good share of the catalogue is scanned densely afterwards
            # (no touched list, no branch in the inner loop), as in item_neighbours_pairs
            work = 0
            for p in range(col_indptr[i], col_indptr[i + 1]):
                work = work + row_indptr[col_users[p] + 1] - row_indptr[col_users[p]]
            dense = work * 4 >= n_items
            n_touched = 0
            for p in range(col_indptr[i], col_indptr[i + 1]):
                u = col_users[p]
                w = col_data[p]
                if dense:
                    scatter_dense(&row_items[0], &row_data[0], row_indptr[u], row_indptr[u + 1], w, acc, common,
                                  use_common)
                else:
                    n_touched = scatter_sparse(&row_items[0], &row_data[0], row_indptr[u], row_indptr[u + 1], w,
                                               acc, common, use_common, touched, marked, n_touched)
            size = 0
            bar_s = 0
            bar_i = 0
            if dense:
                for j in range(n_items):
                    if acc[j] != 0 and j != i:
                        s = acc[j] * (<double> scale[i] * scale[j])
                        if use_common:
                            s = s * common[j] / (common[j] + shrinkage)
                        sv = <floating> s
                        if sv > 0 and sv >= bar_s:
                            offer(bs, bi, &size, &bar_s, &bar_i, k, sv, j, &popularity[0])
                    acc[j] = 0
                    if use_common:
                        common[j] = 0
            for t in range(n_touched):
                j = touched[t]
                s = acc[j] * (<double> scale[i] * scale[j])
                if use_common:
                    s = s * common[j] / (common[j] + shrinkage)
                    common[j] = 0
                sv = <floating> s
                if sv > 0 and sv >= bar_s and j != i:
                    offer(bs, bi, &size, &bar_s, &bar_i, k, sv, j, &popularity[0])
                acc[j] = 0
                marked[j] = 0
            out_counts[i] = finish_row(bs, bi, size, k, &out_sims[i, 0], &out_ids[i, 0], &popularity[0])
        free(bs)
        free(bi)
        free(acc)
        free(common)
        free(touched)
        free(marked)
    if failed:
        raise MemoryError("item_neighbours: out of memory for a per-thread buffer")


def item_neighbours_pairs(const index_t[::1] col_indptr, const int[::1] col_users, const index_t[::1] col_pos,
                          const index_t[::1] row_indptr, const int[::1] row_items, const floating[::1] row_data,
                          const floating[::1] scale, const int[::1] popularity, double shrinkage, int k,
                          floating[:, :, ::1] buf_s, int[:, :, ::1] buf_i, int[:, ::1] buf_n,
                          int[:, ::1] out_ids, floating[:, ::1] out_sims, int[::1] out_counts, int num_threads):
    """``item_neighbours`` computing each pair once: half the multiply-adds.

    Item i accumulates its dot products with the items j > i only (``col_pos[p]``
    is where i sits in the row of its p-th user, and rows are sorted), and each
    pair's similarity goes into both items' candidate buffers (see ``offer``).
    Buffers are per thread (``buf_*`` is threads x items x 2k, ``buf_n`` the
    sizes, zeroed), so no locks; the threads' buffers of each item are merged at
    the end.  Each pair is seen by one thread, so the merged top-k is the same
    as ``item_neighbours``.
    """
    cdef Py_ssize_t n_items = col_indptr.shape[0] - 1
    cdef int n_heaps = buf_n.shape[0]
    cdef Py_ssize_t i
    cdef index_t p, q
    cdef int u, j, t, m, n_touched, size, tid
    cdef long long work
    cdef bint dense
    cdef double s
    cdef floating w
    cdef floating *acc
    cdef int *common
    cdef int *touched
    cdef char *marked
    cdef floating *bar_s
    cdef int *bar_i
    cdef floating sv
    cdef bint use_common = shrinkage > 0
    cdef int failed = 0
    if k <= 0 or n_items == 0:
        return
    if num_threads < 1:
        # each thread needs its own buffers: 0 would mean OpenMP's default team, possibly more threads than buffers
        raise ValueError(f"num_threads must be >= 1 (one set of buffers per thread); got {num_threads}")
    with nogil, parallel(num_threads=min(num_threads, n_heaps)):
        tid = threadid()
        acc = <floating *> calloc(n_items, sizeof(floating))
        common = <int *> calloc(n_items, sizeof(int))
        touched = <int *> malloc(n_items * sizeof(int))
        marked = <char *> calloc(n_items, sizeof(char))
        # this thread's bar for each item's buffer (see offer), contiguous: a cheap filter
        bar_s = <floating *> calloc(n_items, sizeof(floating))
        bar_i = <int *> calloc(n_items, sizeof(int))
        for i in prange(n_items, schedule="dynamic", chunksize=8):
            if (acc == NULL or common == NULL or touched == NULL or marked == NULL or bar_s == NULL
                    or bar_i == NULL or tid >= n_heaps):
                failed += 1
                continue
            # an item whose users reach a good share of the items after it is scanned densely
            # afterwards (no touched list, no branch in the inner loop); a rare one keeps the list
            work = 0
            for p in range(col_indptr[i], col_indptr[i + 1]):
                work = work + row_indptr[col_users[p] + 1] - col_pos[p] - 1
            dense = work * 4 >= n_items - i
            n_touched = 0
            for p in range(col_indptr[i], col_indptr[i + 1]):
                u = col_users[p]
                w = row_data[col_pos[p]]
                if p + 1 < col_indptr[i + 1]:  # the next user's row tail starts at a random place
                    fr_knn_prefetch(&row_items[col_pos[p + 1]])
                    fr_knn_prefetch(&row_data[col_pos[p + 1]])
                if dense:
                    scatter_dense(&row_items[0], &row_data[0], col_pos[p] + 1, row_indptr[u + 1], w, acc, common,
                                  use_common)
                else:
                    n_touched = scatter_sparse(&row_items[0], &row_data[0], col_pos[p] + 1, row_indptr[u + 1], w,
                                               acc, common, use_common, touched, marked, n_touched)
            if dense:  # select straight from the scan: an exact zero sum has similarity 0, never kept
                for j in range(i + 1, n_items):
                    if acc[j] != 0:
                        s = acc[j] * (<double> scale[i] * scale[j])
                        if use_common:
                            s = s * common[j] / (common[j] + shrinkage)
                        acc[j] = 0
                        sv = <floating> s
                        if sv > 0:
                            offer_pair(&buf_s[tid, 0, 0], &buf_i[tid, 0, 0], &buf_n[tid, 0], bar_s, bar_i, k, sv,
                                       <int> i, j, &popularity[0])
                    if use_common:
                        common[j] = 0
            for t in range(n_touched):
                j = touched[t]
                s = acc[j] * (<double> scale[i] * scale[j])
                if use_common:
                    s = s * common[j] / (common[j] + shrinkage)
                    common[j] = 0
                acc[j] = 0
                marked[j] = 0
                sv = <floating> s
                if sv > 0:
                    offer_pair(&buf_s[tid, 0, 0], &buf_i[tid, 0, 0], &buf_n[tid, 0], bar_s, bar_i, k, sv, <int> i, j,
                               &popularity[0])
        free(acc)
        free(common)
        free(touched)
        free(marked)
        free(bar_s)
        free(bar_i)
    if failed:
        raise MemoryError("item_neighbours_pairs: out of memory for a per-thread buffer")
    # merge: each thread's best k of an item appended to the first thread's buffer (2k entries), kept to k
    for i in prange(n_items, schedule="static", nogil=True, num_threads=num_threads):
        size = buf_n[0, i]
        for t in range(1, n_heaps):
            select_best(&buf_s[0, i, 0], &buf_i[0, i, 0], size, k, &popularity[0])
            size = min(size, k)
            m = buf_n[t, i]
            select_best(&buf_s[t, i, 0], &buf_i[t, i, 0], m, k, &popularity[0])
            m = min(m, k)
            for j in range(m):
                buf_s[0, i, size + j] = buf_s[t, i, j]
                buf_i[0, i, size + j] = buf_i[t, i, j]
            size = size + m
        out_counts[i] = finish_row(&buf_s[0, i, 0], &buf_i[0, i, 0], size, k, &out_sims[i, 0], &out_ids[i, 0],
                                   &popularity[0])


def weigh_entries(const index_t[::1] indptr, const int[::1] indices, const source_t[::1] data, int mode,
                  double k1, double b, floating[::1] out, floating[::1] scale, double[::1] work):
    """Each entry's weight and each item's scale for the item-item similarities of a users x items
    CSR with positive values (``mode`` 0 cosine, 1 TF-IDF, 2 BM25; the formulas of ``fastrec.models.knn``).

    Users are the terms: ``idf(u) = log(n_items) - log1p(n_u)``.  Per-item sums (squared norms,
    BM25 lengths) are taken in float64 in ``work`` (n_items, overwritten), in entry order; ``scale``
    is 1 / norm (0 for an empty item) for cosine and TF-IDF, 1 for BM25.  Serial: two passes over
    the entries, memory bound.
    """
    cdef Py_ssize_t n_users = indptr.shape[0] - 1
    cdef Py_ssize_t n_items = scale.shape[0]
    cdef Py_ssize_t u, i
    cdef index_t p
    cdef double v, idf, total = 0.0, mean, log_items = log(<double> max(n_items, 1))
    with nogil:
        for i in range(n_items):
            work[i] = 0.0
        if mode == 2:
            for p in range(indptr[n_users]):
                work[indices[p]] += <double> data[p]
            for i in range(n_items):
                total += work[i]
            mean = total / n_items if n_items > 0 else 1.0
            if mean <= 0:
                mean = 1.0
            for i in range(n_items):  # the length normalisation, then BM25's term weight
                work[i] = k1 * ((1.0 - b) + b * work[i] / mean)
                scale[i] = 1
            for u in range(n_users):
                idf = log_items - log1p(<double> (indptr[u + 1] - indptr[u]))
                for p in range(indptr[u], indptr[u + 1]):
                    v = data[p]
                    out[p] = <floating> (v * (k1 + 1.0) / (work[indices[p]] + v) * idf)
        else:
            for u in range(n_users):
                idf = log_items - log1p(<double> (indptr[u + 1] - indptr[u]))
                for p in range(indptr[u], indptr[u + 1]):
                    v = data[p]
                    if mode == 1:
                        v = sqrt(v) * idf
                    out[p] = <floating> v
                    work[indices[p]] += v * v
            for i in range(n_items):
                scale[i] = <floating> (1.0 / sqrt(work[i])) if work[i] > 0 else 0


def by_item(const index_t[::1] row_indptr, const int[::1] row_items, long long[::1] col_indptr,
            int[::1] col_users, long long[::1] col_pos):
    """The by-item layout of a users x items CSR whose rows are sorted: for each item, its users
    in increasing order (``col_users``) and where each entry sits in the CSR (``col_pos``).

    A counting sort, serial (memory bound, and one parallel region fewer); ``col_indptr`` has
    n_items + 1 entries.
    """
    cdef Py_ssize_t n_users = row_indptr.shape[0] - 1
    cdef Py_ssize_t n_items = col_indptr.shape[0] - 1
    cdef Py_ssize_t u, i
    cdef index_t p
    cdef long long dest, total = 0, count
    with nogil:
        for i in range(n_items + 1):
            col_indptr[i] = 0
        for p in range(row_indptr[n_users]):
            col_indptr[row_items[p] + 1] += 1
        for i in range(n_items):
            count = col_indptr[i + 1]
            col_indptr[i + 1] = total + count
            total = total + count
        # col_indptr[i] is now item i's start; walking users in order fills each item's users sorted
        for u in range(n_users):
            for p in range(row_indptr[u], row_indptr[u + 1]):
                i = row_items[p]
                dest = col_indptr[i]
                col_users[dest] = <int> u
                col_pos[dest] = p
                col_indptr[i] = dest + 1
        # shift back: the end of item i - 1 is the start of item i
        for i in range(n_items, 0, -1):
            col_indptr[i] = col_indptr[i - 1]
        col_indptr[0] = 0


def neighbour_csr(const int[:, ::1] ids, const floating[:, ::1] sims, const long long[::1] indptr,
                  int[::1] out_indices, floating[::1] out_data):
    """Copy each item's kept neighbours (the first ``indptr[i + 1] - indptr[i]`` of its row, sorted
    by id by the neighbour kernels) into a CSR's ``indices``/``data``.  Serial: a copy is cheap,
    and on a loaded machine every parallel region costs a wait for the slowest thread."""
    cdef Py_ssize_t i
    cdef long long m, start
    with nogil:
        for i in range(ids.shape[0]):
            start = indptr[i]
            for m in range(indptr[i + 1] - start):
                out_indices[start + m] = ids[i, m]
                out_data[start + m] = sims[i, m]


def score_rows(const index_t[::1] q_indptr, const int[::1] q_items, const floating[::1] q_data,
               const index_t[::1] s_indptr, const int[::1] s_items, const floating[::1] s_data,
               const index_t[::1] seen_indptr, const int[::1] seen_items,
               const unsigned char[::1] blocked, const unsigned char[::1] allowed, Py_ssize_t n_items,
               int n, int[:, ::1] out_ids, floating[:, ::1] out_scores, int num_threads):
    """Top-``n`` items for each query row: ``sum_j q[j] * S[j, :]``.

    ``seen_*`` (one CSR row per query, sorted; an indptr of zeros for none)
    and ``blocked`` (n_items bytes, 1 = never recommend, or empty for none) filter items;
    ``allowed`` (n_items bytes, or empty for all) restricts them to candidates.
    """
    cdef Py_ssize_t n_rows = q_indptr.shape[0] - 1
    cdef bint restrict = allowed.shape[0] > 0
    cdef bint use_blocked = blocked.shape[0] > 0
    cdef Py_ssize_t r
    cdef index_t p, q
    cdef int j, i, t, n_touched, size
    cdef double w
    cdef double *acc
    cdef int *touched
    cdef char *marked
    cdef floating *hs
    cdef int *hi
    cdef int failed = 0
    if n_rows == 0:
        return
    if n <= 0 or n_items == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        acc = <double *> calloc(n_items, sizeof(double))
        touched = <int *> malloc(n_items * sizeof(int))
        marked = <char *> calloc(n_items, sizeof(char))
        hs = <floating *> malloc(n * sizeof(floating))
        hi = <int *> malloc(n * sizeof(int))
        for r in prange(n_rows, schedule="dynamic", chunksize=16):
            if acc == NULL or touched == NULL or marked == NULL or hs == NULL or hi == NULL:
                failed += 1
                continue
            n_touched = 0
            for p in range(q_indptr[r], q_indptr[r + 1]):
                j = q_items[p]
                w = q_data[p]
                for q in range(s_indptr[j], s_indptr[j + 1]):
                    i = s_items[q]
                    if not marked[i]:
                        marked[i] = 1
                        touched[n_touched] = i
                        n_touched = n_touched + 1
                    acc[i] += w * s_data[q]
            # seen items of this row are marked 2 so the selection skips them
            for p in range(seen_indptr[r], seen_indptr[r + 1]):
                i = seen_items[p]
                if marked[i] == 1:
                    marked[i] = 2
            size = 0
            for t in range(n_touched):
                i = touched[t]
                if marked[i] == 1 and not (use_blocked and blocked[i]) and (not restrict or allowed[i]):
                    heap_push(hs, hi, &size, n, <floating> acc[i], i)
                acc[i] = 0
                marked[i] = 0
            heap_drain_sorted(hs, hi, size, n, &out_scores[r, 0], &out_ids[r, 0])
        free(acc)
        free(touched)
        free(marked)
        free(hs)
        free(hi)
    if failed:
        raise MemoryError("score_rows: out of memory for a per-thread buffer")
