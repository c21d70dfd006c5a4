"""The single-query top-K from int8 item codes (``topk_one``) returns exactly what a full scan does.

The kernel scans int8 copies of the rows with an int16 copy of the query and
computes the exact float32 score only of items whose upper bound reaches the
k-th best so far.  The reference scores every item with the same float32 dot
(``pair_scores``), applies the filters and sorts by (score desc, id asc), so
ids and scores must match bit for bit, on every compiled build.  The data is
adversarial: integer factors (exact ties, equal norms), duplicated rows,
rows whose scores differ by less than the int8 rounding,
negative and zero queries, zero rows, biases, seen and excluded items, and
k beyond the eligible count.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastrec.kernels.topk import RankingIndex, compact_rows, top_k

E32 = np.empty(0, np.float32)
EI = np.empty(0, np.int32)
EU = np.empty(0, np.uint8)


def full_scan(kernel, q, Y, bias, seen, mask, k):
    """Every item scored with the kernel's own dot, filtered, sorted by (score desc, id asc)."""
    n = Y.shape[0]
    scores = np.empty(n, np.float32)
    kernel.pair_scores(q[None, :], Y, E32 if bias is None else bias, np.zeros(n, np.int32),
                       np.arange(n, dtype=np.int32), scores, 1)
    ok = np.ones(n, bool)
    ok[seen] = False
    if mask.size:
        ok &= mask == 0
    ids = np.flatnonzero(ok)
    ids = ids[np.lexsort((ids, -scores[ids]))][:k]
    out_ids = np.full(k, -1, np.int32)
    out_scores = np.full(k, -np.inf, np.float32)
    out_ids[:ids.size], out_scores[:ids.size] = ids, scores[ids]
    return out_ids, out_scores


def run_compact(kernel, q, Y, bias, seen, mask, k, block):
    index = RankingIndex.build(Y, bias)
    ids = np.empty(k, np.int32)
    scores = np.empty(k, np.float32)
    kernel.topk_one(q, index.factors, E32 if bias is None else index.bias, *index.compact(),
                    np.sort(seen).astype(np.int32), mask, index.order, ids, scores,
                    index.direction, index.suffix_bounds, block_items=block)
    return ids, scores


@st.composite
def cases(draw):
    n = draw(st.integers(1, 120))
    f = draw(st.sampled_from([1, 3, 8, 16, 21, 40, 64]))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["integer", "normal", "duplicates", "popular", "close"]))
    if kind == "close":  # scores closer together than the int8 rounding: the bound must carry it
        Y = (rng.standard_normal(f) + 1e-3 * rng.standard_normal((n, f))).astype(np.float32)
        q = rng.standard_normal(f).astype(np.float32)
    elif kind == "integer":  # exact products: many exact ties and equal norms
        Y = rng.integers(-3, 4, (n, f)).astype(np.float32)
        q = rng.integers(-2, 3, f).astype(np.float32)
    elif kind == "duplicates":  # a few distinct rows repeated, some zero rows
        base = rng.standard_normal((max(1, n // 8), f)).astype(np.float32)
        Y = base[rng.integers(0, base.shape[0], n)]
        Y[rng.random(n) < 0.1] = 0
        q = rng.standard_normal(f).astype(np.float32)
    elif kind == "popular":  # a shared direction, so the norm bound prunes
        e = rng.standard_normal(f)
        Y = (rng.pareto(1.5, (n, 1)) * (3 * e + rng.standard_normal((n, f)))).astype(np.float32)
        q = (e + 0.3 * rng.standard_normal(f)).astype(np.float32)
    else:
        Y = (rng.standard_normal((n, f)) * rng.uniform(0.01, 100)).astype(np.float32)
        q = rng.standard_normal(f).astype(np.float32)
    q *= draw(st.sampled_from([1.0, -1.0, 0.0, 1e-3, 1e3]))
    bias = None
    if draw(st.booleans()):
        bias = rng.integers(-3, 4, n).astype(np.float32) if kind == "integer" else \
            rng.standard_normal(n).astype(np.float32)
    seen = rng.choice(n, size=draw(st.integers(0, n)), replace=False).astype(np.int32)
    mask = (rng.random(n) < 0.2).astype(np.uint8) if draw(st.booleans()) else EU
    k = draw(st.integers(1, n + 3))
    block = draw(st.sampled_from([4, 8, 64, 256]))
    return q, Y, bias, seen, mask, k, block


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases())
def test_compact_scan_equals_full_scan(topk_kernel, case):
    q, Y, bias, seen, mask, k, block = case
    got_ids, got_scores = run_compact(topk_kernel, q, Y, bias, seen, mask, k, block)
    want_ids, want_scores = full_scan(topk_kernel, q, Y, bias, seen, mask, k)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_array_equal(got_scores, want_scores)


@pytest.mark.parametrize("with_bias", [False, True])
def test_compact_on_trained_like_factors_prunes_and_stays_exact(topk_kernel, with_bias):
    """Many items, a strong shared direction: the bound fires, answers equal the full scan."""
    rng = np.random.default_rng(3)
    n, f = 5000, 32
    e = rng.standard_normal(f)
    Y = ((1 / np.arange(1, n + 1) ** 0.8)[:, None] * (4 * e + rng.standard_normal((n, f)))).astype(np.float32)
    Y = Y[rng.permutation(n)]
    bias = rng.standard_normal(n).astype(np.float32) * 0.1 if with_bias else None
    for u in range(20):
        q = (e + 0.3 * rng.standard_normal(f)).astype(np.float32)
        seen = rng.choice(n, 30, replace=False).astype(np.int32)
        got = run_compact(topk_kernel, q, Y, bias, seen, EU, 10, 256)
        want = full_scan(topk_kernel, q, Y, bias, seen, EU, 10)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_code_error_bounds_the_residual():
    rng = np.random.default_rng(0)
    Y = (rng.standard_normal((300, 24)) * rng.uniform(1e-3, 1e3, (300, 1))).astype(np.float32)
    Y[5] = 0
    codes, scale, err = compact_rows(Y, np.linalg.norm(Y.astype(np.float64), axis=1))
    assert codes.dtype == np.int8 and np.abs(codes.astype(int)).max() <= 127
    resid = np.linalg.norm(Y.astype(np.float64) - scale.astype(np.float64)[:, None] * codes, axis=1)
    assert np.all(resid <= err)
    assert np.all(err <= 0.01 * np.linalg.norm(Y, axis=1) + 1e-30)  # tight enough to prune on
    assert scale[5] == 0 and err[5] == 0 and not codes[5].any()


def test_top_k_takes_the_compact_path_for_one_query_only_in_float32():
    rng = np.random.default_rng(1)
    Y = rng.standard_normal((50, 8))
    index64 = RankingIndex.build(Y, None)
    assert index64.compact() is None  # float64 models keep the float scan
    index32 = RankingIndex.build(Y.astype(np.float32), None)
    assert not index32._compact  # built on the first single query, not with the index
    codes = index32.compact()[0]
    assert codes.dtype == np.int8 and codes.shape == (50, 8)
    assert index32.compact()[0] is codes  # kept
    q = rng.standard_normal((1, 8)).astype(np.float32)
    ids, scores = top_k(q, Y.astype(np.float32), None, 5, index=index32)
    plain_ids, plain_scores = top_k(q, Y.astype(np.float32), None, 5)
    np.testing.assert_array_equal(ids, plain_ids)
    np.testing.assert_allclose(scores, plain_scores, rtol=1e-5)


def test_scores_closer_than_the_int8_rounding_stay_exact(topk_kernel):
    """Items whose scores differ by less than the codes' error: the ranking comes from the exact rescoring."""
    rng = np.random.default_rng(4)
    n, f = 400, 64
    Y = (rng.standard_normal(f) + 1e-3 * rng.standard_normal((n, f))).astype(np.float32)
    for _ in range(20):
        q = rng.standard_normal(f).astype(np.float32)
        got = run_compact(topk_kernel, q, Y, None, EI, EU, 10, 64)
        want = full_scan(topk_kernel, q, Y, None, EI, EU, 10)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
