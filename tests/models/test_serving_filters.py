"""``exclude`` and ``candidates`` apply on every recommend path, including those that take ``X``.

``recommend`` ranks stored factors (no ``X``), stored factors with fresh rows
(``users`` and ``X``), recomputed factors (``recalculate=True``) and folded-in
new users (``users=None``).  Each path is compared with a brute-force NumPy
top-K over the same query vectors, seen items, exclusions and candidates.
The filters are chosen to matter: ``exclude`` removes items near the top of
every list, and ``candidates`` leaves out most of the best items.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
import scipy.sparse as sp

from fastrec import ALS
from reference import assert_topk_valid, eligible_mask, planted_low_rank, seen_sets, topk_reference

N_USERS, N_ITEMS = 80, 120
USERS = np.array([5, 0, 79, 33, 12, 5])  # a repeated user too


@lru_cache(maxsize=None)
def fitted_model(dtype):
    """A fitted ALS and its training matrix (shared: the tests only read them)."""
    R = planted_low_rank(N_USERS, N_ITEMS, rank=4, per_user=12, seed=3)
    model = ALS(factors=6, iterations=4, regularization=0.05, solver="cholesky", dtype=dtype,
                random_state=0, num_threads=2).fit(R)
    return model, R


def fresh_rows(n_rows, seed):
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_rows, N_ITEMS)) < 0.06) * rng.integers(1, 4, (n_rows, N_ITEMS))
    dense[:, 7] = 2  # no empty rows
    return sp.csr_matrix(dense.astype(np.float64))


def filters(Q, item_factors, seen):
    """An exclusion list hitting every query's top items and a candidate set missing most of them.

    "Top" counts with and without the ``seen`` items skipped.
    """
    lists = [topk_reference(Q, item_factors, None, 20, seen=s)[0] for s in (None, seen)]
    exclude = np.unique(np.concatenate([ids[:, [0, 2]] for ids in lists], axis=None))
    top = np.unique(np.concatenate(lists, axis=None))
    rest = np.setdiff1d(np.arange(N_ITEMS), top)
    candidates = np.concatenate([top[::4], rest[::3]])[::-1]  # unsorted, on purpose
    return exclude, candidates


def seen_union(*matrices):
    """The sparsity pattern of the union (seen items), immune to values cancelling."""
    out = abs(sp.csr_matrix(matrices[0]))
    for m in matrices[1:]:
        out = out + abs(sp.csr_matrix(m))
    return sp.csr_matrix(out)


def check_answer(ids, scores, Q, model, seen, exclude, candidates, n):
    """The answer equals the brute-force top-n of Q under the filters (exactly in float64)."""
    Y = model.item_factors_
    m = Q.shape[0]
    k = min(n, N_ITEMS if candidates is None else np.unique(candidates).size)
    valid = ids[ids >= 0]
    if candidates is not None:
        assert np.isin(valid, candidates).all(), f"items outside candidates: {np.setdiff1d(valid, candidates)}"
    if exclude is not None:
        assert not np.isin(valid, exclude).any(), f"excluded items returned: {np.intersect1d(valid, exclude)}"
    full = Q.astype(np.float64) @ Y.astype(np.float64).T
    ok = eligible_mask(m, N_ITEMS, seen_sets(seen, m), exclude, candidates)
    atol = 1e-4 if Y.dtype == np.float32 else 1e-10
    assert_topk_valid(ids, scores, full, ok, k, atol=atol)
    if Y.dtype == np.float64:
        ref_ids, ref_scores = topk_reference(Q, Y, None, n, seen=seen, exclude=exclude, candidates=candidates)
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-10)


FILTER_CASES = ["exclude", "candidates", "both"]


def pick(case, exclude, candidates):
    return (exclude if case in ("exclude", "both") else None,
            candidates if case in ("candidates", "both") else None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("recalculate", [False, True])
@pytest.mark.parametrize("case", FILTER_CASES)
@pytest.mark.parametrize("exclude_seen", [True, False])
def test_stored_users_with_rows(dtype, recalculate, case, exclude_seen):
    model, R = fitted_model(dtype)
    rows = fresh_rows(USERS.size, seed=1)
    Q = model.fold_in(rows) if recalculate else model.user_factors_[USERS]
    seen = seen_union(R[USERS], rows) if exclude_seen else None
    exclude, candidates = pick(case, *filters(Q, model.item_factors_, seen_union(R[USERS], rows)))
    for n in (3, 10, N_ITEMS):
        ids, scores = model.recommend(USERS, n=n, X=rows, recalculate=recalculate, exclude=exclude,
                                      candidates=candidates, exclude_seen=exclude_seen)
        check_answer(ids, scores, Q, model, seen, exclude, candidates, n)
        # one user at a time (the single-query path) gives the same rows
        for k, user in enumerate(USERS[:3]):
            one_ids, one_scores = model.recommend(int(user), n=n, X=rows[k], recalculate=recalculate,
                                                  exclude=exclude, candidates=candidates,
                                                  exclude_seen=exclude_seen)
            np.testing.assert_array_equal(one_ids, ids[k][ids[k] >= 0])
            np.testing.assert_allclose(one_scores, scores[k][ids[k] >= 0], rtol=1e-5, atol=1e-6)  # sums in another order


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", FILTER_CASES)
@pytest.mark.parametrize("exclude_seen", [True, False])
def test_new_users_from_rows(dtype, case, exclude_seen):
    model, _ = fitted_model(dtype)
    rows = fresh_rows(7, seed=2)
    Q = model.fold_in(rows)
    seen = rows if exclude_seen else None
    exclude, candidates = pick(case, *filters(Q, model.item_factors_, rows))
    for n in (1, 10, N_ITEMS):
        ids, scores = model.recommend(None, n=n, X=rows, exclude=exclude, candidates=candidates,
                                      exclude_seen=exclude_seen)
        check_answer(ids, scores, Q, model, seen, exclude, candidates, n)
        # a single new user (one row of X) takes the latency path
        one_ids, one_scores = model.recommend(None, n=n, X=rows[3], exclude=exclude, candidates=candidates,
                                              exclude_seen=exclude_seen)
        assert one_ids.shape == (1, ids.shape[1])  # users=None always answers a batch
        check_answer(one_ids, one_scores, Q[3:4], model, None if seen is None else seen[3], exclude,
                     candidates, n)


@pytest.mark.parametrize("case", FILTER_CASES)
def test_stored_users_without_rows(case):
    """The plain path, for comparison: the same filters, the same reference."""
    model, R = fitted_model(np.float64)
    Q = model.user_factors_[USERS]
    exclude, candidates = pick(case, *filters(Q, model.item_factors_, R[USERS]))
    ids, scores = model.recommend(USERS, n=10, exclude=exclude, candidates=candidates)
    check_answer(ids, scores, Q, model, R[USERS], exclude, candidates, 10)


def test_filters_shape_the_answer():
    """Guard: the filters used above change every list, so dropping one cannot go unnoticed."""
    model, R = fitted_model(np.float64)
    rows = fresh_rows(USERS.size, seed=1)
    paths = ((model.user_factors_[USERS], seen_union(R[USERS], rows), {"users": USERS}),
             (model.fold_in(rows), rows, {"users": None}))
    for Q, seen, kwargs in paths:
        exclude, candidates = filters(Q, model.item_factors_, seen)
        plain, _ = model.recommend(n=10, X=rows, **kwargs)
        with_exclude, _ = model.recommend(n=10, X=rows, exclude=exclude, **kwargs)
        with_candidates, _ = model.recommend(n=10, X=rows, candidates=candidates, **kwargs)
        assert np.all(np.isin(plain, exclude).any(axis=1))
        assert np.all(~np.isin(plain, candidates).all(axis=1))
        assert np.all((plain != with_exclude).any(axis=1))
        assert np.all((plain != with_candidates).any(axis=1))


def test_candidates_cap_the_columns_with_rows():
    """With fewer candidates than n a batch has one column per candidate, padded where seen."""
    model, R = fitted_model(np.float64)
    rows = fresh_rows(3, seed=4)
    users = np.array([1, 2, 3])
    seen = seen_union(R[users], rows)
    candidates = np.array([7, 8, 9, 100])  # 7 is in every fresh row
    for kwargs in ({"users": users}, {"users": users, "recalculate": True}, {"users": None}):
        ids, scores = model.recommend(n=10, X=rows, candidates=candidates, **kwargs)
        assert ids.shape == (3, 4)
        user_seen = seen if kwargs["users"] is not None else rows
        for k in range(3):
            allowed = set(candidates.tolist()) - set(user_seen[k].indices.tolist())
            got = ids[k][ids[k] >= 0]
            assert set(got.tolist()) == allowed
            assert np.all(np.isneginf(scores[k][ids[k] < 0]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_run_of_consecutive_users_ranks_as_any_other_order(dtype):
    """Consecutive stored users are ranked from a read-only view of the stored vectors (no copy): the
    answers are those of the same users asked in another order, and the view cannot be written."""
    model, _ = fitted_model(dtype)
    run = np.arange(10, 70)
    ids, scores = model.recommend(run, n=7)
    back_ids, back_scores = model.recommend(run[::-1], n=7)
    np.testing.assert_array_equal(ids, back_ids[::-1])
    np.testing.assert_array_equal(scores, back_scores[::-1])
    state = model._state
    queries = model._queries(state, run)
    np.testing.assert_array_equal(queries, state.user_factors[10:70])
    assert not queries.flags.writeable and np.shares_memory(queries, state.user_factors)
    with pytest.raises(ValueError):
        queries[0, 0] = 1
    gathered = model._queries(state, np.array([3, 5, 4]))  # not a run: a copy
    assert not np.shares_memory(gathered, state.user_factors)


def test_a_run_of_users_grown_by_a_partial_fit_ranks_as_one_by_one():
    """New users added by ``partial_fit_users``: a run over old and new users (gathered while the update
    is pending, a view of the merged vectors after) ranks as each user asked alone."""
    import dataclasses
    R = planted_low_rank(N_USERS, N_ITEMS, rank=4, per_user=12, seed=5)
    model = ALS(factors=6, iterations=3, random_state=0, num_threads=2).fit(R)
    new_rows = planted_low_rank(3, N_ITEMS, rank=4, per_user=12, seed=6)
    model.partial_fit_users(np.arange(N_USERS, N_USERS + 3), new_rows)
    run = np.arange(N_USERS - 5, N_USERS + 3)
    for merged in (False, True):
        if merged:
            model._state = dataclasses.replace(model._state)
            assert model._state.pending is None
            assert np.shares_memory(model._queries(model._state, run), model._state.user_factors)
        ids, scores = model.recommend(run, n=6)
        for row, user in enumerate(run):
            one_ids, one_scores = model.recommend(int(user), n=6)
            np.testing.assert_array_equal(ids[row], one_ids)
            np.testing.assert_array_equal(scores[row], one_scores)
