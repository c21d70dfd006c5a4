"""Strong generalisation (Liang et al. 2018) and sampled negatives (NCF), against plain references."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from fastrec import ALS, BPR, EASE, Interactions, ItemKNN
from fastrec.evaluation import (SampledNegatives, evaluate_sampled, evaluate_strong_generalization,
                                load_ncf_negatives, load_ncf_ratings, recall_ndcg, sample_negatives,
                                strong_generalization_split)
from reference import ease_closed_form


def weighted(n_users: int = 120, n_items: int = 50, density: float = 0.2, seed: int = 0) -> sp.csr_matrix:
    """Continuous positive weights (no exact score ties); the last item is never used."""
    rng = np.random.default_rng(seed)
    dense = np.where(rng.random((n_users, n_items)) < density, rng.random((n_users, n_items)) + 0.5, 0.0)
    dense[:, -1] = 0
    dense[:3] = 0  # users without interactions are never held out
    return sp.csr_matrix(dense)


# ------------------------------------------------------------------ references
def ref_recall_ndcg(ranked: np.ndarray, relevant: list[set], ks, ndcg_k: int) -> dict[str, list]:
    """Liang et al.'s metrics with Python sets, one user at a time."""
    out: dict[str, list] = {f"recall@{k}": [] for k in ks}
    out[f"ndcg@{ndcg_k}"] = []
    for row, rel in zip(ranked, relevant):
        listed = [int(i) for i in row if i >= 0]
        for k in ks:
            out[f"recall@{k}"].append(len(set(listed[:k]) & rel) / min(k, len(rel)) if rel else math.nan)
        dcg = sum(1 / math.log2(p + 2) for p, i in enumerate(listed[:ndcg_k]) if i in rel)
        idcg = sum(1 / math.log2(p + 2) for p in range(min(ndcg_k, len(rel))))
        out[f"ndcg@{ndcg_k}"].append(dcg / idcg if rel else math.nan)
    return out


def ref_top(scores: np.ndarray, excluded: sp.csr_matrix, n: int) -> np.ndarray:
    """Top-n ids per row by score, ties by lower id, excluded entries left out."""
    scores = scores.astype(np.float64).copy()
    scores[excluded.toarray() != 0] = -np.inf
    out = np.full((scores.shape[0], n), -1)
    for r, row in enumerate(scores):
        order = np.lexsort((np.arange(row.size), -row))
        order = order[np.isfinite(row[order])][:n]
        out[r, :order.size] = order
    return out


def relevant_sets(evaluation: sp.csr_matrix) -> list[set]:
    return [set(evaluation[r].indices[evaluation[r].data > 0].tolist()) for r in range(evaluation.shape[0])]


# ------------------------------------------------------------------ the split
def test_split_partitions_users_and_follows_liangs_rules():
    X = weighted().tolil()
    X[5, :] = 0
    X[5, [1, 2, 3, 4]] = 1.0  # 4 interactions: fewer than min_interactions, all fold-in
    X = X.tocsr()
    split = strong_generalization_split(X, 40, random_state=3)
    assert split.train.shape == (X.shape[0] - 40, X.shape[1]) and split.fold_in.shape == (40, X.shape[1])
    assert np.array_equal(np.sort(np.concatenate([split.train_users, split.heldout_users])),
                          np.arange(X.shape[0]))
    assert np.diff(X.indptr)[split.heldout_users].min() > 0
    assert (split.train != X[split.train_users]).nnz == 0
    known = np.diff(split.train.tocsc().indptr) > 0
    dropped = 0
    for r, user in enumerate(split.heldout_users):
        row = X[user]
        kept = set(row.indices[known[row.indices]].tolist())
        dropped += row.nnz - len(kept)
        fold, ev = set(split.fold_in[r].indices.tolist()), set(split.evaluation[r].indices.tolist())
        assert fold | ev == kept and not fold & ev
        assert len(ev) == (int(0.2 * len(kept) + 1e-9) if len(kept) >= 5 else 0)
        assert np.allclose(split.fold_in[r].toarray()[0, list(fold)], row.toarray()[0, list(fold)])
    assert split.n_dropped == dropped
    again = strong_generalization_split(X, 40, random_state=3)
    assert np.array_equal(again.heldout_users, split.heldout_users)
    assert (again.evaluation != split.evaluation).nnz == 0


def test_split_drops_items_no_training_user_has():
    X = weighted(seed=1).tolil()
    X[:, 48] = 0
    X[7, 48] = 1.0  # only user 7 has item 48
    split = strong_generalization_split(X.tocsr(), 0.3, random_state=0)
    if 7 in split.heldout_users:
        assert split.n_dropped >= 1
        assert split.fold_in[:, 48].nnz == 0 and split.evaluation[:, 48].nnz == 0
    else:
        assert split.train[:, 48].nnz == 1


def test_split_of_interactions_keeps_the_id_maps():
    rng = np.random.default_rng(0)
    users = np.repeat([f"u{i}" for i in range(30)], 8)
    items = rng.integers(0, 20, users.size)
    data = Interactions.from_arrays(users, items)
    split = strong_generalization_split(data, 5, random_state=0)
    assert split.user_map is data.user_map and split.item_map is data.item_map
    assert split.fold_in.shape == (5, data.shape[1])


@pytest.mark.parametrize("kwargs, error, match", [
    ({"n_heldout_users": 0}, ValueError, "n_heldout_users must be >= 1"),
    ({"n_heldout_users": 117}, ValueError, "n_heldout_users asks for 117 users but only 117"),
    ({"n_heldout_users": "5"}, TypeError, "n_heldout_users"),
    ({"n_heldout_users": 5, "fold_in_fraction": 1.0}, ValueError, "fold_in_fraction must be < 1"),
    ({"n_heldout_users": 5, "fold_in_fraction": 0.0}, ValueError, "fold_in_fraction must be > 0"),
    ({"n_heldout_users": 5, "min_interactions": 0}, ValueError, "min_interactions must be >= 1"),
])
def test_split_errors_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        strong_generalization_split(weighted(), **kwargs)


# ------------------------------------------------------------------ the metrics
def test_recall_ndcg_match_a_set_based_reference():
    rng = np.random.default_rng(5)
    n_items = 30
    dense = (rng.random((25, n_items)) < 0.15).astype(np.float32)
    dense[0] = 0  # a user without relevant items: NaN
    relevant = sp.csr_matrix(dense)
    ranked = np.array([rng.permutation(n_items)[:12] for _ in range(25)])
    ranked[3, 5:] = -1  # a short list
    got = recall_ndcg(ranked, relevant, ks=(3, 10, 20), ndcg_k=8)
    want = ref_recall_ndcg(ranked, relevant_sets(relevant), (3, 10, 20), 8)
    for name, values in want.items():
        assert np.allclose(got[name], values, rtol=0, atol=1e-12, equal_nan=True), name
    assert np.isnan(got["recall@3"][0])
    # a user with 40 relevant items and a perfect list of 20 has recall@20 = 1 (normalised by min(k, |R|))
    many = sp.csr_matrix(np.ones((1, 50)))
    assert recall_ndcg(np.arange(20)[None], many, ks=(20,), ndcg_k=20)["recall@20"][0] == 1.0


@pytest.mark.parametrize("bad, error", [({"ks": ()}, ValueError), ({"ks": (0,)}, ValueError),
                                        ({"ndcg_k": 0}, ValueError), ({"ks": "ten"}, TypeError)])
def test_recall_ndcg_errors(bad, error):
    with pytest.raises(error, match=next(iter(bad))):
        recall_ndcg(np.zeros((1, 3), dtype=int), sp.csr_matrix(np.ones((1, 3))), **bad)


# ------------------------------------------------------- evaluation with models
def test_ease_strong_generalization_equals_numpy_closed_form():
    split = strong_generalization_split(weighted(seed=2), 40, random_state=1)
    lam = 5.0
    model = EASE(regularization=lam, dtype=np.float64).fit(split.train)
    summary, table = evaluate_strong_generalization(model, split, ks=(5, 10), ndcg_k=20, per_user=True)
    B = ease_closed_form(split.train.toarray(), lam)
    top = ref_top(split.fold_in.toarray() @ B, split.fold_in, 20)
    rel = relevant_sets(split.evaluation)
    want = ref_recall_ndcg(top, rel, (5, 10), 20)
    evaluated = [r for r in range(len(rel)) if rel[r]]
    for name in ("recall@5", "recall@10", "ndcg@20"):
        assert summary[name] == pytest.approx(np.mean([want[name][r] for r in evaluated]), abs=1e-12)
    assert summary["n_users_evaluated"] == len(evaluated)
    assert summary["n_users_skipped"] == 40 - len(evaluated)
    assert np.array_equal(table["input_user"], split.heldout_users[table["user"]])


def test_als_and_itemknn_fold_in_without_refit():
    split = strong_generalization_split(weighted(seed=3), 30, random_state=2)
    rel = relevant_sets(split.evaluation)
    evaluated = [r for r in range(len(rel)) if rel[r]]
    als = ALS(factors=6, iterations=3, solver="cholesky", dtype=np.float64, random_state=0,
              num_threads=1).fit(split.train)
    knn = ItemKNN(k=10, dtype=np.float64).fit(split.train)
    before = als.user_factors_.copy()
    scores = {als: als.fold_in(split.fold_in) @ als.item_factors_.T,
              knn: split.fold_in.toarray() @ knn.item_similarity_.toarray()}
    for model, full in scores.items():
        summary = evaluate_strong_generalization(model, split, ks=(10,), ndcg_k=15)
        if model is knn:  # ItemKNN ranks only items its neighbour lists reach
            full = np.where(full > 0, full, -np.inf)
        want = ref_recall_ndcg(ref_top(full, split.fold_in, 15), rel, (10,), 15)
        assert summary["recall@10"] == pytest.approx(np.mean([want["recall@10"][r] for r in evaluated]), abs=1e-12)
        assert summary["ndcg@15"] == pytest.approx(np.mean([want["ndcg@15"][r] for r in evaluated]), abs=1e-12)
    assert np.array_equal(als.user_factors_, before) and als.n_users_ == split.train.shape[0]


def test_bpr_runs_and_a_model_of_other_items_is_refused():
    split = strong_generalization_split(weighted(seed=4), 20, random_state=0)
    bpr = BPR(factors=4, iterations=2, random_state=0, num_threads=1).fit(split.train)
    summary = evaluate_strong_generalization(bpr, split)
    assert 0 <= summary["recall@20"] <= 1 and 0 <= summary["ndcg@100"] <= 1
    other = ItemKNN(k=5).fit(weighted(n_items=30))
    with pytest.raises(ValueError, match="model knows 30 items but split.train has 50"):
        evaluate_strong_generalization(other, split)
    with pytest.raises(TypeError, match="split must be a StrongGeneralizationSplit"):
        evaluate_strong_generalization(bpr, (split.train, split.evaluation))


# ------------------------------------------------------------ sampled negatives
class TableModel:
    """predict() from a fixed users x items score table."""

    def __init__(self, scores: np.ndarray):
        self.scores = scores

    def predict(self, users, items, raw_ids=False):
        return self.scores[np.asarray(users), np.asarray(items)]


def test_evaluate_sampled_matches_ncf_ranking_with_pessimistic_ties():
    scores = np.array([[0.0, 5.0, 4.0, 4.0, 1.0, 9.0],
                       [3.0, 3.0, 3.0, 0.0, 0.0, 0.0],
                       [1.0, 0.0, 2.0, 0.5, 0.5, 0.5]])
    cases = SampledNegatives(np.array([0, 1, 2]), np.array([2, 0, 0]),
                             np.array([[1, 3, 4, 4],     # 5 > 4, tie 4 == 4, duplicate 4 counted once
                                       [1, 2, 0, 3],     # two ties; the positive listed among negatives: ignored
                                       [1, 3, 4, 5]]))   # nothing above
    summary, table = evaluate_sampled(TableModel(scores), cases, ks=(1, 2, 3), per_user=True)
    assert table["rank"].tolist() == [2, 2, 0]
    assert summary["hit_rate@1"] == pytest.approx(1 / 3) and summary["hit_rate@3"] == 1.0
    assert summary["ndcg@3"] == pytest.approx((2 / math.log2(4) + 1) / 3)
    assert summary["n_cases"] == 3


def test_evaluate_sampled_with_a_model_equals_a_loop_reference():
    X = weighted(seed=6, n_users=60)
    train = X.copy()
    test = sp.lil_matrix(X.shape)
    for u in range(3, X.shape[0]):  # hold out one item per user
        item = X[u].indices[0]
        train[u, item] = 0
        test[u, item] = 1.0
    train.eliminate_zeros()
    cases = sample_negatives(train, test.tocsr(), n_negatives=15, random_state=0)
    model = ALS(factors=5, iterations=3, random_state=0, num_threads=1, dtype=np.float64).fit(train)
    summary = evaluate_sampled(model, cases, ks=10)
    hits, ndcgs = [], []
    for u, pos, negs in zip(cases.users, cases.positives, cases.negatives):
        s = model.user_factors_[u] @ model.item_factors_.T
        rank = sum(s[j] >= s[pos] for j in set(negs.tolist()) - {pos})
        hits.append(rank < 10)
        ndcgs.append(1 / math.log2(rank + 2) if rank < 10 else 0.0)
    assert summary["hit_rate@10"] == pytest.approx(np.mean(hits), abs=1e-12)
    assert summary["ndcg@10"] == pytest.approx(np.mean(ndcgs), abs=1e-12)


def test_sample_negatives_are_distinct_unseen_and_seeded():
    X = weighted(seed=7, n_users=40, n_items=30, density=0.4)
    train, test = X.copy(), sp.csr_matrix(X.shape)
    test = sp.lil_matrix(X.shape)
    for u in range(3, 40):
        test[u, X[u].indices[-1]] = 1.0
        train[u, X[u].indices[-1]] = 0
    train.eliminate_zeros()
    cases = sample_negatives(train, test.tocsr(), n_negatives=8, random_state=1)
    assert cases.negatives.shape == (37, 8)
    seen = (train + test.tocsr()).toarray() != 0
    for u, pos, negs in zip(cases.users, cases.positives, cases.negatives):
        assert test[u, pos] == 1 and len(set(negs.tolist())) == 8
        assert not seen[u, negs].any() and negs.min() >= 0 and negs.max() < 30
    again = sample_negatives(train, test.tocsr(), n_negatives=8, random_state=1)
    assert np.array_equal(again.negatives, cases.negatives)
    with pytest.raises(ValueError, match="n_negatives=29 but user"):
        sample_negatives(train, test.tocsr(), n_negatives=29)


def test_ncf_files_are_read(tmp_path):
    negatives = tmp_path / "ml.test.negative"
    negatives.write_text("(0,5)\t1\t2\t3\n(1,2)\t0\t4\t6\n\n")
    cases = load_ncf_negatives(negatives)
    assert cases.users.tolist() == [0, 1] and cases.positives.tolist() == [5, 2]
    assert cases.negatives.tolist() == [[1, 2, 3], [0, 4, 6]]
    ratings = tmp_path / "ml.train.rating"
    ratings.write_text("0\t1\t5\t978300760\n0\t3\t3\t978302109\n2\t0\t4\t978301968\n")
    X = load_ncf_ratings(ratings)
    assert X.shape == (3, 4) and X.toarray().tolist() == [[0, 1, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0]]
    assert load_ncf_ratings(ratings, shape=(5, 7)).shape == (5, 7)
    bad = tmp_path / "bad"
    bad.write_text("(0,5)\t1\t2\n(1,2)\t0\n")
    with pytest.raises(ValueError, match="line 2 lists 1 negatives but line 1 lists 2"):
        load_ncf_negatives(bad)
    bad.write_text("0,5\t1\tx\n")
    with pytest.raises(ValueError, match="line 1 is not"):
        load_ncf_negatives(bad)
    with pytest.raises(TypeError, match="cases must be SampledNegatives"):
        evaluate_sampled(TableModel(np.zeros((2, 2))), cases.negatives)
