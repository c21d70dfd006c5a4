"""User-item interactions: raw ids <-> indices, duplicate handling, weighting.

``Interactions`` is the boundary between raw data (DataFrames, CSV files,
arrays of ids that may be strings) and the models, which see a users x items
CSR matrix of float32 weights.  Instances are immutable: every method that
changes something returns a new ``Interactions`` and the arrays are read-only.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import scipy.sparse as sp

from . import weighting as _weighting
from .dedupe import DUPLICATE_POLICIES, combine_duplicates
from .idmap import IdMap
from .tables import read_columns, read_parquet_columns, write_parquet
from ..utils.validation import (check_choice, check_columns, check_dtype, check_float, check_ids,
                          check_path, check_raw_ids, check_selector, check_timestamps,
                          check_values)

__all__ = ["Interactions"]

_KINDS = ("user", "item")


def _frozen(arr: np.ndarray | None) -> np.ndarray | None:
    if arr is not None:
        arr.flags.writeable = False
    return arr


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _float32_weights(weights: np.ndarray, name: str, merged: bool = False) -> np.ndarray:
    """``weights`` (float64) after checking they fit the float32 weights are stored as."""
    too_big = np.flatnonzero(np.abs(weights) > _FLOAT32_MAX)
    if too_big.size:
        first = int(too_big[0])
        what = ("the summed weight of a repeated (user, item) pair" if merged
                else f"{name}[{first}] = {weights[first]:g}")
        raise ValueError(f"{what} is too large for float32 weights (largest {_FLOAT32_MAX:.4g}; "
                         f"{too_big.size} such value(s)); scale the weights down")
    return weights


def _series_values(series: Any, column: str, role: str) -> np.ndarray:
    """A pandas column as a NumPy array; datetimes (even tz-aware) as datetime64[ns] UTC."""
    if bool(series.isna().any()):
        raise ValueError(f"column {column!r} ({role}) has {int(series.isna().sum())} missing values")
    dtype = series.dtype
    if getattr(dtype, "tz", None) is not None:
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    if getattr(dtype, "kind", None) == "M" or getattr(dtype, "tz", None) is not None:
        return series.to_numpy(dtype="datetime64[ns]")
    return series.to_numpy()


class Interactions:
    """Interactions between users and items, with the maps of their raw ids.

    Build one with ``from_dataframe``, ``from_csv``, ``from_arrays`` (raw ids)
    or the constructor (indices).  Entries are kept sorted by (user, item),
    one per pair; see ``from_arrays`` for how repeated pairs are merged.

    Parameters
    ----------
    users, items : array-like of int
        Row and column index of each entry, in ``[0, n_users)`` and ``[0, n_items)``.
    weights : array-like of float, optional
        Defaults to 1 per entry.
    timestamps : array-like of float or datetime64, optional
    user_map, item_map : IdMap, optional
        Raw ids of the indices; default to the identity (id == index) sized
        ``shape`` or the largest index + 1.
    shape : (n_users, n_items), optional
    duplicates : {"sum", "max", "last"}
        How repeated pairs are merged (see ``from_arrays``).
    item_metadata : mapping of str to array, optional
        Per-item columns aligned with item indices (e.g. ``"title"``).

    Attributes
    ----------
    users, items : int32 arrays (read-only), sorted by (user, item)
    weights : float32 array (read-only)
    timestamps : float64 array (read-only) or None
    user_map, item_map : IdMap
    item_metadata : dict of str to array, aligned with item indices
    n_unknown_dropped : int
        Interactions dropped because of ids unknown to given maps (``unknown="drop"``).
    """

    def __init__(self, users: Any, items: Any, weights: Any = None, timestamps: Any = None, *,
                 user_map: IdMap | None = None, item_map: IdMap | None = None,
                 shape: tuple[int, int] | None = None, duplicates: str = "sum",
                 item_metadata: Mapping[str, Any] | None = None):
        check_choice(duplicates, "duplicates", DUPLICATE_POLICIES)
        users_arr, items_arr = np.asarray(users), np.asarray(items)
        if users_arr.ndim != 1 or items_arr.ndim != 1 or users_arr.size != items_arr.size:
            raise ValueError(f"users and items must be 1-D of the same length, got shapes "
                             f"{users_arr.shape} and {items_arr.shape}")
        n = users_arr.size
        user_map = self._default_map(user_map, users_arr, None if shape is None else shape[0], "user")
        item_map = self._default_map(item_map, items_arr, None if shape is None else shape[1], "item")
        if shape is not None and tuple(shape) != (len(user_map), len(item_map)):
            raise ValueError(f"shape {tuple(shape)} does not match the id maps "
                             f"({len(user_map)} users, {len(item_map)} items)")
        u, _ = check_ids(users_arr, len(user_map), "users", allow_scalar=False)
        i, _ = check_ids(items_arr, len(item_map), "items", allow_scalar=False)
        w = np.ones(n) if weights is None else _float32_weights(check_values(weights, "weights", n), "weights")
        t = None if timestamps is None else check_timestamps(timestamps, "timestamps", n)
        u, i, w, t = combine_duplicates(u, i, w, t, len(item_map), duplicates)
        _float32_weights(w, "weights", merged=True)
        self._set(u, i, w, t, user_map, item_map, self._aligned_metadata(item_metadata, len(item_map)), 0)

    # ------------------------------------------------------------ internals
    @staticmethod
    def _default_map(id_map: IdMap | None, index: np.ndarray, size: int | None, kind: str) -> IdMap:
        if id_map is not None:
            if not isinstance(id_map, IdMap):
                raise TypeError(f"{kind}_map must be a fastrec IdMap, got {type(id_map).__name__}")
            return id_map
        if size is None:
            size = int(index.max()) + 1 if index.size and np.issubdtype(index.dtype, np.number) else 0
        return IdMap(np.arange(max(size, 0)))

    @staticmethod
    def _aligned_metadata(metadata: Mapping[str, Any] | None, n_items: int) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name, values in (metadata or {}).items():
            arr = np.array(values)  # a copy: the caller keeps theirs
            if arr.dtype == object:
                arr = arr.astype(str)  # no object arrays: they would need pickle to save
            if arr.ndim != 1 or arr.size != n_items:
                raise ValueError(f"item_metadata[{name!r}] must have one entry per item "
                                 f"({n_items}), got shape {arr.shape}")
            out[str(name)] = _frozen(arr)
        return out

    def _set(self, users: np.ndarray, items: np.ndarray, weights: np.ndarray,
             timestamps: np.ndarray | None, user_map: IdMap, item_map: IdMap,
             item_metadata: dict[str, np.ndarray], n_unknown_dropped: int) -> None:
        self.users = _frozen(np.asarray(users, dtype=np.int32))
        self.items = _frozen(np.asarray(items, dtype=np.int32))
        self.weights = _frozen(np.asarray(weights, dtype=np.float32))
        self.timestamps = _frozen(None if timestamps is None else np.asarray(timestamps, dtype=np.float64))
        self.user_map = user_map
        self.item_map = item_map
        self.item_metadata = item_metadata
        self.n_unknown_dropped = int(n_unknown_dropped)

    def _derive(self, keep: np.ndarray | None = None, weights: np.ndarray | None = None,
                item_metadata: dict[str, np.ndarray] | None = None) -> "Interactions":
        """A new instance with the same maps: entries ``keep`` (a mask), new weights or metadata."""
        new = object.__new__(type(self))
        w = self.weights if weights is None else weights
        u, i, t = self.users, self.items, self.timestamps
        if keep is not None:
            u, i, w = u[keep], i[keep], w[keep]
            t = None if t is None else t[keep]
        new._set(u, i, w, t, self.user_map, self.item_map,
                 dict(self.item_metadata if item_metadata is None else item_metadata),
                 self.n_unknown_dropped)
        return new

    # --------------------------------------------------------- constructors
    @classmethod
    def from_arrays(cls, users: Any, items: Any, weights: Any = None, timestamps: Any = None,
                    duplicates: str = "sum", user_map: IdMap | None = None,
                    item_map: IdMap | None = None, unknown: str = "raise") -> "Interactions":
        """Interactions from raw ids (ints or strings), one entry per event.

        Parameters
        ----------
        users, items : array-like
            Raw user and item id of each event (same length, no missing ids).
        weights : array-like, optional
            A finite number per event (rating, play count...); 1 when omitted.
        timestamps : array-like, optional
            Numbers or datetime64 (converted to seconds since the epoch).
        duplicates : {"sum", "max", "last"}
            How events on the same (user, item) pair are merged: ``"sum"``
            adds their weights (so unweighted events become counts), ``"max"``
            keeps the largest, ``"last"`` keeps the latest by timestamp (ties
            and data without timestamps: by input order).  A merged entry's
            timestamp is the latest of its events (``"sum"``, ``"max"``) or
            that of the kept event (``"last"``).
        user_map, item_map : IdMap, optional
            Existing maps, e.g. from the training set, so a test set gets the
            same indices.  Ids missing from a map are reported by ``unknown``.
        unknown : {"raise", "drop"}
            ``"raise"`` (default) raises ``KeyError`` listing the unknown ids;
            ``"drop"`` drops their events and records the count in
            ``n_unknown_dropped``.

        Returns
        -------
        Interactions
        """
        check_choice(duplicates, "duplicates", DUPLICATE_POLICIES)
        check_choice(unknown, "unknown", ("raise", "drop"))
        raw_users = check_raw_ids(users, "users")
        n = raw_users.size
        raw_items = check_raw_ids(items, "items", n)
        if n == 0:
            raise ValueError("users and items are empty: there are no interactions")
        w = np.ones(n) if weights is None else _float32_weights(check_values(weights, "weights", n), "weights")
        t = None if timestamps is None else check_timestamps(timestamps, "timestamps", n)

        u = cls._map_given(user_map, raw_users, "user")
        i = cls._map_given(item_map, raw_items, "item")
        known = np.ones(n, dtype=bool)
        if u is not None:
            known &= u >= 0
        if i is not None:
            known &= i >= 0
        n_dropped = int(n - np.count_nonzero(known))
        if n_dropped:
            if unknown == "raise":
                raise KeyError(cls._unknown_message(raw_users, u, raw_items, i))
            raw_users, raw_items, w = raw_users[known], raw_items[known], w[known]
            t = None if t is None else t[known]
            u = None if u is None else u[known]
            i = None if i is None else i[known]
        if user_map is None:
            user_map, u = IdMap.from_raw(raw_users)
        if item_map is None:
            item_map, i = IdMap.from_raw(raw_items)
        u, i, w, t = combine_duplicates(u, i, w, t, len(item_map), duplicates)
        _float32_weights(w, "weights", merged=True)
        new = object.__new__(cls)
        new._set(u, i, w, t, user_map, item_map, {}, n_dropped)
        return new

    @staticmethod
    def _map_given(id_map: IdMap | None, raw: np.ndarray, kind: str) -> np.ndarray | None:
        if id_map is None:
            return None
        if not isinstance(id_map, IdMap):
            raise TypeError(f"{kind}_map must be a fastrec IdMap, got {type(id_map).__name__}")
        return id_map.to_index(raw, unknown="mask")

    @staticmethod
    def _unknown_message(raw_users: np.ndarray, u: np.ndarray | None,
                         raw_items: np.ndarray, i: np.ndarray | None) -> str:
        parts = []
        for kind, raw, idx in (("user", raw_users, u), ("item", raw_items, i)):
            if idx is None or (idx >= 0).all():
                continue
            missing = np.unique(raw[idx < 0])
            shown = ", ".join(map(repr, missing[:10].tolist()))
            more = f" and {missing.size - 10} more" if missing.size > 10 else ""
            parts.append(f"{missing.size} {kind} id(s) not in {kind}_map: {shown}{more}")
        return "; ".join(parts) + ". Pass unknown='drop' to drop their interactions."

    @classmethod
    def from_dataframe(cls, df: Any, user_col: str = "user_id", item_col: str = "item_id",
                       weight_col: str | None = None, timestamp_col: str | None = None,
                       duplicates: str = "sum", user_map: IdMap | None = None,
                       item_map: IdMap | None = None, unknown: str = "raise") -> "Interactions":
        """Interactions from a pandas DataFrame with one row per event.

        Column arguments name the DataFrame's columns; ``weight_col`` and
        ``timestamp_col`` are optional (datetime columns become seconds since
        the epoch, UTC).  Missing values are errors.  The DataFrame is not
        modified.  Other arguments as in ``from_arrays``.
        """
        if not hasattr(df, "columns") or not hasattr(df, "__getitem__"):
            raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
        roles = {"user_col": user_col, "item_col": item_col,
                 "weight_col": weight_col, "timestamp_col": timestamp_col}
        check_columns(df.columns, roles, "the DataFrame")
        values = {role: None if col is None else _series_values(df[col], col, role)
                  for role, col in roles.items()}
        return cls.from_arrays(values["user_col"], values["item_col"], values["weight_col"],
                               values["timestamp_col"], duplicates=duplicates, user_map=user_map,
                               item_map=item_map, unknown=unknown)

    @classmethod
    def from_csv(cls, path: Any, user_col: Any = "user_id", item_col: Any = "item_id",
                 weight_col: Any = None, timestamp_col: Any = None, sep: str = ",",
                 header: bool = True, encoding: str | None = None, duplicates: str = "sum",
                 user_map: IdMap | None = None, item_map: IdMap | None = None,
                 unknown: str = "raise") -> "Interactions":
        """Interactions from a delimited text file (``.gz`` is decompressed).

        Works without pandas (slower, same result).  With ``header=False``
        the column arguments are 0-based field positions.  Ids that are all
        integers within int64 are read as integers; integers beyond int64
        make the column their exact decimal strings; other ids are read as
        strings.  Weights and timestamps must be numbers: text such as
        ``nan``, infinities and weights too large for float32 are errors
        naming the column and row.  ``encoding=None`` (the default) reads
        UTF-8 and falls back to Latin-1; a byte-order mark is skipped.
        Other arguments as in ``from_arrays``.
        """
        path = check_path(path)
        roles = {user_col: "user_col", item_col: "item_col"}
        kinds = {user_col: "id", item_col: "id"}
        for col, role, kind in ((weight_col, "weight_col", "float32"), (timestamp_col, "timestamp_col", "float")):
            if col is not None:
                roles[col], kinds[col] = role, kind
        if len(kinds) != 2 + (weight_col is not None) + (timestamp_col is not None):
            raise ValueError("user_col, item_col, weight_col and timestamp_col must be different columns")
        table = read_columns(path, kinds, sep=sep, header=header, encoding=encoding, roles=roles)
        return cls.from_arrays(table[user_col], table[item_col],
                               None if weight_col is None else table[weight_col],
                               None if timestamp_col is None else table[timestamp_col],
                               duplicates=duplicates, user_map=user_map, item_map=item_map,
                               unknown=unknown)

    @classmethod
    def from_parquet(cls, path: Any, user_col: str = "user_id", item_col: str = "item_id",
                     weight_col: str | None = None, timestamp_col: str | None = None,
                     duplicates: str = "sum", user_map: IdMap | None = None,
                     item_map: IdMap | None = None, unknown: str = "raise") -> "Interactions":
        """Interactions from a Parquet file with one row per event.

        Needs pandas and pyarrow (``pip install 'fastrec[io]'``; an
        ``ImportError`` says so when they are missing).  Only the named
        columns are read.  Datetime timestamps become seconds since the
        epoch (UTC); integer ids beyond int64 (uint64) become their exact
        decimal strings.  Other arguments as in ``from_dataframe``.

        Raises
        ------
        KeyError
            A named column is not in the file (the message lists its columns).
        ValueError
            The file is not a readable Parquet file.
        """
        frame = read_parquet_columns(check_path(path), {"user_col": user_col, "item_col": item_col,
                                                        "weight_col": weight_col, "timestamp_col": timestamp_col})
        return cls.from_dataframe(frame, user_col=user_col, item_col=item_col, weight_col=weight_col,
                                  timestamp_col=timestamp_col, duplicates=duplicates,
                                  user_map=user_map, item_map=item_map, unknown=unknown)

    def to_parquet(self, path: Any) -> None:
        """Write the entries to a Parquet file that ``from_parquet`` reads back.

        Columns: ``user_id`` and ``item_id`` (raw ids, int64 or text),
        ``weight`` (float32) and, when there are timestamps, ``timestamp``
        (float64 seconds).  One row per (user, item) entry in (user, item)
        order, so ``Interactions.from_parquet(path, weight_col="weight",
        timestamp_col=...)`` gives the same entries and ids (the id maps hold
        only ids that have entries, and ``item_metadata`` is not written).
        Needs pandas and pyarrow (``pip install 'fastrec[io]'``).
        """
        columns = {"user_id": self.user_map.to_ids(self.users), "item_id": self.item_map.to_ids(self.items),
                   "weight": self.weights}
        if self.timestamps is not None:
            columns["timestamp"] = self.timestamps
        write_parquet(check_path(path), columns)

    @classmethod
    def from_csr(cls, X: Any, user_map: IdMap | None = None,
                 item_map: IdMap | None = None) -> "Interactions":
        """Interactions from a users x items sparse matrix (stored values become weights)."""
        if not sp.issparse(X):
            raise TypeError(f"X must be a scipy.sparse matrix, got {type(X).__name__}")
        coo = sp.coo_matrix(X)
        return cls(coo.row, coo.col, coo.data, user_map=user_map, item_map=item_map, shape=coo.shape)

    def with_item_metadata(self, item_ids: Any, fill: Any = None, **columns: Any) -> "Interactions":
        """A copy with per-item columns given for raw ``item_ids``.

        Ids unknown to ``item_map`` are ignored; items without an entry get
        ``fill`` (default: ``""`` for text columns, NaN for numbers).
        """
        ids = check_raw_ids(item_ids, "item_ids")
        idx = self.item_map.to_index(ids, unknown="mask")
        known = idx >= 0
        metadata = dict(self.item_metadata)
        for name, values in columns.items():
            arr = np.asarray(values)
            if arr.shape != ids.shape:
                raise ValueError(f"{name} has shape {arr.shape}; it must match item_ids {ids.shape}")
            if arr.dtype == object:
                arr = arr.astype(str)
            default = fill if fill is not None else ("" if arr.dtype.kind in "US" else np.nan)
            out = np.full(self.shape[1], default, dtype=np.result_type(arr.dtype, np.asarray(default).dtype))
            out[idx[known]] = arr[known]
            metadata[name] = _frozen(out)
        return self._derive(item_metadata=metadata)

    # ------------------------------------------------------------ accessors
    def copy(self) -> "Interactions":
        """A new instance sharing the (read-only) arrays, with its own metadata dict."""
        return self._derive()

    @property
    def shape(self) -> tuple[int, int]:
        """(n_users, n_items): the sizes of the id maps."""
        return len(self.user_map), len(self.item_map)

    @property
    def nnz(self) -> int:
        """Number of (user, item) entries."""
        return int(self.users.size)

    def __len__(self) -> int:
        return self.nnz

    def __repr__(self) -> str:
        n_users, n_items = self.shape
        extras = ", timestamps" if self.timestamps is not None else ""
        if self.item_metadata:
            extras += f", item_metadata={sorted(self.item_metadata)}"
        if self.n_unknown_dropped:
            extras += f", n_unknown_dropped={self.n_unknown_dropped}"
        return f"Interactions(n_users={n_users}, n_items={n_items}, nnz={self.nnz}{extras})"

    def to_csr(self, dtype: Any = np.float32) -> sp.csr_matrix:
        """A new users x items CSR matrix of the weights, with sorted indices."""
        dtype = check_dtype(dtype)
        n_users, n_items = self.shape
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.users, minlength=n_users), out=indptr[1:])
        index_dtype = np.int32 if self.nnz < np.iinfo(np.int32).max else np.int64
        X = sp.csr_matrix((self.weights.astype(dtype), self.items.astype(index_dtype),
                           indptr.astype(index_dtype)), shape=(n_users, n_items))
        X.has_sorted_indices = True
        return X

    def subset(self, selector: Any) -> "Interactions":
        """The entries chosen by a boolean mask or integer positions, with the SAME id maps.

        Positions may come in any order and repeat; the result keeps the
        (user, item) order.
        """
        return self._derive(keep=check_selector(selector, self.nnz, "selector"))

    def _map(self, kind: str) -> IdMap:
        check_choice(kind, "kind", _KINDS)
        return self.user_map if kind == "user" else self.item_map

    def to_index(self, raw: Any, kind: str = "user") -> np.ndarray | int:
        """Indices of raw user (``kind="user"``) or item ids; unknown ids raise ``KeyError``."""
        return self._map(kind).to_index(raw)

    def to_ids(self, index: Any, kind: str = "user") -> np.ndarray:
        """Raw user (``kind="user"``) or item ids of indices."""
        return self._map(kind).to_ids(index)

    # ------------------------------------------------------------ weighting
    def _reweighted(self, values: np.ndarray, drop_zeros: bool = False) -> "Interactions":
        keep = values != 0 if drop_zeros else None
        return self._derive(keep=keep, weights=values.astype(np.float32))

    def binarize(self, threshold: float, negative_threshold: float | None = None,
                 drop_zeros: bool = True) -> "Interactions":
        """Weights to 1 where ``weight >= threshold``, -1 ("thumbs down") where
        ``weight <= negative_threshold`` (when given), 0 elsewhere.

        Entries that become 0 are dropped unless ``drop_zeros=False``.
        Example: ``ratings.binarize(4, negative_threshold=2)``.
        """
        threshold = check_float(threshold, "threshold")
        if negative_threshold is not None:
            negative_threshold = check_float(negative_threshold, "negative_threshold")
            if negative_threshold >= threshold:
                raise ValueError(f"negative_threshold ({negative_threshold}) must be below "
                                 f"threshold ({threshold})")
        values = _weighting.binarize_values(self.weights, threshold, negative_threshold)
        return self._reweighted(values, drop_zeros=drop_zeros)

    def log1p(self) -> "Interactions":
        """Weights to ``sign(w) * log(1 + |w|)``, damping large counts such as plays."""
        return self._reweighted(_weighting.log1p_values(self.weights))

    def bm25(self, K1: float = 1.2, B: float = 0.75) -> "Interactions":
        """BM25 weighting, users as documents and items as terms (see ``fastrec.data.weighting``)."""
        K1 = check_float(K1, "K1", minimum=0)
        B = check_float(B, "B", minimum=0, maximum=1)
        return self._reweighted(_weighting.bm25_values(self.users, self.items, self.weights,
                                                       self.shape, K1=K1, B=B))

    def tfidf(self) -> "Interactions":
        """TF-IDF weighting, users as documents and items as terms (see ``fastrec.data.weighting``)."""
        return self._reweighted(_weighting.tfidf_values(self.users, self.items, self.weights, self.shape))

    def recency(self, half_life: float, reference_time: float | None = None) -> "Interactions":
        """Weights times ``0.5 ** ((t_ref - t) / half_life)``.

        ``half_life`` is in timestamp units (seconds for datetimes);
        ``reference_time`` defaults to the latest timestamp.
        """
        if self.timestamps is None:
            raise ValueError("recency needs timestamps: build the Interactions with timestamps")
        half_life = check_float(half_life, "half_life", minimum=0, strict_minimum=True)
        if reference_time is not None:
            reference_time = check_float(reference_time, "reference_time")
        return self._reweighted(_weighting.recency_values(self.weights, self.timestamps,
                                                          half_life, reference_time))
