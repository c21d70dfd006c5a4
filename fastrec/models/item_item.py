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
        row = state.user_items[[user_id]]
    items, parts = contributions(row, weights_to(item_id))
    keep = parts != 0
    items, parts = items[keep], parts[keep]
    order = np.lexsort((items, -parts))
    if n is not None:
        order = order[:n]
    because = items[order].astype(np.int32)
    return float(parts.sum()), (state.item_map.to_ids(because) if raw_ids else because), parts[order]
