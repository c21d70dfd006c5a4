"""Dask DataFrame input: raw-id maps and shards built on the workers.

The client never holds the interactions.  It receives the distinct raw ids
(to build the ``IdMap``s, as ``Interactions`` does: indices follow the sorted
ids) and the entry count of every user and item (to cut balanced blocks);
each partition is turned into (user, item, weight) index triplets, split by
block and sent straight to the worker that keeps that block.
"""
from __future__ import annotations

import operator
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from ..data.idmap import IdMap
from ..utils.validation import check_columns, check_raw_ids, check_values
from . import _tasks
from ._cluster import direct, gather, submit_to
from ._engine import Layout, balanced_bounds

__all__ = ["FrameInput", "is_dask_frame"]

Columns = tuple[str, str, "str | None"]


def is_dask_frame(X: Any) -> bool:
    """Whether ``X`` is a Dask DataFrame (checked without importing Dask for other inputs)."""
    return type(X).__module__.split(".")[0] == "dask" and hasattr(X, "to_delayed") and hasattr(X, "columns")


# ------------------------------------------------------------- on the workers
def _events(df: Any, cols: Columns) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A partition's raw ids and weights, checked as ``Interactions.from_dataframe`` checks them."""
    from ..data.interactions import _float32_weights, _series_values

    user_col, item_col, weight_col = cols
    users = check_raw_ids(_series_values(df[user_col], user_col, "user_col"), "users")
    items = check_raw_ids(_series_values(df[item_col], item_col, "item_col"), "items", users.size)
    weights = None
    if weight_col is not None:
        weights = _float32_weights(check_values(_series_values(df[weight_col], weight_col, "weight_col"),
                                                "weights", users.size), "weights")
    return users, items, weights


def _partition_ids(df: Any, cols: Columns) -> tuple[np.ndarray, np.ndarray]:
    users, items, _ = _events(df, cols)
    return np.unique(users), np.unique(items)


def _union_ids(*parts: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return (np.unique(np.concatenate([p[0] for p in parts])),
            np.unique(np.concatenate([p[1] for p in parts])))


def _partition_triplets(df: Any, cols: Columns, user_map: IdMap, item_map: IdMap, drop_unknown: bool
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user index, item index, weight) of every event of a partition."""
    users, items, weights = _events(df, cols)
    u = np.asarray(user_map.to_index(users, unknown="mask" if drop_unknown else "raise"), dtype=np.int64)
    i = np.asarray(item_map.to_index(items, unknown="mask" if drop_unknown else "raise"), dtype=np.int32)
    w = np.ones(u.size) if weights is None else weights
    if drop_unknown:
        known = (u >= 0) & (i >= 0)
        u, i, w = u[known], i[known], w[known]
    return u, i, w


def _counts(triplets: tuple[np.ndarray, ...], n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    return (np.bincount(triplets[0], minlength=n_users).astype(np.int64),
            np.bincount(triplets[1], minlength=n_items).astype(np.int64))


def _add_counts(*parts: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


def _split(triplets: tuple[np.ndarray, ...], bounds: dict[str, np.ndarray]) -> dict[tuple[str, int], tuple]:
    """A partition's triplets by block: users by user block, items (transposed) by item block."""
    u, i, w = triplets
    out: dict[tuple[str, int], tuple] = {}
    for side, rows, cols in (("users", u, i), ("items", i, u)):
        if side not in bounds:
            continue
        edges = bounds[side]
        block = np.searchsorted(edges, rows, side="right") - 1
        order = np.argsort(block, kind="stable")
        starts = np.searchsorted(block[order], np.arange(edges.size))
        for k in range(edges.size - 1):
            pick = order[starts[k]:starts[k + 1]]
            out[(side, k)] = (rows[pick].astype(np.int64), cols[pick].astype(np.int32), w[pick])
    return out


def _seen_block(lo: int, hi: int, n_items: int, dtype: Any, *pieces: tuple) -> sp.csr_matrix:
    """The interactions of users ``lo:hi`` (for excluding seen items), canonical CSR."""
    rows = np.concatenate([p[0] for p in pieces]) - lo
    csr = sp.csr_matrix((np.concatenate([p[2] for p in pieces]), (rows, np.concatenate([p[1] for p in pieces]))),
                        shape=(hi - lo, n_items), dtype=np.float64)
    csr.sum_duplicates()
    csr.data = csr.data.astype(dtype)
    csr.eliminate_zeros()
    csr.indices = csr.indices.astype(np.int32)
    return csr


def _tree(client: Any, fn: Callable[..., Any], futures: list[Any], fan_in: int = 8) -> Any:
    while len(futures) > 1:
        futures = [client.submit(fn, *futures[i:i + fan_in], pure=False) for i in range(0, len(futures), fan_in)]
    return futures[0]


# ------------------------------------------------------------- on the client
class FrameInput:
    """A Dask DataFrame of events, one row each: raw user id, raw item id and an optional weight.

    Parameters
    ----------
    frame : dask.dataframe.DataFrame
    user_col, item_col : str
        Columns of raw ids (integers or strings; no missing values).
    weight_col : str or None
        Column of finite weights; None counts every event as 1.  Repeated
        (user, item) pairs are summed, as ``Interactions`` does by default.
    """

    def __init__(self, frame: Any, user_col: str = "user", item_col: str = "item", weight_col: str | None = "weight"):
        if not is_dask_frame(frame):
            raise TypeError(f"X must be a Dask DataFrame here, got {type(frame).__name__}")
        check_columns(frame.columns, {"user_col": user_col, "item_col": item_col, "weight_col": weight_col},
                      "the Dask DataFrame X")
        self.frame = frame
        self.cols: Columns = (user_col, item_col, weight_col)
        self.user_map: IdMap | None = None
        self.item_map: IdMap | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.user_map), len(self.item_map)

    def _partitions(self, client: Any) -> list[Any]:
        columns = [c for c in self.cols if c is not None]
        return client.compute(self.frame[columns].to_delayed())

    def prepare(self, client: Any, timeout: float | None) -> "FrameInput":
        """Read the distinct raw ids (the only thing proportional to the data the client receives)."""
        parts = self._partitions(client)
        ids = [client.submit(_partition_ids, p, self.cols, pure=False) for p in parts]
        users, items = gather(client, [_tree(client, _union_ids, ids)], timeout, "reading the raw ids of X")[0]
        if users.size == 0:
            raise ValueError("X holds no interactions (the Dask DataFrame has no rows); there is nothing to learn from")
        self.user_map, self.item_map = IdMap(users), IdMap(items)
        return self

    def _triplets(self, client: Any, maps: tuple[IdMap, IdMap], drop_unknown: bool) -> tuple[list[Any], list[Any]]:
        parts = self._partitions(client)
        user_map, item_map = client.scatter(list(maps), broadcast=True, hash=False, direct=direct(client))
        trips = [client.submit(_partition_triplets, p, self.cols, user_map, item_map, drop_unknown, pure=False)
                 for p in parts]
        return trips, parts + [user_map, item_map]

    def layout(self, client: Any, workers: list[str], n_blocks: int, fractions: dict[str, float],
               params: dict[str, Any], timeout: float | None, summed: bool) -> Layout:
        """Shards of both sides built on the workers (the caller waits with ``finish_layout``)."""
        n_users, n_items = self.shape
        trips, scratch = self._triplets(client, (self.user_map, self.item_map), drop_unknown=False)
        counts = _tree(client, _add_counts, [client.submit(_counts, t, n_users, n_items, pure=False) for t in trips])
        user_counts, item_counts = gather(client, [counts], timeout, "counting the entries of X")[0]
        bounds = {"users": balanced_bounds(user_counts, n_blocks), "items": balanced_bounds(item_counts, n_blocks)}
        # summed item half-steps: no item shards, the triplets are split by users only
        splits = [client.submit(_split, t, {"users": bounds["users"]} if summed else bounds, pure=False) for t in trips]
        layout = Layout(workers, bounds, {"users": [], "items": []}, scratch=trips + scratch + splits, summed=summed)
        n_other = {"users": n_items, "items": n_users}
        for side, other in (("users", "items"),) if summed else (("users", "items"), ("items", "users")):
            for k, worker in enumerate(layout.place(side)):
                pieces = [client.submit(operator.getitem, s, (side, k), pure=False) for s in splits]
                layout.scratch.extend(pieces)
                lo, hi = int(bounds[side][k]), int(bounds[side][k + 1])
                layout.shards[side].append(submit_to(
                    client, worker, _tasks.shard_from_pieces, side, lo, hi, n_other[side], bounds[other],
                    fractions[side], params, *pieces))
        return layout

    def seen_blocks(self, client: Any, maps: tuple[IdMap, IdMap], bounds: np.ndarray, owners: list[str],
                    dtype: Any) -> list[Any]:
        """Per block of users (``bounds``), its interactions as CSR on its worker; ids unknown to ``maps`` are dropped."""
        trips, _ = self._triplets(client, maps, drop_unknown=True)
        splits = [client.submit(_split, t, {"users": bounds}, pure=False) for t in trips]
        blocks = []
        for k, worker in enumerate(owners):
            pieces = [client.submit(operator.getitem, s, ("users", k), pure=False) for s in splits]
            blocks.append(submit_to(client, worker, _seen_block, int(bounds[k]), int(bounds[k + 1]),
                                    len(maps[1]), dtype, *pieces))
        return blocks  # the intermediate futures may go: the scheduler keeps what pending tasks need
