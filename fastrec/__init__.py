"""fastrec: fast recommendations from implicit feedback.

The public API, in one place.  Serving needs only the models, so the parts
that pull in Numba or pandas (``evaluation``, ``model_selection``,
``datasets``, ``rerank``) are imported on first use: ``import fastrec`` followed by
``fastrec.ALS.load(path).recommend(...)`` stays light.  ``fastrec.distributed``
(Dask, the optional ``distributed`` extra) loads the same way, and is left out
of ``__all__`` so that ``from fastrec import *`` works without Dask.
"""
from __future__ import annotations

import importlib
import logging
from typing import Any

from ._version import __version__
from .exceptions import ModelFormatError, NotFittedError
from .kernels import kernel_variant

logging.getLogger("fastrec").addHandler(logging.NullHandler())  # messages are the application's to show

# name -> module that defines it, imported on first access.  The models too: a process that imports
# one submodule (a Dask worker unpickling a DaskALS task) then loads only what that module needs
# (no SciPy for a CG fit; see fastrec/distributed/_tasks.py)
_LAZY = {
    "ALS": "fastrec.models.als",
    "BPR": "fastrec.models.bpr",
    "EASE": "fastrec.models.ease",
    "ItemKNN": "fastrec.models.knn",
    "FactorModel": "fastrec.models.factors",
    "Recommender": "fastrec.models.base",
    "Interactions": "fastrec.data.interactions",
    "Features": "fastrec.data.features",
    "load": "fastrec.persistence",
    "available_cpus": "fastrec.utils.threads",
    "datasets": "fastrec.datasets",
    "evaluation": "fastrec.evaluation",
    "model_selection": "fastrec.model_selection",
    "rerank": "fastrec.rerank",
    "distributed": "fastrec.distributed",
    "evaluate": "fastrec.evaluation",
    "ranking_metrics": "fastrec.evaluation",
    "random_split": "fastrec.evaluation",
    "per_user_split": "fastrec.evaluation",
    "leave_last_k_out": "fastrec.evaluation",
    "temporal_split": "fastrec.evaluation",
    "user_split": "fastrec.evaluation",
    "grid_search": "fastrec.model_selection",
    "random_search": "fastrec.model_selection",
}

__all__ = [
    "ALS",
    "BPR",
    "EASE",
    "ItemKNN",
    "FactorModel",
    "Recommender",
    "Interactions",
    "Features",
    "load",
    "datasets",
    "NotFittedError",
    "ModelFormatError",
    "available_cpus",
    "kernel_variant",
    "evaluation",
    "model_selection",
    "rerank",
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


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'fastrec' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    value = module if module_name == f"fastrec.{name}" else getattr(module, name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
