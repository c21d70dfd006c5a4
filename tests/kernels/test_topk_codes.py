"""The batch top-K from 7-bit item codes (``topk_codes``) returns exactly what a full scan does.

The kernel computes integer dots of 8-bit query codes with 7-bit item codes
(VNNI ``vpdpbusd``, or ``vpmaddubsw``, or scalar C on the baseline build),
turns them into upper bounds, and scores in float32 only the items whose
bound reaches a query's k-th best so far.  The reference scores every item
with the same float32 dot (``pair_scores``), applies the filters and sorts by
(score desc, id asc), so ids and scores must match bit for bit, on every
build, with and without VNNI, at 1 and 2 threads.  The data is adversarial:
integer factors (exact ties, equal norms), duplicated and zero rows, scores
closer together than the codes' rounding, negative and zero queries, biases,
seen and excluded items, k beyond the eligible count, and sizes that are not
multiples of the 16-row groups, the 4-factor quads or the 8-query tiles.
With 29 factors or more, the AVX2 build first bounds each (query, 16 rows)
by the head of the factors and skips the tail where the bound cannot reach.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastrec.kernels import _cpu_features
from fastrec.kernels import topk as topk_module
from fastrec.kernels.topk import RankingIndex, packed_codes, top_k

E32 = np.empty(0, np.float32)
EU = np.empty(0, np.uint8)
HAS_VNNI = bool(_cpu_features().get("AVX512VNNI"))


def full_scan(kernel, Q, Y, bias, seen_rows, mask, k):
    """Every (query, item) scored with the kernel's own dot, filtered, sorted by (score desc, id asc)."""
    m, n = Q.shape[0], Y.shape[0]
    out_ids = np.full((m, k), -1, np.int32)
    out_scores = np.full((m, k), -np.inf, np.float32)
    for u in range(m):
        scores = np.empty(n, np.float32)
        kernel.pair_scores(Q[u:u + 1], Y, E32 if bias is None else bias, np.zeros(n, np.int32),
                           np.arange(n, dtype=np.int32), scores, 1)
        ok = np.ones(n, bool)
        ok[seen_rows[u]] = False
        if mask.size:
            ok &= mask == 0
        ids = np.flatnonzero(ok)
        ids = ids[np.lexsort((ids, -scores[ids]))][:k]
        out_ids[u, :ids.size], out_scores[u, :ids.size] = ids, scores[ids]
    return out_ids, out_scores


def run_codes(kernel, Q, Y, bias, seen_rows, mask, k, block_users, block_items, threads, vnni, split=1):
    index = RankingIndex.build(Y, bias)
    packed = packed_codes(index.factors, index.bias)
    indptr = np.zeros(len(seen_rows) + 1, np.int64)
    np.cumsum([len(r) for r in seen_rows], out=indptr[1:])
    indices = np.concatenate([np.sort(r) for r in seen_rows]).astype(np.int32) if seen_rows else np.empty(0, np.int32)
    ids = np.empty((max(Q.shape[0], split), k), np.int32)
    scores = np.empty((max(Q.shape[0], split), k), np.float32)
    kernel.topk_codes(Q, index.factors, packed.bias, packed.codes, packed.scale, packed.corr, packed.err,
                      packed.norm, indptr, indices, index.positions(), mask, index.order, ids, scores, threads,
                      index.direction, index.suffix_bounds, block_users=block_users, block_items=block_items,
                      vnni=vnni, split=split, code_corr_head=packed.corr_head, code_tail=packed.tail,
                      head_quads=packed.head_quads)
    return ids[:Q.shape[0]], scores[:Q.shape[0]]


VNNI_CHOICES = [False, True] if HAS_VNNI else [False]


@st.composite
def cases(draw):
    n = draw(st.integers(1, 150))
    m = draw(st.integers(1, 20))
    f = draw(st.sampled_from([1, 3, 4, 8, 13, 16, 21, 33, 40, 64, 128]))  # from 29: a head and a tail
    seed = draw(st.integers(0, 2 ** 31 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["integer", "normal", "duplicates", "popular", "close"]))
    if kind == "close":  # scores closer together than the codes' rounding: the bound must carry it
        Y = (rng.standard_normal(f) + 1e-3 * rng.standard_normal((n, f))).astype(np.float32)
        Q = rng.standard_normal((m, f)).astype(np.float32)
    elif kind == "integer":  # exact products: many exact ties and equal norms
        Y = rng.integers(-3, 4, (n, f)).astype(np.float32)
        Q = rng.integers(-2, 3, (m, f)).astype(np.float32)
    elif kind == "duplicates":  # a few distinct rows repeated, some zero rows
        base = rng.standard_normal((max(1, n // 8), f)).astype(np.float32)
        Y = base[rng.integers(0, base.shape[0], n)]
        Y[rng.random(n) < 0.1] = 0
        Q = rng.standard_normal((m, f)).astype(np.float32)
    elif kind == "popular":  # a shared direction, so the norm bound prunes
        e = rng.standard_normal(f)
        Y = (rng.pareto(1.5, (n, 1)) * (3 * e + rng.standard_normal((n, f)))).astype(np.float32)
        Q = (e + 0.3 * rng.standard_normal((m, f))).astype(np.float32)
    else:
        Y = (rng.standard_normal((n, f)) * rng.uniform(0.01, 100)).astype(np.float32)
        Q = rng.standard_normal((m, f)).astype(np.float32)
    Q *= np.array(draw(st.lists(st.sampled_from([1.0, -1.0, 0.0, 1e-3, 1e3]), min_size=m, max_size=m)),
                  np.float32)[:, None]
    bias = None
    if draw(st.booleans()):
        bias = rng.integers(-3, 4, n).astype(np.float32) if kind == "integer" else \
            rng.standard_normal(n).astype(np.float32)
    seen_rows = [rng.choice(n, size=int(rng.integers(0, n + 1)), replace=False).astype(np.int32)
                 for _ in range(m)]
    mask = (rng.random(n) < 0.2).astype(np.uint8) if draw(st.booleans()) else EU
    k = draw(st.integers(1, n + 3))
    block_users = draw(st.sampled_from([1, 3, 8, 9, 64]))
    block_items = draw(st.sampled_from([32, 64, 512]))
    return Q, Y, bias, seen_rows, mask, k, block_users, block_items


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases(), threads=st.sampled_from([1, 2]), vnni=st.sampled_from(VNNI_CHOICES))
def test_codes_scan_equals_full_scan(topk_kernel, case, threads, vnni):
    Q, Y, bias, seen_rows, mask, k, block_users, block_items = case
    got_ids, got_scores = run_codes(topk_kernel, Q, Y, bias, seen_rows, mask, k, block_users, block_items,
                                    threads, vnni)
    want_ids, want_scores = full_scan(topk_kernel, Q, Y, bias, seen_rows, mask, k)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_array_equal(got_scores, want_scores)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases(), split=st.integers(2, 5), threads=st.sampled_from([1, 2]), vnni=st.sampled_from(VNNI_CHOICES))
def test_one_query_split_over_threads_equals_full_scan(topk_kernel, case, split, threads, vnni):
    """One query whose item blocks are dealt to several threads: the merged rows are the full scan's."""
    Q, Y, bias, seen_rows, mask, k, _, block_items = case
    got_ids, got_scores = run_codes(topk_kernel, Q[:1], Y, bias, seen_rows[:1], mask, k, 1, block_items,
                                    threads, vnni, split=split)
    want_ids, want_scores = full_scan(topk_kernel, Q[:1], Y, bias, seen_rows[:1], mask, k)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_array_equal(got_scores, want_scores)


def test_split_needs_one_query(topk_kernel):
    rng = np.random.default_rng(0)
    Y = rng.standard_normal((64, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="split"):
        run_codes(topk_kernel, Y[:2], Y, None, [np.empty(0, np.int32)] * 2, EU, 3, 1, 32, 1, False, split=2)


@pytest.mark.parametrize("vnni", VNNI_CHOICES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_codes_on_trained_like_factors_stay_exact(topk_kernel, with_bias, vnni):
    """Many items and queries, a strong shared direction, 128 factors: answers equal the full scan."""
    rng = np.random.default_rng(3)
    n, f, m = 3000, 128, 40
    e = rng.standard_normal(f)
    Y = ((1 / np.arange(1, n + 1) ** 0.8)[:, None] * (4 * e + rng.standard_normal((n, f)))).astype(np.float32)
    Y = Y[rng.permutation(n)]
    bias = rng.standard_normal(n).astype(np.float32) * 0.1 if with_bias else None
    Q = (e + 0.3 * rng.standard_normal((m, f))).astype(np.float32)
    seen_rows = [rng.choice(n, 30, replace=False).astype(np.int32) for _ in range(m)]
    got = run_codes(topk_kernel, Q, Y, bias, seen_rows, EU, 10, 16, 512, 2, vnni)
    want = full_scan(topk_kernel, Q, Y, bias, seen_rows, EU, 10)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_packed_codes_bound_the_residual_and_never_saturate():
    rng = np.random.default_rng(0)
    n, f = 70, 13
    Y = (rng.standard_normal((n, f)) * rng.uniform(1e-3, 1e3, (n, 1))).astype(np.float32)
    Y[5] = 0
    bias = rng.standard_normal(n).astype(np.float32)
    packed = packed_codes(Y, bias)
    f4, n_pad = 4, 96
    groups = packed.codes.reshape(n_pad // 16, f4, 16, 4).transpose(0, 2, 1, 3).reshape(n_pad, 4 * f4)
    codes = groups[:n, :f].astype(np.int64)
    assert np.abs(groups).max() <= 63  # 2 * 255 * 63 < 32767: vpmaddubsw cannot saturate
    assert not groups[n:].any() and not groups[:, f:].any()  # zero padding
    resid = np.linalg.norm(Y.astype(np.float64) - packed.scale[:n, None].astype(np.float64) * codes, axis=1)
    assert np.all(resid <= packed.err[:n])
    assert np.all(packed.err[:n] <= 0.03 * packed.norm[:n] + 1e-30)  # tight enough to prune on
    norms = np.sqrt(np.square(Y.astype(np.float64)).sum(axis=1) + np.square(bias.astype(np.float64)))
    assert np.all(packed.norm[:n] >= norms)
    np.testing.assert_array_equal(packed.corr[:n], 128 * codes.sum(axis=1))
    np.testing.assert_array_equal(packed.bias[:n], bias)
    assert packed.scale[5] == 0 and not codes[5].any()  # a zero row: only its bias and the rounding term
    assert packed.err[5] <= 1e-5 * packed.norm[5]
    assert packed.head_quads == 0 and not packed.corr_head.any() and not packed.tail.any()  # 4 quads: no head


@pytest.mark.parametrize("f, head", [(28, 0), (29, 4), (40, 6), (64, 10), (128, 20), (130, 20)])
def test_packed_codes_head_correction_and_tail_norms(f, head):
    rng = np.random.default_rng(f)
    n = 50
    Y = (rng.standard_normal((n, f)) * rng.uniform(1e-2, 1e2, (n, 1))).astype(np.float32)
    packed = packed_codes(Y, None)
    f4, n_pad = -(-f // 4), 64
    assert packed.head_quads == head and head % 2 == 0
    codes = packed.codes.reshape(n_pad // 16, f4, 16, 4).transpose(0, 2, 1, 3).reshape(n_pad, 4 * f4)
    np.testing.assert_array_equal(packed.corr_head[:n], 128 * codes[:n, :4 * head].sum(axis=1, dtype=np.int64))
    tails = np.linalg.norm(Y[:, 4 * head:].astype(np.float64), axis=1) if head else np.zeros(n)
    assert np.all(packed.tail[:n] >= tails) and np.all(packed.tail[:n] <= tails * (1 + 1e-5) + 1e-30)
    assert not packed.tail[n:].any() and not packed.corr_head[n:].any()


def test_top_k_batches_take_the_codes_path_on_vector_builds(monkeypatch):
    """A float32 batch with a ranking index goes through topk_codes (on AVX2/AVX-512 builds), and agrees
    with the float path it replaced."""
    rng = np.random.default_rng(1)
    Y = rng.standard_normal((300, 24)).astype(np.float32)
    Q = rng.standard_normal((50, 24)).astype(np.float32)
    index = RankingIndex.build(Y, None)
    ids, scores = top_k(Q, Y, None, 7, index=index)
    if topk_module.kernel_variant() in ("avx2", "avx512"):
        assert "packed" in index._compact and index._compact["packed"] is not None
    else:
        assert "packed" not in index._compact
    monkeypatch.setattr(topk_module, "_codes_pay", lambda rows: False)
    float_ids, float_scores = top_k(Q, Y, None, 7, index=index)
    np.testing.assert_array_equal(ids, float_ids)
    np.testing.assert_allclose(scores, float_scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("vnni", VNNI_CHOICES)
def test_scores_closer_than_the_codes_rounding_stay_exact(topk_kernel, vnni):
    """Items whose scores differ by less than the codes' error: the ranking comes from the exact rescoring."""
    rng = np.random.default_rng(4)
    n, f, m = 400, 64, 20
    Y = (rng.standard_normal(f) + 1e-3 * rng.standard_normal((n, f))).astype(np.float32)
    Q = rng.standard_normal((m, f)).astype(np.float32)
    no_seen = [np.empty(0, np.int32)] * m
    got = run_codes(topk_kernel, Q, Y, None, no_seen, EU, 10, 8, 64, 1, vnni)
    want = full_scan(topk_kernel, Q, Y, None, no_seen, EU, 10)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("with_bias", [False, True])
def test_index_with_items_keeps_exact_answers(topk_kernel, with_bias):
    """A partial fit patches the index in place of a rebuild: rows keep their places, the bounds are
    recomputed over the rows as they are (an item made huge, one made zero, one flipped), and the
    packed codes of the changed rows equal a fresh packing; answers equal the full scan."""
    rng = np.random.default_rng(7)
    n, f, m = 300, 40, 25  # 40 factors: a head of 24 and a tail
    Y = (rng.standard_normal((n, f)) * rng.uniform(0.1, 2, (n, 1))).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
    index = RankingIndex.build(Y, bias)
    index.packed()  # built, so it is patched too
    Q = rng.standard_normal((m, f)).astype(np.float32)
    liked = Q.sum(axis=0) / np.linalg.norm(Q.sum(axis=0)) * 10 * np.linalg.norm(Y, axis=1).max()
    # the last row becomes everyone's favourite (the stale bounds would prune it away), the first
    # vanishes, one flips, one grows
    items = np.array([index.order[-1], index.order[0], index.order[150], index.order[40]], dtype=np.int32)
    vectors = np.stack([liked, np.zeros(f), -Y[items[2]], 3 * Y[items[3]]]).astype(np.float32)
    patched = index.with_items(items, vectors)
    Y2 = Y.copy()
    Y2[items] = vectors
    np.testing.assert_array_equal(patched.factors[patched.positions()], Y2)
    assert index.factors[index.positions()[items[0]]].tolist() == Y[items[0]].tolist()  # the old index unchanged
    fresh = packed_codes(patched.factors, patched.bias)
    got = patched.packed()
    assert got.head_quads == fresh.head_quads == 6
    for name in ("codes", "scale", "corr", "err", "norm", "bias", "corr_head", "tail"):
        np.testing.assert_array_equal(getattr(got, name), getattr(fresh, name))
    rebuilt_bounds = RankingIndex(patched.order, patched.factors, patched.bias, patched.direction,
                                  patched.suffix_bounds)
    assert rebuilt_bounds.suffix_bounds.shape == (n, 3)
    seen_rows = [rng.choice(n, 20, replace=False).astype(np.int32) for _ in range(m)]
    packed = patched.packed()
    ids = np.empty((m, 10), np.int32)
    scores = np.empty((m, 10), np.float32)
    indptr = np.zeros(m + 1, np.int64)
    np.cumsum([r.size for r in seen_rows], out=indptr[1:])
    topk_kernel.topk_codes(Q, patched.factors, packed.bias, packed.codes, packed.scale, packed.corr, packed.err,
                           packed.norm, indptr, np.concatenate([np.sort(r) for r in seen_rows]),
                           patched.positions(), EU, patched.order, ids, scores, 2, patched.direction,
                           patched.suffix_bounds, block_users=8, block_items=32, vnni=HAS_VNNI,
                           code_corr_head=packed.corr_head, code_tail=packed.tail, head_quads=packed.head_quads)
    want_ids, want_scores = full_scan(topk_kernel, Q, Y2, bias, seen_rows, EU, 10)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(scores, want_scores)


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("scale", [1e-21, 1e-25, 1e-30])
def test_tiny_queries_keep_their_orthogonal_bound(topk_kernel, scale, with_bias):
    """A query with |q| < 1e-19 (q.q underflows in float32): the pruning bound's |q_perp| must not
    become 0, or items off the dominant direction are pruned though they rank first (was: wrong ids)."""
    rng = np.random.default_rng(3)
    Y = rng.standard_normal((200, 8)).astype(np.float32)
    bias = rng.standard_normal(200).astype(np.float32) * np.float32(scale) if with_bias else None
    Q = (rng.standard_normal((3, 8)) * scale).astype(np.float32)
    seen = [np.array([], np.int32)] * 3
    want_ids, want_scores = full_scan(topk_kernel, Q, Y, bias, seen, EU, 5)
    for vnni in VNNI_CHOICES:  # the codes kernel
        got_ids, got_scores = run_codes(topk_kernel, Q, Y, bias, seen, EU, 5, 4, 32, 1, vnni)
        np.testing.assert_array_equal(got_ids, want_ids)
        np.testing.assert_array_equal(got_scores, want_scores)
    index = RankingIndex.build(Y, bias)  # the float kernel's pruning bound
    ids, scores = np.empty((3, 5), np.int32), np.empty((3, 5), np.float32)
    topk_kernel.topk(Q, index.factors, E32 if bias is None else index.bias, np.empty(0, np.int32),
                     np.empty(0, np.int32), EU, index.order, ids, scores, 1, block_users=1, block_items=32,
                     direction=index.direction, suffix_bounds=index.suffix_bounds)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6)  # its own dot: rounding may differ


@pytest.mark.parametrize("split", [2, 70])
def test_split_query_merges_long_answers_and_many_threads(topk_kernel, split):
    """k beyond 4,096 and more parts than 64 (a big n on a many-core server) merge like any other."""
    rng = np.random.default_rng(11)
    n, f, k = 5000, 6, 4500
    Y = rng.standard_normal((n, f)).astype(np.float32)
    q = rng.standard_normal((1, f)).astype(np.float32)
    seen = [rng.choice(n, 40, replace=False).astype(np.int32)]
    got = run_codes(topk_kernel, q, Y, None, seen, EU, k, 1, 64, 2, HAS_VNNI, split=split)
    want = full_scan(topk_kernel, q, Y, None, seen, EU, k)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def bound_scan(kernel, Q, Y, bias, seen_rows, block_items, vnni, wide, max_split):
    """A ``CodesScan`` over the codes of ``Y`` with the queries ``Q`` as its stored users."""
    index = RankingIndex.build(Y, bias)
    packed = packed_codes(index.factors, index.bias)
    indptr = np.zeros(len(seen_rows) + 1, np.int64 if wide else np.int32)
    np.cumsum([len(r) for r in seen_rows], out=indptr[1:])
    indices = np.concatenate([np.sort(r) for r in seen_rows]).astype(np.int32)
    return kernel.CodesScan(index.factors, packed.bias, packed.codes, packed.scale, packed.corr, packed.err,
                            packed.norm, index.positions(), index.order, index.direction, index.suffix_bounds,
                            Q, indptr, indices, block_items, vnni, max_split, packed.corr_head, packed.tail,
                            packed.head_quads)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases(), threads=st.sampled_from([1, 2]), vnni=st.sampled_from(VNNI_CHOICES),
       wide=st.booleans(), max_split=st.sampled_from([1, 4]))
def test_bound_codes_scan_equals_full_scan(topk_kernel, case, threads, vnni, wide, max_split):
    """``CodesScan``, the one-user serving path: a stored user (with and without its seen items) and a
    query vector with its seen row give the full scan's answer; split over threads too (``max_split`` 4)."""
    Q, Y, bias, seen_rows, _, k, _, block_items = case
    scan = bound_scan(topk_kernel, Q, Y, bias, seen_rows, block_items, vnni, wide, max_split)
    assert scan.n_users == Q.shape[0]
    want_ids, want_scores = full_scan(topk_kernel, Q, Y, bias, seen_rows, EU, k)
    open_ids, open_scores = full_scan(topk_kernel, Q, Y, bias, [np.empty(0, np.int32)] * Q.shape[0], EU, k)
    for u in range(Q.shape[0]):  # only the eligible items: the reference without its padding
        valid, open_valid = want_ids[u] >= 0, open_ids[u] >= 0
        ids, scores = scan.stored(u, k, True, threads)
        np.testing.assert_array_equal(ids, want_ids[u][valid])
        np.testing.assert_array_equal(scores, want_scores[u][valid])
        ids, scores = scan.stored(u, k, False, threads)
        np.testing.assert_array_equal(ids, open_ids[u][open_valid])
        np.testing.assert_array_equal(scores, open_scores[u][open_valid])
        ids, scores = scan.query(Q[u:u + 1].copy(), np.sort(seen_rows[u]).astype(np.int32), k, threads)
        np.testing.assert_array_equal(ids, want_ids[u][valid])
        np.testing.assert_array_equal(scores, want_scores[u][valid])
    assert scan.stored(0, 0, True, threads)[0].shape == (0,)


def test_bound_codes_scan_rejects_inconsistent_arrays(topk_kernel):
    rng = np.random.default_rng(3)
    Y = rng.standard_normal((40, 8)).astype(np.float32)
    Q = rng.standard_normal((5, 8)).astype(np.float32)
    seen = [np.array([1, 2], np.int32)] * 5
    scan = bound_scan(topk_kernel, Q, Y, None, seen, 32, False, False, 1)
    with pytest.raises(IndexError, match="user"):
        scan.stored(5, 3, True, 1)
    with pytest.raises(IndexError, match="user"):
        scan.stored(-1, 3, True, 1)
    with pytest.raises(ValueError, match="one row"):
        scan.query(Q[:2], np.empty(0, np.int32), 3, 1)
    with pytest.raises(ValueError, match="same number of factors"):
        bound_scan(topk_kernel, Q[:, :4].copy(), Y, None, seen, 32, False, False, 1)
    with pytest.raises(ValueError, match="seen_indptr"):
        bound_scan(topk_kernel, Q, Y, None, seen[:4], 32, False, False, 1)
    with pytest.raises(ValueError, match="max_split"):
        bound_scan(topk_kernel, Q, Y, None, seen, 32, False, False, 0)


def test_bound_scan_answers_concurrent_queries_exactly(topk_kernel):
    """Queries from several threads at once (each may be dealt to threads while it runs alone, and
    takes one core while others run): every answer is the full scan's, and the count of queries in
    flight comes back to zero, errors included."""
    import threading
    rng = np.random.default_rng(21)
    Y = rng.standard_normal((700, 16)).astype(np.float32)
    Q = rng.standard_normal((40, 16)).astype(np.float32)
    seen = [rng.choice(700, size=int(rng.integers(0, 30)), replace=False).astype(np.int32) for _ in range(40)]
    scan = bound_scan(topk_kernel, Q, Y, None, seen, 64, HAS_VNNI and topk_kernel.__name__.endswith("avx512"),
                      False, 4)  # every query may be split
    want_ids, want_scores = full_scan(topk_kernel, Q, Y, None, seen, EU, 7)
    failures = []
    index = RankingIndex.build(Y, None)
    packed = packed_codes(index.factors, None)

    def general(u):  # topk_codes with one query, split over 2 threads: the general path's call
        indptr = np.array([0, seen[u].size], np.int64)
        ids, scores = np.empty((2, 7), np.int32), np.empty((2, 7), np.float32)
        topk_kernel.topk_codes(Q[u:u + 1], index.factors, packed.bias, packed.codes, packed.scale, packed.corr,
                               packed.err, packed.norm, indptr, np.sort(seen[u]), index.positions(), EU,
                               index.order, ids, scores, 2, index.direction, index.suffix_bounds,
                               block_users=1, block_items=64, split=2)
        return ids[0], scores[0]

    def serve(offset):
        try:
            for rep in range(30):
                u = (offset + rep) % 40
                ids, scores = scan.stored(u, 7, True, 2) if rep % 2 else general(u)
                if not (np.array_equal(ids, want_ids[u]) and np.array_equal(scores, want_scores[u])):
                    failures.append(u)
        except Exception as error:  # noqa: BLE001 - reported below
            failures.append(error)

    threads = [threading.Thread(target=serve, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with pytest.raises(IndexError):
        scan.stored(40, 7, True, 2)
    assert topk_kernel.one_queries_in_flight() == 0


@st.composite
def head_cases(draw):
    """Factors whose last dimensions are zero (the head bound is the whole bound, so it decides), with
    biases larger than the scores' spread: a head bound that lost its bias or tail term skips rows
    that belong in the answer."""
    seed = draw(st.integers(0, 2 ** 31 - 1))
    rng = np.random.default_rng(seed)
    n, m, f = draw(st.integers(40, 300)), draw(st.integers(4, 24)), draw(st.sampled_from([40, 64, 100]))
    live = draw(st.integers(f // 2, f))  # dimensions past this are zero in the rows
    Y = np.zeros((n, f), np.float32)
    Y[:, :live] = rng.standard_normal((n, live)) * (1 + rng.pareto(2.0, (n, 1)))
    Q = rng.standard_normal((m, f)).astype(np.float32)
    bias = (rng.standard_normal(n) * draw(st.sampled_from([0.0, 1.0, 5.0]))).astype(np.float32)
    seen_rows = [rng.choice(n, size=int(rng.integers(0, n // 4)), replace=False).astype(np.int32)
                 for _ in range(m)]
    return Q, Y, bias if draw(st.booleans()) else None, seen_rows, EU, draw(st.integers(1, 12))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=head_cases(), threads=st.sampled_from([1, 2]))
def test_head_bound_skips_only_rows_out_of_reach(topk_kernel, case, threads):
    Q, Y, bias, seen_rows, mask, k = case
    got_ids, got_scores = run_codes(topk_kernel, Q, Y, bias, seen_rows, mask, k, 64, 32, threads, False)
    want_ids, want_scores = full_scan(topk_kernel, Q, Y, bias, seen_rows, mask, k)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_array_equal(got_scores, want_scores)
