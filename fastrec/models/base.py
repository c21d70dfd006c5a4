"""The factor-model base class: parameters, fitted state and the serving API.

Every model scores a (user, item) pair as ``user_factors_[u] . item_factors_[i]``
plus ``item_bias_[i]`` where the model has biases.  Subclasses implement
``fit`` and ``_fold_in`` (factors for users from fresh interaction rows).

Thread safety: all fitted arrays live in one immutable ``FittedState`` that is
replaced by a single attribute assignment when a fit completes.  Serving calls
read ``self._state`` once, so a concurrent ``fit`` or ``partial_fit_*`` is seen
either entirely or not at all.
"""
from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..data.idmap import IdMap
from ..kernels.topk import RankingIndex, candidate_ids, csr_rows, exclusion_mask, top_k
from ..utils.threads import resolve_num_threads
from ..utils.validation import (check_bool, check_dtype, check_ids, check_int, check_interactions, check_n,
                          check_num_threads, check_random_state, check_scalar_id)
from ..exceptions import NotFittedError

__all__ = ["FactorModel", "FittedState", "id_maps_of"]


def _readonly(arr: np.ndarray | None) -> np.ndarray | None:
    if arr is not None:
        arr.flags.writeable = False
    return arr


@dataclass(frozen=True, eq=False)
class FittedState:
    """Everything a fitted model serves from; never mutated after creation."""

    user_factors: np.ndarray
    item_factors: np.ndarray
    user_items: sp.csr_matrix
    item_bias: np.ndarray | None = None
    user_map: IdMap | None = None  # raw ids, when fitted from fastrec.Interactions
    item_map: IdMap | None = None
    # lazily filled, derived-only caches (idempotent, so races are harmless)
    cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        _readonly(self.user_factors)
        _readonly(self.item_factors)
        _readonly(self.item_bias)
        for arr in (self.user_items.data, self.user_items.indices, self.user_items.indptr):
            _readonly(arr)

    @property
    def n_users(self) -> int:
        return self.user_factors.shape[0]

    @property
    def n_items(self) -> int:
        return self.item_factors.shape[0]

    def ranking_index(self) -> "RankingIndex":
        """Items sorted by (bias-augmented) norm, for exact early termination in top-K."""
        index = self.cache.get("ranking_index")
        if index is None:
            index = RankingIndex.build(self.item_factors, self.item_bias)
            self.cache["ranking_index"] = index
        return index

    def normalized(self, side: str) -> np.ndarray:
        """Row-normalised user or item factors, for cosine similarity."""
        key = f"normalized_{side}"
        value = self.cache.get(key)
        if value is None:
            factors = self.user_factors if side == "users" else self.item_factors
            norms = np.linalg.norm(factors, axis=1, keepdims=True)
            value = _readonly(factors / np.where(norms > 0, norms, 1))
            self.cache[key] = value
        return value


# users per chunk of a large recommend batch (bounds its working memory)
_RECOMMEND_CHUNK = 16384


def id_maps_of(X: Any) -> tuple[IdMap | None, IdMap | None]:
    """The (user_map, item_map) of a ``fastrec.Interactions``-like input, else (None, None)."""
    user_map = getattr(X, "user_map", None)
    item_map = getattr(X, "item_map", None)
    if isinstance(user_map, IdMap) and isinstance(item_map, IdMap):
        return user_map, item_map
    return None, None


def _single_row(ids: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A one-query answer as 1-D arrays holding only the eligible entries (no padding)."""
    valid = ids[0] >= 0
    return ids[0][valid], scores[0][valid]


def _self_exclusion(ids: np.ndarray, n_total: int) -> sp.csr_matrix:
    """A CSR with one entry per row: the query itself, for similar_* calls."""
    m = ids.size
    return sp.csr_matrix((np.ones(m, dtype=np.float32), ids, np.arange(m + 1)), shape=(m, n_total))


class FactorModel:
    """Base class of fastrec's latent-factor models.

    Hyperparameters are the ``__init__`` arguments, stored unchanged; they are
    validated by ``fit`` (scikit-learn conventions).
    """

    _state: FittedState | None = None
    _fit_lock: threading.Lock

    def __new__(cls, *args: Any, **kwargs: Any):
        obj = super().__new__(cls)
        obj._fit_lock = threading.Lock()
        return obj

    # ------------------------------------------------------------------ params
    @classmethod
    def _get_param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values()
                      if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Hyperparameters as a dict (scikit-learn convention)."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params: Any) -> "FactorModel":
        """Set hyperparameters; unknown names raise ``ValueError``.  Returns self."""
        valid = set(self._get_param_names())
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}; "
                                 f"valid parameters are {sorted(valid)}")
            setattr(self, name, value)
        return self

    def _check_common_params(self) -> dict[str, Any]:
        """Checks of the hyperparameters every factor model shares."""
        return {
            "factors": check_int(self.factors, "factors", minimum=1, maximum=4096),
            "iterations": check_int(self.iterations, "iterations", minimum=0),
            "dtype": check_dtype(self.dtype),
            "num_threads": resolve_num_threads(check_num_threads(self.num_threads)),
            "show_progress": check_bool(self.show_progress, "show_progress"),
            "random_state": check_random_state(self.random_state),
        }

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if defaults.get(k) is not v
                   and not (isinstance(v, (int, float, str)) and defaults.get(k) == v)]
        return f"{type(self).__name__}({', '.join(changed)})"

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_fit_lock", None)  # locks do not pickle
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._fit_lock = threading.Lock()

    # ------------------------------------------------------------ fitted state
    def _require_state(self) -> FittedState:
        state = self._state
        if state is None:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(X) first")
        return state

    @property
    def user_factors_(self) -> np.ndarray:
        """(n_users, factors) user vectors, read-only."""
        return self._require_state().user_factors

    @property
    def item_factors_(self) -> np.ndarray:
        """(n_items, factors) item vectors, read-only."""
        return self._require_state().item_factors

    @property
    def item_bias_(self) -> np.ndarray | None:
        """(n_items,) item biases, or None for models without biases."""
        return self._require_state().item_bias

    @property
    def user_items_(self) -> sp.csr_matrix:
        """The users x items interactions seen at fit time (excluded by ``recommend``)."""
        return self._require_state().user_items

    @property
    def user_map_(self) -> IdMap | None:
        """Raw user ids (``IdMap``) when fitted from ``fastrec.Interactions``, else None."""
        return self._require_state().user_map

    @property
    def item_map_(self) -> IdMap | None:
        """Raw item ids (``IdMap``) when fitted from ``fastrec.Interactions``, else None."""
        return self._require_state().item_map

    @property
    def n_users_(self) -> int:
        return self._require_state().n_users

    @property
    def n_items_(self) -> int:
        return self._require_state().n_items

    def _serving_threads(self) -> int:
        return resolve_num_threads(getattr(self, "num_threads", 0))

    # -------------------------------------------------------------- fold-in
    def _fold_in(self, state: FittedState, X_rows: sp.csr_matrix) -> np.ndarray:
        """Factors for users described only by ``X_rows`` (validated CSR), not stored."""
        raise NotImplementedError(f"{type(self).__name__} cannot compute factors for new users")

    # -------------------------------------------------------------- serving
    def recommend(self, users: Any = None, n: int = 10, exclude_seen: bool = True,
                  exclude: Any = None, candidates: Any = None, X: Any = None,
                  recalculate: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` items for one user or a batch of users.

        Parameters
        ----------
        users : int or array of int, or None
            User indices.  ``None`` with ``X`` recommends for new users described
            by the rows of ``X`` (fold-in, where the model supports it).
        n : int
            Number of items per user.
        exclude_seen : bool
            Skip the items each user interacted with at fit time, and those in ``X``.
        exclude : array of int, optional
            Item ids excluded for every user.
        candidates : array of int, optional
            Rank only these items.
        X : sparse matrix, optional
            Fresh interactions, one row per requested user (users x items).
        recalculate : bool
            With ``users`` and ``X``: recompute those users' factors from ``X``
            instead of using the stored ones.

        Returns
        -------
        ids, scores
            1-D arrays for a single user, 2-D ``(len(users), n)`` for a batch.
            Sorted by score descending, ties by lower item id.  A single user's
            arrays hold only eligible items.  A batch has
            ``min(n, number of ranked items)`` columns; rows with fewer eligible
            items are padded with id ``-1`` and score ``-inf``.
        """
        state = self._require_state()
        n = check_n(n)
        exclude_seen = check_bool(exclude_seen, "exclude_seen")
        recalculate = check_bool(recalculate, "recalculate")
        fresh = None
        if X is not None:
            fresh = check_interactions(X, "X", dtype=state.item_factors.dtype,
                                       shape=(None, state.n_items), allow_empty=True)
        if users is None:
            if fresh is None:
                raise ValueError("users is required unless X gives the rows of new users")
            queries = self._fold_in(state, fresh)
            scalar, user_ids = False, None
        else:
            user_ids, scalar = check_ids(users, state.n_users, "users")
            if fresh is not None and fresh.shape[0] != user_ids.size:
                raise ValueError(f"X has {fresh.shape[0]} rows but {user_ids.size} users were given; "
                                 "pass one row of X per user")
            if recalculate:
                if fresh is None:
                    raise ValueError("recalculate=True needs X, the users' fresh interactions")
                queries = self._fold_in(state, fresh)
            elif fresh is None:
                ids, scores = self._recommend_stored(state, user_ids, n, exclude_seen, exclude, candidates)
                return _single_row(ids, scores) if scalar else (ids, scores)
            else:
                queries = state.user_factors[user_ids]

        seen = None
        if exclude_seen:
            if user_ids is None:
                seen = fresh
            else:
                # union of the patterns: adding raw values could cancel an entry out
                seen = (abs(state.user_items[user_ids]) + abs(fresh)).tocsr()
                seen.sort_indices()
        ids, scores = top_k(queries, state.item_factors, state.item_bias, n, seen,
                            exclusion_mask(exclude, state.n_items),
                            candidate_ids(candidates, state.n_items),
                            1 if queries.shape[0] == 1 else self._serving_threads(),
                            index=state.ranking_index())
        return _single_row(ids, scores) if scalar else (ids, scores)

    def _recommend_stored(self, state: FittedState, user_ids: np.ndarray, n: int, exclude_seen: bool,
                          exclude: Any, candidates: Any) -> tuple[np.ndarray, np.ndarray]:
        """Stored users, a chunk at a time: the gathered query vectors and seen
        rows stay a fixed size however many users are asked for."""
        mask = exclusion_mask(exclude, state.n_items)
        cands = candidate_ids(candidates, state.n_items)
        index = state.ranking_index()
        threads = 1 if user_ids.size == 1 else self._serving_threads()
        ids = scores = None
        for start in range(0, max(user_ids.size, 1), _RECOMMEND_CHUNK):  # once even when empty
            chunk = user_ids[start:start + _RECOMMEND_CHUNK]
            seen = csr_rows(state.user_items, chunk) if exclude_seen else None
            part_ids, part_scores = top_k(state.user_factors[chunk], state.item_factors, state.item_bias,
                                          n, seen, mask, cands, threads, index=index)
            if ids is None:
                ids = np.empty((user_ids.size, part_ids.shape[1]), dtype=part_ids.dtype)
                scores = np.empty((user_ids.size, part_ids.shape[1]), dtype=part_scores.dtype)
            ids[start:start + chunk.size] = part_ids
            scores[start:start + chunk.size] = part_scores
        return ids, scores

    def _similar(self, ids: Any, n: int, side: str) -> tuple[np.ndarray, np.ndarray]:
        state = self._require_state()
        n = check_n(n)
        total = state.n_items if side == "items" else state.n_users
        ids_arr, scalar = check_ids(ids, total, side)
        normed = state.normalized(side)
        out_ids, scores = top_k(normed[ids_arr], normed, None, n, _self_exclusion(ids_arr, total),
                                num_threads=1 if ids_arr.size == 1 else self._serving_threads())
        return _single_row(out_ids, scores) if scalar else (out_ids, scores)

    def similar_items(self, items: Any, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Items most similar to ``items`` by cosine of their factors, the query excluded.

        Returns ``(ids, scores)``: 1-D for one item, 2-D for a batch (padded
        with -1 / -inf like ``recommend``).
        """
        return self._similar(items, n, "items")

    def similar_users(self, users: Any, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Users most similar to ``users`` by cosine of their factors, the query excluded."""
        return self._similar(users, n, "users")

    def predict(self, users: Any, items: Any) -> np.ndarray:
        """Scores of (user, item) pairs; ``users`` and ``items`` broadcast like NumPy arrays."""
        state = self._require_state()
        u, _ = check_ids(users, state.n_users, "users")
        i, _ = check_ids(items, state.n_items, "items")
        try:
            u, i = np.broadcast_arrays(u, i)
        except ValueError as exc:
            raise ValueError(f"users ({u.size}) and items ({i.size}) must have the same length") from exc
        u = np.ascontiguousarray(u, dtype=np.int32)
        i = np.ascontiguousarray(i, dtype=np.int32)
        out = np.empty(u.size, dtype=state.item_factors.dtype)
        bias = state.item_bias if state.item_bias is not None else np.empty(0, out.dtype)
        from ..kernels import load_kernel
        load_kernel("topk").pair_scores(state.user_factors, state.item_factors, bias, u, i, out,
                                        1 if u.size < 10000 else self._serving_threads())
        if np.ndim(users) == 0 and np.ndim(items) == 0:
            return out[0]
        return out

    def rank(self, user: int, items: Any) -> tuple[np.ndarray, np.ndarray]:
        """Order ``items`` for one user: ``(ids, scores)`` sorted by score, ties by lower id."""
        state = self._require_state()
        user_id = check_scalar_id(user, state.n_users, "user")
        item_ids, _ = check_ids(items, state.n_items, "items")
        scores = self.predict(np.full(item_ids.size, user_id), item_ids)
        order = np.lexsort((item_ids, -scores))
        return item_ids[order], scores[order]

    # ---------------------------------------------------------- persistence
    def save(self, path: Any) -> None:
        """Write the model to ``path`` atomically (a versioned, checksummed ``.npz``).

        Model files contain no pickle and loading them runs no code.
        ``pickle.dumps(model)`` also works (for multiprocessing), but never
        unpickle data from an untrusted source.
        """
        from ..persistence import save_model
        save_model(self, path)

    @classmethod
    def load(cls, path: Any) -> "FactorModel":
        """Read a model written by ``save``; raises ``ModelFormatError`` for bad files."""
        from ..persistence import load_model
        return load_model(path, expected_class=cls)
