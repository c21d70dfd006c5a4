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

from ._cluster import ClusterError
from .als import DaskALS
from .recommend import recommend_all

__all__ = ["ClusterError", "DaskALS", "recommend_all"]
