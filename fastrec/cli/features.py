"""Side features from CSV files: ``fastrec fit --user-features FILE --item-features FILE``,
``fastrec recommend MODEL --user-features FILE`` (new users) and ``fastrec info``'s summary.

A feature file has a header line and one row per user or item.  The id column
is the one named like the interactions' (``--user-col``/``--item-col``) when
the file has it, else its first column.  Every other column becomes features:
a column whose values contain ``|`` is multi-valued (``Action|Comedy``), a
numeric column with more than ``_NUMERIC_DISTINCT`` distinct values is cut into
``_BUCKETS`` quantile buckets, and any other column is categorical.
"""
from __future__ import annotations

import csv
import io

import numpy as np

from ..data.features import Features
from ..data.tables import read_columns

__all__ = ["read_features", "read_new_rows", "feature_summary"]

_NUMERIC_DISTINCT = 20
_BUCKETS = 5


def _header(path: str, sep: str, encoding: str | None) -> list[str]:
    with open(path, "rb") as fh:
        first = fh.readline().decode(encoding or "utf-8", errors="replace").lstrip("\ufeff")
    return next(csv.reader(io.StringIO(first), delimiter=sep)) if len(sep) == 1 else first.rstrip("\r\n").split(sep)


def _is_numeric(values: np.ndarray) -> bool:
    try:
        numbers = np.array([float(v) for v in values if v != ""], dtype=np.float64)
    except ValueError:
        return False
    return numbers.size > 0 and np.unique(numbers).size > _NUMERIC_DISTINCT


def read_features(path: str, id_col: str, sep: str = ",", encoding: str | None = "utf-8",
                  identity: bool = False, unknown: str = "error", option: str = "--item-features") -> Features:
    """``Features`` from a CSV file with a header (see the module docstring for the columns' kinds)."""
    header = [h.strip() for h in _header(path, sep, encoding)]
    if len(header) < 2:
        raise ValueError(f"{option} {path}: needs a header with an id column and at least one feature column")
    id_column = id_col if id_col in header else header[0]
    columns = read_columns(path, {name: ("id" if name == id_column else "str") for name in header}, sep=sep,
                           encoding=encoding)
    categorical, multi, numeric = [], [], {}
    for name in header:
        if name == id_column:
            continue
        values = columns[name]
        if any("|" in v for v in values):
            multi.append(name)
        elif _is_numeric(values):
            numeric[name] = _BUCKETS
            columns[name] = np.array([float(v) if v != "" else np.nan for v in values])
        else:
            categorical.append(name)
    return Features.from_frame(columns, id_column, categorical=categorical, multi=multi, numeric=numeric,
                               identity=identity, unknown=unknown)


def read_new_rows(path: str, model: object, model_path: str, encoding: str | None = "utf-8",
                  option: str = "--user-features") -> tuple[np.ndarray, Features]:
    """(labels, rows) of new users described in a CSV file, in the model's user feature space.

    The file has a header with the columns the model's user features were
    built from (as given to ``fastrec fit --user-features``); the id column is
    optional (rows are then labelled 1, 2, ...).  Values the model never saw
    give no feature.
    """
    side = getattr(model, "user_features_", None)
    if side is None:
        raise ValueError(f"{option}: {model_path} was fitted without user features; fit it with "
                         "'fastrec fit --user-features FILE' (ALS, BPR or WARP)")
    spec = side.spec
    if spec is None:
        raise ValueError(f"{option}: the user features of {model_path} were given as a matrix, not built "
                         "from a table; build new rows with model.user_features_ in Python")
    header = [h.strip() for h in _header(path, ",", encoding)]
    needed = [col["name"] for col in spec["columns"]]
    missing = [name for name in needed if name not in header]
    if missing:
        raise ValueError(f"{option} {path}: no column(s) {', '.join(missing)}; the model's user features "
                         f"come from {', '.join(needed)}")
    id_column = spec["id_column"] if spec["id_column"] in header else None
    kinds = {name: "str" for name in needed}
    if id_column is not None:
        kinds[id_column] = "id"
    columns = read_columns(path, kinds, sep=",", encoding=encoding)
    for col in spec["columns"]:
        if col["kind"] == "numeric":
            try:
                columns[col["name"]] = np.array([float(v) if v != "" else np.nan for v in columns[col["name"]]])
            except ValueError:
                raise ValueError(f"{option} {path}: column {col['name']!r} must hold numbers") from None
    n = len(columns[needed[0]]) if needed else 0
    labels = columns.pop(id_column) if id_column is not None else np.arange(1, n + 1)
    if n == 0:
        raise ValueError(f"{option} {path}: no rows below the header")
    return labels, side.transform(columns)


def feature_summary(side: object) -> dict | None:
    """``fastrec info``'s view of one side's features: counts and the first names."""
    if side is None:
        return None
    names = [str(name) for name in side.names[:side.n_side]]
    shown = ", ".join(names[:12]) + (f", ... ({len(names) - 12} more)" if len(names) > 12 else "")
    return {"features": side.n_side, "identity_features": side.n_features - side.n_side,
            "normalized": bool(side.normalize), "names": shown}
