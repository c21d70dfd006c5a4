# Included at the end of _sgd.pyx: the feature-sum (LightFM-style) variant of the epoch.
#
# Users and items are rows of sparse feature matrices A (users x user features)
# and B (items x item features).  A user's vector is the weighted sum of its
# features' embeddings, p_u = sum_j A[u, j] E[j], and likewise an item's
# q_i = sum_j B[i, j] F[j] with bias b_i = sum_j B[i, j] c[j] (Kula 2015).
# The score is s(u, i) = p_u . q_i + b_i (a user bias would cancel in every
# pairwise loss, so there is none).  A triple (u, p, n) with loss coefficient
# g (as in _sgd.pyx) moves every feature it touches, in this order, with the
# old p_u, q_p and q_n on the right-hand sides:
#
#     user feature j (weight a):           E[j] += lr * (a g (q_p - q_n) - a rE[j] E[j])
#     positive's feature j (weight b):     F[j] += lr * ( b g p_u - b rF[j] F[j]),  c[j] += lr * ( b g - b rF[j] c[j])
#     negative's feature j (weight b):     F[j] += lr * (-b g p_u - b rF[j] F[j]),  c[j] += lr * (-b g - b rF[j] c[j])
#
# with a penalty per feature (rE, rF): a row's own identity feature is touched
# about as often as the plain model's vector, a shared feature far more often, so
# they want different weight decays.  The decay is weighted by the feature's value
# in the row like the gradient is (the step is the gradient of ln-loss minus
# r_j a_j ||E_j||^2 / 2): a feature carrying a quarter of a normalised row is held
# back a quarter as hard, so normalising rows does not shrink them 4x more than
# the plain model's vectors (item cold start on ML-1M, users normalised with
# identity: AUC 0.7931 -> 0.7939 over 3 seeds; bench/RESULTS.md, issue 13).
# A feature shared by p and n gets both moves (and its decay twice).  With
# adagrad each move is divided by the root of its accumulated squares, as in
# the plain kernel.  Identity feature matrices (one feature per row, weight 1)
# reproduce the plain kernel's arithmetic and its random draws.

cdef extern from *:
    """
    #define FR_DEFINE_FEATURE_STEPS(T, SQRT, SFX)                                    \
    static inline void fr_feat_sgd_##SFX(T *__restrict e, const T *__restrict d,    \
                                         T coef, T lr, T reg, int f) {              \
        _Pragma("omp simd")                                                          \
        for (int k = 0; k < f; ++k)                                                  \
            e[k] = e[k] + lr * (coef * d[k] - reg * e[k]);                           \
    }                                                                                \
    static inline void fr_feat_adagrad_##SFX(T *__restrict e, T *__restrict acc,    \
            const T *__restrict d, T coef, T lr, T reg, int f) {                     \
        _Pragma("omp simd")                                                          \
        for (int k = 0; k < f; ++k) {                                                \
            T step = coef * d[k] - reg * e[k];                                       \
            acc[k] += step * step;                                                   \
            e[k] = e[k] + lr * step / SQRT(acc[k]);                                  \
        }                                                                            \
    }                                                                                \
    static inline void fr_diff_##SFX(const T *__restrict a, const T *__restrict b,  \
                                     T *__restrict out, int f) {                     \
        _Pragma("omp simd")                                                          \
        for (int k = 0; k < f; ++k)                                                  \
            out[k] = a[k] - b[k];                                                    \
    }
    FR_DEFINE_FEATURE_STEPS(float, sqrtf, s)
    FR_DEFINE_FEATURE_STEPS(double, sqrt, d)
    """
    void fr_feat_sgd_s(float *e, const float *d, float coef, float lr, float reg, int f) nogil
    void fr_feat_sgd_d(double *e, const double *d, double coef, double lr, double reg, int f) nogil
    void fr_feat_adagrad_s(float *e, float *acc, const float *d, float coef, float lr, float reg,
                           int f) nogil
    void fr_feat_adagrad_d(double *e, double *acc, const double *d, double coef, double lr, double reg,
                           int f) nogil
    void fr_diff_s(const float *a, const float *b, float *out, int f) nogil
    void fr_diff_d(const double *a, const double *b, double *out, int f) nogil


cdef struct FeatureModel:
    void *E                  # (n_user_features, f) user feature embeddings
    void *F                  # (n_item_features, f) item feature embeddings
    void *c                  # (n_item_features,) item feature biases
    void *GE                 # adagrad accumulators of the three above, NULL for plain SGD
    void *GF
    void *Gc
    const void *rE           # (n_user_features,) penalty of each feature
    const void *rF           # (n_item_features,)
    const long long *a_indptr  # A: users x user features, CSR
    const int *a_indices
    const void *a_data
    const long long *b_indptr  # B: items x item features, CSR
    const int *b_indices
    const void *b_data
    const void *weights      # weight of each interaction, NULL when all are 1
    const void *rank_weight  # WARP: L(k) for k in [0, n_items)
    const long long *indptr  # positives, CSR by user, sorted columns
    const int *indices
    const int *users
    long long nnz
    int n_items
    int f
    int loss
    int max_sampled
    bint verify


cdef inline bint feature_is_positive(const FeatureModel *m, int user, int item) noexcept nogil:
    cdef Model plain
    plain.indptr = m.indptr
    plain.indices = m.indices
    return is_positive(&plain, user, item)


cdef inline floating compose(const long long *indptr, const int *indices, const floating *data,
                             const floating *emb, const floating *bias, int row, floating *out,
                             int f) noexcept nogil:
    """out = sum_j data[j] emb[j] over the row's features; returns sum_j data[j] bias[j] (0 without bias)."""
    cdef long long j = indptr[row], end = indptr[row + 1]
    cdef floating total = 0
    if j == end:
        memset(out, 0, f * sizeof(floating))
        return 0
    scal_copy(data[j], &emb[<long long> indices[j] * f], out, f)
    if bias != NULL:
        total = data[j] * bias[indices[j]]
    j += 1
    while j < end:
        axpy(data[j], &emb[<long long> indices[j] * f], out, f)
        if bias != NULL:
            total += data[j] * bias[indices[j]]
        j += 1
    return total


cdef inline void move_features(const long long *indptr, const int *indices, const floating *data,
                               floating *emb, floating *acc, floating *bias, floating *bias_acc,
                               int row, const floating *direction, floating g, floating lr,
                               const floating *regs, int f) noexcept nogil:
    """Move the embeddings (and biases, when given) of a row's features along ``g * direction``."""
    cdef long long j
    cdef int feat
    cdef floating coef, step, reg
    for j in range(indptr[row], indptr[row + 1]):
        feat = indices[j]
        coef = data[j] * g
        reg = regs[feat] * data[j]
        if acc == NULL:
            if floating is float:
                fr_feat_sgd_s(&emb[<long long> feat * f], direction, coef, lr, reg, f)
            else:
                fr_feat_sgd_d(&emb[<long long> feat * f], direction, coef, lr, reg, f)
            if bias != NULL:
                bias[feat] += lr * (coef - reg * bias[feat])
        else:
            if floating is float:
                fr_feat_adagrad_s(&emb[<long long> feat * f], &acc[<long long> feat * f], direction,
                                  coef, lr, reg, f)
            else:
                fr_feat_adagrad_d(&emb[<long long> feat * f], &acc[<long long> feat * f], direction,
                                  coef, lr, reg, f)
            if bias != NULL:
                step = coef - reg * bias[feat]
                bias_acc[feat] += step * step
                bias[feat] += lr * step / fsqrt(bias_acc[feat])


cdef inline floating feature_score(const FeatureModel *m, int item, const floating *pu, floating *q
                                   ) noexcept nogil:
    """Compose item ``item`` into ``q`` and return its score against ``pu``."""
    cdef floating b = compose(m.b_indptr, m.b_indices, <const floating *> m.b_data,
                              <const floating *> m.F, <const floating *> m.c, item, q, m.f)
    return dot(pu, q, m.f) + b


cdef inline bint feature_step(const FeatureModel *m, int user, int pos, int neg, floating x,
                              int n_sampled, floating w, floating lr,
                              const floating *pu, const floating *qp, const floating *qn,
                              floating *scratch) noexcept nogil:
    """The loss's step for a composed triple of margin ``x``; False when the loss takes none."""
    cdef floating g
    cdef int f = m.f
    cdef floating *GE = <floating *> m.GE
    cdef floating *GF = <floating *> m.GF
    cdef floating *Gc = <floating *> m.Gc
    if m.loss == LOSS_BPR:
        g = w / (1 + fexp(x))
    else:
        if x >= 1:
            return False
        g = w * (<const floating *> m.rank_weight)[(m.n_items - 1) // n_sampled]
        if g == 0:
            return False
    if floating is float:
        fr_diff_s(qp, qn, scratch, f)
    else:
        fr_diff_d(qp, qn, scratch, f)
    move_features(m.a_indptr, m.a_indices, <const floating *> m.a_data, <floating *> m.E, GE,
                  NULL, NULL, user, scratch, g, lr, <const floating *> m.rE, f)
    move_features(m.b_indptr, m.b_indices, <const floating *> m.b_data, <floating *> m.F, GF,
                  <floating *> m.c, Gc, pos, pu, g, lr, <const floating *> m.rF, f)
    move_features(m.b_indptr, m.b_indices, <const floating *> m.b_data, <floating *> m.F, GF,
                  <floating *> m.c, Gc, neg, pu, -g, lr, <const floating *> m.rF, f)
    return True


cdef inline void feature_sample(const FeatureModel *m, uint64_t *state, int user, int pos, int neg,
                                floating w, floating lr, floating *buf,
                                Counts *counts) noexcept nogil:
    """One BPR or WARP sample, drawing further negatives like ``bpr_sample``/``warp_sample``.

    ``buf`` holds 4 * f scratch values: p_u, q_p, q_n and the step direction.
    """
    cdef int f = m.f
    cdef floating *pu = buf
    cdef floating *qp = buf + f
    cdef floating *qn = buf + 2 * f
    cdef floating *scratch = buf + 3 * f
    cdef floating s_pos, x
    cdef int tries = 0, sampled = 0
    if m.loss == LOSS_BPR:
        while neg == pos or (m.verify and feature_is_positive(m, user, neg)):
            tries += 1
            if tries >= MAX_NEGATIVE_DRAWS:
                counts.skipped += 1
                return
            neg = <int> fr_below(state, m.n_items)
    compose(m.a_indptr, m.a_indices, <const floating *> m.a_data, <const floating *> m.E,
            <const floating *> NULL, user, pu, f)
    s_pos = feature_score(m, pos, pu, qp)
    if m.loss == LOSS_BPR:
        x = s_pos - feature_score(m, neg, pu, qn)
        counts.compared += 1
        counts.correct += x > 0
        feature_step(m, user, pos, neg, x, 1, w, lr, pu, qp, qn, scratch)
        return
    while True:
        sampled += 1
        x = s_pos - feature_score(m, neg, pu, qn)
        if sampled == 1 and neg != pos:
            counts.compared += 1
            counts.correct += x > 0
        if x < 1 and neg != pos and not (m.verify and feature_is_positive(m, user, neg)):
            feature_step(m, user, pos, neg, x, sampled, w, lr, pu, qp, qn, scratch)
            return
        if sampled >= m.max_sampled:
            counts.skipped += 1
            return
        neg = <int> fr_below(state, m.n_items)


cdef inline void prefetch_feature_rows(const FeatureModel *m, int user, int pos, int neg) noexcept nogil:
    fr_prefetch_read(&m.a_indptr[user])
    fr_prefetch_read(&m.b_indptr[pos])
    fr_prefetch_read(&m.b_indptr[neg])
    if m.verify:
        fr_prefetch_read(&m.indptr[user])


cdef inline void prefetch_feature_indices(const FeatureModel *m, int user, int pos, int neg) noexcept nogil:
    fr_prefetch_read(&m.a_indices[m.a_indptr[user]])
    fr_prefetch_read(&m.b_indices[m.b_indptr[pos]])
    fr_prefetch_read(&m.b_indices[m.b_indptr[neg]])


cdef void run_feature_chunk(const FeatureModel *m, long long n_samples, uint64_t seed,
                            floating lr, floating *buf, Counts *counts) noexcept nogil:
    """``run_chunk`` for the feature-sum model: the same stages and the same order of draws."""
    cdef long long idx_ring[RING]
    cdef int user_ring[RING]
    cdef int pos_ring[RING]
    cdef int neg_ring[RING]
    cdef uint64_t state = seed
    cdef long long s, t, idx
    cdef int slot, user, pos, neg
    cdef floating w
    cdef const floating *weights = <const floating *> m.weights
    cdef Counts local
    cdef Model plain  # for prefetch_positives

    memset(&local, 0, sizeof(Counts))
    plain.indptr = m.indptr
    plain.indices = m.indices
    for s in range(n_samples + 3 * AHEAD):
        if s < n_samples:  # stage A: the interaction
            slot = s & (RING - 1)
            idx = <long long> fr_below(&state, m.nnz)
            idx_ring[slot] = idx
            fr_prefetch_read(&m.users[idx])
            fr_prefetch_read(&m.indices[idx])
            if weights != NULL:
                fr_prefetch_read(&weights[idx])
        t = s - AHEAD
        if 0 <= t < n_samples:  # stage B: the first negative, the feature rows' offsets
            slot = t & (RING - 1)
            idx = idx_ring[slot]
            user = m.users[idx]
            pos = m.indices[idx]
            neg = <int> fr_below(&state, m.n_items)
            user_ring[slot] = user
            pos_ring[slot] = pos
            neg_ring[slot] = neg
            prefetch_feature_rows(m, user, pos, neg)
        t = s - 2 * AHEAD
        if 0 <= t < n_samples:  # stage C: the feature lists and the user's positives
            slot = t & (RING - 1)
            prefetch_feature_indices(m, user_ring[slot], pos_ring[slot], neg_ring[slot])
            if m.verify:
                prefetch_positives(&plain, user_ring[slot])
        t = s - 3 * AHEAD
        if t >= 0:  # stage D: the step
            slot = t & (RING - 1)
            w = 1 if weights == NULL else weights[idx_ring[slot]]
            feature_sample(m, &state, user_ring[slot], pos_ring[slot], neg_ring[slot], w, lr,
                           buf, &local)
    counts[0] = local


cdef int fill_feature_model(FeatureModel *m, int loss, const long long[::1] indptr, const int[::1] indices,
                            const int[::1] users, const floating[::1] weights,
                            const long long[::1] a_indptr, const int[::1] a_indices,
                            const floating[::1] a_data, const long long[::1] b_indptr,
                            const int[::1] b_indices, const floating[::1] b_data,
                            const floating[:, ::1] E, const floating[:, ::1] F, const floating[::1] c,
                            const floating[:, ::1] GE, const floating[:, ::1] GF, const floating[::1] Gc,
                            const floating[::1] rE, const floating[::1] rF,
                            const floating[::1] rank_weight, int max_sampled, bint verify) except -1:
    """Check the arrays' shapes and the feature indices, and describe them in ``m``."""
    cdef int f = E.shape[1]
    cdef Py_ssize_t n_users = a_indptr.shape[0] - 1
    cdef Py_ssize_t n_items = b_indptr.shape[0] - 1
    cdef bint adagrad = GE.shape[0] > 0
    if loss != LOSS_BPR and loss != LOSS_WARP:
        raise ValueError("loss must be 0 (BPR) or 1 (WARP)")
    if F.shape[1] != f or c.shape[0] != F.shape[0]:
        raise ValueError("embedding shapes do not agree")
    if rE.shape[0] != E.shape[0] or rF.shape[0] != F.shape[0]:
        raise ValueError("the penalties rE and rF need one value per user and item feature")
    if n_users < 0 or n_items < 0 or indptr.shape[0] != n_users + 1:
        raise ValueError("indptr must have one entry per user plus one, like the user features")
    for name, ptr, idx, dat, n_feat in (("user", a_indptr, a_indices, a_data, E.shape[0]),
                                        ("item", b_indptr, b_indices, b_data, F.shape[0])):
        arr_ptr, arr_idx = np.asarray(ptr), np.asarray(idx)
        if (arr_ptr[0] != 0 or arr_ptr[arr_ptr.size - 1] != arr_idx.size or dat.shape[0] != arr_idx.size
                or (np.diff(arr_ptr) < 0).any()):
            raise ValueError(f"the {name} feature matrix is not a valid CSR")
        if arr_idx.size and (arr_idx.min() < 0 or arr_idx.max() >= n_feat):
            raise ValueError(f"{name} feature indices must be in [0, {n_feat})")
    if users.shape[0] != indices.shape[0] or indptr[n_users] != indices.shape[0]:
        raise ValueError("users, indices and indptr must describe the same interactions")
    if weights.shape[0] not in (0, indices.shape[0]):
        raise ValueError("weights must be empty or have one value per interaction")
    if adagrad and (GE.shape[0] != E.shape[0] or GE.shape[1] != f or GF.shape[0] != F.shape[0]
                    or GF.shape[1] != f or Gc.shape[0] != F.shape[0]):
        raise ValueError("adagrad accumulators must match the embeddings")
    if loss == LOSS_WARP and (rank_weight.shape[0] != n_items or max_sampled < 1):
        raise ValueError("WARP needs rank_weight (one value per item) and max_sampled >= 1")
    memset(m, 0, sizeof(FeatureModel))
    m.E = rows_or_null(E)
    m.F = rows_or_null(F)
    m.c = data_or_null(c)
    if adagrad:
        m.GE = rows_or_null(GE)
        m.GF = rows_or_null(GF)
        m.Gc = data_or_null(Gc)
    m.rE = data_or_null(rE)
    m.rF = data_or_null(rF)
    m.a_indptr = &a_indptr[0]
    m.a_indices = &a_indices[0] if a_indices.shape[0] > 0 else NULL
    m.a_data = data_or_null(a_data)
    m.b_indptr = &b_indptr[0]
    m.b_indices = &b_indices[0] if b_indices.shape[0] > 0 else NULL
    m.b_data = data_or_null(b_data)
    m.weights = data_or_null(weights)
    m.rank_weight = data_or_null(rank_weight)
    m.indptr = &indptr[0]
    m.indices = &indices[0] if indices.shape[0] > 0 else NULL
    m.users = &users[0] if users.shape[0] > 0 else NULL
    m.nnz = indices.shape[0]
    m.n_items = <int> n_items
    m.f = f
    m.loss = loss
    m.max_sampled = max_sampled
    m.verify = verify
    return 0


def sgd_epoch_features(int loss, const long long[::1] indptr, const int[::1] indices,
                       const int[::1] users, const floating[::1] weights,
                       const long long[::1] a_indptr, const int[::1] a_indices, const floating[::1] a_data,
                       const long long[::1] b_indptr, const int[::1] b_indices, const floating[::1] b_data,
                       floating[:, ::1] E, floating[:, ::1] F, floating[::1] c,
                       floating[:, ::1] GE, floating[:, ::1] GF, floating[::1] Gc,
                       const floating[::1] rE, const floating[::1] rF,
                       const floating[::1] rank_weight, floating learning_rate,
                       long long n_samples, int max_sampled, bint verify,
                       const uint64_t[::1] seeds, int num_threads):
    """One Hogwild epoch of the feature-sum model; embeddings are updated in place.

    Parameters
    ----------
    loss, indptr, indices, users, weights, rank_weight, learning_rate,
    n_samples, max_sampled, verify, seeds, num_threads
        As in ``sgd_epoch``.
    rE, rF : L2 weight decay of each user and item feature (``sgd_epoch``'s regularization, per feature),
        applied at each touch times the feature's value in the row.
    a_indptr, a_indices, a_data : users x user features CSR (int64, int32, float).
    b_indptr, b_indices, b_data : items x item features CSR.
    E : (n_user_features, f) user feature embeddings.
    F, c : (n_item_features, f) item feature embeddings and (n_item_features,) biases.
    GE, GF, Gc : adagrad accumulators (empty arrays for plain SGD).

    Returns
    -------
    (correct, compared, skipped), as ``sgd_epoch``.
    """
    cdef FeatureModel m
    cdef Counts *counts
    cdef floating *buffers
    cdef int t
    cdef long long correct = 0, compared = 0, skipped = 0
    if num_threads < 1 or seeds.shape[0] < num_threads:
        raise ValueError("num_threads must be >= 1 with one seed per thread")
    fill_feature_model(&m, loss, indptr, indices, users, weights, a_indptr, a_indices, a_data,
                       b_indptr, b_indices, b_data, E, F, c, GE, GF, Gc, rE, rF, rank_weight, max_sampled,
                       verify)
    if n_samples <= 0 or m.nnz == 0 or m.n_items < 2 or m.f == 0:
        return 0, 0, max(n_samples, 0)
    if n_samples < num_threads * 64:
        num_threads = 1
    counts = <Counts *> malloc(num_threads * sizeof(Counts))
    buffers = <floating *> malloc(num_threads * 4 * (<size_t> m.f) * sizeof(floating))
    if counts == NULL or buffers == NULL:
        free(counts)
        free(buffers)
        raise MemoryError()
    try:
        for t in prange(num_threads, nogil=True, num_threads=num_threads, schedule="static", chunksize=1):
            run_feature_chunk(&m, n_samples * (t + 1) // num_threads - n_samples * t // num_threads,
                              seeds[t], learning_rate, buffers + 4 * m.f * t, &counts[t])
        for t in range(num_threads):
            correct += counts[t].correct
            compared += counts[t].compared
            skipped += counts[t].skipped
    finally:
        free(counts)
        free(buffers)
    return correct, compared, skipped


def apply_feature_samples(int loss, const int[:, ::1] samples, const floating[::1] sample_weights,
                          const long long[::1] a_indptr, const int[::1] a_indices, const floating[::1] a_data,
                          const long long[::1] b_indptr, const int[::1] b_indices, const floating[::1] b_data,
                          floating[:, ::1] E, floating[:, ::1] F, floating[::1] c,
                          floating[:, ::1] GE, floating[:, ::1] GF, floating[::1] Gc,
                          const floating[::1] rE, const floating[::1] rF,
                          const floating[::1] rank_weight, floating learning_rate):
    """Apply explicit triples in order, one thread: the reference check of ``sgd_epoch_features``.

    ``samples`` is (n, 4) int32 rows ``(user, pos, neg, n_sampled)`` as in
    ``apply_samples``.  Returns how many steps were taken.
    """
    cdef FeatureModel m
    cdef Py_ssize_t n_users = a_indptr.shape[0] - 1
    cdef const long long[::1] no_indptr = np.zeros(max(n_users, 0) + 1, dtype=np.int64)
    cdef const int[::1] no_ints = np.empty(0, dtype=np.int32)
    cdef Py_ssize_t r
    cdef long long steps = 0
    cdef floating x, s_pos
    cdef floating *buf
    fill_feature_model(&m, loss, no_indptr, no_ints, no_ints, sample_weights[:0], a_indptr, a_indices,
                       a_data, b_indptr, b_indices, b_data, E, F, c, GE, GF, Gc, rE, rF, rank_weight, 1, False)
    if samples.shape[1] != 4 or sample_weights.shape[0] != samples.shape[0]:
        raise ValueError("samples must be (n, 4) with one weight per sample")
    if samples.shape[0]:
        arr = np.asarray(samples)
        if (arr[:, 0].min() < 0 or arr[:, 0].max() >= n_users or arr[:, 1:3].min() < 0
                or arr[:, 1:3].max() >= m.n_items or arr[:, 3].min() < 1 or (arr[:, 1] == arr[:, 2]).any()):
            raise ValueError("samples need users and items in range, pos != neg and n_sampled >= 1")
    buf = <floating *> malloc(4 * (<size_t> max(m.f, 1)) * sizeof(floating))
    if buf == NULL:
        raise MemoryError()
    try:
        with nogil:
            for r in range(samples.shape[0]):
                compose(m.a_indptr, m.a_indices, <const floating *> m.a_data, <const floating *> m.E,
                        <const floating *> NULL, samples[r, 0], buf, m.f)
                s_pos = feature_score(&m, samples[r, 1], buf, buf + m.f)
                x = s_pos - feature_score(&m, samples[r, 2], buf, buf + 2 * m.f)
                steps += feature_step(&m, samples[r, 0], samples[r, 1], samples[r, 2], x, samples[r, 3],
                                      sample_weights[r], learning_rate, buf, buf + m.f,
                                      buf + 2 * m.f, buf + 3 * m.f)
    finally:
        free(buf)
    return steps
