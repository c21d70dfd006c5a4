"""Re-ranking for calibration, popularity bias, diversity and group fairness.

Each re-ranker takes each user's candidate list (ids and scores from any
fastrec model) and returns the final top-n, greedily, in a compiled loop over
users (Numba, ``parallel=True``).  Use them through serving or evaluation::

    from fastrec.rerank import Calibrated
    ids, scores = model.recommend(users, n=10, rerank=Calibrated(genres, tradeoff=0.5))
    fastrec.evaluate(model, train, test, k=10, rerank=Calibrated(genres))

or directly on candidates with ``R.rerank(model, users, ids, scores, n)``.

- ``Calibrated``: the list's genre mix follows the user's (Steck 2018);
- ``PopularityDebias``: xQuAD over head and long-tail items (Abdollahpouri et al. 2019);
- ``MMR``: maximal marginal relevance (intra-list diversity);
- ``FairTopK``: FA*IR ranked group fairness (Zehlike et al. 2017), with ``fair_table``.

``tradeoff=0`` returns exactly the model's own list.
"""
from .base import Reranker
from .calibrated import Calibrated
from .fair import FairTopK, fair_table
from .mmr import MMR
from .popularity import PopularityDebias
from .spec import parse_reranker

__all__ = ["Reranker", "Calibrated", "PopularityDebias", "MMR", "FairTopK", "fair_table", "parse_reranker"]
