"""What item-item models share: a user's score for item i is ``sum_j r_uj S[j, i]``.

``S[j, i]`` is how much having interacted with j speaks for i.  ``explain``
lists those terms ("because you watched j"), and partial fits replace a
user's stored row, which is all such a model knows about a user.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ..utils.validation import check_bool, check_int, check_interactions, check_scalar_id
from .serving import raw_to_index
from .state import FittedState

__all__ = ["contributions", "explain_item_item", "liked_rows"]


def liked_rows(rows: sp.csr_matrix) -> sp.csr_matrix:
    """The positive entries of ``rows``: thumbs down (negative values) speak for nothing."""
    liked = rows.copy()
    liked.data = np.where(liked.data > 0, liked.data, 0).astype(liked.dtype, copy=False)
    liked.eliminate_zeros()
    return liked


def contributions(row: sp.csr_matrix, weights_to_item: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(items j of a one-row CSR, r_uj * weight(j -> i)) for the liked items of the row."""
    liked = liked_rows(row)
    return liked.indices, liked.data.astype(np.float64) * weights_to_item[liked.indices]


def explain_item_item(model: Any, state: FittedState, weights_to: Any, user: Any, item: Any, X: Any,
                      n: int | None, raw_ids: bool) -> tuple[float, np.ndarray, np.ndarray]:
    """``explain`` for item-item models; ``weights_to(i)`` gives S[:, i] as a dense vector."""
    raw_ids = check_bool(raw_ids, "raw_ids")
    if raw_ids:
        user = raw_to_index(state, "users", user, "user")
        item = raw_to_index(state, "items", item, "item")
    user_id = check_scalar_id(user, state.n_users, "user")
    item_id = check_scalar_id(item, state.n_items, "item")
    if n is not None:
        n = check_int(n, "n", minimum=0)
    if X is not None:
        row = check_interactions(X, "X", dtype=state.dtype, shape=(1, state.n_items))
    else:
        row = state.seen_rows(np.array([user_id]))
    items, parts = contributions(row, weights_to(item_id))
    keep = parts != 0
    items, parts = items[keep], parts[keep]
    order = np.lexsort((items, -parts))
    if n is not None:
        order = order[:n]
    because = items[order].astype(np.int32)
    return float(parts.sum()), (state.item_map.to_ids(because) if raw_ids else because), parts[order]


def item_features_only(user_features: Any, model_name: str) -> None:
    """Item-item models know a user by their interactions only: ``user_features`` is refused."""
    if user_features is not None:
        raise TypeError(f"user_features: {model_name} scores users from their interactions only, so it has no "
                        "use for user features; it takes item_features (items without interactions are then "
                        "scored from their features), or use ALS/BPR for new users described by features")


def cold_item_entries(S: sp.csr_matrix, side: Any, counts: np.ndarray, k: int, dtype: Any
                      ) -> tuple[sp.csr_matrix, np.ndarray]:
    """Similarities of items without interactions, from an exact ridge map of their features.

    The map ``W`` fitted on the items with interactions takes an item's side
    features to its column ``S[:, i]`` (``ridge_map``, the penalty of ALS's
    maps); a cold item's column is its features' image, and its row ``S[i, :]``
    comes from a second map fitted to the rows.  Each keeps its ``k`` largest
    positive entries over items with interactions.  Returns ``S`` with those
    entries added and the column map (n_features x n_items, zero for identity
    features) to keep as the side's factors.
    """
    from .side import RIDGE_REGULARIZATION
    n_items = S.shape[0]
    W = np.zeros((side.n_features, n_items), dtype=dtype)
    cold = np.flatnonzero((counts == 0) & side.has_features())
    warm = np.flatnonzero(counts > 0)
    if cold.size == 0 or warm.size == 0 or side.n_side == 0:
        return S, W
    F = side.matrix[:, :side.n_side].astype(np.float64)
    Fw = F[warm]
    gram = np.asarray((Fw.T @ Fw).todense()) + RIDGE_REGULARIZATION * np.eye(side.n_side)
    by_column = S.T.tocsr()
    maps = [np.linalg.solve(gram, np.asarray((Fw.T @ M[warm]).todense())) for M in (by_column, S)]
    W[:side.n_side] = maps[0]
    rows, cols, vals = [], [], []
    for lo in range(0, cold.size, 1024):
        chunk = cold[lo:lo + 1024]
        for transpose, Wm in zip((True, False), maps):
            image = np.asarray(F[chunk] @ Wm)
            image[:, counts == 0] = 0  # cold items speak only for and of items with interactions
            top = np.argsort(-image, axis=1, kind="stable")[:, :k]
            values = np.take_along_axis(image, top, axis=1)
            keep = values > 0
            owner = np.broadcast_to(chunk[:, None], top.shape)[keep]
            rows.append(top[keep] if transpose else owner)
            cols.append(owner if transpose else top[keep])
            vals.append(values[keep])
    extra = sp.csr_matrix((np.concatenate(vals).astype(dtype), (np.concatenate(rows), np.concatenate(cols))),
                          shape=S.shape)
    out = sp.csr_matrix(S + extra, dtype=dtype)
    out.sort_indices()
    out.indices = out.indices.astype(np.int32, copy=False)
    out.indptr = out.indptr.astype(np.int64, copy=False)
    return out, W
