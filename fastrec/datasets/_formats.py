"""Shared pieces of the dataset loaders: finding files, ratings and movie tables."""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..data.tables import read_columns
from ..utils.validation import check_float, check_path
from ..data.interactions import Interactions

__all__ = ["DataFiles", "ratings_interactions", "read_dat_ratings", "read_dat_movies"]


class DataFiles:
    """Files by name in a directory (or one level below it) or inside a zip archive."""

    def __init__(self, path: Any, name: str = "path"):
        self.path = Path(check_path(path, name))
        if not self.path.exists():
            raise FileNotFoundError(f"{name} {str(self.path)!r} does not exist")
        if self.path.is_dir():
            self._zip_members: list[str] | None = None
        elif zipfile.is_zipfile(self.path):
            with zipfile.ZipFile(self.path) as archive:
                self._zip_members = [m for m in archive.namelist() if not m.endswith("/")]
        else:
            raise ValueError(f"{name} must be a directory or a .zip archive, got {str(self.path)!r}")

    def find(self, filename: str) -> str | None:
        """Where ``filename`` is (a path or archive member), or None."""
        if self._zip_members is None:
            direct = self.path / filename
            if direct.is_file():
                return str(direct)
            nested = sorted(p for p in self.path.glob(f"*/{filename}") if p.is_file())
            return str(nested[0]) if nested else None
        members = sorted((m for m in self._zip_members if m.rsplit("/", 1)[-1] == filename),
                         key=lambda m: (m.count("/"), m))
        return members[0] if members else None

    def read(self, location: str) -> bytes:
        if self._zip_members is None:
            return Path(location).read_bytes()
        with zipfile.ZipFile(self.path) as archive:
            return archive.read(location)

    def label(self, location: str) -> str:
        return location if self._zip_members is None else f"{self.path}:{location}"

    def require(self, *filenames: str) -> list[str]:
        """Locations of all ``filenames``; ``FileNotFoundError`` naming the missing ones."""
        found = [self.find(f) for f in filenames]
        missing = [f for f, loc in zip(filenames, found) if loc is None]
        if missing:
            raise FileNotFoundError(f"{self.path} has no {', '.join(missing)}")
        return found  # type: ignore[return-value]

    def columns(self, location: str, columns: dict[Any, str], **options: Any) -> dict[Any, np.ndarray]:
        return read_columns(self.read(location), columns, label=self.label(location), **options)


def ratings_interactions(users: np.ndarray, items: np.ndarray, ratings: np.ndarray | None,
                         timestamps: np.ndarray | None, min_rating: float | None = None
                         ) -> Interactions:
    """Interactions from rating events; ``min_rating`` keeps ratings >= it (before the id maps)."""
    if min_rating is not None:
        min_rating = check_float(min_rating, "min_rating")
        keep = ratings >= min_rating
        if not keep.any():
            raise ValueError(f"no rating is >= min_rating={min_rating}")
        users, items, ratings = users[keep], items[keep], ratings[keep]
        timestamps = None if timestamps is None else timestamps[keep]
    return Interactions.from_arrays(users, items, ratings, timestamps, duplicates="last")


def read_dat_ratings(source: bytes, label: str, item_kind: str = "id") -> dict[int, np.ndarray]:
    """Columns 0-3 (user, item, rating, timestamp) of a ``user::item::rating::time`` file."""
    return read_columns(source, {0: "id", 1: item_kind, 2: "float", 3: "float"}, sep="::",
                        header=False, quoting=False, label=label)


def read_dat_movies(source: bytes, label: str, item_kind: str = "id",
                    encoding: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, titles, genres) of a ``movie::title::Genre|Genre`` file.

    ``encoding=None`` tries UTF-8, then Latin-1.
    """
    table = read_columns(source, {0: item_kind, 1: "str", 2: "str"}, sep="::", header=False,
                         quoting=False, encoding=encoding, label=label)
    return table[0], table[1], table[2]
