"""Calibration, popularity-bias and exposure metrics of ranked id lists.

All take ``ranked`` (n_rows, n) item ids, best first, padded with -1, and
look at the first ``k`` ids of each row; a row's user is ``users[r]`` (row r
by default) in ``train``.

- ``miscalibration``: Steck's C_KL (RecSys 2018), the mean over users of
  ``KL(p(.|u) || q~(.|u))``, where ``p`` is the group (genre) distribution of
  the user's training items (each item spreading weight 1 evenly, or in
  proportion to its row of ``item_groups``, over its groups), ``q`` that of
  the list, and ``q~ = (1 - smoothing) q + smoothing p``.  Users without
  grouped training items, and empty lists, are left out.
- ``aplt``: average percentage of long-tail items (Abdollahpouri et al.
  2019), as Elliot's APLT and RecBole's TailPercentage define it: the mean
  over users of the share of their list in the long tail, the tail being
  every item outside the most popular ones that hold ``head_share`` (80%)
  of the training interactions (Elliot's short head).  It equals
  ``ranking_metrics``' ``long_tail``.
- ``arp``: average recommendation popularity, as in Elliot (ARP) and RecBole
  (AveragePopularity): the mean over users of the mean training popularity
  (users with a stored interaction) of their recommended items.  It equals
  ``ranking_metrics``' ``popularity``.
- ``exposure_share``: the share of the exposure of all lists that goes to a
  group of items, plain (each listed item counts 1) or position-discounted
  (an item at rank j counts ``1 / log2(j + 1)``, the exposure model of Singh
  and Joachims 2018).  Neither Elliot nor RecBole defines it.
- ``fair_share``: the share of lists in which every prefix holds at least
  FA*IR's minimum number of protected items (Zehlike et al. 2017; see
  ``fastrec.rerank.fair_table``).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ..utils.validation import check_bool, check_float, check_ids, check_int, check_interactions
from .beyond import item_popularity, long_tail_items, per_user_beyond
from .metrics import check_ranking

__all__ = ["miscalibration", "aplt", "arp", "exposure_share", "fair_share", "FAIRNESS_METRICS"]

FAIRNESS_METRICS = ("miscalibration", "aplt", "arp", "exposure_share", "fair_share")


def _rows(ranked: Any, n_items: int, k: Any, users: Any, n_users: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Validated first-k ids and the user row of each ranking row."""
    k = check_int(k, "k", minimum=1)
    top = np.ascontiguousarray(check_ranking(ranked, n_items)[:, :k])
    if users is None:
        if n_users is not None and top.shape[0] != n_users:
            raise ValueError(f"ranked has {top.shape[0]} rows but train has {n_users} users; pass users=")
        rows = np.arange(top.shape[0])
    else:
        rows = check_ids(users, n_users if n_users is not None else np.iinfo(np.int32).max, "users",
                         allow_scalar=False)[0]
        if rows.size != top.shape[0]:
            raise ValueError(f"users has {rows.size} entries but ranked has {top.shape[0]} rows")
    return top, rows


def _group_mask(group: Any, n_items: int, name: str) -> np.ndarray:
    arr = np.asarray(group)
    if arr.dtype == np.bool_:
        if arr.shape != (n_items,):
            raise ValueError(f"{name} is a mask of shape {arr.shape}; it needs one entry per item ({n_items})")
        return arr
    ids = check_ids(arr, n_items, name, allow_scalar=False)[0]
    mask = np.zeros(n_items, dtype=bool)
    mask[ids] = True
    return mask


def miscalibration(ranked: Any, train: Any, item_groups: Any, k: int = 10, smoothing: float = 0.01,
                   users: Any = None) -> float:
    """Mean ``KL(p || q~)`` over users (Steck 2018); see the module docstring."""
    from ..rerank.calibrated import check_item_groups, normalized_groups
    from ..rerank.base import item_group_shares
    train_csr = check_interactions(train, "train", dtype=np.float64, allow_empty=True)
    groups = check_item_groups(item_groups)
    if groups.shape[0] != train_csr.shape[1]:
        raise ValueError(f"item_groups has {groups.shape[0]} rows but train has {train_csr.shape[1]} items")
    alpha = check_float(smoothing, "smoothing", minimum=0.0, maximum=1.0, strict_minimum=True)
    top, rows = _rows(ranked, train_csr.shape[1], k, users, train_csr.shape[0])
    groups = normalized_groups(groups)
    history = train_csr[rows]
    history.data = (history.data > 0).astype(np.float64)
    history.eliminate_zeros()
    p = item_group_shares(history, groups)
    valid = top >= 0
    lists = sp.csr_matrix((np.ones(int(valid.sum())), top[valid], np.r_[0, np.cumsum(valid.sum(axis=1))]),
                          shape=(top.shape[0], train_csr.shape[1]))
    q = item_group_shares(lists, groups)
    q_smooth = (1 - alpha) * q + alpha * p
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0) / q_smooth), 0.0)
    keep = (p.sum(axis=1) > 0) & valid.any(axis=1)
    return float(terms.sum(axis=1)[keep].mean()) if keep.any() else float("nan")


def _popularity_metric(name: str, ranked: Any, train: Any, k: int, users: Any, head_share: float) -> float:
    train_csr = check_interactions(train, "train", allow_empty=True)
    top, rows = _rows(ranked, train_csr.shape[1], k, users, train_csr.shape[0])
    values = per_user_beyond([name], top, rows, train_csr, train_csr, None, head_share)[name]
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def aplt(ranked: Any, train: Any, k: int = 10, head_share: float = 0.8, users: Any = None) -> float:
    """Average percentage of long-tail items in the lists (Elliot's APLT); see the module docstring."""
    head_share = check_float(head_share, "head_share", minimum=0.0, maximum=1.0, strict_minimum=True)
    return _popularity_metric("long_tail", ranked, train, k, users, head_share)


def arp(ranked: Any, train: Any, k: int = 10, users: Any = None) -> float:
    """Average training popularity of the recommended items (Elliot's ARP); see the module docstring."""
    return _popularity_metric("popularity", ranked, train, k, users, 0.8)


def exposure_share(ranked: Any, group: Any, n_items: int, k: int = 10, discounted: bool = True) -> float:
    """Share of all exposure in the lists going to ``group`` (item ids or a mask over ``n_items``)."""
    n_items = check_int(n_items, "n_items", minimum=1)
    mask = _group_mask(group, n_items, "group")
    top, _ = _rows(ranked, n_items, k, None, None)
    weights = 1.0 / np.log2(np.arange(top.shape[1]) + 2.0) if check_bool(discounted, "discounted") \
        else np.ones(top.shape[1])
    valid = top >= 0
    total = (valid * weights).sum()
    in_group = (valid & mask[np.where(valid, top, 0)]) * weights
    return float(in_group.sum() / total) if total > 0 else float("nan")


def fair_share(ranked: Any, protected: Any, n_items: int, k: int = 10, p: float = 0.3,
               alpha: float = 0.1, adjust: bool = True) -> float:
    """Share of lists meeting FA*IR's table at every prefix up to ``k``; see the module docstring."""
    from ..rerank.fair import fair_table, meets_table
    n_items = check_int(n_items, "n_items", minimum=1)
    mask = _group_mask(protected, n_items, "protected")
    top, _ = _rows(ranked, n_items, k, None, None)
    if top.shape[0] == 0:
        return float("nan")
    valid = top >= 0
    flags = (valid & mask[np.where(valid, top, 0)]).astype(np.int64)
    return float(meets_table(flags, fair_table(top.shape[1], p, alpha, adjust)).mean())


def long_tail_mask(train: Any, head_share: float = 0.8) -> np.ndarray:
    """The long-tail items of ``train`` (bool per item), as ``aplt`` uses them."""
    return long_tail_items(item_popularity(check_interactions(train, "train", allow_empty=True)), head_share)
