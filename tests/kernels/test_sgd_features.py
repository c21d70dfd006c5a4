"""The feature-sum SGD kernel (``sgd_epoch_features``, ``apply_feature_samples``) against NumPy.

Every ISA build of ``fastrec._sgd`` (the ``sgd_kernel`` fixture) must agree
with a NumPy transcription of the update in ``ext/_sgd_features.pxi``, take
the analytic gradient of the loss, and reduce to the plain kernel when every
row has only its identity feature.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

BPR, WARP = 0, 1


def _csr(matrix: np.ndarray, dtype) -> sp.csr_matrix:
    out = sp.csr_matrix(matrix.astype(dtype))
    out.sort_indices()
    out.indptr = out.indptr.astype(np.int64)
    out.indices = out.indices.astype(np.int32)
    return out


def _rank_weights(n_items: int, dtype) -> np.ndarray:
    table = np.zeros(n_items)
    table[1:] = np.cumsum(1.0 / np.arange(1, n_items))
    return table.astype(dtype)


def _reference(loss, samples, weights, A, B, E, F, c, GE, GF, Gc, rE, rF, rank_weight, lr):
    """The module docstring's update, one triple at a time, in float64."""
    E, F, c = E.astype(np.float64), F.astype(np.float64), c.astype(np.float64)
    GE, GF, Gc = (None if G.size == 0 else G.astype(np.float64) for G in (GE, GF, Gc))
    n_items = B.shape[0]
    steps = 0

    def move(emb, acc, bias, bias_acc, regs, row, direction, g):
        for j, value in zip(row.indices, row.data):
            coef = value * g
            reg = regs[j] * value  # the decay is weighted like the gradient
            step = coef * direction - reg * emb[j]
            if acc is None:
                emb[j] += lr * step
            else:
                acc[j] += step * step
                emb[j] += lr * step / np.sqrt(acc[j])
            if bias is not None:
                bstep = coef - reg * bias[j]
                if bias_acc is None:
                    bias[j] += lr * bstep
                else:
                    bias_acc[j] += bstep * bstep
                    bias[j] += lr * bstep / np.sqrt(bias_acc[j])

    for (u, p, n, drawn), w in zip(samples, weights):
        pu = A[u].toarray()[0] @ E
        qp, qn = B[p].toarray()[0] @ F, B[n].toarray()[0] @ F
        bp, bn = B[p].toarray()[0] @ c, B[n].toarray()[0] @ c
        x = pu @ qp + bp - (pu @ qn + bn)
        if loss == BPR:
            g = w / (1 + np.exp(x))
        else:
            if x >= 1:
                continue
            g = w * rank_weight[(n_items - 1) // drawn]
            if g == 0:
                continue
        steps += 1
        move(E, GE, None, None, rE, A[u], qp - qn, g)
        move(F, GF, c, Gc, rF, B[p], pu, g)
        move(F, GF, c, Gc, rF, B[n], pu, -g)
    return steps, E, F, c


def _problem(rng, dtype, n_users=7, n_items=9, n_uf=5, n_if=6, f=4, identity=False):
    if identity:
        A, B = np.eye(n_users), np.eye(n_items)
        n_uf, n_if = n_users, n_items
    else:
        A = rng.random((n_users, n_uf)) * (rng.random((n_users, n_uf)) < 0.5)
        B = rng.random((n_items, n_if)) * (rng.random((n_items, n_if)) < 0.5)
        B[0, :2] = [0.7, 0.3]  # items 0 and 1 share a feature
        B[1, :2] = [0.4, 0.0]
    E = (rng.standard_normal((n_uf, f)) * 0.5).astype(dtype)
    F = (rng.standard_normal((n_if, f)) * 0.5).astype(dtype)
    c = (rng.standard_normal(n_if) * 0.1).astype(dtype)
    return _csr(A, dtype), _csr(B, dtype), E, F, c


def _samples(rng, n_users, n_items, count=40):
    users = rng.integers(0, n_users, count)
    pos = rng.integers(0, n_items, count)
    neg = (pos + rng.integers(1, n_items, count)) % n_items
    drawn = rng.integers(1, 4, count)
    out = np.ascontiguousarray(np.column_stack([users, pos, neg, drawn]), dtype=np.int32)
    out[0, 1:3] = [0, 1]  # a triple whose items share a feature
    return out


@pytest.mark.parametrize("loss", [BPR, WARP])
@pytest.mark.parametrize("adagrad", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_apply_feature_samples_matches_numpy(sgd_kernel, loss, adagrad, dtype):
    rng = np.random.default_rng(3)
    A, B, E, F, c = _problem(rng, dtype)
    samples = _samples(rng, A.shape[0], B.shape[0])
    weights = (0.5 + rng.random(samples.shape[0])).astype(dtype)
    GE = np.ones_like(E) if adagrad else E[:0]
    GF = np.ones_like(F) if adagrad else F[:0]
    Gc = np.ones_like(c) if adagrad else c[:0]
    rank_weight = _rank_weights(B.shape[0], dtype)
    lr = 0.1
    rE = rng.choice([0.0, 0.05, 0.4], E.shape[0]).astype(dtype)  # a penalty per feature
    rF = rng.choice([0.0, 0.05, 0.4], F.shape[0]).astype(dtype)
    expected = _reference(loss, samples, weights, A, B, E, F, c, GE, GF, Gc, rE, rF, rank_weight, lr)
    steps = sgd_kernel.apply_feature_samples(
        loss, samples, weights, A.indptr, A.indices, A.data, B.indptr, B.indices, B.data,
        E, F, c, GE, GF, Gc, rE, rF, rank_weight, dtype(lr))
    tol = 1e-4 if dtype == np.float32 else 1e-10
    assert steps == expected[0] > 0
    np.testing.assert_allclose(E, expected[1], rtol=tol, atol=tol)
    np.testing.assert_allclose(F, expected[2], rtol=tol, atol=tol)
    np.testing.assert_allclose(c, expected[3], rtol=tol, atol=tol)


@pytest.mark.parametrize("penalised", [False, True])
def test_step_is_the_gradient_of_ln_sigmoid_and_a_weighted_l2(sgd_kernel, penalised):
    """BPR moves every parameter by lr times the gradient of ln sigmoid(x) - sum_j r_j a_j ||E_j||^2 / 2
    over the features the triple touches, each weighted by its value a_j in the row (twice for a
    feature of both items, the bias included): without penalties, d ln sigmoid(x) / d parameter."""
    rng = np.random.default_rng(6 if penalised else 5)
    A, B, E, F, c = _problem(rng, np.float64, f=3)
    u, p, n = 2, 0, 1  # p and n share feature 0
    A = _csr(np.where(np.arange(A.shape[0])[:, None] == u, rng.random(A.shape) + 0.1, A.toarray()), np.float64)
    rE = rng.uniform(0.1, 2.0, E.shape[0]) if penalised else np.zeros(E.shape[0])
    rF = rng.uniform(0.1, 2.0, F.shape[0]) if penalised else np.zeros(F.shape[0])
    a, bp, bn = A[u].toarray()[0], B[p].toarray()[0], B[n].toarray()[0]

    def objective(E, F, c):
        pu = a @ E
        x = pu @ (bp @ F) + bp @ c - pu @ (bn @ F) - bn @ c
        return (-np.log1p(np.exp(-x)) - 0.5 * (rE * a) @ (E * E).sum(axis=1)
                - 0.5 * (rF * (bp + bn)) @ ((F * F).sum(axis=1) + c * c))

    # with penalties the shared feature's second move sees the first: a tiny step keeps that O(lr^2)
    lr, eps = (1e-6, 1e-6) if penalised else (1e-3, 1e-6)
    params = [E.copy(), F.copy(), c.copy()]
    grads = []
    for which in range(3):
        grad = np.zeros_like(params[which])
        for index in np.ndindex(grad.shape):
            up = [q.copy() for q in params]
            down = [q.copy() for q in params]
            up[which][index] += eps
            down[which][index] -= eps
            grad[index] = (objective(*up) - objective(*down)) / (2 * eps)
        grads.append(grad)
    samples = np.array([[u, p, n, 1]], dtype=np.int32)
    sgd_kernel.apply_feature_samples(BPR, samples, np.ones(1), A.indptr, A.indices, A.data, B.indptr,
                                     B.indices, B.data, E, F, c, E[:0], F[:0], c[:0], rE, rF,
                                     _rank_weights(B.shape[0], np.float64), lr)
    for before, after, grad in zip(params, (E, F, c), grads):
        np.testing.assert_allclose((after - before) / lr, grad, rtol=1e-5 if penalised else 1e-6,
                                   atol=1e-6 if penalised else 1e-8)


@pytest.mark.parametrize("loss", [BPR, WARP])
@pytest.mark.parametrize("adagrad", [False, True])
def test_identity_features_reproduce_the_plain_kernel(sgd_kernel, loss, adagrad):
    """One-hot identity rows: the same draws and the same updates as ``sgd_epoch``."""
    rng = np.random.default_rng(11)
    n_users, n_items, f = 30, 25, 8
    A, B, U, V, bias = _problem(rng, np.float32, n_users, n_items, f=f, identity=True)
    X = _csr((rng.random((n_users, n_items)) < 0.25).astype(np.float32), np.float32)
    users = np.repeat(np.arange(n_users, dtype=np.int32), np.diff(X.indptr))
    weights = np.empty(0, np.float32)
    rank_weight = _rank_weights(n_items, np.float32)
    seeds = np.array([1234], dtype=np.uint64)
    plain = [U.copy(), V.copy(), bias.copy()]
    feats = [U.copy(), V.copy(), bias.copy()]
    acc_plain = [np.ones_like(a) if adagrad else a[:0] for a in plain]
    acc_feats = [np.ones_like(a) if adagrad else a[:0] for a in feats]
    for epoch in range(3):
        counts_plain = sgd_kernel.sgd_epoch(loss, X.indptr, X.indices, users, weights, *plain, *acc_plain,
                                            rank_weight, np.float32(0.05), np.float32(0.01), X.nnz, 5, True,
                                            True, seeds + epoch, 1)
        counts_feats = sgd_kernel.sgd_epoch_features(
            loss, X.indptr, X.indices, users, weights, A.indptr, A.indices, A.data, B.indptr, B.indices,
            B.data, *feats, *acc_feats, np.full(n_users, 0.01, np.float32), np.full(n_items, 0.01, np.float32),
            rank_weight, np.float32(0.05), X.nnz, 5, True, seeds + epoch, 1)
        assert counts_plain == counts_feats
    for a, b in zip(plain, feats):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("threads", [1, 2])
def test_epochs_learn_from_features(sgd_kernel, threads):
    """Users of two groups like the items of their group's feature: the features learn it."""
    rng = np.random.default_rng(0)
    n_users, n_items, f = 200, 60, 8
    group_u = rng.integers(0, 2, n_users)
    group_i = np.arange(n_items) % 2
    X = _csr((group_u[:, None] == group_i[None, :]) & (rng.random((n_users, n_items)) < 0.3), np.float32)
    A = _csr(np.eye(2)[group_u], np.float32)
    B = _csr(np.eye(2)[group_i], np.float32)
    E = (rng.standard_normal((2, f)) * 0.01).astype(np.float32)
    F = (rng.standard_normal((2, f)) * 0.01).astype(np.float32)
    c = np.zeros(2, np.float32)
    users = np.repeat(np.arange(n_users, dtype=np.int32), np.diff(X.indptr))
    for epoch in range(5):
        correct, compared, _ = sgd_kernel.sgd_epoch_features(
            WARP, X.indptr, X.indices, users, np.empty(0, np.float32), A.indptr, A.indices, A.data,
            B.indptr, B.indices, B.data, E, F, c, np.ones_like(E), np.ones_like(F), np.ones_like(c),
            np.zeros(2, np.float32), np.zeros(2, np.float32), _rank_weights(n_items, np.float32),
            np.float32(0.05), X.nnz, 10, True,
            np.arange(1, threads + 1, dtype=np.uint64) + 100 * epoch, threads)
    scores = (E @ F.T)
    assert scores[0, 0] > scores[0, 1] and scores[1, 1] > scores[1, 0]
    # same-group negatives tie with the positive (x = 0 is not "correct"): about half are ordered
    assert compared > 0 and correct / compared > 0.45


def test_bad_feature_matrices_are_refused(sgd_kernel):
    rng = np.random.default_rng(1)
    A, B, E, F, c = _problem(rng, np.float64)
    samples = np.array([[0, 1, 2, 1]], dtype=np.int32)
    args = (np.ones(1), A.indptr, A.indices, A.data, B.indptr, B.indices, B.data)
    rE, rF, rank_weight = np.zeros(E.shape[0]), np.zeros(F.shape[0]), _rank_weights(B.shape[0], np.float64)
    with pytest.raises(ValueError, match="feature indices"):
        sgd_kernel.apply_feature_samples(BPR, samples, *args, E[:2].copy(), F, c, E[:0], F[:0], c[:0], rE[:2],
                                         rF, rank_weight, 0.1)
    with pytest.raises(ValueError, match="samples"):
        sgd_kernel.apply_feature_samples(BPR, np.array([[0, 1, 1, 1]], dtype=np.int32), *args, E, F, c,
                                         E[:0], F[:0], c[:0], rE, rF, rank_weight, 0.1)
    with pytest.raises(ValueError, match="penalties"):
        sgd_kernel.apply_feature_samples(BPR, samples, *args, E, F, c, E[:0], F[:0], c[:0], rE[:1], rF,
                                         rank_weight, 0.1)
