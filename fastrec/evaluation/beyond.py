"""Beyond-accuracy metrics of ranked id lists: coverage, exposure, popularity, novelty, diversity.

Definitions (all over the first ``k`` ranked ids, ignoring -1 padding):

- item popularity: number of users with a stored training interaction with the item.
- ``coverage``: distinct recommended items / catalogue size.
- ``gini``: Gini index of how often each catalogue item is recommended
  (0: every item equally often; close to 1: a few items take all exposure).
- ``popularity``: mean popularity of a user's recommended items;
  ``test_popularity``: the same for the user's test items, for comparison.
- ``long_tail``: share of a user's recommended items in the long tail.  The
  head is the smallest set of most popular items (ties by lower id) holding
  ``head_share`` (default 80%) of all training interactions; every other item,
  including items never interacted with, is in the tail.
- ``novelty``: mean self-information ``-log2(popularity / n_train_users)`` of
  the recommended items, with ``n_train_users`` the users having any training
  interaction; items with no training interactions count as having one.
- ``diversity``: intra-list diversity, the mean over pairs of recommended items
  of ``1 - cosine(features_i, features_j)``; a zero feature vector has cosine
  0 with everything.  NaN for lists of fewer than two items.

Per-user values are NaN for empty lists; summaries average the defined values.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from ..utils.jit import njit, prange

__all__ = ["item_popularity", "long_tail_items", "per_user_beyond", "global_beyond",
           "PER_USER_BEYOND", "GLOBAL_BEYOND"]

PER_USER_BEYOND = ("popularity", "test_popularity", "long_tail", "novelty", "diversity")
GLOBAL_BEYOND = ("coverage", "gini")


def item_popularity(train: sp.csr_matrix) -> np.ndarray:
    """Users per item with a stored training interaction (float64, length n_items)."""
    return np.bincount(train.indices, minlength=train.shape[1]).astype(np.float64)


def long_tail_items(popularity: np.ndarray, head_share: float = 0.8) -> np.ndarray:
    """Boolean mask of long-tail items: those outside the head holding ``head_share`` of interactions."""
    total = popularity.sum()
    tail = np.ones(popularity.size, dtype=bool)
    if total <= 0:
        return tail
    order = np.lexsort((np.arange(popularity.size), -popularity))
    cumulative = np.cumsum(popularity[order])
    # the tolerance keeps float rounding of head_share * total from adding an item
    n_head = min(int(np.searchsorted(cumulative, head_share * total * (1 - 1e-12))) + 1, popularity.size)
    tail[order[:n_head]] = False
    return tail


def _row_means(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Mean of ``values`` over ``valid`` entries per row; NaN for rows with none."""
    counts = valid.sum(axis=1)
    sums = np.where(valid, values, 0.0).sum(axis=1)
    out = np.full(values.shape[0], np.nan)
    np.divide(sums, counts, out=out, where=counts > 0)
    return out


@njit(parallel=True)
def _intra_list_distance(ranked, depth, unit):  # pragma: no cover - compiled
    out = np.full(ranked.shape[0], np.nan)
    for r in prange(ranked.shape[0]):
        total = 0.0
        pairs = 0
        for a in range(depth):
            i = ranked[r, a]
            if i < 0:
                continue
            for b in range(a + 1, depth):
                j = ranked[r, b]
                if j < 0:
                    continue
                dot = 0.0
                for f in range(unit.shape[1]):
                    dot += unit[i, f] * unit[j, f]
                total += 1.0 - dot
                pairs += 1
        if pairs > 0:
            out[r] = total / pairs
    return out


def _unit_rows(features) -> np.ndarray:
    dense = features.toarray() if sp.issparse(features) else np.asarray(features)
    dense = np.ascontiguousarray(dense, dtype=np.float64)
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    return dense / np.where(norms > 0, norms, 1.0)


def per_user_beyond(names: list[str], top: np.ndarray, rows: np.ndarray, relevant: sp.csr_matrix,
                    train: sp.csr_matrix | None, item_features, head_share: float) -> dict[str, np.ndarray]:
    """Per-ranking-row values of the requested ``PER_USER_BEYOND`` metrics.

    ``top`` is the int32 ranking cut to its first k columns.
    """
    valid = top >= 0
    safe = np.where(valid, top, 0)
    out: dict[str, np.ndarray] = {}
    popularity = item_popularity(train) if train is not None else None
    for name in names:
        if name == "diversity":
            out[name] = _intra_list_distance(top, np.int64(top.shape[1]), _unit_rows(item_features))
        elif name == "popularity":
            out[name] = _row_means(popularity[safe], valid)
        elif name == "long_tail":
            tail = long_tail_items(popularity, head_share)
            out[name] = _row_means(tail[safe].astype(np.float64), valid)
        elif name == "novelty":
            n_train_users = max(int(np.count_nonzero(np.diff(train.indptr))), 1)
            info = -np.log2(np.maximum(popularity, 1.0) / n_train_users)
            out[name] = _row_means(info[safe], valid)
        elif name == "test_popularity":
            rel = relevant[rows]
            counts = np.diff(rel.indptr)
            sums = rel @ popularity
            values = np.full(rows.size, np.nan)
            np.divide(sums, counts, out=values, where=counts > 0)
            out[name] = values
    return out


def gini_index(counts: np.ndarray) -> float:
    """Gini index of non-negative counts (0 for all-equal; NaN when all are zero)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = x.size, x.sum()
    if n == 0 or total <= 0:
        return float("nan")
    ranks = np.arange(1, n + 1)
    return float(((2 * ranks - n - 1) * x).sum() / (n * total))


def global_beyond(names: list[str], top: np.ndarray, n_items: int) -> dict[str, float]:
    """Values of the requested ``GLOBAL_BEYOND`` metrics over all ranking rows."""
    exposure = np.bincount(top[top >= 0], minlength=n_items)
    out: dict[str, float] = {}
    for name in names:
        if name == "coverage":
            out[name] = float(np.count_nonzero(exposure)) / n_items if n_items else float("nan")
        elif name == "gini":
            out[name] = gini_index(exposure)
    return out
