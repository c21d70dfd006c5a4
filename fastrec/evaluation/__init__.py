"""Offline evaluation: train/test splits, ranking metrics at k and beyond-accuracy metrics.

Typical use::

    from fastrec import ALS
    from fastrec.evaluation import per_user_split, evaluate

    train, test = per_user_split(X, test_fraction=0.2, random_state=0)
    model = ALS(factors=64).fit(train)
    evaluate(model, train, test, k=10)
    # {'precision': ..., 'recall': ..., 'map': ..., 'ndcg': ..., 'mrr': ...,
    #  'hit_rate': ..., 'n_users_evaluated': ..., 'n_users_skipped': ...}

Metric definitions, for a user with relevant (positive test) set R and the
first k ranked ids (``-1`` padding never counts as a hit):

- ``precision`` = hits / k (also when fewer than k ids are listed);
- ``recall`` = hits / |R|;
- ``map``: average precision at k, the sum of precision@i over the hit
  positions i, divided by min(k, |R|);
- ``ndcg``: binary-relevance DCG (``1 / log2(position + 1)`` per hit) over the
  ideal DCG of min(k, |R|) hits;
- ``mrr``: 1 / position of the first hit (0 without hits);
- ``hit_rate``: 1 if any hit;
- ``auc``: computed from the ranked list alone.  Listed items rank above all
  unlisted ones, and unlisted items tie among themselves (a tie counts one
  half).  Negatives are the items outside R, less the user's training items
  when ``exclude_train`` (they could not be recommended).  It equals the exact
  AUC of the model's scores when the list covers every rankable item, and
  approaches it as k grows.

Beyond-accuracy metrics (``coverage``, ``gini``, ``popularity``,
``test_popularity``, ``long_tail``, ``novelty``, ``diversity``) are described
in ``fastrec.evaluation.beyond``; the popularity-based ones need ``train``, and
``diversity`` needs item feature vectors (a model's item factors by default).

Calibration, popularity-bias and group-exposure metrics of the lists
(``miscalibration``, ``aplt``, ``arp``, ``exposure_share``, ``fair_share``)
are functions in ``fastrec.evaluation.fairness``; ``evaluate(..., rerank=R)``
scores re-ranked lists (``fastrec.rerank``) and ``tradeoff`` sweeps a
re-ranker's tradeoff against ndcg.

Users without positive test interactions are skipped and counted in
``n_users_skipped``.  Summary values are means over the evaluated users.

Published protocols, so papers' tables can be checked directly:

- strong generalisation (Liang et al. 2018; EASE, iALS):
  ``strong_generalization_split`` holds out whole users, and
  ``evaluate_strong_generalization`` folds them in without refit and reports
  Recall@k over min(k, |relevant|) and NDCG@100 (``fastrec.evaluation.protocols``);
- leave-one-out with sampled negatives (He et al. 2017, NCF):
  ``load_ncf_negatives`` reads NCF's negatives file, ``sample_negatives``
  draws such cases, and ``evaluate_sampled`` reports HR@k and NDCG@k
  (``fastrec.evaluation.sampled``).
"""
from .evaluate import ALL_METRICS, DEFAULT_METRICS, evaluate, ranking_metrics
from .fairness import aplt, arp, exposure_share, fair_share, miscalibration
from .protocols import (StrongGeneralizationSplit, evaluate_strong_generalization, recall_ndcg,
                        strong_generalization_split)
from .sampled import SampledNegatives, evaluate_sampled, load_ncf_negatives, load_ncf_ratings, sample_negatives
from .splits import (cold_item_split, cold_user_split, leave_last_k_out, per_user_split, random_split,
                     temporal_split, user_split)
from .tradeoff import tradeoff

__all__ = [
    "evaluate",
    "ranking_metrics",
    "random_split",
    "per_user_split",
    "leave_last_k_out",
    "temporal_split",
    "user_split",
    "cold_user_split",
    "cold_item_split",
    "ALL_METRICS",
    "DEFAULT_METRICS",
    "miscalibration",
    "aplt",
    "arp",
    "exposure_share",
    "fair_share",
    "tradeoff",
    "strong_generalization_split",
    "evaluate_strong_generalization",
    "StrongGeneralizationSplit",
    "recall_ndcg",
    "load_ncf_negatives",
    "load_ncf_ratings",
    "sample_negatives",
    "evaluate_sampled",
    "SampledNegatives",
]
