"""Top-K stays exact when the best items sort late in the norm-ordered index.

The kernel scans items by decreasing norm, one block at a time (512 items per
block for a batch of queries, 256 for a single query), and a query stops once
its k-th best score beats a bound on every remaining score.  On trained-like
factors the true top-K sits in the first block, so a bound that is too tight
goes unnoticed there.  Here the data hides the best items at the end:

* "decoys": many items with large norms (a big component orthogonal to the
  queries) whose scores come just short of the best;
* "gems": items with small norms whose scores are the highest, and the
  higher the score the smaller the norm, so the very best sort last.

Every query's k-th best after the first block is within a few percent of the
true maximum, so even a 10% error in the bound changes the answer; the guard
test checks this with a NumPy model of the kernel's stopping rule.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastrec
from fastrec.kernels.topk import _BLOCK_ITEMS, _BLOCK_ITEMS_ONE, RankingIndex
from fastrec.models.state import FittedState
from reference import assert_topk_valid, eligible_mask, seen_sets, topk_reference

BATCH_BLOCK = _BLOCK_ITEMS  # items per block for several queries
SINGLE_BLOCK = _BLOCK_ITEMS_ONE  # items per block for one query
F = 16


def hidden_best(n_users: int, n_decoys: int, n_gems: int, seed: int, dtype=np.float64,
                with_bias: bool = False, eps: float = 0.005):
    """(U, Y, bias) whose best items have the smallest norms; item ids are shuffled.

    In a random orthonormal basis (e, query noise dims, item perp dims) the
    queries are s*(e + eps*noise), and (with s = 1) the scores are:

    * no bias: decoys c*e + r*perp score c in [0.97, 1] with r in [0.6, 1];
      gems score c in [1, 1.04], and their norm falls from 1.10 to 1.06 as c
      rises (the rest of the norm is orthogonal to every query);
    * with bias (the bound then charges |bias| and |perp| at the query's full
      weight, so the gems have no perp part): decoys c*e + r*perp with bias b
      score c + b in [1.24, 1.26]; gems c*e with bias b score t = c + b in
      [1.26, 1.30] with c^2 + b^2 falling from 1.10^2 to 1.06^2 as t rises.
    """
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((F, F)))[0].T
    e, query_dims, item_dims = basis[0], basis[1:F // 2], basis[F // 2:]

    def unit_in(dims, count):
        w = rng.standard_normal((count, dims.shape[0]))
        return (w / np.linalg.norm(w, axis=1, keepdims=True)) @ dims

    scale = np.ones((n_users, 1)) if with_bias else rng.uniform(0.8, 1.25, size=(n_users, 1))
    U = scale * (e + eps * rng.standard_normal((n_users, query_dims.shape[0])) @ query_dims)
    decoy_perp = rng.uniform(0.6, 1.0, (n_decoys, 1)) * unit_in(item_dims, n_decoys)
    if with_bias:
        b_decoy = rng.uniform(0.24, 0.26, n_decoys)
        decoys = 1.0 * e + decoy_perp
        t = rng.uniform(1.26, 1.30, n_gems)
        norm = 1.10 - (t - 1.26)
        root = np.sqrt(2 * norm ** 2 - t ** 2)
        c_gem, b_gem = (t + root) / 2, (t - root) / 2
        gems = c_gem[:, None] * e
        bias = np.concatenate([b_decoy, b_gem])
    else:
        decoys = rng.uniform(0.97, 1.0, (n_decoys, 1)) * e + decoy_perp
        c_gem = rng.uniform(1.0, 1.04, n_gems)
        norm = 1.10 - (c_gem - 1.0)
        gems = c_gem[:, None] * e + np.sqrt(norm ** 2 - c_gem ** 2)[:, None] * unit_in(item_dims, n_gems)
        bias = None
    perm = rng.permutation(n_decoys + n_gems)
    Y = np.vstack([decoys, gems])[perm]
    if bias is not None:
        bias = bias[perm].astype(dtype)
    return U.astype(dtype), Y.astype(dtype), bias


def model_with(U, Y, seen=None, bias=None, threads=2):
    model = fastrec.ALS(factors=U.shape[1], num_threads=threads, dtype=U.dtype)
    if seen is None:
        seen = sp.csr_matrix((U.shape[0], Y.shape[0]), dtype=U.dtype)
    model._state = FittedState(U, Y, sp.csr_matrix(seen, dtype=U.dtype), bias)
    return model


def full_scores(U, Y, bias):
    scores = U.astype(np.float64) @ Y.T.astype(np.float64)
    return scores if bias is None else scores + bias.astype(np.float64)


def tolerance(U, Y, bias):
    eps = 2e-6 if U.dtype == np.float32 else 1e-12
    return eps * max(1.0, float(np.abs(full_scores(U, Y, bias)).max()))


def check(model, users, n, U, Y, bias, seen=None, exclude=None, candidates=None, **kwargs):
    """recommend(users, ...) must agree with a brute-force top-n (near-ties within tolerance)."""
    ids, scores = model.recommend(users, n=n, exclude=exclude, candidates=candidates, **kwargs)
    users = np.atleast_1d(users)
    if ids.ndim == 1:  # a single user: unpadded 1-D arrays
        k = ids.size
        pad = min(n, Y.shape[0] if candidates is None else np.unique(candidates).size) - k
        ids = np.concatenate([ids, np.full(pad, -1, np.int32)])[None]
        scores = np.concatenate([scores, np.full(pad, -np.inf, scores.dtype)])[None]
    full = full_scores(U[users], Y, bias)
    if not kwargs.get("exclude_seen", True):
        seen = None
    ref_seen = None if seen is None else sp.csr_matrix(seen)[users]
    ok = eligible_mask(users.size, Y.shape[0], seen_sets(ref_seen, users.size), exclude, candidates)
    k = min(n, Y.shape[0] if candidates is None else np.unique(candidates).size)
    assert_topk_valid(ids, scores, full, ok, k, atol=tolerance(U, Y, bias))
    if U.dtype == np.float64:  # no near-ties at this precision: the exact reference answer
        ref_ids, _ = topk_reference(U[users], Y, bias, n, seen=ref_seen, exclude=exclude,
                                    candidates=candidates)
        np.testing.assert_array_equal(ids, ref_ids)
    return ids


# ------------------------------------------------------------- the guard
def simulated_topk(U, Y, bias, k, block, factor, eligible=None):
    """A NumPy model of the kernel's early stop with the bound scaled by ``factor``.

    Returns each query's sorted top-k ids (by score, then id) among the items
    scanned before it stops.
    """
    index = RankingIndex.build(Y, bias)
    order = index.order.astype(np.int64)
    scores = full_scores(U, Y, bias)[:, order]
    ok = np.ones_like(scores, dtype=bool) if eligible is None else eligible[:, order]
    Q = U.astype(np.float64)
    a = Q @ index.direction.astype(np.float64)
    p = np.sqrt(np.maximum((Q * Q).sum(1) + (bias is not None) - a * a, 0.0))
    suffix = index.suffix_bounds.astype(np.float64)
    out = []
    for u in range(U.shape[0]):
        stop = Y.shape[0]
        for i0 in range(block, Y.shape[0], block):
            seen_scores = scores[u, :i0][ok[u, :i0]]
            if seen_scores.size < k:
                continue
            kth = np.sort(seen_scores)[-k]
            hi, lo = a[u] * suffix[i0, 0], a[u] * suffix[i0, 1]
            bound = max(hi, lo) + p[u] * suffix[i0, 2]
            if kth > factor * bound + 1e-4 * (abs(hi) + abs(lo) + p[u] * suffix[i0, 2]):
                stop = i0
                break
        pos = np.flatnonzero(ok[u, :stop])
        ids = order[pos]
        best = np.lexsort((ids, -scores[u, pos]))[:k]
        out.append(ids[best])
    return out


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("block", [BATCH_BLOCK, SINGLE_BLOCK])
def test_guard_the_data_needs_an_exact_bound(with_bias, block):
    """The true top-k lies past the first block, the exact bound finds it, a 10% tighter one does not."""
    U, Y, bias = hidden_best(40, 1500, 2000, seed=11, with_bias=with_bias)
    k = 10
    ref_ids, _ = topk_reference(U, Y, bias, k)
    position = np.argsort(RankingIndex.build(Y, bias).order)  # item id -> place in the scan
    assert np.all(position[ref_ids] >= block), "the best items must all sort past the first block"
    exact = simulated_topk(U, Y, bias, k, block, factor=1.0)
    assert all(np.array_equal(got, want) for got, want in zip(exact, ref_ids))
    tight = simulated_topk(U, Y, bias, k, block, factor=0.9)
    wrong = sum(not np.array_equal(got, want) for got, want in zip(tight, ref_ids))
    assert wrong == U.shape[0], f"a 10% tighter bound must break every query, broke {wrong}"


# ------------------------------------------------------------ hand-made cases
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_batch_finds_items_past_the_first_block(dtype, with_bias, threads):
    U, Y, bias = hidden_best(150, 1500, 2500, seed=1, dtype=dtype, with_bias=with_bias)
    model = model_with(U, Y, bias=bias, threads=threads)
    for n in (1, 10, 40):
        check(model, np.arange(150), n, U, Y, bias)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_bias", [False, True])
def test_single_query_finds_items_past_the_first_block(dtype, with_bias):
    U, Y, bias = hidden_best(6, 700, 900, seed=2, dtype=dtype, with_bias=with_bias)
    model = model_with(U, Y, bias=bias)
    for u in range(6):
        for n in (1, 5, 25):
            check(model, u, n, U, Y, bias)            # scalar: 1-D answer
            check(model, np.array([u]), n, U, Y, bias)  # a batch of one takes the same path


@pytest.mark.parametrize("dtype, threads", [(np.float32, 2), (np.float64, 1)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_filters_with_items_past_the_first_block(dtype, with_bias, threads):
    n_users, n_decoys, n_gems = 70, 1300, 2200
    U, Y, bias = hidden_best(n_users, n_decoys, n_gems, seed=3, dtype=dtype, with_bias=with_bias)
    n_items = Y.shape[0]
    ref_ids, _ = topk_reference(U, Y, bias, 30)
    # seen rows knock out part of each user's own best items (and some random ones)
    rng = np.random.default_rng(4)
    rows, cols = [], []
    for u in range(n_users):
        mine = np.concatenate([ref_ids[u, rng.random(30) < 0.5], rng.choice(n_items, 20, replace=False)])
        rows.append(np.full(mine.size, u))
        cols.append(mine)
    seen = sp.csr_matrix((np.ones(sum(map(len, cols)), dtype=dtype),
                          (np.concatenate(rows), np.concatenate(cols))), shape=(n_users, n_items))
    exclude = np.unique(ref_ids[:, :3])  # the overall favourites, for everyone
    candidates = np.unique(np.concatenate([ref_ids[:, ::2].ravel(), rng.choice(n_items, 400)]))
    model = model_with(U, Y, seen=seen, bias=bias, threads=threads)
    users = np.arange(n_users)
    check(model, users, 10, U, Y, bias, seen=seen)
    check(model, users, 10, U, Y, bias, seen=seen, exclude=exclude)
    check(model, users, 10, U, Y, bias, seen=seen, exclude=exclude, candidates=candidates)
    check(model, users, 10, U, Y, bias, exclude=exclude, exclude_seen=False)
    check(model, users, 10, U, Y, bias, candidates=candidates, exclude_seen=False)
    for u in (0, 57):  # one query at a time
        check(model, u, 10, U, Y, bias, seen=seen, exclude=exclude)
        check(model, u, 10, U, Y, bias, seen=seen, candidates=candidates)


def test_stored_users_with_X_find_items_past_the_first_block():
    """recommend(users, X=...) ranks the stored factors with the pruned kernel too."""
    U, Y, bias = hidden_best(80, 1500, 2000, seed=5)
    model = model_with(U, Y, bias=bias)
    X = sp.random(80, Y.shape[0], density=0.002, random_state=6, format="csr")
    ids, _ = model.recommend(np.arange(80), n=10, X=X)
    ref_ids, _ = topk_reference(U, Y, bias, 10, seen=X)
    np.testing.assert_array_equal(ids, ref_ids)


# ------------------------------------------------------------------- property
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), n_users=st.sampled_from([1, 2, 70]),
       n_decoys=st.integers(300, 2200), n_gems=st.integers(30, 1500), n=st.integers(1, 30),
       dtype=st.sampled_from([np.float32, np.float64]), with_bias=st.booleans(),
       threads=st.sampled_from([1, 2]), seen_density=st.sampled_from([0.0, 0.01]),
       n_exclude=st.sampled_from([0, 5, 50]))
def test_exact_on_hidden_best_items(seed, n_users, n_decoys, n_gems, n, dtype, with_bias, threads,
                                    seen_density, n_exclude):
    U, Y, bias = hidden_best(n_users, n_decoys, n_gems, seed, dtype=dtype, with_bias=with_bias)
    n_items = Y.shape[0]
    rng = np.random.default_rng(seed)
    seen = sp.random(n_users, n_items, density=seen_density, random_state=seed, format="csr", dtype=dtype)
    exclude = rng.choice(n_items, n_exclude, replace=False) if n_exclude else None
    model = model_with(U, Y, seen=seen, bias=bias, threads=threads)
    users = np.arange(n_users)
    check(model, users, n, U, Y, bias, seen=seen, exclude=exclude)
    check(model, int(rng.integers(n_users)) if n_users else 0, n, U, Y, bias, seen=seen, exclude=exclude)
