"""fastrec on a Dask cluster: ALS training and batch recommendation beyond one machine.

Needs the ``distributed`` extra (``pip install 'fastrec[distributed]'``);
``import fastrec`` never imports Dask, this module does.

* ``DaskALS``: ``fastrec.ALS`` trained on the cluster, from a matrix,
  ``Interactions`` or a Dask DataFrame of (user, item, weight) events.
* ``recommend_all``: top-n lists for every user, as a Dask DataFrame or
  Parquet files.
* ``fastrec.model_selection.grid_search``/``random_search`` take ``client=``
  to fit candidates on the workers.
"""
from __future__ import annotations

import importlib
from typing import Any

from ._cluster import ClusterError

__all__ = ["ClusterError", "DaskALS", "recommend_all"]

# imported on first access: a worker unpickling a fit's task imports fastrec.distributed._tasks, and
# with it only what a half-step needs (no SciPy, no estimators)
_WHERE = {"DaskALS": ".als", "recommend_all": ".recommend"}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'fastrec.distributed' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
