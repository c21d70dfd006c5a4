"""The immutable fitted state every model serves from, and how a partial fit derives a new one.

Thread safety: all fitted arrays live in one ``FittedState`` that is replaced
by a single attribute assignment when a fit completes.  Serving calls read
``model._state`` once, so a concurrent ``fit`` or ``partial_fit_*`` is seen
either entirely or not at all.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Mapping

import numpy as np
import scipy.sparse as sp

from ..data.idmap import IdMap
from ..kernels.topk import RankingIndex

__all__ = ["FitParams", "FittedState", "id_maps_of", "replace_rows", "non_finite"]

SIDES = ("users", "items")

# caches that depend on one side's vectors only: a partial fit of the other side keeps them
# (rebuilding the ranking index after every one-user update would cost more than the update)
CACHES_OF_SIDE = {
    "items": ("ranking_index", "gram_items", "fold_in_plan", "normalized_items"),
    "users": ("gram_users", "normalized_users"),
}


class FitParams(Mapping):
    """The checked hyperparameters a state was fitted with: a read-only mapping (picklable)."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any] = ()) -> None:
        object.__setattr__(self, "_values", dict(values))

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("fitted parameters are read-only")

    def __getstate__(self) -> dict:
        return self._values

    def __setstate__(self, values: dict) -> None:
        object.__setattr__(self, "_values", dict(values))

    def __repr__(self) -> str:
        return f"FitParams({self._values!r})"


def _readonly(arr: np.ndarray | None) -> np.ndarray | None:
    if arr is not None:
        arr.flags.writeable = False
    return arr


@dataclass(frozen=True, eq=False)
class FittedState:
    """Everything a fitted model serves from; never mutated after creation.

    ``params`` holds the checked hyperparameters the model was fitted with
    (read-only).  Fold-in, partial fits and ``explain`` use them, so a
    ``set_params`` after ``fit`` does not change what a fitted model answers.
    """

    user_factors: np.ndarray | None  # None for models without user vectors (item-item models)
    item_factors: np.ndarray | None
    user_items: sp.csr_matrix
    item_bias: np.ndarray | None = None
    user_map: IdMap | None = None  # raw ids, when fitted from fastrec.Interactions
    item_map: IdMap | None = None
    params: FitParams = field(default_factory=FitParams)
    # item-item models: S (items x items CSR), a user's score for i is sum_j r_uj S[j, i]
    item_similarity: sp.csr_matrix | None = None
    # side features (fastrec.models.side.SideFeatures), when fitted with user_features/item_features
    user_features: Any = None
    item_features: Any = None
    # lazily filled, derived-only caches (idempotent, so races are harmless)
    cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for factors, count, side in ((self.user_factors, self.user_items.shape[0], "users"),
                                     (self.item_factors, self.user_items.shape[1], "items")):
            if factors is not None and factors.shape[0] != count:
                raise ValueError(f"{side[:-1]} factors have {factors.shape[0]} rows for {count} {side}")
        _readonly(self.user_factors)
        _readonly(self.item_factors)
        _readonly(self.item_bias)
        for matrix in (self.user_items, self.item_similarity):
            if matrix is not None:
                for arr in (matrix.data, matrix.indices, matrix.indptr):
                    _readonly(arr)
        for features, count, side in ((self.user_features, self.user_items.shape[0], "users"),
                                      (self.item_features, self.user_items.shape[1], "items")):
            if features is not None and features.matrix.shape[0] != count:
                raise ValueError(f"{side[:-1]} features have {features.matrix.shape[0]} rows for {count} {side}")
        if not isinstance(self.params, FitParams):
            object.__setattr__(self, "params", FitParams(self.params))

    @property
    def n_users(self) -> int:
        return self.user_items.shape[0]

    @property
    def n_items(self) -> int:
        return self.user_items.shape[1]

    @property
    def dtype(self) -> np.dtype:
        """The model's float type (of its factors, or of its item similarities)."""
        for arr in (self.item_factors, None if self.item_similarity is None else self.item_similarity.data):
            if arr is not None:
                return arr.dtype
        return self.user_items.dtype

    def factors(self, side: str) -> np.ndarray | None:
        return self.user_factors if side == "users" else self.item_factors

    def id_map(self, side: str) -> IdMap | None:
        return self.user_map if side == "users" else self.item_map

    def side_features(self, side: str) -> Any:
        """The ``SideFeatures`` of users or items, or None without features."""
        return self.user_features if side == "users" else self.item_features

    def profiled(self, side: str) -> np.ndarray:
        """Whether each user (item) has interactions or side features: something its vector comes from."""
        known = self.interaction_counts(side) > 0
        features = self.side_features(side)
        return known if features is None else known | features.has_features()

    def ranking_index(self) -> RankingIndex:
        """Items sorted by (bias-augmented) norm, for exact early termination in top-K."""
        index = self.cache.get("ranking_index")
        if index is None:
            index = RankingIndex.build(self.item_factors, self.item_bias)
            self.cache["ranking_index"] = index
        return index

    def interaction_counts(self, side: str) -> np.ndarray:
        """How many stored interactions each user (row) or item (column) has."""
        key = f"counts_{side}"
        value = self.cache.get(key)
        if value is None:
            seen = self.user_items
            value = (np.diff(seen.indptr) if side == "users"
                     else np.bincount(seen.indices, minlength=self.n_items))
            value = _readonly(value)
            self.cache[key] = value
        return value

    def normalized(self, side: str) -> np.ndarray:
        """Row-normalised user or item factors, for cosine similarity."""
        key = f"normalized_{side}"
        value = self.cache.get(key)
        if value is None:
            factors = self.factors(side)
            norms = np.linalg.norm(factors, axis=1, keepdims=True)
            value = _readonly(factors / np.where(norms > 0, norms, 1))
            self.cache[key] = value
        return value

    def with_rows(self, side: str, ids: np.ndarray, vectors: np.ndarray, rows: sp.csr_matrix,
                  id_map: IdMap | None) -> "FittedState":
        """A new state where the users (or items) ``ids`` have ``vectors`` and interactions ``rows``.

        ``rows`` is one row per id, in users x items orientation for users and
        items x users for items.  Ids past the end grow the model; the rows in
        between start empty with zero vectors.  ``id_map`` is the side's map
        after growth.
        """
        from .side import grow_rows
        own_count = self.n_users if side == "users" else self.n_items
        new_count = max(own_count, int(ids.max()) + 1 if ids.size else 0)
        features = grow_rows(self.side_features(side), new_count)
        factors = self.factors(side)
        if factors is not None:
            old = factors
            factors = np.empty((new_count, old.shape[1]), dtype=old.dtype)
            factors[:own_count] = old
            factors[own_count:] = 0
            factors[ids] = vectors
        other = "items" if side == "users" else "users"
        kept = {key: self.cache[key] for key in CACHES_OF_SIDE[other] if key in self.cache}
        if side == "users":
            seen = replace_rows(self.user_items, ids, rows, new_count)
            return replace(self, user_factors=factors, user_items=seen, user_map=id_map, user_features=features,
                           cache=kept)
        seen = replace_rows(self.user_items.T.tocsr(), ids, rows, new_count).T.tocsr()
        seen.sort_indices()
        seen.indices = seen.indices.astype(np.int32, copy=False)
        bias = None
        if self.item_bias is not None:
            bias = np.zeros(new_count, dtype=self.item_bias.dtype)
            bias[:self.item_bias.size] = self.item_bias
        return replace(self, item_factors=factors, user_items=seen, item_bias=bias, item_map=id_map,
                       item_features=features, cache=kept)


def id_maps_of(X: Any) -> tuple[IdMap | None, IdMap | None]:
    """The (user_map, item_map) of a ``fastrec.Interactions``-like input, else (None, None)."""
    user_map = getattr(X, "user_map", None)
    item_map = getattr(X, "item_map", None)
    if isinstance(user_map, IdMap) and isinstance(item_map, IdMap):
        return user_map, item_map
    return None, None


def replace_rows(matrix: sp.csr_matrix, ids: np.ndarray, rows: sp.csr_matrix, n_rows: int) -> sp.csr_matrix:
    """``matrix`` grown to ``n_rows`` (new rows empty), with rows ``ids`` replaced by ``rows``.

    One pass of slice copies over the stored entries (no scipy stacking or
    fancy indexing, which cost several times more on a big matrix).
    """
    old_count = matrix.shape[0]
    lengths = np.zeros(n_rows, dtype=np.int64)
    lengths[:old_count] = np.diff(matrix.indptr)
    lengths[ids] = np.diff(rows.indptr)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    indices = np.empty(int(indptr[-1]), dtype=np.int32)
    data = np.empty(int(indptr[-1]), dtype=matrix.dtype)
    # copy the untouched stretches between replaced rows in one slice each
    order = np.sort(ids[ids < old_count])
    src_start = 0
    row_start = 0
    for row in np.append(order, old_count):
        src_end = int(matrix.indptr[row]) if row < old_count else int(matrix.indptr[old_count])
        dst = int(indptr[row_start])
        indices[dst:dst + src_end - src_start] = matrix.indices[src_start:src_end]
        data[dst:dst + src_end - src_start] = matrix.data[src_start:src_end]
        if row < old_count:
            src_start = int(matrix.indptr[row + 1])
            row_start = row + 1
    rows = rows.astype(matrix.dtype)
    rows.sort_indices()
    for k, row in enumerate(ids):
        lo, hi = rows.indptr[k], rows.indptr[k + 1]
        indices[indptr[row]:indptr[row + 1]] = rows.indices[lo:hi]
        data[indptr[row]:indptr[row + 1]] = rows.data[lo:hi]
    out = sp.csr_matrix((data, indices, indptr), shape=(n_rows, matrix.shape[1]))
    out.indices, out.indptr = indices, indptr  # keep int32 indices (scipy may widen them)
    out.has_sorted_indices = True
    return out


def non_finite(*arrays: np.ndarray | None) -> bool:
    """Whether any of the arrays holds NaN or an infinity (one pass each, no big temporaries)."""
    for arr in arrays:
        # a sum is NaN exactly when some entry is NaN or infinite (or the sum overflows,
        # which only happens for values no model should have)
        if arr is not None and arr.size and not np.isfinite(np.sum(arr, dtype=np.float64)):
            return True
    return False
