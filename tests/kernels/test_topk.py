"""The top-K engine (`ext/_topk.pyx`) and `FactorModel.recommend`, against a NumPy reference.

Most inputs are small integer-valued factors: every score is then exact in
float32 and float64 whatever the summation order, so results must equal the
reference bit for bit, and the many exact ties check the tie-break (lower id
first).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastrec import ALS
from fastrec.models import FittedState
from reference import assert_topk_valid, eligible_mask, seen_sets, topk_reference

DTYPES = (np.float32, np.float64)
N_USERS, N_ITEMS, F = 37, 53, 4


def integer_problem(seed: int, n_users: int = N_USERS, n_items: int = N_ITEMS, f: int = F):
    """Integer-valued factors and bias, a seen matrix, an exclusion list and candidates, all with edge cases."""
    rng = np.random.default_rng(seed)
    Q = rng.integers(-2, 3, (n_users, f)).astype(np.float64)
    Y = rng.integers(-2, 3, (n_items, f)).astype(np.float64)
    bias = rng.integers(-1, 2, n_items).astype(np.float64)
    seen = (rng.random((n_users, n_items)) < 0.3).astype(np.float64)
    seen[0] = 0           # a user with no history
    seen[1] = 1           # a user who has seen every item
    seen[2, 1:] = 1       # a user with exactly one unseen item
    seen[3] *= -1         # thumbs down counts as seen too
    exclude = np.concatenate([rng.choice(n_items, 6, replace=False), [7, 7]])  # duplicates
    candidates = np.concatenate([rng.choice(n_items, 20, replace=False)[::-1], [5, 5, 0]])  # unsorted, dupes
    return Q, Y, bias, sp.csr_matrix(seen), exclude, candidates


def kernel_topk(kernel, Q, Y, bias, k, seen=None, exclude=None, candidates=None, num_threads=1,
                block_users=64, block_items=2048):
    """Call the compiled ``topk`` directly, building its flat filter arrays by hand."""
    dtype = Y.dtype
    n_items = Y.shape[0]
    rows, row_bias, item_ids = Y, bias, np.empty(0, np.int32)
    if candidates is not None:
        item_ids = np.unique(candidates).astype(np.int32)
        rows = np.ascontiguousarray(Y[item_ids])
        row_bias = None if bias is None else bias[item_ids]
    mask = np.empty(0, np.uint8)
    if exclude is not None:
        mask = np.zeros(n_items, np.uint8)
        mask[np.asarray(exclude)] = 1
    if seen is not None:
        csr = sp.csr_matrix(seen)
        csr.sort_indices()
        indptr, indices = csr.indptr.astype(np.int32), csr.indices.astype(np.int32)
    else:
        indptr = indices = np.empty(0, np.int32)
    ids = np.full((Q.shape[0], k), -7, np.int32)  # sentinel: every slot must be written
    scores = np.full((Q.shape[0], k), np.nan, dtype)
    kernel.topk(np.ascontiguousarray(Q, dtype), rows,
                             np.empty(0, dtype) if row_bias is None else np.ascontiguousarray(row_bias, dtype),
                             indptr, indices, mask, item_ids, ids, scores, num_threads, block_users, block_items)
    return ids, scores


def model_with(Q, Y, bias=None, seen=None, num_threads=1, dtype=np.float64) -> ALS:
    """An ALS whose fitted state is given factors (lets us test item_bias and exact ties)."""
    model = ALS(factors=Q.shape[1], num_threads=num_threads)
    user_items = sp.csr_matrix(seen if seen is not None else (Q.shape[0], Y.shape[0]), dtype=dtype)
    user_items.sort_indices()
    model._state = FittedState(np.array(Q, dtype=dtype), np.array(Y, dtype=dtype), user_items,
                               None if bias is None else np.array(bias, dtype=dtype))
    return model


def assert_same(got, want):
    assert got[0].dtype == np.int32
    assert got[1].dtype == want[1].dtype
    assert got[0].shape == want[0].shape, (got[0].shape, want[0].shape)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


FILTERS = list(itertools.product([False, True], repeat=3))  # (seen, exclude, candidates)
FILTER_IDS = [f"seen{int(s)}-excl{int(e)}-cand{int(c)}" for s, e, c in FILTERS]


@pytest.mark.parametrize("n", [0, 1, 10, N_ITEMS])
@pytest.mark.parametrize("use_seen, use_exclude, use_candidates", FILTERS, ids=FILTER_IDS)
@pytest.mark.parametrize("use_bias", [False, True])
def test_kernel_matches_reference(topk_kernel, n, use_seen, use_exclude, use_candidates, use_bias):
    Q, Y, bias, seen, exclude, candidates = integer_problem(seed=n)
    args = dict(seen=seen if use_seen else None, exclude=exclude if use_exclude else None,
                candidates=candidates if use_candidates else None)
    for dtype in DTYPES:
        want = topk_reference(Q, Y.astype(dtype), bias if use_bias else None, n, **args)
        k = want[0].shape[1]
        for threads, blocks in [(1, (64, 2048)), (2, (64, 2048)), (1, (5, 7)), (2, (3, 16)), (2, (1, 1))]:
            got = kernel_topk(topk_kernel, Q, Y.astype(dtype), bias.astype(dtype) if use_bias else None, k,
                              num_threads=threads, block_users=blocks[0], block_items=blocks[1], **args)
            assert_same(got, want)


@pytest.mark.parametrize("n", [0, 1, 10, N_ITEMS, N_ITEMS + 5])
@pytest.mark.parametrize("use_seen, use_exclude, use_candidates", FILTERS, ids=FILTER_IDS)
@pytest.mark.parametrize("use_bias", [False, True])
def test_recommend_matches_reference(n, use_seen, use_exclude, use_candidates, use_bias):
    Q, Y, bias, seen, exclude, candidates = integer_problem(seed=100 + n)
    kwargs = dict(exclude=exclude if use_exclude else None, candidates=candidates if use_candidates else None)
    users = np.r_[np.arange(N_USERS), [4, 4, 1]]  # duplicates in the batch are fine
    for dtype, threads in itertools.product(DTYPES, (1, 2)):
        model = model_with(Q, Y, bias if use_bias else None, seen, num_threads=threads, dtype=dtype)
        want = topk_reference(Q[users], Y.astype(dtype), bias if use_bias else None, n,
                              seen=seen[users] if use_seen else None, **kwargs)
        assert_same(model.recommend(users, n=n, exclude_seen=use_seen, **kwargs), want)
        for u in (0, 1, 2, 3, 20):
            ids, scores = model.recommend(u, n=n, exclude_seen=use_seen, **kwargs)
            valid = want[0][u] >= 0
            assert ids.ndim == 1 and scores.ndim == 1
            assert_same((ids, scores), (want[0][u][valid], want[1][u][valid]))


def test_batch_shape_is_capped_at_the_number_of_ranked_items():
    """Documents current behaviour: with n above the pool size, batches have min(n, pool) columns."""
    Q, Y, bias, seen, exclude, candidates = integer_problem(seed=1)
    model = model_with(Q, Y, bias, seen)
    ids, scores = model.recommend([0, 1], n=N_ITEMS + 10)
    assert ids.shape == scores.shape == (2, N_ITEMS)
    assert np.all(ids[1] == -1) and np.all(np.isneginf(scores[1])), "user 1 has seen everything"
    ids, _ = model.recommend([0, 1], n=100, candidates=candidates)
    assert ids.shape == (2, np.unique(candidates).size)


def test_kernel_pads_when_k_exceeds_items(topk_kernel):
    Q, Y, bias, seen, exclude, _ = integer_problem(seed=2)
    ids, scores = kernel_topk(topk_kernel, Q, Y, bias, N_ITEMS + 4, seen=seen, exclude=exclude)
    want = topk_reference(Q, Y, bias, N_ITEMS, seen=seen, exclude=exclude)
    assert_same((ids[:, :N_ITEMS], scores[:, :N_ITEMS]), want)
    assert np.all(ids[:, N_ITEMS:] == -1) and np.all(np.isneginf(scores[:, N_ITEMS:]))


def test_ties_broken_by_lower_id():
    # every item scores 1 except item 4 (2) and item 9 (0)
    Y = np.tile([1.0, 0.0], (12, 1))
    Y[4] = [2.0, 0.0]
    Y[9] = [0.0, 0.0]
    model = model_with(np.array([[1.0, 0.0]]), Y, seen=sp.csr_matrix(([1.0], ([0], [2])), shape=(1, 12)))
    ids, scores = model.recommend(0, n=5)
    np.testing.assert_array_equal(ids, [4, 0, 1, 3, 5])
    np.testing.assert_array_equal(scores, [2, 1, 1, 1, 1])
    ids, _ = model.recommend(0, n=3, exclude=[0, 0, 4], candidates=[11, 10, 9, 8, 1])
    np.testing.assert_array_equal(ids, [1, 8, 10])
    # a bias lifts item 11 to tie with item 4 (score 2): the lower id still comes first
    bias = np.zeros(12)
    bias[11] = 1.0
    model = model_with(np.array([[1.0, 0.0]]), Y, bias=bias)
    ids, scores = model.recommend(0, n=3)
    np.testing.assert_array_equal(ids, [4, 11, 0])
    np.testing.assert_array_equal(scores, [2, 2, 1])


def test_tie_break_survives_item_blocks_and_heap_replacement(topk_kernel):
    """Ties straddling the k-th place, with items seen in decreasing id order across tiles."""
    n_items = 40
    Y = np.ones((n_items, 1))
    Q = np.ones((3, 1))
    for block_items in (1, 3, 7, 2048):
        ids, _ = kernel_topk(topk_kernel, Q, Y, None, 6, block_items=block_items)
        np.testing.assert_array_equal(ids, np.tile(np.arange(6), (3, 1)))
        ids, _ = kernel_topk(topk_kernel, Q, Y, None, 6, candidates=np.arange(n_items)[::-1],
                             block_items=block_items)
        np.testing.assert_array_equal(ids, np.tile(np.arange(6), (3, 1)))


@pytest.mark.parametrize("dtype, atol", [(np.float32, 1e-4), (np.float64, 1e-10)])
def test_recommend_fitted_model_with_filters(dtype, atol):
    """Continuous scores from a real fit, checked with tolerance (no exact ties expected)."""
    rng = np.random.default_rng(3)
    R = sp.csr_matrix((rng.random((60, 45)) < 0.15).astype(np.float64))
    model = ALS(factors=6, iterations=3, dtype=dtype, random_state=0, num_threads=2).fit(R)
    U = model.user_factors_.astype(np.float64)
    V = model.item_factors_.astype(np.float64)
    full = U @ V.T
    exclude, candidates = [3, 3, 10, 44], rng.choice(45, 25, replace=False)
    for n, cands in itertools.product((1, 10, 45), (None, candidates)):
        ids, scores = model.recommend(np.arange(60), n=n, exclude=exclude, candidates=cands)
        assert scores.dtype == dtype
        eligible = eligible_mask(60, 45, seen_sets(R, 60), exclude, cands)
        pool = 45 if cands is None else len(cands)
        assert_topk_valid(ids, scores, full, eligible, min(n, pool), atol)


# ------------------------------------------------------------- hypothesis
@st.composite
def serving_problems(draw):
    n_users = draw(st.integers(1, 6))
    n_items = draw(st.integers(1, 8))
    f = draw(st.integers(1, 3))
    ints = st.integers(-2, 2)
    Q = np.array(draw(st.lists(st.lists(ints, min_size=f, max_size=f), min_size=n_users, max_size=n_users)), float)
    Y = np.array(draw(st.lists(st.lists(ints, min_size=f, max_size=f), min_size=n_items, max_size=n_items)), float)
    item = st.integers(0, n_items - 1)
    seen = draw(st.lists(st.one_of(st.just(list(range(n_items))), st.lists(item, max_size=n_items)),
                         min_size=n_users, max_size=n_users))
    exclude = draw(st.one_of(st.none(), st.lists(item, max_size=2 * n_items)))
    candidates = draw(st.one_of(st.none(), st.lists(item, max_size=2 * n_items)))
    bias = draw(st.one_of(st.none(), st.lists(ints, min_size=n_items, max_size=n_items)))
    n = draw(st.integers(0, n_items + 3))
    dtype = draw(st.sampled_from(DTYPES))
    return Q, Y, None if bias is None else np.array(bias, float), seen, exclude, candidates, n, dtype


def _seen_matrix(seen, n_items):
    rows = [u for u, items in enumerate(seen) for _ in items]
    cols = [i for items in seen for i in items]
    csr = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(seen), n_items))
    csr.data[:] = 1.0  # duplicates were summed; keep one stored value per pair
    return csr


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(serving_problems(), st.sampled_from([1, 2]))
def test_recommend_property(problem, threads):
    Q, Y, bias, seen, exclude, candidates, n, dtype = problem
    n_users, n_items = Q.shape[0], Y.shape[0]
    seen_csr = _seen_matrix(seen, n_items)
    model = model_with(Q, Y, bias, seen_csr, num_threads=threads, dtype=dtype)
    want = topk_reference(Q, Y.astype(dtype), bias, n, seen=seen, exclude=exclude, candidates=candidates)
    got = model.recommend(np.arange(n_users), n=n, exclude=exclude, candidates=candidates)
    assert_same(got, want)
    for u in range(n_users):
        valid = want[0][u] >= 0
        assert_same(model.recommend(u, n=n, exclude=exclude, candidates=candidates),
                    (want[0][u][valid], want[1][u][valid]))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.sampled_from(["users", "exclude", "candidates"]),
       st.lists(st.integers(-4, 10), min_size=1, max_size=5), st.booleans())
def test_out_of_range_ids_raise(n_users, n_items, argument, ids, scalar):
    model = model_with(np.ones((n_users, 2)), np.ones((n_items, 2)))
    value = ids[0] if scalar else ids
    limit = n_users if argument == "users" else n_items
    bad = any(i < 0 or i >= limit for i in (np.atleast_1d(value)))
    kwargs = {"users": 0, argument: value}
    if bad:
        with pytest.raises(IndexError, match=argument):
            model.recommend(n=3, **kwargs)
    else:
        ids_out, scores = model.recommend(n=3, **kwargs)
        assert ids_out.dtype == np.int32 and scores.shape == ids_out.shape


def test_bad_recommend_arguments():
    model = model_with(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="n must be"):
        model.recommend(0, n=-1)
    with pytest.raises(TypeError, match="n must be"):
        model.recommend(0, n=2.5)
    with pytest.raises(TypeError, match="users"):
        model.recommend(0.5)
    with pytest.raises(TypeError, match="users"):
        model.recommend(["a"])
    with pytest.raises(ValueError, match="users"):
        model.recommend([[0, 1]])
    with pytest.raises(TypeError, match="exclude"):
        model.recommend(0, exclude=[True, False])
    with pytest.raises(ValueError, match="users is required"):
        model.recommend()


def test_empty_batches_and_empty_candidates():
    model = model_with(np.ones((3, 2)), np.ones((4, 2)))
    ids, scores = model.recommend([], n=3)
    assert ids.shape == scores.shape == (0, 3) and ids.dtype == np.int32
    ids, scores = model.recommend([0, 1], n=3, candidates=[])
    assert ids.shape == (2, 0)
    ids, scores = model.recommend(0, n=3, candidates=[])
    assert ids.shape == scores.shape == (0,)
    ids, scores = model.recommend(0, n=0)
    assert ids.shape == scores.shape == (0,)
