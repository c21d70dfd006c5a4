"""Helpers of the ``fastrec`` command: reading data files, building models, writing results.

Everything here raises the library's usual ``ValueError`` / ``KeyError`` /
``OSError`` with a message fit for one line on stderr; ``fastrec.cli`` turns
them into exit codes.
"""
from __future__ import annotations

import csv
import inspect
import io
import json
import math
import os
from typing import Any, Iterable, TextIO

import numpy as np

from ..data.idmap import IdMap
from ..models.als import ALS
from ..models.bpr import BPR
from ..data.interactions import Interactions

__all__ = ["MODEL_CHOICES", "WEIGHTINGS", "read_interactions", "apply_weighting", "build_model",
           "model_defaults", "user_indices", "item_index", "raw_ids", "read_id_file", "write_rankings",
           "json_ready", "describe"]

MODEL_CHOICES = ("als", "bpr", "warp")
WEIGHTINGS = ("raw", "binary", "log1p", "bm25", "tfidf")
_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")

# CLI option -> (estimator parameter, models that take it)
_MODEL_OPTIONS = {
    "factors": ("factors", MODEL_CHOICES),
    "iterations": ("iterations", MODEL_CHOICES),
    "regularization": ("regularization", MODEL_CHOICES),
    "alpha": ("alpha", ("als",)),
    "learning_rate": ("learning_rate", ("bpr", "warp")),
    "threads": ("num_threads", MODEL_CHOICES),
    "seed": ("random_state", MODEL_CHOICES),
}


# ------------------------------------------------------------------ reading
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


def read_interactions(path: str, user_col: str, item_col: str, weight_col: str | None = None,
                      timestamp_col: str | None = None, sep: str = ",", header: bool = True,
                      duplicates: str = "sum") -> Interactions:
    """Interactions from a CSV (any separator, ``.gz`` ok) or Parquet file.

    Parquet needs pandas and pyarrow (``pip install 'fastrec[io]'``).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(2, "no such data file", path)
    if os.path.isdir(path):
        raise IsADirectoryError(21, "the data file is a directory", path)
    if path.lower().endswith(_PARQUET_SUFFIXES):
        if not header:
            raise ValueError("--no-header applies to CSV files only; Parquet columns have names")
        frame = _read_parquet(path)
        return Interactions.from_dataframe(frame, user_col=user_col, item_col=item_col,
                                           weight_col=weight_col, timestamp_col=timestamp_col,
                                           duplicates=duplicates)
    cols = {name: _column(value, header, option) for name, value, option in (
        ("user_col", user_col, "--user-col"), ("item_col", item_col, "--item-col"),
        ("weight_col", weight_col, "--weight-col"), ("timestamp_col", timestamp_col, "--timestamp-col"))}
    return Interactions.from_csv(path, sep=_unescape_sep(sep), header=header, duplicates=duplicates, **cols)


def _read_parquet(path: str) -> Any:
    try:
        import pandas as pd
        import pyarrow  # noqa: F401  (pandas' Parquet engine)
    except ImportError:
        raise ValueError(f"reading Parquet ({path}) needs pandas and pyarrow; install them with "
                         "pip install 'fastrec[io]', or convert the file to CSV") from None
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable Parquet file: {exc}") from exc


def apply_weighting(data: Interactions, weighting: str, threshold: float = 0.0) -> Interactions:
    """The weighting a ``--weighting`` option names (``raw`` keeps the weights)."""
    if weighting == "raw":
        return data
    if weighting == "binary":
        return data.binarize(threshold)
    return getattr(data, weighting)()


def model_defaults(option: str) -> str:
    """The default of a model option for each model that takes it, for ``--help``."""
    param, models = _MODEL_OPTIONS[option]
    values: dict[Any, list[str]] = {}
    for name in models:
        value = inspect.signature(_estimator(name).__init__).parameters[param].default
        values.setdefault(value, []).append(name)
    if len(values) == 1:
        return str(next(iter(values)))
    return ", ".join(f"{value} for {'/'.join(names)}" for value, names in values.items())


def _estimator(model: str) -> type:
    return ALS if model == "als" else BPR


def build_model(model: str, show_progress: bool, **options: Any) -> Any:
    """An unfitted ALS or BPR from CLI options; None options keep the model's defaults.

    Raises ``ValueError`` for an option the chosen model does not take.
    """
    params: dict[str, Any] = {"show_progress": show_progress}
    for option, value in options.items():
        if value is None:
            continue
        param, models = _MODEL_OPTIONS[option]
        if model not in models:
            flag = "--" + option.replace("_", "-")
            raise ValueError(f"{flag} does not apply to --model {model} (it is for --model "
                             f"{' or '.join(models)})")
        params[param] = value
    if model == "als":
        return ALS(**params)
    return BPR(loss=model, **params)


# ---------------------------------------------------------------- raw ids
def _as_integers(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids typed as text as int64, and the mask of those that are integers.

    Integer ids in a CSV are read as integers (so ``007`` is 7); the same here.
    """
    values = np.zeros(raw.size, dtype=np.int64)
    parsed = np.zeros(raw.size, dtype=bool)
    for pos, text in enumerate(raw):
        try:
            values[pos] = int(text)
        except (ValueError, OverflowError):
            continue
        parsed[pos] = True
    return values, parsed


def _lookup(id_map: IdMap | None, raw: np.ndarray, n: int, kind: str, skip_unknown: bool
            ) -> tuple[np.ndarray, np.ndarray]:
    """Indices of raw ids typed on the command line, and the mask of known ones."""
    if id_map is None:  # fitted without raw ids: ids are indices
        idx, parsed = _as_integers(raw)
        idx[~parsed | (idx < 0) | (idx >= n)] = -1
    elif id_map.labels.dtype.kind in "iu":
        query, parsed = _as_integers(raw)
        idx = np.asarray(id_map.to_index(query, unknown="mask"), dtype=np.int64)
        idx[~parsed] = -1
    else:
        idx = np.asarray(id_map.to_index(raw, unknown="mask"), dtype=np.int64)
    known = idx >= 0
    if not known.all() and not skip_unknown:
        missing = raw[~known]
        shown = ", ".join(repr(str(v)) for v in missing[:5])
        more = f" and {missing.size - 5} more" if missing.size > 5 else ""
        hint = "" if id_map is not None else f" (this model has no id map: ids are indices 0..{n - 1})"
        raise KeyError(f"unknown {kind} id(s): {shown}{more}; the model knows {n:,} {kind}s{hint}")
    return idx, known


def user_indices(model: Any, raw: Iterable[str], skip_unknown: bool = False) -> np.ndarray:
    """Indices of users given by their ids as text (unknown ones left out with ``skip_unknown``)."""
    idx, known = _lookup(model.user_map_, np.asarray(list(raw), dtype=str), model.n_users_, "user",
                         skip_unknown)
    return idx[known].astype(np.int32)


def item_index(model: Any, raw: str) -> int:
    """Index of one item id given as text."""
    idx, _ = _lookup(model.item_map_, np.asarray([raw], dtype=str), model.n_items_, "item", False)
    return int(idx[0])


def raw_ids(id_map: IdMap | None, ids: np.ndarray) -> list[Any]:
    """Raw ids (Python ints or str) of indices, for printing; the indices without a map."""
    values = ids if id_map is None else id_map.to_ids(ids)
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def read_id_file(path: str) -> list[str]:
    """Ids listed one per line; blank lines and lines starting with ``#`` are skipped."""
    if os.path.isdir(path):
        raise IsADirectoryError(21, "the users file is a directory", path)
    with open(path, encoding="utf-8") as fh:
        ids = [line.strip() for line in fh]
    ids = [value for value in ids if value and not value.startswith("#")]
    if not ids:
        raise ValueError(f"{path} lists no ids (expected one id per line)")
    return ids


# ---------------------------------------------------------------- writing
def json_ready(value: Any) -> Any:
    """A JSON-safe copy: NumPy scalars to Python, NaN/inf to None, other objects to str."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, type):
        return value.__name__
    return str(value)


def write_rankings(out: TextIO, fmt: str, rows: list[tuple[Any, list[Any], np.ndarray]],
                   key: str = "user") -> None:
    """Write ranked items as csv, jsonl or an aligned table.

    ``rows`` holds ``(query_id, item_ids, scores)``; ``key`` names the query
    column (``user`` or ``item``).
    """
    if fmt == "jsonl":
        for query, items, scores in rows:
            out.write(json.dumps({key: json_ready(query), "items": json_ready(items),
                                  "scores": [round(float(s), 6) for s in scores]}) + "\n")
        return
    table = [(json_ready(query), rank, json_ready(item), f"{float(score):.6g}")
             for query, items, scores in rows
             for rank, (item, score) in enumerate(zip(items, scores), start=1)]
    header = (key, "rank", "item" if key == "user" else "similar_item", "score")
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(table)
        out.write(buffer.getvalue())
        return
    cells = [tuple(map(str, header))] + [tuple(map(str, row)) for row in table]
    widths = [max(len(row[c]) for row in cells) for c in range(len(header))]
    for row in cells:
        out.write("  ".join(cell.rjust(w) if c in (1, 3) else cell.ljust(w)
                            for c, (cell, w) in enumerate(zip(row, widths))).rstrip() + "\n")


def describe(model: Any) -> str:
    """``ALS(factors=64, ...)`` with only the parameters a reader cares about."""
    keep = ("loss", "factors", "iterations", "regularization", "alpha", "learning_rate",
            "regularization_scaling")
    params = model.get_params()
    shown = ", ".join(f"{name}={params[name]!r}" for name in keep if name in params)
    return f"{type(model).__name__}({shown})"
