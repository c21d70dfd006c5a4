"""ItemKNN and EASE against NumPy references of their definitions, and through the shared serving API."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fastrec
from fastrec import EASE, ItemKNN, Interactions
from reference import ease_closed_form as ref_ease


def _random_matrix(n_users: int, n_items: int, density: float, seed: int, weights: bool = False) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < density).astype(np.float64)
    if weights:
        dense *= rng.integers(1, 5, size=dense.shape)
    return sp.csr_matrix(dense)


# ----------------------------------------------------------- NumPy references
def ref_weighted(X: np.ndarray, similarity: str, k1: float = 1.2, b: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
    """Items x users weights and per-item scales, straight from the formulas (implicit's)."""
    W = np.where(X > 0, X, 0.0).T.copy()  # items x users
    n_items = W.shape[0]
    idf = np.log(n_items) - np.log1p((W > 0).sum(axis=0))  # per user
    if similarity == "tfidf":
        W = np.sqrt(W) * idf[None, :]
    elif similarity == "bm25":
        totals = W.sum(axis=1)
        norm = (1 - b) + b * totals / totals.mean()
        with np.errstate(invalid="ignore", divide="ignore"):
            W = np.where(W > 0, W * (k1 + 1) / (k1 * norm[:, None] + W) * idf[None, :], 0.0)
        return W, np.ones(n_items)
    norms = np.linalg.norm(W, axis=1)
    return W, np.divide(1.0, norms, out=np.zeros(n_items), where=norms > 0)


def ref_similarity(X: np.ndarray, similarity: str, k: int, shrinkage: float = 0.0) -> np.ndarray:
    """Dense S with each row's top-k positive entries (equal values: the item more users have, then
    the lower id), the diagonal excluded."""
    W, scale = ref_weighted(X, similarity)
    popularity = (W > 0).sum(axis=1)
    full = (W @ W.T) * (scale[:, None] * scale[None, :])  # the product of scales first, as the kernel: symmetric
    if shrinkage:
        common = (W > 0).astype(float) @ (W > 0).T.astype(float)
        full = full * common / (common + shrinkage)
    np.fill_diagonal(full, 0)
    S = np.zeros_like(full)
    for j in range(full.shape[0]):
        candidates = np.flatnonzero(full[j] > 0)
        order = np.lexsort((candidates, -popularity[candidates], -full[j, candidates]))[:k]
        S[j, candidates[order]] = full[j, candidates[order]]
    return S


def ref_top(scores: np.ndarray, eligible: np.ndarray, n: int) -> np.ndarray:
    ids = np.flatnonzero(eligible)
    return ids[np.lexsort((ids, -scores[ids]))][:n]


# ------------------------------------------------------------------ ItemKNN
@pytest.mark.parametrize("similarity", ["cosine", "tfidf", "bm25"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_knn_similarity_matches_reference(similarity, dtype, threads):
    X = _random_matrix(40, 25, 0.2, seed=1, weights=True)
    model = ItemKNN(k=5, similarity=similarity, dtype=dtype, num_threads=threads).fit(X)
    want = ref_similarity(X.toarray(), similarity, k=5)
    rtol = 1e-5 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(model.item_similarity_.toarray(), want, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("path", ["pairs", "rows"])
@pytest.mark.parametrize("shape, density", [((40, 25), 0.2), ((60, 400), 0.01)])  # dense and sparse scans
def test_both_neighbour_paths_match_reference(monkeypatch, path, shape, density):
    import fastrec.models.knn as knn
    if path == "rows":  # per-thread buffers of every item would not fit: each item's row alone
        monkeypatch.setattr(knn, "_PAIR_BUFFER_BUDGET", 0)
    X = _random_matrix(*shape, density, seed=11, weights=True)
    for similarity, shrinkage in (("cosine", 0.0), ("bm25", 2.0)):
        model = ItemKNN(k=7, similarity=similarity, shrinkage=shrinkage, dtype=np.float64, num_threads=2).fit(X)
        got = model.item_similarity_.toarray()
        full = ref_similarity(X.toarray(), similarity, X.shape[1], shrinkage)  # every positive pair
        want = ref_similarity(X.toarray(), similarity, 7, shrinkage)
        kept = got != 0
        np.testing.assert_allclose(got[kept], full[kept], rtol=1e-10)  # every kept value is the pair's
        for j in range(X.shape[1]):  # and each row keeps the 7 best (equal values may swap ids)
            np.testing.assert_allclose(np.sort(got[j][kept[j]]), np.sort(want[j][want[j] != 0]), rtol=1e-10)


@pytest.mark.parametrize("path", ["pairs", "rows"])
@pytest.mark.parametrize("k", [3, 40, 200])  # compacted buffers, rows longer than the sort's insertion cut-off, never full
def test_neighbour_csr_is_canonical_and_exact(monkeypatch, path, k):
    """Rows come out of the kernels unordered (buffers compacted by quickselect, merged threads) and are sorted
    by id in C."""
    import fastrec.models.knn as knn
    if path == "rows":
        monkeypatch.setattr(knn, "_PAIR_BUFFER_BUDGET", 0)
    X = _random_matrix(90, 150, 0.25, seed=5)  # binary: many equal similarities, ties by the lower id
    S = ItemKNN(k=k, dtype=np.float64, num_threads=2).fit(X).item_similarity_
    assert S.indices.dtype == np.int32 and S.indptr.dtype == np.int64
    assert all((np.diff(S.indices[S.indptr[j]:S.indptr[j + 1]]) > 0).all() for j in range(S.shape[0]))
    np.testing.assert_allclose(S.toarray(), ref_similarity(X.toarray(), "cosine", k), rtol=1e-10, atol=0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_users=st.integers(1, 30), n_items=st.integers(1, 40), density=st.floats(0.05, 0.9),
       k=st.integers(1, 6), threads=st.sampled_from([1, 2]), path=st.sampled_from(["pairs", "rows"]),
       seed=st.integers(0, 10_000))
def test_neighbours_with_ties_are_exact_on_both_paths(n_users, n_items, density, k, threads, path, seed):
    """Binary data tie most similarities; small k makes the candidate buffers compact many times."""
    import fastrec.models.knn as knn
    budget = 0 if path == "rows" else knn._PAIR_BUFFER_BUDGET
    X = _random_matrix(n_users, n_items, density, seed)
    assume(X.nnz > 0)  # empty data is refused (tested elsewhere)
    old, knn._PAIR_BUFFER_BUDGET = knn._PAIR_BUFFER_BUDGET, budget
    try:
        S = ItemKNN(k=k, dtype=np.float64, num_threads=threads).fit(X).item_similarity_
    finally:
        knn._PAIR_BUFFER_BUDGET = old
    np.testing.assert_array_equal(S.toarray() != 0, ref_similarity(X.toarray(), "cosine", k) != 0)
    np.testing.assert_allclose(S.toarray(), ref_similarity(X.toarray(), "cosine", k), rtol=1e-12, atol=0)


@pytest.mark.parametrize("path", ["pairs", "rows"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_equal_similarities_keep_the_more_popular_neighbour(monkeypatch, path, threads, dtype):
    """Item 0 (4 users) has cosine 0.5 (exact in binary) with item 1 (1 user, 1 in common) and item 2
    (4 users, 2 in common): with k=1 it keeps item 2, more users behind the same value, not the lower id."""
    import fastrec.models.knn as knn
    if path == "rows":
        monkeypatch.setattr(knn, "_PAIR_BUFFER_BUDGET", 0)
    rows = [[0, 1, 2], [0, 2], [0], [0], [2], [2]]
    X = sp.csr_matrix((np.ones(sum(map(len, rows))), np.concatenate(rows), np.cumsum([0] + [len(r) for r in rows])),
                      shape=(6, 3))
    S = ItemKNN(k=1, dtype=dtype, num_threads=threads).fit(X).item_similarity_.toarray()
    np.testing.assert_array_equal(S, [[0, 0, 0.5], [0.5, 0, 0], [0.5, 0, 0]])  # 1 and 2: tie with equal users
    np.testing.assert_array_equal(S, ref_similarity(X.toarray(), "cosine", 1))


@pytest.mark.parametrize("similarity", ["cosine", "tfidf", "bm25"])
@pytest.mark.parametrize("source, dtype", [(np.float32, np.float32), (np.float64, np.float32), (np.float64, np.float64)])
def test_weigh_entries_matches_the_formulas(similarity, source, dtype):
    from fastrec.kernels import load_kernel
    from fastrec.models.knn import SIMILARITIES
    X = _random_matrix(30, 20, 0.3, seed=4, weights=True)
    keep = np.ones(20)
    keep[3] = 0  # an item without users: scale 0
    X = sp.csr_matrix(X @ sp.diags(keep))
    X.eliminate_zeros()
    values, scale = np.empty(X.nnz, dtype=dtype), np.empty(X.shape[1], dtype=dtype)
    load_kernel("knn").weigh_entries(X.indptr, X.indices, X.data.astype(source), SIMILARITIES.index(similarity),
                                     1.2, 0.75, values, scale, np.empty(X.shape[1]))
    W, want_scale = ref_weighted(X.toarray(), similarity)
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    got = sp.csr_matrix((values, X.indices, X.indptr), shape=X.shape).toarray().T
    np.testing.assert_allclose(got, W, rtol=rtol, atol=0)
    np.testing.assert_allclose(scale, want_scale, rtol=rtol, atol=0)
    assert scale[3] == (1 if similarity == "bm25" else 0)


@settings(max_examples=30, deadline=None)
@given(n_users=st.integers(0, 20), n_items=st.integers(1, 15), density=st.floats(0, 1), seed=st.integers(0, 999))
def test_by_item_layout_is_the_transpose(n_users, n_items, density, seed):
    from fastrec.kernels import load_kernel
    X = _random_matrix(n_users, n_items, density, seed) if n_users else sp.csr_matrix((0, n_items))
    col_indptr, col_users, col_pos = (np.empty(n_items + 1, np.int64), np.empty(X.nnz, np.int32),
                                      np.empty(X.nnz, np.int64))
    load_kernel("knn").by_item(X.indptr.astype(np.int64), X.indices.astype(np.int32), col_indptr, col_users, col_pos)
    want = sp.csr_matrix((np.arange(X.nnz), X.indices, X.indptr), shape=X.shape).tocsc()
    want.sort_indices()
    np.testing.assert_array_equal(col_indptr, want.indptr)
    np.testing.assert_array_equal(col_users, want.indices)
    np.testing.assert_array_equal(col_pos, want.data)


def test_knn_shrinkage_matches_reference():
    X = _random_matrix(30, 20, 0.25, seed=2)
    model = ItemKNN(k=4, shrinkage=3.0, dtype=np.float64).fit(X)
    np.testing.assert_allclose(model.item_similarity_.toarray(), ref_similarity(X.toarray(), "cosine", 4, 3.0),
                               rtol=1e-10)


def test_every_knn_kernel_build_agrees(knn_kernel):
    X = _random_matrix(50, 30, 0.2, seed=3).astype(np.float32)
    by_item = X.T.tocsr()
    scale = (1 / np.maximum(np.sqrt(np.asarray(X.multiply(X).sum(0)).ravel()), 1e-12)).astype(np.float32)
    ids = np.full((30, 4), -1, dtype=np.int32)
    sims = np.zeros((30, 4), dtype=np.float32)
    counts = np.zeros(30, dtype=np.int32)
    popularity = np.diff(by_item.indptr).astype(np.int32)
    knn_kernel.item_neighbours(by_item.indptr.astype(np.int64), by_item.indices, by_item.data,
                               X.indptr.astype(np.int64), X.indices, X.data, scale, popularity, 0.0, 4,
                               ids, sims, counts, 2)
    want = ref_similarity(X.toarray(), "cosine", 4)
    for j in range(30):
        valid = ids[j] >= 0
        np.testing.assert_allclose(sims[j][valid], want[j, ids[j][valid]], rtol=1e-5)
        assert valid.sum() == (want[j] > 0).sum() == counts[j] and valid[:counts[j]].all()
        assert (np.diff(ids[j][valid]) > 0).all()  # sorted by id


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_users=st.integers(1, 12), n_items=st.integers(2, 10), seed=st.integers(0, 1000),
       k=st.integers(1, 6), n=st.integers(1, 12), threads=st.integers(1, 2))
def test_knn_recommend_matches_reference(n_users, n_items, seed, k, n, threads):
    """Empty rows and columns, a single user, every filter: the exact top-n of r_u S."""
    X = _random_matrix(n_users, n_items, 0.3, seed)
    if X.nnz == 0:
        return
    model = ItemKNN(k=k, dtype=np.float64, num_threads=threads).fit(X)
    S = model.item_similarity_.toarray()
    rng = np.random.default_rng(seed)
    exclude = rng.choice(n_items, size=min(2, n_items), replace=False)
    candidates = rng.choice(n_items, size=max(1, n_items // 2), replace=False)
    ids, scores = model.recommend(np.arange(n_users), n=n, exclude=exclude, candidates=candidates)
    for u in range(n_users):
        row = X[u].toarray().ravel()
        s = row @ S
        eligible = np.zeros(n_items, bool)
        eligible[candidates] = True
        eligible[exclude] = False
        eligible[row != 0] = False
        reached = ((row > 0).astype(float) @ (S != 0)) > 0
        want = ref_top(s, eligible & reached, n)
        got = ids[u][ids[u] >= 0]
        np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(scores[u][: want.size], s[want], rtol=1e-10)


def test_knn_serving_api_is_consistent(tmp_path):
    X = _random_matrix(60, 30, 0.2, seed=5, weights=True)
    model = ItemKNN(k=8, similarity="bm25").fit(X)
    ids, scores = model.recommend(3, n=5)
    assert model.predict(3, int(ids[0])) == pytest.approx(float(scores[0]), rel=1e-5)
    score, because, parts = model.explain(3, int(ids[0]), n=None)
    assert score == pytest.approx(float(scores[0]), rel=1e-5) and parts.sum() == pytest.approx(score)
    assert set(because) <= set(X[3].indices)
    folded, _ = model.recommend(None, X=X[[3]], n=5)
    np.testing.assert_array_equal(folded[0], ids)
    sim, sim_scores = model.similar_items(2, n=4)
    S = model.item_similarity_.toarray()
    np.testing.assert_array_equal(sim, ref_top(S[2], S[2] > 0, 4))
    model.save(tmp_path / "knn.npz")
    loaded = fastrec.load(tmp_path / "knn.npz")
    assert type(loaded) is ItemKNN and loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.recommend(3, n=5)[0], ids)
    with pytest.raises(NotImplementedError, match="similar_users"):
        model.similar_users(0)


def test_knn_partial_fit_replaces_a_users_row_only():
    X = _random_matrix(30, 20, 0.25, seed=6)
    model = ItemKNN(k=5).fit(X)
    S = model.item_similarity_.copy()
    row = sp.csr_matrix(([1.0, 1.0], ([0, 0], [1, 2])), shape=(1, 20))
    model.partial_fit_users([4], row)
    assert (model.item_similarity_ != S).nnz == 0
    np.testing.assert_array_equal(model.user_items_[4].indices, [1, 2])
    np.testing.assert_array_equal(model.recommend(4, n=5)[0], model.recommend(None, X=row, n=5)[0][0])


def test_knn_raw_ids_and_bad_parameters():
    data = Interactions.from_arrays(["a", "a", "b", "b", "c"], ["x", "y", "x", "z", "y"])
    model = ItemKNN(k=2).fit(data)
    ids, _ = model.recommend("c", n=2, raw_ids=True)
    assert set(ids) <= {"x", "z"}
    for bad, match in ((dict(k=0), "k must be"), (dict(similarity="jaccard"), "similarity"),
                       (dict(bm25_b=2.0), "bm25_b"), (dict(shrinkage=-1.0), "shrinkage")):
        with pytest.raises(ValueError, match=match):
            ItemKNN(**bad).fit(data)


def test_knn_matches_implicit_when_installed():
    nn = pytest.importorskip("implicit.nearest_neighbours")
    X = _random_matrix(80, 40, 0.15, seed=7, weights=True)
    for ours, theirs in ((ItemKNN(k=6, dtype=np.float64), nn.CosineRecommender(K=7)),
                         (ItemKNN(k=6, similarity="bm25", dtype=np.float64), nn.BM25Recommender(K=7, K1=1.2, B=0.75)),
                         (ItemKNN(k=6, similarity="tfidf", dtype=np.float64), nn.TFIDFRecommender(K=7))):
        ours.fit(X)
        theirs.fit(X, show_progress=False)
        their_S = theirs.similarity.toarray()
        np.fill_diagonal(their_S, 0)  # implicit keeps an item among its own K neighbours
        mine = ours.item_similarity_.toarray()
        kept = mine != 0
        np.testing.assert_allclose(mine[kept], their_S[kept], rtol=1e-6)


# --------------------------------------------------------------------- EASE
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-9), (np.float32, 2e-3)])
def test_ease_matches_the_closed_form(dtype, rtol):
    X = _random_matrix(80, 30, 0.2, seed=8)
    model = EASE(regularization=5.0, dtype=dtype).fit(X)
    B = ref_ease(X.toarray(), 5.0)
    np.testing.assert_allclose(model.item_factors_.T, B, rtol=rtol, atol=rtol * np.abs(B).max())
    ids, scores = model.recommend(np.arange(80), n=5)
    for u in (0, 7, 33):
        x = X[u].toarray().ravel()
        s = x @ B
        want = ref_top(s, x == 0, 5)
        np.testing.assert_allclose(scores[u], s[ids[u]], rtol=rtol * 10, atol=1e-6)
        assert np.allclose(s[ids[u]], s[want], rtol=rtol * 10, atol=1e-6)  # ties may swap


@pytest.mark.parametrize("n, block", [(1, 4), (10, 4), (9, 3), (7, 512)])
def test_ease_symmetric_from_lapack_upper_triangle(n, block):
    """potri leaves the upper triangle of a Fortran array; the whole matrix comes back C-ordered, in place."""
    from fastrec.models.ease import _symmetric_from_upper
    rng = np.random.default_rng(n)
    A = rng.random((n, n))
    want = A + A.T
    filled = np.asfortranarray(np.triu(want) + np.tril(rng.random((n, n)), -1))  # junk below the diagonal
    got = _symmetric_from_upper(filled, block=block)
    assert got.flags.c_contiguous and np.shares_memory(got, filled)
    np.testing.assert_array_equal(got, want)


def test_ease_serving_api_and_file(tmp_path):
    X = _random_matrix(50, 20, 0.25, seed=9)
    model = EASE(regularization=2.0, dtype=np.float64).fit(X)
    ids, scores = model.recommend(4, n=3)
    assert model.predict(4, int(ids[0])) == pytest.approx(float(scores[0]))
    score, _, parts = model.explain(4, int(ids[0]), n=None)
    assert score == pytest.approx(float(scores[0])) and parts.sum() == pytest.approx(score)
    np.testing.assert_array_equal(model.recommend(None, X=X[[4]], n=3)[0][0], ids)
    B = model.item_factors_.T
    sim, _ = model.similar_items(1, n=3)
    np.testing.assert_array_equal(sim, ref_top(B[1], np.arange(20) != 1, 3))
    model.save(tmp_path / "ease.npz")
    loaded = fastrec.load(tmp_path / "ease.npz")
    np.testing.assert_array_equal(loaded.recommend(4, n=3)[0], ids)


def test_ease_refuses_what_would_not_fit_in_memory(monkeypatch):
    import fastrec.models.ease as ease
    monkeypatch.setattr(ease, "available_memory", lambda: 1000)
    with pytest.raises(MemoryError, match=r"needs about .* GiB .* available"):
        EASE().fit(_random_matrix(10, 30, 0.3, seed=1))


def test_ease_bad_regularization():
    with pytest.raises(ValueError, match="regularization"):
        EASE(regularization=0.0).fit(_random_matrix(5, 4, 0.5, seed=1))
