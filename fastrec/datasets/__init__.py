"""Datasets: loaders, the embedded demo data and a synthetic generator."""
from .movielens import MOVIELENS_VARIANTS, load_ml1m_implicit, load_movielens
from .movietweetings import load_demo, load_movietweetings
from .synthetic import make_movielens20m_like, make_synthetic

__all__ = [
    "MOVIELENS_VARIANTS",
    "load_demo",
    "load_ml1m_implicit",
    "load_movielens",
    "load_movietweetings",
    "make_movielens20m_like",
    "make_synthetic",
]
