"""Pairwise ranking matrix factorisation with item biases: BPR and WARP losses.

Rendle, Freudenthaler, Gantner and Schmidt-Thieme, "BPR: Bayesian
Personalized Ranking from Implicit Feedback", UAI 2009; Weston, Bengio and
Usunier, "WSABIE: Scaling Up To Large Vocabulary Image Annotation", IJCAI 2011
(WARP).  Trained by Hogwild SGD in ``ext/_sgd.pyx``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from .base import Fitted
from .factors import FactorModel
from .state import FittedState
from ..kernels import load_kernel
from ..utils.progress import Progress
from .state import non_finite
from ..utils.validation import (check_bool, check_callback, check_choice, check_float, check_int,
                          check_interactions)

__all__ = ["BPR"]

_LOSSES = {"bpr": 0, "warp": 1}
_SCHEDULES = ("auto", "sgd", "adagrad")
# "auto" settings, measured on MovieLens 1M (bench/bench_bpr.py).  WARP needs
# adagrad: its rank weights scale steps by 1 to ~10, which plain SGD turns into
# exploding popular-item biases; BPR does as well with SGD at about half the
# cost per step.  Under adagrad the penalty's gradient is normalised like the
# rest, so WARP wants a much larger one.
_AUTO_SCHEDULE = {"bpr": "sgd", "warp": "adagrad"}
_AUTO_REGULARIZATION = {("warp", "adagrad"): 0.4}
_DEFAULT_REGULARIZATION = 0.01
_DEFAULT_LEARNING_RATE = 0.05

Callback = Callable[[int, float, float], Any]


@dataclass(frozen=True)
class _Positives:
    """The kernel's view of an interaction matrix: positives only, one user per entry."""

    indptr: np.ndarray   # int64
    indices: np.ndarray  # int32, sorted within rows
    users: np.ndarray    # int32, the row of each entry
    weights: np.ndarray  # the positive values, or empty when they are all 1

    @classmethod
    def from_csr(cls, csr: sp.csr_matrix) -> "_Positives":
        # negative values ("thumbs down") are not positives; they stay eligible as negatives
        keep = csr.data > 0
        kept_before = np.zeros(csr.nnz + 1, dtype=np.int64)
        np.cumsum(keep, out=kept_before[1:])
        indptr = kept_before[csr.indptr]
        counts = np.diff(indptr)
        data = csr.data[keep]
        weights = data if (data != 1).any() else data[:0]
        users = np.repeat(np.arange(csr.shape[0], dtype=np.int32), counts)
        return cls(indptr, np.ascontiguousarray(csr.indices[keep], dtype=np.int32), users,
                   np.ascontiguousarray(weights))

    @property
    def nnz(self) -> int:
        return int(self.indices.size)


def _rank_weights(n_items: int, dtype: np.dtype) -> np.ndarray:
    """WARP's L(k) = sum_{i <= k} 1/i for k in [0, n_items)."""
    table = np.zeros(max(n_items, 1), dtype=np.float64)
    table[1:] = np.cumsum(1.0 / np.arange(1, max(n_items, 1)))
    return table.astype(dtype)


class BPR(FactorModel):
    """Matrix factorisation for ranking, with item biases, trained by Hogwild SGD.

    Scores are ``user_factors_[u] . item_factors_[i] + item_bias_[i]``.  Each
    step samples a positive interaction uniformly (so active users and popular
    items are visited in proportion to their interactions), then negatives
    uniformly over the items:

    * ``loss="bpr"``: Bayesian Personalised Ranking, one negative per positive,
      maximising ``ln sigmoid(score_pos - score_neg)``.
    * ``loss="warp"``: Weighted Approximate-Rank Pairwise.  Negatives are drawn
      until one violates the margin (``score_neg > score_pos - 1``), at most
      ``max_sampled`` times; the hinge step is weighted by
      ``L(floor((n_items - 1) / n_drawn))`` with ``L(k) = sum_{i<=k} 1/i``,
      an estimate of how far down the positive ranks.

    Interaction values: a positive value ``w`` multiplies that interaction's
    gradient (weights far from 1 act like a larger learning rate; binarise or
    ``log1p`` heavy counts).  Negative values ("thumbs down") are removed from
    the positives and treated like unobserved items: they can be drawn as
    negatives and are never rejected by ``verify_negative_samples``.  All
    stored items, liked or not, are excluded by ``recommend``.

    Parameters
    ----------
    factors : int
        Latent dimensions.
    learning_rate : float or "auto"
        SGD step size (with adagrad, the step before per-parameter scaling).
        ``"auto"`` is 0.05, except for WARP with adagrad in a fit with side
        features, which takes 0.08
        (``fastrec.models.hybrid.FEATURE_LEARNING_RATE``): the feature-sum
        model is under-trained after 30 epochs at 0.05 (warm users on
        MovieLens 1M lose 0.006 ndcg@10 to the plain model at 0.05 and gain
        0.003 at 0.08; the plain model is the same at both; bench/RESULTS.md,
        issue 13).
    regularization : float or "auto"
        L2 penalty; every step adds its gradient (``regularization * param``)
        to the parameters it touches.  ``"auto"`` is 0.4 for WARP with
        adagrad and 0.01 otherwise (the best measured on MovieLens 1M).  In a
        fit with side features it stays the penalty of every feature of a side
        with identity features (warm rows keep the plain model's quality); a
        side without identity features, tuned for cold start, uses 0.001 for
        user and 0.01 for item features
        (``fastrec.models.hybrid.FEATURE_REGULARIZATION``).  A number applies
        to every parameter.  A feature's decay at each step is its penalty
        times its value in the row (its gradient is weighted the same way), so
        a feature carrying a quarter of a normalised row is held back a
        quarter as hard.
    iterations : int
        Epochs; each takes as many samples as there are positive interactions.
    loss : {"bpr", "warp"}
    max_sampled : int
        WARP: most negatives drawn per positive.  Ignored by BPR.
    learning_schedule : {"auto", "sgd", "adagrad"}
        Constant step size, or adagrad's per-parameter steps (accumulators
        start at 1, so the first steps equal SGD's).  ``"auto"`` picks SGD for
        BPR and adagrad for WARP, the best of each on MovieLens 1M (adagrad
        costs about 1.8x per step for its extra reads and writes).
    num_threads : int
        0 uses every CPU this process may use.  More than one thread updates
        shared factors without locks (Hogwild), so only ``num_threads=1`` with a
        fixed ``random_state`` is reproducible bit for bit.
    random_state : int, numpy Generator or None
        Seeds the initial factors and every thread's sampler.
    verify_negative_samples : bool
        Reject negatives the user interacted with (a binary search per draw
        for BPR, per margin violator for WARP).
    dtype : float32 or float64
    show_progress : bool
        Print a progress bar with the training AUC to stderr.

    Attributes
    ----------
    user_factors_, item_factors_, item_bias_ : ndarray
    auc_history_ : list of float
        Sampled training AUC of each epoch: the fraction of the epoch's
        (positive, first negative) pairs the model ordered correctly when it
        drew them.
    """

    _takes_features = True

    def __init__(self, factors: int = 64, learning_rate: float | str = "auto", regularization: float | str = "auto",
                 iterations: int = 30, loss: str = "bpr", max_sampled: int = 10,
                 learning_schedule: str = "auto", num_threads: int = 0, random_state: Any = None,
                 verify_negative_samples: bool = True, dtype: Any = np.float32,
                 show_progress: bool = False):
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.loss = loss
        self.max_sampled = max_sampled
        self.learning_schedule = learning_schedule
        self.num_threads = num_threads
        self.random_state = random_state
        self.verify_negative_samples = verify_negative_samples
        self.dtype = dtype
        self.show_progress = show_progress

    # ----------------------------------------------------------- validation
    def _check_params(self) -> dict[str, Any]:
        params = {
            **self._check_common_params(),
            "learning_rate": (_DEFAULT_LEARNING_RATE if isinstance(self.learning_rate, str)
                              and self.learning_rate == "auto" else
                              check_float(self.learning_rate, "learning_rate", minimum=0.0, strict_minimum=True)),
            "loss": check_choice(self.loss, "loss", _LOSSES),
            "max_sampled": check_int(self.max_sampled, "max_sampled", minimum=1),
            "learning_schedule": check_choice(self.learning_schedule, "learning_schedule", _SCHEDULES),
            "verify_negative_samples": check_bool(self.verify_negative_samples,
                                                  "verify_negative_samples"),
        }
        if params["learning_schedule"] == "auto":
            params["learning_schedule"] = _AUTO_SCHEDULE[params["loss"]]
        if isinstance(self.regularization, str) and self.regularization == "auto":
            params["regularization"] = _AUTO_REGULARIZATION.get(
                (params["loss"], params["learning_schedule"]), _DEFAULT_REGULARIZATION)
        else:
            params["regularization"] = check_float(self.regularization, "regularization", minimum=0.0)
        return params

    # ------------------------------------------------------------ training
    def _run_epochs(self, params: dict[str, Any], positives: _Positives, user_factors: np.ndarray,
                    item_factors: np.ndarray, item_bias: np.ndarray, epochs: int,
                    rng: np.random.Generator, update_items: bool,
                    callback: Callback | None = None, progress: Progress | None = None) -> list[float]:
        """Train in place for ``epochs``; returns each epoch's sampled training AUC."""
        dtype = user_factors.dtype
        adagrad = params["learning_schedule"] == "adagrad"
        empty_rows = np.empty((0, user_factors.shape[1]), dtype=dtype)
        grad_users = np.ones_like(user_factors) if adagrad else empty_rows
        grad_items = np.ones_like(item_factors) if adagrad and update_items else empty_rows
        grad_bias = np.ones_like(item_bias) if adagrad and update_items else item_bias[:0]
        rank_weight = _rank_weights(item_factors.shape[0], dtype)
        kernel = load_kernel("sgd")
        # verifying a negative reads one word of this filter (built once, ~2 bytes per
        # positive) instead of searching the user's row: the search stays for the few
        # pairs the filter cannot rule out, so the draws and the result are the same
        positive_filter = (kernel.positives_filter(positives.indptr, positives.indices, positives.users)
                           if params["verify_negative_samples"] else None)

        def epoch(seeds: np.ndarray) -> tuple[int, int, int]:
            return kernel.sgd_epoch(
                _LOSSES[params["loss"]], positives.indptr, positives.indices, positives.users,
                positives.weights, user_factors, item_factors, item_bias,
                grad_users, grad_items, grad_bias, rank_weight,
                dtype.type(params["learning_rate"]), dtype.type(params["regularization"]),
                positives.nnz, params["max_sampled"], params["verify_negative_samples"],
                update_items, seeds, params["num_threads"], positive_filter)

        trained = (user_factors,) + ((item_factors, item_bias) if update_items else ())
        return self._epochs(params, epoch, trained, epochs, rng, callback, progress)

    def _epochs(self, params: dict[str, Any], epoch: Callable[[np.ndarray], tuple[int, int, int]],
                trained: tuple[np.ndarray, ...], epochs: int, rng: np.random.Generator,
                callback: Callback | None, progress: Progress | None) -> list[float]:
        """Run ``epoch(seeds)`` ``epochs`` times (one seed per thread); the sampled AUC of each."""
        history: list[float] = []
        start = time.perf_counter()
        for number in range(epochs):
            seeds = rng.integers(0, np.iinfo(np.uint64).max, size=params["num_threads"], dtype=np.uint64,
                                 endpoint=True)
            correct, compared, _ = epoch(seeds)
            # checked every epoch (one pass over the factors): a diverged run stops
            # at once instead of finishing its epochs on NaN
            if non_finite(*trained):
                raise FloatingPointError(f"{type(self).__name__} training diverged at epoch {number + 1}: "
                                         f"the factors became NaN or infinite; {self._divergence_hint(params)}. "
                                         "The model keeps its previous fitted state.")
            auc = correct / compared if compared else float("nan")
            history.append(auc)
            if progress is not None:
                progress.update(auc=auc)
            if callback is not None:
                callback(number, time.perf_counter() - start, auc)
        return history

    def fit(self, X: Any, callback: Callback | None = None, user_features: Any = None,
            item_features: Any = None) -> "BPR":
        """Learn factors and item biases from a users x items matrix, optionally with side features.

        Parameters
        ----------
        X : scipy.sparse matrix (any format), 2-D array or ``fastrec.Interactions``
            Interactions, users x items (see the class docstring for how values
            are used).  It is never modified.
        callback : callable(epoch, elapsed_seconds, training_auc), optional
            Called after every epoch with that epoch's sampled training AUC.
        user_features, item_features : fastrec.Features or sparse matrix, optional
            Side features: (users x user features) and (items x item features),
            non-negative.  A side with features is LightFM's feature-sum
            model: its rows' vectors are the weighted sums of their features'
            embeddings (and items' biases the sums of feature biases), learned
            by the same loss (``fastrec.models.hybrid``).  ``Features`` are
            aligned by raw id with ``X``'s maps (rows they add with
            ``unknown="append"`` are new users or items with no interactions);
            matrices must have one row per user or item of ``X``, in order.
            Users and items with features but no interactions are scored from
            their features (cold start); see also ``recommend(user_features=...)``
            and ``add_items``.

        Returns
        -------
        self
        """
        check_callback(callback)
        return self._fit_template(X, user_features=user_features, item_features=item_features,
                                  callback=callback)

    def _divergence_hint(self, params: dict[str, Any]) -> str:
        hint = f"lower learning_rate (now {params['learning_rate']})"
        if params["learning_schedule"] == "sgd":
            hint += " or use learning_schedule='adagrad'"
        return hint

    def _fit(self, csr: sp.csr_matrix, params: dict[str, Any], callback: Callback | None = None,
             features: tuple[Any, Any] | None = None) -> Fitted:
        dtype, f = params["dtype"], params["factors"]
        positives = _Positives.from_csr(csr)
        if positives.nnz == 0:
            raise ValueError("X holds no positive interactions (only thumbs down); BPR and WARP learn "
                             "from positive values")
        n_users, n_items = csr.shape
        if features is not None:
            from .hybrid import fit_feature_sum
            return fit_feature_sum(self, positives, csr.shape, params, *features, callback)

        rng = np.random.default_rng(params["random_state"])
        user_factors = ((rng.random((n_users, f)) - 0.5) / f).astype(dtype)
        item_factors = ((rng.random((n_items, f)) - 0.5) / f).astype(dtype)
        item_bias = np.zeros(n_items, dtype=dtype)

        progress = Progress(params["iterations"], params["loss"].upper(),
                            enabled=params["show_progress"])
        history = self._run_epochs(params, positives, user_factors, item_factors, item_bias,
                                   params["iterations"], rng, True, callback, progress)
        progress.close()

        return Fitted(user_factors, item_factors, item_bias, attributes={"auc_history_": history})

    # ------------------------------------------------------------- fold-in
    def _train_rows(self, state: FittedState, rows: sp.csr_matrix, start: np.ndarray,
                    epochs: int) -> np.ndarray:
        """User factors trained on ``rows`` from ``start``, the item side held fixed."""
        params = self._fitted_params(state)
        user_factors = np.array(start, dtype=state.item_factors.dtype, order="C", copy=True)
        self._run_epochs(params, _Positives.from_csr(rows), user_factors, state.item_factors,
                         state.item_bias, epochs, np.random.default_rng(params["random_state"]),
                         update_items=False)
        return user_factors

    def _fold_in_from(self, state: FittedState, fresh: sp.csr_matrix, start: np.ndarray) -> np.ndarray:
        return self._train_rows(state, fresh, start, self._fitted_params(state)["iterations"])

    def _fold_in(self, state: FittedState, X_rows: sp.csr_matrix) -> np.ndarray:
        start = np.zeros((X_rows.shape[0], state.item_factors.shape[1]), dtype=state.item_factors.dtype)
        return self._train_rows(state, X_rows, start, self._fitted_params(state)["iterations"])

    def fold_in(self, X: Any, epochs: int | None = None) -> np.ndarray:
        """Factors for users described only by their interaction rows ``X`` (not stored).

        Runs SGD on fresh user vectors (starting at zero) with the item factors
        and biases held fixed.

        Parameters
        ----------
        X : sparse matrix, n x n_items
        epochs : int, optional
            Passes over ``X``'s interactions; defaults to ``iterations``.

        Returns
        -------
        ndarray of shape (X.shape[0], factors)
        """
        state = self._require_state()
        rows = check_interactions(X, "X", dtype=state.item_factors.dtype,
                                  shape=(None, state.n_items), allow_empty=True)
        epochs = self._fitted_params(state)["iterations"] if epochs is None else epochs
        start = np.zeros((rows.shape[0], state.item_factors.shape[1]), dtype=state.item_factors.dtype)
        return self._train_rows(state, rows, start, check_int(epochs, "epochs", minimum=0))

    def _solve_rows(self, state: FittedState, rows: sp.csr_matrix, side: str, start: np.ndarray,
                    epochs: int | None = None) -> np.ndarray:
        if side != "users":
            raise NotImplementedError("BPR updates users in place, not items")
        epochs = self._fitted_params(state)["iterations"] if epochs is None else epochs
        return self._train_rows(state, rows, start, check_int(epochs, "epochs", minimum=0))

    def partial_fit_users(self, user_ids: Any, X_rows: Any, epochs: int | None = None,
                          raw_ids: bool = False) -> "BPR":
        """Retrain (or add) users from their full interaction rows, items held fixed.

        Existing users start from their current factors, new ones from zero.

        Parameters
        ----------
        user_ids : array of int (raw ids with ``raw_ids=True``)
            Users to update.  Indices at or beyond ``n_users_`` grow the model;
            users between the old count and a new index start with no
            interactions.  A model with raw user ids grows only through
            ``raw_ids=True``: unknown raw ids are appended, in the order given.
        X_rows : sparse matrix, len(user_ids) x n_items
            Each user's complete interactions; they replace the stored rows.
        epochs : int, optional
            Passes over ``X_rows``' interactions; defaults to the fitted ``iterations``.
        raw_ids : bool
            Whether ``user_ids`` are raw ids.

        Returns
        -------
        self
        """
        if epochs is not None:
            check_int(epochs, "epochs", minimum=0)
        return self._partial_fit("users", user_ids, X_rows, raw_ids, epochs=epochs)
