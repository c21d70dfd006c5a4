"""The strong-generalisation protocol of Liang et al. (2018), as used by EASE and iALS papers.

Liang, Krishnan, Hoffman and Jebara, "Variational Autoencoders for
Collaborative Filtering" (WWW 2018): whole users are held out.  A model is fit
on the other users only; each held-out user's interactions are split into a
fold-in part (80%), which the model sees at recommendation time without any
refit, and an evaluation part (20%), which it must find::

    split = strong_generalization_split(X, n_heldout_users=600, random_state=0)
    model = EASE(regularization=500).fit(split.train)
    evaluate_strong_generalization(model, split)
    # {'recall@20': ..., 'recall@50': ..., 'ndcg@100': ..., 'n_users_evaluated': ..., ...}

As in the papers' code: held-out interactions with items that no training
user has are dropped (a model cannot know them); a held-out user with at
least ``min_interactions`` (5) interactions sends ``floor(0.2 n)`` of them, at
random, to evaluation, and one with fewer keeps them all for fold-in (and is
not evaluated); Recall@k divides the hits in the top k by
``min(k, |relevant|)``, and NDCG@k is binary DCG over the ideal DCG of
``min(k, |relevant|)`` hits.  Fold-in items are never recommended.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from .evaluate import recommended_lists
from .metrics import check_ranking, relevant_items
from .splits import _per_user_test_mask
from ..utils.table import Table
from ..utils.validation import check_bool, check_float, check_int, check_interactions

__all__ = ["StrongGeneralizationSplit", "strong_generalization_split", "evaluate_strong_generalization",
           "recall_ndcg"]


@dataclass(frozen=True)
class StrongGeneralizationSplit:
    """Train users, and held-out users' fold-in and evaluation interactions.

    Attributes
    ----------
    train : csr_matrix (n_train_users, n_items)
        The rows of every user not held out (users without interactions included).
    fold_in, evaluation : csr_matrix (n_heldout_users, n_items)
        Row r belongs to held-out user ``heldout_users[r]``; the two are
        disjoint and hold only items some training user has.
    train_users, heldout_users : int64 arrays
        The input's row index of each row of ``train`` and of the held-out parts.
    n_dropped : int
        Held-out interactions dropped because no training user has their item.
    user_map, item_map : IdMap or None
        The input's raw ids, when it was a ``fastrec.Interactions``.
    """

    train: sp.csr_matrix
    fold_in: sp.csr_matrix
    evaluation: sp.csr_matrix
    train_users: np.ndarray
    heldout_users: np.ndarray
    n_dropped: int
    user_map: Any = None
    item_map: Any = None


def _entries_where(X: sp.csr_matrix, keep: np.ndarray) -> sp.csr_matrix:
    """The stored entries of a canonical CSR for which ``keep`` is set (same shape)."""
    out = X.copy()
    out.data = np.where(keep, out.data, 0).astype(X.dtype, copy=False)
    out.eliminate_zeros()
    return out


def _count_heldout(n_heldout_users: Any, n_active: int) -> int:
    if isinstance(n_heldout_users, (float, np.floating)):
        fraction = check_float(n_heldout_users, "n_heldout_users", minimum=0.0, maximum=1.0,
                               strict_minimum=True)
        count = max(1, int(round(fraction * n_active)))
    else:
        count = check_int(n_heldout_users, "n_heldout_users", minimum=1)
    if count >= n_active:
        raise ValueError(f"n_heldout_users asks for {count} users but only {n_active} have interactions; "
                         "at least one must stay for training")
    return count


def strong_generalization_split(data: Any, n_heldout_users: int | float, fold_in_fraction: float = 0.8,
                                min_interactions: int = 5, random_state: Any = None
                                ) -> StrongGeneralizationSplit:
    """Hold out whole users, and split each held-out user into fold-in and evaluation parts.

    Parameters
    ----------
    data : scipy.sparse matrix, 2-D array or fastrec.Interactions
        Users x items; positive values are the relevant interactions.
    n_heldout_users : int >= 1, or float in (0, 1]
        How many users with interactions to hold out (a float: that share of
        them).  Liang et al. hold out 10,000 of ML-20M's 136,677 users for
        test (and as many for validation).
    fold_in_fraction : float in (0, 1)
        Share of a held-out user's interactions used for fold-in; the
        evaluation part gets ``floor((1 - fold_in_fraction) n)`` of them.
    min_interactions : int >= 1
        Held-out users with fewer interactions (after dropping items unknown
        to training) keep them all for fold-in and are not evaluated.
    random_state : int, numpy Generator or None
        Seeds the choice of users and of each user's evaluation items.

    Returns
    -------
    StrongGeneralizationSplit
    """
    dtype = data.dtype if sp.issparse(data) and data.dtype in (np.float32, np.float64) else np.float32
    X = check_interactions(data, "data", dtype=dtype)
    test_share = 1.0 - check_float(fold_in_fraction, "fold_in_fraction", minimum=0.0, maximum=1.0,
                                   strict_minimum=True)
    if test_share <= 0:
        raise ValueError("fold_in_fraction must be < 1: the held-out users need an evaluation part")
    min_interactions = check_int(min_interactions, "min_interactions", minimum=1)
    rng = np.random.default_rng(random_state)
    active = np.flatnonzero(np.diff(X.indptr))
    heldout = np.sort(rng.choice(active, size=_count_heldout(n_heldout_users, active.size),
                                 replace=False)).astype(np.int64)
    is_heldout = np.zeros(X.shape[0], dtype=bool)
    is_heldout[heldout] = True
    train_users = np.flatnonzero(~is_heldout).astype(np.int64)
    train = X[train_users]
    known = np.zeros(X.shape[1], dtype=bool)
    known[train.indices] = True
    held = X[heldout]
    kept = known[held.indices]
    held = _entries_where(held, kept)
    indptr = held.indptr.astype(np.int64)
    counts = np.diff(indptr)
    # round first: (1 - 0.8) * 5 is 0.999..., which Liang's int(0.2 * 5) reads as 1
    n_eval = np.floor(np.round(test_share * counts, 9)).astype(np.int64)
    n_eval[counts < min_interactions] = 0
    to_eval = _per_user_test_mask(rng.random(held.nnz), n_eval, indptr, np.arange(held.nnz, dtype=np.int64))
    return StrongGeneralizationSplit(train, _entries_where(held, ~to_eval), _entries_where(held, to_eval),
                                     train_users, heldout, int(kept.size - kept.sum()),
                                     getattr(data, "user_map", None), getattr(data, "item_map", None))


def recall_ndcg(ranked_ids: Any, relevant: Any, ks: Sequence[int] = (20, 50), ndcg_k: int = 100,
                users: Any = None) -> dict[str, np.ndarray]:
    """Per-row Recall@k (over ``min(k, |relevant|)``) and NDCG@``ndcg_k`` of ranked ids.

    Parameters
    ----------
    ranked_ids : (n_rows, n) int array
        Item ids, best first, padded with -1; n may be less than the cut-offs.
    relevant : users x items sparse matrix
        Positive entries are the relevant items.
    ks : sequence of int >= 1
        Recall cut-offs.
    ndcg_k : int >= 1
    users : int array, optional
        The row of ``relevant`` of each ranking row (default: row r is user r).

    Returns
    -------
    dict
        ``"recall@k"`` for each k and ``"ndcg@ndcg_k"``: float64 arrays, one
        value per ranking row, NaN for rows without relevant items.
    """
    ks = _check_cutoffs(ks)
    ndcg_k = check_int(ndcg_k, "ndcg_k", minimum=1)
    rel = relevant_items(relevant, "relevant")
    n_users, n_items = rel.shape
    ranked = check_ranking(ranked_ids, n_items)
    rows = np.arange(ranked.shape[0], dtype=np.int64) if users is None else np.asarray(users, dtype=np.int64)
    if rows.shape != (ranked.shape[0],) or (rows.size and (rows.min() < 0 or rows.max() >= n_users)):
        raise ValueError(f"users must give one row of relevant (0..{n_users - 1}) per ranking row "
                         f"({ranked.shape[0]})")
    depth = max(max(ks), ndcg_k)
    top = np.full((ranked.shape[0], depth), -1, dtype=np.int64)
    top[:, :min(depth, ranked.shape[1])] = ranked[:, :depth]
    # a hit: (row, item) is stored in relevant; canonical CSR keys row * n_items + item are sorted
    keys = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(rel.indptr)) * n_items + rel.indices
    wanted = rows[:, None] * n_items + top
    hits = np.zeros(top.shape, dtype=bool)
    if keys.size:
        at = np.minimum(np.searchsorted(keys, wanted), keys.size - 1)
        hits = (top >= 0) & (keys[at] == wanted)  # -1 padding would alias the previous row's last item
    n_rel = np.diff(rel.indptr)[rows].astype(np.float64)
    out: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in ks:
            out[f"recall@{k}"] = np.where(n_rel > 0, hits[:, :k].sum(axis=1) / np.minimum(k, n_rel), np.nan)
        discounts = 1.0 / np.log2(np.arange(2, ndcg_k + 2))
        ideal = np.concatenate([[0.0], np.cumsum(discounts)])
        dcg = hits[:, :ndcg_k] @ discounts
        out[f"ndcg@{ndcg_k}"] = np.where(n_rel > 0, dcg / ideal[np.minimum(ndcg_k, n_rel).astype(np.int64)],
                                         np.nan)
    return out


def _check_cutoffs(ks: Any) -> tuple[int, ...]:
    if isinstance(ks, (int, np.integer)):
        ks = (ks,)
    try:
        values = tuple(check_int(k, "ks", minimum=1) for k in ks)
    except TypeError:
        raise TypeError(f"ks must be an int or a sequence of ints >= 1, got {ks!r}") from None
    if not values:
        raise ValueError("ks must not be empty")
    return tuple(dict.fromkeys(values))


def evaluate_strong_generalization(model: Any, split: StrongGeneralizationSplit, ks: Sequence[int] = (20, 50),
                                   ndcg_k: int = 100, batch_size: int = 1024, per_user: bool = False,
                                   show_progress: bool = False
                                   ) -> dict[str, float] | tuple[dict[str, float], Any]:
    """Score a model fitted on ``split.train`` on the held-out users, folded in without refit.

    Each held-out user's top ``max(ks, ndcg_k)`` come from
    ``model.recommend(None, X=fold_in_rows, exclude_seen=True)``, so the fold-in
    items are never recommended.  Works with every fastrec model (ALS and
    EASE fold in exactly, ItemKNN scores the rows directly, BPR/WARP run SGD
    on the new users' vectors).

    Parameters
    ----------
    model : fitted fastrec model
        Fitted on ``split.train`` (same items).
    split : StrongGeneralizationSplit
    ks : sequence of int
        Recall cut-offs (Recall@k over ``min(k, |relevant|)``).
    ndcg_k : int
    batch_size : int
        Held-out users per ``recommend`` call.
    per_user : bool
        Also return a ``Table`` with one row per evaluated user (``user``: the
        held-out row, ``input_user``: the input's row index, and each metric).
    show_progress : bool

    Returns
    -------
    summary : dict
        ``recall@k`` for each k and ``ndcg@ndcg_k`` (means over the evaluated
        users), ``n_users_evaluated`` and ``n_users_skipped`` (held-out users
        without evaluation interactions).
    table : only with ``per_user=True``
    """
    if not isinstance(split, StrongGeneralizationSplit):
        raise TypeError(f"split must be a StrongGeneralizationSplit (from strong_generalization_split), "
                        f"got {type(split).__name__}")
    ks = _check_cutoffs(ks)
    ndcg_k = check_int(ndcg_k, "ndcg_k", minimum=1)
    per_user = check_bool(per_user, "per_user")
    n_items = getattr(model, "n_items_", split.train.shape[1])
    if n_items != split.train.shape[1]:
        raise ValueError(f"model knows {n_items} items but split.train has {split.train.shape[1]}; fit the "
                         "model on split.train")
    depth = max(max(ks), ndcg_k)
    users, ranked, relevant, _ = recommended_lists(model, split.fold_in, split.evaluation, depth, batch_size,
                                                   show_progress, exclude_train=True, fold_in=True)
    values = recall_ndcg(ranked, relevant, ks, ndcg_k, users=users)
    summary = {name: float(column.mean()) if column.size else math.nan for name, column in values.items()}
    summary["n_users_evaluated"] = int(users.size)
    summary["n_users_skipped"] = int(split.evaluation.shape[0] - users.size)
    if per_user:
        return summary, Table({"user": users, "input_user": split.heldout_users[users], **values})
    return summary
