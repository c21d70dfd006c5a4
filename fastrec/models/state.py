"""The immutable fitted state every model serves from, and how a partial fit derives a new one.

Thread safety: all fitted arrays live in one ``FittedState`` that is replaced
by a single attribute assignment when a fit completes.  Serving calls read
``model._state`` once, so a concurrent ``fit`` or ``partial_fit_*`` is seen
either entirely or not at all.

User partial fits do not copy model-wide arrays: the new state shares the
base user factors and seen-items CSR with its parent and adds the changed
rows to a ``RowLog``, an append-only record shared by the states derived
from one base.  Each state sees only the first ``length`` entries of the log
(its ``UserOverlay``), so a reader holding an older state sees exactly the
older model.  ``factor_rows``, ``seen_rows``/``seen_pattern`` and
``interaction_counts`` read through the overlay in O(rows asked for);
``user_factors`` and ``user_items`` give the merged arrays, built once per
state on first use (save, whole-model readers).  The log is merged into a new
base when it passes ``merge_threshold`` rows (amortised O(row) per update),
by an item partial fit, and by the next ``fit``.
"""
from __future__ import annotations

import threading
from bisect import bisect_left
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Mapping

import numpy as np
import scipy.sparse as sp

from ..data.idmap import IdMap
from ..kernels.topk import RankingIndex, csr_rows, one_user_scan

__all__ = ["FitParams", "FittedState", "RowLog", "UserOverlay", "id_maps_of", "replace_rows", "non_finite"]

SIDES = ("users", "items")

# caches that depend on one side's vectors only: a partial fit of the other side keeps them
# (rebuilding the ranking index after every one-user update would cost more than the update)
CACHES_OF_SIDE = {
    "items": ("ranking_index", "gram_items", "fold_in_plan", "fold_in_plan_ials", "normalized_items"),
    "users": ("gram_users", "normalized_users"),
}
# caches a user update keeps: the items' own, and those of the base arrays (which it shares)
# (one_user_scan is bound to the base user arrays, which the overlay leaves as they are)
_KEPT_BY_USER_UPDATES = frozenset(CACHES_OF_SIDE["items"] + ("base_counts_items", "base_item_users",
                                                              "one_user_scan"))
# ... and those an update keeping the users' vectors keeps too (item updates rewriting seen rows)
_KEPT_BY_SEEN_UPDATES = _KEPT_BY_USER_UPDATES | frozenset(CACHES_OF_SIDE["users"] + ("merged_user_factors",))


def _rows_changed_at(current: sp.csr_matrix, columns: sp.csr_matrix, users: np.ndarray,
                     items: np.ndarray) -> np.ndarray:
    """Which of ``current`` (the canonical rows of ``users``, sorted ids) hold other entries at
    ``items`` than the canonical ``columns`` (one row per item, columns are users) give them: another
    value, or an entry where there was none or none where there was one."""
    order = np.argsort(items, kind="stable")
    at_items = np.isin(current.indices, items)
    old_rows = np.repeat(np.arange(users.size), np.diff(current.indptr))[at_items]
    old_keys = old_rows * np.int64(items.size) + order[np.searchsorted(items, current.indices[at_items],
                                                                        sorter=order)]
    new_keys = (np.searchsorted(users, columns.indices) * np.int64(items.size)
                + np.repeat(np.arange(items.size), np.diff(columns.indptr)))
    keys = np.concatenate([old_keys, new_keys])
    values = np.concatenate([current.data[at_items], columns.data.astype(current.dtype, copy=False)])
    sorted_at = np.argsort(keys, kind="stable")  # a key held by both sides: old then new, side by side
    keys, values = keys[sorted_at], values[sorted_at]
    pair = keys[1:] == keys[:-1]
    alone = np.ones(keys.size, dtype=bool)  # a key on one side only: an entry added or removed
    alone[1:] &= ~pair
    alone[:-1] &= ~pair
    changed = np.zeros(users.size, dtype=bool)
    changed[keys[alone] // items.size] = True
    changed[keys[1:][pair & (values[1:] != values[:-1])] // items.size] = True
    return changed


def merge_threshold(n_rows: int) -> int:
    """Overlay rows at which a partial fit merges them into new base arrays.

    A merge copies the whole model (O(nnz + n f)); merging every ``n / 16``
    updates (at least 4096) spreads it over them: on the MovieLens-20M-shaped
    model a merge costs 0.1-0.3 s, 10-40 us per update, while the overlay holds
    about 1 KB per update and reads through it stay O(1) per user.
    """
    return max(4096, n_rows // 16)


class FitParams(Mapping):
    """The checked hyperparameters a state was fitted with: a read-only mapping (picklable)."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any] = ()) -> None:
        object.__setattr__(self, "_values", dict(values))

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("fitted parameters are read-only")

    def __getstate__(self) -> dict:
        return self._values

    def __setstate__(self, values: dict) -> None:
        object.__setattr__(self, "_values", dict(values))

    def __repr__(self) -> str:
        return f"FitParams({self._values!r})"


def _readonly(arr: np.ndarray | None) -> np.ndarray | None:
    if arr is not None:
        arr.flags.writeable = False
    return arr


class RowLog:
    """Append-only record of replaced user rows, shared by the states derived from one base.

    Entry ``k`` holds one user's vector (or None) and its seen items (sorted
    int32 indices and values).  A state sees the entries below its overlay's
    ``length``; entries are never changed once written, so a state never sees
    a later update.  Writers extend it only from its tip (``append_at``, under
    the log's own lock: shallow copies of a model share it but not the model's
    lock); a state that is not the tip gets a new log (``prefix``).
    """

    __slots__ = ("positions", "entries", "ids", "_lock", "_items")

    def __init__(self) -> None:
        self.positions: dict[int, list[int]] = {}  # row -> its entries, ascending
        self.entries: list[tuple[np.ndarray | None, np.ndarray, np.ndarray]] = []
        self.ids = np.empty(64, dtype=np.int64)  # entry -> row (grown by doubling; a prefix never changes)
        self._lock = threading.Lock()
        # (item ids, their entries, keys per entry so far): every entry's items in one pair of arrays,
        # built on demand for the entries added since (item updates find the rows holding an item)
        self._items = (np.empty(0, np.int32), np.empty(0, np.int32), [0])

    def __getstate__(self) -> tuple:
        return self.positions, self.entries, self.ids

    def __setstate__(self, state: tuple) -> None:
        self.positions, self.entries, self.ids = state
        self._lock = threading.Lock()
        self._items = (np.empty(0, np.int32), np.empty(0, np.int32), [0])

    def rows_holding(self, items: np.ndarray, length: int) -> np.ndarray:
        """The rows (sorted, once each) of the first ``length`` entries whose seen items include one of
        ``items`` (an entry a later one of its row replaced included: a superset).  Each entry is indexed once, on
        the first call that reaches it: O(entries added) amortised, then one vectorised pass."""
        with self._lock:
            keys, owners, ends = self._items
            if len(ends) <= length:  # index the entries added since
                new = self.entries[len(ends) - 1:length]
                counts = np.array([indices.size for _, indices, _ in new], dtype=np.int64)
                size = ends[-1] + int(counts.sum())
                if size > keys.size:  # grown by doubling; the arrays a reader holds keep their prefix
                    capacity = max(size, 2 * keys.size, 1024)
                    keys, owners = np.resize(keys, capacity), np.resize(owners, capacity)
                keys[ends[-1]:size] = np.concatenate([np.empty(0, np.int32)] + [i for _, i, _ in new])
                owners[ends[-1]:size] = np.repeat(np.arange(len(ends) - 1, length, dtype=np.int32), counts)
                ends = ends + (ends[-1] + np.cumsum(counts)).tolist()
                self._items = (keys, owners, ends)
            n = ends[length]
        return np.unique(self.ids[owners[:n][np.isin(keys[:n], items)]])

    def __len__(self) -> int:
        return len(self.entries)

    def prefix(self, length: int) -> "RowLog":
        """A new log holding this one's first ``length`` entries (when a state that is not the tip is updated)."""
        log = RowLog()
        for k in range(length):
            log.append_at(k, int(self.ids[k]), *self.entries[k])
        return log

    def extend(self, length: int, rows: list) -> "RowLog":
        """This log with ``rows`` (row, vector, indices, data) appended when it has ``length`` entries,
        else a new log of its first ``length`` entries and ``rows``.

        Row by row (``append_at``): no state can see past the log's current end, so once the first row
        is in, no other writer's length matches before the caller's new state exists.
        """
        log = self
        for k, row in enumerate(rows):
            log = log.append_at(length + k, *row)
        return log

    def append_at(self, length: int, row: int, vector: np.ndarray | None, indices: np.ndarray,
                  data: np.ndarray) -> "RowLog":
        """This log with one entry appended when it has ``length`` entries (checked under its lock),
        else a new log of its first ``length`` entries and the new one.  The entry's arrays become
        read-only.  (One method, one Python call: a one-user update's path.)"""
        with self._lock:
            k = len(self.entries)
            if k == length:
                ids = self.ids
                if k == ids.size:
                    ids = np.empty(2 * k, dtype=np.int64)
                    ids[:k] = self.ids
                    self.ids = ids  # readers holding the old buffer still see the same prefix
                ids[k] = row
                if vector is not None:
                    vector.setflags(write=False)  # setflags: half the cost of .flags.writeable
                indices.setflags(write=False)
                data.setflags(write=False)
                self.entries.append((vector, indices, data))
                self.positions.setdefault(row, []).append(k)
                return self
        return self.prefix(length).append_at(length, row, vector, indices, data)  # not the tip


class UserOverlay:
    """A state's view of a ``RowLog``: its first ``length`` entries, over ``n_rows`` users in all (immutable)."""

    __slots__ = ("log", "length", "n_rows", "vectors_changed")

    def __init__(self, log: RowLog, length: int, n_rows: int, vectors_changed: bool = True) -> None:
        self.log, self.length, self.n_rows = log, length, n_rows
        # False while only seen rows changed (item updates): the base user factors are still current
        self.vectors_changed = vectors_changed

    def __repr__(self) -> str:
        return f"UserOverlay({self.length} rows pending, {self.n_rows} users)"

    def entry(self, row: int) -> int:
        """The latest entry of ``row`` this state sees, or -1."""
        positions = self.log.positions.get(row)
        if positions is None:
            return -1
        k = bisect_left(positions, self.length) - 1
        return positions[k] if k >= 0 else -1

    def entries_of(self, rows: np.ndarray) -> np.ndarray:
        """The latest entry of each of ``rows`` (-1 for rows without one)."""
        out = np.full(rows.size, -1, dtype=np.int64)
        if rows.size == 1:
            out[0] = self.entry(int(rows[0]))
            return out
        for k in np.flatnonzero(np.isin(rows, self.log.ids[:self.length])):
            out[k] = self.entry(int(rows[k]))
        return out

    def latest(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, entries): every updated row once, with its latest entry, rows ascending."""
        reversed_ids = self.log.ids[:self.length][::-1]
        rows, first = np.unique(reversed_ids, return_index=True)
        return rows.astype(np.int32), self.length - 1 - first


@dataclass(frozen=True, eq=False)
class FittedState:
    """Everything a fitted model serves from; never mutated after creation.

    ``params`` holds the checked hyperparameters the model was fitted with
    (read-only).  Fold-in, partial fits and ``explain`` use them, so a
    ``set_params`` after ``fit`` does not change what a fitted model answers.

    ``user_factors`` and ``user_items`` are the merged arrays: with pending
    user updates (``pending``) they are built on first use, so hot paths read
    users through ``factor_rows`` and ``seen_rows``/``seen_pattern`` instead.
    ``dataclasses.replace`` gives a merged state without pending updates.
    """

    user_factors: np.ndarray | None  # None for models without user vectors (item-item models)
    item_factors: np.ndarray | None
    user_items: sp.csr_matrix
    item_bias: np.ndarray | None = None
    user_map: IdMap | None = None  # raw ids, when fitted from fastrec.Interactions
    item_map: IdMap | None = None
    params: FitParams = field(default_factory=FitParams)
    # item-item models: S (items x items CSR), a user's score for i is sum_j r_uj S[j, i]
    item_similarity: sp.csr_matrix | None = None
    # side features (fastrec.models.side.SideFeatures), when fitted with user_features/item_features
    user_features: Any = None
    item_features: Any = None
    # lazily filled, derived-only caches (idempotent, so races are harmless)
    cache: dict = field(default_factory=dict, repr=False)
    # user rows updated since the base arrays (set by with_rows only; replace() drops it)
    pending: UserOverlay | None = field(default=None, init=False, repr=False)

    def __getstate__(self) -> dict:
        # the bound one-user scan holds compiled views of the arrays (it does not pickle):
        # a copy rebuilds it on first use
        state = self.__dict__.copy()
        state["cache"] = {key: value for key, value in self.cache.items() if key != "one_user_scan"}
        return state

    def __post_init__(self) -> None:
        base_factors, base_seen = self._user_factors, self._user_items
        for factors, count, side in ((base_factors, base_seen.shape[0], "users"),
                                     (self.item_factors, base_seen.shape[1], "items")):
            if factors is not None and factors.shape[0] != count:
                raise ValueError(f"{side[:-1]} factors have {factors.shape[0]} rows for {count} {side}")
        _readonly(base_factors)
        _readonly(self.item_factors)
        _readonly(self.item_bias)
        for matrix in (base_seen, self.item_similarity):
            if matrix is not None:
                for arr in (matrix.data, matrix.indices, matrix.indptr):
                    _readonly(arr)
        for features, count, side in ((self.user_features, base_seen.shape[0], "users"),
                                      (self.item_features, base_seen.shape[1], "items")):
            if features is not None and features.matrix.shape[0] != count:
                raise ValueError(f"{side[:-1]} features have {features.matrix.shape[0]} rows for {count} {side}")
        if not isinstance(self.params, FitParams):
            object.__setattr__(self, "params", FitParams(self.params))

    def _derive(self, **changes: Any) -> "FittedState":
        """A copy with some attributes changed, sharing everything else (no checks, no copies)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new

    @property
    def n_users(self) -> int:
        return self.pending.n_rows if self.pending is not None else self._user_items.shape[0]

    @property
    def n_items(self) -> int:
        return self._user_items.shape[1]

    @property
    def dtype(self) -> np.dtype:
        """The model's float type (of its factors, or of its item similarities)."""
        for arr in (self.item_factors, None if self.item_similarity is None else self.item_similarity.data):
            if arr is not None:
                return arr.dtype
        return self._user_items.dtype

    def factors(self, side: str) -> np.ndarray | None:
        return self.user_factors if side == "users" else self.item_factors

    def id_map(self, side: str) -> IdMap | None:
        return self.user_map if side == "users" else self.item_map

    def side_features(self, side: str) -> Any:
        """The ``SideFeatures`` of users or items, or None without features."""
        return self.user_features if side == "users" else self.item_features

    # ------------------------------------------------- reads through the overlay
    def _merged_users(self, part: int) -> Any:
        """The user factors (``part`` 0) or seen-items CSR (1) with the pending rows merged in.

        Each is built once per state, on first use; the factors alone cost
        O(n f), the seen matrix O(nnz).
        """
        key = ("merged_user_factors", "merged_user_items")[part]
        merged = self.cache.get(key)
        if merged is None:
            pending = self.pending
            rows, entries = pending.latest()
            picked = [pending.log.entries[e] for e in entries]
            if part == 0:
                base = self._user_factors
                if base is None or not pending.vectors_changed:
                    return base
                merged = np.zeros((pending.n_rows, base.shape[1]), dtype=base.dtype)
                merged[:base.shape[0]] = base
                if rows.size:
                    merged[rows] = np.stack([vector for vector, _, _ in picked])
                _readonly(merged)
            else:
                base = self._user_items
                lengths = np.array([indices.size for _, indices, _ in picked], dtype=np.int64)
                indptr = np.zeros(rows.size + 1, dtype=np.int64)
                np.cumsum(lengths, out=indptr[1:])
                empty_i, empty_d = np.zeros(0, np.int32), np.zeros(0, base.dtype)
                new_rows = sp.csr_matrix((np.concatenate([empty_d] + [d for _, _, d in picked]),
                                          np.concatenate([empty_i] + [i for _, i, _ in picked]), indptr),
                                         shape=(rows.size, base.shape[1]))
                merged = replace_rows(base, rows, new_rows, pending.n_rows)
                for arr in (merged.data, merged.indices, merged.indptr):
                    _readonly(arr)
            self.cache[key] = merged
        return merged

    def factor_rows(self, side: str, ids: np.ndarray) -> np.ndarray | None:
        """The vectors of users (items) ``ids`` as a new (len(ids), f) array, or None without vectors.

        Ids past the stored rows (a partial fit growing the model) get zeros.
        """
        base = self.item_factors if side == "items" else self._user_factors
        if base is None:
            return None
        pending = self.pending if side == "users" else None
        if pending is None and (ids.size == 0 or int(ids.max()) < base.shape[0]):
            return base[ids]
        entries = np.full(ids.size, -1) if pending is None else pending.entries_of(ids)
        out = np.zeros((ids.size, base.shape[1]), dtype=base.dtype)
        known = (entries < 0) & (ids < base.shape[0])
        out[known] = base[ids[known]]
        for k in np.flatnonzero(entries >= 0):
            out[k] = pending.log.entries[entries[k]][0]
        return out

    def _gather_seen(self, ids: np.ndarray, with_data: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(indptr, indices, data or None) of the seen rows of users ``ids``, read through the overlay."""
        pending, base = self.pending, self._user_items
        entries = pending.entries_of(ids)
        from_base = (entries < 0) & (ids < base.shape[0])
        rows = np.where(from_base, ids, 0)
        starts = base.indptr[rows].astype(np.int64)
        lengths = np.where(from_base, base.indptr[rows + 1] - starts, 0)
        hits = np.flatnonzero(entries >= 0)
        picked = [pending.log.entries[e] for e in entries[hits]]
        lengths[hits] = [indices.size for _, indices, _ in picked]
        indptr = np.zeros(ids.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        if ids.size == 1 and hits.size:  # one updated user: its own arrays
            return indptr, picked[0][1], picked[0][2] if with_data else None
        mask = np.repeat(from_base, lengths)
        source = (np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1]))[mask]
        indices = np.empty(int(indptr[-1]), dtype=np.int32)
        indices[mask] = base.indices[source]
        data = None
        if with_data:
            data = np.empty(int(indptr[-1]), dtype=base.dtype)
            data[mask] = base.data[source]
        for k, (_, row_indices, row_data) in zip(hits, picked):
            indices[indptr[k]:indptr[k + 1]] = row_indices
            if with_data:
                data[indptr[k]:indptr[k + 1]] = row_data
        return indptr, indices, data

    def seen_pattern(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(indptr, indices)`` of the items users ``ids`` have seen (the top-K kernel's seen filter).

        ``indptr`` holds offsets into ``indices``; it need not start at 0.
        """
        if self.pending is None:
            if ids.size > 1 and int(ids[-1]) - int(ids[0]) == ids.size - 1 and bool(np.all(np.diff(ids) == 1)):
                # a run of users (a whole-catalogue batch): the stored arrays, no gathered copy
                # (the kernel reads indptr's offsets as they are)
                return self._user_items.indptr[int(ids[0]):int(ids[-1]) + 2], self._user_items.indices
            return csr_rows(self._user_items, ids)
        return self._gather_seen(ids, False)[:2]

    def seen_rows(self, ids: np.ndarray) -> sp.csr_matrix:
        """The seen-items rows of users ``ids`` (len(ids) x n_items CSR, sorted int32 indices)."""
        if self.pending is None:
            return self._user_items[ids]
        indptr, indices, data = self._gather_seen(np.asarray(ids), True)
        out = sp.csr_matrix((data, indices, indptr), shape=(indptr.size - 1, self.n_items))
        out.indices, out.indptr = indices, indptr  # keep int32 indices
        out.has_sorted_indices = True
        return out

    def profiled(self, side: str) -> np.ndarray:
        """Whether each user (item) has interactions or side features: something its vector comes from."""
        known = self.interaction_counts(side) > 0
        features = self.side_features(side)
        return known if features is None else known | features.has_features()

    def ranking_index(self) -> RankingIndex:
        """Items sorted by (bias-augmented) norm, for exact early termination in top-K."""
        index = self.cache.get("ranking_index")
        if index is None:
            index = RankingIndex.build(self.item_factors, self.item_bias)
            self.cache["ranking_index"] = index
        return index

    def one_user_scan(self) -> Any:
        """The compiled one-user top-K scan over the ranking index's codes and the base user arrays
        (``fastrec.kernels.topk.one_user_scan``), or None; built on first use and kept while the
        index and the base arrays it binds are this state's."""
        index = self.ranking_index()
        cached = self.cache.get("one_user_scan")
        if (cached is None or cached[0] is not index or cached[1] is not self._user_factors
                or cached[2] is not self._user_items):
            cached = (index, self._user_factors, self._user_items,
                      one_user_scan(index, self._user_factors, self._user_items))
            self.cache["one_user_scan"] = cached
        return cached[3]

    def interaction_counts(self, side: str) -> np.ndarray:
        """How many stored interactions each user (row) or item (column) has."""
        key = f"counts_{side}"
        value = self.cache.get(key)
        if value is None:
            base, pending = self._user_items, self.pending
            if side == "users":
                value = np.zeros(self.n_users, dtype=np.int64)
                value[:base.shape[0]] = np.diff(base.indptr)
            else:
                value = self.cache.get("base_counts_items")
                if value is None:
                    value = _readonly(np.bincount(base.indices, minlength=self.n_items))
                    self.cache["base_counts_items"] = value
            if pending is not None:
                rows, entries = pending.latest()
                lengths = [pending.log.entries[e][1].size for e in entries]
                if side == "users":
                    value[rows] = lengths
                else:
                    old = rows[rows < base.shape[0]]
                    value = (value - np.bincount(csr_rows(base, old)[1], minlength=self.n_items)
                             + np.bincount(np.concatenate([np.zeros(0, np.int32)] + [
                                 pending.log.entries[e][1] for e in entries]), minlength=self.n_items))
            value = _readonly(value)
            self.cache[key] = value
        return value

    def normalized(self, side: str) -> np.ndarray:
        """Row-normalised user or item factors, for cosine similarity."""
        key = f"normalized_{side}"
        value = self.cache.get(key)
        if value is None:
            factors = self.factors(side)
            norms = np.linalg.norm(factors, axis=1, keepdims=True)
            value = _readonly(factors / np.where(norms > 0, norms, 1))
            self.cache[key] = value
        return value

    # ----------------------------------------------------------- partial fits
    def merged(self) -> "FittedState":
        """This state with its pending user updates merged into new base arrays (itself without any)."""
        if self.pending is None:
            return self
        factors, seen = self._merged_users(0), self._merged_users(1)
        kept = {key: self.cache[key] for key in CACHES_OF_SIDE["items"] if key in self.cache}
        return FittedState(factors, self.item_factors, seen, self.item_bias, self.user_map, self.item_map,
                           self.params, self.item_similarity, self.user_features, self.item_features, kept)

    def with_rows(self, side: str, ids: np.ndarray, vectors: np.ndarray | None, rows: sp.csr_matrix,
                  id_map: IdMap | None) -> "FittedState":
        """A new state where the users (or items) ``ids`` have ``vectors`` and interactions ``rows``.

        ``rows`` is one row per id, in users x items orientation for users and
        items x users for items.  Ids past the end grow the model; the rows in
        between start empty with zero vectors.  ``id_map`` is the side's map
        after growth.  Users go into the overlay (O(rows given)); items merge
        it and rebuild the seen matrix (O(nnz)).
        """
        if side == "users":
            rows = rows.astype(self._user_items.dtype, copy=False)
            rows.sort_indices()
            return self.with_user_rows(ids, vectors, rows.indptr, rows.indices.astype(np.int32, copy=False),
                                       rows.data, id_map)
        if ids.size and int(ids.max()) < self.n_items:
            return self._with_item_columns(ids, vectors, rows, id_map)
        return self.merged()._with_item_rows(ids, vectors, rows, id_map)

    def with_user_rows(self, ids: np.ndarray, vectors: np.ndarray | None, indptr: np.ndarray,
                       indices: np.ndarray, data: np.ndarray, id_map: IdMap | None,
                       vectors_changed: bool = True) -> "FittedState":
        """``with_rows`` for users given as canonical CSR arrays (sorted int32 indices, the model's dtype).

        The new state shares every model-wide array with this one: the rows go
        into the overlay (copied: the caller keeps its arrays).
        ``vectors_changed=False`` says ``vectors`` are the users' current ones
        (only their seen items change), so the users' caches stay.
        """
        pending = self.pending or UserOverlay(RowLog(), 0, self.n_users, False)
        rows = ids.tolist()
        # a state that is not the log's tip (say, a copied model updated twice) starts its own log
        log = pending.log.extend(pending.length, [
            (row, None if vectors is None else vectors[k].copy(), indices[indptr[k]:indptr[k + 1]].copy(),
             data[indptr[k]:indptr[k + 1]].copy()) for k, row in enumerate(rows)])
        n_rows = max(pending.n_rows, max(rows) + 1) if rows else pending.n_rows
        features = self.user_features
        if features is not None and n_rows > self.n_users:
            from .side import grow_rows
            features = grow_rows(features, n_rows)
        return self._with_log(pending, log, pending.length + len(rows), n_rows, vectors_changed, user_map=id_map,
                              user_features=features)

    def with_one_user_row(self, user: int, vector: np.ndarray, indices: np.ndarray,
                          data: np.ndarray) -> "FittedState":
        """``with_user_rows`` for one stored user: the latency path of a one-user partial fit.

        ``vector`` (f,) is the caller's to give away (not copied); ``indices``
        and ``data`` are the row's canonical arrays, copied.
        """
        pending = self.pending or UserOverlay(RowLog(), 0, self.n_users, False)
        length = pending.length
        log = pending.log.append_at(length, user, vector, indices.copy(), data.copy())
        return self._with_log(pending, log, length + 1, pending.n_rows, True)

    def _with_log(self, pending: UserOverlay, log: RowLog, length: int, n_rows: int, vectors_changed: bool,
                  **changes: Any) -> "FittedState":
        """The state seeing the first ``length`` entries of ``log`` (this one's overlay ``pending``
        extended), merged when it is long."""
        keys = _KEPT_BY_USER_UPDATES if vectors_changed else _KEPT_BY_SEEN_UPDATES
        # a snapshot (readers fill the cache meanwhile), usually holding only kept caches: one copy
        kept = self.cache.copy()
        if not kept.keys() <= keys:
            kept = {key: value for key, value in kept.items() if key in keys}
        new = object.__new__(type(self))  # self._derive(...) inlined: one-user updates take this path
        attributes = new.__dict__
        attributes.update(self.__dict__)
        attributes.update(changes)
        attributes["pending"] = UserOverlay(log, length, n_rows, pending.vectors_changed or vectors_changed)
        attributes["cache"] = kept
        return new.merged() if length >= merge_threshold(n_rows) else new

    def _users_of_items(self, items: np.ndarray) -> np.ndarray:
        """Users whose stored row may hold one of ``items`` (a superset: base columns and pending rows)."""
        columns = self.cache.get("base_item_users")
        if columns is None:  # the base's CSC pattern, built once per base (user updates keep it)
            base = self._user_items
            columns = sp.csr_matrix((np.ones(base.nnz, dtype=np.int8), base.indices, base.indptr),
                                    shape=base.shape).tocsc()
            self.cache["base_item_users"] = columns
        users = [columns.indices[columns.indptr[i]:columns.indptr[i + 1]] for i in items.tolist()]
        if self.pending is not None:  # pending rows holding one of the items
            users.append(self.pending.log.rows_holding(items, self.pending.length).astype(np.int32))
        return np.unique(np.concatenate([np.zeros(0, np.int32)] + users)).astype(np.int32)

    def _with_item_columns(self, ids: np.ndarray, vectors: np.ndarray | None, rows: sp.csr_matrix,
                           id_map: IdMap | None) -> "FittedState":
        """Stored items ``ids`` get ``vectors`` and the users x 1 columns ``rows`` (items x users CSR).

        The item vectors are copied (O(m f)); the seen matrix is not: every user
        whose row gains or loses one of the items gets its new row in the user
        overlay, with its vector unchanged (O(entries of those users)).
        """
        factors = self.item_factors
        if factors is not None:
            factors = factors.copy()
            factors[ids] = vectors
        candidates = np.union1d(self._users_of_items(ids), rows.indices).astype(np.int32)
        current = self.seen_rows(candidates)
        changed = _rows_changed_at(current, rows, candidates, ids)
        affected = candidates[changed]  # only the users whose entries at ids change get a new row
        current = current[changed]
        positions = np.repeat(np.arange(affected.size), np.diff(current.indptr))
        keep = ~np.isin(current.indices, ids)
        in_affected = np.isin(rows.indices, affected)
        item_of_entry = np.repeat(ids, np.diff(rows.indptr))
        patched = sp.csr_matrix(
            (np.concatenate([current.data[keep], rows.data[in_affected].astype(current.dtype, copy=False)]),
             (np.concatenate([positions[keep], np.searchsorted(affected, rows.indices[in_affected])]),
              np.concatenate([current.indices[keep], item_of_entry[in_affected]]))),
            shape=(affected.size, self.n_items))
        patched.sum_duplicates()  # canonical: sorted, and no entry appears twice
        kept = {key: self.cache[key] for key in CACHES_OF_SIDE["users"] + ("base_item_users", "merged_user_factors")
                if key in self.cache}
        index = self.cache.get("ranking_index")
        if index is not None and factors is not None:  # patched, not rebuilt: no sort, SVD or repack
            index = index.with_items(ids, factors[ids])
            # patched rows keep their places: past n/16 of them the norm order (what makes the
            # pruning bounds tight) is rebuilt on the next query
            if index.patched_rows <= max(64, self.n_items // 16):
                kept["ranking_index"] = index
        state = self._derive(item_factors=_readonly(factors), item_map=id_map, cache=kept)
        if affected.size == 0:  # the columns hold what the users' rows held: no row changes
            return state
        return state.with_user_rows(affected, state.factor_rows("users", affected), patched.indptr,
                                    patched.indices.astype(np.int32, copy=False), patched.data,
                                    self.user_map, vectors_changed=False)

    def _with_item_rows(self, ids: np.ndarray, vectors: np.ndarray | None, rows: sp.csr_matrix,
                        id_map: IdMap | None) -> "FittedState":
        from .side import grow_rows
        own_count = self.n_items
        new_count = max(own_count, int(ids.max()) + 1 if ids.size else 0)
        features = grow_rows(self.item_features, new_count)
        factors = self.item_factors
        if factors is not None:
            old = factors
            factors = np.empty((new_count, old.shape[1]), dtype=old.dtype)
            factors[:own_count] = old
            factors[own_count:] = 0
            factors[ids] = vectors
        kept = {key: self.cache[key] for key in CACHES_OF_SIDE["users"] if key in self.cache}
        seen = replace_rows(self.user_items.T.tocsr(), ids, rows, new_count).T.tocsr()
        seen.sort_indices()
        seen.indices = seen.indices.astype(np.int32, copy=False)
        bias = None
        if self.item_bias is not None:
            bias = np.zeros(new_count, dtype=self.item_bias.dtype)
            bias[:self.item_bias.size] = self.item_bias
        return replace(self, item_factors=factors, user_items=seen, item_bias=bias, item_map=id_map,
                       item_features=features, cache=kept)


def _user_side_property(name: str) -> property:
    """``user_factors``/``user_items``: the base array, or the merged one when updates are pending."""
    slot = f"_{name}"
    position = 0 if name == "user_factors" else 1

    def get(self: FittedState) -> Any:
        if self.pending is None:
            return self.__dict__[slot]
        return self._merged_users(position)

    def set_(self: FittedState, value: Any) -> None:  # the dataclass __init__ only (the class is frozen)
        self.__dict__[slot] = value

    return property(get, set_, doc=f"The {name.replace('_', ' ')}, pending user updates merged in.")


FittedState.user_factors = _user_side_property("user_factors")
FittedState.user_items = _user_side_property("user_items")


def id_maps_of(X: Any) -> tuple[IdMap | None, IdMap | None]:
    """The (user_map, item_map) of a ``fastrec.Interactions``-like input, else (None, None)."""
    user_map = getattr(X, "user_map", None)
    item_map = getattr(X, "item_map", None)
    if isinstance(user_map, IdMap) and isinstance(item_map, IdMap):
        return user_map, item_map
    return None, None


def replace_rows(matrix: sp.csr_matrix, ids: np.ndarray, rows: sp.csr_matrix, n_rows: int) -> sp.csr_matrix:
    """``matrix`` grown to ``n_rows`` (new rows empty), with rows ``ids`` replaced by ``rows``.

    One pass of slice copies over the stored entries (no scipy stacking or
    fancy indexing, which cost several times more on a big matrix).
    """
    old_count = matrix.shape[0]
    lengths = np.zeros(n_rows, dtype=np.int64)
    lengths[:old_count] = np.diff(matrix.indptr)
    lengths[ids] = np.diff(rows.indptr)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    indices = np.empty(int(indptr[-1]), dtype=np.int32)
    data = np.empty(int(indptr[-1]), dtype=matrix.dtype)
    # copy the untouched stretches between replaced rows in one slice each
    order = np.sort(ids[ids < old_count])
    src_start = 0
    row_start = 0
    for row in np.append(order, old_count):
        src_end = int(matrix.indptr[row]) if row < old_count else int(matrix.indptr[old_count])
        dst = int(indptr[row_start])
        indices[dst:dst + src_end - src_start] = matrix.indices[src_start:src_end]
        data[dst:dst + src_end - src_start] = matrix.data[src_start:src_end]
        if row < old_count:
            src_start = int(matrix.indptr[row + 1])
            row_start = row + 1
    rows = rows.astype(matrix.dtype)
    rows.sort_indices()
    for k, row in enumerate(ids):
        lo, hi = rows.indptr[k], rows.indptr[k + 1]
        indices[indptr[row]:indptr[row + 1]] = rows.indices[lo:hi]
        data[indptr[row]:indptr[row + 1]] = rows.data[lo:hi]
    out = sp.csr_matrix((data, indices, indptr), shape=(n_rows, matrix.shape[1]))
    out.indices, out.indptr = indices, indptr  # keep int32 indices (scipy may widen them)
    out.has_sorted_indices = True
    return out


def non_finite(*arrays: np.ndarray | None) -> bool:
    """Whether any of the arrays holds NaN or an infinity (one pass each, no big temporaries)."""
    for arr in arrays:
        # a sum is NaN exactly when some entry is NaN or infinite (or the sum overflows,
        # which only happens for values no model should have)
        if arr is not None and arr.size and not np.isfinite(np.sum(arr, dtype=np.float64)):
            return True
    return False
