"""``Calibrated``: lists whose genre mix follows the user's history (Steck, RecSys 2018).

Each item spreads a weight of 1 over its groups (1/|groups| each, or in
proportion to the given matrix's row).  The user's distribution ``p(g|u)`` is
the mean of those vectors over the items in the history; a list's
``q(g|I)`` is their mean over the items of the list, smoothed as
``q~ = (1 - a) q + a p`` with ``a = smoothing``.  The list is built greedily on

    (1 - tradeoff) * relevance(i) - tradeoff * KL(p || q~(I + {i}))

with ``KL(p||q~) = sum_g p_g log(p_g / q~_g)`` over the groups the user has.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ..utils.jit import njit, prange
from ..utils.validation import check_float
from .base import Reranker, item_group_shares
from .greedy import n_chunks, relevance_row, take_best

__all__ = ["Calibrated", "check_item_groups", "normalized_groups"]


def check_item_groups(item_groups: Any, name: str = "item_groups") -> sp.csr_matrix:
    """An items x groups matrix of non-negative finite weights, as float64 CSR."""
    if sp.issparse(item_groups):
        matrix = sp.csr_matrix(item_groups, dtype=np.float64)
    else:
        arr = np.asarray(item_groups)
        if arr.ndim != 2:
            raise ValueError(f"{name} must be a 2-D items x groups matrix, got shape {arr.shape}")
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
        matrix = sp.csr_matrix(arr.astype(np.float64))
    if matrix.shape[1] == 0:
        raise ValueError(f"{name} has no groups (shape {matrix.shape})")
    if matrix.nnz and (not np.isfinite(matrix.data).all() or matrix.data.min() < 0):
        raise ValueError(f"{name} must hold finite non-negative weights")
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    return matrix


def normalized_groups(groups: sp.csr_matrix) -> sp.csr_matrix:
    """Rows rescaled to sum to 1 (p(g|i)); items without groups stay empty."""
    sums = np.asarray(groups.sum(axis=1)).ravel()
    scale = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    out = sp.csr_matrix(sp.diags(scale) @ groups)
    out.sort_indices()
    return out


class Calibrated(Reranker):
    """Calibrated recommendations (Steck 2018): the list's group mix follows the user's.

    Parameters
    ----------
    item_groups : (n_items, n_groups) array or sparse matrix
        Group membership (genres) of each item, aligned with the model's
        item indices; ``fastrec.datasets.item_genres`` builds it from an
        ``Interactions``' metadata.
    tradeoff : float in [0, 1]
        lambda: 0 keeps the model's list, 1 minimises the miscalibration only.
    smoothing : float in (0, 1]
        alpha in ``q~ = (1 - alpha) q + alpha p`` (keeps the KL finite).
    candidates : int
        Candidates fetched per user by ``recommend(..., rerank=)``.
    """

    metric = "miscalibration"

    def __init__(self, item_groups: Any, tradeoff: float = 0.5, smoothing: float = 0.01,
                 candidates: int = 100):
        super().__init__(tradeoff, candidates)
        self.item_groups = check_item_groups(item_groups)
        self.smoothing = check_float(smoothing, "smoothing", minimum=0.0, maximum=1.0, strict_minimum=True)
        self._p_given_item = normalized_groups(self.item_groups)

    def groups_for(self, n_items: int) -> sp.csr_matrix:
        if self.item_groups.shape[0] != n_items:
            raise ValueError(f"item_groups has {self.item_groups.shape[0]} rows but the model has {n_items} "
                             "items; pass one row per item, aligned with the model's item indices")
        return self._p_given_item

    def _select(self, state: Any, history: sp.csr_matrix, ids: np.ndarray, scores: np.ndarray,
                n: int) -> np.ndarray:
        groups = self.groups_for(state.n_items)
        profiles = item_group_shares(history, groups)
        return _calibrated_kernel(ids, scores, np.int64(n), self.tradeoff, self.smoothing,
                                  groups.indptr.astype(np.int64), groups.indices.astype(np.int64),
                                  groups.data, profiles, n_chunks(ids.shape[0]))


@njit(parallel=True)
def _calibrated_kernel(ids, scores, n, lam, alpha, g_indptr, g_indices, g_data, profiles,
                       n_blocks):  # pragma: no cover - compiled
    m, n_cand = ids.shape
    n_groups = profiles.shape[1]
    out = np.full((m, n), -1, dtype=np.int32)
    per_block = (m + n_blocks - 1) // n_blocks
    for block in prange(n_blocks):
        rel = np.empty(n_cand)
        values = np.empty(n_cand)
        taken = np.empty(n_cand, dtype=np.bool_)
        chosen_sum = np.empty(n_groups)
        log_base = np.empty(n_groups)
        for r in range(block * per_block, min(m, (block + 1) * per_block)):
            relevance_row(ids, scores, r, rel)
            taken[:] = False
            chosen_sum[:] = 0.0
            mass = 0.0
            plogp = 0.0
            for g in range(n_groups):
                if profiles[r, g] > 0:
                    mass += profiles[r, g]
                    plogp += profiles[r, g] * np.log(profiles[r, g])
            for step in range(n):
                size = step + 1.0
                # size * q~ of the list plus candidate i is base_g + (1 - alpha) x_ig
                base_sum = 0.0
                for g in range(n_groups):
                    if profiles[r, g] > 0:
                        log_base[g] = np.log((1.0 - alpha) * chosen_sum[g] + alpha * size * profiles[r, g])
                        base_sum += profiles[r, g] * log_base[g]
                for c in range(n_cand):
                    item = ids[r, c]
                    if item < 0 or taken[c]:
                        continue
                    cross = base_sum
                    for e in range(g_indptr[item], g_indptr[item + 1]):
                        g = g_indices[e]
                        p_g = profiles[r, g]
                        if p_g > 0:
                            base = (1.0 - alpha) * chosen_sum[g] + alpha * size * p_g
                            cross += p_g * (np.log(base + (1.0 - alpha) * g_data[e]) - log_base[g])
                    kl = plogp - cross + mass * np.log(size)
                    values[c] = (1.0 - lam) * rel[c] - lam * kl
                best = take_best(values, ids, r, taken, out, step)
                if best < 0:
                    break
                item = ids[r, best]
                for e in range(g_indptr[item], g_indptr[item + 1]):
                    chosen_sum[g_indices[e]] += g_data[e]
    return out
