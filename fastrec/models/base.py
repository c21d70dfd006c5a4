"""The model base class: hyperparameters, the one fit template, partial fits and the fitted attributes.

Every model, today's and tomorrow's, fits through ``FactorModel._fit_template``:
check the hyperparameters and the data, run the model's own ``_fit``, check
the result is finite, and swap in the new immutable ``FittedState`` under the
model's lock.  Partial fits (``partial_fit_users``/``partial_fit_items``) go
through ``_partial_fit`` the same way.  Serving lives in ``serving.py``.
"""
from __future__ import annotations

import inspect
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..data.idmap import IdMap
from ..exceptions import NotFittedError
from ..utils.progress import logger
from ..utils.threads import resolve_num_threads
from ..utils.validation import (CSR_TYPES, check_bool, check_dtype, check_ids, check_int, check_interactions,
                                check_num_threads, check_random_state, check_raw_ids)
from .serving import ServingMixin, raw_to_index
from .state import FittedState, id_maps_of, non_finite

__all__ = ["Recommender", "FittedState", "Fitted"]

# stored entries beyond which check_interactions' int32 indices would not do
_INT32_MAX = np.iinfo(np.int32).max


@dataclass
class Fitted:
    """What a model's ``_fit`` returns: its factors (or item similarities) and its extra fitted attributes."""

    user_factors: np.ndarray | None
    item_factors: np.ndarray | None
    item_bias: np.ndarray | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    item_similarity: sp.csr_matrix | None = None
    user_features: Any = None  # SideFeatures of each side fitted with features
    item_features: Any = None


class Recommender(ServingMixin):
    """Base class of every fastrec model.

    Hyperparameters are the ``__init__`` arguments, stored unchanged; they are
    validated by ``fit`` (scikit-learn conventions).  Subclasses implement
    ``_check_params``, ``_fit`` (data -> ``Fitted``), ``_fold_in`` and
    ``_solve_rows`` (vectors for rows against the other side, held fixed),
    and call ``_fit_template`` from their documented ``fit``.
    """

    _state: FittedState | None = None
    _fit_lock: threading.Lock
    # the FittedState fields this class serves from (a model file must provide them)
    _state_members: tuple[str, ...] = ()
    # whether _fit takes side features (fit(X, user_features=..., item_features=...))
    _takes_features: bool = False

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

    def set_params(self, **params: Any) -> "Recommender":
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

    # -------------------------------------------------------------- fit template
    def _check_params(self) -> dict[str, Any]:
        """The checked hyperparameters (subclasses check theirs)."""
        return {}

    def _fit(self, X: sp.csr_matrix, params: dict[str, Any], **fit_args: Any) -> Fitted:
        raise NotImplementedError

    def _divergence_hint(self, params: dict[str, Any]) -> str:
        """What to change when training produced non-finite factors."""
        return "check the input values and the hyperparameters"

    def _fit_template(self, X: Any, user_features: Any = None, item_features: Any = None,
                      **fit_args: Any) -> "Recommender":
        """Check, fit and swap in the new state; the previous state stays on any error.

        With side features, ``_fit`` gets ``features=(user side, item side)``
        (``fastrec.models.side.SideFeatures`` or None), aligned with the rows
        and columns of the interactions it gets.
        """
        params = self._check_params()
        csr, user_map, item_map = self._fit_input(X, params)
        if user_features is not None or item_features is not None:
            if not self._takes_features:
                raise TypeError(f"{type(self).__name__} does not use side features (user_features, "
                                "item_features); BPR and ALS do")
            from .side import prepare_features
            csr, user_map, item_map, *sides = prepare_features(csr, user_map, item_map, user_features,
                                                               item_features, params["dtype"])
            fit_args["features"] = tuple(sides)
        with self._fit_lock:  # a concurrent partial fit waits, then applies to the new model
            start = time.perf_counter()
            fitted = self._fit(csr, params, **fit_args)
            if non_finite(fitted.user_factors, fitted.item_factors, fitted.item_bias,
                          None if fitted.item_similarity is None else fitted.item_similarity.data):
                raise FloatingPointError(f"{type(self).__name__} training diverged: the factors became NaN "
                                         f"or infinite; {self._divergence_hint(params)}. The model keeps "
                                         "its previous fitted state.")
            state = FittedState(fitted.user_factors, fitted.item_factors, csr, fitted.item_bias,
                                user_map, item_map, params, fitted.item_similarity, fitted.user_features,
                                fitted.item_features)
            for name, value in fitted.attributes.items():
                setattr(self, name, value)
            self._state = state
        logger.info("%s fitted on %d users x %d items (%d interactions) in %.2f s", type(self).__name__,
                    csr.shape[0], csr.shape[1], csr.nnz, time.perf_counter() - start)
        return self

    def _fit_input(self, X: Any, params: dict[str, Any]) -> tuple[sp.csr_matrix, IdMap | None, IdMap | None]:
        """The checked interactions ``_fit`` learns from (kept for serving) and their raw-id maps.

        A canonical CSR is read in place (and kept, read-only, for serving);
        anything else is copied once.  A trainer whose data lives elsewhere
        (``fastrec.distributed.DaskALS`` on a Dask DataFrame) overrides this.
        """
        csr = check_interactions(X, "X", dtype=params["dtype"], copy=False)
        if csr.nnz == 0:
            raise ValueError(f"X holds no interactions (shape {csr.shape}, every value zero or filtered "
                             "out); there is nothing to learn from")
        user_map, item_map = id_maps_of(X)
        return csr, user_map, item_map

    def _fitted_params(self, state: FittedState) -> dict[str, Any]:
        """The hyperparameters ``state`` was fitted with (current ones for hand-built states)."""
        return dict(state.params) if state.params else self._check_params()

    # -------------------------------------------------------------- partial fits
    def _solve_rows(self, state: FittedState, rows: sp.csr_matrix, side: str, start: np.ndarray,
                    **kwargs: Any) -> np.ndarray:
        """Vectors for ``side`` rows from their interactions, the other side held fixed."""
        raise NotImplementedError(f"{type(self).__name__} cannot update {side} in place")

    def _partial_fit(self, side: str, ids: Any, X: Any, raw_ids: bool, **kwargs: Any) -> "Recommender":
        """Replace (or add) the users or items ``ids`` with vectors solved from their interactions.

        ``X`` is users x items: one row per user, or one column per item.
        """
        if raw_ids is not False:  # the default needs no check
            raw_ids = check_bool(raw_ids, "raw_ids")
        with self._fit_lock:  # one writer at a time; readers keep the old state
            state = self._state or self._require_state()  # (the call only raises)
            if not raw_ids and side == "users" and not kwargs:
                updated = self._partial_fit_one_user(state, ids, X)
                if updated is not None:
                    self._state = updated
                    return self
            ids_name, X_name = ("user_ids", "X_rows") if side == "users" else ("item_ids", "X_cols")
            own_count = state.n_users if side == "users" else state.n_items
            if raw_ids:
                ids_arr, id_map = self._grow_raw_ids(state, side, ids, ids_name)
            else:
                ids_arr = check_ids(ids, _INT32_MAX, ids_name)[0]
                id_map = state.id_map(side)
            if np.unique(ids_arr).size != ids_arr.size:
                raise ValueError(f"{ids_name} contains duplicates")
            growth_limit = own_count + max(1024, 2 * ids_arr.size, own_count)
            new_count = max(own_count, int(ids_arr.max()) + 1 if ids_arr.size else 0)
            if new_count > growth_limit:
                raise ValueError(f"{ids_name} contains id {new_count - 1}, which would grow the model from "
                                 f"{own_count} to {new_count} {side}; new ids must be below {growth_limit} "
                                 f"(add {side} with consecutive ids)")
            if new_count > own_count and id_map is not None and not raw_ids:
                raise ValueError(f"{ids_name} adds {side} {own_count}..{new_count - 1} to a model with raw "
                                 f"{side[:-1]} ids; pass their raw ids with raw_ids=True so the id map grows "
                                 "with them")
            dtype = state.dtype
            other_count = state.n_items if side == "users" else state.n_users
            shape = (ids_arr.size, other_count) if side == "users" else (other_count, ids_arr.size)
            given = check_interactions(X, X_name, dtype=dtype, shape=(None, shape[1]) if side == "users"
                                       else (shape[0], None), allow_empty=True)
            if given.shape != shape:
                per = "row per user" if side == "users" else "column per item"
                raise ValueError(f"{X_name} has shape {given.shape} but {ids_arr.size} {ids_name} were given; "
                                 f"pass one {per} ({shape})")
            rows = given if side == "users" else given.T.tocsr()
            rows.indices = rows.indices.astype(np.int32, copy=False)
            vectors = None
            start = state.factor_rows(side, ids_arr)  # current vectors (through pending updates), new ids zero
            if start is not None:  # item-item models keep no vectors: the rows are the update
                vectors = self._solve_rows(state, rows, side, start, **kwargs)
            if non_finite(vectors):
                raise FloatingPointError(f"{type(self).__name__}: the updated {side} vectors are NaN or "
                                         f"infinite; {self._divergence_hint(self._fitted_params(state))}. "
                                         "The model is unchanged.")
            if id_map is not None and len(id_map) != new_count:
                raise ValueError(f"{ids_name}: the raw {side[:-1]} ids do not cover the new {side}")
            self._state = state.with_rows(side, ids_arr, vectors, rows, id_map)
        return self

    def _solve_one_user(self, state: FittedState, indptr: Any, indices: Any, data: Any) -> np.ndarray | None:
        """One user's partial-fit vector (1 x f) from a single CSR row's arrays, or None.

        The latency path of ``partial_fit_users``: the implementation checks
        the arrays itself (dtypes, sorted unique in-range columns, finite
        non-zero values) and returns None for anything it does not handle or
        whose solution is not finite, which then takes the validated general path.  Models whose user update
        is an exact fold-in (ALS) override it; by default there is none.
        """
        return None

    def _partial_fit_one_user(self, state: FittedState, ids: Any, X: Any) -> FittedState | None:
        """The new state for one stored user's canonical CSR row by ``_solve_one_user``, else None."""
        items = state.item_factors  # its rows count the items, and ndarray.shape costs no Python call
        if type(X) not in CSR_TYPES or items is None or X.shape != (1, items.shape[0]):
            return None
        user = ids[0] if type(ids) is list and len(ids) == 1 else ids  # [u] without NumPy calls
        if type(user) is not int:
            user = check_ids(ids, _INT32_MAX, "user_ids")[0]
            if user.size != 1:
                return None  # several users: the general path
            user = int(user[0])
        if not 0 <= user < state.n_users:
            return None  # a new user, or a bad id: the general path grows the model or raises
        indptr, indices, data = X.indptr, X.indices, X.data
        vector = self._solve_one_user(state, indptr, indices, data)
        if vector is None:
            return None  # the general path checks the row (and raises for a non-finite update)
        # the kernel checked the row: canonical, so its arrays are the stored row's
        return state.with_one_user_row(user, vector[0], indices, data)

    def _grow_raw_ids(self, state: FittedState, side: str, raw: Any, name: str) -> tuple[np.ndarray, IdMap]:
        """Indices of raw ids, with ids the model does not know appended (in the order given)."""
        id_map = state.id_map(side)
        if id_map is None:
            raw_to_index(state, side, raw, name)  # raises the "no raw ids" error
        labels = check_raw_ids(np.atleast_1d(np.asarray(raw)), name)
        if labels.dtype.kind != id_map.labels.dtype.kind:
            kinds = {"i": "integers", "U": "strings"}
            raise TypeError(f"{name} holds {kinds.get(labels.dtype.kind, labels.dtype)} but the model's raw "
                            f"{side[:-1]} ids are {kinds.get(id_map.labels.dtype.kind, id_map.labels.dtype)}")
        index = id_map.to_index(labels, unknown="mask")
        new = index < 0
        if new.any():
            fresh_labels = labels[new]
            if np.unique(fresh_labels).size != fresh_labels.size:
                raise ValueError(f"{name} contains duplicates")
            index[new] = len(id_map) + np.arange(fresh_labels.size)
            id_map = IdMap(np.concatenate([id_map.labels, fresh_labels]))
        return index.astype(np.int32), id_map

    # ------------------------------------------------------------ fitted state
    def _require_state(self) -> FittedState:
        state = self._state
        if state is None:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(X) first")
        return state

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
    def load(cls, path: Any) -> "Recommender":
        """Read a model written by ``save``; raises ``ModelFormatError`` for bad files."""
        from ..persistence import load_model
        return load_model(path, expected_class=cls)
