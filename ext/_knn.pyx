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

Selection is deterministic: score descending, ties broken by the lower item id.
``score_rows`` writes each row best-first; the neighbour kernels write each
item's kept neighbours sorted by id (the order of the CSR) and their count,
sparing a heap sort by score per item.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport INFINITY, sqrt
from libc.stdlib cimport calloc, malloc, free

include "_heap.pxi"

ctypedef fused index_t:
    int
    long long


cdef inline void lazy_push(floating *hs, int *hi, int *size, int k, floating s, int item) noexcept nogil:
    """``heap_push`` that appends while the row has room and builds the heap once it is full.

    A row is a plain list while ``size < k`` and a min-heap (worst at the root)
    when ``size == k``: a rare item's row never pays for sifting, and a write to
    a cold row does not wait on reading its parent.  The kept set is the same as
    ``heap_push``'s (best scores, ties by the lower id); the order is not.
    """
    cdef int pos
    if size[0] < k:
        hs[size[0]] = s
        hi[size[0]] = item
        size[0] += 1
        if size[0] == k:
            for pos in range((k - 2) // 2, -1, -1):
                sift_down(hs, hi, k, pos)
    elif worse(hs[0], hi[0], s, item):
        hs[0] = s
        hi[0] = item
        sift_down(hs, hi, k, 0)


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


cdef inline void pad_row(floating *out_s, int *out_i, int size, int k) noexcept nogil:
    """Pad a neighbour row after its ``size`` kept entries."""
    cdef int j
    for j in range(size, k):
        out_s[j] = 0
        out_i[j] = -1


def item_neighbours(const index_t[::1] col_indptr, const int[::1] col_users, const floating[::1] col_data,
                    const index_t[::1] row_indptr, const int[::1] row_items, const floating[::1] row_data,
                    const floating[::1] scale, double shrinkage, int k,
                    int[:, ::1] out_ids, floating[:, ::1] out_sims, int[::1] out_counts, int num_threads):
    """Top-``k`` neighbours of every item (itself excluded).

    ``col_*`` is the weighted matrix by item (items x users, CSR), ``row_*``
    the same matrix by user (users x items, CSR).  The similarity of items i
    and j is ``dot_ij * scale[i] * scale[j]`` (``scale`` = 1 / norm for
    cosine), times ``c_ij / (c_ij + shrinkage)`` with ``c_ij`` their common
    users when ``shrinkage > 0``.  Only pairs with at least one common user
    and a similarity > 0 are kept; each row holds its ``out_counts[i]`` kept
    neighbours sorted by id, then padding (id -1, similarity 0).
    """
    cdef Py_ssize_t n_items = col_indptr.shape[0] - 1
    cdef Py_ssize_t i
    cdef index_t p, q
    cdef int u, j, t, n_touched, size
    cdef long long work
    cdef bint dense
    cdef double s
    cdef floating w
    cdef floating *acc
    cdef int *common
    cdef int *touched
    cdef char *marked
    cdef bint use_common = shrinkage > 0
    cdef int failed = 0
    if k <= 0 or n_items == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        acc = <floating *> calloc(n_items, sizeof(floating))
        common = <int *> calloc(n_items, sizeof(int))
        touched = <int *> malloc(n_items * sizeof(int))
        marked = <char *> calloc(n_items, sizeof(char))
        for i in prange(n_items, schedule="dynamic", chunksize=8):
            if acc == NULL or common == NULL or touched == NULL or marked == NULL:
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
            if dense:
                for j in range(n_items):
                    if acc[j] != 0 and j != i:
                        s = acc[j] * (<double> scale[i] * scale[j])
                        if use_common:
                            s = s * common[j] / (common[j] + shrinkage)
                        if s > 0:
                            lazy_push(&out_sims[i, 0], &out_ids[i, 0], &size, k, <floating> s, j)
                    acc[j] = 0
                    if use_common:
                        common[j] = 0
            for t in range(n_touched):
                j = touched[t]
                s = acc[j] * (<double> scale[i] * scale[j])
                if use_common:
                    s = s * common[j] / (common[j] + shrinkage)
                    common[j] = 0
                if s > 0 and j != i:
                    lazy_push(&out_sims[i, 0], &out_ids[i, 0], &size, k, <floating> s, j)
                acc[j] = 0
                marked[j] = 0
            sort_by_id(&out_ids[i, 0], &out_sims[i, 0], size)
            out_counts[i] = size
            pad_row(&out_sims[i, 0], &out_ids[i, 0], size, k)
        free(acc)
        free(common)
        free(touched)
        free(marked)
    if failed:
        raise MemoryError("item_neighbours: out of memory for a per-thread buffer")


def item_neighbours_pairs(const index_t[::1] col_indptr, const int[::1] col_users, const index_t[::1] col_pos,
                          const index_t[::1] row_indptr, const int[::1] row_items, const floating[::1] row_data,
                          const floating[::1] scale, double shrinkage, int k,
                          floating[:, :, ::1] heap_s, int[:, :, ::1] heap_i, int[:, ::1] heap_n,
                          int[:, ::1] out_ids, floating[:, ::1] out_sims, int[::1] out_counts, int num_threads):
    """``item_neighbours`` computing each pair once: half the multiply-adds.

    Item i accumulates its dot products with the items j > i only (``col_pos[p]``
    is where i sits in the row of its p-th user, and rows are sorted), and each
    pair's similarity goes into both items' heaps.  Heaps are per thread
    (``heap_*`` is threads x items x k, ``heap_n`` the sizes, zeroed), so no
    locks; the threads' heaps of each item are merged at the end.  Each pair is
    seen by one thread, so the merged top-k is the same as ``item_neighbours``.
    """
    cdef Py_ssize_t n_items = col_indptr.shape[0] - 1
    cdef int n_heaps = heap_n.shape[0]
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
    cdef bint use_common = shrinkage > 0
    cdef int failed = 0
    if k <= 0 or n_items == 0:
        return
    if num_threads < 1:
        # each thread needs its own heaps: 0 would mean OpenMP's default team, possibly more threads than heaps
        raise ValueError(f"num_threads must be >= 1 (one set of heaps per thread); got {num_threads}")
    with nogil, parallel(num_threads=min(num_threads, n_heaps)):
        tid = threadid()
        acc = <floating *> calloc(n_items, sizeof(floating))
        common = <int *> calloc(n_items, sizeof(int))
        touched = <int *> malloc(n_items * sizeof(int))
        marked = <char *> calloc(n_items, sizeof(char))
        for i in prange(n_items, schedule="dynamic", chunksize=8):
            if acc == NULL or common == NULL or touched == NULL or marked == NULL or tid >= n_heaps:
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
                        if s > 0:
                            lazy_push(&heap_s[tid, i, 0], &heap_i[tid, i, 0], &heap_n[tid, i], k, <floating> s, j)
                            lazy_push(&heap_s[tid, j, 0], &heap_i[tid, j, 0], &heap_n[tid, j], k, <floating> s,
                                      <int> i)
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
                if s > 0:
                    lazy_push(&heap_s[tid, i, 0], &heap_i[tid, i, 0], &heap_n[tid, i], k, <floating> s, j)
                    lazy_push(&heap_s[tid, j, 0], &heap_i[tid, j, 0], &heap_n[tid, j], k, <floating> s, <int> i)
        free(acc)
        free(common)
        free(touched)
        free(marked)
    if failed:
        raise MemoryError("item_neighbours_pairs: out of memory for a per-thread buffer")
    # merge: the first thread's row is copied as is (a list, or a heap when full), the others pushed onto it
    for i in prange(n_items, schedule="static", nogil=True, num_threads=num_threads):
        size = heap_n[0, i]
        for m in range(size):
            out_sims[i, m] = heap_s[0, i, m]
            out_ids[i, m] = heap_i[0, i, m]
        for t in range(1, n_heaps):
            for m in range(heap_n[t, i]):
                lazy_push(&out_sims[i, 0], &out_ids[i, 0], &size, k, heap_s[t, i, m], heap_i[t, i, m])
        sort_by_id(&out_ids[i, 0], &out_sims[i, 0], size)
        out_counts[i] = size
        pad_row(&out_sims[i, 0], &out_ids[i, 0], size, k)


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
