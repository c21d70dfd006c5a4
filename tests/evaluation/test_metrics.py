"""Ranking and beyond-accuracy metrics against plain-Python references and hand-worked examples."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from fastrec.evaluation import ALL_METRICS, ranking_metrics

ACCURACY = ("precision", "recall", "map", "ndcg", "mrr", "hit_rate", "auc")


# ------------------------------------------------------------------ references
def ref_accuracy(ranking: list[int], relevant: set[int], k: int, negatives: set[int]) -> dict[str, float]:
    """Textbook definitions, one user; ``ranking`` may hold -1 (no item)."""
    top = ranking[:k]
    flags = [item >= 0 and item in relevant for item in top]
    hits = sum(flags)
    precisions = [sum(flags[:i + 1]) / (i + 1) for i, f in enumerate(flags) if f]
    dcg = sum(1 / math.log2(i + 2) for i, f in enumerate(flags) if f)
    idcg = sum(1 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    first = next((i for i, f in enumerate(flags) if f), None)
    # AUC over (positive, negative) pairs: a listed item outranks every unlisted
    # one, unlisted items tie (score -inf here)
    position = {item: -i for i, item in enumerate(top) if item >= 0}
    score = lambda item: position.get(item, -math.inf)  # noqa: E731
    negatives = negatives | {item for item in top if item >= 0 and item not in relevant}
    pairs = [1.0 if score(p) > score(n) else 0.5 if score(p) == score(n) else 0.0
             for p in relevant for n in negatives]
    return {
        "precision": hits / k,
        "recall": hits / len(relevant),
        "map": sum(precisions) / min(k, len(relevant)),
        "ndcg": dcg / idcg,
        "mrr": 0.0 if first is None else 1 / (first + 1),
        "hit_rate": float(hits > 0),
        "auc": sum(pairs) / len(pairs) if pairs else math.nan,
    }


def ref_popularity(train: sp.csr_matrix) -> np.ndarray:
    return np.array([len(set(train[:, i].nonzero()[0])) for i in range(train.shape[1])], dtype=float)


def ref_tail(popularity: np.ndarray) -> set[int]:
    """Items outside the most popular ones holding 80% of interactions (exact integer test)."""
    ranked = sorted(range(popularity.size), key=lambda i: (-popularity[i], i))
    total, running, head = popularity.sum(), 0.0, set()
    for item in ranked:
        if total == 0 or 10 * running >= 8 * total:
            break
        head.add(item)
        running += popularity[item]
    return set(range(popularity.size)) - head


def ref_gini(counts) -> float:
    x = np.asarray(counts, dtype=float)
    if x.sum() == 0:
        return math.nan
    return sum(abs(a - b) for a in x for b in x) / (2 * x.size ** 2 * x.mean())


def ref_diversity(items: list[int], features: np.ndarray) -> float:
    def cos(a, b):
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        return 0.0 if na == 0 or nb == 0 else float(a @ b / (na * nb))
    pairs = [1 - cos(features[i], features[j]) for x, i in enumerate(items) for j in items[x + 1:]]
    return sum(pairs) / len(pairs) if pairs else math.nan


def nanmean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def assert_close(a: float, b: float) -> None:
    if math.isnan(b):
        assert math.isnan(a)
    else:
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12)


# ------------------------------------------------------------------ strategies
@st.composite
def cases(draw):
    n_users = draw(st.integers(1, 6))
    n_items = draw(st.integers(1, 10))
    width = draw(st.integers(0, 12))
    k = draw(st.integers(1, 12))
    test = np.array(draw(st.lists(st.lists(st.booleans(), min_size=n_items, max_size=n_items),
                                  min_size=n_users, max_size=n_users)))
    train = np.array(draw(st.lists(st.lists(st.booleans(), min_size=n_items, max_size=n_items),
                                   min_size=n_users, max_size=n_users))) & ~test
    ranked = np.full((n_users, width), -1, dtype=np.int64)
    for u in range(n_users):
        rankable = [i for i in range(n_items) if not train[u, i]]
        chosen = draw(st.permutations(rankable))[:draw(st.integers(0, min(width, len(rankable))))]
        slots = sorted(draw(st.permutations(range(width)))[:len(chosen)])
        ranked[u, slots] = chosen  # -1 padding may sit anywhere
    features = np.array(draw(st.lists(st.lists(st.integers(-2, 2), min_size=3, max_size=3),
                                      min_size=n_items, max_size=n_items)), dtype=float)
    return ranked, sp.csr_matrix(test.astype(np.float32)), sp.csr_matrix(train.astype(np.float32)), k, features


@settings(max_examples=150, deadline=None)
@given(cases(), st.booleans())
def test_metrics_match_reference(case, exclude_train):
    ranked, test, train, k, features = case
    n_users, n_items = test.shape
    ranked_before, test_before = ranked.copy(), test.copy()
    summary, table = ranking_metrics(ranked, test, k=k, metrics="all", train=train,
                                     item_features=features, exclude_train=exclude_train, per_user=True)
    assert np.array_equal(ranked, ranked_before) and (test != test_before).nnz == 0

    popularity = ref_popularity(train)
    tail = ref_tail(popularity)
    n_train_users = max(int((train.getnnz(axis=1) > 0).sum()), 1)
    expected_rows = []
    for u in range(n_users):
        relevant = set(test[u].indices.tolist())
        if not relevant:
            continue
        excluded = set(train[u].indices.tolist()) if exclude_train else set()
        negatives = set(range(n_items)) - relevant - excluded
        row = ref_accuracy(ranked[u].tolist(), relevant, k, negatives)
        listed = [i for i in ranked[u, :k].tolist() if i >= 0]
        row["popularity"] = nanmean([popularity[i] for i in listed])
        row["test_popularity"] = nanmean([popularity[i] for i in relevant])
        row["long_tail"] = nanmean([float(i in tail) for i in listed])
        row["novelty"] = nanmean([-math.log2(max(popularity[i], 1) / n_train_users) for i in listed])
        row["diversity"] = ref_diversity(listed, features)
        row["user"] = u
        expected_rows.append(row)

    assert summary["n_users_evaluated"] == len(expected_rows)
    assert summary["n_users_skipped"] == n_users - len(expected_rows)
    assert list(table["user"]) == [row["user"] for row in expected_rows]
    for name in ACCURACY + ("popularity", "test_popularity", "long_tail", "novelty", "diversity"):
        for got, row in zip(table[name], expected_rows):
            assert_close(float(got), row[name])
        assert_close(summary[name], nanmean([row[name] for row in expected_rows]))
    evaluated = [row["user"] for row in expected_rows]
    exposure = np.zeros(n_items)
    for u in evaluated:
        for i in ranked[u, :k]:
            if i >= 0:
                exposure[i] += 1
    assert_close(summary["coverage"], np.count_nonzero(exposure) / n_items)
    assert_close(summary["gini"], ref_gini(exposure))


def test_hand_computed_example():
    # ranked [3, 1, 7, 2]; relevant {1, 2, 9}: hits at positions 2 and 4
    test = sp.csr_matrix(([1.0, 1.0, 1.0], ([0, 0, 0], [1, 2, 9])), shape=(1, 10))
    got = ranking_metrics(np.array([[3, 1, 7, 2]]), test, k=4, metrics=ACCURACY)
    assert got["precision"] == pytest.approx(0.5)
    assert got["recall"] == pytest.approx(2 / 3)
    assert got["map"] == pytest.approx((1 / 2 + 2 / 4) / 3)
    ndcg = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3) + 1 / math.log2(4))
    assert got["ndcg"] == pytest.approx(ndcg)
    assert got["ndcg"] == pytest.approx(0.498189257466)  # 1.06161 / 2.13093
    assert got["mrr"] == pytest.approx(0.5)
    assert got["hit_rate"] == 1.0
    # 7 negatives: 3 (listed 1st), 7 (listed 3rd), and 5 unlisted.  Item 1 beats
    # 1 + 5, item 2 beats 5, item 9 (unlisted) ties with 5 unlisted: 2.5.
    assert got["auc"] == pytest.approx((6 + 5 + 2.5) / (3 * 7))


def test_perfect_and_empty_rankings():
    test = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float32))
    perfect = ranking_metrics(np.array([[0, 1, 2, 3], [0, 1, 2, 3], [3, 0, 1, 2]]), test, k=2,
                              metrics=ACCURACY)
    assert perfect["n_users_evaluated"] == 2 and perfect["n_users_skipped"] == 1
    for name in ("recall", "map", "ndcg", "mrr", "hit_rate", "auc"):
        assert perfect[name] == pytest.approx(1.0), name
    assert perfect["precision"] == pytest.approx((1.0 + 0.5) / 2)
    empty = ranking_metrics(np.full((3, 5), -1), test, k=3, metrics=ACCURACY)
    for name in ("precision", "recall", "map", "ndcg", "mrr", "hit_rate"):
        assert empty[name] == 0.0
    assert empty["auc"] == pytest.approx(0.5)  # nothing listed: everything ties


def test_k_beyond_the_list_and_zero_width():
    test = sp.csr_matrix(np.array([[0, 1, 1]], dtype=np.float32))
    got = ranking_metrics(np.array([[1]]), test, k=50, metrics=("precision", "recall", "ndcg"))
    assert got["precision"] == pytest.approx(1 / 50)
    assert got["recall"] == pytest.approx(0.5)
    assert got["ndcg"] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    none = ranking_metrics(np.empty((1, 0), dtype=np.int64), test, k=5, metrics=("recall",))
    assert none["recall"] == 0.0


def test_full_ranking_auc_is_exact():
    rng = np.random.default_rng(3)
    n_users, n_items = 20, 30
    test = sp.csr_matrix((rng.random((n_users, n_items)) < 0.2).astype(np.float32))
    train = sp.csr_matrix(((rng.random((n_users, n_items)) < 0.2) & (test.toarray() == 0)).astype(np.float32))
    scores = rng.standard_normal((n_users, n_items))
    ranked = np.full((n_users, n_items), -1)
    exact = []
    for u in range(n_users):
        rankable = np.flatnonzero(train[u].toarray()[0] == 0)
        order = rankable[np.argsort(-scores[u, rankable])]
        ranked[u, :order.size] = order
        pos = test[u].indices
        neg = np.setdiff1d(rankable, pos)
        if pos.size and neg.size:
            exact.append(np.mean(scores[u, pos][:, None] > scores[u, neg][None, :]))
    got = ranking_metrics(ranked, test, k=n_items, metrics=("auc",), train=train)
    assert got["auc"] == pytest.approx(np.mean(exact))


def test_users_argument_maps_rows():
    test = sp.csr_matrix(np.array([[1, 0, 0], [0, 0, 0], [0, 0, 1]], dtype=np.float32))
    got, table = ranking_metrics(np.array([[2, 0], [0, 1]]), test, k=1, metrics=("hit_rate",),
                                 users=[2, 1], per_user=True)
    assert got["hit_rate"] == 1.0 and got["n_users_evaluated"] == 1 and got["n_users_skipped"] == 1
    assert list(table["user"]) == [2]


def test_negative_test_values_are_not_relevant():
    test = sp.csr_matrix(np.array([[1, -1, 0]], dtype=np.float32))
    got = ranking_metrics(np.array([[1, 0]]), test, k=1, metrics=("precision", "recall"))
    assert got["precision"] == 0.0 and got["recall"] == 0.0


def test_long_tail_head_holds_the_share():
    # popularity 5, 3, 1, 1, 0 (total 10): the head holding 80% is items 0 and 1
    train = sp.csr_matrix(np.array([[1, 1, 1, 0, 0], [1, 1, 0, 1, 0], [1, 1, 0, 0, 0],
                                    [1, 0, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=np.float32))
    test = sp.csr_matrix(np.eye(5, dtype=np.float32))
    ranked = np.array([[0, 1], [2, 3], [4, 0], [1, 2], [3, 4]])
    got, table = ranking_metrics(ranked, test, k=2, metrics=("long_tail", "popularity", "coverage", "gini"),
                                 train=train, per_user=True)
    assert list(table["long_tail"]) == [0.0, 1.0, 0.5, 0.5, 1.0]
    assert list(table["popularity"]) == [4.0, 1.0, 2.5, 2.0, 0.5]
    assert got["coverage"] == 1.0 and got["gini"] == 0.0  # every item shown twice


def test_gini_of_concentrated_exposure():
    test = sp.csr_matrix(np.ones((4, 4), dtype=np.float32))
    got = ranking_metrics(np.array([[3], [3], [3], [3]]), test, k=1, metrics=("gini", "coverage"))
    assert got["gini"] == pytest.approx(0.75)
    assert got["coverage"] == pytest.approx(0.25)


def test_diversity_with_genre_vectors():
    genres = sp.csr_matrix(np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32))
    test = sp.csr_matrix(np.ones((2, 3), dtype=np.float32))
    got, table = ranking_metrics(np.array([[0, 1, -1], [0, 1, 2]]), test, k=3, metrics=("diversity",),
                                 item_features=genres, per_user=True)
    assert list(table["diversity"]) == pytest.approx([0.0, 2 / 3])


def test_per_user_table_is_the_same_type_with_or_without_pandas(monkeypatch):
    import fastrec.data.tables as tables
    from fastrec.utils.table import Table
    test = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 1.0]]))
    _, with_pandas = ranking_metrics(np.array([[0], [0]]), test, k=1, metrics=("hit_rate", "ndcg"),
                                     per_user=True)
    monkeypatch.setattr(tables, "optional_pandas", lambda: None)
    _, without = ranking_metrics(np.array([[0], [0]]), test, k=1, metrics=("hit_rate", "ndcg"), per_user=True)
    for table in (with_pandas, without):
        assert type(table) is Table and table.columns == ["user", "hit_rate", "ndcg"]
        assert table["hit_rate"].tolist() == [1.0, 0.0]
    with pytest.raises(ImportError, match="needs pandas"):
        without.to_pandas()
    monkeypatch.undo()
    pd = pytest.importorskip("pandas")
    frame = with_pandas.to_pandas()
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == ["user", "hit_rate", "ndcg"]


@pytest.mark.parametrize("ranked, error, match", [
    (np.array([[0, 0]]), ValueError, "more than once"),
    (np.array([[5]]), IndexError, "3 items"),
    (np.array([[-2]]), IndexError, "-2"),
    (np.array([[0.5]]), TypeError, "integer"),
    (np.array([0, 1]), ValueError, "2-D"),
    (np.array([[0], [1]]), ValueError, "users="),
])
def test_bad_rankings(ranked, error, match):
    test = sp.csr_matrix(np.ones((1, 3), dtype=np.float32))
    with pytest.raises(error, match=match):
        ranking_metrics(ranked, test, k=2)


def test_bad_arguments():
    test = sp.csr_matrix(np.ones((1, 3), dtype=np.float32))
    ranked = np.array([[0, 1]])
    with pytest.raises(ValueError, match="k must be >= 1"):
        ranking_metrics(ranked, test, k=0)
    with pytest.raises(ValueError, match="unknown"):
        ranking_metrics(ranked, test, metrics=("precision", "accuracy"))
    with pytest.raises(ValueError, match="need train"):
        ranking_metrics(ranked, test, metrics=("novelty",))
    with pytest.raises(ValueError, match="item_features"):
        ranking_metrics(ranked, test, metrics=("diversity",))
    with pytest.raises(ValueError, match="one row per item"):
        ranking_metrics(ranked, test, metrics=("diversity",), item_features=np.ones((2, 2)))
    with pytest.raises(ValueError, match="train has 4 columns"):
        ranking_metrics(ranked, test, metrics=("novelty",), train=sp.csr_matrix((1, 4)))
    with pytest.raises(ValueError, match="users has 2 entries"):
        ranking_metrics(ranked, test, users=[0, 0])
    assert set(ALL_METRICS) >= set(ACCURACY)
