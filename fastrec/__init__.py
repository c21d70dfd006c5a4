"""fastrec: fast recommendations from implicit feedback.

The public API, in one place.
"""
from ._kernels import kernel_variant
from ._threads import available_cpus
from .als import ALS
from .bpr import BPR
from .exceptions import ModelFormatError, NotFittedError
from .interactions import Interactions
from . import datasets
from . import evaluation, model_selection
from .evaluation import (evaluate, leave_last_k_out, per_user_split, random_split, ranking_metrics,
                         temporal_split, user_split)
from .model_selection import grid_search, random_search

__version__ = "0.1.0"

__all__ = [
    "ALS",
    "BPR",
    "Interactions",
    "datasets",
    "NotFittedError",
    "ModelFormatError",
    "available_cpus",
    "kernel_variant",
    "evaluation",
    "model_selection",
    "evaluate",
    "ranking_metrics",
    "random_split",
    "per_user_split",
    "leave_last_k_out",
    "temporal_split",
    "user_split",
    "grid_search",
    "random_search",
    "__version__",
]
