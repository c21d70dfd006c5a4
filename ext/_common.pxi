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
