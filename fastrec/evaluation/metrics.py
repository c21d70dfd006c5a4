"""Accuracy metrics at k of ranked id lists against held-out test interactions.

Relevance is binary: an item is relevant to a user when the test matrix stores
a positive value for the pair.  Metrics follow the given ranking order (ties
in the model's scores were already broken by whoever produced the ranking).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from ..utils.jit import njit, prange

from ..utils.validation import check_interactions

__all__ = ["ACCURACY_METRICS", "accuracy_per_user", "check_ranking", "relevant_items"]

# column order of the kernel's output
ACCURACY_METRICS = ("precision", "recall", "map", "ndcg", "mrr", "hit_rate", "auc")


def check_ranking(ranked_ids: Any, n_items: int, name: str = "ranked_ids") -> np.ndarray:
    """A 2-D int32 copy of ranked item ids in [-1, n_items), each row free of repeats.

    -1 means "no item" (padding).
    """
    arr = np.asarray(ranked_ids)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n_users, n) array of item ids, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integer item ids, got dtype {arr.dtype}")
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < -1:
            raise IndexError(f"{name} contains id {lo}; ids must be in [0, {n_items}) or -1 for padding")
        if hi >= n_items:
            raise IndexError(f"{name} contains id {hi} but the test matrix has {n_items} items")
    out = np.ascontiguousarray(arr, dtype=np.int32)
    if out.shape[1] > 1:
        ordered = np.sort(out, axis=1)
        repeated = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)
        if repeated.any():
            row = int(np.flatnonzero(repeated.any(axis=1))[0])
            raise ValueError(f"{name} row {row} lists an item more than once; rankings must be duplicate-free")
    return out


def relevant_items(test: Any, name: str = "test", n_items: int | None = None) -> sp.csr_matrix:
    """Canonical CSR of the positive test entries (sorted indices, values 1)."""
    csr = check_interactions(test, name, dtype=np.float32, shape=(None, n_items), allow_empty=True)
    csr.data = (csr.data > 0).astype(np.float32)
    csr.eliminate_zeros()
    csr.indptr = csr.indptr.astype(np.int64, copy=False)
    return csr


@njit(parallel=True)
def _accuracy_kernel(ranked, k, rows, indptr, indices, n_negatives):  # pragma: no cover - compiled
    """Per ranking row: the ACCURACY_METRICS columns, NaN rows for users without test items."""
    m = ranked.shape[0]
    depth = min(k, ranked.shape[1])
    out = np.full((m, 7), np.nan)
    for r in prange(m):
        start, end = indptr[rows[r]], indptr[rows[r] + 1]
        n_rel = end - start
        if n_rel == 0:
            continue
        relevant_row = indices[start:end]
        is_hit = np.zeros(depth, dtype=np.bool_)
        hits = 0
        listed_negatives = 0
        ap = 0.0
        dcg = 0.0
        rr = 0.0
        for pos in range(depth):
            item = ranked[r, pos]
            if item < 0:
                continue
            at = np.searchsorted(relevant_row, item)
            if at < n_rel and relevant_row[at] == item:
                is_hit[pos] = True
                hits += 1
                ap += hits / (pos + 1.0)
                dcg += 1.0 / np.log2(pos + 2.0)
                if hits == 1:
                    rr = 1.0 / (pos + 1.0)
            else:
                listed_negatives += 1
        idcg = 0.0
        for pos in range(min(k, n_rel)):
            idcg += 1.0 / np.log2(pos + 2.0)
        out[r, 0] = hits / k
        out[r, 1] = hits / n_rel
        out[r, 2] = ap / min(k, n_rel)
        out[r, 3] = dcg / idcg
        out[r, 4] = rr
        out[r, 5] = 1.0 if hits > 0 else 0.0
        # AUC: listed items outrank unlisted ones; unlisted items tie among themselves
        negatives = max(n_negatives[r], listed_negatives)
        if negatives > 0:
            unlisted_negatives = negatives - listed_negatives
            pairs = 0.0
            negatives_above = 0
            for pos in range(depth):
                if is_hit[pos]:
                    pairs += listed_negatives - negatives_above + unlisted_negatives
                elif ranked[r, pos] >= 0:
                    negatives_above += 1
            pairs += 0.5 * (n_rel - hits) * unlisted_negatives
            out[r, 6] = pairs / (n_rel * negatives)
    return out


def accuracy_per_user(ranked: np.ndarray, k: int, rows: np.ndarray, relevant: sp.csr_matrix,
                      excluded: np.ndarray | None) -> np.ndarray:
    """(n_rows, 7) float64 accuracy metrics per ranking row (see ``ACCURACY_METRICS``).

    Parameters
    ----------
    ranked : validated int32 ranking (``check_ranking``).
    rows : int64 test row of each ranking row.
    relevant : output of ``relevant_items``.
    excluded : per ranking row, how many non-test items could not be ranked
        (the user's training items); they are not AUC negatives.  None for none.
    """
    n_rel = np.diff(relevant.indptr)[rows]
    n_negatives = relevant.shape[1] - n_rel
    if excluded is not None:
        n_negatives = np.maximum(n_negatives - excluded, 0)
    return _accuracy_kernel(ranked, np.int64(k), np.ascontiguousarray(rows, dtype=np.int64),
                            relevant.indptr, relevant.indices,
                            np.ascontiguousarray(n_negatives, dtype=np.int64))
