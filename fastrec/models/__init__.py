"""The estimators.  Each fits through ``Recommender``'s fit template and serves
through its one serving API."""
from __future__ import annotations

import importlib
from typing import Any

# imported on first access, so that importing one submodule (``fastrec.models.ials`` on a Dask
# worker) does not load every model and SciPy
_WHERE = {"ALS": "als", "BPR": "bpr", "EASE": "ease", "FactorModel": "factors", "ItemKNN": "knn",
          "Fitted": "base", "Recommender": "base", "FittedState": "state"}

__all__ = ["ALS", "BPR", "EASE", "FactorModel", "ItemKNN", "Fitted", "FittedState", "Recommender"]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'fastrec.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
