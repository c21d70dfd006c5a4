# Shared inline helpers for the kernels: fused-type wrappers over _simd.h.
# Included textually (not cimported) so every kernel module and its AVX2
# variant compile them with their own ISA flags.
from cython cimport floating

cdef extern from "_simd.h" nogil:
    float fr_sdot(const float *a, const float *b, int n)
    double fr_ddot(const double *a, const double *b, int n)
    void fr_saxpy(float a, const float *x, float *y, int n)
    void fr_daxpy(double a, const double *x, double *y, int n)
    void fr_sxpby(const float *x, float b, float *y, int n)
    void fr_dxpby(const double *x, double b, double *y, int n)
    void fr_sscal_copy(float a, const float *x, float *y, int n)
    void fr_dscal_copy(double a, const double *x, double *y, int n)
    void fr_prefetch(const void *p, int bytes)
    void fr_s_syrk_rows(float *A, const float *const *rows, const float *w, int m, int n)
    void fr_d_syrk_rows(double *A, const double *const *rows, const double *w, int m, int n)
    void fr_s_dot4(const float *r0, const float *r1, const float *r2, const float *r3, const float *x, int n, float *out)
    void fr_d_dot4(const double *r0, const double *r1, const double *r2, const double *r3, const double *x, int n, double *out)
    void fr_s_axpy4(float a0, float a1, float a2, float a3, const float *r0, const float *r1, const float *r2, const float *r3, float *y, int n)
    void fr_d_axpy4(double a0, double a1, double a2, double a3, const double *r0, const double *r1, const double *r2, const double *r3, double *y, int n)
    void fr_s_symv(const float *A, const float *x, float *out, int n)
    void fr_d_symv(const double *A, const double *x, double *out, int n)
    void fr_s_symv4(const float *A, const float *const *x, float *const *out, int n)
    void fr_d_symv4(const double *A, const double *const *x, double *const *out, int n)
    int fr_s_potrf_upper(float *A, int n)
    int fr_d_potrf_upper(double *A, int n)
    void fr_s_potrs_upper(const float *U, float *b, int n)
    void fr_d_potrs_upper(const double *U, double *b, int n)
    int fr_s_posv_upper(float *A, float *b, int n)
    int fr_s_gram_apply(const float *const *rows, const float *w, const float *off, int m, const float *v, float *out, int n)
    int fr_d_posv_upper(double *A, double *b, int n)


cdef inline floating dot(const floating *a, const floating *b, int n) noexcept nogil:
    if floating is float:
        return fr_sdot(a, b, n)
    else:
        return fr_ddot(a, b, n)


cdef inline void axpy(floating a, const floating *x, floating *y, int n) noexcept nogil:
    if floating is float:
        fr_saxpy(a, x, y, n)
    else:
        fr_daxpy(a, x, y, n)


cdef inline void xpby(const floating *x, floating b, floating *y, int n) noexcept nogil:
    if floating is float:
        fr_sxpby(x, b, y, n)
    else:
        fr_dxpby(x, b, y, n)


cdef inline void scal_copy(floating a, const floating *x, floating *y, int n) noexcept nogil:
    if floating is float:
        fr_sscal_copy(a, x, y, n)
    else:
        fr_dscal_copy(a, x, y, n)


cdef inline int cholesky_solve(floating *A, floating *b, int n) noexcept nogil:
    """Solve A x = b for SPD A (row-major, upper triangle read); b becomes x.

    Returns 0, or nonzero when A is not positive definite (b is then undefined).
    """
    if floating is float:
        return fr_s_posv_upper(A, b, n)
    else:
        return fr_d_posv_upper(A, b, n)


cdef inline void symv(const floating *A, const floating *x, floating *out, int n) noexcept nogil:
    """out = A x for a symmetric row-major n x n matrix."""
    if floating is float:
        fr_s_symv(A, x, out, n)
    else:
        fr_d_symv(A, x, out, n)


cdef inline void weighted_gram_apply(const floating **rows, const floating *weight,
                                     const floating *offset, int m, const floating *v,
                                     floating *out, int n) noexcept nogil:
    """out += sum_t (offset_t + weight_t * (rows_t . v)) rows_t, four rows at a time.

    ``offset`` may be NULL (treated as zeros).  This is the sparse part of an
    ALS row system applied to v: sum_t w_t y_t y_t^T v (+ the b vector).
    """
    cdef int t = 0
    cdef floating d[4]
    cdef floating a0, a1, a2, a3
    if floating is float:
        if fr_s_gram_apply(rows, weight, offset, m, v, out, n):
            return
    while t + 4 <= m:
        if floating is float:
            fr_s_dot4(rows[t], rows[t + 1], rows[t + 2], rows[t + 3], v, n, d)
        else:
            fr_d_dot4(rows[t], rows[t + 1], rows[t + 2], rows[t + 3], v, n, d)
        a0 = weight[t] * d[0]
        a1 = weight[t + 1] * d[1]
        a2 = weight[t + 2] * d[2]
        a3 = weight[t + 3] * d[3]
        if offset != NULL:
            a0 = a0 + offset[t]
            a1 = a1 + offset[t + 1]
            a2 = a2 + offset[t + 2]
            a3 = a3 + offset[t + 3]
        if floating is float:
            fr_s_axpy4(a0, a1, a2, a3, rows[t], rows[t + 1], rows[t + 2], rows[t + 3], out, n)
        else:
            fr_d_axpy4(a0, a1, a2, a3, rows[t], rows[t + 1], rows[t + 2], rows[t + 3], out, n)
        t += 4
    while t < m:
        a0 = weight[t] * dot(rows[t], v, n)
        if offset != NULL:
            a0 = a0 + offset[t]
        axpy(a0, rows[t], out, n)
        t += 1


cdef inline void dot4(const floating *r0, const floating *r1, const floating *r2,
                      const floating *r3, const floating *x, int n, floating *out) noexcept nogil:
    """out[t] = r_t . x for four rows at once."""
    if floating is float:
        fr_s_dot4(r0, r1, r2, r3, x, n, out)
    else:
        fr_d_dot4(r0, r1, r2, r3, x, n, out)


cdef inline void syrk_rows(floating *A, const floating **rows, const floating *w,
                           int m, int n) noexcept nogil:
    """A += sum_t w_t rows_t rows_t^T on the row-major upper triangle."""
    if floating is float:
        fr_s_syrk_rows(A, rows, w, m, n)
    else:
        fr_d_syrk_rows(A, rows, w, m, n)


cdef inline void symv4(const floating *A, const floating *const *x, floating *const *out,
                       int n) noexcept nogil:
    """out[v] = A x[v] for v < 4, reading A once (same arithmetic as four ``symv`` calls)."""
    if floating is float:
        fr_s_symv4(A, x, out, n)
    else:
        fr_d_symv4(A, x, out, n)
