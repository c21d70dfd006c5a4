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
owner adds the parts of every block and runs CG's dense steps (``cg_rows``).
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport fabs
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

include "_common.pxi"

ctypedef fused index_t:
    int
    long long

# column indices as decoded (int32), or a shard's stored uint16 low halves when it has no high ones
ctypedef fused column_t:
    int
    unsigned short


cdef inline index_t first_at_least(const column_t *indices, index_t a, index_t b, int value) noexcept nogil:
    """The first position in the sorted ``indices[a:b]`` holding at least ``value`` (b if none)."""
    cdef index_t mid
    while a < b:
        mid = a + (b - a) // 2
        if indices[mid] < value:
            a = mid + 1
        else:
            b = mid
    return a


cdef void add_item(const floating *X, const int *users, const floating *values, int first, int count,
                   bint constant, const floating *v, floating *out, floating alpha, bint implicit_convention,
                   bint residual, int f, const floating **rows, floating *weight, floating *offset) noexcept nogil:
    """Add one item's terms over its users (``count`` of them from ``first``) with ``weighted_gram_apply``.

    ``constant``: every value is ``values[0]`` (binary data; the values were not regrouped).
    """
    cdef int t, m = 0
    cdef floating r, a, c
    for t in range(count):
        r = values[0] if constant else values[first + t]
        a = fabs(r)
        if implicit_convention:
            c = alpha * a
        else:
            c = 1 + alpha * a
        if residual:
            weight[m] = 1 - c
            offset[m] = c if r > 0 else 0
        elif c != 1:  # c == 1 adds nothing to A (the single-machine kernel drops those entries)
            weight[m] = c - 1
        else:
            continue
        rows[m] = &X[<long long> users[first + t] * f]
        m += 1
    if m:
        weighted_gram_apply(rows, weight, offset if residual else NULL, m, v, out, f)


def item_sums(const index_t[::1] indptr, const column_t[::1] indices, const floating[::1] data,
              const floating[:, ::1] X, const floating[:, ::1] V, floating[:, ::1] out, int item_lo,
              floating alpha, bint implicit_convention, bint residual, int num_threads,
              int[::1] users, floating[::1] values, bint constant=False, unsigned short[::1] counts=None,
              bint counts_known=False):
    """Add to ``out`` one block of users' part of the residual or step sums (module docstring).

    The entries of the items of ``V`` are first regrouped by item (a
    counting sort into ``users`` and ``values``: for each item its users in
    order), then each item's terms are added with ``weighted_gram_apply``,
    the single-machine CG's own routine: the item's vector and sum stay in
    registers while its users' factor rows stream.

    Parameters
    ----------
    indptr, indices, data : CSR arrays of the block's users (sorted global item ids, raw values r);
        the ids int32, or uint16 (a compact shard's stored low halves, when no id needs more).
    X : (n_rows, f) the users' factors.
    V : (n, f) the vectors of items ``item_lo:item_lo + n`` (warm start or search direction).
    out : (n, f) the sums, added to in place.
    item_lo : the first item of ``V`` and ``out``; entries of other items are skipped.
    residual : the residual's sum (else the step's).
    num_threads : OpenMP threads over the items; every item's sum runs over its users in order,
        so the result has the same bits whatever the thread count.
    users, values : work space of at least ``indptr[-1]`` entries (reused across calls: fresh
        memory for every chunk of rows would cost page faults).
    constant : every value equals ``data[0]`` (binary data): the values are not regrouped.
    counts : optional (n,) entries of each item in these rows, kept by the caller between calls
        on the same rows: with ``counts_known`` they are read instead of counted (the first of
        the regrouping's two passes); else they are written.
    Returns whether ``counts`` hold this call's counts (False without them, or when an item has
    more than 65,535 entries here).
    """
    cdef int n_rows = X.shape[0]
    cdef int f = X.shape[1]
    cdef int n = V.shape[0]
    cdef int u, i, slot, longest = 0, failed = 0
    cdef index_t j, end
    cdef int *start
    cdef int *ends = NULL
    cdef const floating **rows
    cdef floating *weight
    if indptr.shape[0] != n_rows + 1:
        raise ValueError("indptr does not match the number of rows of X")
    if V.shape[1] != f or out.shape[0] != n or out.shape[1] != f:
        raise ValueError("factor shapes do not agree")
    if indices.shape[0] < indptr[n_rows] or data.shape[0] < indptr[n_rows]:
        raise ValueError("indices and data must hold indptr[-1] entries")
    if users.shape[0] < indptr[n_rows] or (not constant and values.shape[0] < indptr[n_rows]):
        raise ValueError("users and values must hold indptr[-1] entries")
    if indptr[n_rows] - indptr[0] > 2147483647:
        raise ValueError("item_sums takes at most 2**31 - 1 entries at a time")
    cdef bint keep = counts is not None and counts.shape[0] >= n
    if counts_known and not keep:
        raise ValueError("counts_known needs counts of at least one entry per item")
    if n_rows == 0 or n == 0 or f == 0 or indptr[n_rows] == indptr[0]:
        if keep and not counts_known:
            counts[:n] = 0
        return keep
    start = <int *> malloc((n + 1) * sizeof(int))
    if start == NULL:
        raise MemoryError("item_sums: no memory to regroup the entries by item")
    with nogil:
        start[0] = 0
        if counts_known:
            for i in range(n):
                start[i + 1] = counts[i]
        else:
            memset(start, 0, (n + 1) * sizeof(int))
            for u in range(n_rows):  # entries per item
                end = indptr[u + 1]
                j = first_at_least(&indices[0], indptr[u], end, item_lo)
                while j < end and indices[j] < item_lo + n:
                    if indices[j] >= item_lo:  # rows are sorted; this only guards against writing out of range
                        start[indices[j] - item_lo + 1] += 1
                    j += 1
            if keep:
                for i in range(n):
                    if start[i + 1] > 65535:
                        keep = False
                        break
                    counts[i] = <unsigned short> start[i + 1]
        for i in range(n):
            if start[i + 1] > longest:
                longest = start[i + 1]
            start[i + 1] += start[i]
        if counts_known:  # the caller's counts must be these rows': checked (never a write out of range)
            ends = <int *> malloc((n + 1) * sizeof(int))
            if ends == NULL or start[n] > indptr[n_rows] - indptr[0]:
                failed = 2
            else:
                memcpy(ends, start, (n + 1) * sizeof(int))
        if not failed:
            for u in range(n_rows):  # by item, each item's users in order (start[i] moves to the item's end)
                end = indptr[u + 1]
                j = first_at_least(&indices[0], indptr[u], end, item_lo)
                while j < end and indices[j] < item_lo + n:
                    if indices[j] >= item_lo:
                        slot = start[indices[j] - item_lo]
                        if counts_known and slot >= ends[indices[j] - item_lo + 1]:
                            failed = 2
                            break
                        users[slot] = u
                        if not constant:
                            values[slot] = data[j]
                        start[indices[j] - item_lo] = slot + 1
                    j += 1
                if failed:
                    break
        if counts_known and not failed:
            for i in range(n):
                if start[i] != ends[i + 1]:
                    failed = 2
                    break
        if counts_known:
            free(ends)
        if failed:
            free(start)
            start = NULL
    if failed:
        raise ValueError("item_sums: counts do not match these rows' entries")
    with nogil:
        for i in range(n - 1, -1, -1):  # back to each item's first entry
            start[i + 1] = start[i]
        start[0] = 0
        with parallel(num_threads=num_threads):
            rows = <const floating **> malloc((longest + 1) * sizeof(floating *))
            weight = <floating *> malloc((2 * longest + 1) * sizeof(floating))
            for i in prange(n, schedule="dynamic", chunksize=64):
                if rows == NULL or weight == NULL:
                    failed = 1
                else:
                    add_item(&X[0, 0], &users[0], &data[0] if constant else &values[0], start[i],
                             start[i + 1] - start[i], constant, &V[i, 0], &out[i, 0], alpha, implicit_convention,
                             residual, f, rows, weight, weight + longest)
            free(rows)
            free(weight)
    free(start)
    if failed:
        raise MemoryError("item_sums: no memory for the per-thread work space")
    return keep


cdef inline void for_neg_reg(floating *r, const floating *x, floating reg, int f) noexcept nogil:
    """r = -r - reg x (``cg_residual``'s first line)."""
    cdef int t
    for t in range(f):
        r[t] = -r[t] - reg * x[t]


def cg_rows(floating[:, ::1] X, floating[:, ::1] R, floating[:, ::1] P, const floating[:, ::1] S,
            const floating[:, ::1] G, const floating[::1] reg, floating[::1] rsold, unsigned char[::1] active,
            bint residual, int num_threads):
    """CG's dense part of one round for a block of items, given the user blocks' sums ``S`` (added up).

    ``residual``: r = p = b - A x (``cg_residual`` in ``_als.pyx``) for the
    rows with ``active`` set (rows with entries), which stay active while
    r . r >= 1e-20; ``S`` holds the sum of ((1 - c)(x_u . x) + c p) x_u.
    Else one step (``cg_update``) of the active rows, ``S`` holding the sum
    of (c - 1)(x_u . p) x_u: rows stop when A is not positive definite
    along p (counted and returned) or when r . r < 1e-20.  The arithmetic
    is ``_als.pyx``'s per row; only the sums' order differs.
    """
    cdef int n = X.shape[0]
    cdef int f = X.shape[1]
    cdef int i, failures = 0
    cdef floating *Ap
    cdef floating pAp, step, rsnew
    if (R.shape[0] != n or P.shape[0] != n or S.shape[0] != n or reg.shape[0] != n or rsold.shape[0] != n
            or active.shape[0] != n):
        raise ValueError("the arrays of a block must have one row per item")
    if R.shape[1] != f or P.shape[1] != f or S.shape[1] != f or G.shape[0] != f or G.shape[1] != f:
        raise ValueError("factor shapes do not agree")
    if n == 0 or f == 0:
        return 0
    with nogil, parallel(num_threads=num_threads):
        Ap = <floating *> malloc(f * sizeof(floating))
        for i in prange(n, schedule="static"):
            if not active[i]:
                continue
            if residual:
                symv(&G[0, 0], &X[i, 0], &R[i, 0], f)
                for_neg_reg(&R[i, 0], &X[i, 0], reg[i], f)
                axpy(<floating> 1, &S[i, 0], &R[i, 0], f)
                memcpy(&P[i, 0], &R[i, 0], f * sizeof(floating))
                rsold[i] = dot(&R[i, 0], &R[i, 0], f)
                active[i] = rsold[i] >= 1e-20
                continue
            if Ap == NULL:
                failures += 1  # out of memory: the row stops where it is
                active[i] = 0
                continue
            symv(&G[0, 0], &P[i, 0], Ap, f)
            axpy(reg[i], &P[i, 0], Ap, f)
            axpy(<floating> 1, &S[i, 0], Ap, f)
            pAp = dot(&P[i, 0], Ap, f)
            if pAp <= 0:  # not positive definite along p: stop, keep what we have
                failures += 1
                active[i] = 0
                continue
            step = rsold[i] / pAp
            axpy(step, &P[i, 0], &X[i, 0], f)
            axpy(-step, Ap, &R[i, 0], f)
            rsnew = dot(&R[i, 0], &R[i, 0], f)
            if rsnew < 1e-20:
                active[i] = 0
                continue
            xpby(&R[i, 0], rsnew / rsold[i], &P[i, 0], f)
            rsold[i] = rsnew
        free(Ap)
    return failures

