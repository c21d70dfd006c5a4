"""Serving API beyond plain top-K: similar_*, predict, rank, fold-in recommendations, thread safety."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.sparse as sp

from fastrec import ALS, BPR
from fastrec.models import FittedState
from reference import assert_topk_valid, cosine_scores, eligible_mask, seen_sets, topk_reference

DTYPES = (np.float32, np.float64)


def fitted(dtype=np.float64, seed=0, n_users=60, n_items=45):
    rng = np.random.default_rng(seed)
    R = sp.csr_matrix((rng.random((n_users, n_items)) < 0.15) * rng.integers(1, 4, (n_users, n_items)),
                      dtype=np.float64)
    model = ALS(factors=5, iterations=3, solver="cholesky", regularization=0.1, dtype=dtype,
                random_state=seed, num_threads=2).fit(R)
    return model, R


def fresh_rows(n_rows, n_items, seed):
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_rows, n_items)) < 0.2) * rng.integers(1, 3, (n_rows, n_items))
    dense[:, 0] = 1  # no empty rows
    return sp.csr_matrix(dense.astype(np.float64))


def union(*matrices):
    """Sparsity pattern union (what "seen" means), immune to values cancelling."""
    pattern = [abs(sp.csr_matrix(m)) for m in matrices]
    return sp.csr_matrix(sum(pattern[1:], pattern[0]))


# ------------------------------------------------------------- similar_*
@pytest.mark.parametrize("dtype, atol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("side", ["items", "users"])
def test_similar_matches_cosine_reference(dtype, atol, side):
    model, _ = fitted(dtype)
    factors = model.item_factors_ if side == "items" else model.user_factors_
    cosine = cosine_scores(factors)
    total = factors.shape[0]
    queries = np.arange(total)
    similar = model.similar_items if side == "items" else model.similar_users
    for n in (1, 5, total, total + 3):
        ids, scores = similar(queries, n=n)
        eligible = ~np.eye(total, dtype=bool)  # the query itself is excluded
        assert_topk_valid(ids, scores, cosine, eligible, min(n, total), atol)
        if n >= total:  # only total - 1 candidates: the last column is padding
            assert np.all(ids[:, total - 1] == -1)
        else:
            assert np.all(ids >= 0)
        for q in (0, 7, total - 1):
            one_ids, one_scores = similar(q, n=n)
            valid = ids[q] >= 0
            np.testing.assert_array_equal(one_ids, ids[q][valid])
            np.testing.assert_allclose(one_scores, scores[q][valid], rtol=0, atol=atol)
            assert q not in one_ids


def test_similar_items_with_zero_vector_and_ties():
    Y = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
    model = ALS(factors=2)
    seen = sp.csr_matrix(np.ones((2, 5)))  # every item was seen
    model._state = FittedState(np.ones((2, 2)), Y, seen)
    ids, scores = model.similar_items(0, n=4)
    np.testing.assert_array_equal(ids, [1, 4, 2, 3])  # cosine 1, 1 (lower id first), then 0, 0
    np.testing.assert_allclose(scores, [1, 1, 0, 0], atol=1e-12)
    # a zero vector has no direction: similar to nothing, not tied with everything
    for query in (2, [2]):
        ids, scores = model.similar_items(query, n=4)
        assert np.all(np.asarray(ids) == -1) and np.all(np.isneginf(scores))


def test_similar_items_of_an_item_without_interactions_is_empty():
    X = sp.csr_matrix(np.array([[1, 1, 0, 1], [1, 0, 0, 1], [0, 1, 0, 1]], dtype=np.float32))
    for model in (ALS(factors=2, iterations=3, random_state=0), BPR(factors=2, iterations=3, random_state=0)):
        model.fit(X)
        ids, scores = model.similar_items(2, n=3)  # item 2 was never interacted with
        assert ids.size == 0 and scores.size == 0
        ids, scores = model.similar_items([0, 2], n=3)
        assert (ids[0] >= 0).all() and (ids[1] == -1).all() and np.isneginf(scores[1]).all()
    with pytest.raises(IndexError, match="items"):
        model.similar_items(5)
    with pytest.raises(IndexError, match="users"):
        model.similar_users([0, -1])


# ---------------------------------------------------------- predict / rank
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("use_bias", [False, True])
def test_predict_and_rank_match_numpy(dtype, use_bias):
    rng = np.random.default_rng(4)
    U, Y = rng.standard_normal((20, 4)), rng.standard_normal((30, 4))
    bias = rng.standard_normal(30) if use_bias else None
    model = ALS(factors=4, num_threads=2)
    model._state = FittedState(U.astype(dtype), Y.astype(dtype), sp.csr_matrix((20, 30)),
                               None if bias is None else bias.astype(dtype))
    full = U.astype(dtype).astype(np.float64) @ Y.astype(dtype).astype(np.float64).T
    if use_bias:
        full += bias.astype(dtype)
    atol = 1e-5 if dtype == np.float32 else 1e-12
    users, items = rng.integers(0, 20, 500), rng.integers(0, 30, 500)
    got = model.predict(users, items)
    assert got.dtype == dtype and got.shape == (500,)
    np.testing.assert_allclose(got, full[users, items], rtol=0, atol=atol)
    np.testing.assert_allclose(model.predict(3, np.arange(30)), full[3], rtol=0, atol=atol)  # broadcasting
    assert np.ndim(model.predict(3, 4)) == 0
    assert float(model.predict(3, 4)) == pytest.approx(full[3, 4], abs=atol)
    many_users, many_items = rng.integers(0, 20, 20000), rng.integers(0, 30, 20000)  # the threaded path
    np.testing.assert_allclose(model.predict(many_users, many_items), full[many_users, many_items],
                               rtol=0, atol=atol)
    items = np.array([29, 0, 5, 5, 17, 3])
    ids, scores = model.rank(2, items)
    order = np.lexsort((items, -model.predict(2, items)))
    np.testing.assert_array_equal(ids, items[order])
    np.testing.assert_allclose(scores, full[2, items[order]], rtol=0, atol=atol)
    with pytest.raises(IndexError, match="items"):
        model.predict(0, 30)
    with pytest.raises(IndexError, match="users"):
        model.predict(-1, 0)
    with pytest.raises(ValueError, match="same length"):
        model.predict([0, 1], [0, 1, 2])
    with pytest.raises(ValueError, match="single user"):
        model.rank([0, 1], [0])


def test_rank_breaks_ties_by_lower_id():
    model = ALS(factors=1)
    model._state = FittedState(np.ones((1, 1)), np.array([[1.0], [2.0], [1.0], [2.0]]), sp.csr_matrix((1, 4)))
    ids, scores = model.rank(0, [2, 3, 0, 1])
    np.testing.assert_array_equal(ids, [1, 3, 0, 2])
    np.testing.assert_array_equal(scores, [2, 2, 1, 1])


# ---------------------------------------------------- fold-in recommendations
@pytest.mark.parametrize("dtype, atol", [(np.float32, 1e-4), (np.float64, 1e-10)])
def test_recommend_new_users_from_rows_equals_fold_in(dtype, atol):
    model, _ = fitted(dtype)
    rows = fresh_rows(8, 45, seed=5)
    Q = model.fold_in(rows).astype(np.float64)
    full = Q @ model.item_factors_.astype(np.float64).T
    for n in (1, 10, 45):
        ids, scores = model.recommend(None, X=rows, n=n)
        assert_topk_valid(ids, scores, full, eligible_mask(8, 45, seen_sets(rows, 8), None, None), n, atol)
        ids_all, scores_all = model.recommend(None, X=rows, n=n, exclude_seen=False)
        assert_topk_valid(ids_all, scores_all, full, np.ones((8, 45), bool), n, atol)


@pytest.mark.parametrize("recalculate", [False, True])
def test_recommend_with_rows_excludes_fit_time_and_new_items(recalculate):
    model, R = fitted(np.float64)
    users = np.array([3, 10, 0, 59])
    rows = fresh_rows(4, 45, seed=6)
    Q = model.fold_in(rows) if recalculate else model.user_factors_[users]
    full = Q @ model.item_factors_.T
    seen = seen_sets(union(R[users], rows), 4)
    ids, scores = model.recommend(users, X=rows, n=45, recalculate=recalculate)
    assert_topk_valid(ids, scores, full, eligible_mask(4, 45, seen, None, None), 45, 1e-10)
    for k, user in enumerate(users):
        one_ids, _ = model.recommend(int(user), X=rows[k], n=45, recalculate=recalculate)
        assert not set(one_ids.tolist()) & seen[k]
        np.testing.assert_array_equal(one_ids, ids[k][ids[k] >= 0])


def test_recommend_with_rows_excludes_items_whose_values_cancel():
    """A fit-time +1 and a fresh -1 on the same item: the item was seen twice and must stay excluded."""
    model = ALS(factors=1)
    seen = sp.csr_matrix(([1.0], ([0], [0])), shape=(1, 4))
    model._state = FittedState(np.ones((1, 1)), np.array([[4.0], [3.0], [2.0], [1.0]]), seen)
    fresh = sp.csr_matrix(([-1.0], ([0], [0])), shape=(1, 4))
    ids, _ = model.recommend(0, X=fresh, n=4)
    assert 0 not in ids.tolist(), f"item 0 is in both the fit-time and the fresh rows, got {ids}"


def test_recommend_row_argument_errors():
    model, _ = fitted(np.float64)
    rows = fresh_rows(2, 45, seed=7)
    with pytest.raises(ValueError, match="one row of X per user"):
        model.recommend([0, 1, 2], X=rows)
    with pytest.raises(ValueError, match="recalculate"):
        model.recommend([0, 1], recalculate=True)
    with pytest.raises(ValueError, match="columns"):
        model.recommend(None, X=sp.csr_matrix((2, 44)))
    with pytest.raises(ValueError, match="NaN"):
        model.recommend(None, X=sp.csr_matrix(np.full((1, 45), np.nan)))
    ids, scores = model.recommend(None, X=sp.csr_matrix((0, 45)), n=3)
    assert ids.shape == scores.shape == (0, 3)


# ------------------------------------------------------------- thread safety
def _integer_state(seed, n_users=50, n_items=300, f=8, dtype=np.float32):
    rng = np.random.default_rng(seed)
    U = rng.integers(-3, 4, (n_users, f)).astype(dtype)
    Y = rng.integers(-3, 4, (n_items, f)).astype(dtype)
    bias = rng.integers(-2, 3, n_items).astype(dtype)
    seen = sp.csr_matrix((rng.random((n_users, n_items)) < 0.1).astype(dtype))
    return FittedState(U, Y, seen, bias)


def _call_and_reference(state_refs, model, rng):
    """One random serving call and the exact answers it may legitimately return."""
    exclude = rng.choice(300, 10) if rng.random() < 0.5 else None
    candidates = rng.choice(300, 80) if rng.random() < 0.5 else None
    n = int(rng.choice([1, 10, 50]))
    if rng.random() < 0.5:
        users = int(rng.integers(50))
    else:
        users = rng.integers(0, 50, int(rng.integers(1, 70)))
    got = model.recommend(users, n=n, exclude=exclude, candidates=candidates)
    wanted = []
    for state in state_refs:
        u = np.atleast_1d(users)
        ids, scores = topk_reference(state.user_factors[u], state.item_factors, state.item_bias, n,
                                     seen=state.user_items[u], exclude=exclude, candidates=candidates)
        if np.ndim(users) == 0:
            valid = ids[0] >= 0
            ids, scores = ids[0][valid], scores[0][valid]
        wanted.append((ids, scores))
    return got, wanted


def _matches_one(got, wanted):
    return any(got[0].shape == w[0].shape and np.array_equal(got[0], w[0]) and np.array_equal(got[1], w[1])
               for w in wanted)


def test_concurrent_recommend_matches_reference():
    state = _integer_state(seed=8)
    model = ALS(factors=8, num_threads=2)
    model._state = state

    def worker(seed):
        rng = np.random.default_rng(seed)
        bad = 0
        for _ in range(40):
            got, wanted = _call_and_reference([state], model, rng)
            bad += not _matches_one(got, wanted)
        return bad

    with ThreadPoolExecutor(max_workers=8) as pool:
        failures = list(pool.map(worker, range(16)))
    assert sum(failures) == 0, failures


def test_recommend_sees_whole_states_while_they_are_swapped():
    """Readers racing a writer that swaps fitted states get one state's answer, never a mix."""
    states = [_integer_state(seed=9), _integer_state(seed=10)]
    model = ALS(factors=8, num_threads=2)
    model._state = states[0]
    stop = threading.Event()

    def writer():
        k = 0
        while not stop.is_set():
            k += 1
            model._state = states[k % 2]

    def reader(seed):
        rng = np.random.default_rng(seed)
        bad = 0
        for _ in range(20):
            got, wanted = _call_and_reference(states, model, rng)
            bad += not _matches_one(got, wanted)
        return bad

    swapper = threading.Thread(target=writer)
    swapper.start()
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            failures = list(pool.map(reader, range(12)))
    finally:
        stop.set()
        swapper.join()
    assert sum(failures) == 0, failures


def test_large_batches_are_chunked_with_identical_results(monkeypatch):
    import fastrec.models.base as base
    import fastrec.models.factors as serving
    rng = np.random.default_rng(11)
    U = rng.standard_normal((50, 6)).astype(np.float32)
    Y = rng.standard_normal((40, 6)).astype(np.float32)
    seen = sp.random(50, 40, density=0.2, random_state=12, format="csr", dtype=np.float32)
    model = ALS(factors=6, num_threads=2)
    model._state = base.FittedState(U, Y, seen)
    users = rng.permutation(50)
    whole = model.recommend(users, n=7, exclude=[3, 4])
    monkeypatch.setattr(serving, "_RECOMMEND_CHUNK", 8)
    chunked = model.recommend(users, n=7, exclude=[3, 4])
    np.testing.assert_array_equal(whole[0], chunked[0])
    np.testing.assert_array_equal(whole[1], chunked[1])


def test_chunked_batches_with_fresh_rows_exclude_them(monkeypatch):
    import fastrec.models.base as base
    import fastrec.models.factors as serving
    rng = np.random.default_rng(13)
    U = rng.standard_normal((30, 5)).astype(np.float32)
    Y = rng.standard_normal((25, 5)).astype(np.float32)
    model = ALS(factors=5, num_threads=2)
    model._state = base.FittedState(U, Y, sp.csr_matrix((30, 25), dtype=np.float32))
    monkeypatch.setattr(serving, "_RECOMMEND_CHUNK", 4)
    users = np.arange(30)
    fresh = sp.random(30, 25, density=0.3, random_state=14, format="csr", dtype=np.float32)
    ids, _ = model.recommend(users, n=25, X=fresh)
    for u in users:
        assert not set(ids[u][ids[u] >= 0]) & set(fresh[u].indices)
    empty_ids, empty_scores = model.recommend(np.array([], dtype=np.int32), n=5)
    assert empty_ids.shape == (0, 5) and empty_scores.shape == (0, 5)
