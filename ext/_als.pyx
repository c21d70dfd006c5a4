# cython: language_level=3
"""Implicit-feedback ALS kernels (Hu, Koren and Volinsky 2008).

One half-step updates every row of ``X`` (users, or items when called on the
transposed matrix) with ``Y`` held fixed.  For row u with stored values r:

    c = 1 + alpha * |r|   (fastrec convention)   or   c = alpha * |r|  (implicit's)
    p = 1 if r > 0 else 0 (negative r is "thumbs down": preference 0)
    (YtY + lambda_u I + sum_j (c_j - 1) y_j y_j^T) x_u = sum_j c_j p_j y_j

Both solvers run over rows with OpenMP (dynamic schedule: popular rows do not
starve a thread), release the GIL and do no Python work per row.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport sqrt, fabs
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
from cpython.pycapsule cimport PyCapsule_GetName, PyCapsule_GetPointer
cimport numpy as cnp

cnp.import_array()

include "_common.pxi"

ctypedef fused index_t:
    int
    long long


cdef inline void confidence(floating r, floating alpha, bint implicit_convention,
                            floating *c, floating *p) noexcept nogil:
    """Confidence and preference of one stored value."""
    cdef floating a = fabs(r)
    if implicit_convention:
        c[0] = alpha * a
    else:
        c[0] = 1 + alpha * a
    p[0] = 1 if r > 0 else 0


DEF PREFETCH_AHEAD = 6
DEF SMALL_ROW = 64  # Cholesky rows up to this length skip BLAS (see cholesky_row)
# Python-visible: callers skip the BLAS thread limit when no row reaches BLAS
SMALL_ROW_LIMIT = SMALL_ROW
DEF GATHER_BYTES = 1048576  # gather a row's factor vectors when they fit in L2


cdef inline int cg_gather(const index_t *indptr, const int *indices, const floating *data,
                   int row, const floating *Y, floating alpha, bint implicit_convention, int f,
                   bint gather, const floating **rows, floating *weight, floating *offset,
                   floating *gathered) noexcept nogil:
    """CG setup, part 1: point ``rows`` at the row's factor vectors with their weights.

    With ``gather`` the vectors are first copied into one contiguous buffer,
    so every CG pass reads cache-resident, contiguous memory instead of
    chasing indices.  Returns the row's entry count.
    """
    cdef index_t j, start = indptr[row]
    cdef int t, n = <int> (indptr[row + 1] - start)
    cdef const floating *y
    cdef floating c, pref
    for t in range(n):
        j = start + t
        if t + PREFETCH_AHEAD < n:
            fr_prefetch(&Y[<long long> indices[j + PREFETCH_AHEAD] * f], f * sizeof(floating))
        y = &Y[<long long> indices[j] * f]
        if gather:
            memcpy(&gathered[<long long> t * f], y, f * sizeof(floating))
            y = &gathered[<long long> t * f]
        rows[t] = y
        confidence(data[j], alpha, implicit_convention, &c, &pref)
        weight[t] = 1 - c   # negated: the residual subtracts the sparse part of A x
        offset[t] = c * pref
    return n


cdef inline int cg_residual(int n, floating *x, floating reg, int f, floating *r, floating *p,
                     const floating **rows, floating *weight, const floating *offset,
                     floating *rsold) noexcept nogil:
    """CG setup, part 2: r = p = b - A x, given r = YtY x; returns the entries CG keeps.

    Entries with c == 1 add nothing to A; they counted towards b above and
    are dropped from the rows the CG passes read.
    """
    cdef int t, m = 0
    for t in range(f):
        r[t] = -r[t] - reg * x[t]
    weighted_gram_apply(rows, weight, offset, n, x, r, f)
    for t in range(n):
        if weight[t] != 0:
            rows[m] = rows[t]
            weight[m] = -weight[t]
            m += 1
    memcpy(p, r, f * sizeof(floating))
    rsold[0] = dot(r, r, f)
    return m


DEF CG_CONTINUE = 0
DEF CG_FAILED = 1     # not positive definite along p: stop, keep what we have
DEF CG_CONVERGED = 2


cdef inline int cg_update(floating *x, floating *r, floating *p, floating *Ap, floating reg, int f,
                   const floating **rows, const floating *weight, int m,
                   floating *rsold) noexcept nogil:
    """One CG step, given Ap = YtY p: finish A p, move x, r and p."""
    cdef floating pAp, step, rsnew
    axpy(reg, p, Ap, f)
    weighted_gram_apply(rows, weight, NULL, m, p, Ap, f)
    pAp = dot(p, Ap, f)
    if pAp <= 0:
        return CG_FAILED
    step = rsold[0] / pAp
    axpy(step, p, x, f)
    axpy(-step, Ap, r, f)
    rsnew = dot(r, r, f)
    if rsnew < 1e-20:
        return CG_CONVERGED
    xpby(r, rsnew / rsold[0], p, f)
    rsold[0] = rsnew
    return CG_CONTINUE


cdef int cg_row(const index_t *indptr, const int *indices, const floating *data,
                int row, floating *x, const floating *Y, const floating *YtY,
                floating reg, floating alpha, bint implicit_convention, int f,
                int steps, floating *r, floating *p, floating *Ap,
                const floating **rows, floating *weight, floating *offset,
                floating *gathered) noexcept nogil:
    """Warm-started conjugate gradient for one row; x is updated in place.

    The row's vectors are gathered when they fit in GATHER_BYTES.
    """
    cdef int it, m, status
    cdef int n = <int> (indptr[row + 1] - indptr[row])
    cdef floating rsold
    if n == 0:
        memset(x, 0, f * sizeof(floating))
        return 0
    cg_gather(indptr, indices, data, row, Y, alpha, implicit_convention, f,
              <size_t> n * f * sizeof(floating) <= GATHER_BYTES, rows, weight, offset, gathered)
    symv(YtY, x, r, f)
    m = cg_residual(n, x, reg, f, r, p, rows, weight, offset, &rsold)
    if rsold < 1e-20:
        return 0
    for it in range(steps):
        symv(YtY, p, Ap, f)
        status = cg_update(x, r, p, Ap, reg, f, rows, weight, m, &rsold)
        if status == CG_FAILED:
            return 1
        if status == CG_CONVERGED:
            break
    return 0


DEF GROUP = 4  # short rows solved together by cg_group
DEF SHORT_ROW_BYTES = 65536  # rows whose factor vectors fit in this many bytes are "short"


cdef int cg_group(const index_t *indptr, const int *indices, const floating *data,
                  int first, int count, floating *X, const floating *Y, const floating *YtY,
                  const floating *reg, floating alpha, bint implicit_convention, int f,
                  int steps, floating *scratch, int cap, const floating **rowptrs) noexcept nogil:
    """``cg_row`` for ``count`` (<= GROUP) consecutive short rows in lockstep.

    Each row gets exactly cg_row's arithmetic; only the dense products with
    YtY are computed for the whole group at once (``symv4``), so YtY streams
    from L2 once per group instead of once per row, which is what dominates
    short rows at high ``f``.  Rows hold at most ``cap`` entries; ``scratch``
    holds GROUP slots of 3 f + 2 cap + cap f values, ``rowptrs`` GROUP * cap.
    """
    cdef floating *x[GROUP]
    cdef floating *r[GROUP]
    cdef floating *p[GROUP]
    cdef floating *Ap[GROUP]
    cdef floating *weight[GROUP]
    cdef floating *offset[GROUP]
    cdef floating *gathered[GROUP]
    cdef const floating **rows[GROUP]
    cdef floating rsold[GROUP]
    cdef int m[GROUP]
    cdef int n[GROUP]
    cdef bint active[GROUP]
    cdef int s, it, status, n_active, failures = 0
    cdef long long slot = 3 * f + 2 * cap + <long long> cap * f

    for s in range(GROUP):
        r[s] = scratch + s * slot
        p[s] = r[s] + f
        Ap[s] = r[s] + 2 * f
        weight[s] = r[s] + 3 * f
        offset[s] = weight[s] + cap
        gathered[s] = offset[s] + cap
        rows[s] = rowptrs + s * cap
        active[s] = 0
        if s < count:
            x[s] = X + <long long> (first + s) * f
            n[s] = cg_gather(indptr, indices, data, first + s, Y, alpha, implicit_convention, f,
                             True, rows[s], weight[s], offset[s], gathered[s])
        else:
            x[s] = x[0]  # unused slots repeat a real row; their results are ignored
            memset(p[s], 0, f * sizeof(floating))

    symv4(YtY, <const floating **> x, r, f)  # YtY x for the whole group
    for s in range(count):
        if n[s] == 0:
            memset(x[s], 0, f * sizeof(floating))
            memset(p[s], 0, f * sizeof(floating))  # symv4 still reads it
            continue
        m[s] = cg_residual(n[s], x[s], reg[first + s], f, r[s], p[s], rows[s], weight[s],
                           offset[s], &rsold[s])
        active[s] = rsold[s] >= 1e-20

    for it in range(steps):
        n_active = 0
        for s in range(count):
            n_active += active[s]
        if n_active == 0:
            break
        symv4(YtY, <const floating **> p, Ap, f)
        for s in range(count):
            if active[s]:
                status = cg_update(x[s], r[s], p[s], Ap[s], reg[first + s], f, rows[s],
                                   weight[s], m[s], &rsold[s])
                failures += status == CG_FAILED
                active[s] = status == CG_CONTINUE
    return failures


# BLAS SYRK, bound on first need (``bind_blas``) from SciPy's cython_blas: importing SciPy costs a
# process ~25 MB, which a CG fit (a DaskALS worker) never needs
ctypedef void (*ssyrk_t)(char *uplo, char *trans, int *n, int *k, float *alpha, float *a, int *lda,
                         float *beta, float *c, int *ldc) noexcept nogil
ctypedef void (*dsyrk_t)(char *uplo, char *trans, int *n, int *k, double *alpha, double *a, int *lda,
                         double *beta, double *c, int *ldc) noexcept nogil
cdef ssyrk_t ssyrk = NULL
cdef dsyrk_t dsyrk = NULL


cdef void *_blas_pointer(dict capi, str name) except NULL:
    capsule = capi[name]
    return PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule))


def bind_blas():
    """Take SYRK from ``scipy.linalg.cython_blas`` (once): the Cholesky solve of rows over SMALL_ROW_LIMIT."""
    global ssyrk, dsyrk
    if ssyrk != NULL:
        return
    from scipy.linalg import cython_blas
    capi = cython_blas.__pyx_capi__
    dsyrk = <dsyrk_t> _blas_pointer(capi, "dsyrk")
    ssyrk = <ssyrk_t> _blas_pointer(capi, "ssyrk")


cdef inline void syrk_upper(int n, int k, floating scale, floating *G, floating *A) noexcept nogil:
    """A += scale * G^T G on the row-major upper triangle; G is row-major k x n.

    BLAS is column-major: its lower triangle is our row-major upper one.
    """
    cdef char uplo = b'L'
    cdef char trans = b'N'
    cdef floating one = 1
    if k == 0:
        return
    if floating is float:
        ssyrk(&uplo, &trans, &n, &k, &scale, G, &n, &one, A, &n)
    else:
        dsyrk(&uplo, &trans, &n, &k, &scale, G, &n, &one, A, &n)


cdef int cholesky_row(const index_t *indptr, const int *indices, const floating *data,
                      int row, floating *x, const floating *Y, const floating *YtY,
                      floating reg, floating alpha, bint implicit_convention, int f,
                      floating *A, floating *b, floating *G, floating *Gneg, int capacity,
                      const floating **rows, floating *weight, int small_limit) noexcept nogil:
    """Exact solve of one row: build the system, factor it, solve.

    Short rows add their weighted outer products with our own rank-4 update
    (reading the factor rows in place); long rows gather sqrt(|c-1|)-scaled
    rows, ``capacity`` at a time, for BLAS SYRK, which wins once packing is
    amortised.  The bounded gather keeps a popular item's column from
    needing a buffer as large as the column.  Rows up to ``small_limit``
    entries count as short; ``rows`` and ``weight`` hold that many.
    """
    cdef index_t j
    cdef int k, t, n_pos = 0, n_neg = 0, n_small = 0
    cdef int n = <int> (indptr[row + 1] - indptr[row])
    cdef bint small = n <= small_limit
    cdef const floating *y
    cdef floating c, pref, w
    cdef index_t start = indptr[row]

    if n == 0:
        memset(x, 0, f * sizeof(floating))
        return 0

    memcpy(A, YtY, f * f * sizeof(floating))
    for k in range(f):
        A[k * f + k] += reg
    memset(b, 0, f * sizeof(floating))
    for t in range(n):
        j = start + t
        if t + PREFETCH_AHEAD < n:
            fr_prefetch(&Y[<long long> indices[j + PREFETCH_AHEAD] * f], f * sizeof(floating))
        y = &Y[<long long> indices[j] * f]
        confidence(data[j], alpha, implicit_convention, &c, &pref)
        if pref != 0:
            axpy(c, y, b, f)
        w = c - 1
        if small:
            if w != 0:  # c == 1 adds nothing to A
                rows[n_small] = y
                weight[n_small] = w
                n_small += 1
        # negative weights only arise under implicit's convention (alpha*r < 1)
        elif w > 0:
            if n_pos == capacity:
                syrk_upper(f, n_pos, <floating> 1, G, A)
                n_pos = 0
            scal_copy(<floating> sqrt(w), y, &G[<long long> n_pos * f], f)
            n_pos += 1
        elif w < 0:
            if n_neg == capacity:
                syrk_upper(f, n_neg, <floating> -1, Gneg, A)
                n_neg = 0
            scal_copy(<floating> sqrt(-w), y, &Gneg[<long long> n_neg * f], f)
            n_neg += 1
    if small:
        syrk_rows(A, rows, weight, n_small, f)
    else:
        syrk_upper(f, n_pos, <floating> 1, G, A)
        syrk_upper(f, n_neg, <floating> -1, Gneg, A)
    if cholesky_solve(A, b, f) != 0:
        return 1  # singular system: keep the previous factors for this row
    memcpy(x, b, f * sizeof(floating))
    return 0


cdef int cg_half_step(const index_t[::1] indptr, const int[::1] indices,
                      const floating[::1] data, floating[:, ::1] X,
                      const floating[:, ::1] Y, const floating[:, ::1] YtY,
                      const floating[::1] reg, floating alpha, bint implicit_convention,
                      int cg_steps, int num_threads, index_t max_len, int short_cap):
    """The CG half-step: groups of GROUP consecutive rows, solved together when all are short."""
    cdef int n_rows = X.shape[0]
    cdef int f = X.shape[1]
    cdef int group, first, count, s, failures = 0
    cdef bint all_short
    cdef floating *buf
    cdef floating *G
    cdef floating *group_buf
    cdef const floating **rows
    cdef const floating **group_rows
    cdef long long slot = 3 * f + 2 * short_cap + <long long> short_cap * f
    with nogil, parallel(num_threads=num_threads):
        # per-thread scratch.  Single rows: r, p, Ap, per-entry weights and
        # the gathered vectors; groups: GROUP such slots sized for short rows
        rows = <const floating **> malloc((max_len + 1) * sizeof(floating *))
        buf = <floating *> malloc((3 * f + 2 * max_len + 1) * sizeof(floating))
        G = <floating *> malloc((min(max_len, GATHER_BYTES // sizeof(floating) // f) + 1) * f * sizeof(floating))
        group_buf = <floating *> malloc((GROUP * slot + 1) * sizeof(floating))
        group_rows = <const floating **> malloc((GROUP * short_cap + 1) * sizeof(floating *))
        for group in prange((n_rows + GROUP - 1) // GROUP, schedule="dynamic", chunksize=4):
            first = group * GROUP
            count = min(GROUP, n_rows - first)
            if buf == NULL or G == NULL or rows == NULL or group_buf == NULL or group_rows == NULL:
                failures += count  # out of memory: report the rows as unsolved
                continue
            all_short = count > 1
            for s in range(count):
                if indptr[first + s + 1] - indptr[first + s] > short_cap:
                    all_short = False
            if all_short:
                failures += cg_group(&indptr[0], &indices[0], &data[0], first, count, &X[0, 0],
                                     &Y[0, 0], &YtY[0, 0], &reg[0], alpha, implicit_convention,
                                     f, cg_steps, group_buf, short_cap, group_rows)
            else:
                for s in range(first, first + count):
                    failures += cg_row(&indptr[0], &indices[0], &data[0], s, &X[s, 0],
                                       &Y[0, 0], &YtY[0, 0], reg[s], alpha,
                                       implicit_convention, f, cg_steps,
                                       buf, buf + f, buf + 2 * f, rows, buf + 3 * f,
                                       buf + 3 * f + max_len, G)
        free(buf)
        free(G)
        free(rows)
        free(group_buf)
        free(group_rows)
    return failures


def als_half_step(const index_t[::1] indptr, const int[::1] indices,
                  const floating[::1] data, floating[:, ::1] X,
                  const floating[:, ::1] Y, const floating[:, ::1] YtY,
                  const floating[::1] reg, floating alpha, bint implicit_convention,
                  int solver, int cg_steps, int num_threads):
    """Update every row of ``X`` in place; return the number of rows left unsolved.

    Parameters
    ----------
    indptr, indices, data : CSR arrays of the rows being solved (raw values r).
    X : (n_rows, f) factors to update, warm start for CG.
    Y : (n_cols, f) fixed factors.
    YtY : (f, f) Gram matrix of Y (without regularisation).
    reg : (n_rows,) regularisation of each row.
    alpha : confidence scale.
    implicit_convention : use ``c = alpha*|r|`` instead of ``1 + alpha*|r|``.
    solver : 0 for conjugate gradient, 1 for Cholesky.
    cg_steps : CG iterations per row.
    num_threads : OpenMP threads.
    """
    cdef int n_rows = X.shape[0]
    cdef int f = X.shape[1]
    cdef int row, failures = 0, capacity, short_cap
    cdef index_t j, max_len = 0
    cdef floating *buf
    cdef floating *G
    cdef const floating **rows
    if indptr.shape[0] != n_rows + 1:
        raise ValueError("indptr does not match the number of rows of X")
    if Y.shape[1] != f or YtY.shape[0] != f or YtY.shape[1] != f:
        raise ValueError("factor shapes do not agree")
    if reg.shape[0] != n_rows:
        raise ValueError("reg must have one value per row")
    if n_rows == 0 or f == 0:
        return 0
    for row in range(n_rows):
        if indptr[row + 1] - indptr[row] > max_len:
            max_len = indptr[row + 1] - indptr[row]

    # Cholesky gathers long rows this many factor vectors at a time
    capacity = <int> min(max_len, max(SMALL_ROW, GATHER_BYTES // sizeof(floating) // f))
    short_cap = <int> min(max_len, max(1, SHORT_ROW_BYTES // sizeof(floating) // f))
    if solver == 0:
        return cg_half_step(indptr, indices, data, X, Y, YtY, reg, alpha, implicit_convention,
                            cg_steps, num_threads, max_len, short_cap)
    if max_len > SMALL_ROW:
        bind_blas()
    with nogil, parallel(num_threads=num_threads):
        # per-thread scratch: A, b, weights and the gathered rows
        rows = <const floating **> malloc((max_len + 1) * sizeof(floating *))
        buf = <floating *> malloc((f * f + f + min(max_len, SMALL_ROW) + 1) * sizeof(floating))
        G = <floating *> malloc((2 * <long long> capacity + 1) * f * sizeof(floating))
        for row in prange(n_rows, schedule="dynamic", chunksize=16):
            if buf == NULL or G == NULL or rows == NULL:
                failures += 1  # out of memory: report the row as unsolved
            else:
                failures += cholesky_row(&indptr[0], &indices[0], &data[0], row,
                                         &X[row, 0], &Y[0, 0], &YtY[0, 0], reg[row],
                                         alpha, implicit_convention, f, buf, buf + f * f,
                                         G, G + <long long> capacity * f, capacity, rows,
                                         buf + f * f + f, SMALL_ROW)
        free(buf)
        free(G)
        free(rows)
    return failures


def als_loss(const index_t[::1] indptr, const int[::1] indices, const floating[::1] data,
             const floating[:, ::1] X, const floating[:, ::1] Y, const floating[:, ::1] YtY,
             const floating[::1] reg_rows, const floating[::1] reg_cols, floating alpha,
             bint implicit_convention, int num_threads):
    """The full weighted objective, summed over every (row, column) pair.

    sum_{u,i} c_ui (p_ui - x_u.y_i)^2 + sum_u reg_u |x_u|^2 + sum_i reg_i |y_i|^2,
    where unobserved pairs have c = 1 and p = 0.  Computed in O(nnz f + n f^2).
    """
    cdef int n_rows = X.shape[0]
    cdef int n_cols = Y.shape[0]
    cdef int f = X.shape[1]
    cdef int row, col
    cdef index_t j
    cdef double total = 0
    cdef floating c, pref, s
    cdef floating *tmp
    cdef int failed = 0
    if n_rows == 0 or f == 0:
        return 0.0
    with nogil, parallel(num_threads=num_threads):
        tmp = <floating *> malloc(f * sizeof(floating))
        for row in prange(n_rows, schedule="dynamic", chunksize=64):
            if tmp == NULL:
                failed += 1
                continue
            symv(&YtY[0, 0], &X[row, 0], tmp, f)
            total += dot(tmp, &X[row, 0], f) + reg_rows[row] * dot(&X[row, 0], &X[row, 0], f)
            for j in range(indptr[row], indptr[row + 1]):
                s = dot(&X[row, 0], &Y[indices[j], 0], f)
                # c and pref are assigned here so that Cython makes them thread-private;
                # written only through confidence()'s pointers they were shared, and
                # two threads raced on them (a wrong loss about one fit in six).
                c = 0
                pref = 0
                confidence(data[j], alpha, implicit_convention, &c, &pref)
                total += c * (pref - s) * (pref - s) - s * s
        free(tmp)
    if failed:
        raise MemoryError("als_loss: out of memory for a per-thread buffer")
    for col in range(n_cols):
        total += reg_cols[col] * dot(&Y[col, 0], &Y[col, 0], f)
    return total


# ------------------------------------------------------------------ transpose
# The item half-step needs the matrix by columns.  A full CSC copy would double
# the input's memory, so it is built one slice of columns at a time into
# reused buffers (see fastrec/_columns.py).  Rows are split into contiguous
# blocks, one per thread; entry counts per (block, column) give every block
# its own write positions, so the fill needs no atomics and the output is the
# canonical CSC (rows ascending within each column) whatever the thread count.

def column_counts_by_block(const index_t[::1] indptr, const int[::1] indices,
                           const long long[::1] row_bounds, long long[:, ::1] counts,
                           int num_threads):
    """counts[p, i] = stored entries of column i in rows row_bounds[p] .. row_bounds[p+1].

    ``counts`` (blocks x columns) must be zeroed; column indices must be in range.
    """
    cdef int n_blocks = row_bounds.shape[0] - 1
    cdef int p
    cdef index_t j
    if counts.shape[0] != n_blocks:
        raise ValueError("counts needs one row per block")
    if n_blocks < 1 or row_bounds[n_blocks] > indptr.shape[0] - 1:
        raise ValueError("row_bounds do not match indptr")
    with nogil:
        for p in prange(n_blocks, schedule="static", num_threads=num_threads):
            for j in range(indptr[row_bounds[p]], indptr[row_bounds[p + 1]]):
                counts[p, indices[j]] += 1


def fill_column_slice(const index_t[::1] indptr, const int[::1] indices, const floating[::1] data,
                      long long[::1] cursor, int col_lo, int col_hi,
                      const long long[::1] row_bounds, long long[:, ::1] positions,
                      int[::1] out_indices, floating[::1] out_data, int num_threads):
    """Scatter the entries of columns col_lo .. col_hi into CSC arrays.

    ``cursor[u]`` is where row u's entries of these columns start (rows are
    sorted, so slices taken in ascending column order just advance it);
    ``positions[p, i - col_lo]`` is where block p writes its next entry of
    column i.  Both are advanced in place.
    """
    cdef int n_blocks = row_bounds.shape[0] - 1
    cdef int p, col
    cdef long long u, pos
    cdef index_t j, end
    if positions.shape[0] != n_blocks or positions.shape[1] != col_hi - col_lo:
        raise ValueError("positions must be blocks x slice width")
    if cursor.shape[0] != indptr.shape[0] - 1 or row_bounds[n_blocks] > cursor.shape[0]:
        raise ValueError("cursor and row_bounds must match the rows")
    with nogil:
        for p in prange(n_blocks, schedule="static", num_threads=num_threads):
            for u in range(row_bounds[p], row_bounds[p + 1]):
                j = <index_t> cursor[u]
                end = indptr[u + 1]
                while j < end:
                    col = indices[j]
                    if col >= col_hi:
                        break
                    pos = positions[p, col - col_lo]
                    positions[p, col - col_lo] = pos + 1
                    out_indices[pos] = <int> u
                    out_data[pos] = data[j]
                    j = j + 1
                cursor[u] = j


# ------------------------------------------------------------------- fold-in
DEF FOLD_IN_MAX_ROW = 2048  # longer rows take the general (BLAS) path


cdef int fold_in_solve(const int *indices, const floating *data, int n, int n_items,
                       const floating *Y, const floating *YtY, int f, floating reg,
                       floating alpha, bint implicit_convention, floating *out) noexcept nogil:
    """Check one row (sorted unique in-range columns, finite non-zero values) and solve it.

    Returns 0 when solved, -1 when the row is not canonical, 1 when singular,
    2 when the solution is not finite.
    """
    cdef int t, result
    cdef long long bounds[2]
    cdef floating *A
    cdef const floating **rows
    for t in range(n):
        if indices[t] < 0 or indices[t] >= n_items or (t > 0 and indices[t] <= indices[t - 1]):
            return -1
        if data[t] == 0 or not (fabs(data[t]) <= 1.0e308):  # zero, NaN or infinite
            return -1
        # a served user's item rows are usually cold: start every miss now so
        # they overlap each other and the setup instead of stalling the solve
        fr_prefetch(&Y[<long long> indices[t] * f], f * sizeof(floating))
    bounds[0] = 0
    bounds[1] = n
    A = <floating *> malloc((<long long> f * f + f + n + 1) * sizeof(floating))
    rows = <const floating **> malloc((n + 1) * sizeof(floating *))
    if A == NULL or rows == NULL:
        free(A)
        free(rows)
        return -1
    result = cholesky_row(bounds, indices, data, 0, out, Y, YtY, reg, alpha, implicit_convention,
                          f, A, A + f * f, NULL, NULL, 0, rows, A + f * f + f, n)
    free(A)
    free(rows)
    if result == 0:
        for t in range(f):
            if not (fabs(out[t]) <= 1.0e308):  # an overflow: the caller's general path reports it
                return 2
    return result


def fold_in_row(object indptr, object indices, object data, cnp.ndarray Y not None,
                cnp.ndarray YtY not None,
                double reg_per_entry, double reg_constant, double alpha, bint implicit_convention):
    """Exact factors (1 x f) for one interaction row, or None when it needs the general path.

    The latency path of ``ALS.fold_in``: the CSR arrays of a single row are
    checked here in C (dtypes, sortedness, ranges, finite non-zero values)
    rather than by NumPy calls, and the system is built without BLAS, so the
    call costs little more than the solve.  None means "not handled": a
    non-canonical or invalid row, a long row, or a singular system; the
    caller then validates and solves it the general way (raising or warning).
    The regularisation is ``reg_per_entry * n + reg_constant``.
    """
    cdef int typenum = cnp.PyArray_TYPE(Y)
    cdef cnp.ndarray ip, ix, dv, out
    cdef long long start, end
    cdef int f, n, result
    cdef cnp.npy_intp dims[2]
    if not (cnp.PyArray_Check(indptr) and cnp.PyArray_Check(indices) and cnp.PyArray_Check(data)):
        return None
    ip, ix, dv = indptr, indices, data
    if (typenum not in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64) or cnp.PyArray_TYPE(dv) != typenum
            or cnp.PyArray_TYPE(YtY) != typenum or cnp.PyArray_TYPE(ix) != cnp.NPY_INT32
            or cnp.PyArray_NDIM(ip) != 1 or cnp.PyArray_DIM(ip, 0) != 2
            or cnp.PyArray_NDIM(ix) != 1 or cnp.PyArray_NDIM(dv) != 1
            or cnp.PyArray_NDIM(Y) != 2 or cnp.PyArray_NDIM(YtY) != 2
            or not cnp.PyArray_IS_C_CONTIGUOUS(ix) or not cnp.PyArray_IS_C_CONTIGUOUS(dv)
            or not cnp.PyArray_IS_C_CONTIGUOUS(ip) or not cnp.PyArray_IS_C_CONTIGUOUS(Y)
            or not cnp.PyArray_IS_C_CONTIGUOUS(YtY)):
        return None
    f = <int> cnp.PyArray_DIM(Y, 1)
    if f < 1 or cnp.PyArray_DIM(YtY, 0) != f or cnp.PyArray_DIM(YtY, 1) != f:
        return None
    if cnp.PyArray_TYPE(ip) == cnp.NPY_INT32:
        start = (<int *> cnp.PyArray_DATA(ip))[0]
        end = (<int *> cnp.PyArray_DATA(ip))[1]
    elif cnp.PyArray_TYPE(ip) == cnp.NPY_INT64:
        start = (<long long *> cnp.PyArray_DATA(ip))[0]
        end = (<long long *> cnp.PyArray_DATA(ip))[1]
    else:
        return None
    if (start != 0 or end != cnp.PyArray_DIM(ix, 0) or end != cnp.PyArray_DIM(dv, 0)
            or end > FOLD_IN_MAX_ROW):
        return None
    n = <int> end
    dims[0] = 1
    dims[1] = f
    out = cnp.PyArray_ZEROS(2, dims, typenum, 0)
    cdef int n_items = <int> cnp.PyArray_DIM(Y, 0)
    cdef const int *idx = <const int *> cnp.PyArray_DATA(ix)
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            result = fold_in_solve(idx, <const float *> cnp.PyArray_DATA(dv), n, n_items,
                                   <const float *> cnp.PyArray_DATA(Y), <const float *> cnp.PyArray_DATA(YtY),
                                   f, <float> (reg_per_entry * n + reg_constant), <float> alpha,
                                   implicit_convention, <float *> cnp.PyArray_DATA(out))
        else:
            result = fold_in_solve(idx, <const double *> cnp.PyArray_DATA(dv), n, n_items,
                                   <const double *> cnp.PyArray_DATA(Y), <const double *> cnp.PyArray_DATA(YtY),
                                   f, reg_per_entry * n + reg_constant, alpha,
                                   implicit_convention, <double *> cnp.PyArray_DATA(out))
    return out if result == 0 else None
