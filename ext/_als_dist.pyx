# cython: language_level=3
"""The item half-step of a distributed CG fit, summed over blocks of users.

``_als.pyx`` solves an item's row system with every user's factors at hand.
On a Dask cluster (``fastrec.distributed``) each worker holds a block of
users instead, and conjugate gradient needs from the users only two sums
per item i, over the users u who rated it:

    residual:  sum_u ((1 - c_ui) (x_u . v_i) + c_ui p_ui) x_u     (v = the warm start)
    step:      sum_u (c_ui - 1) (x_u . v_i) x_u                     (v = the search direction)

(c and p: confidence and preference, as in ``_als.pyx``).  ``item_sums``
adds one block of users' part of either sum, for a range of items, reading
the block's rows by user (the shard the user half-step reads).  The item's
owner adds the parts of every block and runs CG's dense steps.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport fabs

include "_common.pxi"

ctypedef fused index_t:
    int
    long long


cdef inline index_t first_at_least(const int *indices, index_t a, index_t b, int value) noexcept nogil:
    """The first position in the sorted ``indices[a:b]`` holding at least ``value`` (b if none)."""
    cdef index_t mid
    while a < b:
        mid = a + (b - a) // 2
        if indices[mid] < value:
            a = mid + 1
        else:
            b = mid
    return a


cdef void sums_of_range(const index_t *indptr, const int *indices, const floating *data, int n_rows,
                        const floating *X, const floating *V, floating *out, int lo, int hi,
                        int item_lo, floating alpha, bint implicit_convention, bint residual,
                        int f) noexcept nogil:
    """Add the block's part for items ``lo:hi`` (rows of ``V`` and ``out`` are items from ``item_lo``)."""
    cdef int u, col
    cdef index_t j, end
    cdef floating r, a, c, w
    cdef const floating *x
    cdef const floating *v
    for u in range(n_rows):
        end = indptr[u + 1]
        j = first_at_least(indices, indptr[u], end, lo)
        x = &X[<long long> u * f]
        while j < end:
            col = indices[j]
            if col >= hi:
                break
            if col < lo:  # not sorted (callers pass canonical rows): skipped, never written out of range
                j += 1
                continue
            r = data[j]
            a = fabs(r)
            if implicit_convention:
                c = alpha * a
            else:
                c = 1 + alpha * a
            v = &V[<long long> (col - item_lo) * f]
            if residual:
                w = (1 - c) * dot(x, v, f)
                if r > 0:
                    w = w + c
                axpy(w, x, &out[<long long> (col - item_lo) * f], f)
            elif c != 1:  # c == 1 adds nothing to A (the single-machine kernel drops those entries)
                axpy((c - 1) * dot(x, v, f), x, &out[<long long> (col - item_lo) * f], f)
            j += 1


def item_sums(const index_t[::1] indptr, const int[::1] indices, const floating[::1] data,
              const floating[:, ::1] X, const floating[:, ::1] V, floating[:, ::1] out, int item_lo,
              floating alpha, bint implicit_convention, bint residual, int num_threads):
    """Add to ``out`` one block of users' part of the residual or step sums (module docstring).

    Parameters
    ----------
    indptr, indices, data : CSR arrays of the block's users (sorted global item ids, raw values r).
    X : (n_rows, f) the users' factors.
    V : (n, f) the vectors of items ``item_lo:item_lo + n`` (warm start or search direction).
    out : (n, f) the sums, added to in place.
    item_lo : the first item of ``V`` and ``out``; entries of other items are skipped.
    residual : the residual's sum (else the step's).
    num_threads : OpenMP threads; each takes a contiguous range of items, so every item's sum
        runs over the users in order whatever the thread count.
    """
    cdef int n_rows = X.shape[0]
    cdef int f = X.shape[1]
    cdef int n = V.shape[0]
    cdef int parts, part, lo, hi
    if indptr.shape[0] != n_rows + 1:
        raise ValueError("indptr does not match the number of rows of X")
    if V.shape[1] != f or out.shape[0] != n or out.shape[1] != f:
        raise ValueError("factor shapes do not agree")
    if indices.shape[0] < indptr[n_rows] or data.shape[0] < indptr[n_rows]:
        raise ValueError("indices and data must hold indptr[-1] entries")
    if n_rows == 0 or n == 0 or f == 0:
        return
    parts = max(1, min(num_threads, n))
    for part in prange(parts, nogil=True, num_threads=parts, schedule="static"):
        lo = item_lo + <int> ((<long long> n * part) // parts)
        hi = item_lo + <int> ((<long long> n * (part + 1)) // parts)
        sums_of_range(&indptr[0], &indices[0], &data[0], n_rows, &X[0, 0], &V[0, 0], &out[0, 0],
                      lo, hi, item_lo, alpha, implicit_convention, residual, f)
