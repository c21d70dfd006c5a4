"""``fastrec demo``: recommendations, explanations and held-out figures on the embedded data.

The demo fits ALS on 80% of each user's ratings of the MovieTweetings 100K
snapshot shipped with fastrec, then shows what a few users watched, what we
recommend them and why, what fans of popular films also like, and how the
model scores on the held-out 20% next to a most-popular baseline; last, a
brand-new viewer known only by the genres she likes, and a new title nobody
has rated reaching the viewers of its genre (``demo_cold.py``).

The settings (every rating counts as "watched"; a strong constant penalty)
were chosen by ndcg@10 on held-out splits of this data; a plain 0-10 rating
used as confidence scores the same.  They suit this small, very sparse,
popularity-heavy set (6 ratings per user), not data sets in general.
"""
from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import numpy as np
import scipy.sparse as sp

from ..kernels.topk import top_k
from ..utils.validation import check_int
from ..models.als import ALS
from ..datasets import load_demo
from ..evaluation import evaluate, per_user_split, ranking_metrics

__all__ = ["DEMO_PARAMS", "run_demo"]

#: ALS settings for the demo data, chosen by held-out ndcg@10 (see the module docstring).
DEMO_PARAMS = dict(factors=64, alpha=40.0, regularization=300.0, regularization_scaling="none",
                   iterations=15)
_METRICS = ("ndcg", "precision", "recall", "map", "hit_rate", "coverage")
_TEST_FRACTION = 0.2
_TITLE_WIDTH = 44


def _short(title: str, width: int = _TITLE_WIDTH) -> str:
    return title if len(title) <= width else title[: width - 1] + "…"


def _popularity_ranking(train: sp.csr_matrix, users: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` most popular items each user has not rated: the baseline to beat."""
    popularity = np.bincount(train.indices, minlength=train.shape[1]).astype(np.float32)
    queries = np.ones((users.size, 1), dtype=np.float32)
    ranked, _ = top_k(queries, popularity[:, None], None, k, train[users])
    return ranked


def _pick_users(train: sp.csr_matrix, test: sp.csr_matrix, n_users: int, seed: int) -> np.ndarray:
    """Users with a handful of training ratings and some held out, drawn with ``seed``."""
    n_train, n_test = np.diff(train.indptr), np.diff(test.indptr)
    eligible = np.flatnonzero((n_train >= 5) & (n_train <= 12) & (n_test >= 1))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(eligible, size=min(n_users, eligible.size), replace=False))


def _show_user(out: TextIO, model: ALS, user: int, ratings: sp.csr_matrix, held_out: sp.csr_matrix,
               titles: np.ndarray, user_id: Any, n_recs: int) -> None:
    row = ratings[user]
    order = np.lexsort((row.indices, -row.data))
    out.write(f"\nUser {user_id} rated {row.nnz} films:\n")
    for pos in order:
        out.write(f"  {row.data[pos]:>4.0f}/10  {titles[row.indices[pos]]}\n")
    ids, _ = model.recommend(user, n=n_recs)
    hidden = set(held_out[user].indices.tolist())
    out.write("  We recommend:\n")
    for rank, item in enumerate(ids, start=1):
        _, because, _ = model.explain(user, int(item), n=1)  # the largest contribution
        reason = f"because you watched {_short(str(titles[because[0]]), 36)}" if because.size else ""
        mark = "*" if int(item) in hidden else " "
        out.write(f"   {mark}{rank}. {_short(str(titles[item])):<{_TITLE_WIDTH}}  {reason}".rstrip() + "\n")


def _show_fans(out: TextIO, model: ALS, item: int, titles: np.ndarray, n_items: int,
               n_recs: int) -> None:
    # a new user whose only film is `item` (fold-in): what its fans are recommended
    row = sp.csr_matrix((np.ones(1, dtype=np.float32), [item], [0, 1]), shape=(1, n_items))
    ids, _ = model.recommend(None, X=row, n=n_recs)
    out.write(f"  Fans of {titles[item]} also like:\n")
    line = "   "
    for title in (_short(str(titles[i]), 40) for i in ids[0] if i >= 0):
        if len(line) + len(title) > 96:  # wrap between titles, never inside one
            out.write(line + "\n")
            line = "   "
        line += f" {title};"
    out.write(line.rstrip(" ;") + "\n")


def _show_metrics(out: TextIO, ours: dict[str, float], baseline: dict[str, float], k: int) -> None:
    out.write(f"\n  {'metric':<14}{'ALS':>8}{'most popular':>15}\n")
    for name in _METRICS:
        out.write(f"  {name + '@' + str(k):<14}{ours[name]:>8.4f}{baseline[name]:>15.4f}\n")
    out.write(f"  (coverage: share of the films that appear in someone's top {k})\n")


def run_demo(seed: int = 0, n_users: int = 3, n_recs: int = 5, n_titles: int = 3, k: int = 10,
             num_threads: int = 0, stream: TextIO | None = None) -> dict[str, Any]:
    """Run the demo, printing to ``stream`` (stdout by default).

    Parameters
    ----------
    seed : int
        Seeds the split, the model and the choice of users shown; the output
        is the same for the same seed and thread count.
    n_users, n_recs, n_titles : int
        Users shown, recommendations per user, popular films with "fans also like".
    k : int
        Cut-off of the held-out metrics.
    num_threads : int
        0 uses every CPU this process may use.

    Returns
    -------
    dict with ``metrics`` (ALS), ``baseline`` (most popular), ``params`` and
    the ``seconds`` each step took.
    """
    seed = check_int(seed, "seed", minimum=0)
    n_users = check_int(n_users, "n_users", minimum=1)
    n_recs = check_int(n_recs, "n_recs", minimum=1)
    n_titles = check_int(n_titles, "n_titles", minimum=1)
    k = check_int(k, "k", minimum=1)
    out = stream or sys.stdout
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    data = load_demo()
    titles = data.item_metadata["title"]
    n_users_all, n_items = data.shape
    seconds["load"] = time.perf_counter() - start

    tick = time.perf_counter()
    train, test = per_user_split(data, test_fraction=_TEST_FRACTION, random_state=seed)
    seconds["split"] = time.perf_counter() - tick
    tick = time.perf_counter()
    model = ALS(**DEMO_PARAMS, random_state=seed, num_threads=num_threads)
    model.fit(train.binarize(0))  # every rating, even a low one, says "watched"
    seconds["fit"] = time.perf_counter() - tick

    out.write(f"fastrec demo: MovieTweetings 100K ({n_users_all:,} users, {n_items:,} films, "
              f"{data.nnz:,} ratings 0-10)\n")
    held = round(100 * _TEST_FRACTION)
    out.write(f"Fitted {type(model).__name__}(factors={DEMO_PARAMS['factors']}, "
              f"alpha={DEMO_PARAMS['alpha']:g}, regularization={DEMO_PARAMS['regularization']:g}) "
              f"on {100 - held}% of each user's ratings in {seconds['fit']:.1f} s.\n"
              f"The other {held}% are held out: * marks a recommended film the user did rate.\n")

    tick = time.perf_counter()
    train_csr, test_csr = train.to_csr(), test.to_csr()
    for user in _pick_users(train_csr, test_csr, n_users, seed):
        _show_user(out, model, int(user), train_csr, test_csr, titles,
                   data.user_map.to_ids([user])[0], n_recs)

    out.write("\nPopular films:\n")
    popularity = np.bincount(train_csr.indices, minlength=n_items)
    # every 10th of the most popular films, for variety: the top 3 are all 2013 blockbusters
    for item in np.lexsort((np.arange(n_items), -popularity))[:10 * n_titles:10]:
        _show_fans(out, model, int(item), titles, n_items, n_recs)
    seconds["show"] = time.perf_counter() - tick

    tick = time.perf_counter()
    ours = evaluate(model, train, test, k=k, metrics=_METRICS)
    users = np.flatnonzero(np.diff(test_csr.indptr))
    baseline = ranking_metrics(_popularity_ranking(train_csr, users, k), test_csr, k=k,
                               metrics=_METRICS, users=users, train=train_csr)
    seconds["evaluate"] = time.perf_counter() - tick
    out.write(f"\nHeld-out evaluation: {ours['n_users_evaluated']:,} users, "
              f"{test.nnz:,} held-out ratings (seed {seed})")
    _show_metrics(out, ours, baseline, k)
    tick = time.perf_counter()
    calibration = _show_calibration(out, model, data, train, test, k)
    seconds["rerank"] = time.perf_counter() - tick
    tick = time.perf_counter()
    from .demo_cold import show_cold_start
    cold = show_cold_start(out, data, titles, seed, num_threads, n_recs=n_recs, k=k)
    seconds["cold_start"] = time.perf_counter() - tick
    seconds["total"] = time.perf_counter() - start
    out.write(f"\nDone in {seconds['total']:.1f} s. Try: fastrec fit --help\n")
    return {"metrics": ours, "baseline": baseline, "calibration": calibration, "params": dict(DEMO_PARAMS),
            "cold_start": cold, "seconds": seconds}


def _show_calibration(out: TextIO, model: Any, data: Any, train: Any, test: Any, k: int) -> dict[str, Any]:
    """Before/after figures of re-ranking for genre calibration (fastrec.rerank.Calibrated)."""
    from ..datasets import item_genres
    from ..evaluation import miscalibration
    from ..evaluation.evaluate import ranking_metrics as score, recommended_lists
    from ..rerank import Calibrated
    genres, _ = item_genres(data)
    reranker = Calibrated(genres, tradeoff=0.5)
    figures: dict[str, Any] = {}
    for label, rerank in (("before", None), ("after", reranker)):
        users, lists, relevant, train_csr = recommended_lists(model, train, test, k, rerank=rerank)
        figures[label] = {"miscalibration": miscalibration(lists, train_csr, genres, k, users=users),
                          "ndcg": score(lists, relevant, k, ["ndcg"], users=users)["ndcg"]}
    out.write("\nRe-ranked for genre calibration (fastrec.rerank.Calibrated, tradeoff 0.5): each list's "
              "genre mix follows the user's history.\n")
    for name in ("miscalibration", "ndcg"):
        before, after = figures["before"][name], figures["after"][name]
        out.write(f"  {name + '@' + str(k):<20}{before:.4f} -> {after:.4f} ({after / before - 1:+.0%})\n")
    return figures
