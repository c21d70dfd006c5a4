"""Leave-one-out evaluation over sampled negatives (He et al. 2017, "Neural Collaborative Filtering").

Each test case is a user, one held-out positive item and a list of negative
items (NCF: 99, sampled among the items the user never interacted with).  The
model scores the positive and the negatives; the positive's rank among them
gives HR@k (1 if it is in the top k) and NDCG@k (``1 / log2(rank + 2)`` inside
the top k, else 0), averaged over the test cases.  Given the published
negatives file, the figures are comparable with the NCF tables directly::

    negatives = load_ncf_negatives("ml-1m.test.negative")
    train = load_ncf_ratings("ml-1m.train.rating")
    model = ALS(factors=64).fit(train)
    evaluate_sampled(model, negatives, ks=10)   # {'hit_rate@10': ..., 'ndcg@10': ..., ...}

Ties count against the positive (a negative scoring exactly as high ranks
above it), the strictest reading; NCF's own code ordered ties by Python dict
order.  A negative listed twice counts once, and a listed negative equal to
the positive is ignored, as NCF's dict of scores does.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from .protocols import _check_cutoffs
from ..utils.table import Table
from ..utils.validation import check_bool, check_int, check_interactions, check_path, check_random_state

__all__ = ["SampledNegatives", "load_ncf_negatives", "load_ncf_ratings", "sample_negatives", "evaluate_sampled"]

# (user, item) pairs scored per predict call (bounds the memory of a large evaluation)
_PAIRS_PER_CALL = 1 << 20


@dataclass(frozen=True)
class SampledNegatives:
    """Test cases of the sampled-negatives protocol.

    Attributes
    ----------
    users, positives : int64 arrays (n_cases,)
        The user and held-out positive item of each case (model indices, or
        raw ids for ``evaluate_sampled(..., raw_ids=True)``).
    negatives : int64 array (n_cases, n_negatives)
        The negative items of each case.
    """

    users: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray

    def __post_init__(self) -> None:
        users, positives, negatives = (np.asarray(a) for a in (self.users, self.positives, self.negatives))
        for name, arr in (("users", users), ("positives", positives), ("negatives", negatives)):
            if arr.size and not np.issubdtype(arr.dtype, np.integer):
                raise TypeError(f"{name} must hold integer ids, got dtype {arr.dtype}")
        if users.ndim != 1 or positives.shape != users.shape:
            raise ValueError(f"users and positives must be 1-D of one length, got shapes {users.shape} and "
                             f"{positives.shape}")
        if negatives.ndim != 2 or negatives.shape[0] != users.size or negatives.shape[1] < 1:
            raise ValueError(f"negatives must be (n_cases, n_negatives) with n_cases = {users.size} and at "
                             f"least one negative, got shape {negatives.shape}")
        for name, arr in (("users", users), ("positives", positives), ("negatives", negatives)):
            object.__setattr__(self, name, arr.astype(np.int64, copy=False))


def _read_lines(path: Any, name: str) -> list[str]:
    path = os.fspath(check_path(path, name))
    with open(path, encoding="utf-8") as fh:
        return fh.read().splitlines()


def load_ncf_negatives(path: Any) -> SampledNegatives:
    """Read a negatives file in NCF's format: ``(user,item)\\tneg1\\tneg2...`` per line.

    Parameters
    ----------
    path : str or path-like
        A local file such as NCF's ``ml-1m.test.negative``; blank lines are skipped.

    Returns
    -------
    SampledNegatives
        Ids as written (NCF's are 0-based indices).

    Raises
    ------
    ValueError
        A malformed line (the message gives its number), or lines with
        different numbers of negatives.
    """
    users, positives, negatives = [], [], []
    for number, line in enumerate(_read_lines(path, "path"), start=1):
        if not line.strip():
            continue
        head, *rest = line.strip().split("\t")
        try:
            user, item = (int(part) for part in head.strip().strip("()").split(","))
            row = [int(value) for value in rest]
        except ValueError:
            raise ValueError(f"path: line {number} is not '(user,item)<TAB>neg1<TAB>neg2...': "
                             f"{line[:80]!r}") from None
        if negatives and len(row) != len(negatives[0]):
            raise ValueError(f"path: line {number} lists {len(row)} negatives but line 1 lists "
                             f"{len(negatives[0])}; every case needs the same number")
        users.append(user)
        positives.append(item)
        negatives.append(row)
    if not users:
        raise ValueError("path holds no test cases")
    return SampledNegatives(np.array(users), np.array(positives), np.array(negatives))


def load_ncf_ratings(path: Any, shape: tuple[int, int] | None = None, dtype: Any = np.float32) -> sp.csr_matrix:
    """Read NCF's ``user\\titem\\trating\\ttimestamp`` file as a binary users x items matrix.

    Rows and columns are the file's 0-based ids, as the negatives file uses
    them; every listed pair gets the value 1 (NCF trains on implicit feedback).

    Parameters
    ----------
    path : str or path-like
    shape : (n_users, n_items), optional
        Defaults to one more than the largest ids in the file.
    dtype : float32 or float64
    """
    pairs = []
    for number, line in enumerate(_read_lines(path, "path"), start=1):
        if line.strip():
            fields = line.split("\t")
            try:
                pairs.append((int(fields[0]), int(fields[1])))
            except (ValueError, IndexError):
                raise ValueError(f"path: line {number} is not 'user<TAB>item[<TAB>...]': {line[:80]!r}") from None
    arr = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    if arr.size and arr.min() < 0:
        raise ValueError("path holds a negative id; NCF ids are 0-based indices")
    if shape is None:
        shape = (int(arr[:, 0].max()) + 1, int(arr[:, 1].max()) + 1) if arr.size else (0, 0)
    X = sp.coo_matrix((np.ones(len(arr)), (arr[:, 0], arr[:, 1])), shape=shape)
    return check_interactions((X.tocsr() > 0).astype(np.float64), "path", dtype=dtype, allow_empty=True)


def sample_negatives(train: Any, test: Any, n_negatives: int = 99, random_state: Any = None) -> SampledNegatives:
    """NCF-style test cases when no published negatives file exists.

    One case per positive entry of ``test``, with ``n_negatives`` distinct
    items the user has in neither ``train`` nor ``test``, drawn uniformly.

    Parameters
    ----------
    train, test : users x items sparse matrices or fastrec.Interactions of one shape
        E.g. ``leave_last_k_out(X, 1)``.
    n_negatives : int >= 1
    random_state : int, numpy Generator or None
    """
    n_negatives = check_int(n_negatives, "n_negatives", minimum=1)
    test_csr = check_interactions(test, "test", allow_empty=True)
    seen = check_interactions(train, "train", shape=test_csr.shape, allow_empty=True)
    seen = (abs(seen) + abs(test_csr)).tocsr()
    seen.sort_indices()
    n_items = test_csr.shape[1]
    users = np.repeat(np.arange(test_csr.shape[0]), np.diff(test_csr.indptr))[test_csr.data > 0]
    positives = test_csr.indices[test_csr.data > 0]
    rng = np.random.default_rng(check_random_state(random_state))
    out = np.empty((users.size, n_negatives), dtype=np.int64)
    for case, user in enumerate(users):
        own = seen.indices[seen.indptr[user]:seen.indptr[user + 1]]
        if n_items - own.size < n_negatives:
            raise ValueError(f"n_negatives={n_negatives} but user {user} has only {n_items - own.size} items "
                             "left to sample from")
        # rank-select among the unseen items: the j-th unseen item is j plus the seen items at or below it
        picks = np.sort(rng.choice(n_items - own.size, size=n_negatives, replace=False))
        out[case] = picks + np.searchsorted(own - np.arange(own.size), picks, side="right")
        rng.shuffle(out[case])
    return SampledNegatives(users, positives, out)


def _case_ranks(pos_scores: np.ndarray, neg_scores: np.ndarray, positives: np.ndarray,
                negatives: np.ndarray) -> np.ndarray:
    """Per case, how many distinct negatives (other than the positive) score at least the positive's score."""
    order = np.argsort(negatives, axis=1, kind="stable")
    sorted_ids = np.take_along_axis(negatives, order, axis=1)
    sorted_scores = np.take_along_axis(neg_scores, order, axis=1)
    counted = np.ones(sorted_ids.shape, dtype=bool)
    counted[:, 1:] = sorted_ids[:, 1:] != sorted_ids[:, :-1]
    counted &= sorted_ids != positives[:, None]
    return (counted & (sorted_scores >= pos_scores[:, None])).sum(axis=1)


def evaluate_sampled(model: Any, cases: SampledNegatives, ks: int | Sequence[int] = 10, raw_ids: bool = False,
                     per_user: bool = False) -> dict[str, float] | tuple[dict[str, float], Any]:
    """HR@k and NDCG@k of the held-out positive ranked among its sampled negatives.

    Parameters
    ----------
    model : fitted fastrec model
        Scores come from ``model.predict(users, items)``.
    cases : SampledNegatives
        From ``load_ncf_negatives`` or ``sample_negatives``.
    ks : int or sequence of int
        Cut-offs (NCF reports k = 10).
    raw_ids : bool
        ``cases`` hold raw user and item ids of the model's id maps.
    per_user : bool
        Also return a ``Table`` with one row per case: ``user``, ``item``,
        ``rank`` (0-based) and each metric.

    Returns
    -------
    summary : dict
        ``hit_rate@k`` and ``ndcg@k`` for each k, and ``n_cases``.
    table : only with ``per_user=True``
    """
    if not isinstance(cases, SampledNegatives):
        raise TypeError(f"cases must be SampledNegatives (from load_ncf_negatives or sample_negatives), "
                        f"got {type(cases).__name__}")
    if not callable(getattr(model, "predict", None)):
        raise TypeError(f"model must be a fitted fastrec model with predict(), got {type(model).__name__}")
    ks = _check_cutoffs(ks)
    raw_ids, per_user = check_bool(raw_ids, "raw_ids"), check_bool(per_user, "per_user")
    n_cases, width = cases.negatives.shape
    items = np.concatenate([cases.positives[:, None], cases.negatives], axis=1)
    scores = np.empty(items.shape, dtype=np.float64)
    step = max(1, _PAIRS_PER_CALL // (width + 1))
    for start in range(0, n_cases, step):
        block = items[start:start + step]
        users = np.repeat(cases.users[start:start + step], width + 1)
        scores[start:start + step] = np.asarray(model.predict(users, block.ravel(), raw_ids=raw_ids),
                                                dtype=np.float64).reshape(block.shape)
    ranks = _case_ranks(scores[:, 0], scores[:, 1:], cases.positives, cases.negatives)
    values: dict[str, np.ndarray] = {}
    for k in ks:
        inside = ranks < k
        values[f"hit_rate@{k}"] = inside.astype(np.float64)
        values[f"ndcg@{k}"] = np.where(inside, 1.0 / np.log2(ranks + 2.0), 0.0)
    summary = {name: float(column.mean()) if n_cases else math.nan for name, column in values.items()}
    summary["n_cases"] = int(n_cases)
    if per_user:
        return summary, Table({"user": cases.users, "item": cases.positives, "rank": ranks, **values})
    return summary
