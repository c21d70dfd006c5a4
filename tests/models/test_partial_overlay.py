"""User partial fits through the copy-on-write overlay (models/state.py: RowLog, UserOverlay).

A user update shares the model-wide arrays with the previous state and adds
the changed rows to an append-only log.  Every read through the overlay is
checked against a dense NumPy model that applies the same updates by
assignment; old states must keep answering as before.
"""
from __future__ import annotations

import copy
import io
import pickle
import threading

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import fastrec
from fastrec.models import state as state_module
from fastrec.models.state import FittedState

N_USERS, N_ITEMS, F = 40, 30, 4


def _random_csr(rng: np.random.Generator, n_rows: int, n_cols: int, density: float = 0.2,
                dtype=np.float32) -> sp.csr_matrix:
    values = rng.integers(1, 4, size=(n_rows, n_cols)) * (rng.random((n_rows, n_cols)) < density)
    return sp.csr_matrix(values.astype(dtype))


class _Reference:
    """The model the state should describe: dense factors and seen matrix, rows replaced by assignment."""

    def __init__(self, state: FittedState) -> None:
        self.factors = np.array(state.user_factors)
        self.seen = state.user_items.toarray()

    def update(self, ids: np.ndarray, vectors: np.ndarray, rows: sp.csr_matrix) -> None:
        grow = int(ids.max()) + 1 - self.factors.shape[0]
        if grow > 0:
            self.factors = np.vstack([self.factors, np.zeros((grow, self.factors.shape[1]), self.factors.dtype)])
            self.seen = np.vstack([self.seen, np.zeros((grow, self.seen.shape[1]), self.seen.dtype)])
        self.factors[ids] = vectors
        self.seen[ids] = rows.toarray()


def _assert_state_matches(state: FittedState, ref: _Reference, rng: np.random.Generator) -> None:
    n = ref.factors.shape[0]
    assert state.n_users == n
    queries = np.concatenate([rng.integers(0, n, size=7), [0, n - 1]]).astype(np.int32)
    np.testing.assert_array_equal(state.factor_rows("users", queries), ref.factors[queries])
    np.testing.assert_array_equal(state.seen_rows(queries).toarray(), ref.seen[queries])
    for one in queries[:3]:
        np.testing.assert_array_equal(state.seen_rows(np.array([one])).toarray(), ref.seen[[one]])
    indptr, indices = state.seen_pattern(queries)
    for k, user in enumerate(queries):
        np.testing.assert_array_equal(indices[indptr[k]:indptr[k + 1]], np.flatnonzero(ref.seen[user]))
    np.testing.assert_array_equal(state.interaction_counts("users"), (ref.seen != 0).sum(axis=1))
    np.testing.assert_array_equal(state.interaction_counts("items"), (ref.seen != 0).sum(axis=0))
    np.testing.assert_array_equal(state.user_factors, ref.factors)
    np.testing.assert_array_equal(state.user_items.toarray(), ref.seen)
    assert state.user_items.has_canonical_format and state.user_items.indices.dtype == np.int32


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), n_updates=st.integers(1, 12), threshold=st.sampled_from([2, 5, 1000]))
def test_overlay_reads_match_a_dense_reference(seed, n_updates, threshold):
    rng = np.random.default_rng(seed)
    state = FittedState(rng.standard_normal((N_USERS, F)).astype(np.float32),
                        rng.standard_normal((N_ITEMS, F)).astype(np.float32), _random_csr(rng, N_USERS, N_ITEMS))
    ref = _Reference(state)
    history = [(state, _Reference(state))]
    original = state_module.merge_threshold
    state_module.merge_threshold = lambda n_rows: threshold
    try:
        for _ in range(n_updates):
            n = state.n_users
            # repeated users, users past the end (growth, with a gap) and empty rows all occur
            ids = rng.choice(n + 3, size=int(rng.integers(1, 4)), replace=False).astype(np.int32)
            vectors = rng.standard_normal((ids.size, F)).astype(np.float32)
            rows = _random_csr(rng, ids.size, N_ITEMS, density=float(rng.choice([0.0, 0.3])))
            state = state.with_rows("users", ids, vectors, rows, None)
            ref.update(ids, vectors, rows)
            snapshot = _Reference.__new__(_Reference)
            snapshot.factors, snapshot.seen = ref.factors.copy(), ref.seen.copy()
            history.append((state, snapshot))
    finally:
        state_module.merge_threshold = original
    for old_state, old_ref in history:  # every state still describes its own model
        _assert_state_matches(old_state, old_ref, rng)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), n_updates=st.integers(1, 10))
def test_mixed_user_and_item_updates_match_a_dense_reference(seed, n_updates):
    rng = np.random.default_rng(seed)
    state = FittedState(rng.standard_normal((N_USERS, F)).astype(np.float32),
                        rng.standard_normal((N_ITEMS, F)).astype(np.float32), _random_csr(rng, N_USERS, N_ITEMS))
    ref = _Reference(state)
    items = np.array(state.item_factors)
    history = []
    for _ in range(n_updates):
        if rng.random() < 0.5:
            ids = rng.choice(state.n_users, size=int(rng.integers(1, 4)), replace=False).astype(np.int32)
            vectors = rng.standard_normal((ids.size, F)).astype(np.float32)
            rows = _random_csr(rng, ids.size, N_ITEMS, density=0.3)
            state = state.with_rows("users", ids, vectors, rows, None)
            ref.update(ids, vectors, rows)
        else:  # stored items get new vectors and columns (items x users rows)
            ids = rng.choice(N_ITEMS, size=int(rng.integers(1, 3)), replace=False).astype(np.int32)
            vectors = rng.standard_normal((ids.size, F)).astype(np.float32)
            kind = rng.choice(["random", "same", "edited"])
            if kind == "random":
                columns = _random_csr(rng, ids.size, state.n_users, density=float(rng.choice([0.0, 0.3])))
            else:  # the columns the users' rows hold, as a service re-solving an item passes them
                dense = ref.seen[:, ids].T.copy()
                if kind == "edited":  # one entry added, removed or given another value
                    dense[rng.integers(ids.size), rng.integers(state.n_users)] = rng.integers(0, 4)
                columns = sp.csr_matrix(dense)
            length = 0 if state.pending is None else state.pending.length
            state = state.with_rows("items", ids, vectors, columns, None)
            changed = int(np.any(ref.seen[:, ids] != columns.toarray().T, axis=1).sum())
            # only the users whose entries at ids change get a new row in the overlay
            assert (0 if state.pending is None else state.pending.length) - length == changed
            items[ids] = vectors
            ref.seen[:, ids] = columns.toarray().T
        snapshot = _Reference.__new__(_Reference)
        snapshot.factors, snapshot.seen = ref.factors.copy(), ref.seen.copy()
        history.append((state, snapshot, items.copy()))
    for old_state, old_ref, old_items in history:
        np.testing.assert_array_equal(old_state.item_factors, old_items)
        _assert_state_matches(old_state, old_ref, rng)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), n_updates=st.integers(1, 10))
def test_caches_filled_between_updates_describe_each_state(seed, n_updates):
    """Each state's lazy caches are filled before the next update derives from it: the new state must
    carry only the caches its change leaves valid (the users' counts, merged arrays and normalised
    vectors go), on the one-user path (``with_one_user_row``) and the general one (``with_rows``)."""
    rng = np.random.default_rng(seed)
    state = FittedState(rng.standard_normal((N_USERS, F)).astype(np.float32),
                        rng.standard_normal((N_ITEMS, F)).astype(np.float32), _random_csr(rng, N_USERS, N_ITEMS))
    ref = _Reference(state)
    for _ in range(n_updates):
        _assert_state_matches(state, ref, rng)  # fills counts_*, merged_user_* (with updates pending)
        norms = np.linalg.norm(ref.factors, axis=1, keepdims=True)
        np.testing.assert_allclose(state.normalized("users"), ref.factors / np.where(norms > 0, norms, 1),
                                   rtol=1e-6)
        if rng.random() < 0.5:  # one stored user, as the latency path of partial_fit_users gives it
            user = int(rng.integers(state.n_users))
            vector = rng.standard_normal(F).astype(np.float32)
            row = _random_csr(rng, 1, N_ITEMS, density=float(rng.choice([0.0, 0.3])))
            state = state.with_one_user_row(user, vector.copy(), row.indices, row.data)
            ref.update(np.array([user]), vector[None], row)
        else:
            ids = rng.choice(state.n_users + 2, size=int(rng.integers(1, 4)), replace=False).astype(np.int32)
            vectors = rng.standard_normal((ids.size, F)).astype(np.float32)
            rows = _random_csr(rng, ids.size, N_ITEMS, density=0.3)
            state = state.with_rows("users", ids, vectors, rows, None)
            ref.update(ids, vectors, rows)
    _assert_state_matches(state, ref, rng)


def test_a_state_that_is_not_the_logs_tip_starts_its_own_log():
    rng = np.random.default_rng(1)
    base = FittedState(rng.standard_normal((5, 2)).astype(np.float32), rng.standard_normal((4, 2)).astype(np.float32),
                       _random_csr(rng, 5, 4, 0.5))
    one = base.with_rows("users", np.array([1], np.int32), np.ones((1, 2), np.float32),
                         sp.csr_matrix(np.array([[1, 0, 0, 0]], np.float32)), None)
    a = one.with_rows("users", np.array([2], np.int32), np.full((1, 2), 2, np.float32),
                      sp.csr_matrix(np.array([[0, 2, 0, 0]], np.float32)), None)
    b = one.with_rows("users", np.array([3], np.int32), np.full((1, 2), 3, np.float32),
                      sp.csr_matrix(np.array([[0, 0, 3, 0]], np.float32)), None)  # `one` is no longer the tip
    assert a.pending.log is one.pending.log and b.pending.log is not one.pending.log
    np.testing.assert_array_equal(b.user_factors[2], base.user_factors[2])  # not a's update
    np.testing.assert_array_equal(b.user_factors[[1, 3]], [[1, 1], [3, 3]])
    np.testing.assert_array_equal(a.user_factors[3], base.user_factors[3])
    np.testing.assert_array_equal(a.user_items.toarray()[2], [0, 2, 0, 0])


def test_user_update_shares_the_model_wide_arrays():
    rng = np.random.default_rng(2)
    state = FittedState(rng.standard_normal((6, 3)).astype(np.float32), rng.standard_normal((5, 3)).astype(np.float32),
                        _random_csr(rng, 6, 5, 0.5))
    new = state.with_rows("users", np.array([2], np.int32), np.ones((1, 3), np.float32),
                          sp.csr_matrix(np.array([[1, 0, 0, 0, 1]], np.float32)), None)
    assert new.pending is not None and state.pending is None
    assert new._user_items is state._user_items and new._user_factors is state._user_factors
    assert not {"merged_user_factors", "merged_user_items"} & set(new.cache)  # nothing merged until asked
    merged = new.merged()
    assert merged.pending is None and merged is not new
    np.testing.assert_array_equal(merged.user_items.toarray(), new.user_items.toarray())


def test_pickled_state_keeps_its_pending_updates():
    rng = np.random.default_rng(3)
    state = FittedState(rng.standard_normal((6, 3)).astype(np.float32), rng.standard_normal((5, 3)).astype(np.float32),
                        _random_csr(rng, 6, 5, 0.5))
    new = state.with_rows("users", np.array([7], np.int32), np.ones((1, 3), np.float32),
                          sp.csr_matrix(np.array([[0, 3, 0, 0, 1]], np.float32)), None)
    back = pickle.loads(pickle.dumps(new))
    assert back.n_users == 8
    np.testing.assert_array_equal(back.user_factors, new.user_factors)
    np.testing.assert_array_equal(back.user_items.toarray(), new.user_items.toarray())


# ------------------------------------------------------------------ models
def _data(seed: int = 0, n_users: int = 60, n_items: int = 45) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    return _random_csr(rng, n_users, n_items, 0.15)


MODELS = {
    "als": lambda: fastrec.ALS(factors=8, iterations=3, random_state=0, num_threads=1),
    "bpr": lambda: fastrec.BPR(factors=8, iterations=3, random_state=0, num_threads=1),
    "knn": lambda: fastrec.ItemKNN(k=10),
    "ease": lambda: fastrec.EASE(regularization=10.0, num_threads=1),
}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_reader_holding_an_old_state_sees_the_old_model(kind):
    X = _data()
    model = MODELS[kind]().fit(X)
    users = np.arange(X.shape[0])
    rng = np.random.default_rng(5)
    model.partial_fit_users([0], _random_csr(rng, 1, X.shape[1], 0.3))
    before = model.recommend(users, n=5)
    old = model._state  # a state with an update pending, whose log later updates append to
    old_seen = old.user_items.toarray()
    updated = [0]
    for _ in range(4):
        ids = rng.choice(X.shape[0], size=3, replace=False)
        model.partial_fit_users(ids, _random_csr(rng, 3, X.shape[1], 0.3))
        updated += list(ids)
    model.partial_fit_users([0], _random_csr(rng, 1, X.shape[1], 0.3))  # one user alone: the latency path
    assert model._state is not old
    after = model.recommend(users, n=5)
    assert not np.array_equal(after[0], before[0])
    model._state, new = old, model._state  # a reader that read the state before the updates
    np.testing.assert_array_equal(model.recommend(users, n=5)[0], before[0])
    np.testing.assert_array_equal(model.recommend(users, n=5)[1], before[1])
    for user in updated:  # one user at a time reads the log entry by entry
        np.testing.assert_array_equal(model.recommend(int(user), n=5)[0], before[0][user][before[0][user] >= 0])
        np.testing.assert_array_equal(old.seen_rows(np.array([user])).toarray()[0], old_seen[user])
    np.testing.assert_array_equal(old.user_items.toarray(), old_seen)
    np.testing.assert_array_equal(old.seen_rows(users).toarray(), old_seen)
    model._state = new
    np.testing.assert_array_equal(model.recommend(users, n=5)[0], after[0])


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_seen_filter_excludes_newly_added_items_at_once(kind):
    X = _data(1)
    model = MODELS[kind]().fit(X)
    user = 3
    ids, _ = model.recommend(user, n=5)
    row = X[[user]].toarray()
    row[0, ids[:2]] = 1.0  # the user now interacted with their top two
    model.partial_fit_users([user], sp.csr_matrix(row))
    assert model._state.pending is not None  # served through the overlay, not a merged copy
    got, _ = model.recommend(user, n=X.shape[1])
    assert not set(ids[:2]) & set(got)
    assert not set(np.flatnonzero(row[0])) & set(got)
    batch, _ = model.recommend(np.array([0, user, 5]), n=X.shape[1])
    assert not set(np.flatnonzero(row[0])) & set(batch[1])
    np.testing.assert_array_equal(np.sort(batch[1][batch[1] >= 0]), np.sort(got))


def _updated_model(kind: str, seed: int, updates: int):
    """A fitted model after ``updates`` partial fits of two users each (some of them new), still pending."""
    X = _data(seed)
    model = MODELS[kind]().fit(X)
    rng = np.random.default_rng(seed + 10)
    for _ in range(updates):
        ids = rng.choice(X.shape[0] + 2, size=2, replace=False)
        model.partial_fit_users(ids, _random_csr(rng, 2, X.shape[1], 0.3))
    assert model._state.pending is not None
    return X, model


@pytest.mark.parametrize("kind", ["als", "bpr"])
def test_serving_after_user_updates_equals_the_merged_model(kind):
    X, model = _updated_model(kind, 2, updates=5)
    merged = pickle.loads(pickle.dumps(model))
    merged._state = model._state.merged()
    users = np.arange(model.n_users_)
    pairs = users % X.shape[1]
    np.testing.assert_array_equal(model.recommend(users, n=7)[0], merged.recommend(users, n=7)[0])
    np.testing.assert_array_equal(model.predict(users, pairs), merged.predict(users, pairs))
    np.testing.assert_array_equal(model.similar_users(users[:5], n=4)[0], merged.similar_users(users[:5], n=4)[0])
    np.testing.assert_array_equal(model.similar_items(np.arange(5), n=4)[0], merged.similar_items(np.arange(5), n=4)[0])
    for user in (0, users[-1]):
        np.testing.assert_array_equal(model.recommend(user, n=7)[0], merged.recommend(user, n=7)[0])
        assert model.predict(user, 1) == merged.predict(user, 1)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_save_after_partial_fits_round_trips_to_the_merged_model(kind):
    _, model = _updated_model(kind, 3, updates=3)
    state = model._state
    merged = state.merged()
    buffer = io.BytesIO()
    model.save(buffer)
    buffer.seek(0)
    loaded = type(model).load(buffer)
    got = loaded._state
    assert got.pending is None and got.n_users == merged.n_users
    assert (got.user_items != merged.user_items).nnz == 0
    if merged.user_factors is not None:
        np.testing.assert_array_equal(got.user_factors, merged.user_factors)
    users = np.arange(merged.n_users)
    np.testing.assert_array_equal(loaded.recommend(users, n=5)[0], model.recommend(users, n=5)[0])


def test_fast_one_user_path_equals_the_general_path():
    X = _data(4)
    fast = MODELS["als"]().fit(X)
    general = pickle.loads(pickle.dumps(fast))
    row = _random_csr(np.random.default_rng(8), 1, X.shape[1], 0.4)
    fast.partial_fit_users([7], row)  # canonical float32 CSR: the kernel's latency path
    general.partial_fit_users([7], row.toarray().astype(np.float64))  # dense: validated, then solved
    np.testing.assert_allclose(fast.user_factors_[7], general.user_factors_[7], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(fast.user_items_.toarray(), general.user_items_.toarray())
    row.data[:] = 9  # the model keeps its own copy of the row
    assert (fast.user_items_[7] != general.user_items_[7]).nnz == 0


def test_one_user_update_keeps_the_item_caches_and_checks_raw_ids():
    X = _data(12)
    model = MODELS["als"]().fit(X)
    model.recommend(0, n=5)  # the ranking index and the one-user scan
    model.partial_fit_users([5], X[[5]])  # and the fold-in plan
    state = model._state
    kept = {key: state.cache[key] for key in ("ranking_index", "one_user_scan", "fold_in_plan", "gram_items")}
    state.interaction_counts("users")
    row = _random_csr(np.random.default_rng(13), 1, X.shape[1], 0.4)
    model.partial_fit_users([6], row)
    new = model._state
    for key, value in kept.items():  # derived from the items alone: carried over, not rebuilt
        assert new.cache[key] is value
    assert "counts_users" not in new.cache
    assert new.interaction_counts("users")[6] == row.nnz
    assert state.interaction_counts("users")[6] == X[[6]].nnz  # the old state is unchanged
    for bad in ("no", 0, None):  # only the default skips the check
        with pytest.raises(TypeError, match="raw_ids"):
            model.partial_fit_users([6], row, raw_ids=bad)
    assert model._state is new
    model.partial_fit_users([6], X[[6]], raw_ids=np.False_)
    np.testing.assert_array_equal(model.user_items_[6].toarray(), X[[6]].toarray())


def test_ials_fold_in_plan_follows_item_updates():
    """The iALS plan (item factors, Gram matrix, penalties) is kept by user updates and rebuilt after an
    item update: the next one-user update solves against the new item vectors."""
    X = _data(15)
    model = fastrec.ALS(factors=8, iterations=3, random_state=0, num_threads=1, unobserved_weight=0.3,
                        regularization_exp=0.7).fit(X)
    model.partial_fit_users([5], _canonical(X[[5]]))
    plan = model._state.cache["fold_in_plan_ials"]
    model.partial_fit_users([6], _canonical(X[[6]]))
    assert model._state.cache["fold_in_plan_ials"] is plan
    column = _random_csr(np.random.default_rng(16), X.shape[0], 1, 0.5)
    model.partial_fit_items([2], column)
    assert "fold_in_plan_ials" not in model._state.cache
    general = pickle.loads(pickle.dumps(model))
    general._partial_fit_one_user = lambda state, ids, X_rows: None
    row = _canonical(X[[8]])
    for m in (model, general):
        m.partial_fit_users([8], row.copy())
    assert model._state.cache["fold_in_plan_ials"] is not plan
    np.testing.assert_array_equal(model.user_factors_[8], general.user_factors_[8])
    np.testing.assert_array_equal(model.fold_in(row), general._solve_against(general._state, row, "items"))


def test_invalid_single_rows_still_raise_named_errors():
    model = MODELS["als"]().fit(_data(5))
    bad = sp.csr_matrix(np.array([[np.nan] + [0.0] * 44], np.float32))
    with pytest.raises(ValueError, match="X_rows"):
        model.partial_fit_users([1], bad)
    with pytest.raises(ValueError, match="user_ids"):
        model.partial_fit_users([1, 1], sp.csr_matrix((2, 45), dtype=np.float32))


def _canonical(matrix) -> sp.csr_matrix:
    out = sp.csr_matrix(matrix, dtype=np.float32)
    out.sum_duplicates()
    out.indices = out.indices.astype(np.int32)
    return out


def _unsorted(row: sp.csr_matrix) -> sp.csr_matrix:
    out = row.copy()
    out.indices, out.data = out.indices[::-1].copy(), out.data[::-1].copy()
    out.has_sorted_indices = False
    return out


ONE_USER_CASES = {  # (user_ids, X_rows) from the data X: what the one-user path sees first
    "canonical": lambda X: ([3], _canonical(X[[3]])),
    "numpy id": lambda X: ([np.int64(3)], _canonical(X[[3]])),
    "array of ids": lambda X: (np.array([3], np.int32), _canonical(X[[3]])),
    "scalar id": lambda X: (3, _canonical(X[[3]])),
    "csr_array": lambda X: ([3], sp.csr_array(_canonical(X[[3]]))),
    "new user": lambda X: ([X.shape[0]], _canonical(X[[3]])),
    "empty row": lambda X: ([3], sp.csr_matrix((1, X.shape[1]), dtype=np.float32)),
    "unsorted": lambda X: ([3], _unsorted(_canonical(X[[3]]))),
    "explicit zero": lambda X: ([3], sp.csr_matrix((np.array([1, 0], np.float32), np.array([1, 4], np.int32),
                                                    np.array([0, 2])), shape=(1, X.shape[1]))),
    "int64 indices": lambda X: ([3], sp.csr_matrix((np.ones(2, np.float32), np.array([1, 4], np.int64),
                                                    np.array([0, 2])), shape=(1, X.shape[1]))),
    "float64 values": lambda X: ([3], sp.csr_matrix(X[[3]], dtype=np.float64)),
    "negative value": lambda X: ([3], _canonical(-X[[3]])),
    "narrower row": lambda X: ([3], _canonical(X[[3]][:, :-1])),
    "wider row": lambda X: ([3], _canonical(sp.hstack([X[[3]], sp.csr_matrix((1, 1))]))),
    "two rows": lambda X: ([3], _canonical(X[[3, 4]])),
    "negative id": lambda X: ([-1], _canonical(X[[3]])),
    "float id": lambda X: ([3.5], _canonical(X[[3]])),
    "bool id": lambda X: ([True], _canonical(X[[3]])),
    "nan": lambda X: ([3], sp.csr_matrix((np.array([1, np.nan], np.float32), np.array([1, 4], np.int32),
                                          np.array([0, 2])), shape=(1, X.shape[1]))),
    "column out of range": lambda X: ([3], sp.csr_matrix((np.ones(2, np.float32), np.array([1, 4], np.int32),
                                                          np.array([0, 2])), shape=(1, 3))),
}


@pytest.mark.parametrize("kind", ["als", "ials"])
@pytest.mark.parametrize("case", sorted(ONE_USER_CASES))
def test_one_user_path_answers_as_the_general_path(case, kind):
    """Whatever the one-user latency path takes or declines, the model ends up (or raises) exactly as
    through the general path alone: same factors, same seen items, same error type and message."""
    X = _data(14)
    assert X[[7]].nnz != X[[3]].nnz  # iALS: the plan's penalty for one row length must not serve another
    model = MODELS["als"]() if kind == "als" else fastrec.ALS(factors=8, iterations=3, random_state=0, num_threads=1,
                                                                unobserved_weight=0.3, regularization_exp=0.7)
    fast = model.fit(X)
    fast.partial_fit_users([7], _canonical(X[[7]]))  # a pending overlay and the fold-in plan
    general = pickle.loads(pickle.dumps(fast))
    general._partial_fit_one_user = lambda state, ids, X_rows: None  # the general path only
    outcomes = []
    for model in (fast, general):
        ids, rows = ONE_USER_CASES[case](X)  # fresh arrays for each model
        before = model._state
        try:
            model.partial_fit_users(ids, rows)
        except Exception as exc:  # noqa: BLE001 - compared below
            assert model._state is before  # a failed update leaves the model as it was
            outcomes.append((type(exc), str(exc)))
        else:
            outcomes.append(None)
    assert outcomes[0] == outcomes[1]
    np.testing.assert_array_equal(fast.user_factors_, general.user_factors_)
    np.testing.assert_array_equal(fast.user_items_.toarray(), general.user_items_.toarray())
    assert fast.n_users_ == general.n_users_
    users = np.arange(fast.n_users_)
    np.testing.assert_array_equal(fast.recommend(users, n=5)[0], general.recommend(users, n=5)[0])


def test_item_update_after_user_updates_keeps_them():
    X = _data(6)
    model = MODELS["als"]().fit(X)
    rng = np.random.default_rng(9)
    row = _random_csr(rng, 1, X.shape[1], 0.5)
    model.partial_fit_users([4], row)
    vector = model.user_factors_[4].copy()
    column = _random_csr(rng, X.shape[0], 1, 0.3)
    model.partial_fit_items([2], column)
    assert model._state.pending is not None  # the item's column went into the user overlay
    np.testing.assert_array_equal(model.user_factors_[4], vector)
    want = row.toarray()[0]
    want[2] = column.toarray()[4, 0]
    np.testing.assert_array_equal(model.user_items_.toarray()[4], want)
    np.testing.assert_array_equal(model.user_items_.toarray()[:, 2], column.toarray()[:, 0])


def test_the_overlay_merges_past_the_threshold(monkeypatch):
    monkeypatch.setattr(state_module, "merge_threshold", lambda n_rows: 3)
    model = MODELS["als"]().fit(_data(7))
    rng = np.random.default_rng(10)
    lengths = []
    for user in range(5):
        model.partial_fit_users([user], _random_csr(rng, 1, 45, 0.3))
        pending = model._state.pending
        lengths.append(0 if pending is None else pending.length)
    assert lengths == [1, 2, 0, 1, 2]


def test_shallow_copies_updating_at_once_keep_their_own_updates():
    """Two models sharing one state (copy.copy) but not a lock: each sees only its own updates."""
    X = _data(8)
    a = MODELS["als"]().fit(X)
    a.partial_fit_users([0], X[[0]])  # a pending overlay, whose log both copies start from
    b = copy.copy(a)
    assert b._state is a._state and b._fit_lock is not a._fit_lock
    rng = np.random.default_rng(11)
    rows = {user: _random_csr(rng, 1, X.shape[1], 0.3) for user in range(1, 41)}

    def update(model, users):
        for user in users:
            model.partial_fit_users([user], rows[user])

    threads = [threading.Thread(target=update, args=(a, range(1, 21))),
               threading.Thread(target=update, args=(b, range(21, 41)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seen_a, seen_b = a.user_items_.toarray(), b.user_items_.toarray()
    for user in range(1, 41):
        mine, other = (seen_a, seen_b) if user <= 20 else (seen_b, seen_a)
        np.testing.assert_array_equal(mine[user], rows[user].toarray()[0])
        np.testing.assert_array_equal(other[user], X[[user]].toarray()[0])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), n_entries=st.integers(0, 30), queries=st.lists(st.integers(0, 30), max_size=6))
def test_rows_holding_an_item_match_a_scan_of_the_entries(seed, n_entries, queries):
    """``RowLog.rows_holding`` indexes entries lazily as the log grows; every state length, earlier
    ones included, sees exactly the rows of its own entries that hold one of the items."""
    rng = np.random.default_rng(seed)
    log = state_module.RowLog()
    for length in queries + [n_entries]:
        while len(log) < min(length, n_entries):  # the log grows between queries
            indices = np.sort(rng.choice(N_ITEMS, size=int(rng.integers(0, 6)), replace=False)).astype(np.int32)
            log.append_at(len(log), int(rng.integers(0, N_USERS)), None, indices,
                          np.ones(indices.size, np.float32))
        for seen_length in {min(length, len(log)), len(log) // 2, 0}:
            items = rng.choice(N_ITEMS, size=int(rng.integers(1, 4)), replace=False).astype(np.int32)
            want = sorted({int(log.ids[e]) for e in range(seen_length) if np.isin(log.entries[e][1], items).any()})
            assert log.rows_holding(items, seen_length).tolist() == want
