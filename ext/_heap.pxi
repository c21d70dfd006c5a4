# Top-k selection helpers shared by the kernels (included textually, like _common.pxi).
# A min-heap keeps the k best (score, id) pairs with the worst at the root; ties
# rank by the lower id, so every kernel orders results the same way.
from cython cimport floating
from libc.math cimport INFINITY


cdef inline bint worse(floating s1, int i1, floating s2, int i2) noexcept nogil:
    """True when (s1, i1) ranks below (s2, i2): lower score, or same score and higher id."""
    return s1 < s2 or (s1 == s2 and i1 > i2)


cdef inline void sift_down(floating *hs, int *hi, int size, int pos) noexcept nogil:
    """Restore the min-heap (worst element at the root) below ``pos``."""
    cdef int child
    cdef floating s = hs[pos]
    cdef int i = hi[pos]
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        if child + 1 < size and worse(hs[child + 1], hi[child + 1], hs[child], hi[child]):
            child += 1
        if not worse(hs[child], hi[child], s, i):
            break
        hs[pos] = hs[child]
        hi[pos] = hi[child]
        pos = child
    hs[pos] = s
    hi[pos] = i


cdef inline void heap_push(floating *hs, int *hi, int *size, int k,
                           floating s, int item) noexcept nogil:
    cdef int pos, parent
    if size[0] < k:
        pos = size[0]
        size[0] += 1
        while pos > 0:
            parent = (pos - 1) >> 1
            if not worse(s, item, hs[parent], hi[parent]):
                break
            hs[pos] = hs[parent]
            hi[pos] = hi[parent]
            pos = parent
        hs[pos] = s
        hi[pos] = item
    elif worse(hs[0], hi[0], s, item):
        hs[0] = s
        hi[0] = item
        sift_down(hs, hi, k, 0)


cdef inline void heap_drain_sorted(floating *hs, int *hi, int size, int k,
                                   floating *out_s, int *out_i) noexcept nogil:
    """Write the heap best-first into the outputs and pad the rest."""
    cdef int n = size, j
    for j in range(size, k):
        out_s[j] = -INFINITY
        out_i[j] = -1
    while n > 0:
        out_s[n - 1] = hs[0]
        out_i[n - 1] = hi[0]
        n -= 1
        hs[0] = hs[n]
        hi[0] = hi[n]
        sift_down(hs, hi, n, 0)


cdef inline bint in_sorted(const int *arr, long long lo, long long hi, int value) noexcept nogil:
    """Bisection in arr[lo:hi], sorted ascending."""
    cdef long long mid, end = hi
    while lo < hi:
        mid = (lo + hi) >> 1
        if arr[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo < end and arr[lo] == value
