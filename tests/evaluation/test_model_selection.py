"""grid_search / random_search: best = argmax of results, time limits, determinism."""
from __future__ import annotations

import time

import numpy as np
import pytest

from fastrec.utils.table import Table
import scipy.sparse as sp
from scipy import stats

import fastrec
from fastrec.evaluation import evaluate, per_user_split
from fastrec.model_selection import default_grid, grid_search, random_search


@pytest.fixture(scope="module")
def split():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 3, 50)
    likes = (groups[:, None] == np.arange(30)[None, :] % 3) & (rng.random((50, 30)) < 0.5)
    X = sp.csr_matrix(likes.astype(np.float32))
    return per_user_split(X, 0.3, random_state=0)


def tiny_als(**params):
    return fastrec.ALS(factors=4, iterations=2, random_state=0, num_threads=1, **params)


def test_grid_search_best_is_argmax(split):
    train, val = split
    template = tiny_als()
    grid = {"regularization": [0.001, 0.1, 10.0], "alpha": [1.0, 20.0]}
    search = grid_search(template, grid, train, val, metric="ndcg", k=5, show_progress=False,
                         metrics=("recall",))
    rows = search.records
    assert len(rows) == 6 == search.n_run == search.n_candidates and not search.stopped_by_time_limit
    assert {(r["regularization"], r["alpha"]) for r in rows} == {(a, b) for a in grid["regularization"]
                                                                  for b in grid["alpha"]}
    scores = [r["ndcg"] for r in rows]
    best = int(np.argmax(scores))
    assert search.best_index_ == best and search.best_score_ == scores[best]
    assert search.best_params_ == {"alpha": rows[best]["alpha"], "regularization": rows[best]["regularization"]}
    assert all("recall" in r and r["fit_time"] >= 0 for r in rows)
    # the kept estimator is fitted with the best parameters and reproduces the score
    model = search.best_estimator_
    assert model.get_params()["regularization"] == search.best_params_["regularization"]
    assert evaluate(model, train, val, k=5)["ndcg"] == pytest.approx(search.best_score_)
    assert template.get_params() == tiny_als().get_params() and template._state is None  # untouched
    assert len(set(scores)) > 1  # the grid matters, so the argmax test is meaningful


def test_results_table_is_one_type_with_a_dataframe_on_request(split):
    train, val = split
    search = grid_search(tiny_als(), {"alpha": [1.0, 2.0]}, train, val, show_progress=False)
    assert isinstance(search.results, Table)
    assert search.results.columns == ["alpha", "ndcg", "fit_time", "score_time"]
    assert search.results["alpha"].tolist() == [1.0, 2.0]
    assert search.results.records() == search.records
    pd = pytest.importorskip("pandas")
    frame = search.results.to_pandas()
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == search.results.columns
    assert frame["ndcg"].tolist() == search.results["ndcg"].tolist()


def test_list_of_grids(split):
    train, val = split
    search = grid_search(tiny_als(), [{"alpha": [1.0]}, {"regularization": [0.01, 0.1]}], train, val,
                         show_progress=False)
    assert [sorted(r) for r in search.records] == [["alpha", "fit_time", "ndcg", "score_time"]] + \
        [["fit_time", "ndcg", "regularization", "score_time"]] * 2


class SlowModel:
    """Sleeps in fit; recommends a fixed order shifted by its parameter."""

    def __init__(self, shift=0, delay=0.15):
        self.shift = shift
        self.delay = delay

    def get_params(self, deep=True):
        return {"shift": self.shift, "delay": self.delay}

    def set_params(self, **params):
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def fit(self, X):
        time.sleep(self.delay)
        self.n_items = X.shape[1]
        return self

    def recommend(self, users, n=10, exclude_seen=True, X=None):
        order = (np.arange(self.n_items) + self.shift) % self.n_items
        return np.tile(order[:n], (len(users), 1)).astype(np.int32), np.zeros((len(users), n))


def test_time_limit_stops_new_fits(split):
    train, val = split
    start = time.perf_counter()
    search = grid_search(SlowModel(), {"shift": list(range(20))}, train, val, time_limit=0.4,
                         show_progress=False)
    elapsed = time.perf_counter() - start
    assert search.stopped_by_time_limit and search.n_candidates == 20
    assert 2 <= search.n_run <= 4 and len(search.records) == search.n_run
    assert elapsed < 0.4 + 2 * 0.15 + 0.5
    once = grid_search(SlowModel(delay=0), {"shift": [0, 1]}, train, val, time_limit=0, show_progress=False)
    assert once.n_run == 1 and once.best_estimator_ is not None  # at least one candidate runs


def test_random_search_is_deterministic_with_a_seed(split):
    train, val = split
    dists = {"regularization": stats.loguniform(1e-3, 1.0), "alpha": [1.0, 5.0, 25.0],
             "factors": lambda rng: int(rng.integers(2, 6))}
    a = random_search(tiny_als(), dists, 4, train, val, random_state=42, show_progress=False)
    b = random_search(tiny_als(), dists, 4, train, val, random_state=42, show_progress=False)
    c = random_search(tiny_als(), dists, 4, train, val, random_state=43, show_progress=False)
    strip = lambda s: [{k: v for k, v in r.items() if not k.endswith("_time")} for r in s.records]  # noqa: E731
    assert strip(a) == strip(b) and strip(a) != strip(c)
    assert a.best_params_ == b.best_params_ and a.best_score_ == b.best_score_
    for r in a.records:
        assert 1e-3 <= r["regularization"] <= 1.0 and isinstance(r["regularization"], float)
        assert r["alpha"] in (1.0, 5.0, 25.0) and 2 <= r["factors"] < 6
    scores = [r["ndcg"] for r in a.records]
    assert a.best_score_ == max(scores) and a.n_run == 4


def test_default_grid_for_als(split):
    grid = default_grid(fastrec.ALS)
    assert grid == default_grid(fastrec.ALS())
    fastrec.ALS().set_params(**{key: values[0] for key, values in grid.items()})  # valid names
    fastrec.BPR().set_params(**{key: values[0] for key, values in default_grid(fastrec.BPR).items()})
    grid["alpha"].append(99.0)
    assert 99.0 not in default_grid(fastrec.ALS)["alpha"]  # a fresh copy each time
    with pytest.raises(ValueError, match="no default grid"):
        default_grid(SlowModel)


def test_progress_on_stderr(split, capsys):
    train, val = split
    grid_search(tiny_als(), {"alpha": [1.0, 2.0]}, train, val)
    err = capsys.readouterr().err
    assert "grid search" in err and "2/2" in err and "best=" in err


def test_bad_arguments(split):
    train, val = split
    with pytest.raises(ValueError, match="metric must be one of"):
        grid_search(tiny_als(), {"alpha": [1.0]}, train, val, metric="f1", show_progress=False)
    with pytest.raises(ValueError, match="non-empty list"):
        grid_search(tiny_als(), {"alpha": []}, train, val, show_progress=False)
    with pytest.raises(ValueError, match="non-empty list"):
        grid_search(tiny_als(), {"solver": "cg"}, train, val, show_progress=False)
    with pytest.raises(ValueError, match="invalid parameter 'alhpa'"):
        grid_search(tiny_als(), {"alhpa": [1.0]}, train, val, show_progress=False)
    with pytest.raises(TypeError, match="get_params"):
        grid_search(object(), {"alpha": [1.0]}, train, val, show_progress=False)
    with pytest.raises(ValueError, match="param_distributions"):
        random_search(tiny_als(), {"alpha": 3.0}, 2, train, val, show_progress=False)
    with pytest.raises(ValueError, match="n_iter must be >= 1"):
        random_search(tiny_als(), {"alpha": [1.0]}, 0, train, val, show_progress=False)
    with pytest.raises(ValueError, match="time_limit must be >= 0"):
        grid_search(tiny_als(), {"alpha": [1.0]}, train, val, time_limit=-1, show_progress=False)
