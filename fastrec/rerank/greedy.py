"""The shared pieces of every greedy re-ranker: candidate checks, relevance scaling, the argmax step.

A re-ranker receives, per user, a row of candidate item ids (best first,
padded with ``-1``) and the model's scores for them.  It picks the final list
one position at a time: at each step the untaken candidate with the highest
objective wins, ties going to the earlier (better-scored) candidate, so a
re-ranker whose objective is the relevance alone returns the model's own list.

Relevance is the model's score rescaled per user to [0, 1] over that user's
candidates (min-max; 1 for every candidate when they all score the same), so
that one ``tradeoff`` means the same for every user and every model.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..utils.jit import njit

__all__ = ["check_candidates", "gather", "by_score", "n_chunks", "relevance_row", "best_untaken", "take_best"]


def check_candidates(ids: Any, scores: Any, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """2-D int32 candidate ids in [-1, n_items) and matching float64 scores (``-inf`` at padding)."""
    id_arr = np.asarray(ids)
    if id_arr.ndim == 1:
        id_arr = id_arr[None, :]
    if id_arr.ndim != 2:
        raise ValueError(f"ids must be a 2-D (n_users, n_candidates) array of item ids, got shape {id_arr.shape}")
    if id_arr.size and not np.issubdtype(id_arr.dtype, np.integer):
        raise TypeError(f"ids must hold integer item ids, got dtype {id_arr.dtype}")
    score_arr = np.asarray(scores, dtype=np.float64)
    if score_arr.size != id_arr.size:
        raise ValueError(f"scores must have the shape of ids {id_arr.shape}, got shape {score_arr.shape}")
    score_arr = score_arr.reshape(id_arr.shape)
    if id_arr.size:
        lo, hi = int(id_arr.min()), int(id_arr.max())
        if lo < -1 or hi >= n_items:
            raise IndexError(f"ids contains item {lo if lo < -1 else hi}; ids must be in [0, {n_items}) "
                             "or -1 for padding")
    valid = id_arr >= 0
    if np.isnan(score_arr[valid]).any():
        raise ValueError("scores contains NaN for a listed candidate")
    score_arr = np.where(valid, score_arr, -np.inf)
    return np.ascontiguousarray(id_arr, dtype=np.int32), np.ascontiguousarray(score_arr)


def gather(ids: np.ndarray, scores: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The chosen candidates' ids and model scores from per-row positions (-1: none)."""
    chosen = positions >= 0
    safe = np.where(chosen, positions, 0)
    out_ids = np.where(chosen, np.take_along_axis(ids, safe, axis=1), -1).astype(np.int32)
    out_scores = np.where(chosen, np.take_along_axis(scores, safe, axis=1), -np.inf)
    return out_ids, out_scores


def by_score(scores: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Each row's chosen positions reordered by the model's score (best first, ties by position).

    Used when the re-ranker's aim depends on the set of items only: the same
    items, the most relevant first.  Padding (-1) stays last.
    """
    chosen = positions >= 0
    at = np.take_along_axis(scores, np.where(chosen, positions, 0), axis=1)
    key = np.where(chosen, -at, np.inf)
    order = np.lexsort((np.where(chosen, positions, np.iinfo(np.int32).max), key), axis=-1)
    return np.take_along_axis(positions, order, axis=1)


def n_chunks(n_rows: int) -> int:
    """How many blocks of users a kernel's parallel loop takes (several per thread, for balance)."""
    import numba
    return max(1, min(n_rows, 8 * numba.get_num_threads()))


@njit()
def relevance_row(ids, scores, r, rel):  # pragma: no cover - compiled
    """Row r's scores rescaled to [0, 1] over its valid candidates, written into ``rel``.

    Min-max per row; 1 for every candidate when they all score the same; 0
    for a candidate the model scored -inf and for padding (never taken).
    """
    lo = np.inf
    hi = -np.inf
    for c in range(ids.shape[1]):
        if ids[r, c] >= 0 and np.isfinite(scores[r, c]):
            lo = min(lo, scores[r, c])
            hi = max(hi, scores[r, c])
    span = hi - lo
    for c in range(ids.shape[1]):
        if ids[r, c] < 0 or not np.isfinite(scores[r, c]):
            rel[c] = 0.0
        elif span > 0:
            rel[c] = (scores[r, c] - lo) / span
        else:
            rel[c] = 1.0


@njit()
def best_untaken(values, ids, r, taken):  # pragma: no cover - compiled
    """Row r's valid untaken candidate of highest value (the earliest on ties), or -1."""
    best = -1
    best_value = -np.inf
    for c in range(values.shape[0]):
        if ids[r, c] < 0 or taken[c]:
            continue
        if best < 0 or values[c] > best_value:
            best = c
            best_value = values[c]
    return best


@njit()
def take_best(values, ids, r, taken, out, step):  # pragma: no cover - compiled
    """One greedy step for row r: take the valid untaken candidate of highest value (the earliest on ties).

    Marks it taken, writes its position to ``out[r, step]`` and returns it;
    returns -1 when no candidate is left.
    """
    best = best_untaken(values, ids, r, taken)
    if best >= 0:
        taken[best] = True
        out[r, step] = best
    return best
