"""Read columns of delimited text files, with pandas when it is installed.

pandas is optional: without it the ``csv`` module and NumPy do the parsing
(slower, same results: the same values, dtypes and error messages).
Multi-character separators such as MovieLens' ``::`` are swapped for a
control character first so pandas' fast C parser can be used.

Text is decoded before parsing: UTF-8 by default, falling back to Latin-1
(which decodes anything) when the bytes are not UTF-8; a leading byte-order
mark is dropped.

Error messages name the column and the row, counted from 1 after the header
line (blank lines are not counted).
"""
from __future__ import annotations

import csv
import gzip
import io
import os
import re
from typing import Any, Sequence

import numpy as np

from ..utils.validation import check_columns, integer_labels

__all__ = ["optional_pandas", "require_pandas", "require_io", "read_columns", "read_parquet_columns",
           "write_parquet"]

# column kinds: "id" (int64 when every value is an integer that fits, else str;
# see _to_id), "str" (text, missing -> ""), "float" (float64; missing -> NaN),
# "float32" (weights: like "float", but a value must be present and fit in float32)
_KINDS = ("id", "str", "float", "float32")
_SWAP_SEP = "\x1f"  # ASCII unit separator: never found in these files
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*")
_IO_HINT = "pip install 'fastrec[io]'"


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


def require_io(what: str) -> Any:
    """pandas, after checking that pyarrow (its Parquet engine) is there too.

    Raises an ImportError naming ``pip install 'fastrec[io]'`` when either is missing.
    """
    missing = []
    pd = optional_pandas()
    if pd is None:
        missing.append("pandas")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        missing.append("pyarrow")
    if missing:
        raise ImportError(f"{what} needs pandas and pyarrow ({' and '.join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} missing): {_IO_HINT}")
    return pd


def read_parquet_columns(path: str, roles: dict[str, Any]) -> Any:
    """A DataFrame of the columns ``roles`` names (``{"user_col": "user", ...}``; None: not wanted).

    Raises ``KeyError`` naming missing columns and ``ValueError`` for a file
    that is not Parquet; a missing file raises ``FileNotFoundError``.
    """
    pd = require_io("Interactions.from_parquet")
    import pyarrow.parquet as pq
    try:
        names = pq.read_schema(path).names
    except (OSError, ValueError) as exc:
        if isinstance(exc, OSError) and not os.path.isfile(path):
            raise  # a missing file or a directory: the OSError says so
        raise ValueError(f"{path} is not a readable Parquet file: {exc}") from exc
    check_columns(names, roles, path)
    wanted = list(dict.fromkeys(col for col in roles.values() if col is not None))
    try:
        return pd.read_parquet(path, columns=wanted, engine="pyarrow")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable Parquet file: {exc}") from exc


def write_parquet(path: str, columns: dict[str, np.ndarray]) -> None:
    """Write equal-length columns to a Parquet file."""
    require_io("Interactions.to_parquet").DataFrame(columns).to_parquet(path, engine="pyarrow", index=False)


def _read_bytes(source: Any) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    path = os.fspath(source)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        return handle.read()


def _decode(raw: bytes, encoding: str | None, label: str) -> str:
    if encoding is None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
    else:
        try:
            text = raw.decode(encoding)
        except LookupError:
            raise ValueError(f"unknown encoding {encoding!r}") from None
        except UnicodeDecodeError as exc:
            raise ValueError(f"{label} is not valid {encoding} text (byte {exc.start}); give its "
                             "real encoding, such as latin-1") from None
    return text[1:] if text.startswith("\ufeff") else text  # a byte-order mark is not data


def read_columns(source: Any, columns: dict[Any, str], sep: str = ",", header: bool = True,
                 encoding: str | None = "utf-8", quoting: bool = True,
                 roles: dict[Any, str] | None = None, label: str | None = None
                 ) -> dict[Any, np.ndarray]:
    """Read some columns of a delimited text file.

    Parameters
    ----------
    source : path (``.gz`` is decompressed) or bytes
    columns : dict
        Column -> kind.  Columns are names from the header line when
        ``header`` is True, else 0-based positions.  Kinds:

        ``"id"``      int64 when every value is an integer that fits in int64;
                      integers that do not all fit make the column text, as
                      decimal strings (``"18446744073709551615"``), so ids are
                      kept exactly; any other text keeps the column as text.
                      Missing values come back as None (reported by
                      ``check_raw_ids``).
        ``"str"``     text; missing values become ``""``.
        ``"float"``   float64; missing values become NaN.  Text that is not a
                      number, and ``nan``/``inf`` spelt out, are errors naming
                      the column and row.
        ``"float32"`` weights: like ``"float"``, but a missing value or one
                      too large for float32 (such as 1e40) is an error naming
                      the column and row.
    sep : str
        Field separator; may be several characters (``"::"``).
    quoting : bool
        Honour double quotes around fields (CSV).  Off for formats whose
        text fields may contain a bare ``"``.
    encoding : str or None
        None tries UTF-8, then Latin-1 (which decodes anything).  A leading
        byte-order mark is dropped whatever the encoding.
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
    text = _decode(_read_bytes(source), encoding, label)
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
    # pandas infers each column's type (fast); where that is not exactly what
    # the kind wants, the column's text goes through the same conversion as
    # without pandas, so both readers agree on values and errors
    frame = pd.read_csv(io.StringIO(text), usecols=list(columns),
                        dtype={c: str for c, kind in columns.items() if kind == "str"}, **options)
    # ids pandas read neither as int64 nor as the text itself (uint64, floats for
    # integer columns with gaps, Python ints beyond uint64): their exact text is needed
    reread = [c for c, kind in columns.items() if kind == "id" and frame[c].dtype != np.int64
              and pd.api.types.infer_dtype(frame[c], skipna=True) not in ("string", "empty")]
    texts = pd.read_csv(io.StringIO(text), usecols=reread, dtype=str, **options) if reread else frame
    out: dict[Any, np.ndarray] = {}
    for col, kind in columns.items():
        series = frame[col]
        if kind == "str":
            out[col] = series.fillna("").to_numpy().astype(str)
        elif kind == "id":
            out[col] = series.to_numpy() if series.dtype == np.int64 else \
                _to_id(texts[col].fillna("").to_numpy().astype(str))
        elif series.dtype.kind in "iuf":
            out[col] = _checked_floats(series.to_numpy(dtype=np.float64), col, kind, label)
        else:  # text in a number column: find what is wrong, and where
            out[col] = _to_float(series.fillna("").to_numpy().astype(str), col, kind, label)
    return out


def _with_csv(text: str, columns: dict[Any, str], sep: str, header: bool, quoting: bool,
              label: str, roles: dict[Any, str]) -> dict[Any, np.ndarray]:
    # newline="" lets the csv module see \r\n, \r and \n line ends, and newlines inside
    # quoted fields, the way pandas does (str.splitlines would also split at \x85 and
    # other characters a Latin-1 file may hold)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep,
                        quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE)
    rows = [row for row in reader if row]
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
        raise ValueError(f"{label}: row {short + 1} has {len(rows[short])} fields, "
                         f"expected at least {width}")
    out: dict[Any, np.ndarray] = {}
    for col, kind in columns.items():
        pos = positions[col]
        values = np.array([row[pos] for row in rows], dtype=str)
        if kind in ("float", "float32"):
            out[col] = _to_float(values, col, kind, label)
        elif kind == "id":
            out[col] = _to_id(values)
        else:
            out[col] = values
    return out


def _where(label: str, col: Any, row: int) -> str:
    return f"{label}: column {col!r}, row {row + 1}"


def _checked_floats(result: np.ndarray, col: Any, kind: str, label: str) -> np.ndarray:
    """``result`` after checking it holds no infinity; for ``"float32"`` also no
    missing value (NaN) and nothing too large for float32."""
    infinite = np.flatnonzero(np.isinf(result))
    if infinite.size:
        row = int(infinite[0])
        raise ValueError(f"{_where(label, col, row)}: {result[row]:g} is not a finite number")
    if kind == "float32":
        missing = np.flatnonzero(np.isnan(result))
        if missing.size:
            raise ValueError(f"{_where(label, col, int(missing[0]))}: missing value (every weight "
                             "must be a number)")
        too_big = np.flatnonzero(np.abs(result) > _FLOAT32_MAX)
        if too_big.size:
            row = int(too_big[0])
            raise ValueError(f"{_where(label, col, row)}: {result[row]:g} is too large for a float32 "
                             f"weight (largest {_FLOAT32_MAX:.4g})")
    return result


def _to_float(values: np.ndarray, col: Any, kind: str, label: str) -> np.ndarray:
    """Numbers written as text (``""`` is missing: NaN); errors name the column and row."""
    result = np.full(values.shape, np.nan)
    present = np.flatnonzero(values != "")
    try:
        result[present] = values[present].astype(np.float64)
    except ValueError:
        for row in present:
            try:
                float(values[row])
            except ValueError:
                raise ValueError(f"{_where(label, col, int(row))}: {str(values[row])!r} is not a "
                                 "number") from None
        raise  # pragma: no cover  (NumPy and float() accept the same text)
    spelt_nan = present[np.isnan(result[present])]
    if spelt_nan.size:  # "nan" written out: missing values are empty fields
        row = int(spelt_nan[0])
        raise ValueError(f"{_where(label, col, row)}: {str(values[row]).strip()!r} is not a number")
    return _checked_floats(result, col, kind, label)


def _to_id(values: np.ndarray) -> np.ndarray:
    """An id column from its text: int64 when every value is an integer that fits in int64.

    Integers that do not all fit make the column their decimal strings
    (exact; see ``integer_labels``); other text keeps the column as written.
    Missing values (``""``) become None, reported by ``check_raw_ids``.
    """
    if values.size and np.any(values == ""):
        out = values.astype(object)
        out[values == ""] = None
        return out
    try:
        ints = values.astype(np.int64)
    except ValueError:
        return values
    except OverflowError:  # integers beyond int64, or text
        if all(_INTEGER.fullmatch(v) for v in values.tolist()):
            return integer_labels(np.array([int(v) for v in values.tolist()], dtype=object))
        return values
    if np.any(np.char.find(values, "_") >= 0):  # int() reads 1_000 as 1000; pandas keeps the text
        return values
    return ints
