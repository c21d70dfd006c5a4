"""Merge repeated (user, item) pairs and put entries in (user, item) order."""
from __future__ import annotations

import numpy as np

__all__ = ["DUPLICATE_POLICIES", "combine_duplicates"]

DUPLICATE_POLICIES = ("sum", "max", "last")


def combine_duplicates(users: np.ndarray, items: np.ndarray, weights: np.ndarray,
                       timestamps: np.ndarray | None, n_items: int, policy: str
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Return (users, items, weights, timestamps) sorted by (user, item), one entry per pair.

    Policies
    --------
    ``"sum"``  adds the weights of a pair's events (counts when unweighted);
    ``"max"``  keeps the largest weight;
    ``"last"`` keeps the weight of the latest event: by timestamp when there
               are timestamps (ties broken by input order), else by input order.

    A merged entry's timestamp is the latest of its events for ``"sum"`` and
    ``"max"``, and that of the kept event for ``"last"``.  Inputs are never
    modified; the outputs are new arrays.
    """
    key = users.astype(np.int64) * max(int(n_items), 1) + items.astype(np.int64)
    n = key.size
    if n == 0 or bool(np.all(key[1:] > key[:-1])):
        order = None  # already canonical: the common case for generated or saved data
    elif policy == "last" and timestamps is not None:
        order = np.lexsort((timestamps, key))  # lexsort is stable: ties keep input order
    else:
        order = np.argsort(key, kind="stable")
    if order is None:
        return (users.astype(np.int32), items.astype(np.int32), weights.copy(),
                None if timestamps is None else timestamps.copy())

    key, weights = key[order], weights[order]
    timestamps = None if timestamps is None else timestamps[order]
    starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    ends = np.concatenate((starts[1:], [n])) - 1
    if starts.size == n:
        merged_w, merged_t = weights, timestamps
    elif policy == "sum":
        merged_w = np.add.reduceat(weights, starts)
        merged_t = None if timestamps is None else np.maximum.reduceat(timestamps, starts)
    elif policy == "max":
        merged_w = np.maximum.reduceat(weights, starts)
        merged_t = None if timestamps is None else np.maximum.reduceat(timestamps, starts)
    elif policy == "last":
        merged_w = weights[ends]
        merged_t = None if timestamps is None else timestamps[ends]
    else:
        raise ValueError(f"duplicates must be one of {DUPLICATE_POLICIES}, got {policy!r}")
    first_keys = key[starts]
    n_cols = max(int(n_items), 1)
    return ((first_keys // n_cols).astype(np.int32), (first_keys % n_cols).astype(np.int32),
            merged_w, merged_t)
