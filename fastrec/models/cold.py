"""Cold start for factor models fitted with side features: new users, new items, explanations.

* ``recommend(users=None, user_features=F)`` ranks for new users described by
  their features alone (``F @ feature factors``), or by features and a few
  interactions (``X=``: the feature vector is the start of the fold-in);
* ``add_items(item_features, ids=...)`` adds titles nobody has interacted
  with, scored from their features, so they show up in ``recommend`` and
  ``similar_items``;
* ``explain_features`` splits a score into the parts of the item's and the
  user's features ("new in genres=Comedy, popular with age=25-34").
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..data.features import Features
from ..data.idmap import IdMap
from ..kernels.topk import top_k
from ..utils.validation import check_bool, check_int, check_raw_ids, check_scalar_id
from .serving import raw_to_index
from .side import rows_for_model
from .state import FittedState, non_finite

__all__ = ["ColdStartMixin", "FeatureExplanation"]

_RESIDUAL = "(own interactions)"


@dataclass(frozen=True)
class FeatureExplanation:
    """A score split into the contributions of features (largest first).

    ``item_features`` are ``(name, contribution)`` pairs whose sum plus any
    ``(own interactions)`` entry is the item's share ``q_i . p_u + b_i``
    computed through its features; ``user_features`` likewise for the user's
    vector.  Each list alone sums to ``score``.
    """

    score: float
    item_features: list[tuple[str, float]] = field(default_factory=list)
    user_features: list[tuple[str, float]] = field(default_factory=list)

    def __str__(self) -> str:
        def named(pairs: list[tuple[str, float]], n: int = 3) -> str:
            kept = [f"{name} ({value:+.3g})" for name, value in pairs if value > 0 and name != _RESIDUAL][:n]
            return ", ".join(kept) or "nothing in particular"
        text = f"score {self.score:.3g}: new in {named(self.item_features)}"
        if self.user_features:
            text += f", popular with {named(self.user_features)}"
        return text


def _contributions(rows: sp.csr_matrix, names: np.ndarray, parts: np.ndarray, total: float,
                   n: int | None) -> list[tuple[str, float]]:
    """(name, weight * part) for the features of a one-row matrix, with the residual to ``total``."""
    values = rows.data.astype(np.float64) * parts[rows.indices]
    pairs = [(str(names[j]), float(v)) for j, v in zip(rows.indices, values)]
    residual = total - float(values.sum())
    if abs(residual) > 1e-6 * max(1.0, abs(total)):
        pairs.append((_RESIDUAL, residual))
    pairs.sort(key=lambda p: -p[1])
    return pairs if n is None else pairs[:n]


class ColdStartMixin:
    """Serving of users and items known by their side features (mixed into ``FactorModel``)."""

    @property
    def user_features_(self) -> Features | None:
        """The user features the model was fitted with (``transform`` builds rows for new users)."""
        state = self._require_state()
        side = state.user_features
        return None if side is None else side.as_features(state.user_map)

    @property
    def item_features_(self) -> Features | None:
        """The item features the model was fitted with (``transform`` builds rows for new items)."""
        state = self._require_state()
        side = state.item_features
        return None if side is None else side.as_features(state.item_map)

    # ---------------------------------------------------------------- users
    def _fold_in_from(self, state: FittedState, fresh: sp.csr_matrix, start: np.ndarray) -> np.ndarray:
        """Vectors of new users from interactions ``fresh``, their feature vectors ``start`` as prior.

        The default solves rows with interactions by ``_fold_in`` and keeps
        ``start`` for the others; SGD models start their fold-in from ``start``.
        """
        out = np.array(start, copy=True)
        has = np.flatnonzero(np.diff(fresh.indptr) > 0)
        if has.size:
            out[has] = self._fold_in(state, fresh[has])
        return out

    def _rank_features(self, state: FittedState, rows: sp.csr_matrix, fresh: sp.csr_matrix | None, n: int,
                       exclude_seen: bool, mask: np.ndarray, cands: np.ndarray | None
                       ) -> tuple[np.ndarray, np.ndarray]:
        queries = state.user_features.vectors(rows)
        if fresh is not None and fresh.nnz:
            queries = self._fold_in_from(state, fresh, queries)
        seen = fresh if exclude_seen else None
        threads = 1 if queries.shape[0] == 1 else self._serving_threads()
        return top_k(np.ascontiguousarray(queries, dtype=state.item_factors.dtype), state.item_factors,
                     state.item_bias, n, seen, mask, cands, threads, index=state.ranking_index())

    # ---------------------------------------------------------------- items
    def add_items(self, item_features: Any, ids: Any = None) -> "ColdStartMixin":
        """Add items that have no interactions yet, scored from their features.

        Parameters
        ----------
        item_features : fastrec.Features or sparse matrix
            One row per new item: ``Features`` (e.g. from
            ``model.item_features_.transform(table)``) are matched to the
            model's features by name; a matrix has one column per model
            feature (``len(model.item_features_.names)``, identity columns
            then empty, or all the model's features).
        ids : array-like, optional
            Raw ids of the new items, required when the model has raw item ids
            (default: the ids of ``item_features``).  They must be new.  A model
            without raw ids numbers the new items from ``n_items_`` on.

        Returns
        -------
        self
        """
        with self._fit_lock:
            state = self._require_state()
            rows = rows_for_model(state.item_features, item_features, "item_features")
            count = rows.shape[0]
            item_map = state.item_map
            if item_map is not None:
                if ids is None and isinstance(item_features, Features) and item_features.ids is not None:
                    ids = item_features.ids.labels
                if ids is None:
                    raise ValueError("ids: the model has raw item ids; pass the new items' raw ids")
                labels = check_raw_ids(np.atleast_1d(np.asarray(ids)), "ids", count)
                if labels.dtype.kind != item_map.labels.dtype.kind:
                    raise TypeError(f"ids holds {labels.dtype} but the model's raw item ids are "
                                    f"{item_map.labels.dtype}")
                known = item_map.to_index(labels, unknown="mask") >= 0
                if known.any():
                    raise ValueError(f"ids: {known.sum()} item(s) are already in the model "
                                     f"({', '.join(map(repr, labels[known][:5].tolist()))}); refit or "
                                     "partial_fit_items to change them")
                try:
                    item_map = IdMap(np.concatenate([item_map.labels, labels]))
                except ValueError:
                    raise ValueError("ids contains duplicates") from None
            elif ids is not None:
                raise ValueError(f"ids: this model has no raw item ids; the new items get indices "
                                 f"{state.n_items}..{state.n_items + count - 1} (pass ids=None)")
            vectors = state.item_features.vectors(rows)
            bias = state.item_features.biases(rows)
            if non_finite(vectors, bias):
                raise FloatingPointError("the new items' vectors are NaN or infinite; the model is unchanged")
            seen = state.user_items
            user_items = sp.csr_matrix((seen.data, seen.indices, seen.indptr),
                                       shape=(state.n_users, state.n_items + count))
            item_factors, side = self._append_items(state, vectors)
            matrix = sp.vstack([side.matrix, rows.astype(side.matrix.dtype)], format="csr")
            item_bias = None
            if state.item_bias is not None:
                item_bias = np.concatenate([state.item_bias, bias if bias is not None
                                            else np.zeros(count, state.item_bias.dtype)])
            self._state = replace(state, item_factors=item_factors, item_bias=item_bias, user_items=user_items,
                                  item_map=item_map, item_features=replace(side, matrix=matrix), cache={})
        return self

    def _append_items(self, state: FittedState, vectors: np.ndarray) -> tuple[np.ndarray, Any]:
        """The item factors and item side features after ``add_items`` appends ``vectors``."""
        return np.vstack([state.item_factors, vectors]), state.item_features

    # -------------------------------------------------------------- explain
    def explain_features(self, item: Any, user: Any = None, user_features: Any = None, n: int | None = 5,
                         raw_ids: bool = False) -> FeatureExplanation:
        """Which features drive ``item``'s score for a user (a stored one, or one described by features).

        The score ``p_u . q_i + b_i`` is split two ways: over the item's
        features, ``B[i, j] (p_u . F_j + c_j)``, and over the user's,
        ``A[u, j] (E_j . q_i) + b_i``.  A part not explained by features
        (identity features, or an ALS vector from interactions) is listed as
        ``(own interactions)``.

        Parameters
        ----------
        item : int (raw id with ``raw_ids``)
        user : int (raw id with ``raw_ids``), optional
            A stored user; or give ``user_features`` (one row) for a new one.
        user_features : fastrec.Features or sparse matrix (1 row), optional
        n : int or None
            Keep the ``n`` largest contributions of each side.
        raw_ids : bool

        Returns
        -------
        FeatureExplanation (``str()`` gives a one-line summary).
        """
        state = self._require_state()
        if state.item_features is None and state.user_features is None:
            raise ValueError("explain_features needs a model fitted with user_features or item_features")
        if check_bool(raw_ids, "raw_ids"):
            item = raw_to_index(state, "items", item, "item")
            if user is not None:
                user = raw_to_index(state, "users", user, "user")
        if n is not None:
            n = check_int(n, "n", minimum=0)
        item_id = check_scalar_id(item, state.n_items, "item")
        if (user is None) == (user_features is None):
            raise ValueError("pass exactly one of user (a stored user) and user_features (a new one)")
        if user is not None:
            user_id = check_scalar_id(user, state.n_users, "user")
            query = state.factor_rows("users", np.array([user_id]))[0].astype(np.float64)
            user_row = None if state.user_features is None else state.user_features.matrix[user_id]
        else:
            user_row = rows_for_model(state.user_features, user_features, "user_features", n_rows=1)
            query = state.user_features.vectors(user_row)[0].astype(np.float64)
        q = state.item_factors[item_id].astype(np.float64)
        b = 0.0 if state.item_bias is None else float(state.item_bias[item_id])
        score = float(query @ q + b)
        item_parts: list[tuple[str, float]] = []
        side = state.item_features
        if side is not None:
            per_feature = side.factors.astype(np.float64) @ query
            if side.bias is not None:
                per_feature = per_feature + side.bias
            item_parts = _contributions(side.matrix[item_id], side.names, per_feature, score, n)
        user_parts: list[tuple[str, float]] = []
        if user_row is not None:
            user_side = state.user_features
            per_feature = user_side.factors.astype(np.float64) @ q
            user_parts = _contributions(user_row, user_side.names, per_feature, score - b, n)
        return FeatureExplanation(score, item_parts, user_parts)
