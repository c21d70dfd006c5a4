"""Side features inside a fitted model: what a state keeps per side, and how inputs are aligned.

A model fitted with ``user_features``/``item_features`` keeps, for each side
that has them, a ``SideFeatures``: the rows x features matrix aligned with the
model's users or items, the feature names, and the map from features to
vectors (``factors``: BPR/WARP's learned feature embeddings, or ALS's ridge
map) with item feature biases where the model has them.  A row's vector from
its features is ``matrix[row] @ factors`` (and its bias ``matrix[row] @ bias``),
which is how cold users and items are scored.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..data.features import Features, check_feature_matrix
from ..data.idmap import IdMap

__all__ = ["SideFeatures", "prepare_features", "rows_for_model", "ridge_map", "fit_ridge_maps", "grow_rows"]

# ridge penalty of the feature -> factor maps of ALS (features are few, rows many: it
# only keeps features that no row with interactions has from being undetermined)
RIDGE_REGULARIZATION = 1.0


def _readonly_csr(matrix: sp.csr_matrix) -> sp.csr_matrix:
    for arr in (matrix.data, matrix.indices, matrix.indptr):
        arr.flags.writeable = False
    return matrix


@dataclass(frozen=True, eq=False)
class SideFeatures:
    """One side's features in a fitted model (immutable).

    ``matrix`` is rows x features, rows aligned with the model's users or
    items; the first ``n_side`` columns are side features, the rest identity
    features (one per row that had interactions at fit time).
    """

    matrix: sp.csr_matrix
    names: np.ndarray
    n_side: int
    normalize: bool = True
    factors: np.ndarray | None = None   # (n_features, k): feature embeddings or the ridge map
    bias: np.ndarray | None = None      # (n_features,): item feature biases (BPR/WARP)
    spec: dict | None = None            # how raw columns map to features (Features.from_frame)

    def __post_init__(self) -> None:
        _readonly_csr(self.matrix)
        for arr in (self.names, self.factors, self.bias):
            if arr is not None:
                arr.flags.writeable = False
        if self.names.shape != (self.matrix.shape[1],):
            raise ValueError(f"{self.names.size} feature names for {self.matrix.shape[1]} features")
        if self.factors is not None and self.factors.shape[0] != self.matrix.shape[1]:
            raise ValueError(f"feature factors have {self.factors.shape[0]} rows for {self.matrix.shape[1]} features")

    @property
    def n_features(self) -> int:
        return int(self.matrix.shape[1])

    def vectors(self, rows: sp.csr_matrix) -> np.ndarray:
        """Vectors of feature rows (in this feature space)."""
        return np.asarray(rows @ self.factors, dtype=self.factors.dtype)

    def biases(self, rows: sp.csr_matrix) -> np.ndarray | None:
        return None if self.bias is None else np.asarray(rows @ self.bias, dtype=self.bias.dtype)

    def has_features(self) -> np.ndarray:
        """Whether each row has any feature."""
        return np.diff(self.matrix.indptr) > 0

    def as_features(self, ids: IdMap | None) -> Features:
        """A ``Features`` view of the side columns (for ``transform`` of new rows)."""
        side = self.matrix[:, :self.n_side]
        return Features(side, self.names[:self.n_side], ids, identity=False, normalize=self.normalize,
                        spec=self.spec)


def grow_rows(features: SideFeatures | None, n_rows: int, ids: np.ndarray | None = None,
              rows: sp.csr_matrix | None = None) -> SideFeatures | None:
    """``features`` grown to ``n_rows`` (new rows empty), rows ``ids`` replaced by ``rows``."""
    if features is None:
        return None
    matrix = features.matrix
    old = matrix.shape[0]
    if n_rows > old:
        indptr = np.concatenate([matrix.indptr, np.full(n_rows - old, matrix.indptr[-1])])
        matrix = sp.csr_matrix((matrix.data, matrix.indices, indptr), shape=(n_rows, matrix.shape[1]))
    if ids is not None and rows is not None and ids.size:
        from .state import replace_rows
        matrix = replace_rows(matrix, ids, rows, n_rows)
    return replace(features, matrix=sp.csr_matrix(matrix))


def _one_side(given: Any, id_map: IdMap | None, n_rows: int, counts: np.ndarray, name: str, dtype: Any
              ) -> tuple[SideFeatures, np.ndarray]:
    """The aligned features of one side and the raw ids of rows appended after ``id_map``."""
    if isinstance(given, Features):
        matrix, names, n_side, new_labels = given.aligned(id_map, n_rows, name)
        if matrix.shape[1] > n_side:  # identity only for rows with interactions: nothing trains the others
            keep = np.ones(matrix.nnz, dtype=bool)
            rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
            untrained = np.zeros(matrix.shape[0], dtype=bool)
            untrained[:counts.size] = counts == 0
            untrained[counts.size:] = True
            keep &= ~((matrix.indices >= n_side) & untrained[rows])
            matrix = sp.csr_matrix((matrix.data[keep], matrix.indices[keep], np.r_[0, np.cumsum(
                np.bincount(rows[keep], minlength=matrix.shape[0]))]), shape=matrix.shape)
            if given.normalize:
                from ..data.features import _normalized
                matrix = _normalized(matrix)
        features = SideFeatures(check_feature_matrix(matrix, name, dtype=dtype), names, n_side, given.normalize,
                                spec=given.spec)
        return features, new_labels
    matrix = check_feature_matrix(given, name, n_rows, dtype=dtype)
    names = np.array([f"feature_{j}" for j in range(matrix.shape[1])], dtype=str)
    return SideFeatures(matrix, names, matrix.shape[1], False), np.empty(0, dtype=np.int64)


def _grown_map(id_map: IdMap | None, new_labels: np.ndarray) -> IdMap | None:
    if id_map is None or new_labels.size == 0:
        return id_map
    labels = new_labels if id_map.labels.dtype.kind == "U" else new_labels.astype(id_map.labels.dtype)
    return IdMap(np.concatenate([id_map.labels, labels]))  # text ids keep their full width


def prepare_features(csr: sp.csr_matrix, user_map: IdMap | None, item_map: IdMap | None, user_features: Any,
                     item_features: Any, dtype: Any
                     ) -> tuple[sp.csr_matrix, IdMap | None, IdMap | None, SideFeatures | None, SideFeatures | None]:
    """Align ``fit``'s feature arguments with the interactions.

    Rows with features but no interactions (``Features`` built with
    ``unknown="append"``) grow the interactions with empty rows or columns,
    and the id maps with their raw ids.

    Returns
    -------
    csr, user_map, item_map, user side, item side (None where not given)
    """
    n_users, n_items = csr.shape
    user_side = item_side = None
    new_users = new_items = np.empty(0)
    if user_features is not None:
        counts = np.diff(csr.indptr)
        user_side, new_users = _one_side(user_features, user_map, n_users, counts, "user_features", dtype)
    if item_features is not None:
        counts = np.bincount(csr.indices, minlength=n_items)
        item_side, new_items = _one_side(item_features, item_map, n_items, counts, "item_features", dtype)
    if new_users.size or new_items.size:
        indptr = np.concatenate([csr.indptr, np.full(new_users.size, csr.indptr[-1], dtype=csr.indptr.dtype)])
        csr = sp.csr_matrix((csr.data, csr.indices, indptr), shape=(n_users + new_users.size,
                                                                      n_items + new_items.size))
        user_map, item_map = _grown_map(user_map, new_users), _grown_map(item_map, new_items)
    return csr, user_map, item_map, user_side, item_side


def rows_for_model(features: SideFeatures | None, given: Any, name: str, n_rows: int | None = None
                   ) -> sp.csr_matrix:
    """Feature rows of new users or items, in the model's feature space; errors name ``name``.

    ``given`` is ``fastrec.Features`` (matched to the model's features by
    name; identity features of new rows are empty) or a matrix with one
    column per model feature, or per side feature (identity columns then empty).
    """
    if features is None:
        raise ValueError(f"{name}: the model was fitted without {name}; refit with fit(X, {name}=...)")
    if isinstance(given, Features):
        rows = given.rows_in(features.names, features.n_side, name)
        if n_rows is not None and rows.shape[0] != n_rows:
            raise ValueError(f"{name} has {rows.shape[0]} rows but {n_rows} were expected")
        return rows.astype(features.factors.dtype)
    matrix = check_feature_matrix(given, name, n_rows, dtype=features.factors.dtype)
    if matrix.shape[1] == features.n_side and features.n_side != features.n_features:
        matrix = sp.csr_matrix((matrix.data, matrix.indices, matrix.indptr),
                               shape=(matrix.shape[0], features.n_features))
    if matrix.shape[1] != features.n_features:
        raise ValueError(f"{name} has {matrix.shape[1]} columns but the model has {features.n_features} "
                         f"features ({features.n_side} without identity features)")
    return matrix


def ridge_map(F: sp.csr_matrix, targets: np.ndarray, rows: np.ndarray, regularization: float) -> np.ndarray:
    """W minimising ``||F[rows] W - targets[rows]||^2 + regularization ||W||^2`` (exact, float64 solve)."""
    Fw = F[rows].astype(np.float64)
    gram = np.asarray((Fw.T @ Fw).todense()) + regularization * np.eye(F.shape[1])
    rhs = np.asarray(Fw.T @ targets[rows].astype(np.float64))
    return np.linalg.solve(gram, rhs).astype(targets.dtype)


def fit_ridge_maps(features: tuple[SideFeatures | None, SideFeatures | None] | None, csr: sp.csr_matrix,
                   user_factors: np.ndarray, item_factors: np.ndarray) -> tuple[SideFeatures | None, ...]:
    """Maps from side features to the factors of rows with interactions; rows without get mapped vectors.

    For each side with features, ``W = ridge_map(side columns, factors, rows with interactions)``;
    identity features map to zero (no new row has one).  The factors of rows
    with no interactions are replaced, in place, by their features' image.
    Returns the sides with ``factors=W`` (None where there are no features).
    """
    if features is None:
        return None, None
    out = []
    for side, factors, counts in ((features[0], user_factors, np.diff(csr.indptr)),
                                  (features[1], item_factors, np.bincount(csr.indices, minlength=csr.shape[1]))):
        if side is None:
            out.append(None)
            continue
        warm = np.flatnonzero(counts > 0)
        W = np.zeros((side.n_features, factors.shape[1]), dtype=factors.dtype)
        if side.n_side and warm.size:
            W[:side.n_side] = ridge_map(side.matrix[:, :side.n_side], factors, warm, RIDGE_REGULARIZATION)
        cold = np.flatnonzero(counts == 0)
        if cold.size:
            factors[cold] = side.matrix[cold] @ W
        out.append(replace(side, factors=W))
    return tuple(out)
