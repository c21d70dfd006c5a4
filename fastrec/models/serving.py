"""The serving API every model shares: recommend, similar_*, predict, rank, recommend_frame.

Every model scores a (user, item) pair as ``user_factors_[u] . item_factors_[i]``
plus ``item_bias_[i]`` where the model has biases.  Calls read the model's
fitted state once, so they are thread-safe against a concurrent refit.

Ids: by default users and items are the model's indices (``0..n-1``).  With
``raw_ids=True`` they are the raw ids of the ``fastrec.Interactions`` the
model was fitted on, both in the arguments and in the results.  The choice is
always explicit: an index and a raw id that look alike are never guessed
between.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ..kernels.topk import candidate_ids, exclusion_mask
from ..utils.validation import check_bool, check_choice, check_ids, check_interactions, check_n, check_scalar_id
from .state import FittedState

__all__ = ["ServingMixin"]



def _single_row(ids: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A one-query answer as 1-D arrays holding only the eligible entries (no padding)."""
    valid = ids[0] >= 0
    return ids[0][valid], scores[0][valid]


def raw_to_index(state: FittedState, side: str, raw: Any, name: str) -> Any:
    """Indices of raw ``side`` ids (a scalar stays a scalar); errors name ``name``."""
    id_map = state.id_map(side)
    if id_map is None:
        raise ValueError(f"{name}: raw_ids=True needs a model fitted from fastrec.Interactions; this one "
                         f"has no raw {side[:-1]} ids (pass indices, or fit on Interactions)")
    try:
        return id_map.to_index(raw)
    except KeyError as exc:
        raise KeyError(f"{name}: {exc.args[0]}") from None


def _raw_item_lists(state: FittedState, ids: np.ndarray, scores: np.ndarray
                    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A padded batch answer as per-row raw-id arrays (raw ids have no padding value)."""
    out_ids, out_scores = [], []
    for row_ids, row_scores in zip(ids, scores):
        valid = row_ids >= 0
        out_ids.append(state.item_map.to_ids(row_ids[valid]))
        out_scores.append(row_scores[valid])
    return out_ids, out_scores


def long_columns(user_ids: np.ndarray, ids: np.ndarray, scores: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Padded top-n rows (``ids`` -1 where a user has fewer items) as long columns: user, rank (1-based), item, score."""
    valid = ids >= 0
    counts = valid.sum(axis=1)
    rank_col = (np.cumsum(valid, axis=1)[valid]).astype(np.int32)
    return np.repeat(user_ids, counts), rank_col, ids[valid], scores[valid]


class ServingMixin:
    """recommend / similar_items / similar_users / predict / rank / recommend_frame."""

    def _item_index_args(self, state: FittedState, exclude: Any, candidates: Any,
                         raw_ids: bool) -> tuple[Any, Any]:
        if raw_ids:
            if exclude is not None:
                exclude = raw_to_index(state, "items", exclude, "exclude")
            if candidates is not None:
                candidates = raw_to_index(state, "items", candidates, "candidates")
        return exclude, candidates

    def recommend(self, users: Any = None, n: int = 10, exclude_seen: bool = True,
                  exclude: Any = None, candidates: Any = None, X: Any = None,
                  recalculate: bool = False, raw_ids: bool = False, rerank: Any = None,
                  user_features: Any = None) -> tuple[Any, Any]:
        """Top-``n`` items for one user or a batch of users.

        Parameters
        ----------
        users : int or array of int, or None
            User indices (raw user ids with ``raw_ids=True``).  ``None`` with
            ``X`` recommends for new users described by the rows of ``X``
            (fold-in, where the model supports it).
        n : int
            Number of items per user.
        exclude_seen : bool
            Skip the items each user interacted with at fit time, and those in ``X``.
        exclude : array of int, optional
            Items excluded for every user.
        candidates : array of int, optional
            Rank only these items.
        X : sparse matrix, optional
            Fresh interactions, one row per requested user (users x items,
            columns are item indices).
        recalculate : bool
            With ``users`` and ``X``: recompute those users' factors from ``X``
            instead of using the stored ones.
        raw_ids : bool
            Take ``users``, ``exclude`` and ``candidates`` as raw ids and
            return raw item ids.
        rerank : fastrec.rerank re-ranker, optional
            Fetch ``rerank.candidates`` items per user (all other arguments
            apply to them), then re-rank them into the final ``n``
            (calibration, popularity de-biasing, diversity, group fairness).
            The scores returned are the model's scores of the chosen items,
            in the re-ranked order.
        user_features : fastrec.Features or sparse matrix, optional
            New users described by their side features (models fitted with
            ``user_features``), one row each, with ``users=None``: cold start.
            With ``X`` too (one row per user), their few interactions refine
            the feature vector (fold-in started from it).  ``Features`` are
            matched to the model's by name (``model.user_features_.transform``
            builds them from raw columns).

        Returns
        -------
        ids, scores
            1-D arrays for a single user, 2-D ``(len(users), n)`` for a batch.
            Sorted by score descending, ties by lower item index.  A single
            user's arrays hold only eligible items.  A batch has
            ``min(n, number of ranked items)`` columns; rows with fewer eligible
            items are padded with id ``-1`` and score ``-inf``.  With
            ``raw_ids=True`` a batch gives lists of 1-D arrays instead (one per
            user, no padding: raw ids have no padding value).
        """
        state = self._require_state()
        if (raw_ids is False and exclude is None and candidates is None and X is None and recalculate is False
                and rerank is None and user_features is None and type(n) is int
                and (exclude_seen is True or exclude_seen is False)
                and (type(users) is int or isinstance(users, np.integer))):
            # one stored user with plain arguments, the common request of a service
            one = self._recommend_one(state, int(users), n, exclude_seen)
            if one is not None:
                return one
        raw_ids = check_bool(raw_ids, "raw_ids")
        if raw_ids and users is not None:
            users = raw_to_index(state, "users", users, "users")
        exclude, candidates = self._item_index_args(state, exclude, candidates, raw_ids)
        if user_features is not None:
            if rerank is not None:
                raise ValueError("rerank is not available with user_features yet; re-rank the returned lists")
            ids, scores, scalar = self._recommend_featured(state, users, user_features, n, exclude_seen, exclude,
                                                           candidates, X)
        elif rerank is None:
            ids, scores, scalar = self._recommend_indices(state, users, n, exclude_seen, exclude, candidates,
                                                          X, recalculate)
        else:
            from ..rerank.serving import recommend_reranked  # Numba: imported only when asked for
            ids, scores, scalar = recommend_reranked(self, state, rerank, users, n, exclude_seen, exclude,
                                                     candidates, X, recalculate)
        if scalar:
            ids, scores = _single_row(ids, scores)
            return (state.item_map.to_ids(ids), scores) if raw_ids else (ids, scores)
        return _raw_item_lists(state, ids, scores) if raw_ids else (ids, scores)

    def _recommend_one(self, state: FittedState, user: int, n: int, exclude_seen: bool
                       ) -> tuple[np.ndarray, np.ndarray] | None:
        """One stored user's answer by a short path, or None where the general path must run
        (and give its answer or its error)."""
        return None

    def _recommend_indices(self, state: FittedState, users: Any, n: Any, exclude_seen: Any, exclude: Any,
                           candidates: Any, X: Any, recalculate: Any) -> tuple[np.ndarray, np.ndarray, bool]:
        """The padded 2-D answer in indices, and whether one user was asked for."""
        n = check_n(n)
        exclude_seen = check_bool(exclude_seen, "exclude_seen")
        recalculate = check_bool(recalculate, "recalculate")
        mask = exclusion_mask(exclude, state.n_items)
        cands = candidate_ids(candidates, state.n_items)
        fresh = None
        if X is not None:
            fresh = check_interactions(X, "X", dtype=state.dtype, shape=(None, state.n_items), allow_empty=True)
        if users is None:
            if fresh is None:
                raise ValueError("users is required unless X gives the rows of new users (or user_features describes them)")
            user_ids, scalar = None, False
        else:
            user_ids, scalar = check_ids(users, state.n_users, "users")
            if fresh is not None and fresh.shape[0] != user_ids.size:
                raise ValueError(f"X has {fresh.shape[0]} rows but {user_ids.size} users were given; "
                                 "pass one row of X per user")
            if recalculate and fresh is None:
                raise ValueError("recalculate=True needs X, the users' fresh interactions")
        ids, scores = self._rank(state, user_ids, fresh, recalculate, n, exclude_seen, mask, cands)
        return ids, scores, scalar

    def _recommend_featured(self, state: FittedState, users: Any, user_features: Any, n: Any, exclude_seen: Any,
                            exclude: Any, candidates: Any, X: Any) -> tuple[np.ndarray, np.ndarray, bool]:
        """``_recommend_indices`` for new users given by their features (and optionally ``X``)."""
        from .side import rows_for_model
        if users is not None:
            raise ValueError("user_features describes new users: pass users=None (stored users are "
                             "served from their own vectors)")
        n = check_n(n)
        exclude_seen = check_bool(exclude_seen, "exclude_seen")
        rows = rows_for_model(state.user_features, user_features, "user_features")
        fresh = None
        if X is not None:
            fresh = check_interactions(X, "X", dtype=state.dtype, shape=(rows.shape[0], state.n_items),
                                       allow_empty=True)
        ids, scores = self._rank_features(state, rows, fresh, n, exclude_seen,
                                          exclusion_mask(exclude, state.n_items),
                                          candidate_ids(candidates, state.n_items))
        return ids, scores, False

    def _rank_features(self, state: FittedState, rows: sp.csr_matrix, fresh: sp.csr_matrix | None, n: int,
                       exclude_seen: bool, mask: np.ndarray, cands: np.ndarray | None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` for new users given by feature rows in the model's feature space."""
        raise NotImplementedError(f"{type(self).__name__} cannot serve users from their features")

    def _rank(self, state: FittedState, user_ids: np.ndarray | None, fresh: sp.csr_matrix | None,
              recalculate: bool, n: int, exclude_seen: bool, mask: np.ndarray, cands: np.ndarray | None,
              show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The model's top-``n`` (padded 2-D ids and scores) for validated arguments.

        ``user_ids`` None: new users described by ``fresh`` alone.  Otherwise
        stored users; ``fresh`` (when given) adds to what they have seen, and
        with ``recalculate`` replaces their stored profile.
        """
        raise NotImplementedError

    def _similar_top(self, state: FittedState, ids: np.ndarray, n: int, side: str
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Padded top-``n`` most similar (ids, scores) for validated ids of ``side``, the query excluded."""
        raise NotImplementedError(f"{type(self).__name__} has no similar_{side}")

    def _pair_scores(self, state: FittedState, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores of validated, equal-length int32 (user, item) index arrays."""
        raise NotImplementedError

    def recommend_frame(self, users: Any = None, n: int = 10, exclude_seen: bool = True,
                        exclude: Any = None, candidates: Any = None, raw_ids: bool | None = None,
                        backend: str = "pandas", show_progress: bool = False) -> Any:
        """Top-``n`` lists for a batch of stored users as a long table.

        Parameters
        ----------
        users : array of user indices (raw ids with ``raw_ids``), or None for every user
        n, exclude_seen, exclude, candidates
            As in ``recommend``.
        raw_ids : bool, optional
            Raw ids in the arguments and the table.  Default: True when the
            model was fitted from ``fastrec.Interactions``.
        backend : {"pandas", "polars"}
        show_progress : bool
            A progress bar on stderr, one step per chunk of 16,384 users.

        Returns
        -------
        DataFrame with columns ``user_id``, ``rank`` (1-based), ``item_id`` and
        ``score``: one row per recommended item, best first within each user.
        """
        state = self._require_state()
        backend = check_choice(backend, "backend", ("pandas", "polars"))
        if raw_ids is None:
            raw_ids = state.user_map is not None and state.item_map is not None
        raw_ids = check_bool(raw_ids, "raw_ids")
        if users is None:
            user_ids = np.arange(state.n_users, dtype=np.int32)
        else:
            if raw_ids:
                users = raw_to_index(state, "users", np.atleast_1d(users), "users")
            user_ids, _ = check_ids(np.atleast_1d(users), state.n_users, "users")
        exclude, candidates = self._item_index_args(state, exclude, candidates, raw_ids)
        ids, scores = self._rank(state, user_ids, None, False, check_n(n), check_bool(exclude_seen, "exclude_seen"),
                                 exclusion_mask(exclude, state.n_items), candidate_ids(candidates, state.n_items),
                                 check_bool(show_progress, "show_progress"))
        user_col, rank_col, item_col, score_col = long_columns(user_ids, ids, scores)
        if raw_ids:
            user_col, item_col = state.user_map.to_ids(user_col), state.item_map.to_ids(item_col)
        columns = {"user_id": user_col, "rank": rank_col, "item_id": item_col, "score": score_col}
        if backend == "polars":
            try:
                import polars as pl
            except ImportError as exc:
                raise ImportError("backend='polars' needs polars: pip install polars") from exc
            return pl.DataFrame(columns)
        from ..data.tables import require_pandas
        return require_pandas("recommend_frame").DataFrame(columns)

    def _similar(self, ids: Any, n: int, side: str, raw_ids: bool) -> tuple[Any, Any]:
        state = self._require_state()
        n = check_n(n)
        raw_ids = check_bool(raw_ids, "raw_ids")
        if raw_ids:
            ids = raw_to_index(state, side, ids, side)
        total = state.n_items if side == "items" else state.n_users
        ids_arr, scalar = check_ids(ids, total, side)
        out_ids, scores = self._similar_top(state, ids_arr, n, side)
        # a query with neither interactions nor features is similar to nothing, rather than tied with everything
        out_ids[~state.profiled(side)[ids_arr]] = -1
        out_scores = np.where(out_ids >= 0, scores, -np.inf).astype(scores.dtype, copy=False)
        id_map = state.id_map(side)
        if scalar:
            out_ids, out_scores = _single_row(out_ids, out_scores)
            return (id_map.to_ids(out_ids), out_scores) if raw_ids else (out_ids, out_scores)
        if raw_ids:
            return ([id_map.to_ids(row[row >= 0]) for row in out_ids],
                    [s[row >= 0] for row, s in zip(out_ids, out_scores)])
        return out_ids, out_scores

    def similar_items(self, items: Any, n: int = 10, raw_ids: bool = False) -> tuple[Any, Any]:
        """Items most similar to ``items`` by cosine of their factors, the query excluded.

        Returns ``(ids, scores)``: 1-D for one item, 2-D for a batch (padded
        with -1 / -inf like ``recommend``; lists with ``raw_ids=True``).  An
        item with no training interactions (or whose factors are all zero)
        is similar to nothing: its list is empty (all padding in a batch); one
        with side features but no interactions (cold start) is compared by its
        feature vector.
        """
        return self._similar(items, n, "items", raw_ids)

    def similar_users(self, users: Any, n: int = 10, raw_ids: bool = False) -> tuple[Any, Any]:
        """Users most similar to ``users`` by cosine of their factors, the query excluded."""
        return self._similar(users, n, "users", raw_ids)

    def predict(self, users: Any, items: Any, raw_ids: bool = False) -> np.ndarray:
        """Scores of (user, item) pairs; ``users`` and ``items`` broadcast like NumPy arrays."""
        state = self._require_state()
        if check_bool(raw_ids, "raw_ids"):
            users = raw_to_index(state, "users", users, "users")
            items = raw_to_index(state, "items", items, "items")
        u, _ = check_ids(users, state.n_users, "users")
        i, _ = check_ids(items, state.n_items, "items")
        try:
            u, i = np.broadcast_arrays(u, i)
        except ValueError as exc:
            raise ValueError(f"users ({u.size}) and items ({i.size}) must have the same length") from exc
        out = self._pair_scores(state, np.ascontiguousarray(u, dtype=np.int32),
                                np.ascontiguousarray(i, dtype=np.int32))
        if np.ndim(users) == 0 and np.ndim(items) == 0:
            return out[0]
        return out

    def rank(self, user: Any, items: Any, raw_ids: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Order ``items`` for one user: ``(ids, scores)`` sorted by score, ties by lower index."""
        state = self._require_state()
        raw_ids = check_bool(raw_ids, "raw_ids")
        if raw_ids:
            user = raw_to_index(state, "users", user, "user")
            items = raw_to_index(state, "items", items, "items")
        user_id = check_scalar_id(user, state.n_users, "user")
        item_ids, _ = check_ids(items, state.n_items, "items")
        scores = self.predict(np.full(item_ids.size, user_id), item_ids)
        order = np.lexsort((item_ids, -scores))
        ranked = item_ids[order]
        return (state.item_map.to_ids(ranked) if raw_ids else ranked), scores[order]
