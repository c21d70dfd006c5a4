"""Datasets: loaders, the embedded demo data and a synthetic generator.

The generator compiles with Numba, so it is imported on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

from .movielens import MOVIELENS_VARIANTS, item_genres, load_ml1m_implicit, load_movielens
from .movietweetings import load_demo, load_movietweetings

__all__ = [
    "MOVIELENS_VARIANTS",
    "item_genres",
    "load_demo",
    "load_ml1m_implicit",
    "load_movielens",
    "load_movietweetings",
    "make_movielens20m_like",
    "make_synthetic",
]

_LAZY = {"make_synthetic": ".synthetic", "make_movielens20m_like": ".synthetic"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'fastrec.datasets' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value
