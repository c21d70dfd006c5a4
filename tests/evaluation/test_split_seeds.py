"""Random splits follow ``random_state``: same seed, same split; another seed, another split.

Every split here is also checked to be a partition of the input (values
included) with the documented sizes, so a split that "changes" by dropping or
duplicating entries does not pass either.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp

from fastrec.evaluation import per_user_split, random_split, user_split

SEEDS = (0, 1, 2, 12345, 2**31 - 1)


def interactions_matrix(seed=0, n_users=60, n_items=40):
    """Users with 0 to 25 interactions of distinct integer values (so halves can be traced)."""
    rng = np.random.default_rng(seed)
    dense = np.zeros((n_users, n_items))
    for u in range(n_users):
        count = int(rng.integers(0, 26))
        dense[u, rng.choice(n_items, count, replace=False)] = rng.integers(1, 6, count)
    return sp.csr_matrix(dense)


def entry_set(M):
    coo = sp.coo_matrix(M)
    return set(zip(coo.row.tolist(), coo.col.tolist(), coo.data.tolist()))


def assert_partition(X, train, test):
    """train and test hold disjoint entries of X, with X's values, and together all of X."""
    whole, a, b = entry_set(X), entry_set(train), entry_set(test)
    assert a | b == whole
    assert not a & b
    assert len(a) == train.nnz and len(b) == test.nnz  # no entry stored twice
    assert train.shape == X.shape and test.shape == X.shape


def expected_per_user(counts, fraction, min_interactions):
    """Documented per-user test sizes: round-half-up of fraction * n, at least 1 and at most n - 1."""
    out = np.minimum(np.maximum(np.floor(fraction * counts + 0.5), 1), np.maximum(counts - 1, 1))
    out[counts < min_interactions] = 0
    return out.astype(int)


def test_expected_per_user_sizes_by_hand():
    counts = np.array([0, 1, 2, 3, 4, 5, 10, 11])
    assert expected_per_user(counts, 0.2, 2).tolist() == [0, 0, 1, 1, 1, 1, 2, 2]
    assert expected_per_user(counts, 0.5, 3).tolist() == [0, 0, 0, 2, 2, 3, 5, 6]
    assert expected_per_user(counts, 0.9, 2).tolist() == [0, 0, 1, 2, 3, 4, 9, 10]


def _distinct(splits):
    """Every pair of test halves differs."""
    for (s1, t1), (s2, t2) in itertools.combinations(splits.items(), 2):
        assert entry_set(t1) != entry_set(t2), f"random_state={s1} and random_state={s2} gave the same split"


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5])
def test_random_split_seeds(fraction):
    X = interactions_matrix(1)
    splits = {}
    for seed in SEEDS:
        train, test = random_split(X, fraction, random_state=seed)
        assert_partition(X, train, test)
        assert test.nnz == round(fraction * X.nnz)
        again_train, again_test = random_split(X, fraction, random_state=seed)
        assert entry_set(again_test) == entry_set(test) and entry_set(again_train) == entry_set(train)
        splits[seed] = test
    _distinct(splits)


@pytest.mark.parametrize("fraction, min_interactions", [(0.2, 2), (0.5, 3), (0.75, 5)])
def test_per_user_split_seeds(fraction, min_interactions):
    X = interactions_matrix(2)
    counts = X.getnnz(axis=1)
    want = expected_per_user(counts, fraction, min_interactions)
    splits = {}
    for seed in SEEDS:
        train, test = per_user_split(X, fraction, min_interactions=min_interactions, random_state=seed)
        assert_partition(X, train, test)
        np.testing.assert_array_equal(test.getnnz(axis=1), want)
        np.testing.assert_array_equal(train.getnnz(axis=1), counts - want)
        again = per_user_split(X, fraction, min_interactions=min_interactions, random_state=seed)[1]
        assert entry_set(again) == entry_set(test)
        splits[seed] = test
    _distinct(splits)


def test_per_user_split_seeds_change_each_user():
    """Not just some entries: with another seed most users get another test set."""
    X = interactions_matrix(3)
    counts = X.getnnz(axis=1)
    eligible = np.flatnonzero(counts >= 6)
    tests = [per_user_split(X, 0.5, random_state=seed)[1] for seed in (10, 11)]
    changed = sum(entry_set(tests[0][u]) != entry_set(tests[1][u]) for u in eligible)
    assert changed >= 0.8 * eligible.size, (changed, eligible.size)


@pytest.mark.parametrize("split", ["random", "per_user"])
def test_every_entry_can_land_on_either_side(split):
    """Over many seeds each entry (of users with enough interactions) is sometimes test, sometimes train."""
    X = interactions_matrix(4, n_users=25, n_items=30)
    counts = X.getnnz(axis=1)
    coo = X.tocoo()
    keys = list(zip(coo.row.tolist(), coo.col.tolist()))
    in_test = np.zeros(len(keys), dtype=int)
    seeds = range(40)
    for seed in seeds:
        if split == "random":
            test = random_split(X, 0.5, random_state=seed)[1]
        else:
            test = per_user_split(X, 0.5, random_state=seed)[1]
        test_keys = {(r, c) for r, c, _ in entry_set(test)}
        in_test += [key in test_keys for key in keys]
    considered = counts[coo.row] >= 4
    assert np.all(in_test[considered] > 0) and np.all(in_test[considered] < len(seeds))
    assert abs(in_test[considered].mean() / len(seeds) - 0.5) < 0.05


def test_generator_random_state_is_used_and_advanced():
    """A Generator is drawn from: the same Generator twice gives two different splits."""
    X = interactions_matrix(5)
    for split in (lambda rs: random_split(X, 0.3, random_state=rs)[1],
                  lambda rs: per_user_split(X, 0.3, random_state=rs)[1],
                  lambda rs: user_split(X, 0.3, random_state=rs)[1]):
        rng = np.random.default_rng(7)
        first, second = split(rng), split(rng)
        assert entry_set(first) != entry_set(second)
        assert entry_set(split(np.random.default_rng(7))) == entry_set(first)


@pytest.mark.parametrize("test_users", [0.25, 7])
def test_user_split_seeds(test_users):
    X = interactions_matrix(6)
    active = np.flatnonzero(X.getnnz(axis=1))
    n_test = max(1, round(test_users * active.size)) if isinstance(test_users, float) else test_users
    held_sets = {}
    for seed in SEEDS:
        train, held, train_users, held_users = user_split(X, test_users, random_state=seed)
        assert_partition(X, train, held)
        assert held_users.size == n_test and np.isin(held_users, active).all()
        assert np.array_equal(np.sort(np.concatenate([train_users, held_users])), np.arange(X.shape[0]))
        assert train.getnnz(axis=1)[held_users].sum() == 0
        assert held.getnnz(axis=1)[train_users].sum() == 0
        held_set = set(held_users.tolist())
        assert entry_set(held) == {entry for entry in entry_set(X) if entry[0] in held_set}
        again = user_split(X, test_users, random_state=seed)[3]
        assert np.array_equal(again, held_users)
        held_sets[seed] = frozenset(held_users.tolist())
    assert len(set(held_sets.values())) == len(SEEDS), "different seeds held out the same users"
