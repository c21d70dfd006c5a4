"""Inputs of the ``fastrec`` command: data files, model files, id lists and ids typed as text.

The reading itself is the library's (``Interactions.from_csv`` /
``from_parquet``, ``fastrec.load``, ``IdMap``); this module only turns
command-line text into its arguments.  Errors are the library's usual
``ValueError`` / ``KeyError`` / ``OSError`` / ``ImportError`` with a message
fit for one line on stderr.
"""
from __future__ import annotations

import os
from typing import Any, Iterable

import numpy as np
import scipy.sparse as sp

from ..data.idmap import IdMap
from ..data.interactions import Interactions

__all__ = ["PARQUET_SUFFIXES", "read_interactions", "load_model", "read_id_file", "uses_raw_ids",
           "model_ids", "history_row"]

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_INT64 = np.iinfo(np.int64)


def _unescape_sep(sep: str) -> str:
    """Let shell users type ``\\t`` or ``tab`` for a tab separator."""
    return {"\\t": "\t", "tab": "\t", "TAB": "\t"}.get(sep, sep)


def _column(value: str | None, header: bool, option: str) -> Any:
    """A column name, or a 0-based position when the file has no header line."""
    if value is None or header:
        return value
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{option} must be a 0-based column number with --no-header, got {value!r}") from None


def _existing_file(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(2, f"no such {what}", path)
    if os.path.isdir(path):
        raise IsADirectoryError(21, f"the {what} is a directory", path)


def read_interactions(path: str, user_col: str, item_col: str, weight_col: str | None = None,
                      timestamp_col: str | None = None, sep: str = ",", header: bool = True,
                      duplicates: str = "sum", encoding: str | None = None) -> Interactions:
    """Interactions from a CSV (any separator, ``.gz`` ok) or a Parquet file (by its suffix)."""
    _existing_file(path, "data file")
    if path.lower().endswith(PARQUET_SUFFIXES):
        if not header:
            raise ValueError("--no-header applies to CSV files only; Parquet columns have names")
        return Interactions.from_parquet(path, user_col=user_col, item_col=item_col,
                                         weight_col=weight_col, timestamp_col=timestamp_col,
                                         duplicates=duplicates)
    cols = {name: _column(value, header, option) for name, value, option in (
        ("user_col", user_col, "--user-col"), ("item_col", item_col, "--item-col"),
        ("weight_col", weight_col, "--weight-col"), ("timestamp_col", timestamp_col, "--timestamp-col"))}
    return Interactions.from_csv(path, sep=_unescape_sep(sep), header=header, duplicates=duplicates,
                                 encoding=encoding, **cols)


def load_model(path: str) -> Any:
    """Any fastrec model file (``fastrec.load``)."""
    from ..persistence import load
    _existing_file(path, "model file")
    return load(path)


def read_id_file(path: str, what: str = "ids") -> list[str]:
    """Ids listed one per line; blank lines and lines starting with ``#`` are skipped."""
    _existing_file(path, f"file of {what}")
    with open(path, encoding="utf-8-sig") as fh:
        ids = [line.strip() for line in fh]
    ids = [value for value in ids if value and not value.startswith("#")]
    if not ids:
        raise ValueError(f"{path} lists no {what} (expected one id per line)")
    return ids


# ------------------------------------------------------------------ ids
def uses_raw_ids(model: Any) -> bool:
    """Whether the model has raw user and item ids (fitted from ``fastrec.Interactions``).

    Without them, ids on the command line and in the output are indices.
    """
    return model.user_map_ is not None and model.item_map_ is not None


def _id_map(model: Any, side: str) -> IdMap | None:
    if not uses_raw_ids(model):
        return None
    return model.user_map_ if side == "users" else model.item_map_


def _as_integers(texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Texts as int64, and the mask of those that are integers within int64.

    Integer ids in a CSV are read as integers (so ``007`` is 7); the same here.
    """
    values = np.zeros(texts.size, dtype=np.int64)
    parsed = np.zeros(texts.size, dtype=bool)
    for pos, text in enumerate(texts.tolist()):
        try:
            value = int(text)
        except ValueError:
            continue
        if _INT64.min <= value <= _INT64.max and "_" not in text:
            values[pos], parsed[pos] = value, True
    return values, parsed


def model_ids(model: Any, side: str, texts: Iterable[str], what: str, skip_unknown: bool = False
              ) -> np.ndarray:
    """The model's ids for ids typed as text, ready for its ``raw_ids`` API.

    Raw ids (int64 or text, like the model's id map) for a model with raw ids;
    indices for one without.  Ids the model does not know raise ``KeyError``
    naming them, or are left out with ``skip_unknown``.  ``what`` names the
    ids in messages (``"user"``, ``"candidate item"``...).
    """
    id_map = _id_map(model, side)
    texts = np.asarray(list(texts), dtype=str)
    n = model.n_users_ if side == "users" else model.n_items_
    if id_map is not None and id_map.labels.dtype.kind != "i":
        values, known = texts, np.asarray(id_map.to_index(texts, unknown="mask")) >= 0
    else:
        values, known = _as_integers(texts)
        if id_map is None:
            known &= (values >= 0) & (values < n)
        else:
            known[known] = np.asarray(id_map.to_index(values[known], unknown="mask")) >= 0
    if not known.all() and not skip_unknown:
        missing = texts[~known]
        shown = ", ".join(repr(str(v)) for v in missing[:5])
        more = f" and {missing.size - 5} more" if missing.size > 5 else ""
        hint = "" if id_map is not None else f" (this model has no raw ids: ids are indices 0..{n - 1})"
        raise KeyError(f"unknown {what} id(s): {shown}{more}; the model knows {n:,} {side}{hint}")
    return values[known]


def history_row(model: Any, items: np.ndarray) -> sp.csr_matrix:
    """A new user's interactions as a 1 x n_items row (weight 1 per listing; repeats add up).

    ``items`` are ids from ``model_ids(model, "items", ...)``.
    """
    id_map = _id_map(model, "items")
    index = np.asarray(items if id_map is None else id_map.to_index(items), dtype=np.int32)
    if index.size == 0:
        raise ValueError("the history names no item the model knows: nothing to recommend from")
    row = sp.csr_matrix((np.ones(index.size, dtype=np.float32), (np.zeros(index.size, dtype=np.int32), index)),
                        shape=(1, model.n_items_))
    row.sum_duplicates()
    return row
