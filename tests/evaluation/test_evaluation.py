"""evaluate(): batching recommend() calls, exclusion of training items, fold-in, outputs."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import fastrec
from fastrec.evaluation import evaluate, per_user_split, ranking_metrics, user_split
from fastrec.data.interactions import Interactions


def planted(n_users=60, n_items=40, seed=0):
    """Users in 4 groups, each liking its own block of items: easy to recommend."""
    rng = np.random.default_rng(seed)
    group_users = rng.integers(0, 4, n_users)
    group_items = np.arange(n_items) % 4
    likes = (group_users[:, None] == group_items[None, :]) & (rng.random((n_users, n_items)) < 0.6)
    return sp.csr_matrix(likes.astype(np.float32))


class FixedRanker:
    """A duck-typed model: the same ranking for every user; records the calls."""

    def __init__(self, order, n_items):
        self.order = np.asarray(order)
        self.n_items = n_items
        self.calls = []

    def recommend(self, users, n=10, exclude_seen=True, X=None):
        self.calls.append((None if users is None else np.array(users), n, exclude_seen, X))
        m = X.shape[0] if users is None else len(users)
        ids = np.full((m, n), -1, dtype=np.int32)
        for r in range(m):
            seen = set(X[r].indices.tolist()) if (X is not None and exclude_seen) else set()
            row = [i for i in self.order if i not in seen][:n]
            ids[r, :len(row)] = row
        return ids, np.zeros(ids.shape, dtype=np.float32)


@pytest.fixture(scope="module")
def data():
    X = planted()
    train, test = per_user_split(X, 0.3, random_state=0)
    model = fastrec.ALS(factors=4, iterations=3, random_state=0).fit(train)
    return X, train, test, model


def test_matches_ranking_metrics_on_the_models_recommendations(data):
    X, train, test, model = data
    users = np.flatnonzero(test.getnnz(axis=1))
    ids, _ = model.recommend(users, n=5)
    want = ranking_metrics(ids, test, k=5, metrics="all", users=users, train=train,
                           item_features=model.item_factors_)
    got = evaluate(model, train, test, k=5, metrics="all", batch_size=7)
    assert got == pytest.approx(want, nan_ok=True)
    assert got["ndcg"] > 0.3  # the planted structure is learnable
    assert got["n_users_evaluated"] == users.size
    assert got["n_users_skipped"] == X.shape[0] - users.size
    # a fitted model never recommends training items
    assert not train[users].multiply(sp.csr_matrix((np.ones(ids.size), (np.repeat(np.arange(users.size), 5),
                                                     ids.ravel())), shape=(users.size, X.shape[1]))).nnz


def test_batch_size_does_not_change_results(data):
    _, train, test, model = data
    assert evaluate(model, train, test, batch_size=1) == evaluate(model, train, test, batch_size=1000)


def test_duck_typed_model_and_train_rows_passed_when_needed():
    train = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    test = sp.csr_matrix(np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    ranker = FixedRanker([0, 1, 2, 3], 4)
    got, table = evaluate(ranker, train, test, k=1, metrics=("hit_rate",), per_user=True)
    # user 0: 0 is excluded, so 1 comes first (hit); user 1: 0 first (hit)
    assert got["hit_rate"] == 1.0 and got["n_users_skipped"] == 1
    users, n, exclude_seen, X = ranker.calls[0]
    assert users.tolist() == [0, 1] and n == 1 and exclude_seen and X is not None
    assert list(table["user"]) == [0, 1]

    got = evaluate(ranker, train, test, k=1, metrics=("hit_rate",), exclude_train=False)
    assert got["hit_rate"] == 0.5 and ranker.calls[-1][3] is None


def test_training_rows_excluded_when_model_saw_other_data(data):
    X, train, test, _ = data
    smaller = sp.csr_matrix(train)
    smaller.data[::2] = 0
    smaller.eliminate_zeros()
    model = fastrec.ALS(factors=4, iterations=2, random_state=0).fit(smaller)
    got, table = evaluate(model, train, test, k=5, per_user=True)
    users = np.asarray(table["user"])
    ids, _ = model.recommend(users, n=5, X=train[users])
    assert got == evaluate(ids, train[users], test[users], k=5)


def test_warns_when_the_model_saw_test_items(data):
    X, train, test, _ = data
    leaky = fastrec.ALS(factors=4, iterations=2, random_state=0).fit(X)
    with pytest.warns(UserWarning, match="saw .* test interactions"):
        evaluate(leaky, train, test)


def test_fold_in_users_unseen_at_fit_time():
    X = planted(n_users=80, seed=1)
    train, held, _, test_users = user_split(X, 0.25, random_state=0)
    model = fastrec.ALS(factors=4, iterations=4, random_state=0).fit(train)
    fold, target = per_user_split(held, 0.3, random_state=0)
    got = evaluate(model, fold, target, k=5, fold_in=True)
    assert got["n_users_evaluated"] == np.count_nonzero(target.getnnz(axis=1))
    assert set(np.flatnonzero(target.getnnz(axis=1))) <= set(test_users.tolist())
    assert got["ndcg"] > 0.3
    users = np.flatnonzero(target.getnnz(axis=1))
    ids, _ = model.recommend(None, n=5, X=fold[users])
    want = ranking_metrics(ids, target, k=5, users=users)
    assert got.pop("n_users_skipped") == X.shape[0] - users.size and want.pop("n_users_skipped") == 0
    assert got == want


def test_k_larger_than_catalogue(data):
    _, train, test, model = data
    got = evaluate(model, train, test, k=500, metrics=("recall", "precision"))
    assert got["recall"] == pytest.approx(1.0)  # every non-training item is listed
    assert 0 < got["precision"] < 0.05


def test_array_of_rankings_instead_of_a_model(data):
    _, train, test, model = data
    ids, _ = model.recommend(np.arange(test.shape[0]), n=10)
    assert evaluate(ids, train, test) == ranking_metrics(ids, test, train=train)


def test_interactions_inputs():
    rng = np.random.default_rng(0)
    users, items = np.nonzero(planted().toarray())
    data = Interactions.from_arrays(users, items, timestamps=rng.random(users.size))
    train, test = per_user_split(data, 0.3, random_state=0)
    model = fastrec.ALS(factors=4, iterations=3, random_state=0).fit(train)
    got = evaluate(model, train, test, k=5)
    want = evaluate(model, train.to_csr(), test.to_csr(), k=5)
    assert got == want and got["n_users_evaluated"] > 0


def test_progress_on_stderr(data, capsys):
    _, train, test, model = data
    evaluate(model, train, test, batch_size=10, show_progress=True)
    err = capsys.readouterr().err
    assert "evaluate" in err and "6/6" in err


def test_bad_inputs(data):
    X, train, test, model = data
    with pytest.raises(TypeError, match="recommend"):
        evaluate(object(), train, test)
    bigger = sp.vstack([test, test]).tocsr()
    with pytest.raises(ValueError, match="fold_in=True"):
        evaluate(model, sp.vstack([train, train]).tocsr(), bigger)
    with pytest.raises(ValueError, match="but train has shape"):
        evaluate(model, train[:, :5], test)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(model, train, test, batch_size=0)
    with pytest.raises(ValueError, match="unknown"):
        evaluate(model, train, test, metrics=("ndcg", "f1"))


def test_wrong_shape_test_is_blamed_with_both_shapes(data):
    _, train, _, model = data
    for shape in ((train.shape[0], train.shape[1] + 2), (train.shape[0] + 5, train.shape[1])):
        wrong = sp.random(*shape, density=0.2, format="csr", random_state=1)
        with pytest.raises(ValueError, match=rf"test has shape \({shape[0]}, {shape[1]}\) but train has shape"):
            evaluate(model, train, wrong)
