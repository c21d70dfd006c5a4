"""Train/test splits of interaction data, deterministic given ``random_state``.

Every split works on a flat list of stored interactions (user, item, value,
timestamp), picks a boolean "goes to test" mask over it, and builds train and
test from the two halves.  So the input is never modified, the halves are
disjoint and their union is the input.

Inputs are a scipy sparse users x items matrix or a ``fastrec.Interactions``
(duck-typed: ``users``, ``items``, ``weights``, ``timestamps``, ``subset``).
Sparse input gives CSR output (``csr_array`` for sparse arrays, else
``csr_matrix``) of the input's shape and dtype; ``Interactions`` input gives
``Interactions.subset`` results, which keep the id maps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from ..utils.jit import njit, prange

from ..utils.validation import check_float, check_int

__all__ = ["random_split", "per_user_split", "leave_last_k_out", "temporal_split", "user_split", "cold_user_split",
           "cold_item_split"]


@dataclass(frozen=True)
class _Entries:
    """The stored interactions of a split input, one array entry per interaction."""

    source: Any
    users: np.ndarray  # int64
    items: np.ndarray
    values: np.ndarray
    timestamps: np.ndarray | None
    shape: tuple[int, int]

    @property
    def nnz(self) -> int:
        return int(self.users.size)


def _is_interactions(X: Any) -> bool:
    return not sp.issparse(X) and all(hasattr(X, a) for a in ("users", "items", "weights", "subset"))


def _sparse_timestamps(X: sp.csr_matrix, timestamps: Any) -> np.ndarray:
    ts = sp.csr_matrix(timestamps, dtype=np.float64, copy=True)
    if ts.shape != X.shape:
        raise ValueError(f"timestamps has shape {ts.shape} but X has shape {X.shape}")
    ts.sum_duplicates()
    if not (np.array_equal(ts.indptr, X.indptr) and np.array_equal(ts.indices, X.indices)):
        raise ValueError("timestamps must store a value for exactly the entries stored in X")
    return ts.data


def _entries(X: Any, timestamps: Any = None) -> _Entries:
    """Flatten ``X`` (and timestamps aligned with it) into per-interaction arrays."""
    if _is_interactions(X):
        ts = X.timestamps if timestamps is None else timestamps
        users = np.asarray(X.users, dtype=np.int64)
        if ts is not None:
            ts = np.asarray(ts, dtype=np.float64).reshape(-1)
            if ts.size != users.size:
                raise ValueError(f"timestamps has {ts.size} entries but X has {users.size} interactions")
        return _Entries(X, users, np.asarray(X.items, dtype=np.int64),
                        np.asarray(X.weights), ts, tuple(X.shape))
    if not sp.issparse(X):
        raise TypeError("X must be a scipy.sparse users x items matrix or fastrec.Interactions; "
                        f"got {type(X).__name__}")
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D, got {X.ndim}-D")
    if timestamps is None or sp.issparse(timestamps):
        csr = sp.csr_matrix(X, copy=True)
        csr.sum_duplicates()  # a repeated (user, item) must not land in both halves
        ts = None if timestamps is None else _sparse_timestamps(csr, timestamps)
        coo = csr.tocoo()
    else:
        if X.format not in ("csr", "csc", "coo"):
            raise TypeError("a 1-D timestamps array must be aligned with X.data, so X must be in "
                            f"CSR, CSC or COO format; got {X.format.upper()}")
        ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)
        if ts.size != X.nnz:
            raise ValueError(f"timestamps has {ts.size} entries but X stores {X.nnz}; "
                             "pass one timestamp per stored entry, aligned with X.data")
        coo = sp.coo_matrix(X, copy=True)  # keeps the order of X.data
        keys = coo.row.astype(np.int64) * X.shape[1] + coo.col
        if np.unique(keys).size != keys.size:
            raise ValueError("X stores some (user, item) pairs more than once; with per-entry "
                             "timestamps each pair must be stored once")
    if ts is not None and not np.isfinite(ts).all():
        raise ValueError("timestamps contains NaN or infinite values")
    return _Entries(X, coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data, ts,
                    tuple(X.shape))


def _build(entries: _Entries, keep: np.ndarray) -> Any:
    """The part of the input whose entries have ``keep`` set, in the input's kind."""
    X = entries.source
    if _is_interactions(X):
        return X.subset(keep)
    out = sp.csr_matrix((entries.values[keep], (entries.users[keep], entries.items[keep])),
                        shape=entries.shape, dtype=X.dtype)
    out.sort_indices()
    if isinstance(X, getattr(sp, "sparray", ())):
        return sp.csr_array(out)
    return out


def _halves(entries: _Entries, test: np.ndarray) -> tuple[Any, Any]:
    return _build(entries, ~test), _build(entries, test)


def _require_timestamps(entries: _Entries) -> np.ndarray:
    if entries.timestamps is None:
        raise ValueError("this split needs timestamps: pass timestamps=... (a sparse matrix with "
                         "X's pattern or an array aligned with X.data), or Interactions with timestamps")
    return entries.timestamps


def _check_fraction(value: Any, name: str) -> float:
    value = check_float(value, name, minimum=0.0, strict_minimum=True)
    if value >= 1.0:
        raise ValueError(f"{name} must be < 1, got {value}")
    return value


def _grouped(users: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, order): the entries of user u are ``order[indptr[u]:indptr[u+1]]``, in stored order."""
    if users.size == 0 or np.all(users[1:] >= users[:-1]):
        order = np.arange(users.size, dtype=np.int64)
    else:
        order = np.argsort(users, kind="stable").astype(np.int64)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
    return indptr, order


@njit(parallel=True)
def _select_largest(indptr, order, keys, n_select):  # pragma: no cover - compiled
    """Per group, mark the ``n_select[g]`` entries with the largest keys (ties: later entry wins)."""
    mask = np.zeros(keys.size, dtype=np.bool_)
    for g in prange(indptr.size - 1):
        n = n_select[g]
        if n <= 0:
            continue
        members = order[indptr[g]:indptr[g + 1]]
        group_keys = np.empty(members.size, dtype=np.float64)
        for j in range(members.size):
            group_keys[j] = keys[members[j]]
        ranked = np.argsort(group_keys, kind="mergesort")  # stable: ties keep stored order
        for j in range(members.size - n, members.size):
            mask[members[ranked[j]]] = True
    return mask


def _per_user_test_mask(keys: np.ndarray, n_select: np.ndarray, indptr: np.ndarray,
                        order: np.ndarray) -> np.ndarray:
    # fresh writeable copies: read-only inputs would compile a second signature
    return _select_largest(indptr, order, np.array(keys, dtype=np.float64),
                           np.array(n_select, dtype=np.int64))


def random_split(X: Any, test_fraction: float = 0.2, random_state: Any = None) -> tuple[Any, Any]:
    """Send a random ``test_fraction`` of all interactions to test.

    Parameters
    ----------
    X : scipy.sparse matrix (users x items) or fastrec.Interactions
    test_fraction : float in (0, 1)
        Exactly ``round(test_fraction * nnz)`` interactions go to test.
    random_state : int, numpy Generator or None

    Returns
    -------
    train, test
        Same kind and shape as ``X``; disjoint, and together equal to ``X``.
    """
    test_fraction = _check_fraction(test_fraction, "test_fraction")
    entries = _entries(X)
    rng = np.random.default_rng(random_state)
    n_test = int(round(test_fraction * entries.nnz))
    test = np.zeros(entries.nnz, dtype=bool)
    test[rng.permutation(entries.nnz)[:n_test]] = True
    return _halves(entries, test)


def per_user_split(X: Any, test_fraction: float = 0.2, min_interactions: int = 2,
                   random_state: Any = None) -> tuple[Any, Any]:
    """Hold out a random ``test_fraction`` of each user's interactions.

    Each user with at least ``min_interactions`` interactions sends
    ``round(test_fraction * n)`` of them to test, but at least one and never
    all of them, so every test user keeps training data.  Users with fewer
    interactions stay entirely in train.

    Parameters
    ----------
    X : scipy.sparse matrix (users x items) or fastrec.Interactions
    test_fraction : float in (0, 1)
    min_interactions : int >= 2
    random_state : int, numpy Generator or None

    Returns
    -------
    train, test
        Same kind and shape as ``X``; disjoint, and together equal to ``X``.
    """
    test_fraction = _check_fraction(test_fraction, "test_fraction")
    min_interactions = check_int(min_interactions, "min_interactions", minimum=2)
    entries = _entries(X)
    indptr, order = _grouped(entries.users, entries.shape[0])
    counts = np.diff(indptr)
    n_select = np.clip(np.floor(test_fraction * counts + 0.5), 1, np.maximum(counts - 1, 1))
    n_select[counts < min_interactions] = 0
    keys = np.random.default_rng(random_state).random(entries.nnz)
    return _halves(entries, _per_user_test_mask(keys, n_select, indptr, order))


def leave_last_k_out(X: Any, k: int = 1, timestamps: Any = None,
                     min_interactions: int | None = None) -> tuple[Any, Any]:
    """Hold out each user's ``k`` most recent interactions.

    Equal timestamps are ordered by storage order (a later stored entry counts
    as more recent), so the split is deterministic.

    Parameters
    ----------
    X : scipy.sparse matrix (users x items) or fastrec.Interactions
    k : int >= 1
    timestamps : sparse matrix with X's sparsity pattern, or 1-D array aligned with
        ``X.data`` (X in CSR/CSC/COO format); defaults to ``X.timestamps`` for Interactions.
    min_interactions : int, optional
        Users with fewer interactions stay entirely in train.  Defaults to
        ``k + 1``, so every test user keeps at least one training interaction.

    Returns
    -------
    train, test
    """
    k = check_int(k, "k", minimum=1)
    min_interactions = k + 1 if min_interactions is None else check_int(
        min_interactions, "min_interactions", minimum=1)
    entries = _entries(X, timestamps)
    ts = _require_timestamps(entries)
    indptr, order = _grouped(entries.users, entries.shape[0])
    counts = np.diff(indptr)
    n_select = np.where(counts >= min_interactions, np.minimum(counts, k), 0)
    return _halves(entries, _per_user_test_mask(ts, n_select, indptr, order))


def temporal_split(X: Any, cutoff: float | None = None, quantile: float | None = None,
                   timestamps: Any = None) -> tuple[Any, Any]:
    """Split at one global point in time: test holds interactions at or after the cut-off.

    Parameters
    ----------
    X : scipy.sparse matrix (users x items) or fastrec.Interactions
    cutoff : float, optional
        The cut-off timestamp.
    quantile : float in (0, 1), optional
        Use ``numpy.quantile(timestamps, quantile)`` as the cut-off instead
        (with ties at the cut-off, test can hold more than ``1 - quantile``).
    timestamps : see ``leave_last_k_out``.

    Returns
    -------
    train, test
        Test may contain users and items that train lacks (cold start).
    """
    if (cutoff is None) == (quantile is None):
        raise ValueError("pass exactly one of cutoff or quantile")
    entries = _entries(X, timestamps)
    ts = _require_timestamps(entries)
    if quantile is not None:
        quantile = _check_fraction(quantile, "quantile")
        cutoff = float(np.quantile(ts, quantile)) if ts.size else 0.0
    else:
        cutoff = check_float(cutoff, "cutoff")
    return _halves(entries, ts >= cutoff)


def user_split(X: Any, test_users: float | int = 0.1, random_state: Any = None
               ) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """Hold out whole users, for fold-in evaluation of users unseen at fit time.

    Parameters
    ----------
    X : scipy.sparse matrix (users x items) or fastrec.Interactions
    test_users : float in (0, 1) or int >= 1
        Fraction (rounded, at least one) or number of the users *with
        interactions* to hold out.
    random_state : int, numpy Generator or None

    Returns
    -------
    train, held_out, train_users, test_users
        ``train`` holds the interactions of the remaining users and ``held_out``
        those of the held-out users.  Both keep the shape (and, for
        Interactions, the id maps) of ``X``: rows of the other group are empty.
        ``train_users`` and ``test_users`` are the sorted user indices of each
        group (users without interactions count as train users).  To evaluate,
        split ``held_out`` again (e.g. ``per_user_split``) and call
        ``evaluate(model, fold_in_part, target_part, fold_in=True)``.
    """
    return _hold_out(X, "users", test_users, random_state, "test_users")


def _hold_out(X: Any, side: str, share: Any, random_state: Any, name: str
              ) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """Hold out a share (or number) of the users or items that have interactions, with all of them."""
    entries = _entries(X)
    axis = 0 if side == "users" else 1
    owner = entries.users if axis == 0 else entries.items
    count = entries.shape[axis]
    active = np.flatnonzero(np.bincount(owner, minlength=count))
    if isinstance(share, (float, np.floating)):
        fraction = _check_fraction(share, name)
        n_test = max(1, int(round(fraction * active.size)))
    else:
        n_test = check_int(share, name, minimum=1)
    if n_test > active.size:
        raise ValueError(f"{name} asks for {n_test} {side} but only {active.size} have interactions")
    rng = np.random.default_rng(random_state)
    held = np.sort(rng.choice(active, size=n_test, replace=False)).astype(np.int64)
    is_held = np.zeros(count, dtype=bool)
    is_held[held] = True
    train, held_out = _halves(entries, is_held[owner])
    return train, held_out, np.flatnonzero(~is_held).astype(np.int64), held


def cold_user_split(X: Any, test_users: float | int = 0.2, random_state: Any = None
                    ) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """User cold start: hold out a share of the users with all their interactions.

    The same split as ``user_split`` (same draws for the same seed), with the
    cold-start default of 20%.  Rank the held-out users from their side
    features alone (``model.recommend(users=None, user_features=...)``) and
    score against ``test``.

    Returns
    -------
    train, test, train_users, test_users
        As ``user_split``: both keep ``X``'s shape (and id maps).
    """
    return _hold_out(X, "users", test_users, random_state, "test_users")


def cold_item_split(X: Any, test_items: float | int = 0.2, random_state: Any = None
                    ) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """Item cold start: hold out a share of the items with all their interactions.

    Parameters
    ----------
    X : scipy.sparse matrix (users x items) or fastrec.Interactions
    test_items : float in (0, 1) or int >= 1
        Fraction (rounded, at least one) or number of the items *with
        interactions* to hold out.
    random_state : int, numpy Generator or None
        The same seed gives the same split.

    Returns
    -------
    train, test, train_items, test_items
        ``train`` holds the interactions with the remaining items and
        ``test`` every interaction with the held-out items; both keep the
        shape (and id maps) of ``X``, so a held-out item is a column with no
        training interactions that a model fitted with ``item_features``
        scores from its features.  ``train_items`` and ``test_items`` are
        sorted item indices (items without interactions count as train
        items).  To evaluate, rank only the held-out items:
        ``evaluate(model, train, test, candidates=test_items)`` or
        ``recommend(..., candidates=test_items)``.
    """
    return _hold_out(X, "items", test_items, random_state, "test_items")
