"""Read columns of delimited text files, with pandas when it is installed.

pandas is optional: without it the ``csv`` module and NumPy do the parsing
(slower, same results).  Multi-character separators such as MovieLens' ``::``
are swapped for a control character first so pandas' fast C parser can be
used.
"""
from __future__ import annotations

import csv
import gzip
import io
import os
from typing import Any, Sequence

import numpy as np

from ..utils.validation import check_columns

__all__ = ["optional_pandas", "require_pandas", "read_columns"]

# column kinds: "id" (int64 when every value is an integer, else str),
# "str" (text, missing -> ""), "float" (float64; missing -> NaN)
_KINDS = ("id", "str", "float")
_SWAP_SEP = "\x1f"  # ASCII unit separator: never found in these files


def optional_pandas() -> Any:
    """The pandas module, or None when it is not installed."""
    try:
        import pandas
    except ImportError:
        return None
    return pandas


def require_pandas(what: str) -> Any:
    """The pandas module, or an ImportError saying that ``what`` needs it."""
    pd = optional_pandas()
    if pd is None:
        raise ImportError(f"{what} needs pandas: pip install pandas (or 'fastrec[io]')")
    return pd


def _read_bytes(source: Any) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    path = os.fspath(source)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        return handle.read()


def _decode(raw: bytes, encoding: str | None) -> str:
    if encoding is not None:
        return raw.decode(encoding)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_columns(source: Any, columns: dict[Any, str], sep: str = ",", header: bool = True,
                 encoding: str = "utf-8", quoting: bool = True,
                 roles: dict[Any, str] | None = None, label: str | None = None
                 ) -> dict[Any, np.ndarray]:
    """Read some columns of a delimited text file.

    Parameters
    ----------
    source : path (``.gz`` is decompressed) or bytes
    columns : dict
        Column -> kind (``"id"``, ``"str"`` or ``"float"``).  Columns are names
        from the header line when ``header`` is True, else 0-based positions.
    sep : str
        Field separator; may be several characters (``"::"``).
    quoting : bool
        Honour double quotes around fields (CSV).  Off for formats whose
        text fields may contain a bare ``"``.
    encoding : str or None
        None tries UTF-8, then Latin-1 (which decodes anything).
    roles : optional column -> argument name (``"user_col"``), for error messages.
    label : how error messages name the source (default: its path).

    Returns
    -------
    dict mapping each requested column to a 1-D array (int64, float64 or str).
    """
    for col, kind in columns.items():
        if kind not in _KINDS:
            raise ValueError(f"column kind must be one of {_KINDS}, got {kind!r} for {col!r}")
    if not isinstance(sep, str) or not sep:
        raise ValueError(f"sep must be a non-empty string, got {sep!r}")
    if label is None:
        label = "the data" if isinstance(source, (bytes, bytearray)) else os.fspath(source)
    text = _decode(_read_bytes(source), encoding)
    if not text.strip():
        raise ValueError(f"{label} is empty")
    roles = {col: (roles or {}).get(col, str(col)) for col in columns}
    if len(sep) > 1:
        text = text.replace(sep, _SWAP_SEP)
        sep = _SWAP_SEP
    pandas = optional_pandas()
    if pandas is not None:
        return _with_pandas(pandas, text, columns, sep, header, quoting, label, roles)
    return _with_csv(text, columns, sep, header, quoting, label, roles)


def _check_header(head: Sequence[Any], columns: dict[Any, str], label: str,
                  roles: dict[Any, str]) -> None:
    check_columns(head, {roles[c]: c for c in columns}, label)


def _check_positions(n_fields: int, columns: dict[Any, str], label: str, roles: dict[Any, str]) -> None:
    bad = [repr(c) if roles[c] == str(c) else f"{roles[c]}={c!r}" for c in columns
           if not isinstance(c, (int, np.integer)) or not 0 <= c < n_fields]
    if bad:
        raise KeyError(f"{label} has no header and {n_fields} fields per line; "
                       f"{', '.join(bad)} must be 0-based field positions below {n_fields}")


def _with_pandas(pd: Any, text: str, columns: dict[Any, str], sep: str, header: bool,
                 quoting: bool, label: str, roles: dict[Any, str]) -> dict[Any, np.ndarray]:
    options = dict(sep=sep, header=0 if header else None, engine="c",
                   quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE,
                   keep_default_na=False, na_values=[""], skip_blank_lines=True)
    first = pd.read_csv(io.StringIO(text), nrows=0 if header else 1, **options)
    if header:
        _check_header(list(first.columns), columns, label, roles)
    else:
        _check_positions(first.shape[1], columns, label, roles)
    dtypes = {c: (str if kind == "str" else np.float64 if kind == "float" else None)
              for c, kind in columns.items()}
    frame = pd.read_csv(io.StringIO(text), usecols=list(columns),
                        dtype={c: d for c, d in dtypes.items() if d is not None}, **options)
    out: dict[Any, np.ndarray] = {}
    for col, kind in columns.items():
        series = frame[col]
        if kind == "str":
            out[col] = series.fillna("").to_numpy().astype(str)
        elif kind == "float":
            out[col] = series.to_numpy(dtype=np.float64)
        else:
            values = series.to_numpy()
            out[col] = values.astype(str) if values.dtype == object and not series.isna().any() else values
    return out


def _with_csv(text: str, columns: dict[Any, str], sep: str, header: bool, quoting: bool,
              label: str, roles: dict[Any, str]) -> dict[Any, np.ndarray]:
    lines = [line for line in text.splitlines() if line]
    if quoting and len(sep) == 1:
        rows = list(csv.reader(lines, delimiter=sep))
    else:
        rows = [line.split(sep) for line in lines]
    if header:
        if not rows:
            raise ValueError(f"{label} is empty: it has no header line")
        head, rows = rows[0], rows[1:]
        _check_header(head, columns, label, roles)
        positions = {col: head.index(col) for col in columns}
    else:
        _check_positions(len(rows[0]), columns, label, roles)
        positions = {col: int(col) for col in columns}
    width = max(positions.values(), default=-1) + 1
    short = next((i for i, row in enumerate(rows) if len(row) < width), None)
    if short is not None:
        raise ValueError(f"{label}: line {short + 1 + int(header)} has {len(rows[short])} fields, "
                         f"expected at least {width}")
    out: dict[Any, np.ndarray] = {}
    for col, kind in columns.items():
        pos = positions[col]
        values = np.array([row[pos] for row in rows], dtype=str)
        if kind == "float":
            out[col] = _to_float(values, col, label)
        elif kind == "id":
            out[col] = _to_id(values)
        else:
            out[col] = values
    return out


def _to_float(values: np.ndarray, col: Any, label: str) -> np.ndarray:
    result = np.full(values.shape, np.nan)
    present = values != ""
    try:
        result[present] = values[present].astype(np.float64)
    except ValueError as exc:
        raise ValueError(f"{label}: column {col!r} holds values that are not numbers ({exc})") from exc
    return result


def _to_id(values: np.ndarray) -> np.ndarray:
    if values.size and np.any(values == ""):
        out = values.astype(object)
        out[values == ""] = None  # reported as missing ids by check_raw_ids
        return out
    try:
        return values.astype(np.int64)
    except ValueError:
        return values
