"""Side features of users or items: a sparse rows x features matrix with feature names.

``Features`` turns raw tables (a DataFrame, a dict of columns, records or a
CSV file) into the matrices hybrid models train on (LightFM's model: a row is
the sum of its features' embeddings).  Columns become features by kind:

* ``categorical``: one feature per value, named ``"column=value"``;
* ``multi``: several values in one field (``"Action|Comedy"``), one feature each;
* ``numeric``: bucketed (given bucket edges, or a number of quantile buckets),
  one feature per bucket, named ``"year=[1990, 2000)"``; missing values give none;
* ``identity``: one feature per row, ``"id=<raw id>"``, added when the features
  are aligned to a dataset's id map (see ``aligned``).

Rows are normalised to sum to 1 by default, as LightFM's ``Dataset`` does, so
a row with many features does not get a longer vector than one with few.

Alignment is explicit: ``aligned(id_map)`` puts the rows in the order of a
dataset's users or items.  Ids of the map without a feature row get an empty
row (only their identity feature, if any); ids with features but absent from
the map are refused, dropped or appended as brand-new rows (items nobody has
interacted with yet) according to ``unknown``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from .idmap import IdMap
from ..utils.validation import check_bool, check_choice, check_int, check_raw_ids

__all__ = ["Features", "check_feature_matrix"]

_UNKNOWN = ("error", "drop", "append")
_IDENTITY_PREFIX = "id="


def check_feature_matrix(F: Any, name: str, n_rows: int | None = None, n_features: int | None = None,
                         dtype: Any = np.float32) -> sp.csr_matrix:
    """A feature matrix as a canonical CSR of ``dtype``; errors name ``name``.

    Values must be finite and non-negative (they weigh embeddings in a sum).
    """
    if isinstance(F, Features):
        F = F.matrix
    try:
        matrix = sp.csr_matrix(F if sp.issparse(F) else np.asarray(F, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a 2-D numeric matrix or fastrec.Features, got "
                        f"{type(F).__name__}") from exc
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.number) or np.issubdtype(matrix.dtype,
                                                                                       np.complexfloating):
        raise TypeError(f"{name} must be a 2-D matrix of real numbers, got dtype {matrix.dtype}")
    matrix = matrix.astype(dtype, copy=True)
    if n_rows is not None and matrix.shape[0] != n_rows:
        raise ValueError(f"{name} has {matrix.shape[0]} rows but there are {n_rows}; pass one row per "
                         "user (user_features) or item (item_features), in index order")
    if n_features is not None and matrix.shape[1] != n_features:
        raise ValueError(f"{name} has {matrix.shape[1]} columns but the model has {n_features} features")
    if not np.isfinite(matrix.data).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if (matrix.data < 0).any():
        first = int(np.flatnonzero(matrix.data < 0)[0])
        row = int(np.searchsorted(matrix.indptr, first, side="right") - 1)
        raise ValueError(f"{name} holds {int((matrix.data < 0).sum())} negative value(s) (first in row {row}, "
                         f"column {int(matrix.indices[first])}); feature values are non-negative weights")
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    return matrix


def _normalized(matrix: sp.csr_matrix) -> sp.csr_matrix:
    sums = np.asarray(matrix.sum(axis=1)).ravel()
    scale = np.where(sums > 0, 1.0 / np.where(sums > 0, sums, 1), 0.0).astype(matrix.dtype)
    out = sp.csr_matrix(sp.diags(scale) @ matrix, dtype=matrix.dtype)
    return out


def _columns_of(table: Any) -> dict[str, np.ndarray]:
    """A DataFrame (pandas or polars), dict of columns or list of records as a dict of 1-D arrays."""
    if isinstance(table, Mapping):
        columns = {str(k): np.asarray(v) for k, v in table.items()}
    elif isinstance(table, Sequence) and not isinstance(table, (str, bytes)):
        keys: list[str] = []
        for record in table:
            if not isinstance(record, Mapping):
                raise TypeError("records must be mappings of column name to value")
            keys += [str(k) for k in record if str(k) not in keys]
        columns = {k: np.array([record.get(k) for record in table], dtype=object) for k in keys}
    elif hasattr(table, "columns") and hasattr(table, "__getitem__"):
        columns = {str(c): np.asarray(table[c].to_numpy()) for c in table.columns}
    else:
        raise TypeError(f"expected a DataFrame, a dict of columns or a list of records, got {type(table).__name__}")
    lengths = {v.shape[0] if v.ndim else 1 for v in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"the columns have different lengths: {sorted(lengths)}")
    return columns


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def _bucket_name(column: str, edges: Sequence[float], bucket: int) -> str:
    fmt = lambda v: f"{v:g}"  # noqa: E731
    if bucket == 0:
        return f"{column}<{fmt(edges[0])}"
    if bucket == len(edges):
        return f"{column}>={fmt(edges[-1])}"
    return f"{column}=[{fmt(edges[bucket - 1])}, {fmt(edges[bucket])})"


class Features:
    """A rows x features sparse matrix of side information, with feature names.

    Build one with ``from_frame``, ``from_csv`` or ``from_matrix``; new rows in
    the same feature space come from ``transform``.

    Parameters
    ----------
    side : sparse matrix, rows x side features
        Non-negative weights (1 for a present categorical value).
    names : array of str
        The name of each side feature.
    ids : array-like of raw ids, IdMap or None
        The raw id of each row (None: rows are indices ``0..n-1``).
    identity : bool
        Add a feature per row for its own id when aligned (see ``aligned``).
    normalize : bool
        Scale each row to sum to 1 (after identity features are added).
    unknown : {"error", "drop", "append"}
        What ``aligned`` does with rows whose id is not in the dataset:
        refuse them, drop them, or append them as brand-new rows.
    spec : dict, optional
        How raw columns map to features (set by ``from_frame``), for ``transform``.

    Attributes
    ----------
    matrix : csr_matrix (float32)
        The features of the rows as given (identity included, normalised).
    names : ndarray of str
        Names of the columns of ``matrix``.
    """

    def __init__(self, side: Any, names: Any = None, ids: Any = None, *, identity: bool = False,
                 normalize: bool = True, unknown: str = "error", spec: dict | None = None):
        self.side = check_feature_matrix(side, "side")
        n_side = self.side.shape[1]
        names = np.array([f"feature_{j}" for j in range(n_side)] if names is None else names, dtype=str)
        if names.shape != (n_side,):
            raise ValueError(f"names has {names.size} entries for {n_side} features")
        if np.unique(names).size != names.size:
            raise ValueError("names must be unique")
        self.side_names = names
        if ids is not None and not isinstance(ids, IdMap):
            ids = IdMap(check_raw_ids(np.asarray(ids), "ids", self.side.shape[0]))
        if ids is not None and len(ids) != self.side.shape[0]:
            raise ValueError(f"ids has {len(ids)} entries for {self.side.shape[0]} rows")
        self.ids = ids
        self.identity = check_bool(identity, "identity")
        self.normalize = check_bool(normalize, "normalize")
        self.unknown = check_choice(unknown, "unknown", _UNKNOWN)
        self.spec = spec
        for arr in (self.side.data, self.side.indices, self.side.indptr, self.side_names):
            arr.flags.writeable = False

    # ------------------------------------------------------------ builders
    @classmethod
    def from_matrix(cls, matrix: Any, names: Any = None, ids: Any = None, *, identity: bool = False,
                    normalize: bool = False, unknown: str = "error") -> "Features":
        """Features from a ready rows x features matrix (used as given: no normalisation by default)."""
        return cls(matrix, names, ids, identity=identity, normalize=normalize, unknown=unknown)

    @classmethod
    def from_frame(cls, table: Any, id_column: str, categorical: Sequence[str] = (),
                   multi: Sequence[str] | Mapping[str, str] = (), numeric: Mapping[str, Any] | None = None,
                   *, identity: bool = False, normalize: bool = True, unknown: str = "error",
                   sep: str = "|") -> "Features":
        """Features from a table with one row per id (repeated ids are merged).

        Parameters
        ----------
        table : pandas or polars DataFrame, dict of columns, or list of records
        id_column : str
            The column of raw user or item ids.
        categorical : column names
            One feature per distinct value.
        multi : column names, or dict of column name to separator
            Multi-valued fields such as ``"Action|Comedy"`` (separator ``sep``
            unless given per column).
        numeric : dict of column name to bucket edges (increasing) or a number of buckets
            A number picks edges at quantiles of the column.  Values below the
            first edge, between edges and from the last edge up are buckets.
        identity : bool
            One feature per row for its own id (LightFM's identity features).
        normalize : bool
            Rows sum to 1, as LightFM normalises them.
        unknown : {"error", "drop", "append"}
            Rows whose id the dataset does not have: refused, dropped, or
            appended as new rows with no interactions (see ``aligned``).
        sep : str
            Separator of multi-valued fields.

        Returns
        -------
        Features
        """
        columns = _columns_of(table)
        multi_sep = dict(multi) if isinstance(multi, Mapping) else {c: sep for c in multi}
        numeric = dict(numeric or {})
        wanted = [id_column, *categorical, *multi_sep, *numeric]
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise KeyError(f"table has no column(s) {missing}; it has {sorted(columns)}")
        raw_ids = check_raw_ids(columns[id_column], f"column {id_column!r} (id_column)")
        id_map, rows = IdMap.from_raw(raw_ids)
        spec: dict[str, Any] = {"id_column": id_column, "columns": []}
        for column in categorical:
            spec["columns"].append({"name": column, "kind": "categorical"})
        for column, column_sep in multi_sep.items():
            if not isinstance(column_sep, str) or not column_sep:
                raise ValueError(f"multi: the separator of {column!r} must be a non-empty string")
            spec["columns"].append({"name": column, "kind": "multi", "sep": column_sep})
        for column, edges in numeric.items():
            spec["columns"].append({"name": column, "kind": "numeric",
                                    "edges": cls._edges(columns[column], edges, column)})
        names = sorted({name for col in spec["columns"] for name in cls._names(col, columns[col["name"]])})
        spec["vocabulary"] = names
        out = cls(sp.csr_matrix((len(id_map), len(names)), dtype=np.float32), names, id_map,
                  identity=identity, normalize=normalize, unknown=unknown, spec=spec)
        side = out._encode(columns, rows, len(id_map))
        return cls(side, names, id_map, identity=identity, normalize=normalize, unknown=unknown, spec=spec)

    @classmethod
    def from_csv(cls, path: Any, id_column: str, categorical: Sequence[str] = (),
                 multi: Sequence[str] | Mapping[str, str] = (), numeric: Mapping[str, Any] | None = None,
                 *, delimiter: str = ",", encoding: str | None = "utf-8", **options: Any) -> "Features":
        """``from_frame`` on the named columns of a delimited text file with a header line.

        ``options`` are ``from_frame``'s keyword arguments (``identity``,
        ``normalize``, ``unknown``, ``sep``).
        """
        from .tables import read_columns
        multi_names = list(multi) if not isinstance(multi, Mapping) else list(multi.keys())
        kinds = {id_column: "id", **{c: "str" for c in [*categorical, *multi_names]},
                 **{c: "float" for c in (numeric or {})}}
        table = read_columns(path, kinds, sep=delimiter, encoding=encoding)
        return cls.from_frame(table, id_column, categorical, multi, numeric, **options)

    @staticmethod
    def _edges(values: np.ndarray, edges: Any, column: str) -> list[float]:
        numbers = np.asarray(values, dtype=np.float64)
        if np.ndim(edges) == 0:
            count = check_int(edges, f"numeric[{column!r}]", minimum=2)
            finite = numbers[np.isfinite(numbers)]
            if finite.size == 0:
                raise ValueError(f"numeric column {column!r} has no finite values to bucket")
            inner = np.unique(np.quantile(finite, np.arange(1, count) / count))
            return [float(v) for v in inner]
        edges = np.asarray(edges, dtype=np.float64)
        if edges.ndim != 1 or edges.size == 0 or not np.isfinite(edges).all() or (np.diff(edges) <= 0).any():
            raise ValueError(f"numeric[{column!r}] must be increasing finite bucket edges or a number of buckets")
        return [float(v) for v in edges]

    @staticmethod
    def _values(col: dict, value: Any) -> list[str]:
        """The feature names one field gives."""
        kind, name = col["kind"], col["name"]
        if kind == "numeric":
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"numeric column {name!r} holds {value!r}, not a number") from None
            if not np.isfinite(number):
                return []
            return [_bucket_name(name, col["edges"], int(np.searchsorted(col["edges"], number, side="right")))]
        text = _text(value)
        if text is None:
            return []
        if kind == "multi":
            return [f"{name}={part.strip()}" for part in text.split(col["sep"]) if part.strip()]
        return [f"{name}={text}"]

    @classmethod
    def _names(cls, col: dict, values: np.ndarray) -> set[str]:
        if col["kind"] == "numeric":
            return {_bucket_name(col["name"], col["edges"], b) for b in range(len(col["edges"]) + 1)}
        return {name for value in np.unique(values.astype(str)) for name in cls._values(col, value)
                if value not in ("None", "nan")}

    def _encode(self, columns: dict[str, np.ndarray], rows: np.ndarray, n_rows: int) -> sp.csr_matrix:
        """The side matrix of raw ``columns`` (row ``rows[k]`` for entry k) in this vocabulary."""
        column_of = {name: j for j, name in enumerate(self.side_names)}
        r_list, c_list = [], []
        for col in self.spec["columns"]:
            values = columns[col["name"]]
            cache: dict[Any, list[int]] = {}
            for row, value in zip(rows, values):
                key = value if not isinstance(value, float) or not np.isnan(value) else None
                hits = cache.get(key)
                if hits is None:
                    hits = [column_of[n] for n in self._values(col, value) if n in column_of]
                    cache[key] = hits
                r_list += [row] * len(hits)
                c_list += hits
        data = np.ones(len(r_list), dtype=np.float32)
        side = sp.csr_matrix((data, (np.asarray(r_list, dtype=np.int64), np.asarray(c_list, dtype=np.int64))),
                             shape=(n_rows, len(self.side_names)))
        side.sum_duplicates()
        side.data[:] = 1.0  # a repeated (id, value) is one feature
        return side

    def transform(self, table: Any, ids: Any = None) -> "Features":
        """Rows for new users or items in this feature space (values never seen give no feature).

        Parameters
        ----------
        table : DataFrame, dict of columns or list of records
            With the columns this ``Features`` was built from; the id column is
            optional (rows are then numbered).
        ids : array-like, optional
            Raw ids of the rows (default: the id column, if present).

        Returns
        -------
        Features with the same feature names, no identity features.
        """
        if self.spec is None:
            raise ValueError("these Features were built from a matrix; transform needs Features.from_frame")
        columns = _columns_of(table)
        needed = [c["name"] for c in self.spec["columns"]]
        missing = [c for c in needed if c not in columns]
        if missing:
            raise KeyError(f"table has no column(s) {missing}; it needs {needed}")
        n = len(next(iter(columns.values()))) if columns else 0
        if ids is None and self.spec["id_column"] in columns:
            ids = columns[self.spec["id_column"]]
        side = self._encode(columns, np.arange(n), n)
        return Features(side, self.side_names, ids, identity=False, normalize=self.normalize,
                        unknown=self.unknown, spec=self.spec)

    # ------------------------------------------------------------ matrices
    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape

    def __len__(self) -> int:
        return int(self.side.shape[0])

    def __repr__(self) -> str:
        return (f"Features({len(self)} rows x {self.side.shape[1]} features"
                f"{' + identity' if self.identity else ''}{', normalised' if self.normalize else ''})")

    @property
    def names(self) -> np.ndarray:
        """Names of ``matrix``'s columns: the side features, then ``id=<raw id>`` per row with identity."""
        if not self.identity:
            return self.side_names
        labels = self.ids.labels if self.ids is not None else np.arange(len(self))
        return np.concatenate([self.side_names, np.char.add(_IDENTITY_PREFIX, labels.astype(str))])

    @property
    def matrix(self) -> sp.csr_matrix:
        return self._finish(self.side, len(self) if self.identity else 0)

    def _finish(self, side: sp.csr_matrix, n_identity: int) -> sp.csr_matrix:
        """``side`` with identity columns for its first ``n_identity`` rows, normalised if asked."""
        n_rows = side.shape[0]
        if n_identity:
            eye = sp.csr_matrix((np.ones(n_identity, np.float32), np.arange(n_identity),
                                 np.r_[np.arange(n_identity + 1), np.full(n_rows - n_identity, n_identity)]),
                                shape=(n_rows, n_identity))
            side = sp.hstack([side, eye], format="csr")
        side = sp.csr_matrix(side, dtype=np.float32)
        side.sort_indices()
        if self.normalize:
            side = _normalized(side)
        return side

    def aligned(self, id_map: IdMap | None, n_rows: int, name: str) -> tuple[sp.csr_matrix, np.ndarray, int,
                                                                             np.ndarray]:
        """This matrix with rows in the order of ``id_map`` (or of indices when None).

        Returns ``(matrix, names, n_side, new_labels)``: the side features are
        the first ``n_side`` columns, then one identity column per row of the
        map (with ``identity``).  ``new_labels`` are the raw ids appended
        after the map's rows (``unknown="append"``).  Errors name ``name``.
        """
        if self.ids is not None and id_map is None:
            if self.ids.labels.dtype.kind != "i":
                raise ValueError(f"{name} has text ids but the interactions have none; fit on "
                                 "fastrec.Interactions, or use integer ids (the row and column indices)")
            id_map = IdMap(np.arange(n_rows))  # integer ids are the interactions' indices
        if self.ids is None:
            if len(self) != n_rows:
                raise ValueError(f"{name} has {len(self)} rows but there are {n_rows}; pass one row per "
                                 "user (user_features) or item (item_features), in index order")
            side, new_labels = self.side, np.empty(0, dtype=np.int64)
        else:
            if self.ids.labels.dtype.kind != id_map.labels.dtype.kind:
                raise TypeError(f"{name} has {self.ids.labels.dtype.kind == 'U' and 'text' or 'integer'} ids "
                                f"but the interactions' are {id_map.labels.dtype.kind == 'U' and 'text' or 'integer'}")
            position = id_map.to_index(self.ids.labels, unknown="mask")
            unknown = position < 0
            new_labels = self.ids.labels[unknown]
            if unknown.any() and self.unknown == "error":
                shown = ", ".join(map(repr, new_labels[:5].tolist()))
                raise KeyError(f"{name}: {unknown.sum()} id(s) have features but no interactions ({shown}); "
                               "build the features with unknown='append' to add them as new rows with no "
                               "interactions, or unknown='drop' to ignore them")
            if self.unknown == "drop":
                new_labels = new_labels[:0]
            target = position.copy()
            target[unknown] = len(id_map) + np.arange(unknown.sum()) if self.unknown == "append" else -1
            keep = target >= 0
            total = len(id_map) + new_labels.size
            picked = self.side[np.flatnonzero(keep)]
            order = sp.csr_matrix((np.ones(keep.sum(), np.float32), (target[keep], np.arange(keep.sum()))),
                                  shape=(total, int(keep.sum())))
            side = sp.csr_matrix(order @ picked)
        n_identity = n_rows if self.identity else 0
        matrix = self._finish(side, n_identity)
        names = self.side_names
        if self.identity:
            labels = id_map.labels if id_map is not None else np.arange(n_rows)
            names = np.concatenate([names, np.char.add(_IDENTITY_PREFIX, labels.astype(str))])
        return matrix, names, self.side.shape[1], new_labels

    def rows_in(self, names: np.ndarray, n_side: int, name: str) -> sp.csr_matrix:
        """This side matrix re-indexed to a model's feature ``names`` (the first ``n_side`` are side features).

        Features the model does not know are an error; identity features are
        never set (these rows are new).  Normalised like the model's rows.
        """
        column_of = {n: j for j, n in enumerate(names[:n_side])}
        unknown = [n for n in self.side_names if n not in column_of]
        if unknown:
            raise ValueError(f"{name} has feature(s) the model was not fitted with: {[str(u) for u in unknown[:5]]}")
        mapping = np.array([column_of[n] for n in self.side_names], dtype=np.int64)
        coo = self.side.tocoo()
        out = sp.csr_matrix((coo.data, (coo.row, mapping[coo.col])), shape=(len(self), len(names)),
                            dtype=np.float32)
        out.sort_indices()
        out = _normalized(out) if self.normalize else out
        return out
