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

#endif
