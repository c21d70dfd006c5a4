"""``tradeoff``: accuracy against the re-ranker's own aim, for a range of its tradeoff values."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..utils.table import Table
from ..utils.validation import check_int
from .beyond import per_user_beyond
from .evaluate import ranking_metrics, recommended_lists
from .fairness import aplt, fair_share, miscalibration

__all__ = ["tradeoff", "fairness_of", "DEFAULT_VALUES"]

DEFAULT_VALUES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9)
# lower is better for these; higher for the others
LOWER_IS_BETTER = ("miscalibration", "arp")


def fairness_of(reranker: Any, model: Any, train: Any, ranked: np.ndarray, users: np.ndarray,
                k: int) -> float:
    """The value of ``reranker.metric`` (what the re-ranker improves) for lists ``ranked`` of ``users``."""
    name = reranker.metric
    if name == "miscalibration":
        groups = reranker.groups_for(model._require_state())
        return miscalibration(ranked, train, groups, k, reranker.smoothing, users=users)
    if name == "aplt":
        return aplt(ranked, train, k, reranker.head_share, users=users)
    if name == "diversity":
        features = reranker.similarity
        if isinstance(features, str) or features.shape[0] == features.shape[1]:
            features = model.item_factors_
        values = per_user_beyond(["diversity"], np.ascontiguousarray(ranked[:, :k]), users, None, None,
                                 features, 0.8)["diversity"]
        defined = values[~np.isnan(values)]
        return float(defined.mean()) if defined.size else float("nan")
    if name == "fair_share":
        mask = reranker.protected_mask(model._require_state())
        return fair_share(ranked, mask, mask.size, k, reranker.p, reranker.alpha, reranker.adjust)
    raise ValueError(f"reranker: no metric is known for {type(reranker).__name__}")


def tradeoff(model: Any, train: Any, test: Any, reranker: Any, values: Sequence[float] | None = None,
             k: int = 10, batch_size: int = 2048, fold_in: bool = False) -> Table:
    """ndcg@k and the re-ranker's matching metric for each tradeoff value.

    Parameters
    ----------
    model : fitted fastrec model
    train, test : as in ``evaluate`` (training items are never recommended)
    reranker : fastrec.rerank re-ranker
        Its ``with_tradeoff(value)`` copies are scored; the swept parameter
        is ``tradeoff`` (``p`` for ``FairTopK``).
    values : sequence of float, optional
        Default ``DEFAULT_VALUES`` (for FairTopK: 0.1 to 0.6).
    k : int
    batch_size, fold_in : as in ``evaluate``.

    Returns
    -------
    Table
        Columns ``value`` (of the swept parameter), ``ndcg``, the metric
        named by ``reranker.metric`` (miscalibration, aplt, diversity or
        fair_share) and ``ndcg_change`` / ``metric_change``: relative to the
        model's own lists (the first row is the model without re-ranking,
        ``value`` NaN).
    """
    from ..rerank import Reranker
    if not isinstance(reranker, Reranker):
        raise TypeError(f"reranker must be a fastrec.rerank re-ranker, got {type(reranker).__name__}")
    k = check_int(k, "k", minimum=1)
    if values is None:
        values = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6) if reranker.swept == "p" else DEFAULT_VALUES
    values = [float(v) for v in np.atleast_1d(np.asarray(values, dtype=np.float64))]
    if not values:
        raise ValueError("values must hold at least one tradeoff value")
    variants = [(float("nan"), None)] + [(v, reranker.with_tradeoff(v)) for v in values]
    rows = []
    for value, variant in variants:
        users, ranked, relevant, train_csr = recommended_lists(model, train, test, k, batch_size,
                                                               fold_in=fold_in, rerank=variant)
        ndcg = ranking_metrics(ranked, relevant, k, ["ndcg"], users=users)["ndcg"]
        metric = fairness_of(variant or reranker, model, train_csr, ranked, users, k)
        rows.append({"value": value, "ndcg": ndcg, reranker.metric: metric})
    base = rows[0]
    for row in rows:
        row["ndcg_change"] = row["ndcg"] / base["ndcg"] - 1 if base["ndcg"] else float("nan")
        row["metric_change"] = (row[reranker.metric] / base[reranker.metric] - 1
                                if base[reranker.metric] else float("nan"))
    return Table.from_records(rows)
