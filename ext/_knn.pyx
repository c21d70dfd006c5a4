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

Ordering is deterministic: score descending, ties broken by the lower item id.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport INFINITY, sqrt
from libc.stdlib cimport calloc, malloc, free

include "_heap.pxi"

ctypedef fused index_t:
    int
    long long


def item_neighbours(const index_t[::1] col_indptr, const int[::1] col_users, const floating[::1] col_data,
                    const index_t[::1] row_indptr, const int[::1] row_items, const floating[::1] row_data,
                    const floating[::1] scale, double shrinkage, int k,
                    int[:, ::1] out_ids, floating[:, ::1] out_sims, int num_threads):
    """Top-``k`` neighbours of every item (itself excluded).

    ``col_*`` is the weighted matrix by item (items x users, CSR), ``row_*``
    the same matrix by user (users x items, CSR).  The similarity of items i
    and j is ``dot_ij * scale[i] * scale[j]`` (``scale`` = 1 / norm for
    cosine), times ``c_ij / (c_ij + shrinkage)`` with ``c_ij`` their common
    users when ``shrinkage > 0``.  Only pairs with at least one common user
    and a similarity > 0 are kept.  Rows of the outputs are padded with id -1.
    """
    cdef Py_ssize_t n_items = col_indptr.shape[0] - 1
    cdef Py_ssize_t i
    cdef index_t p, q
    cdef int u, j, t, n_touched, size
    cdef double w, s
    cdef double *acc
    cdef int *common
    cdef int *touched
    cdef char *marked
    cdef floating *hs
    cdef int *hi
    cdef bint use_common = shrinkage > 0
    if k <= 0 or n_items == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        acc = <double *> calloc(n_items, sizeof(double))
        common = <int *> calloc(n_items, sizeof(int))
        touched = <int *> malloc(n_items * sizeof(int))
        marked = <char *> calloc(n_items, sizeof(char))
        hs = <floating *> malloc(k * sizeof(floating))
        hi = <int *> malloc(k * sizeof(int))
        for i in prange(n_items, schedule="dynamic", chunksize=8):
            n_touched = 0
            for p in range(col_indptr[i], col_indptr[i + 1]):
                u = col_users[p]
                w = col_data[p]
                for q in range(row_indptr[u], row_indptr[u + 1]):
                    j = row_items[q]
                    if j == i:
                        continue
                    if not marked[j]:
                        marked[j] = 1
                        touched[n_touched] = j
                        n_touched = n_touched + 1
                    acc[j] += w * row_data[q]
                    common[j] += 1
            size = 0
            for t in range(n_touched):
                j = touched[t]
                s = acc[j] * scale[i] * scale[j]
                if use_common:
                    s = s * common[j] / (common[j] + shrinkage)
                if s > 0:
                    heap_push(hs, hi, &size, k, <floating> s, j)
                acc[j] = 0
                common[j] = 0
                marked[j] = 0
            heap_drain_sorted(hs, hi, size, k, &out_sims[i, 0], &out_ids[i, 0])
        free(acc)
        free(common)
        free(touched)
        free(marked)
        free(hs)
        free(hi)


def item_neighbours_pairs(const index_t[::1] col_indptr, const int[::1] col_users, const index_t[::1] col_pos,
                          const index_t[::1] row_indptr, const int[::1] row_items, const floating[::1] row_data,
                          const floating[::1] scale, double shrinkage, int k,
                          floating[:, :, ::1] heap_s, int[:, :, ::1] heap_i, int[:, ::1] heap_n,
                          int[:, ::1] out_ids, floating[:, ::1] out_sims, int num_threads):
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
    cdef floating *hs
    cdef int *hi
    cdef bint use_common = shrinkage > 0
    if k <= 0 or n_items == 0:
        return
    with nogil, parallel(num_threads=min(num_threads, n_heaps)):
        tid = threadid()
        acc = <floating *> calloc(n_items, sizeof(floating))
        common = <int *> calloc(n_items, sizeof(int))
        touched = <int *> malloc(n_items * sizeof(int))
        marked = <char *> calloc(n_items, sizeof(char))
        for i in prange(n_items, schedule="dynamic", chunksize=8):
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
                    for q in range(col_pos[p] + 1, row_indptr[u + 1]):
                        acc[row_items[q]] += w * row_data[q]
                        if use_common:
                            common[row_items[q]] += 1
                else:
                    for q in range(col_pos[p] + 1, row_indptr[u + 1]):
                        j = row_items[q]
                        if not marked[j]:
                            marked[j] = 1
                            touched[n_touched] = j
                            n_touched = n_touched + 1
                        acc[j] += w * row_data[q]
                        if use_common:
                            common[j] += 1
            if dense:  # select straight from the scan: an exact zero sum has similarity 0, never kept
                for j in range(i + 1, n_items):
                    if acc[j] != 0:
                        s = acc[j] * scale[i] * scale[j]
                        if use_common:
                            s = s * common[j] / (common[j] + shrinkage)
                        acc[j] = 0
                        if s > 0:
                            heap_push(&heap_s[tid, i, 0], &heap_i[tid, i, 0], &heap_n[tid, i], k, <floating> s, j)
                            heap_push(&heap_s[tid, j, 0], &heap_i[tid, j, 0], &heap_n[tid, j], k, <floating> s,
                                      <int> i)
                    if use_common:
                        common[j] = 0
            for t in range(n_touched):
                j = touched[t]
                s = acc[j] * scale[i] * scale[j]
                if use_common:
                    s = s * common[j] / (common[j] + shrinkage)
                    common[j] = 0
                acc[j] = 0
                marked[j] = 0
                if s > 0:
                    heap_push(&heap_s[tid, i, 0], &heap_i[tid, i, 0], &heap_n[tid, i], k, <floating> s, j)
                    heap_push(&heap_s[tid, j, 0], &heap_i[tid, j, 0], &heap_n[tid, j], k, <floating> s, <int> i)
        free(acc)
        free(common)
        free(touched)
        free(marked)
    with nogil, parallel(num_threads=num_threads):
        hs = <floating *> malloc(k * sizeof(floating))
        hi = <int *> malloc(k * sizeof(int))
        for i in prange(n_items, schedule="static"):
            size = 0
            for t in range(n_heaps):
                for m in range(heap_n[t, i]):
                    heap_push(hs, hi, &size, k, heap_s[t, i, m], heap_i[t, i, m])
            heap_drain_sorted(hs, hi, size, k, &out_sims[i, 0], &out_ids[i, 0])
        free(hs)
        free(hi)


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
