"""Output of the ``fastrec`` command: ranked lists as tables, CSV or JSON lines; key-value reports.

Writers take an open text stream; ``output_stream`` gives stdout or a file.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
from typing import Any, Iterator, Sequence, TextIO

import numpy as np

__all__ = ["json_ready", "check_writable", "output_stream", "write_rankings", "write_report"]

# one ranked list: (query id or None for a new user, item ids, scores)
Ranking = tuple[Any, Sequence[Any], Sequence[float]]


def json_ready(value: Any) -> Any:
    """A JSON-safe copy: NumPy scalars and arrays to Python, NaN/inf to None, other objects to str."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
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


def check_writable(path: str) -> None:
    """Fail before the work, not after it, when ``path`` cannot be written."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(2, "the output folder does not exist", folder)
    if os.path.isdir(path):
        raise IsADirectoryError(21, "the output path is a directory", path)


@contextlib.contextmanager
def output_stream(path: str | None, default: TextIO) -> Iterator[TextIO]:
    """``default`` (stdout) when ``path`` is None, else the file at ``path``, opened for writing."""
    if path is None:
        yield default
        return
    check_writable(path)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        yield fh


def write_rankings(out: TextIO, fmt: str, rows: Sequence[Ranking], key: str = "user") -> None:
    """Write ranked items as csv, jsonl or an aligned table.

    ``rows`` holds ``(query_id, item_ids, scores)``; ``key`` names the query
    column (``user`` or ``item``).  A None query (a new user described by
    its history) is null in JSON, empty in CSV and ``-`` in a table.
    """
    if fmt == "jsonl":
        for query, items, scores in rows:
            out.write(json.dumps({key: json_ready(query), "items": json_ready(list(items)),
                                  "scores": [round(float(s), 6) for s in scores]}) + "\n")
        return
    table = [("" if query is None else json_ready(query), rank, json_ready(item), f"{float(score):.6g}")
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
    cells = [tuple(map(str, header))] + [tuple(str(cell) or "-" for cell in row) for row in table]
    widths = [max(len(row[c]) for row in cells) for c in range(len(header))]
    for row in cells:
        out.write("  ".join(cell.rjust(w) if c in (1, 3) else cell.ljust(w)
                            for c, (cell, w) in enumerate(zip(row, widths))).rstrip() + "\n")


def write_report(out: TextIO, report: dict[str, Any], as_json: bool = False) -> None:
    """A report as one JSON object, or as aligned ``key: value`` lines (dicts indented below their key)."""
    if as_json:
        out.write(json.dumps(json_ready(report)) + "\n")
        return
    width = max((len(str(k)) for k in report), default=0) + 2
    for key, value in report.items():
        if isinstance(value, dict):
            out.write(f"{key}:\n")
            inner = max((len(str(k)) for k in value), default=0) + 2
            for name, item in value.items():
                out.write(f"  {str(name) + ':':<{inner}} {_plain(item)}\n")
        else:
            out.write(f"{str(key) + ':':<{width}} {_plain(value)}\n")


def _plain(value: Any) -> str:
    value = json_ready(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "-" if value is None else str(value)
