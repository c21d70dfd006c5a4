# cython: language_level=3
"""Hogwild SGD kernels for pairwise ranking factorisation: BPR and WARP.

The model scores ``s(u, i) = x_u . y_i + b_i``.  Every step works on a triple
(user u, positive p, negative n) with margin ``x = s(u, p) - s(u, n)`` and a
gradient coefficient ``g`` chosen by the loss:

    BPR  (Rendle et al. 2009):  g = w * sigmoid(-x)                 (ascent on ln sigmoid(x))
    WARP (Weston et al. 2011):  g = w * L(floor((n_items - 1) / k)) when x < 1, else no step,
                                k = negatives drawn until one violated the margin,
                                L(k) = sum_{i <= k} 1 / i

and then moves, with the old x_u on the right-hand sides,

    x_u += lr * (g * (y_p - y_n) - reg * x_u)
    y_p += lr * (g * x_u - reg * y_p)         b_p += lr * (g - reg * b_p)
    y_n += lr * (-g * x_u - reg * y_n)        b_n += lr * (-g - reg * b_n)

``w`` is the interaction's weight.  With adagrad each parameter's step is
divided by the square root of its accumulated squared gradients (the
accumulators start at 1, so the first steps equal plain SGD).

Threads: an epoch's samples are split into one contiguous chunk per thread.
Each thread draws from its own splitmix64 stream and updates the shared
arrays without locks (Hogwild, Niu et al. 2011), so only ``num_threads=1`` is
reproducible bit for bit.  Each thread keeps a few samples in flight and
prefetches their rows: the random reads of a sample, not its arithmetic,
dominate the cost.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport exp, expf, sqrt, sqrtf
from libc.stdint cimport uint64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset

import numpy as np

include "_common.pxi"

cdef extern from *:
    """
    #include <stdint.h>
    /* splitmix64 (Steele, Lea and Flood 2014): one 64-bit state per thread. */
    static inline uint64_t fr_next_u64(uint64_t *state) {
        uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    }
    /* Uniform in [0, n) by multiply-shift (Lemire 2019); the bias is below 2^-32. */
    static inline uint64_t fr_below(uint64_t *state, uint64_t n) {
        uint64_t r = fr_next_u64(state);
        if (n <= 0xFFFFFFFFULL) return ((r >> 32) * n) >> 32;
        return r % n;
    }
    /* Membership filter of the (user, item) positives: one 64-bit word per
       pair picked by a hash, three bits set in it (a Bloom filter blocked to
       one word, Putze et al. 2007).  A clear bit proves the pair is not a
       positive with one random read; a "maybe" is settled by the exact search. */
    static inline uint64_t fr_pair_hash(int user, int item) {
        uint64_t z = ((uint64_t)(uint32_t)user << 32 | (uint32_t)item) * 0x9E3779B97F4A7C15ULL;
        z = (z ^ (z >> 29)) * 0xBF58476D1CE4E5B9ULL;
        return z ^ (z >> 32);
    }
    static inline uint64_t fr_filter_word(uint64_t h, uint64_t n_words) {
        return ((h >> 32) * n_words) >> 32;
    }
    static inline uint64_t fr_filter_bits(uint64_t h) {
        return (1ULL << (h & 63)) | (1ULL << ((h >> 6) & 63)) | (1ULL << ((h >> 12) & 63));
    }
    /* Fill the filter of n pairs, hashing 16 pairs ahead of the writes so the
       random read-modify-writes overlap. */
    static void fr_filter_fill(uint64_t *words, uint64_t n_words, const int *users,
                               const int *items, long long n) {
        uint64_t ring[16];
        long long j;
        for (j = 0; j < n + 16; ++j) {
            if (j >= 16) {
                uint64_t h = ring[j & 15];
                words[fr_filter_word(h, n_words)] |= fr_filter_bits(h);
            }
            if (j < n) {
                uint64_t h = fr_pair_hash(users[j], items[j]);
                __builtin_prefetch(&words[fr_filter_word(h, n_words)], 1, 3);
                ring[j & 15] = h;
            }
        }
    }
    #if defined(__GNUC__) || defined(__clang__)
    #define fr_prefetch_read(p) __builtin_prefetch((const void *)(p), 0, 3)
    #define fr_prefetch_write(p) __builtin_prefetch((const void *)(p), 1, 3)
    #else
    #define fr_prefetch_read(p) ((void)(p))
    #define fr_prefetch_write(p) ((void)(p))
    #endif

    /* The per-element update of one triple, in C so that ``__restrict`` lets the
       compiler vectorise it (the rows never overlap: p != n, and the user,
       item and accumulator rows live in different arrays).  ``g`` is the
       loss's gradient coefficient; the right-hand sides use the old user row.
       pair_*: user and both items move; user_*: only the user (fold-in). */
    #define FR_DEFINE_STEPS(T, SQRT, SFX)                                            \
    static inline void fr_pair_sgd_##SFX(T *__restrict u, T *__restrict p,          \
                                         T *__restrict n, T g, T lr, T reg, int f) { \
        _Pragma("omp simd")                                                          \
        for (int k = 0; k < f; ++k) {                                                \
            T uk = u[k];                                                             \
            u[k] = uk + lr * (g * (p[k] - n[k]) - reg * uk);                         \
            p[k] = p[k] + lr * (g * uk - reg * p[k]);                                \
            n[k] = n[k] + lr * (-g * uk - reg * n[k]);                               \
        }                                                                            \
    }                                                                                \
    static inline void fr_user_sgd_##SFX(T *__restrict u, const T *__restrict p,    \
                                         const T *__restrict n, T g, T lr, T reg,    \
                                         int f) {                                    \
        _Pragma("omp simd")                                                          \
        for (int k = 0; k < f; ++k)                                                  \
            u[k] = u[k] + lr * (g * (p[k] - n[k]) - reg * u[k]);                     \
    }                                                                                \
    static inline void fr_pair_adagrad_##SFX(T *__restrict u, T *__restrict p,      \
            T *__restrict n, T *__restrict au, T *__restrict ap, T *__restrict an,   \
            T g, T lr, T reg, int f) {                                               \
        _Pragma("omp simd")                                                          \
        for (int k = 0; k < f; ++k) {                                                \
            T uk = u[k];                                                             \
            T du = g * (p[k] - n[k]) - reg * uk;                                     \
            T dp = g * uk - reg * p[k];                                              \
            T dn = -g * uk - reg * n[k];                                             \
            au[k] += du * du;                                                        \
            ap[k] += dp * dp;                                                        \
            an[k] += dn * dn;                                                        \
            u[k] = uk + lr * du / SQRT(au[k]);                                       \
            p[k] = p[k] + lr * dp / SQRT(ap[k]);                                     \
            n[k] = n[k] + lr * dn / SQRT(an[k]);                                     \
        }                                                                            \
    }                                                                                \
    static inline void fr_user_adagrad_##SFX(T *__restrict u, const T *__restrict p, \
            const T *__restrict n, T *__restrict au, T g, T lr, T reg, int f) {      \
        _Pragma("omp simd")                                                          \
        for (int k = 0; k < f; ++k) {                                                \
            T du = g * (p[k] - n[k]) - reg * u[k];                                   \
            au[k] += du * du;                                                        \
            u[k] = u[k] + lr * du / SQRT(au[k]);                                     \
        }                                                                            \
    }
    #include <math.h>
    FR_DEFINE_STEPS(float, sqrtf, s)
    FR_DEFINE_STEPS(double, sqrt, d)
    """
    uint64_t fr_next_u64(uint64_t *state) nogil
    uint64_t fr_below(uint64_t *state, uint64_t n) nogil
    uint64_t fr_pair_hash(int user, int item) nogil
    uint64_t fr_filter_word(uint64_t h, uint64_t n_words) nogil
    uint64_t fr_filter_bits(uint64_t h) nogil
    void fr_filter_fill(uint64_t *words, uint64_t n_words, const int *users, const int *items,
                        long long n) nogil
    void fr_prefetch_read(const void *p) nogil
    void fr_prefetch_write(const void *p) nogil
    void fr_pair_sgd_s(float *u, float *p, float *n, float g, float lr, float reg, int f) nogil
    void fr_pair_sgd_d(double *u, double *p, double *n, double g, double lr, double reg, int f) nogil
    void fr_user_sgd_s(float *u, const float *p, const float *n, float g, float lr, float reg, int f) nogil
    void fr_user_sgd_d(double *u, const double *p, const double *n, double g, double lr, double reg,
                       int f) nogil
    void fr_pair_adagrad_s(float *u, float *p, float *n, float *au, float *ap, float *an,
                           float g, float lr, float reg, int f) nogil
    void fr_pair_adagrad_d(double *u, double *p, double *n, double *au, double *ap, double *an,
                           double g, double lr, double reg, int f) nogil
    void fr_user_adagrad_s(float *u, const float *p, const float *n, float *au,
                           float g, float lr, float reg, int f) nogil
    void fr_user_adagrad_d(double *u, const double *p, const double *n, double *au,
                           double g, double lr, double reg, int f) nogil


cdef enum:
    LOSS_BPR = 0
    LOSS_WARP = 1
    AHEAD = 4            # pipeline distance between the stages of a sample (see run_chunk)
    RING = 16            # ring slots; must exceed 3 * AHEAD
    MAX_NEGATIVE_DRAWS = 64  # BPR: give up on a user whose items are almost all positives
    FILTER_BITS = 16     # filter bits per positive: about 1 in 70 non-positives reads "maybe"


cdef struct Model:
    # Arrays of the fused float type are kept as void pointers so that one
    # struct serves both specialisations; fused functions cast them back.
    void *U                  # (n_users, f) user factors
    void *V                  # (n_items, f) item factors
    void *bias               # (n_items,) item biases
    void *GU                 # adagrad accumulators of the three above, NULL for plain SGD
    void *GV
    void *Gb
    const void *weights      # weight of each interaction, NULL when all are 1
    const void *rank_weight  # WARP: L(k) for k in [0, n_items)
    const long long *indptr  # positives, CSR by user, sorted columns
    const int *indices
    const int *users         # user of each interaction index
    const uint64_t *filter   # membership filter of the positives (see fr_filter_add), or NULL
    uint64_t filter_words
    long long nnz
    int n_items
    int f
    int loss
    int max_sampled
    bint verify
    bint update_items


cdef struct Counts:
    long long correct        # sampled triples already ordered (margin > 0): an AUC estimate
    long long compared
    long long skipped        # samples without a usable negative


# ----------------------------------------------------------------- helpers
cdef inline floating fsqrt(floating v) noexcept nogil:
    if floating is float:
        return sqrtf(v)
    else:
        return sqrt(v)


cdef inline floating fexp(floating v) noexcept nogil:
    if floating is float:
        return expf(v)
    else:
        return exp(v)


cdef inline void prefetch_row(const void *row, int n_bytes, bint write) noexcept nogil:
    cdef int off
    cdef const char *p = <const char *> row
    for off in range(0, n_bytes, 64):
        if write:
            fr_prefetch_write(p + off)
        else:
            fr_prefetch_read(p + off)


cdef inline bint is_positive(const Model *m, int user, int item) noexcept nogil:
    """Whether ``item`` is in the user's sorted row.

    A branch-free binary search (the comparisons are unpredictable, so
    branches would mispredict half the time) that prefetches both possible
    next probes while the current one loads.
    """
    cdef const int *a = m.indices + m.indptr[user]
    cdef long long n = m.indptr[user + 1] - m.indptr[user]
    cdef long long half
    if n == 0:
        return False
    while n > 1:
        half = n >> 1
        fr_prefetch_read(a + (half >> 1))
        fr_prefetch_read(a + half + (half >> 1))
        a += half * (a[half] <= item)
        n -= half
    return a[0] == item


cdef inline bint is_negative_filtered(const Model *m, int user, int item) noexcept nogil:
    """``not is_positive``, asking the filter first: only its "maybe"s search the row."""
    cdef uint64_t h, bits
    if m.filter != NULL:
        h = fr_pair_hash(user, item)
        bits = fr_filter_bits(h)
        if m.filter[fr_filter_word(h, m.filter_words)] & bits != bits:
            return True
    return not is_positive(m, user, item)


cdef inline void prefetch_filter(const Model *m, int user, int item) noexcept nogil:
    if m.filter != NULL:
        fr_prefetch_read(&m.filter[fr_filter_word(fr_pair_hash(user, item), m.filter_words)])


cdef inline floating score(const Model *m, int user, int item, floating like) noexcept nogil:
    """s(user, item); ``like`` only selects the float type."""
    cdef const floating *U = <const floating *> m.U
    cdef const floating *V = <const floating *> m.V
    cdef const floating *b = <const floating *> m.bias
    return dot(&U[<long long> user * m.f], &V[<long long> item * m.f], m.f) + b[item]


# ------------------------------------------------------------ the update
cdef inline void adagrad_scalar(floating *param, floating *acc, floating grad, floating lr) noexcept nogil:
    acc[0] += grad * grad
    param[0] += lr * grad / fsqrt(acc[0])


cdef inline void pair_step(const Model *m, int user, int pos, int neg,
                           floating g, floating lr, floating reg) noexcept nogil:
    """Move the triple's parameters along gradient coefficient ``g`` (see the module docstring)."""
    cdef int f = m.f
    cdef long long ou = <long long> user * f
    cdef long long op = <long long> pos * f
    cdef long long on = <long long> neg * f
    cdef floating *u = <floating *> m.U + ou
    cdef floating *p = <floating *> m.V + op
    cdef floating *n = <floating *> m.V + on
    cdef floating *b = <floating *> m.bias
    cdef floating *Au
    cdef floating *Ap
    cdef floating *An
    cdef floating *Ab

    if m.GU == NULL:
        if not m.update_items:
            if floating is float:
                fr_user_sgd_s(u, p, n, g, lr, reg, f)
            else:
                fr_user_sgd_d(u, p, n, g, lr, reg, f)
            return
        if floating is float:
            fr_pair_sgd_s(u, p, n, g, lr, reg, f)
        else:
            fr_pair_sgd_d(u, p, n, g, lr, reg, f)
        b[pos] += lr * (g - reg * b[pos])
        b[neg] += lr * (-g - reg * b[neg])
        return

    Au = <floating *> m.GU + ou
    if not m.update_items:
        if floating is float:
            fr_user_adagrad_s(u, p, n, Au, g, lr, reg, f)
        else:
            fr_user_adagrad_d(u, p, n, Au, g, lr, reg, f)
        return
    Ap = <floating *> m.GV + op
    An = <floating *> m.GV + on
    Ab = <floating *> m.Gb
    if floating is float:
        fr_pair_adagrad_s(u, p, n, Au, Ap, An, g, lr, reg, f)
    else:
        fr_pair_adagrad_d(u, p, n, Au, Ap, An, g, lr, reg, f)
    adagrad_scalar(&b[pos], &Ab[pos], g - reg * b[pos], lr)
    adagrad_scalar(&b[neg], &Ab[neg], -g - reg * b[neg], lr)


cdef inline bint sample_step(const Model *m, int user, int pos, int neg, floating x,
                             int n_sampled, floating w, floating lr, floating reg) noexcept nogil:
    """The loss's step for one triple of margin ``x``; False when the loss takes none.

    The one place where a loss turns into an update: the epoch loop and
    ``apply_samples`` both come here.
    """
    cdef floating g
    if m.loss == LOSS_BPR:
        g = w / (1 + fexp(x))
    else:
        if x >= 1:
            return False
        g = w * (<const floating *> m.rank_weight)[(m.n_items - 1) // n_sampled]
        if g == 0:
            return False  # more draws than items: no rank information (L(0) = 0)
    pair_step(m, user, pos, neg, g, lr, reg)
    return True


# ------------------------------------------------------------ the epoch
cdef inline void prefetch_sample(const Model *m, int user, int pos, int neg, floating like) noexcept nogil:
    cdef int row_bytes = m.f * sizeof(floating)
    cdef long long ou = <long long> user * m.f
    cdef long long op = <long long> pos * m.f
    cdef long long on = <long long> neg * m.f
    prefetch_row(<floating *> m.U + ou, row_bytes, True)
    prefetch_row(<floating *> m.V + op, row_bytes, m.update_items)
    prefetch_row(<floating *> m.V + on, row_bytes, m.update_items)
    fr_prefetch_read(<floating *> m.bias + pos)
    fr_prefetch_read(<floating *> m.bias + neg)
    if m.GU != NULL:
        prefetch_row(<floating *> m.GU + ou, row_bytes, True)
        if m.update_items:
            prefetch_row(<floating *> m.GV + op, row_bytes, True)
            prefetch_row(<floating *> m.GV + on, row_bytes, True)
    if m.verify:
        if m.filter != NULL:
            prefetch_filter(m, user, neg)
        else:
            fr_prefetch_read(&m.indptr[user])


cdef inline void bpr_sample(const Model *m, uint64_t *state, int user, int pos, int neg,
                            floating w, floating lr, floating reg, Counts *counts) noexcept nogil:
    cdef int tries = 0
    cdef floating x
    # a negative must differ from the positive, and (verify) not be a positive of the user
    while neg == pos or (m.verify and not is_negative_filtered(m, user, neg)):
        tries += 1
        if tries >= MAX_NEGATIVE_DRAWS:
            counts.skipped += 1
            return
        neg = <int> fr_below(state, m.n_items)
    x = score(m, user, pos, lr) - score(m, user, neg, lr)
    counts.compared += 1
    counts.correct += x > 0
    sample_step(m, user, pos, neg, x, 1, w, lr, reg)


cdef inline void warp_sample(const Model *m, uint64_t *state, int user, int pos, int neg,
                             floating w, floating lr, floating reg, Counts *counts) noexcept nogil:
    cdef floating s_pos = score(m, user, pos, lr)
    cdef floating x
    cdef int sampled = 0
    while True:
        sampled += 1
        x = s_pos - score(m, user, neg, lr)
        if sampled == 1 and neg != pos:
            counts.compared += 1
            counts.correct += x > 0
        # the positives check is a binary search: only pay it for violators
        if x < 1 and neg != pos and (not m.verify or is_negative_filtered(m, user, neg)):
            sample_step(m, user, pos, neg, x, sampled, w, lr, reg)
            return
        if sampled >= m.max_sampled:
            counts.skipped += 1
            return
        neg = <int> fr_below(state, m.n_items)


cdef inline void prefetch_positives(const Model *m, int user) noexcept nogil:
    """The lines of the user's sorted row that ``is_positive`` will probe first."""
    cdef long long lo = m.indptr[user]
    cdef long long hi = m.indptr[user + 1]
    cdef long long j, step
    if hi - lo <= 128:  # up to 8 cache lines: take them all
        for j in range(lo, hi, 16):
            fr_prefetch_read(&m.indices[j])
        fr_prefetch_read(&m.indices[hi - 1])
    else:  # the first three levels of the binary search
        step = (hi - lo) >> 2
        for j in range(1, 4):
            fr_prefetch_read(&m.indices[lo + j * step])


cdef void run_chunk(const Model *m, long long n_samples, uint64_t seed,
                    floating lr, floating reg, Counts *counts) noexcept nogil:
    """``n_samples`` samples drawn from one thread's stream, pipelined in four stages.

    Each stage runs AHEAD samples after the previous one, so the random
    reads it prefetches have arrived when the next stage needs them:
    A draws sample s's interaction and prefetches its (user, item);
    B reads them, draws the first negative and prefetches the factor rows;
    C prefetches the user's positives (for verify_negative_samples without
    a filter; with one, B prefetches the negative's filter word instead);
    D runs the loss's step.  All draws come from the thread's one stream in a
    fixed order, so a seed still fixes the result.
    """
    cdef long long idx_ring[RING]
    cdef int user_ring[RING]
    cdef int pos_ring[RING]
    cdef int neg_ring[RING]
    cdef uint64_t state = seed
    cdef long long s, t, idx
    cdef int slot, user, pos, neg
    cdef floating w
    cdef const floating *weights = <const floating *> m.weights
    cdef Counts local  # counted here, not in the shared array: no false sharing

    memset(&local, 0, sizeof(Counts))
    for s in range(n_samples + 3 * AHEAD):
        if s < n_samples:  # stage A
            slot = s & (RING - 1)
            idx = <long long> fr_below(&state, m.nnz)
            idx_ring[slot] = idx
            fr_prefetch_read(&m.users[idx])
            fr_prefetch_read(&m.indices[idx])
            if weights != NULL:
                fr_prefetch_read(&weights[idx])
        t = s - AHEAD
        if 0 <= t < n_samples:  # stage B
            slot = t & (RING - 1)
            idx = idx_ring[slot]
            user = m.users[idx]
            pos = m.indices[idx]
            neg = <int> fr_below(&state, m.n_items)
            user_ring[slot] = user
            pos_ring[slot] = pos
            neg_ring[slot] = neg
            prefetch_sample(m, user, pos, neg, lr)
        t = s - 2 * AHEAD
        if m.verify and m.filter == NULL and 0 <= t < n_samples:  # stage C
            prefetch_positives(m, user_ring[t & (RING - 1)])
        t = s - 3 * AHEAD
        if t >= 0:  # stage D
            slot = t & (RING - 1)
            w = 1 if weights == NULL else weights[idx_ring[slot]]
            if m.loss == LOSS_BPR:
                bpr_sample(m, &state, user_ring[slot], pos_ring[slot], neg_ring[slot],
                           w, lr, reg, &local)
            else:
                warp_sample(m, &state, user_ring[slot], pos_ring[slot], neg_ring[slot],
                            w, lr, reg, &local)
    counts[0] = local


cdef inline long long filter_words(long long nnz) noexcept nogil:
    return (nnz * FILTER_BITS + 63) // 64


def positives_filter(const long long[::1] indptr, const int[::1] indices, const int[::1] users):
    """The membership filter of the positives for ``sgd_epoch(..., positive_filter=)``.

    uint64 words, FILTER_BITS (16) bits per positive: a Bloom filter blocked
    to one word (``fr_pair_hash``), so that verifying a negative reads one
    random word instead of searching the user's row, and only the pairs it
    cannot rule out (the positives and about 1 in 70 others) are searched.
    Built once per fit: the same arrays must then be passed to every epoch.
    """
    cdef uint64_t[::1] words
    if users.shape[0] != indices.shape[0] or indptr[indptr.shape[0] - 1] != indices.shape[0]:
        raise ValueError("users, indices and indptr must describe the same interactions")
    words = np.zeros(max(filter_words(indices.shape[0]), 1), dtype=np.uint64)
    if indices.shape[0]:
        with nogil:
            fr_filter_fill(&words[0], filter_words(indices.shape[0]), &users[0], &indices[0],
                           indices.shape[0])
    return np.asarray(words)


cdef inline void * data_or_null(const floating[::1] a) noexcept nogil:
    return <void *> &a[0] if a.shape[0] > 0 else NULL


cdef inline void * rows_or_null(const floating[:, ::1] a) noexcept nogil:
    return <void *> &a[0, 0] if a.shape[0] > 0 and a.shape[1] > 0 else NULL


cdef int fill_model(Model *m, int loss, const long long[::1] indptr, const int[::1] indices,
                    const int[::1] users, const floating[::1] weights,
                    const floating[:, ::1] U, const floating[:, ::1] V, const floating[::1] bias,
                    const floating[:, ::1] GU, const floating[:, ::1] GV, const floating[::1] Gb,
                    const floating[::1] rank_weight, int max_sampled, bint verify,
                    bint update_items) except -1:
    """Check the arrays' shapes against each other and describe them in ``m``."""
    cdef int f = U.shape[1]
    cdef bint adagrad = GU.shape[0] > 0
    if loss != LOSS_BPR and loss != LOSS_WARP:
        raise ValueError("loss must be 0 (BPR) or 1 (WARP)")
    if V.shape[1] != f or bias.shape[0] != V.shape[0]:
        raise ValueError("factor shapes do not agree")
    if indptr.shape[0] != U.shape[0] + 1:
        raise ValueError("indptr must have one entry per user plus one")
    if users.shape[0] != indices.shape[0] or indptr[U.shape[0]] != indices.shape[0]:
        raise ValueError("users, indices and indptr must describe the same interactions")
    if weights.shape[0] not in (0, indices.shape[0]):
        raise ValueError("weights must be empty or have one value per interaction")
    if adagrad and (GU.shape[0] != U.shape[0] or GU.shape[1] != f
                    or (update_items and (GV.shape[0] != V.shape[0] or GV.shape[1] != f
                                          or Gb.shape[0] != V.shape[0]))):
        raise ValueError("adagrad accumulators must match the factors")
    if loss == LOSS_WARP and (rank_weight.shape[0] != V.shape[0] or max_sampled < 1):
        raise ValueError("WARP needs rank_weight (one value per item) and max_sampled >= 1")
    memset(m, 0, sizeof(Model))
    m.U = rows_or_null(U)
    m.V = rows_or_null(V)
    m.bias = data_or_null(bias)
    if adagrad:
        m.GU = rows_or_null(GU)
        m.GV = rows_or_null(GV)
        m.Gb = data_or_null(Gb)
    m.weights = data_or_null(weights)
    m.rank_weight = data_or_null(rank_weight)
    m.indptr = &indptr[0]
    m.indices = &indices[0] if indices.shape[0] > 0 else NULL
    m.users = &users[0] if users.shape[0] > 0 else NULL
    m.nnz = indices.shape[0]
    m.n_items = V.shape[0]
    m.f = f
    m.loss = loss
    m.max_sampled = max_sampled
    m.verify = verify
    m.update_items = update_items
    return 0


def sgd_epoch(int loss, const long long[::1] indptr, const int[::1] indices,
              const int[::1] users, const floating[::1] weights,
              floating[:, ::1] U, const floating[:, ::1] V, const floating[::1] bias,
              floating[:, ::1] GU, const floating[:, ::1] GV, const floating[::1] Gb,
              const floating[::1] rank_weight, floating learning_rate, floating regularization,
              long long n_samples, int max_sampled, bint verify, bint update_items,
              const uint64_t[::1] seeds, int num_threads, const uint64_t[::1] positive_filter=None):
    """One epoch of ``n_samples`` Hogwild steps; factors are updated in place.

    Parameters
    ----------
    loss : 0 for BPR, 1 for WARP.
    indptr, indices : CSR of the positives by user (sorted columns), int64 / int32.
    users : (nnz,) int32, the user of each interaction (row of each CSR entry).
    weights : (nnz,) interaction weights, or empty when all are 1.
    U, V, bias : user factors, item factors and item biases.  ``V`` and
        ``bias`` are written only when ``update_items`` (fold-in holds them fixed).
    GU, GV, Gb : adagrad accumulators (empty arrays for plain SGD).
    rank_weight : WARP's L(k) for k in [0, n_items); ignored by BPR.
    learning_rate, regularization : step size and L2 weight decay.
    n_samples : steps this epoch, split evenly over the threads.
    max_sampled : WARP's cap on negatives drawn per positive.
    verify : reject negatives that are positives of the user.
    update_items : False to train only ``U`` (fold-in).
    seeds : (>= num_threads,) one RNG seed per thread.
    num_threads : OpenMP threads.
    positive_filter : ``positives_filter(indptr, indices, users)`` of these
        very arrays, or None: verify then searches the user's row for every
        negative.  Only the filter's size is checked.

    Returns
    -------
    (correct, compared, skipped) : triples already ordered, triples scored and
        samples left without a step for want of a usable negative (BPR) or
        without a margin violator (WARP).
    """
    cdef Model m
    cdef Counts *counts
    cdef int t
    cdef long long correct = 0, compared = 0, skipped = 0
    if num_threads < 1 or seeds.shape[0] < num_threads:
        raise ValueError("num_threads must be >= 1 with one seed per thread")
    fill_model(&m, loss, indptr, indices, users, weights, U, V, bias, GU, GV, Gb,
               rank_weight, max_sampled, verify, update_items)
    if positive_filter is not None and verify:
        if positive_filter.shape[0] != max(filter_words(m.nnz), 1):
            raise ValueError("positive_filter must be positives_filter() of these positives")
        m.filter = &positive_filter[0]
        m.filter_words = filter_words(m.nnz)
    if n_samples <= 0 or m.nnz == 0 or m.n_items < 2 or m.f == 0:
        return 0, 0, max(n_samples, 0)
    if n_samples < num_threads * 64:
        num_threads = 1  # too little work to share
    counts = <Counts *> malloc(num_threads * sizeof(Counts))
    if counts == NULL:
        raise MemoryError()
    try:
        for t in prange(num_threads, nogil=True, num_threads=num_threads, schedule="static", chunksize=1):
            run_chunk(&m, n_samples * (t + 1) // num_threads - n_samples * t // num_threads,
                      seeds[t], learning_rate, regularization, &counts[t])
        for t in range(num_threads):
            correct += counts[t].correct
            compared += counts[t].compared
            skipped += counts[t].skipped
    finally:
        free(counts)
    return correct, compared, skipped


def positives_mask(const long long[::1] indptr, const int[::1] indices, const int[::1] users,
                   const int[::1] items, bint use_filter=True):
    """Whether each ``(users[k], items[k])`` is a positive, by the test ``sgd_epoch`` verifies with.

    ``use_filter``: through the membership filter (built here as in an epoch,
    whatever the size) and the exact search, else the exact search alone.
    For the tests; ids are checked.
    """
    cdef Model m
    cdef Py_ssize_t k, n = users.shape[0]
    cdef const uint64_t[::1] words
    cdef unsigned char[::1] out = np.zeros(n, dtype=np.uint8)
    if items.shape[0] != n or indptr.shape[0] < 1 or indptr[indptr.shape[0] - 1] != indices.shape[0]:
        raise ValueError("users and items must have the same length and indptr must end at len(indices)")
    if n and (min(np.min(users), np.min(items)) < 0 or np.max(users) >= indptr.shape[0] - 1):
        raise ValueError("users and items must be non-negative and users below len(indptr) - 1")
    memset(&m, 0, sizeof(Model))
    m.indptr = &indptr[0]
    m.indices = &indices[0] if indices.shape[0] else NULL
    if use_filter:
        words = positives_filter(indptr, indices, np.repeat(
            np.arange(indptr.shape[0] - 1, dtype=np.int32), np.diff(indptr)))
        m.filter = &words[0]
        m.filter_words = filter_words(indices.shape[0])
    with nogil:
        for k in range(n):
            out[k] = not is_negative_filtered(&m, users[k], items[k])
    return np.asarray(out).astype(bool)


def apply_samples(int loss, const int[:, ::1] samples, const floating[::1] sample_weights,
                  floating[:, ::1] U, floating[:, ::1] V, floating[::1] bias,
                  const floating[:, ::1] GU, const floating[:, ::1] GV, const floating[::1] Gb,
                  const floating[::1] rank_weight, floating learning_rate,
                  floating regularization, bint update_items):
    """Apply explicit triples in order, one thread: the reference check of ``sgd_epoch``'s update.

    ``samples`` is (n, 4) int32 rows ``(user, pos, neg, n_sampled)``;
    ``n_sampled`` is WARP's count of negatives drawn (ignored by BPR).  Ids
    are checked.  Returns how many steps were taken.
    """
    cdef Model m
    cdef const long long[::1] no_indptr = np.zeros(U.shape[0] + 1, dtype=np.int64)
    cdef const int[::1] no_ints = np.empty(0, dtype=np.int32)
    cdef Py_ssize_t r
    cdef long long steps = 0
    cdef floating x
    fill_model(&m, loss, no_indptr, no_ints, no_ints,
               sample_weights[:0], U, V, bias, GU, GV, Gb, rank_weight,
               1, False, update_items)
    if samples.shape[1] != 4 or sample_weights.shape[0] != samples.shape[0]:
        raise ValueError("samples must be (n, 4) with one weight per sample")
    if samples.shape[0]:
        arr = np.asarray(samples)
        if (arr[:, 0].min() < 0 or arr[:, 0].max() >= U.shape[0] or arr[:, 1:3].min() < 0
                or arr[:, 1:3].max() >= V.shape[0] or arr[:, 3].min() < 1
                or (arr[:, 1] == arr[:, 2]).any()):
            raise ValueError("samples need users and items in range, pos != neg and n_sampled >= 1")
    with nogil:
        for r in range(samples.shape[0]):
            x = (score(&m, samples[r, 0], samples[r, 1], learning_rate)
                 - score(&m, samples[r, 0], samples[r, 2], learning_rate))
            steps += sample_step(&m, samples[r, 0], samples[r, 1], samples[r, 2], x,
                                 samples[r, 3], sample_weights[r], learning_rate, regularization)
    return steps


include "_sgd_features.pxi"
