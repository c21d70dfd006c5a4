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

# distinct group weights (1, 1/2, 1/3... for genre lists) up to which a kernel step takes one
# logarithm per (group, weight) pair among a user's candidates instead of one per entry
_MAX_PAIRED_WEIGHTS = 64


def check_item_groups(item_groups: Any, name: str = "item_groups") -> sp.csr_matrix:
    """An items x groups matrix of non-negative finite weights, as float64 CSR."""
    if sp.issparse(item_groups):
        matrix = sp.csr_matrix(item_groups, dtype=np.float64, copy=True)
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
    item_groups : (n_items, n_groups) array or sparse matrix, or a ``fastrec.data.features.Features``
        Group membership (genres) of each item, aligned with the model's
        item indices; ``fastrec.datasets.item_genres`` builds it from an
        ``Interactions``' metadata.  A ``Features`` table with raw item ids
        is aligned to the model's item ids (its names name the groups).
    tradeoff : float in [0, 1]
        lambda: 0 keeps the model's list, 1 minimises the miscalibration only.
    smoothing : float in (0, 1]
        alpha in ``q~ = (1 - alpha) q + alpha p`` (keeps the KL finite).
    candidates : int
        Candidates fetched per user by ``recommend(..., rerank=)``.
    order : {"score", "greedy"}
        Show the chosen items best-scored first (default) or in the order picked.
    group_names : sequence of str, optional
        A name per group (column), for ``explain``.
    """

    metric = "miscalibration"

    def __init__(self, item_groups: Any, tradeoff: float = 0.5, smoothing: float = 0.01,
                 candidates: int = 100, order: str = "score", group_names: Any = None):
        super().__init__(tradeoff, candidates, order)
        self._features = None
        if hasattr(item_groups, "aligned") and hasattr(item_groups, "side_names"):  # fastrec Features
            self._features = item_groups
            if group_names is None:
                group_names = item_groups.side_names
            item_groups = item_groups.side
        self.item_groups = check_item_groups(item_groups)
        if group_names is not None and len(group_names) != self.item_groups.shape[1]:
            raise ValueError(f"group_names has {len(group_names)} names but item_groups has "
                             f"{self.item_groups.shape[1]} groups")
        self.group_names = None if group_names is None else [str(g) for g in group_names]
        self.smoothing = check_float(smoothing, "smoothing", minimum=0.0, maximum=1.0, strict_minimum=True)
        self._p_given_item = normalized_groups(self.item_groups)
        self._aligned: tuple[Any, sp.csr_matrix] | None = None

    def groups_for(self, state: Any) -> sp.csr_matrix:
        """p(g|i) for the model's items: rows summing to 1, aligned with its item indices.

        A ``Features`` table with raw ids is aligned to the model's item ids.
        """
        features = self._features
        if features is not None and features.ids is not None:
            cached = self._aligned
            if cached is None or cached[0] is not state.item_map:
                matrix, _, n_side, _ = features.aligned(state.item_map, state.n_items, "item_groups")
                cached = (state.item_map, normalized_groups(check_item_groups(matrix[:state.n_items, :n_side])))
                self._aligned = cached
            return cached[1]
        if self.item_groups.shape[0] != state.n_items:
            raise ValueError(f"item_groups has {self.item_groups.shape[0]} rows but the model has {state.n_items} "
                             "items; pass one row per item, aligned with the model's item indices")
        return self._p_given_item

    def _reason(self, state: Any, history: sp.csr_matrix, item: int, listed: np.ndarray) -> str:
        groups = self.groups_for(state)
        wanted = item_group_shares(history, groups)[0]
        others = listed[listed != item]
        have = np.asarray(groups[others].sum(axis=0)).ravel() / max(others.size, 1)
        own = groups[item].indices
        if not own.size or not wanted[own].any():
            return "by the calibration trade-off"
        g = own[np.argmax(wanted[own] - have[own])]
        name = self.group_names[g] if self.group_names else f"group {g}"
        return (f"for genre balance: {name} ({wanted[g]:.0%} of the history, {have[g]:.0%} of the "
                "list without it)")

    def _select(self, state: Any, history: sp.csr_matrix, ids: np.ndarray, scores: np.ndarray,
                n: int) -> np.ndarray:
        groups = self.groups_for(state)
        profiles = item_group_shares(history, groups)
        per_item = np.diff(groups.indptr)
        max_entries = max(1, int((per_item[np.where(ids >= 0, ids, 0)] * (ids >= 0)).sum(axis=1).max()))
        weights, weight_id = np.unique(groups.data, return_inverse=True)
        n_weights = weights.size if weights.size <= _MAX_PAIRED_WEIGHTS else 0  # else one pair per entry
        return _calibrated_kernel(ids, scores, np.int64(n), self.tradeoff, self.smoothing,
                                  groups.indptr.astype(np.int64), groups.indices.astype(np.int64),
                                  groups.data, weight_id.astype(np.int64).ravel(), np.int64(n_weights), profiles,
                                  np.int64(max_entries), n_chunks(ids.shape[0]))


@njit()
def _row_entries(ids, r, g_indptr, g_indices, g_data, g_weight_id, n_weights, profiles, slot_of, ent_cand,
                 ent_pair, pair_key, pair_group, pair_weight):  # pragma: no cover - compiled
    """Row r's (candidate, group, weight) entries in the user's groups, with one id per distinct
    (group, weight) pair, so a step takes one logarithm per pair rather than per entry.

    ``g_weight_id[e]`` numbers the distinct weights (n_weights of them; 0 means every entry is
    its own pair).  ``slot_of`` (n_groups * n_weights, all -1) is left all -1 again.
    Returns (number of entries, number of pairs).
    """
    n_entries = 0
    n_pairs = 0
    for c in range(ids.shape[1]):
        item = ids[r, c]
        if item < 0:
            continue
        for e in range(g_indptr[item], g_indptr[item + 1]):
            g = g_indices[e]
            if profiles[r, g] <= 0:
                continue
            slot = -1
            if n_weights > 0:
                key = g * n_weights + g_weight_id[e]
                slot = slot_of[key]
                if slot < 0:
                    slot_of[key] = n_pairs
                    pair_key[n_pairs] = key
            if slot < 0:
                slot = n_pairs
                pair_group[slot] = g
                pair_weight[slot] = g_data[e]
                n_pairs += 1
            ent_cand[n_entries] = c
            ent_pair[n_entries] = slot
            n_entries += 1
    if n_weights > 0:
        for k in range(n_pairs):
            slot_of[pair_key[k]] = -1
    return n_entries, n_pairs


@njit(parallel=True)
def _calibrated_kernel(ids, scores, n, lam, alpha, g_indptr, g_indices, g_data, g_weight_id, n_weights,
                       profiles, max_entries, n_blocks):  # pragma: no cover - compiled
    m, n_cand = ids.shape
    n_groups = profiles.shape[1]
    out = np.full((m, n), -1, dtype=np.int32)
    per_block = (m + n_blocks - 1) // n_blocks
    for block in prange(n_blocks):
        rel = np.empty(n_cand)
        values = np.empty(n_cand)
        cross = np.empty(n_cand)
        taken = np.empty(n_cand, dtype=np.bool_)
        chosen_sum = np.empty(n_groups)
        log_base = np.empty(n_groups)
        ent_cand = np.empty(max_entries, dtype=np.int64)
        ent_pair = np.empty(max_entries, dtype=np.int64)
        pair_key = np.empty(max_entries, dtype=np.int64)
        pair_group = np.empty(max_entries, dtype=np.int64)
        pair_weight = np.empty(max_entries)
        contribution = np.empty(max_entries)
        slot_of = np.full(n_groups * max(n_weights, 1), -1, dtype=np.int64)
        for r in range(block * per_block, min(m, (block + 1) * per_block)):
            relevance_row(ids, scores, r, rel)
            n_entries, n_pairs = _row_entries(ids, r, g_indptr, g_indices, g_data, g_weight_id, n_weights,
                                              profiles, slot_of, ent_cand, ent_pair, pair_key, pair_group,
                                              pair_weight)
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
                # size * q~ of the list plus candidate i is base_g + (1 - alpha) x_ig; only the
                # groups of i change, by p_g (log(base_g + (1 - alpha) x_ig) - log(base_g))
                base_sum = 0.0
                for g in range(n_groups):
                    if profiles[r, g] > 0:
                        log_base[g] = np.log((1.0 - alpha) * chosen_sum[g] + alpha * size * profiles[r, g])
                        base_sum += profiles[r, g] * log_base[g]
                for k in range(n_pairs):
                    g = pair_group[k]
                    base = (1.0 - alpha) * chosen_sum[g] + alpha * size * profiles[r, g]
                    contribution[k] = profiles[r, g] * (np.log(base + (1.0 - alpha) * pair_weight[k]) - log_base[g])
                cross[:] = base_sum
                for k in range(n_entries):
                    cross[ent_cand[k]] += contribution[ent_pair[k]]
                constant = plogp + mass * np.log(size)
                for c in range(n_cand):
                    values[c] = (1.0 - lam) * rel[c] - lam * (constant - cross[c])
                best = take_best(values, ids, r, taken, out, step)
                if best < 0:
                    break
                item = ids[r, best]
                for e in range(g_indptr[item], g_indptr[item + 1]):
                    chosen_sum[g_indices[e]] += g_data[e]
    return out
