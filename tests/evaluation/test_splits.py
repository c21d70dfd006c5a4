"""Train/test splits: partition properties, per-user rules, determinism, both input kinds."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from fastrec.data.interactions import Interactions
from fastrec.evaluation import (leave_last_k_out, per_user_split, random_split, temporal_split,
                                user_split)


@st.composite
def matrices(draw, fmt=None):
    n_users = draw(st.integers(1, 8))
    n_items = draw(st.integers(1, 8))
    dense = np.array(draw(st.lists(st.lists(st.integers(0, 3), min_size=n_items, max_size=n_items),
                                   min_size=n_users, max_size=n_users)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    fmt = fmt or draw(st.sampled_from(["csr", "csc", "coo"]))
    return sp.csr_matrix(dense.astype(dtype)).asformat(fmt)


def assert_partition(X, train, test):
    """Disjoint halves that add up to X, in X's shape and dtype, X untouched."""
    assert train.shape == X.shape and test.shape == X.shape
    assert train.dtype == X.dtype and test.dtype == X.dtype
    assert train.format == "csr" and test.format == "csr"
    assert abs(train + test - X).sum() == 0
    assert train.multiply(test).nnz == 0
    assert train.nnz + test.nnz == sp.csr_matrix(X).nnz


def snapshot(X):
    return X.copy(), X.format


def assert_unchanged(X, before):
    copy, fmt = before
    assert X.format == fmt and (X != copy).nnz == 0
    if fmt in ("csr", "csc", "coo"):
        assert np.array_equal(X.data, copy.data)


@settings(max_examples=60, deadline=None)
@given(matrices(), st.floats(0.05, 0.95), st.integers(0, 2**31))
def test_random_split_partitions(X, fraction, seed):
    before = snapshot(X)
    train, test = random_split(X, fraction, random_state=seed)
    assert_unchanged(X, before)
    assert_partition(X, train, test)
    assert test.nnz == round(fraction * X.nnz)
    again_train, again_test = random_split(X, fraction, random_state=seed)
    assert (again_test != test).nnz == 0 and (again_train != train).nnz == 0


@settings(max_examples=60, deadline=None)
@given(matrices(), st.floats(0.05, 0.95), st.integers(2, 4), st.integers(0, 2**31))
def test_per_user_split_rules(X, fraction, min_interactions, seed):
    before = snapshot(X)
    train, test = per_user_split(X, fraction, min_interactions=min_interactions, random_state=seed)
    assert_unchanged(X, before)
    assert_partition(X, train, test)
    counts = sp.csr_matrix(X).getnnz(axis=1)
    for u, n in enumerate(counts):
        n_test = test[u].nnz
        if n < min_interactions:
            assert n_test == 0
        else:
            assert n_test == min(max(int(np.floor(fraction * n + 0.5)), 1), n - 1)
            assert train[u].nnz >= 1
    again = per_user_split(X, fraction, min_interactions=min_interactions, random_state=seed)[1]
    assert (again != test).nnz == 0


def ref_last_k(users, ts, k, min_interactions):
    """Entry positions of each user's k latest entries; ties: the later position is more recent."""
    chosen = set()
    for u in set(users.tolist()):
        positions = [p for p in range(users.size) if users[p] == u]
        if len(positions) >= min_interactions:
            latest = sorted(positions, key=lambda p: (ts[p], p))[-k:]
            chosen.update(latest)
    return chosen


@settings(max_examples=60, deadline=None)
@given(matrices(), st.integers(1, 3), st.data())
def test_leave_last_k_out_with_aligned_timestamps(X, k, data):
    ts = np.array(data.draw(st.lists(st.integers(0, 4), min_size=X.nnz, max_size=X.nnz)), dtype=float)
    before = snapshot(X)
    train, test = leave_last_k_out(X, k=k, timestamps=ts)
    assert_unchanged(X, before)
    assert_partition(X, train, test)
    coo = X.tocoo()
    expected = ref_last_k(coo.row, ts, k, k + 1)
    got = {p for p in range(coo.nnz) if test[coo.row[p], coo.col[p]] != 0}
    assert got == expected


@settings(max_examples=40, deadline=None)
@given(matrices(fmt="csr"), st.integers(1, 3), st.data())
def test_leave_last_k_out_with_sparse_timestamps(X, k, data):
    ts_values = data.draw(st.lists(st.integers(1, 50), min_size=X.nnz, max_size=X.nnz))
    ts = sp.csr_matrix((np.array(ts_values, dtype=float), X.indices, X.indptr), shape=X.shape)
    train, test = leave_last_k_out(X, k=k, timestamps=ts, min_interactions=1)
    assert_partition(X, train, test)
    expected = ref_last_k(X.tocoo().row, ts.data, k, 1)
    coo = X.tocoo()
    assert {p for p in range(coo.nnz) if test[coo.row[p], coo.col[p]] != 0} == expected


def test_leave_last_k_out_ties_go_by_storage_order():
    # long rows of equal timestamps: only a stable sort keeps the later entries
    X = sp.csr_matrix(np.ones((3, 200), dtype=np.float32))
    ts = np.tile(np.repeat([1.0, 2.0], 100), 3)
    _, test = leave_last_k_out(X, k=7, timestamps=ts)
    assert test.toarray().tolist() == [[0.0] * 193 + [1.0] * 7] * 3


@settings(max_examples=40, deadline=None)
@given(matrices(), st.data())
def test_temporal_split_cutoff(X, data):
    ts = np.array(data.draw(st.lists(st.floats(0, 100), min_size=X.nnz, max_size=X.nnz)))
    cutoff = data.draw(st.floats(0, 100))
    train, test = temporal_split(X, cutoff=cutoff, timestamps=ts)
    assert_partition(X, train, test)
    coo = X.tocoo()
    for p in range(coo.nnz):
        half = test if ts[p] >= cutoff else train
        assert half[coo.row[p], coo.col[p]] == coo.data[p]


def test_temporal_split_quantile():
    X = sp.csr_matrix(np.ones((4, 5), dtype=np.float32))
    ts = np.arange(20, dtype=float)
    train, test = temporal_split(X, quantile=0.75, timestamps=ts)
    assert test.nnz == 5 and train.nnz == 15  # cut-off 14.25: timestamps 15..19
    assert test.toarray()[3].tolist() == [1, 1, 1, 1, 1] and test.toarray()[:3].sum() == 0


@settings(max_examples=40, deadline=None)
@given(matrices(), st.integers(0, 2**31))
def test_user_split_partitions_users(X, seed):
    active = np.flatnonzero(sp.csr_matrix(X).getnnz(axis=1))
    before = snapshot(X)
    if active.size == 0:
        with pytest.raises(ValueError, match="only 0 have interactions"):
            user_split(X, test_users=1, random_state=seed)
        return
    train, held, train_users, test_users = user_split(X, test_users=1, random_state=seed)
    assert_unchanged(X, before)
    assert_partition(X, train, held)
    assert test_users.size == 1 and test_users[0] in active
    assert np.array_equal(np.sort(np.concatenate([train_users, test_users])), np.arange(X.shape[0]))
    assert held.getnnz(axis=1)[train_users].sum() == 0
    assert train.getnnz(axis=1)[test_users].sum() == 0
    assert np.array_equal(held[test_users].toarray(), sp.csr_matrix(X)[test_users].toarray())


def test_user_split_fraction_and_seed():
    X = sp.random(100, 20, density=0.3, format="csr", random_state=1)
    *_, a = user_split(X, 0.2, random_state=7)
    *_, b = user_split(X, 0.2, random_state=7)
    *_, c = user_split(X, 0.2, random_state=8)
    assert a.size == 20 and np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.all(np.diff(a) > 0)


def test_duplicates_are_summed_before_splitting():
    X = sp.coo_matrix(([1.0, 2.0, 3.0, 1.0], ([0, 0, 0, 1], [1, 1, 2, 0])), shape=(2, 3))
    train, test = per_user_split(X, 0.5, random_state=0)
    assert_partition(X, train, test)
    assert train[0, 1] + test[0, 1] == 3.0  # never split across the halves
    with pytest.raises(ValueError, match="more than once"):
        leave_last_k_out(X, timestamps=np.arange(4.0))


def test_sparse_array_in_sparse_array_out():
    X = sp.csr_array(np.eye(4, dtype=np.float32) + np.eye(4, k=1, dtype=np.float32))
    train, test = per_user_split(X, 0.5, random_state=0)
    assert isinstance(train, sp.csr_array) and isinstance(test, sp.csr_array)
    assert abs(train + test - X).sum() == 0


def test_empty_matrix():
    X = sp.csr_matrix((3, 4), dtype=np.float32)
    for train, test in (random_split(X, 0.5), per_user_split(X), leave_last_k_out(X, timestamps=np.empty(0))):
        assert train.nnz == 0 and test.nnz == 0 and train.shape == (3, 4)


def test_bad_arguments():
    X = sp.csr_matrix(np.ones((3, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="test_fraction must be < 1"):
        random_split(X, 1.0)
    with pytest.raises(ValueError, match="test_fraction must be > 0"):
        per_user_split(X, 0.0)
    with pytest.raises(ValueError, match="min_interactions must be >= 2"):
        per_user_split(X, min_interactions=1)
    with pytest.raises(ValueError, match="needs timestamps"):
        leave_last_k_out(X)
    with pytest.raises(ValueError, match="has 2 entries but X stores 9"):
        leave_last_k_out(X, timestamps=np.arange(2.0))
    with pytest.raises(ValueError, match="exactly the entries"):
        leave_last_k_out(X, timestamps=sp.csr_matrix(np.eye(3)))
    with pytest.raises(ValueError, match="shape"):
        leave_last_k_out(X, timestamps=sp.csr_matrix(np.ones((2, 3))))
    with pytest.raises(ValueError, match="NaN"):
        temporal_split(X, cutoff=1.0, timestamps=np.full(9, np.nan))
    with pytest.raises(TypeError, match="aligned with X.data"):
        leave_last_k_out(X.tolil(), timestamps=np.arange(9.0))
    with pytest.raises(ValueError, match="exactly one"):
        temporal_split(X, timestamps=np.arange(9.0))
    with pytest.raises(ValueError, match="exactly one"):
        temporal_split(X, cutoff=1.0, quantile=0.5, timestamps=np.arange(9.0))
    with pytest.raises(TypeError, match="scipy.sparse"):
        random_split(np.ones((3, 3)))
    with pytest.raises(ValueError, match="only 3 have interactions"):
        user_split(X, test_users=4)
    with pytest.raises(TypeError, match="test_users"):
        user_split(X, test_users="2")


# ------------------------------------------------------------- Interactions
def interactions(seed=0, timestamps=True):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 12, 80)
    items = rng.integers(0, 9, 80)
    ts = rng.integers(0, 30, 80).astype(float) if timestamps else None
    return Interactions.from_arrays([f"u{u}" for u in users], items * 10, rng.random(80) + 0.5, ts)


def assert_interactions_partition(data, train, test):
    assert isinstance(train, Interactions) and isinstance(test, Interactions)
    assert train.user_map == data.user_map and test.item_map == data.item_map
    assert train.shape == data.shape and train.nnz + test.nnz == data.nnz
    X = data.to_csr()
    assert abs(train.to_csr() + test.to_csr() - X).sum() == pytest.approx(0)
    assert train.to_csr().multiply(test.to_csr()).nnz == 0


@pytest.mark.parametrize("split", [
    lambda d: random_split(d, 0.3, random_state=1),
    lambda d: per_user_split(d, 0.3, random_state=1),
    lambda d: leave_last_k_out(d, k=2),
    lambda d: temporal_split(d, quantile=0.7),
    lambda d: user_split(d, 0.25, random_state=1)[:2],
])
def test_interactions_in_interactions_out(split):
    data = interactions()
    users_before, weights_before = data.users.copy(), data.weights.copy()
    train, test = split(data)
    assert_interactions_partition(data, train, test)
    assert np.array_equal(data.users, users_before) and np.array_equal(data.weights, weights_before)


def test_interactions_match_the_sparse_path():
    data = interactions(seed=3)
    X = data.to_csr(np.float64)
    ts = sp.csr_matrix((data.timestamps, X.indices, X.indptr), shape=X.shape)
    for got, want in ((per_user_split(data, 0.4, random_state=5), per_user_split(X, 0.4, random_state=5)),
                      (leave_last_k_out(data, k=2), leave_last_k_out(X, k=2, timestamps=ts)),
                      (temporal_split(data, cutoff=12.0), temporal_split(X, cutoff=12.0, timestamps=ts))):
        assert abs(got[1].to_csr(np.float64) - want[1]).sum() == pytest.approx(0)
    last = leave_last_k_out(data, k=1)[1]
    for u in np.unique(data.users):
        mine = data.users == u
        if mine.sum() >= 2:
            assert last.timestamps[last.users == u][0] == data.timestamps[mine].max()


def test_interactions_without_timestamps():
    with pytest.raises(ValueError, match="needs timestamps"):
        leave_last_k_out(interactions(timestamps=False))
