"""``FairTopK``: FA*IR ranked group fairness for a protected group of items (Zehlike et al., CIKM 2017).

A list of length k is fair when every prefix of length i holds at least
``m(i)`` protected items, where ``m(i)`` is the smallest count that a
binomial(i, p) draw reaches with probability above the significance level:
``m(i) = F^-1(alpha_c; i, p)``.  With ``adjust=True`` (the default, the
multiple-testing correction of the paper) ``alpha_c`` is lowered so that a
ranking drawn at random with protected share ``p`` fails some prefix with
probability ``alpha`` overall (the bisection of the ``fairsearchcore``
package, with an exact dynamic programme for the failure probability).
fairsearchcore 1.0.4 leaves the last position out of that probability, so
about one table in six differs from its adjusted table; ours is then the
one whose exact failure probability is closer to ``alpha``.

The re-ranker is FA*IR's algorithm: walk down the model's ranking, taking
the best remaining candidate unless the prefix would fall short of the table,
in which case the best remaining protected candidate.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.stats import binom

from ..utils.jit import njit, prange
from ..utils.validation import check_bool, check_float, check_int
from .base import Fetch, Reranker
from .greedy import gather, n_chunks

__all__ = ["FairTopK", "fair_table", "fail_probability", "meets_table"]

_EPS = 1e-16


def _unadjusted(k: int, p: float, alpha: float) -> np.ndarray:
    m = binom.ppf(alpha, np.arange(1, k + 1), p)
    return np.maximum(np.nan_to_num(m, nan=0.0), 0).astype(np.int64)


def fail_probability(table: Any, p: float) -> float:
    """Probability that a ranking with each position protected with probability p fails ``table``.

    ``table[i]`` is the minimum number of protected items among the first i + 1.
    """
    table = np.asarray(table, dtype=np.int64)
    alive = np.zeros(table.size + 1)
    alive[0] = 1.0
    for need in table:
        alive[1:] = alive[1:] * (1 - p) + alive[:-1] * p  # one more position, protected or not
        alive[0] *= 1 - p
        alive[:need] = 0.0  # rankings below the minimum have failed
    return float(max(0.0, 1.0 - alive.sum()))


@lru_cache(maxsize=256)
def _adjusted(k: int, p: float, alpha: float) -> tuple[int, ...]:
    def boundary(a: float) -> tuple[float, np.ndarray, float]:
        table = _unadjusted(k, p, a)
        return a, table, fail_probability(table, p)

    low, high = boundary(0.0), boundary(alpha)
    mid = boundary(alpha / 2)
    while low[1].sum() < high[1].sum() and mid[2] != alpha:
        if mid[2] < alpha:
            low = mid
        elif mid[2] > alpha:
            high = mid
        mid = boundary((low[0] + high[0]) / 2)
        masses = (low[1].sum(), mid[1].sum(), high[1].sum())
        if masses[2] - masses[0] == 1 or high[0] - low[0] <= _EPS:
            return tuple(min((low, high), key=lambda b: abs(b[2] - alpha))[1].tolist())
        if masses[2] - masses[1] == 1 and masses[1] - masses[0] == 1:
            return tuple(min((mid, low, high), key=lambda b: abs(b[2] - alpha))[1].tolist())
    return tuple(mid[1].tolist())


def fair_table(k: int, p: float, alpha: float = 0.1, adjust: bool = True) -> np.ndarray:
    """FA*IR's table: the minimum number of protected items in each prefix 1..k.

    Parameters
    ----------
    k : int >= 1
        List length.
    p : float in (0, 1)
        Target minimum share of protected items.
    alpha : float in (0, 1)
        Significance level.
    adjust : bool
        Apply the multiple-testing correction (``fairsearchcore``'s adjusted table).

    Returns
    -------
    (k,) int64 array; for k=10, p=0.3, alpha=0.1: 0,0,0,0,0,0,1,1,1,1.
    """
    k = check_int(k, "k", minimum=1)
    p = check_float(p, "p", minimum=0.0, maximum=1.0, strict_minimum=True)
    if p >= 1.0:
        raise ValueError(f"p must be < 1, got {p}")
    alpha = check_float(alpha, "alpha", minimum=0.0, maximum=1.0, strict_minimum=True)
    if alpha >= 1.0:
        raise ValueError(f"alpha must be < 1, got {alpha}")
    if check_bool(adjust, "adjust"):
        return np.array(_adjusted(k, p, alpha), dtype=np.int64)
    return _unadjusted(k, p, alpha)


def meets_table(protected_in_list: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Per row of a (n_rows, k) 0/1 matrix of protected flags: whether every prefix meets ``table``."""
    counts = np.cumsum(protected_in_list, axis=1)
    return (counts >= table[None, :counts.shape[1]]).all(axis=1)


def _protected_mask(protected: Any, n_items: int, state: Any) -> np.ndarray:
    if isinstance(protected, str):
        from .popularity import tail_mask
        return tail_mask(state, 0.8)
    if protected.dtype == np.bool_:
        if protected.size != n_items:
            raise ValueError(f"protected is a mask of {protected.size} entries but the model has {n_items} items")
        return protected
    if protected.max() >= n_items:
        raise IndexError(f"protected contains item {int(protected.max())} but the model has {n_items} items")
    mask = np.zeros(n_items, dtype=bool)
    mask[protected] = True
    return mask


class FairTopK(Reranker):
    """FA*IR top-k: every prefix holds the table's minimum of protected items.

    Parameters
    ----------
    protected : array of item ids, boolean mask over items, or "long_tail"
        The protected group; ``"long_tail"`` takes the items outside the head
        holding 80% of the model's training interactions.
    p : float in (0, 1)
        Target minimum share of protected items.
    alpha : float in (0, 1)
        Significance level of the ranked group fairness test.
    adjust : bool
        Use the multiple-testing-corrected table.
    candidates : int
        Candidates fetched per user by ``recommend(..., rerank=)``.  Users
        whose candidates hold too few protected items get more: their best
        protected items from the whole catalogue.
    """

    needs_history = False
    metric = "fair_share"
    swept = "p"

    def __init__(self, protected: Any, p: float = 0.3, alpha: float = 0.1, adjust: bool = True,
                 candidates: int = 100):
        super().__init__(0.0, candidates, "greedy")  # the table constrains every prefix: order matters
        if isinstance(protected, str):
            if protected != "long_tail":
                raise ValueError(f"protected must be item ids, a boolean mask or 'long_tail'; got {protected!r}")
        else:
            protected = np.asarray(protected)
            if protected.ndim != 1:
                raise ValueError(f"protected must be 1-D (item ids or a mask), got shape {protected.shape}")
            if protected.dtype != np.bool_:
                if protected.size and not np.issubdtype(protected.dtype, np.integer):
                    raise TypeError(f"protected must hold item ids or booleans, got dtype {protected.dtype}")
                if protected.size and protected.min() < 0:
                    raise IndexError(f"protected contains negative item id {int(protected.min())}")
            if not protected.any() if protected.dtype == np.bool_ else protected.size == 0:
                raise ValueError("protected is empty; FA*IR needs at least one protected item")
        self.protected = protected
        self.alpha = check_float(alpha, "alpha", minimum=0.0, maximum=1.0, strict_minimum=True)
        self.adjust = check_bool(adjust, "adjust")
        self._set_swept(p)
        fair_table(1, self.p, self.alpha)  # checks alpha < 1 now

    def _set_swept(self, value: float) -> None:
        self.p = check_float(value, "p", minimum=0.0, maximum=1.0, strict_minimum=True)
        if self.p >= 1.0:
            raise ValueError(f"p must be < 1, got {self.p}")

    def table(self, k: int) -> np.ndarray:
        return fair_table(k, self.p, self.alpha, self.adjust)

    def protected_mask(self, state: Any) -> np.ndarray:
        return _protected_mask(self.protected, state.n_items, state)

    def _reason(self, state: Any, history: sp.csr_matrix, item: int, listed: np.ndarray) -> str:
        position = int(np.flatnonzero(listed == item)[0]) + 1
        need = int(self.table(listed.size)[position - 1])
        return (f"to meet FA*IR's minimum of {need} protected item{'s' if need != 1 else ''} "
                f"in the top {position} (p={self.p:g}, alpha={self.alpha:g})")

    def _rerank(self, state: Any, history: sp.csr_matrix, ids: np.ndarray, scores: np.ndarray, n: int,
                fetch: Fetch) -> tuple[np.ndarray, np.ndarray]:
        width = min(n, ids.shape[1])
        if width == 0 or ids.shape[0] == 0:
            return np.full((ids.shape[0], width), -1, np.int32), np.full((ids.shape[0], width), -np.inf)
        mask = self.protected_mask(state)
        table = self.table(width)
        need = int(table[-1])
        have = (mask[np.where(ids >= 0, ids, 0)] & (ids >= 0)).sum(axis=1)
        short = np.flatnonzero(have < need)
        extra = np.full((ids.shape[0], 0), -1, dtype=np.int32)
        extra_scores = np.full((ids.shape[0], 0), -np.inf)
        if short.size:
            # the best protected items from the whole catalogue, for the users whose candidates lack them
            fetched_ids, fetched_scores = fetch(short, np.flatnonzero(mask).astype(np.int32), need)
            fetched_ids = np.asarray(fetched_ids, dtype=np.int32).reshape(short.size, -1)
            extra = np.full((ids.shape[0], fetched_ids.shape[1]), -1, dtype=np.int32)
            extra_scores = np.full(extra.shape, -np.inf)
            extra[short] = fetched_ids
            extra_scores[short] = np.asarray(fetched_scores, dtype=np.float64).reshape(fetched_ids.shape)
        all_ids = np.ascontiguousarray(np.concatenate([ids, extra], axis=1))
        positions = _fair_kernel(all_ids, np.int64(ids.shape[1]), np.int64(width), table, mask.astype(np.uint8),
                                 n_chunks(ids.shape[0]))
        return gather(all_ids, np.concatenate([scores, extra_scores], axis=1), positions)


@njit(parallel=True)
def _fair_kernel(ids, n_ranked, n, table, protected, n_blocks):  # pragma: no cover - compiled
    """FA*IR over each row's ranked candidates ``ids[r, :n_ranked]``, best first.

    When the table asks for a protected item and the ranked candidates have
    none left, the next one comes from the row's extra protected items
    ``ids[r, n_ranked:]`` (best first; they rank below every candidate, and
    one already chosen is skipped).  Returns positions into each row.
    """
    m, width = ids.shape
    out = np.full((m, n), -1, dtype=np.int32)
    per_block = (m + n_blocks - 1) // n_blocks
    for block in prange(n_blocks):
        taken = np.empty(width, dtype=np.bool_)
        for r in range(block * per_block, min(m, (block + 1) * per_block)):
            taken[:] = False
            next_any = 0  # ranked candidates before these positions are taken or padding
            next_protected = 0
            n_protected = 0
            for step in range(n):
                while next_any < n_ranked and (ids[r, next_any] < 0 or taken[next_any]):
                    next_any += 1
                while next_protected < width and (ids[r, next_protected] < 0 or taken[next_protected]
                                                  or not protected[ids[r, next_protected]]
                                                  or (next_protected >= n_ranked
                                                      and _listed(ids, r, out, step, ids[r, next_protected]))):
                    next_protected += 1
                pick = next_any
                if n_protected < table[step] and next_protected < width:
                    pick = next_protected
                if pick >= n_ranked and pick == next_any:
                    break  # no candidate left
                taken[pick] = True
                out[r, step] = pick
                if protected[ids[r, pick]]:
                    n_protected += 1
    return out


@njit()
def _listed(ids, r, out, step, item):  # pragma: no cover - compiled
    """Whether ``item`` is already among the first ``step`` choices of row r."""
    for s in range(step):
        if ids[r, out[r, s]] == item:
            return True
    return False
