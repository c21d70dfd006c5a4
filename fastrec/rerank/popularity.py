"""``PopularityDebias``: xQuAD over the popular head and the long tail (Abdollahpouri et al. 2019).

The head is the smallest set of most popular training items holding
``head_share`` of the training interactions (as in
``fastrec.evaluation.beyond.long_tail_items``, and Elliot's short head);
every other item is in the tail.  ``P(c|u)`` is the share of the user's
history in category c (head or tail).  The list is built greedily on

    (1 - tradeoff) * relevance(i) + tradeoff * sum_c P(c|u) [i in c] coverage(c, S)

where S is the list so far and coverage is ``[S has no item of c]`` for the
``"binary"`` variant and ``1 - |S in c| / |S|`` (1 for an empty S) for the
``"smooth"`` one.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ..evaluation.beyond import item_popularity, long_tail_items
from ..utils.jit import njit, prange
from ..utils.validation import check_choice, check_float
from .base import Reranker
from .greedy import n_chunks, relevance_row, take_best

__all__ = ["PopularityDebias", "tail_mask"]


def tail_mask(state: Any, head_share: float) -> np.ndarray:
    """Long-tail items of the model's training data (bool, one per item)."""
    return long_tail_items(item_popularity(state.user_items), head_share)


class PopularityDebias(Reranker):
    """xQuAD popularity de-biasing (Abdollahpouri, Burke and Mobasher, FLAIRS 2019).

    Parameters
    ----------
    tradeoff : float in [0, 1]
        lambda: 0 keeps the model's list.
    head_share : float in (0, 1]
        Share of training interactions held by the head.
    variant : {"smooth", "binary"}
        How the head and tail already in the list reduce their bonus.
    candidates : int
        Candidates fetched per user by ``recommend(..., rerank=)``.
    order : {"score", "greedy"}
        Show the chosen items best-scored first (default) or in the order picked.
    """

    metric = "aplt"

    def __init__(self, tradeoff: float = 0.5, head_share: float = 0.8, variant: str = "smooth",
                 candidates: int = 100, order: str = "score"):
        super().__init__(tradeoff, candidates, order)
        self.head_share = check_float(head_share, "head_share", minimum=0.0, maximum=1.0, strict_minimum=True)
        self.variant = check_choice(variant, "variant", ("smooth", "binary"))

    def _reason(self, state: Any, history: sp.csr_matrix, item: int, listed: np.ndarray) -> str:
        tail = tail_mask(state, self.head_share)
        share = tail[history.indices].mean() if history.nnz else 0.0
        kind = "long-tail" if tail[item] else "popular"
        return (f"as a {kind} item: {share if tail[item] else 1 - share:.0%} of the history is {kind}, "
                f"{int(tail[listed].sum() if tail[item] else (~tail[listed]).sum())} of the {listed.size} listed")

    def _select(self, state: Any, history: sp.csr_matrix, ids: np.ndarray, scores: np.ndarray,
                n: int) -> np.ndarray:
        tail = tail_mask(state, self.head_share)
        counts = np.diff(history.indptr).astype(np.float64)
        in_tail = history @ tail.astype(np.float64)
        tail_share = np.divide(in_tail, counts, out=np.zeros_like(counts), where=counts > 0)
        head_share = np.where(counts > 0, 1.0 - tail_share, 0.0)
        return _xquad_kernel(ids, scores, np.int64(n), self.tradeoff, tail.astype(np.uint8), head_share,
                             tail_share, self.variant == "binary", n_chunks(ids.shape[0]))


@njit(parallel=True)
def _xquad_kernel(ids, scores, n, lam, tail, head_share, tail_share, binary, n_blocks):  # pragma: no cover
    m, n_cand = ids.shape
    out = np.full((m, n), -1, dtype=np.int32)
    per_block = (m + n_blocks - 1) // n_blocks
    for block in prange(n_blocks):
        rel = np.empty(n_cand)
        values = np.empty(n_cand)
        taken = np.empty(n_cand, dtype=np.bool_)
        for r in range(block * per_block, min(m, (block + 1) * per_block)):
            relevance_row(ids, scores, r, rel)
            taken[:] = False
            n_tail = 0
            for step in range(n):
                n_head = step - n_tail
                if binary:
                    cover_head = 1.0 if n_head == 0 else 0.0
                    cover_tail = 1.0 if n_tail == 0 else 0.0
                elif step == 0:
                    cover_head = 1.0
                    cover_tail = 1.0
                else:
                    cover_head = 1.0 - n_head / step
                    cover_tail = 1.0 - n_tail / step
                bonus_head = lam * head_share[r] * cover_head
                bonus_tail = lam * tail_share[r] * cover_tail
                for c in range(n_cand):
                    item = ids[r, c]
                    if item >= 0:
                        values[c] = (1.0 - lam) * rel[c] + (bonus_tail if tail[item] else bonus_head)
                best = take_best(values, ids, r, taken, out, step)
                if best < 0:
                    break
                if tail[ids[r, best]]:
                    n_tail += 1
    return out
