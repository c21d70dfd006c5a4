"""``model.recommend(..., rerank=R)``: fetch ``R.candidates`` candidates, then re-rank them."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..kernels.topk import candidate_ids
from ..utils.validation import check_ids, check_interactions, check_n
from .base import Reranker

__all__ = ["recommend_reranked"]


def recommend_reranked(model: Any, state: Any, reranker: Any, users: Any, n: Any, exclude_seen: Any,
                       exclude: Any, candidates: Any, X: Any, recalculate: Any
                       ) -> tuple[np.ndarray, np.ndarray, bool]:
    """The re-ranked padded 2-D answer in indices, and whether one user was asked for."""
    if not isinstance(reranker, Reranker):
        raise TypeError(f"rerank must be a fastrec.rerank re-ranker (Calibrated, PopularityDebias, MMR, "
                        f"FairTopK), got {type(reranker).__name__}")
    n = reranker.check_n(check_n(n), state.n_items)
    ids, scores, scalar = model._recommend_indices(state, users, max(n, reranker.candidates), exclude_seen,
                                                   exclude, candidates, X, recalculate)
    user_ids = None if users is None else check_ids(users, state.n_users, "users")[0]
    fresh = None if X is None else check_interactions(X, "X", dtype=state.item_factors.dtype,
                                                      shape=(None, state.n_items), allow_empty=True)
    allowed = candidate_ids(candidates, state.n_items)

    def fetch(rows: np.ndarray, item_ids: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """The same request for some rows, restricted to ``item_ids`` (and the caller's candidates)."""
        if allowed is not None:
            item_ids = np.intersect1d(item_ids, allowed)
        row_users = None if user_ids is None else user_ids[rows]
        row_X = None if fresh is None else fresh[rows]
        part_ids, part_scores, _ = model._recommend_indices(state, row_users, m, exclude_seen, exclude, item_ids,
                                                            row_X, recalculate)
        return part_ids, part_scores

    history = reranker.history(state, user_ids, fresh, ids.shape[0])
    out_ids, out_scores = reranker._rerank(state, history, ids, scores.astype(np.float64), n, fetch)
    return out_ids, out_scores.astype(scores.dtype), scalar
