"""BPR/WARP with side features: LightFM's feature-sum model on fastrec's SGD kernel.

Kula, "Metadata Embeddings for User and Item Cold-start Recommendations"
(2015).  A user's vector is ``p_u = sum_j A[u, j] E[j]`` over its features and
an item's ``q_i = sum_j B[i, j] F[j]``, with bias ``b_i = sum_j B[i, j] c[j]``;
the score is ``p_u . q_i + b_i`` (a user bias would cancel in every pairwise
loss).  A side fitted without features is its identity matrix, so only its own
vectors are learned.  ``ext/_sgd_features.pxi`` trains the embeddings with the
same sampling, losses, schedules and Hogwild threads as the plain model; the
plain kernel is left as it was, so a fit without features costs what it did.

After training, the composed vectors ``A E``, ``B F`` and biases ``B c`` are
the model's user and item factors, so serving is unchanged; the embeddings are
kept (``SideFeatures.factors``/``bias``) to score new rows from their features.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..kernels import load_kernel
from ..utils.progress import Progress
from .base import Fitted
from .side import SideFeatures

__all__ = ["fit_feature_sum", "FEATURE_REGULARIZATION", "FEATURE_LEARNING_RATE"]

# regularization="auto" for the side features of a side WITHOUT identity features (tuned for
# cold start).  Their embeddings are touched far more often than a row's own vector, so the
# per-touch penalty of the plain model (0.4 for WARP with adagrad) shrinks them to nothing:
# item cold start on MovieLens 1M (bench/bench_features.py) gives ndcg@10 0.18 at 0.4, 0.26 at
# 0.05; with unnormalised item features (the best configuration there) 0.312 / AUC 0.791 at
# 0.03, 0.314 / 0.792 at 0.02, 0.317 / 0.793 at 0.01 (3 seeds) and 0.318 / 0.792 at 0.001.
# A side WITH identity features keeps the plain model's penalty for every feature: each
# row with interactions is carried by its own vector and the side features only fill in, so
# warm users keep the plain model's quality (ndcg@10 -0.004 at 0.4 on a random split; -0.033
# with these cold-start penalties; bench/RESULTS.md, issue 13).  The kernel multiplies each
# penalty by the feature's value in the row (the decay is weighted like the gradient), so these
# are the penalties of a feature of weight 1.
FEATURE_REGULARIZATION = {"user": 0.001, "item": 0.01}
# learning_rate="auto" for WARP with adagrad in a fit with side features (the plain model's is
# 0.05).  Each row's vector is a sum of embeddings whose adagrad accumulators grow at very
# different rates (a shared feature is touched by thousands of rows), and at 0.05 the sum is
# under-trained after 30 epochs: on MovieLens 1M warm users with user + item features + identity
# lose 0.0056 ndcg@10 to the plain model at 0.05 and gain 0.0025 at 0.08 (3 seeds; the plain
# model: 0.4203 at 0.05, 0.4204 at 0.08), and item cold start is the same at both (ndcg@10 0.318,
# AUC 0.7939 / 0.7938; bench/RESULTS.md, issue 13).
FEATURE_LEARNING_RATE = 0.08


def _identity(n: int, dtype: Any) -> sp.csr_matrix:
    return sp.csr_matrix((np.ones(n, dtype=dtype), np.arange(n, dtype=np.int32), np.arange(n + 1, dtype=np.int64)),
                         shape=(n, n))


def _penalties(side: SideFeatures | None, n_features: int, plain: float, given: Any, dtype: Any,
               which: str) -> np.ndarray:
    """Each feature's weight decay: the plain model's, except that with ``regularization="auto"``
    the side features of a side without identity features get ``FEATURE_REGULARIZATION[which]``."""
    out = np.full(n_features, plain, dtype=dtype)
    if side is not None and isinstance(given, str) and side.n_side == side.n_features:  # "auto", no identity
        out[:side.n_side] = FEATURE_REGULARIZATION[which]
    return out


def fit_feature_sum(model: Any, positives: Any, shape: tuple[int, int], params: dict[str, Any],
                    user_side: SideFeatures | None, item_side: SideFeatures | None, callback: Any) -> Fitted:
    """Train the feature-sum model; ``model`` is the BPR instance (losses, hints, epochs loop)."""
    from .bpr import _LOSSES, _rank_weights
    if (isinstance(model.learning_rate, str) and params["loss"] == "warp"
            and params["learning_schedule"] == "adagrad"):  # learning_rate="auto"
        params = {**params, "learning_rate": FEATURE_LEARNING_RATE}
    dtype, f = np.dtype(params["dtype"]), params["factors"]
    n_users, n_items = shape
    A = user_side.matrix if user_side is not None else _identity(n_users, dtype)
    B = item_side.matrix if item_side is not None else _identity(n_items, dtype)
    rng = np.random.default_rng(params["random_state"])
    # drawn like the plain model's factors: identity features reproduce it
    E = ((rng.random((A.shape[1], f)) - 0.5) / f).astype(dtype)
    F = ((rng.random((B.shape[1], f)) - 0.5) / f).astype(dtype)
    c = np.zeros(B.shape[1], dtype=dtype)
    rE = _penalties(user_side, A.shape[1], params["regularization"], model.regularization, dtype, "user")
    rF = _penalties(item_side, B.shape[1], params["regularization"], model.regularization, dtype, "item")
    adagrad = params["learning_schedule"] == "adagrad"
    GE, GF, Gc = (np.ones_like(a) if adagrad else a[:0] for a in (E, F, c))
    rank_weight = _rank_weights(n_items, dtype)
    kernel = load_kernel("sgd")
    a_indptr, b_indptr = (M.indptr.astype(np.int64) for M in (A, B))
    a_indices, b_indices = (M.indices.astype(np.int32) for M in (A, B))

    def epoch(seeds: np.ndarray) -> tuple[int, int, int]:
        return kernel.sgd_epoch_features(
            _LOSSES[params["loss"]], positives.indptr, positives.indices, positives.users, positives.weights,
            a_indptr, a_indices, A.data, b_indptr, b_indices, B.data, E, F, c, GE, GF, Gc, rE, rF, rank_weight,
            dtype.type(params["learning_rate"]), positives.nnz,
            params["max_sampled"], params["verify_negative_samples"], seeds, params["num_threads"])

    progress = Progress(params["iterations"], params["loss"].upper(), enabled=params["show_progress"])
    history = model._epochs(params, epoch, (E, F, c), params["iterations"], rng, callback, progress)
    progress.close()
    user_factors = np.ascontiguousarray(A @ E, dtype=dtype)
    item_factors = np.ascontiguousarray(B @ F, dtype=dtype)
    item_bias = np.ascontiguousarray(B @ c, dtype=dtype)
    return Fitted(user_factors, item_factors, item_bias, attributes={"auc_history_": history},
                  user_features=None if user_side is None else replace(user_side, factors=E),
                  item_features=None if item_side is None else replace(item_side, factors=F, bias=c))
