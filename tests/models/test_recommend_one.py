"""One stored user with plain arguments takes a short path (``_recommend_one``): same answers as the general path.

The short path skips the batch machinery and calls the top-K kernel on the
model's arrays in place.  Everything it does not handle (raw ids, filters,
pending partial fits, models that compute their queries, bad arguments)
must still reach the general path, with the same answers and errors.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import fastrec
from fastrec.kernels.topk import _vector_build
from fastrec.models.factors import FactorModel


def _data(seed: int = 0, n_users: int = 60, n_items: int = 45) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    X = sp.random(n_users, n_items, density=0.15, random_state=rng, format="lil", dtype=np.float32)
    X[3, :] = 0  # a user with nothing seen
    X = X.tocsr()
    X.eliminate_zeros()
    X.data[:] = 1
    return X


MODELS = [
    lambda: fastrec.ALS(factors=8, iterations=3, random_state=0),
    lambda: fastrec.ALS(factors=8, iterations=3, random_state=0, dtype=np.float64),
    lambda: fastrec.BPR(factors=8, iterations=3, random_state=0),
    lambda: fastrec.EASE(),
]


@pytest.fixture(params=range(len(MODELS)), ids=["als32", "als64", "bpr", "ease"])
def model(request):
    return MODELS[request.param]().fit(_data())


def test_one_user_equals_its_row_of_a_batch(model):
    users = np.arange(60)
    for exclude_seen in (True, False):
        for n in (0, 1, 10, 45, 100):
            batch_ids, batch_scores = model.recommend(users, n=n, exclude_seen=exclude_seen)
            for u in (0, 3, 17, 59):
                for user in (u, np.int64(u), np.int32(u)):
                    ids, scores = model.recommend(user, n=n, exclude_seen=exclude_seen)
                    valid = batch_ids[u] >= 0
                    np.testing.assert_array_equal(ids, batch_ids[u][valid])
                    np.testing.assert_allclose(scores, batch_scores[u][valid], rtol=1e-5, atol=1e-6)
                    assert ids.dtype == np.int32 and ids.ndim == 1 and scores.ndim == 1


def test_short_path_is_taken_for_plain_float32_factor_models(monkeypatch):
    model = fastrec.ALS(factors=8, iterations=2, random_state=0).fit(_data())
    calls = []
    original = FactorModel._recommend_one

    def spy(self, state, user, n, exclude_seen):
        out = original(self, state, user, n, exclude_seen)
        calls.append(out is not None)
        return out
    monkeypatch.setattr(FactorModel, "_recommend_one", spy)
    model.recommend(5, n=3)
    model.recommend(np.int64(5), n=3, exclude_seen=False)
    taken = _vector_build()[0]  # the baseline build keeps the float scan: the general path
    assert calls == [taken, taken]
    model.recommend(5, n=3, exclude=[1, 2])  # a filter: the general path, no short path attempted
    model.recommend([5], n=3)
    with pytest.raises(TypeError, match="exclude_seen"):  # not a bool: the general path rejects it
        model.recommend(5, n=3, exclude_seen=1)
    assert calls == [taken, taken]


def test_short_path_leaves_errors_to_the_general_path():
    model = fastrec.ALS(factors=8, iterations=2, random_state=0).fit(_data())
    with pytest.raises(IndexError, match="users"):
        model.recommend(60, n=3)
    with pytest.raises(IndexError, match="users"):
        model.recommend(-1, n=3)
    with pytest.raises(ValueError, match="n"):
        model.recommend(1, n=-1)
    with pytest.raises(ValueError, match="n must be <="):
        model.recommend(1, n=2 ** 40)
    with pytest.raises(TypeError, match="users"):  # beyond int64: never wrapped into a valid id
        model.recommend(2 ** 70, n=3)
    with pytest.raises(IndexError, match="users"):
        model.recommend(np.uint64(2 ** 63 + 5), n=3)
    with pytest.raises(TypeError):
        model.recommend(1, n=3, exclude_seen="yes")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pending_partial_fit_reads_through_the_overlay(dtype):
    X = _data()
    model = fastrec.ALS(factors=8, iterations=2, random_state=0, dtype=dtype).fit(X)
    row = sp.csr_matrix(np.eye(1, 45, 7, dtype=dtype))
    model.partial_fit_users([4], row)
    model.partial_fit_users([9], X[9])  # unchanged row, new vector
    model.partial_fit_users([61], row)  # grows the model by two users (60 without a row)
    assert model._state.pending is not None
    everyone = np.arange(62)
    batch_ids, batch_scores = model.recommend(everyone, n=45)
    for user in (4, 9, 11, 60, 61):
        for exclude_seen in (True, False):
            ids, scores = model.recommend(user, n=45, exclude_seen=exclude_seen)
            want_ids, want_scores = model.recommend([user], n=45, exclude_seen=exclude_seen)
            valid = want_ids[0] >= 0
            np.testing.assert_array_equal(ids, want_ids[0][valid])
            np.testing.assert_allclose(scores, want_scores[0][valid], rtol=1e-5, atol=1e-6)
            if exclude_seen:
                np.testing.assert_array_equal(ids, batch_ids[user][batch_ids[user] >= 0])
    ids, _ = model.recommend(4, n=45)
    assert 7 not in ids and ids.size == 44  # the new seen item is filtered
    np.testing.assert_array_equal(model.user_factors_[4], model._state.factor_rows("users", np.array([4]))[0])


def test_updated_user_takes_the_short_path_through_the_overlay():
    model = fastrec.ALS(factors=8, iterations=2, random_state=0).fit(_data())
    model.partial_fit_users([4], sp.csr_matrix(np.eye(1, 45, 7, dtype=np.float32)))
    state = model._state
    assert state.pending is not None and state.pending.entry(4) >= 0
    answer = model._recommend_one(state, 4, 10, True)
    if _vector_build()[0]:
        assert answer is not None and 7 not in answer[0]
        assert model._recommend_one(state, 60, 10, True) is None  # out of range: the general path raises
    else:
        assert answer is None


def test_partial_fit_items_patches_the_index_and_answers_stay_exact():
    X = _data(3)
    model = fastrec.ALS(factors=8, iterations=3, random_state=0).fit(X)
    model.recommend(np.arange(60), n=5)  # the index (and its codes) exist, so the partial fit patches them
    index_before = model._state.ranking_index()
    column = sp.csr_matrix(np.ones((60, 1), dtype=np.float32))  # everyone now has item 9: a popular item
    model.partial_fit_items([9], column)
    state = model._state
    assert "ranking_index" in state.cache and state.cache["ranking_index"] is not index_before
    ids, scores = model.recommend(np.arange(60), n=10, exclude_seen=False)
    Q = model.user_factors_.astype(np.float64)
    S = Q @ model.item_factors_.astype(np.float64).T
    for u in range(60):
        order = np.lexsort((np.arange(45), -S[u]))[:10]
        np.testing.assert_allclose(np.sort(S[u][ids[u]]), np.sort(S[u][order]), rtol=1e-5, atol=1e-6)
    for u in (0, 7, 59):
        one_ids, _ = model.recommend(u, n=10)
        assert 9 not in one_ids  # the new column is seen by everyone


def test_bound_scan_follows_item_updates_and_survives_user_updates():
    """The one-user path's bound scan is kept by a user update (it binds the base arrays, which the
    overlay leaves) and never used with an index an item update replaced: a user the item update did
    not touch is ranked with the item's new vector."""
    X = _data(5)
    model = fastrec.ALS(factors=8, iterations=3, random_state=0).fit(X)
    model.recommend(0, n=5)
    scan = model._state.one_user_scan()
    model.partial_fit_users([3], X[3])
    if _vector_build()[0]:
        assert scan is not None and model._state.one_user_scan() is scan
    item = 11
    users_of_item = set(X[:, item].nonzero()[0].tolist())
    column = sp.csr_matrix(([1.0], ([0], [0])), shape=(60, 1), dtype=np.float32)  # only user 0 has it now
    model.partial_fit_items([item], column)
    untouched = [u for u in range(1, 60) if u not in users_of_item and u != 3][:10]
    Q = model.user_factors_.astype(np.float64)
    S = Q @ model.item_factors_.astype(np.float64).T
    for u in untouched:
        ids, scores = model.recommend(u, n=45, exclude_seen=False)
        want_ids, want_scores = model.recommend([u], n=45, exclude_seen=False)
        np.testing.assert_array_equal(ids, want_ids[0])
        np.testing.assert_allclose(scores[ids == item], S[u, item], rtol=1e-5, atol=1e-6)


def test_many_item_updates_rebuild_the_index_order():
    model = fastrec.ALS(factors=8, iterations=2, random_state=0).fit(_data(4, n_users=60, n_items=200))
    model.recommend(0, n=5)
    X = model.user_items_.tocsc()
    for item in range(70):  # past max(64, 200 // 16) patched rows
        model.partial_fit_items([item], X[:, [item]])
        index = model._state.cache.get("ranking_index")
        if index is None:
            break
        assert index.patched_rows == item + 1
        model.recommend(0, n=5)
    assert item == 64 and "ranking_index" not in model._state.cache
    assert model._state.ranking_index().patched_rows == 0  # rebuilt in norm order


def test_short_path_reads_strided_factors():
    """Factors that are not C-contiguous (a model built from a Fortran-ordered array) still serve."""
    model = fastrec.ALS(factors=8, iterations=2, random_state=0).fit(_data())
    import dataclasses
    state = model._state
    model._state = dataclasses.replace(state, user_factors=np.asfortranarray(state.user_factors), cache={})
    ids, scores = model.recommend(7, n=5)
    want_ids, want_scores = model.recommend([7], n=5)
    np.testing.assert_array_equal(ids, want_ids[0])
    np.testing.assert_allclose(scores, want_scores[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["BPR", "EASE", "ItemKNN", "ALS"])
def test_load_in_a_fresh_process_finds_every_model_class(tmp_path, name):
    """fastrec imports its models on first use: loading a file must not need the class touched first."""
    import subprocess
    import sys
    model = getattr(fastrec, name)().fit(_data())
    path = tmp_path / f"{name}.npz"
    model.save(path)
    code = (f"import fastrec, numpy as np; m = fastrec.load({str(path)!r}); "
            "print(type(m).__name__, m.recommend(5, n=3)[0].tolist())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == name
    assert out.stdout.strip().endswith(str(model.recommend(5, n=3)[0].tolist()))


def test_a_model_with_a_bound_scan_pickles_and_serves_the_same():
    """The bound scan (compiled views) stays out of a pickle; the copy binds its own on first use."""
    import pickle
    model = fastrec.ALS(factors=8, iterations=2, random_state=0).fit(_data())
    ids, scores = model.recommend(7, n=5)
    copy = pickle.loads(pickle.dumps(model))
    assert "one_user_scan" not in copy._state.cache
    copy_ids, copy_scores = copy.recommend(7, n=5)
    np.testing.assert_array_equal(copy_ids, ids)
    np.testing.assert_array_equal(copy_scores, scores)
    if _vector_build()[0]:
        assert copy._state.one_user_scan() is not model._state.one_user_scan()
