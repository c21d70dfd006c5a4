"""``Table``: named columns of equal length, the one result type whatever is installed."""
from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import numpy as np

__all__ = ["Table"]


class Table(Mapping):
    """A read-only mapping of column name -> 1-D NumPy array, all of one length.

    It is the same type with or without pandas; ``to_pandas()`` (and
    ``to_polars()``) give a DataFrame for those who want one.  Index it by
    column name (``table["ndcg"]``); ``records()`` gives one dict per row.
    """

    def __init__(self, columns: Mapping[str, Any]):
        arrays = {str(name): np.asarray(values) for name, values in columns.items()}
        lengths = {arr.shape[0] if arr.ndim else -1 for arr in arrays.values()}
        if len(lengths) > 1 or -1 in lengths:
            raise ValueError(f"table columns must be 1-D and of one length, got lengths {sorted(lengths)}")
        for arr in arrays.values():
            arr.flags.writeable = False
        self._columns = arrays

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]]) -> "Table":
        """Rows as dicts; a key missing from a row is None there (columns in first-seen order)."""
        names = list(dict.fromkeys(name for row in records for name in row))
        return cls({name: _column([row.get(name) for row in records]) for name in names})

    def __getitem__(self, name: str) -> np.ndarray:
        return self._columns[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        """The number of columns (a Mapping's length); ``n_rows`` counts rows."""
        return len(self._columns)

    @property
    def columns(self) -> list[str]:
        return list(self._columns)

    @property
    def n_rows(self) -> int:
        return next(iter(self._columns.values())).shape[0] if self._columns else 0

    def records(self) -> list[dict[str, Any]]:
        """One dict per row, with Python scalars."""
        lists = {name: arr.tolist() for name, arr in self._columns.items()}
        return [{name: values[i] for name, values in lists.items()} for i in range(self.n_rows)]

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` with the same columns (needs pandas)."""
        from ..data.tables import require_pandas
        return require_pandas("Table.to_pandas").DataFrame({k: np.array(v) for k, v in self._columns.items()})

    def to_polars(self) -> Any:
        """A ``polars.DataFrame`` with the same columns (needs polars)."""
        try:
            import polars as pl
        except ImportError as exc:
            raise ImportError("Table.to_polars needs polars: pip install polars") from exc
        return pl.DataFrame({k: np.array(v) for k, v in self._columns.items()})

    def __repr__(self) -> str:
        return f"Table({self.n_rows} rows; columns {', '.join(self._columns)})"


def _column(values: list[Any]) -> np.ndarray:
    """A column from Python values: numeric when they all are, else objects kept as given."""
    try:
        arr = np.asarray(values)
    except ValueError:
        arr = None
    if arr is None or arr.dtype == object or arr.ndim != 1:
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
    return arr
