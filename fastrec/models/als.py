"""Implicit-feedback matrix factorisation by alternating least squares.

Hu, Koren and Volinsky, "Collaborative Filtering for Implicit Feedback
Datasets", ICDM 2008; regularisation scaled by row counts as in Zhou et al.,
"Large-scale Parallel Collaborative Filtering for the Netflix Prize" (ALS-WR,
Spark MLlib's default); Rendle et al.'s iALS parameterisation ("Revisiting the
performance of iALS on item recommendation benchmarks", 2021), mapped onto
the same kernel in ``fastrec.models.ials``.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from .als_explain import hu_contributions
from .als_start import SOLVERS, _check_confidence, half_step, initial_factors, loss_weight  # noqa: F401
from .base import Fitted
from .side import fit_ridge_maps
from .factors import FactorModel
from .ials import (FoldInIALS, check_ials_params, ials_loss, is_ials, kernel_form, kernel_values,
                   row_penalty)
from .serving import raw_to_index
from .state import FittedState
from ..kernels.als_columns import ColumnSlices, slice_budget
from ..kernels import load_kernel
from ..utils.progress import Progress
from ..utils.threads import blas_single_thread
from ..utils.validation import (CSR_TYPES, check_bool, check_callback, check_choice, check_float,
                          check_int, check_interactions, check_rows, check_scalar_id)

__all__ = ["ALS", "initial_factors"]

_SOLVERS = SOLVERS

Callback = Callable[[int, float, float], Any]


class ALS(FactorModel):
    """Implicit-feedback ALS with conjugate-gradient or Cholesky solvers.

    Each stored value ``r`` of the users x items matrix gives a confidence and
    a preference.  With ``confidence="hu"`` (the default, Hu et al.)
    ``c = 1 + alpha * |r|``; with ``confidence="implicit"`` ``c = alpha * |r|``,
    which is what the `implicit` library does (its ``alpha`` multiplies the
    data and the ``1 +`` is left to the caller).  The preference is 1 for
    ``r > 0`` and 0 for ``r < 0``: negative values are "thumbs down", pushing
    the score towards 0 with confidence from ``|r|``.  Unobserved pairs have
    ``c = 1``, ``p = 0``.

    Three conventions, side by side (``y = x_u . y_i``, n_u the entries of
    user u, m items; items alike):

    ===============  =======================================  ===========================
    convention       loss                                     penalty of user u
    ===============  =======================================  ===========================
    Hu (default)     sum_all c (p - y)^2, c = 1 + alpha |r|   lambda n_u ("count") or
                     (unobserved: c = 1, p = 0)               lambda ("none")
    implicit's       as Hu with c = alpha |r| (observed)      as Hu
    iALS (Rendle)    sum_obs (y - p)^2 + alpha0 sum_all y^2   lambda (n_u + alpha0 m)^nu
    ===============  =======================================  ===========================

    iALS is chosen by ``unobserved_weight`` (alpha0); ``regularization_exp``
    is nu (1 by default), and ``alpha``, ``confidence`` and
    ``regularization_scaling`` do not apply.  It reads only the sign of each
    stored value (observed positive: p = 1, negative: p = 0).  It runs on the
    same kernel, exactly: the kernel's solve with ``alpha = 1/alpha0`` and
    penalty ``lambda (n_u + alpha0 m)^nu / alpha0`` is ``(1 + alpha0)`` times
    the iALS solve (derivation in ``fastrec.models.ials``), so the factors are
    the iALS ones and scores are iALS predictions.  Rendle et al. tune
    alpha0 around 0.1 to 1 and lambda small (about 1e-3 to 1e-2 with nu = 1).

    The defaults (64 factors, ``regularization=0.1`` scaled by counts,
    ``alpha=1``, 15 CG sweeps) were chosen by a grid search on MovieLens 1M
    (random 80/20 split): ndcg@10 = 0.431, see ``bench/RESULTS.md``.

    Parameters
    ----------
    factors : int
        Latent dimensions.
    regularization : float
        lambda.  With ``regularization_scaling="count"`` each user's (item's)
        penalty is ``lambda * n`` where n counts its interactions (ALS-WR, as in
        Spark); with ``"none"`` it is the constant ``lambda``.
    alpha : float
        Confidence scale (see above).
    iterations : int
        Alternating sweeps (one user half-step and one item half-step each).
    solver : {"cg", "cholesky"}
        Conjugate gradient warm-started from the previous sweep (fast), or an
        exact Cholesky solve per row (monotone loss).
    cg_steps : int
        CG iterations per row and half-step.
    regularization_scaling : {"count", "none"}
        See ``regularization``.
    confidence : {"hu", "implicit"}
        Confidence convention, see above.
    unobserved_weight : float > 0 or None
        alpha0 of Rendle's iALS: the weight pulling every pair towards 0.
        None (the default) keeps the Hu/implicit conventions.
    regularization_exp : float >= 0 or None
        nu of iALS (only with ``unobserved_weight``; None means 1).
    dtype : float32 or float64
    num_threads : int
        0 uses every CPU this process may use (affinity and cgroup aware).
    random_state : int, numpy Generator or None
        Seeds the initial factors.
    show_progress : bool
        Print a progress bar with the training loss to stderr.

    Attributes
    ----------
    user_factors_, item_factors_ : ndarray
    loss_history_ : list of float
        Training loss after each iteration (when computed; see ``fit``): the
        objective over the sum of all pairs' weights (Hu/implicit: every
        confidence, unobserved pairs 1; iALS: ``nnz + alpha0 n m``).
    """

    _takes_features = True  # cold rows from an exact ridge map of their features (fastrec.models.side)

    def __init__(self, factors: int = 64, regularization: float = 0.1, alpha: float = 1.0,
                 iterations: int = 15, solver: str = "cg", cg_steps: int = 3,
                 regularization_scaling: str = "count", confidence: str = "hu",
                 unobserved_weight: float | None = None, regularization_exp: float | None = None,
                 dtype: Any = np.float32, num_threads: int = 0, random_state: Any = None,
                 show_progress: bool = False):
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.solver = solver
        self.cg_steps = cg_steps
        self.regularization_scaling = regularization_scaling
        self.confidence = confidence
        self.unobserved_weight = unobserved_weight
        self.regularization_exp = regularization_exp
        self.dtype = dtype
        self.num_threads = num_threads
        self.random_state = random_state
        self.show_progress = show_progress

    # ----------------------------------------------------------- validation
    def _check_params(self) -> dict[str, Any]:
        params = {
            **self._check_common_params(),
            "regularization": check_float(self.regularization, "regularization", minimum=0.0),
            "alpha": check_float(self.alpha, "alpha", minimum=0.0),
            "solver": check_choice(self.solver, "solver", _SOLVERS),
            "cg_steps": check_int(self.cg_steps, "cg_steps", minimum=1),
            "regularization_scaling": check_choice(self.regularization_scaling,
                                                   "regularization_scaling", ("count", "none")),
            "confidence": check_choice(self.confidence, "confidence", ("hu", "implicit")),
        }
        params.update(check_ials_params(self.unobserved_weight, self.regularization_exp, params))
        return params

    def _regularization(self, counts: np.ndarray, params: dict[str, Any], n_other: int) -> np.ndarray:
        """Each row's penalty as the kernel takes it, given its entries and the other side's size."""
        return row_penalty(counts, n_other, params)

    def _gram(self, factors: np.ndarray, threads: int) -> np.ndarray:
        # One BLAS thread: a multithreaded OpenBLAS keeps its workers spinning
        # after the call, stealing the cores our OpenMP half-step needs next.
        with blas_single_thread():
            return np.ascontiguousarray(factors.T @ factors)

    def _half_step(self, csr: Any, X: np.ndarray, Y: np.ndarray, reg: np.ndarray,
                   params: dict[str, Any], solver: str, threads: int, YtY: np.ndarray | None = None,
                   max_row_length: int | None = None) -> int:
        """Solve every row of ``csr`` (a CSR matrix or ``CSRArrays``) into ``X``, ``Y`` fixed."""
        if YtY is None:
            YtY = self._gram(Y, threads)
        # CG never calls BLAS, nor do Cholesky rows up to SMALL_ROW_LIMIT long;
        # setting the limit costs several microseconds, a lot for one fold-in
        if max_row_length is None:
            lengths = np.diff(csr.indptr)
            max_row_length = int(lengths.max()) if lengths.size else 0
        return half_step(csr, X, Y, reg, params, solver, threads, YtY, max_row_length)

    def _loss(self, Cui: sp.csr_matrix, X: np.ndarray, Y: np.ndarray, reg_users: np.ndarray,
              reg_items: np.ndarray, params: dict[str, Any], threads: int, weight: float) -> float:
        """Weighted mean squared error plus penalties, normalised like implicit's loss."""
        if is_ials(params):
            with blas_single_thread():
                return ials_loss(load_kernel("als"), Cui, X, Y, reg_users, reg_items, params, threads) / weight
        YtY = self._gram(Y, threads)
        total = load_kernel("als").als_loss(
            Cui.indptr, Cui.indices, Cui.data, X, Y, YtY, reg_users, reg_items,
            X.dtype.type(params["alpha"]), params["confidence"] == "implicit", threads)
        return float(total / weight)

    @staticmethod
    def _loss_weight(Cui: sp.csr_matrix, params: dict[str, Any]) -> float:
        """The sum of every pair's confidence (unobserved pairs count 1): the loss's denominator."""
        return loss_weight(Cui.nnz, Cui.data, Cui.shape, params)

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, callback: Callback | None = None, compute_loss: bool | None = None,
            user_features: Any = None, item_features: Any = None) -> "ALS":
        """Learn factors from a users x items matrix.

        Parameters
        ----------
        X : scipy.sparse matrix (any format), 2-D array or ``fastrec.Interactions``
            Interaction strengths, users x items.  It is never modified.  A CSR
            matrix that is already canonical (values of ``dtype``, int32
            indices, sorted and without duplicates or explicit zeros) is used
            without a copy, and the model keeps read-only views of its arrays
            to exclude seen items when serving (as scikit-learn's neighbours
            estimators keep their input): do not modify it in place afterwards,
            or pass ``X.copy()``.  Anything else is copied once.
        callback : callable(iteration, elapsed_seconds, loss), optional
            Called after every iteration.
        compute_loss : bool, optional
            Compute the training loss each iteration (costs about one CG step).
            Defaults to True when a callback or progress bar wants it.
        user_features, item_features : fastrec.Features or sparse matrix, optional
            Side features (see ``BPR.fit`` for how they are aligned).  ALS
            itself is unchanged; afterwards an exact ridge regression from the
            side features to the factors of the rows with interactions
            (``fastrec.models.side.fit_ridge_maps``) gives rows without
            interactions their vectors: cold users and items are scored from
            their features, and ``recommend(user_features=...)`` and
            ``add_items`` use the same map.

        Returns
        -------
        self
        """
        check_callback(callback)
        if compute_loss is not None:
            compute_loss = check_bool(compute_loss, "compute_loss")
        return self._fit_template(X, user_features=user_features, item_features=item_features,
                                  callback=callback, compute_loss=compute_loss)

    def _divergence_hint(self, params: dict[str, Any]) -> str:
        if is_ials(params):
            return (f"use a larger regularization (now {params['regularization']}) or unobserved_weight "
                    f"(now {params['unobserved_weight']})")
        return (f"use a larger regularization (now {params['regularization']}) or a smaller alpha "
                f"(now {params['alpha']})")

    def _fit(self, Cui: sp.csr_matrix, params: dict[str, Any], callback: Callback | None = None,
             compute_loss: bool | None = None, features: tuple[Any, Any] | None = None) -> Fitted:
        _check_confidence(Cui, params)
        Cui = kernel_values(Cui, kernel_form(params))  # iALS reads signs; the model keeps X as given
        dtype, threads, f = params["dtype"], params["num_threads"], params["factors"]
        n_users, n_items = Cui.shape
        factor_bytes = (n_users + n_items) * f * np.dtype(dtype).itemsize
        input_bytes = Cui.data.nbytes + Cui.indices.nbytes + Cui.indptr.nbytes
        # the item half-step reads by column: a CSC built in slices within a memory budget
        columns = ColumnSlices(Cui, slice_budget(input_bytes, factor_bytes), threads)

        user_factors, item_factors = initial_factors(n_users, n_items, f, dtype, params["random_state"])
        reg_users = self._regularization(np.diff(Cui.indptr), params, n_items)
        reg_items = self._regularization(columns.column_counts, params, n_users)

        if compute_loss is None:
            compute_loss = callback is not None or params["show_progress"]
        progress = Progress(params["iterations"], "ALS", enabled=params["show_progress"])
        history: list[float] = []
        loss_weight = self._loss_weight(Cui, params) if compute_loss else 0.0
        start = time.perf_counter()
        for iteration in range(params["iterations"]):
            self._half_step(Cui, user_factors, item_factors, reg_users, params, params["solver"], threads)
            user_gram = self._gram(user_factors, threads)  # once for every slice of items
            for lo, hi, item_users in columns:
                self._half_step(item_users, item_factors[lo:hi], user_factors, reg_items[lo:hi], params,
                                params["solver"], threads, YtY=user_gram,
                                max_row_length=columns.max_column_length)
            loss = float("nan")
            if compute_loss:
                loss = self._loss(Cui, user_factors, item_factors, reg_users, reg_items, params, threads,
                                  loss_weight)
                history.append(loss)
            elapsed = time.perf_counter() - start
            progress.update(loss=loss)
            if callback is not None:
                callback(iteration, elapsed, loss)
        progress.close()

        sides = fit_ridge_maps(features, Cui, user_factors, item_factors)  # (None, None) without features
        return Fitted(user_factors, item_factors, attributes={"loss_history_": history}, user_features=sides[0],
                      item_features=sides[1])

    # ------------------------------------------------------------- fold-in
    def _cached_gram(self, state: FittedState, side: str, threads: int) -> np.ndarray:
        key = f"gram_{side}"
        gram = state.cache.get(key)
        if gram is None:
            factors = state.item_factors if side == "items" else state.user_factors
            gram = self._gram(factors, threads)
            gram.flags.writeable = False
            state.cache[key] = gram
        return gram

    def _solve_rows(self, state: FittedState, rows: Any, side: str, start: np.ndarray | None = None
                    ) -> np.ndarray:
        """Exact factors for ``side`` rows from their interactions (partial fits)."""
        return self._solve_against(state, rows, "items" if side == "users" else "users")

    def _solve_against(self, state: FittedState, rows: Any, side: str) -> np.ndarray:
        """Exact (Cholesky) factors for rows (CSR or ``CSRArrays``) against the fixed factors of ``side``."""
        params = self._fitted_params(state)
        fixed = state.item_factors if side == "items" else state.user_factors
        threads = 1 if rows.shape[0] < 64 else params["num_threads"]
        out = np.zeros((rows.shape[0], fixed.shape[1]), dtype=fixed.dtype)
        reg = self._regularization(np.diff(rows.indptr), params, fixed.shape[0])
        rows = kernel_values(rows, kernel_form(params))
        self._half_step(rows, out, fixed, reg, params, "cholesky", threads,
                        YtY=self._cached_gram(state, side, threads))
        return out

    def _fold_in(self, state: FittedState, X_rows: sp.csr_matrix) -> np.ndarray:
        if X_rows.shape[0] == 1:
            factors = self._fold_in_one(state, X_rows.indptr, X_rows.indices, X_rows.data)
            if factors is not None:
                return factors
        return self._solve_against(state, X_rows, "items")

    def _fold_in_one(self, state: FittedState, indptr: Any, indices: Any, data: Any) -> np.ndarray | None:
        """One row's factors by the kernel's latency path, or None when it needs the general one.

        The kernel checks the row itself (see ``fold_in_row``), so a service
        folding in one user per request pays for the solve, not for NumPy calls.
        """
        plan = state.cache.get("fold_in_plan")
        if plan is None:
            ials_plan = state.cache.get("fold_in_plan_ials")
            if ials_plan is not None:
                return ials_plan(load_kernel("als"), indptr, indices, data)
            if is_ials(self._fitted_params(state)):
                return self._fold_in_one_ials(state, indptr, indices, data)
            params = self._fitted_params(state)
            lam = params["regularization"]
            scaled = params["regularization_scaling"] == "count"
            plan = (state.item_factors, self._cached_gram(state, "items", 1), lam if scaled else 0.0,
                    0.0 if scaled else lam, params["alpha"], params["confidence"] == "implicit")
            state.cache["fold_in_plan"] = plan  # derived only: a racing rebuild is harmless
        return load_kernel("als").fold_in_row(indptr, indices, data, *plan)

    # a one-user partial fit is the exact fold-in: its latency path (the row checked in C),
    # bound as it is rather than through a wrapper (one Python call fewer per update)
    _solve_one_user = _fold_in_one

    def _fold_in_one_ials(self, state: FittedState, indptr: Any, indices: Any, data: Any
                          ) -> np.ndarray | None:
        plan = FoldInIALS(state.item_factors, self._cached_gram(state, "items", 1), self._fitted_params(state))
        state.cache["fold_in_plan_ials"] = plan  # derived only: a racing rebuild is harmless
        return plan(load_kernel("als"), indptr, indices, data)

    def fold_in(self, X: Any) -> np.ndarray:
        """Factors for users described only by their interaction rows ``X`` (not stored).

        Solves each row exactly with the item factors held fixed.

        Returns
        -------
        ndarray of shape (X.shape[0], factors)
        """
        state = self._require_state()
        one_row = type(X) in CSR_TYPES and X.shape[0] == 1 and X.shape[1] == state.n_items
        if one_row:
            factors = self._fold_in_one(state, X.indptr, X.indices, X.data)  # validated in C
            if factors is not None:
                return factors
        rows = check_rows(X, "X", state.item_factors.dtype, state.n_items)
        # a row the kernel declined (long, singular, not canonical) is not offered to it again
        return self._solve_against(state, rows, "items") if one_row else self._fold_in(state, rows)

    def partial_fit_users(self, user_ids: Any, X_rows: Any, raw_ids: bool = False) -> "ALS":
        """Recompute (or add) users from their full interaction rows, items held fixed.

        Parameters
        ----------
        user_ids : array of int (raw ids with ``raw_ids=True``)
            Users to update.  Indices at or beyond ``n_users_`` grow the model;
            users between the old count and a new index start with no
            interactions.  A model with raw user ids grows only through
            ``raw_ids=True``: unknown raw ids are appended, in the order given.
        X_rows : sparse matrix, len(user_ids) x n_items
            Each user's complete interactions; they replace the stored rows.
        raw_ids : bool
            Whether ``user_ids`` are raw ids.

        Returns
        -------
        self
        """
        return self._partial_fit("users", user_ids, X_rows, raw_ids)

    def partial_fit_items(self, item_ids: Any, X_cols: Any, raw_ids: bool = False) -> "ALS":
        """Recompute (or add) items from their full interaction columns, users held fixed.

        Parameters
        ----------
        item_ids : array of int (raw ids with ``raw_ids=True``)
        X_cols : sparse matrix, n_users x len(item_ids)
            Each item's complete interactions (users x items orientation).
        raw_ids : bool
            Whether ``item_ids`` are raw ids (see ``partial_fit_users``).

        Returns
        -------
        self
        """
        return self._partial_fit("items", item_ids, X_cols, raw_ids)

    # ------------------------------------------------------------- explain
    def explain(self, user: Any, item: Any, X: Any = None, n: int | None = 10, raw_ids: bool = False
                ) -> tuple[float, np.ndarray, np.ndarray]:
        """Why ``item`` scores as it does for ``user`` (Hu et al. 2008, section 5).

        The score of item i is ``sum_j s_ij c_j p_j`` over the user's liked items
        j, where ``s_ij = y_i^T W_u y_j`` and ``W_u`` is the inverse of the
        user's regularised, confidence-weighted Gram matrix.  Each term is how
        much watching j contributes to recommending i ("because you watched j").

        Parameters
        ----------
        user : int
        item : int
        X : sparse matrix (1 x n_items), optional
            The user's interactions, if not those stored at fit time.
        n : int or None
            Keep the ``n`` largest contributions (None keeps all).
        raw_ids : bool
            ``user`` and ``item`` are raw ids, and the contributing items are
            returned as raw ids.

        Returns
        -------
        score : float
            The exact score ``sum`` of all contributions (equals the model's
            score for this pair when the user's factors are an exact solve).
        item_ids : ndarray of int32
            Contributing items, largest contribution first.
        contributions : ndarray
        """
        state = self._require_state()
        params = self._fitted_params(state)
        raw_ids = check_bool(raw_ids, "raw_ids")
        if raw_ids:
            user = raw_to_index(state, "users", user, "user")
            item = raw_to_index(state, "items", item, "item")
        user_id = np.array([check_scalar_id(user, state.n_users, "user")])
        item_id = np.array([check_scalar_id(item, state.n_items, "item")])
        if n is not None:
            n = check_int(n, "n", minimum=0)
        if X is not None:
            row = check_interactions(X, "X", dtype=state.item_factors.dtype,
                                     shape=(1, state.n_items))
        else:
            row = state.seen_rows(user_id[:1])
        if X is not None:
            _check_confidence(row, {**params, "dtype": state.dtype})  # errors name X
        lam = float(self._regularization(np.array([row.nnz]), {**params, "dtype": np.float64}, state.n_items)[0])
        liked, contributions = hu_contributions(state.item_factors, row, int(item_id[0]), params, lam, X is not None)
        score = float(contributions.sum())
        order = np.lexsort((liked, -contributions))
        if n is not None:
            order = order[: int(n)]
        because = liked[order].astype(np.int32)
        return score, (state.item_map.to_ids(because) if raw_ids else because), contributions[order]
