"""``fastrec fit --user-features FILE --item-features FILE``: side features from CSV files.

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

__all__ = ["read_features"]

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
