"""``fastrec fit/evaluate --model knn|ease``: options reach the estimators, and options for other models are refused."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from fastrec import EASE, Interactions, ItemKNN
from fastrec.cli import commands as cli
from fastrec.evaluation import evaluate, per_user_split

COLUMNS = ["--user-col", "user", "--item-col", "item", "--weight-col", "rating"]


@pytest.fixture(scope="module")
def ratings(tmp_path_factory) -> Path:
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("item_item") / "r.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["user", "item", "rating"])
        for u in range(40):
            for i in rng.choice(25, size=8, replace=False):
                writer.writerow([f"u{u}", f"i{i}", int(rng.integers(1, 6))])
    return path


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _data(path: Path) -> Interactions:
    return Interactions.from_csv(path, user_col="user", item_col="item", weight_col="rating")


def test_fit_knn_passes_its_options(capsys, ratings, tmp_path):
    out = tmp_path / "knn.npz"
    code, _, err = _run(capsys, "fit", ratings, *COLUMNS, "--model", "knn", "--neighbours", 7,
                        "--similarity", "bm25", "--shrinkage", 2.5, "--threads", 1, "--out", out, "--quiet")
    assert code == 0, err
    model = ItemKNN.load(out)
    assert (model.k, model.similarity, model.shrinkage) == (7, "bm25", 2.5)
    want = ItemKNN(k=7, similarity="bm25", shrinkage=2.5, num_threads=1).fit(_data(ratings))
    assert np.allclose(model.item_similarity_.toarray(), want.item_similarity_.toarray(), rtol=1e-6, atol=0)
    assert np.array_equal(model.item_map_.labels, want.item_map_.labels)


def test_fit_ease_passes_regularization(capsys, ratings, tmp_path):
    out = tmp_path / "ease.npz"
    code, stdout, err = _run(capsys, "fit", ratings, *COLUMNS, "--model", "ease", "--regularization", 30,
                             "--out", out)
    assert code == 0, err
    assert "EASE(regularization=30.0)" in stdout
    model = EASE.load(out)
    want = EASE(regularization=30.0).fit(_data(ratings))
    assert np.allclose(model.item_factors_, want.item_factors_, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("model, options", [("ease", ["--regularization", 30]),
                                            ("knn", ["--neighbours", 5, "--similarity", "tfidf"])])
def test_evaluate_item_item_models_equals_the_library(capsys, ratings, model, options):
    code, stdout, err = _run(capsys, "evaluate", ratings, *COLUMNS, "--model", model, *options, "--k", 5,
                             "--metrics", "ndcg,recall", "--json", "--seed", 3)
    assert code == 0, err
    report = json.loads(stdout)
    train, test = per_user_split(_data(ratings), 0.2, random_state=3)
    estimator = EASE(regularization=30.0) if model == "ease" else ItemKNN(k=5, similarity="tfidf")
    want = evaluate(estimator.fit(train), train, test, k=5, metrics=("ndcg", "recall"))
    assert report["metrics"]["ndcg"] == pytest.approx(want["ndcg"], abs=1e-6)
    assert report["metrics"]["recall"] == pytest.approx(want["recall"], abs=1e-6)


@pytest.mark.parametrize("model, option, value, takers", [
    ("knn", "--factors", 4, "als or bpr or warp"),
    ("knn", "--regularization", 1.0, "als or bpr or warp or ease"),
    ("ease", "--iterations", 3, "als or bpr or warp"),
    ("ease", "--alpha", 2.0, "als"),
    ("ease", "--neighbours", 5, "knn"),
    ("als", "--similarity", "cosine", "knn"),
    ("warp", "--shrinkage", 1.0, "knn"),
])
def test_options_for_other_models_are_refused(capsys, ratings, tmp_path, model, option, value, takers):
    for command in ("fit", "evaluate"):
        extra = ["--out", tmp_path / "m.npz"] if command == "fit" else []
        code, _, err = _run(capsys, command, ratings, *COLUMNS, "--model", model, option, value, *extra)
        assert code == 1 and err.count("\n") == 1, err
        assert f"{option} does not apply to --model {model} (it is for --model {takers})" in err
    assert not (tmp_path / "m.npz").exists()
