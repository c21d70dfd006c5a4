"""Correctness of the SGD kernels (`ext/_sgd.pyx`) and the `BPR` estimator (BPR and WARP losses).

The update math is checked against a float64 NumPy reference that applies
the same (user, positive, negative) triples one after the other.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastrec
from fastrec import BPR
from fastrec.models.bpr import _Positives, _rank_weights
from reference import planted_low_rank

LOSSES = {"bpr": 0, "warp": 1}
DTYPES = (np.float32, np.float64)
RTOL = {np.float32: 2e-4, np.float64: 1e-11}



# ------------------------------------------------------------- reference
def harmonic(k: int) -> float:
    return float(sum(1.0 / i for i in range(1, k + 1)))


def reference_steps(samples, weights, U, V, b, loss, lr, reg, adagrad, update_items):
    """Apply (user, pos, neg, n_sampled) triples in order, in float64; see ext/_sgd.pyx."""
    U, V, b = (np.array(a, dtype=np.float64) for a in (U, V, b))
    GU, GV, Gb = np.ones_like(U), np.ones_like(V), np.ones_like(b)
    n_items = V.shape[0]
    steps = 0
    for (u, p, n, k), w in zip(samples, weights):
        x = U[u] @ V[p] + b[p] - U[u] @ V[n] - b[n]
        if loss == "bpr":
            g = w / (1.0 + np.exp(x))
        else:
            if x >= 1:
                continue
            g = w * harmonic((n_items - 1) // k)
            if g == 0:
                continue
        grads = {("U", u): g * (V[p] - V[n]) - reg * U[u]}
        if update_items:
            grads[("V", p)] = g * U[u] - reg * V[p]
            grads[("V", n)] = -g * U[u] - reg * V[n]
            grads[("b", p)] = g - reg * b[p]
            grads[("b", n)] = -g - reg * b[n]
        for (name, row), grad in grads.items():
            param, acc = {"U": (U, GU), "V": (V, GV), "b": (b, Gb)}[name]
            if adagrad:
                acc[row] = acc[row] + grad * grad
                param[row] = param[row] + lr * grad / np.sqrt(acc[row])
            else:
                param[row] = param[row] + lr * grad
        steps += 1
    return U, V, b, steps


def kernel_arrays(U, V, b, adagrad, update_items, dtype):
    U, V, b = (np.array(a, dtype=dtype, order="C") for a in (U, V, b))
    empty = np.empty((0, U.shape[1]), dtype=dtype)
    GU = np.ones_like(U) if adagrad else empty
    GV = np.ones_like(V) if adagrad and update_items else empty
    Gb = np.ones_like(b) if adagrad and update_items else b[:0].copy()
    return U, V, b, GU, GV, Gb


def random_triples(rng, n, n_users, n_items, max_sampled):
    users = rng.integers(0, n_users, n)
    pos = rng.integers(0, n_items, n)
    neg = (pos + rng.integers(1, n_items, n)) % n_items  # never the positive
    k = rng.integers(1, max_sampled + 1, n)
    return np.ascontiguousarray(np.stack([users, pos, neg, k], axis=1), dtype=np.int32)


# ---------------------------------------------------- kernel vs reference
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("adagrad", [False, True], ids=["sgd", "adagrad"])
@pytest.mark.parametrize("update_items", [True, False], ids=["all", "users_only"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_explicit_samples_match_reference(sgd_kernel, loss, adagrad, update_items, dtype):
    rng = np.random.default_rng(7)
    n_users, n_items, f = 5, 7, 6
    U0 = rng.normal(0, 0.5, (n_users, f))  # large enough for some WARP margins to reach 1
    V0 = rng.normal(0, 0.5, (n_items, f))
    b0 = rng.normal(0, 0.5, n_items)
    samples = random_triples(rng, 60, n_users, n_items, 4)  # users and items repeat: order matters
    weights = rng.choice([1.0, 0.5, 2.0], samples.shape[0])
    lr, reg = 0.07, 0.02

    want_U, want_V, want_b, want_steps = reference_steps(samples, weights, U0, V0, b0, loss, lr, reg,
                                                         adagrad, update_items)
    U, V, b, GU, GV, Gb = kernel_arrays(U0, V0, b0, adagrad, update_items, dtype)
    steps = sgd_kernel.apply_samples(LOSSES[loss], samples, weights.astype(dtype), U, V, b, GU, GV, Gb,
                                     _rank_weights(n_items, np.dtype(dtype)), dtype(lr), dtype(reg),
                                     update_items)
    assert steps == want_steps
    if loss == "warp":
        assert 0 < steps < samples.shape[0]  # both branches of the margin test ran
    np.testing.assert_allclose(U, want_U, rtol=RTOL[dtype], atol=RTOL[dtype])
    np.testing.assert_allclose(V, want_V, rtol=RTOL[dtype], atol=RTOL[dtype])
    np.testing.assert_allclose(b, want_b, rtol=RTOL[dtype], atol=RTOL[dtype])
    if not update_items:
        assert np.array_equal(V, np.asarray(V0, dtype)) and np.array_equal(b, np.asarray(b0, dtype))


def epoch_args(X, U, V, b, GU, GV, Gb, loss, lr, reg, n_samples, max_sampled=10, verify=True,
               update_items=True, seed=0, threads=1):
    P = _Positives.from_csr(sp.csr_matrix(X))
    dtype = U.dtype.type
    return (LOSSES[loss], P.indptr, P.indices, P.users, P.weights.astype(U.dtype), U, V, b, GU, GV, Gb,
            _rank_weights(V.shape[0], U.dtype), dtype(lr), dtype(reg), n_samples, max_sampled, verify,
            update_items, np.full(threads, seed, dtype=np.uint64), threads)


@pytest.mark.parametrize("adagrad", [False, True], ids=["sgd", "adagrad"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_bpr_epoch_uses_the_reference_update(sgd_kernel, adagrad, dtype):
    # one interaction (user 0, item 0) of weight 3 and two items: every sample is (0, 0, 1)
    X = sp.csr_matrix(np.array([[3.0, 0.0]]))
    rng = np.random.default_rng(1)
    U0, V0, b0 = rng.normal(0, 0.3, (1, 4)), rng.normal(0, 0.3, (2, 4)), np.array([0.1, -0.2])
    U, V, b, GU, GV, Gb = kernel_arrays(U0, V0, b0, adagrad, True, dtype)
    correct, compared, skipped = sgd_kernel.sgd_epoch(
        *epoch_args(X, U, V, b, GU, GV, Gb, "bpr", 0.05, 0.01, 25, seed=3))
    assert (compared, skipped) == (25, 0)
    triples = np.tile(np.array([[0, 0, 1, 1]], dtype=np.int32), (25, 1))
    want_U, want_V, want_b, _ = reference_steps(triples, np.full(25, 3.0), U0, V0, b0, "bpr",
                                                0.05, 0.01, adagrad, True)
    np.testing.assert_allclose(U, want_U, rtol=10 * RTOL[dtype], atol=10 * RTOL[dtype])
    np.testing.assert_allclose(V, want_V, rtol=10 * RTOL[dtype], atol=10 * RTOL[dtype])
    np.testing.assert_allclose(b, want_b, rtol=10 * RTOL[dtype], atol=10 * RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_warp_epoch_uses_the_reference_update(sgd_kernel, dtype):
    # two items and max_sampled=1: a draw of item 0 (the positive) skips the sample,
    # a draw of item 1 is a step with one draw; a small rate keeps every margin below 1
    X = sp.csr_matrix(np.array([[1.0, 0.0]]))
    rng = np.random.default_rng(2)
    U0, V0, b0 = rng.normal(0, 0.1, (1, 4)), rng.normal(0, 0.1, (2, 4)), np.zeros(2)
    U, V, b, GU, GV, Gb = kernel_arrays(U0, V0, b0, False, True, dtype)
    _, _, skipped = sgd_kernel.sgd_epoch(*epoch_args(X, U, V, b, GU, GV, Gb, "warp", 0.01, 0.0, 40,
                                                     max_sampled=1, seed=5))
    assert 0 < skipped < 40
    steps = 40 - skipped
    triples = np.tile(np.array([[0, 0, 1, 1]], dtype=np.int32), (steps, 1))
    want_U, want_V, want_b, want_steps = reference_steps(triples, np.ones(steps), U0, V0, b0, "warp",
                                                         0.01, 0.0, False, True)
    assert want_steps == steps
    np.testing.assert_allclose(U, want_U, rtol=10 * RTOL[dtype], atol=10 * RTOL[dtype])
    np.testing.assert_allclose(V, want_V, rtol=10 * RTOL[dtype], atol=10 * RTOL[dtype])
    np.testing.assert_allclose(b, want_b, rtol=10 * RTOL[dtype], atol=10 * RTOL[dtype])


@pytest.mark.parametrize("loss", LOSSES)
def test_verify_rejects_known_positives(sgd_kernel, loss):
    V0 = np.random.default_rng(0).normal(0, 0.1, (5, 3))

    def run(row, verify):
        U, V, b, GU, GV, Gb = kernel_arrays(np.full((1, 3), 0.1), V0, np.zeros(5), False, True,
                                            np.float64)
        counts = sgd_kernel.sgd_epoch(*epoch_args(sp.csr_matrix(np.array([row])), U, V, b, GU, GV, Gb,
                                                  loss, 0.1, 0.0, 200, verify=verify))
        return counts, b

    # a user who likes every item has no negatives: verification skips every sample
    (_, _, skipped), b = run([1.0] * 5, verify=True)
    assert skipped == 200 and not b.any()
    (_, _, skipped), b = run([1.0] * 5, verify=False)
    assert skipped < 200 and b.any()
    # liking items 0..3: only item 4 is ever a negative, so only its bias falls
    _, b = run([1.0, 1, 1, 1, 0], verify=True)
    assert (b[:4] >= 0).all() and b[4] < 0
    np.testing.assert_allclose(b.sum(), 0.0, atol=1e-12)  # reg=0: every step moves +g and -g


def test_kernel_rejects_inconsistent_arrays(sgd_kernel):
    X = sp.csr_matrix(np.eye(3))
    U, V, b, GU, GV, Gb = kernel_arrays(np.zeros((3, 2)), np.zeros((3, 2)), np.zeros(3), False, True,
                                        np.float64)
    args = list(epoch_args(X, U, V, b, GU, GV, Gb, "bpr", 0.1, 0.0, 10))
    bad_bias = list(args)
    bad_bias[7] = np.zeros(2)
    with pytest.raises(ValueError, match="shapes"):
        sgd_kernel.sgd_epoch(*bad_bias)
    bad_seeds = list(args)
    bad_seeds[-1] = 4  # more threads than seeds
    with pytest.raises(ValueError, match="seed"):
        sgd_kernel.sgd_epoch(*bad_seeds)
    with pytest.raises(ValueError, match="pos != neg"):
        sgd_kernel.apply_samples(0, np.array([[0, 1, 1, 1]], dtype=np.int32), np.ones(1), U, V, b,
                                 GU, GV, Gb, _rank_weights(3, np.dtype(np.float64)), 0.1, 0.0, True)


# ----------------------------------------------------------- the positives
def test_positives_drop_non_positive_values_and_keep_weights():
    X = sp.csr_matrix(np.array([[2.0, -1.0, 0.0], [0.0, 0.0, 0.0], [-3.0, 1.0, 0.5]]))
    P = _Positives.from_csr(X)
    assert P.indptr.tolist() == [0, 1, 1, 3]
    assert P.indices.tolist() == [0, 1, 2]
    assert P.users.tolist() == [0, 2, 2]
    assert P.weights.tolist() == [2.0, 1.0, 0.5]
    assert _Positives.from_csr(sp.csr_matrix(np.array([[1.0, 0, 1]]))).weights.size == 0  # all ones


def test_rank_weights_are_harmonic_numbers():
    L = _rank_weights(6, np.dtype(np.float64))
    np.testing.assert_allclose(L, [0, 1, 1.5, 11 / 6, 25 / 12, 137 / 60])


# --------------------------------------------------------------- training
def heldout_auc(model, train, test, n_neg=50, seed=0):
    """Share of (held-out positive, random unseen item) pairs ranked correctly."""
    rng = np.random.default_rng(seed)
    seen = (train + test).tolil().rows
    wins, total = 0, 0
    for u in range(test.shape[0]):
        for i in test.indices[test.indptr[u]:test.indptr[u + 1]]:
            negs = rng.integers(0, train.shape[1], n_neg)
            negs = negs[~np.isin(negs, seen[u])]
            scores = model.predict(np.full(negs.size + 1, u), np.concatenate([[i], negs]))
            wins += int((scores[0] > scores[1:]).sum())
            total += negs.size
    return wins / total


@pytest.fixture(scope="module")
def planted():
    X = planted_low_rank(300, 120, rank=4, per_user=20, seed=3)
    rng = np.random.default_rng(0)
    coo = X.tocoo()
    test_mask = rng.random(coo.nnz) < 0.2
    part = lambda m: sp.csr_matrix((coo.data[m], (coo.row[m], coo.col[m])), shape=X.shape)
    return part(~test_mask), part(test_mask)


@pytest.mark.parametrize("loss", LOSSES)
def test_training_auc_improves_and_generalises(planted, loss):
    train, test = planted
    epochs = []
    model = BPR(factors=8, loss=loss, iterations=25, num_threads=1, random_state=0)
    model.fit(train, callback=lambda epoch, elapsed, auc: epochs.append((epoch, elapsed, auc)))
    assert [e for e, _, _ in epochs] == list(range(25))
    assert all(b >= a for (_, a, _), (_, b, _) in zip(epochs, epochs[1:]))  # elapsed grows
    history = model.auc_history_
    assert history == [auc for _, _, auc in epochs]
    assert history[0] < 0.7 and np.mean(history[-5:]) > history[0] + 0.15
    assert heldout_auc(model, train, test) > 0.75


@pytest.mark.parametrize("loss", LOSSES)
def test_one_thread_is_reproducible_and_two_threads_comparable(planted, loss):
    train, test = planted
    fits = [BPR(factors=8, loss=loss, iterations=30, num_threads=t, random_state=11).fit(train)
            for t in (1, 1, 2)]
    for attr in ("user_factors_", "item_factors_", "item_bias_"):
        assert np.array_equal(getattr(fits[0], attr), getattr(fits[1], attr))
    auc1, auc2 = heldout_auc(fits[0], train, test), heldout_auc(fits[2], train, test)
    assert auc1 > 0.75 and abs(auc1 - auc2) < 0.03
    other_seed = BPR(factors=8, loss=loss, iterations=30, num_threads=1, random_state=12).fit(train)
    assert not np.array_equal(other_seed.item_factors_, fits[0].item_factors_)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("schedule", ["sgd", "adagrad"])
def test_dtypes_and_schedules_train(planted, dtype, schedule):
    train, test = planted
    model = BPR(factors=8, iterations=15, dtype=dtype, learning_schedule=schedule, num_threads=1,
                random_state=0).fit(train)
    for arr in (model.user_factors_, model.item_factors_, model.item_bias_):
        assert arr.dtype == dtype and np.isfinite(arr).all()
    assert heldout_auc(model, train, test) > 0.75


def test_predict_includes_item_bias_and_serving_works(planted):
    train, _ = planted
    model = BPR(factors=8, iterations=5, num_threads=1, random_state=0).fit(train)
    assert np.abs(model.item_bias_).max() > 0
    u, i = np.array([0, 3, 7]), np.array([5, 0, 119])
    want = (model.user_factors_[u] * model.item_factors_[i]).sum(1) + model.item_bias_[i]
    np.testing.assert_allclose(model.predict(u, i), want, rtol=1e-5)
    ids, scores = model.recommend(4, n=10)
    assert not np.isin(ids, train[4].indices).any()
    full = model.user_factors_[4] @ model.item_factors_.T + model.item_bias_
    np.testing.assert_allclose(scores, full[ids], rtol=1e-5)
    sim_ids, _ = model.similar_items(2, n=5)
    assert sim_ids.size == 5 and 2 not in sim_ids


def test_fit_leaves_input_untouched_and_excludes_thumbs_down():
    X = sp.csr_matrix(np.array([[1.0, -2.0, 0, 0, 3.0], [0, 1.0, 1.0, 0, 0], [0, 0, 0, -1.0, 0]]))
    before = X.copy()
    model = BPR(factors=3, iterations=5, num_threads=1, random_state=0).fit(X)
    assert (X != before).nnz == 0 and X.data.tolist() == before.data.tolist()
    ids, _ = model.recommend(0, n=5)
    assert set(ids.tolist()) == {2, 3}  # the liked and the disliked items are both excluded
    ids, _ = model.recommend(2, n=5)
    assert 3 not in ids


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_users=st.integers(1, 6), n_items=st.integers(1, 6), seed=st.integers(0, 2 ** 16),
       loss=st.sampled_from(list(LOSSES)), threads=st.integers(1, 2),
       dtype=st.sampled_from(DTYPES))
def test_any_small_matrix_trains_to_finite_factors(n_users, n_items, seed, loss, threads, dtype):
    rng = np.random.default_rng(seed)
    dense = rng.choice([0.0, 0.0, 1.0, 2.0, -1.0], size=(n_users, n_items))  # empty rows and columns too
    model = BPR(factors=3, iterations=3, loss=loss, num_threads=threads, dtype=dtype, random_state=seed)
    if not (dense > 0).any():  # nothing to learn from is an error, never an untrained model
        with pytest.raises(ValueError, match="no positive interactions|no interactions"):
            model.fit(sp.csr_matrix(dense))
        return
    model.fit(sp.csr_matrix(dense))
    assert model.user_factors_.shape == (n_users, 3) and model.item_factors_.shape == (n_items, 3)
    for arr in (model.user_factors_, model.item_factors_, model.item_bias_):
        assert np.isfinite(arr).all()
    ids, _ = model.recommend(np.arange(n_users), n=n_items)
    for u in range(n_users):
        assert not np.isin(ids[u], np.flatnonzero(dense[u])).any()


# ---------------------------------------------------------------- fold-in
def test_fold_in_matches_trained_users(planted):
    train, test = planted
    model = BPR(factors=8, iterations=25, num_threads=1, random_state=0).fit(train)
    folded = model.fold_in(train[:50])
    trained = model.user_factors_[:50]
    cos = (folded * trained).sum(1) / (np.linalg.norm(folded, axis=1) * np.linalg.norm(trained, axis=1))
    assert np.median(cos) > 0.7
    # recommend(users=None, X=rows) serves new users through the same fold-in
    ids, scores = model.recommend(users=None, X=train[:3], n=5)
    assert ids.shape == (3, 5)
    for r in range(3):
        assert not np.isin(ids[r], train[r].indices).any()
    same_ids, same_scores = model.recommend(users=[0, 1, 2], X=train[:3], n=5, recalculate=True)
    assert np.array_equal(same_ids, ids) and np.allclose(same_scores, scores)  # fixed seed: same fold-in


def test_partial_fit_users_updates_and_grows(planted):
    train, _ = planted
    model = BPR(factors=8, iterations=10, num_threads=1, random_state=0).fit(train)
    old_state = model._state
    rows = sp.csr_matrix(train[[5, 6]].toarray()[::-1])  # swap the two users' histories
    model.partial_fit_users([5, 302], rows, epochs=30)
    state = model._state
    assert state is not old_state and old_state.user_factors.shape == (300, 8)  # old state untouched
    assert model.n_users_ == 303
    assert np.array_equal(model.item_factors_, old_state.item_factors)
    assert np.array_equal(model.item_bias_, old_state.item_bias)
    assert np.array_equal(model.user_factors_[:5], old_state.user_factors[:5])
    assert not np.array_equal(model.user_factors_[5], old_state.user_factors[5])
    assert np.array_equal(model.user_factors_[300:302], np.zeros((2, 8)))  # the gap has no data
    assert np.array_equal(model.user_items_[5].indices, train[6].indices)
    assert np.array_equal(model.user_items_[302].indices, train[5].indices)
    assert model.user_items_[300].nnz == 0 and model.user_items_[7].nnz == train[7].nnz
    # the new user now ranks its own (training) items near the top
    ranked, _ = model.recommend(302, n=120, exclude_seen=False)
    positions = np.flatnonzero(np.isin(ranked, train[5].indices))
    assert positions.mean() < 40


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("param, value, error", [
    ("factors", 0, ValueError), ("factors", 2.5, TypeError),
    ("learning_rate", 0.0, ValueError), ("learning_rate", float("nan"), ValueError),
    ("learning_rate", "fast", TypeError),
    ("regularization", -1.0, ValueError), ("regularization", "high", TypeError),
    ("iterations", -1, ValueError),
    ("loss", "logistic", ValueError), ("max_sampled", 0, ValueError),
    ("learning_schedule", "adam", ValueError), ("num_threads", -2, ValueError),
    ("verify_negative_samples", "yes", TypeError), ("dtype", np.int32, ValueError),
    ("show_progress", 1, TypeError),
])
def test_bad_hyperparameters_raise_clear_errors(param, value, error):
    with pytest.raises(error, match=param):
        BPR(**{param: value}).fit(sp.csr_matrix(np.eye(3)))


def test_bad_input_raises_clear_errors(planted):
    train, _ = planted
    with pytest.raises(TypeError, match="X"):
        BPR().fit("not a matrix")
    with pytest.raises(ValueError, match="NaN"):
        BPR().fit(sp.csr_matrix(np.array([[np.nan, 1.0]])))
    with pytest.raises(fastrec.NotFittedError):
        BPR().recommend(0)
    model = BPR(factors=4, iterations=1, num_threads=1, random_state=0).fit(train)
    with pytest.raises(ValueError, match="columns"):
        model.fold_in(sp.csr_matrix((2, 5)))
    with pytest.raises(ValueError, match="rows"):
        model.partial_fit_users([1, 2], train[:3])
    with pytest.raises(ValueError, match="duplicates"):
        model.partial_fit_users([1, 1], train[:2])
    with pytest.raises(IndexError, match="user_ids"):
        model.partial_fit_users([-1], train[:1])
    with pytest.raises(ValueError, match="epochs"):
        model.partial_fit_users([1], train[:1], epochs=-1)


def test_show_progress_reports_each_epoch(capsys):
    BPR(factors=2, iterations=3, num_threads=1, random_state=0, show_progress=True).fit(sp.eye(4, format="csr"))
    err = capsys.readouterr().err
    assert "BPR" in err and "3/3" in err and "auc=" in err


def test_auto_settings_depend_on_the_loss():
    assert BPR()._check_params()["learning_schedule"] == "sgd"
    assert BPR()._check_params()["regularization"] == 0.01
    warp = BPR(loss="warp")._check_params()
    assert (warp["learning_schedule"], warp["regularization"]) == ("adagrad", 0.4)
    explicit = BPR(loss="warp", learning_schedule="sgd", regularization=0.2)._check_params()
    assert (explicit["learning_schedule"], explicit["regularization"]) == ("sgd", 0.2)
    assert BPR(loss="warp", learning_schedule="sgd")._check_params()["regularization"] == 0.01


def test_params_round_trip():
    model = BPR(loss="warp", factors=16)
    assert model.get_params()["loss"] == "warp"
    assert "loss='warp'" in repr(model) and "factors=16" in repr(model)
    model.set_params(max_sampled=20)
    assert model.max_sampled == 20
    with pytest.raises(ValueError, match="invalid parameter"):
        model.set_params(alpha=1.0)


def test_save_and_load_round_trip(planted, tmp_path):
    train, _ = planted
    model = BPR(factors=4, iterations=3, loss="warp", num_threads=1, random_state=0).fit(train)
    path = tmp_path / "bpr.npz"
    model.save(path)
    loaded = BPR.load(path)
    assert loaded.get_params() == model.get_params()
    for attr in ("user_factors_", "item_factors_", "item_bias_"):
        assert np.array_equal(getattr(loaded, attr), getattr(model, attr))
    assert np.array_equal(loaded.recommend(3)[0], model.recommend(3)[0])
