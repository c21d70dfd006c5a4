"""``MMR``: maximal marginal relevance (Carbonell and Goldstein, SIGIR 1998).

The list is built greedily on

    (1 - tradeoff) * relevance(i) - tradeoff * max_{j in S} sim(i, j)

(the max is 0 for the first item).  ``sim`` is the cosine of item vectors
(the model's item factors by default, or a given items x features matrix),
or the entries of a given items x items similarity matrix.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ..utils.jit import njit, prange
from .base import Reranker
from .greedy import best_untaken, n_chunks, relevance_row

__all__ = ["MMR"]

_NO_MATRIX = (np.zeros(1, np.int64), np.empty(0, np.int64), np.empty(0, np.float64))


class MMR(Reranker):
    """Maximal marginal relevance for intra-list diversity.

    Parameters
    ----------
    tradeoff : float in [0, 1]
        lambda: 0 keeps the model's list.
    similarity : "factors", or a matrix
        ``"factors"``: cosine of the model's item factors.  A square
        (n_items, n_items) matrix, dense or sparse, is taken as item-item
        similarities (``sim(i, j)`` is entry ``[i, j]``; missing sparse
        entries are 0).  Any other (n_items, d) matrix is taken as item
        features, compared by cosine.
    candidates : int
        Candidates fetched per user by ``recommend(..., rerank=)``.
    order : {"score", "greedy"}
        Show the chosen items best-scored first (default) or in the order picked.
    """

    needs_history = False
    metric = "diversity"

    def __init__(self, tradeoff: float = 0.3, similarity: Any = "factors", candidates: int = 100,
                 order: str = "score"):
        super().__init__(tradeoff, candidates, order)
        if isinstance(similarity, str):
            if similarity != "factors":
                raise ValueError(f"similarity must be 'factors' or a matrix; got {similarity!r}")
            self.similarity = similarity
        else:
            if not sp.issparse(similarity):
                similarity = np.asarray(similarity)
                if not np.issubdtype(similarity.dtype, np.number) and similarity.dtype != np.bool_:
                    raise TypeError(f"similarity must hold numbers, got dtype {similarity.dtype}")
            if similarity.ndim != 2:
                raise ValueError(f"similarity must be 'factors' or a 2-D matrix, got shape {similarity.shape}")
            self.similarity = similarity
        self._unit: tuple[Any, np.ndarray] | None = None

    def _unit_vectors(self, vectors: Any) -> np.ndarray:
        cached = self._unit
        if cached is not None and cached[0] is vectors:
            return cached[1]
        dense = vectors.toarray() if sp.issparse(vectors) else np.asarray(vectors)
        dense = np.ascontiguousarray(dense, dtype=np.float32)
        if not np.isfinite(dense).all():
            raise ValueError("similarity: the item vectors hold NaN or infinite values")
        norms = np.linalg.norm(dense, axis=1, keepdims=True)
        unit = dense / np.where(norms > 0, norms, 1.0).astype(np.float32)
        self._unit = (vectors, unit)
        return unit

    def _reason(self, state: Any, history: sp.csr_matrix, item: int, listed: np.ndarray) -> str:
        above = listed[:int(np.flatnonzero(listed == item)[0])]
        sim = self.similarity
        if isinstance(sim, str) or sim.shape[1] != state.n_items:
            unit = self._unit_vectors(state.item_factors if isinstance(sim, str) else sim)
            closest = (unit[above] @ unit[item]).max(initial=-1.0) if above.size else 0.0
        else:
            row = sp.csr_matrix(sim[above]) if sp.issparse(sim) else np.asarray(sim)[above]
            closest = float(np.max(row[:, [item]].toarray() if sp.issparse(row) else row[:, item], initial=0.0))
        return f"for diversity: its highest similarity to the items above it is {closest:.2f}"

    def _select(self, state: Any, history: sp.csr_matrix, ids: np.ndarray, scores: np.ndarray,
                n: int) -> np.ndarray:
        sim = self.similarity
        if isinstance(sim, str):
            return _mmr_kernel(ids, scores, np.int64(n), self.tradeoff, self._unit_vectors(state.item_factors),
                               *_NO_MATRIX, n_chunks(ids.shape[0]))
        if sim.shape[0] != state.n_items:
            raise ValueError(f"similarity has {sim.shape[0]} rows but the model has {state.n_items} items; "
                             "pass one row per item")
        if sim.shape[1] != state.n_items:
            return _mmr_kernel(ids, scores, np.int64(n), self.tradeoff, self._unit_vectors(sim), *_NO_MATRIX,
                               n_chunks(ids.shape[0]))
        csr = sp.csr_matrix(sim, dtype=np.float64)
        csr.sum_duplicates()
        if csr.nnz and not np.isfinite(csr.data).all():
            raise ValueError("similarity holds NaN or infinite values")
        return _mmr_kernel(ids, scores, np.int64(n), self.tradeoff, np.empty((0, 1), np.float32),
                           csr.indptr.astype(np.int64), csr.indices.astype(np.int64), csr.data,
                           n_chunks(ids.shape[0]))


@njit(fastmath=True, inline="always")
def _similarity(i, j, unit, indptr, indices, data):  # pragma: no cover - compiled
    """Cosine of unit rows i and j when ``unit`` is given, else entry [i, j] of the CSR."""
    if unit.shape[0] > 0:
        dot = np.float32(0.0)
        for d in range(unit.shape[1]):
            dot += unit[i, d] * unit[j, d]
        return np.float64(dot)
    lo, hi = indptr[i], indptr[i + 1]
    while lo < hi:
        mid = (lo + hi) // 2
        if indices[mid] < j:
            lo = mid + 1
        else:
            hi = mid
    if lo < indptr[i + 1] and indices[lo] == j:
        return data[lo]
    return 0.0


@njit(parallel=True, fastmath=True)
def _mmr_kernel(ids, scores, n, lam, unit, indptr, indices, data, n_blocks):  # pragma: no cover - compiled
    """Greedy MMR, lazily: a candidate's penalty is brought up to date only when it leads.

    ``closest[c]`` is the max similarity of c to the first ``seen[c]`` items of the list.  It
    only grows as the list does, so a stale value bounds the true one from above, and a
    leading candidate whose value is up to date is the true best (ties: the earliest, as its
    stale rivals' values are at least their true ones).  After the first item every
    candidate is compared with it at once.
    """
    m, n_cand = ids.shape
    out = np.full((m, n), -1, dtype=np.int32)
    per_block = (m + n_blocks - 1) // n_blocks
    for block in prange(n_blocks):
        rel = np.empty(n_cand)
        values = np.empty(n_cand)
        taken = np.empty(n_cand, dtype=np.bool_)
        closest = np.empty(n_cand)
        seen = np.empty(n_cand, dtype=np.int64)
        for r in range(block * per_block, min(m, (block + 1) * per_block)):
            relevance_row(ids, scores, r, rel)
            taken[:] = False
            seen[:] = 0
            for c in range(n_cand):
                values[c] = (1.0 - lam) * rel[c]  # the first item: nothing to be similar to
            for step in range(n):
                if step == 1:  # every value changes: compare all with the first item at once
                    first = ids[r, out[r, 0]]
                    for c in range(n_cand):
                        if ids[r, c] >= 0 and not taken[c]:
                            closest[c] = _similarity(ids[r, c], first, unit, indptr, indices, data)
                            seen[c] = 1
                            values[c] = (1.0 - lam) * rel[c] - lam * closest[c]
                while True:
                    best = best_untaken(values, ids, r, taken)
                    if best < 0 or seen[best] == step:
                        break
                    i = ids[r, best]
                    for s in range(seen[best], step):
                        sim = _similarity(i, ids[r, out[r, s]], unit, indptr, indices, data)
                        if sim > closest[best]:
                            closest[best] = sim
                    seen[best] = step
                    values[best] = (1.0 - lam) * rel[best] - lam * closest[best]
                if best < 0:
                    break
                taken[best] = True
                out[r, step] = best
    return out
