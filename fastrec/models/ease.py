"""EASE: the closed-form item-item linear model of Steck (WWW 2019).

    B = I - P diag(1 / diag(P)),   P = (X^T X + lambda I)^-1,

so diag(B) = 0 and a user's score for item i is ``x_u . B[:, i]``.  P comes
from a Cholesky factorisation and LAPACK's symmetric inverse from it
(``potrf`` + ``potri``), never a general inverse, in the model's dtype
(float32 by default).  B is dense, items x items: the model refuses, with the
figure, a catalogue whose matrices would not fit in the memory available.

Serving treats EASE as a factor model whose item vectors are the columns of
B and whose user vectors are the users' interaction rows, densified a chunk
of users at a time, so ``recommend`` runs on the same exact top-K kernel as
ALS and new users fold in as ``x B`` without any solve.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from ..utils.threads import resolve_num_threads
from ..utils.validation import check_dtype, check_float, check_num_threads
from .base import Fitted
from .factors import FactorModel
from .item_item import explain_item_item, item_features_only, liked_rows
from .side import fit_ridge_maps
from .state import FittedState

__all__ = ["EASE"]

# dense items x items matrices alive at once while fitting (the Gram/inverse, B's transpose, a temporary)
_FIT_COPIES = 3
# dense query rows per recommend chunk (bounds the densified users' memory)
_QUERY_BYTES = 64 << 20


def _symmetric_from_upper(filled: np.ndarray, block: int = 512) -> np.ndarray:
    """The symmetric matrix of which LAPACK's ``potri`` filled the upper triangle (Fortran order), in place.

    Returned C-contiguous (the transpose of the Fortran array, the same matrix once
    symmetric); the other triangle is copied over block by block, so no
    items x items temporary is made.
    """
    out = filled.T  # C-contiguous; the filled triangle is now its lower one
    n = out.shape[0]
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        diagonal = out[lo:hi, lo:hi]
        upper = np.triu_indices(hi - lo, 1)
        diagonal[upper] = diagonal.T[upper]
        if hi < n:
            out[lo:hi, hi:] = out[hi:, lo:hi].T
    return out


def available_memory() -> int:
    """Bytes this process could still allocate: MemAvailable, capped by a cgroup v2 limit."""
    available = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = 1 << 62
    try:
        with open("/sys/fs/cgroup/memory.max") as fh:
            limit = fh.read().strip()
        with open("/sys/fs/cgroup/memory.current") as fh:
            used = int(fh.read().strip())
        if limit != "max":
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    return available


class EASE(FactorModel):
    """Embarrassingly Shallow Autoencoder (Steck 2019): a closed-form item-item model.

    Parameters
    ----------
    regularization : float
        lambda, added to the diagonal of X^T X (Steck uses a few hundred on
        MovieLens-20M; larger for denser data).
    dtype : float32 or float64
        The precision of the Gram matrix, its inverse and B.
    num_threads : int
        Threads for serving (0: every CPU this process may use); the fit's
        LAPACK calls use the BLAS library's threads.

    Attributes
    ----------
    item_factors_ : ndarray (n_items, n_items)
        B transposed: row i holds B[:, i], the weight of each item for i.
    """

    _state_members = ("item_factors",)
    _takes_features = True  # item features only: cold items' columns of B from a ridge map

    def __init__(self, regularization: float = 500.0, dtype: Any = np.float32, num_threads: int = 0):
        self.regularization = regularization
        self.dtype = dtype
        self.num_threads = num_threads

    def _check_params(self) -> dict[str, Any]:
        return {
            "regularization": check_float(self.regularization, "regularization", minimum=0.0,
                                          strict_minimum=True),
            "dtype": check_dtype(self.dtype),
            "num_threads": resolve_num_threads(check_num_threads(self.num_threads)),
        }

    def fit(self, X: Any, user_features: Any = None, item_features: Any = None) -> "EASE":
        """Solve for B from a users x items matrix.

        Parameters
        ----------
        X : scipy.sparse matrix, 2-D array or ``fastrec.Interactions``
            Users x items (binary in Steck's paper; weights are used as given).
        user_features : None
            Refused (TypeError): EASE knows users by their interactions only.
        item_features : fastrec.Features or sparse matrix, optional
            Item side features (aligned as in ``BPR.fit``).  An item without
            interactions has a zero column in B; instead it gets its features'
            image under an exact ridge map fitted from the features of the
            items with interactions to their columns of B (as ALS's maps,
            ``fastrec.models.side.fit_ridge_maps``), and ``add_items`` uses the
            same map.  B is unchanged for items with interactions.

        Returns
        -------
        self

        Raises
        ------
        MemoryError
            The dense items x items matrices would not fit in the available memory.
        """
        item_features_only(user_features, "EASE")
        return self._fit_template(X, item_features=item_features)

    def _fit(self, X: sp.csr_matrix, params: dict[str, Any], features: tuple[Any, Any] | None = None) -> Fitted:
        dtype = params["dtype"]
        n_items = X.shape[1]
        needed = _FIT_COPIES * n_items * n_items * dtype.itemsize
        available = available_memory()
        if needed > available:
            raise MemoryError(f"EASE on {n_items:,} items needs about {needed / 2**30:.1f} GiB for its dense "
                              f"{n_items:,} x {n_items:,} matrices ({dtype.name}) but {available / 2**30:.1f} GiB "
                              "is available; use fewer items (drop rare ones) or ItemKNN")
        Xd = liked_rows(X).astype(dtype)  # thumbs down speak for nothing, as in ItemKNN
        gram = (Xd.T @ Xd).toarray()
        gram[np.diag_indices(n_items)] += dtype.type(params["regularization"])
        # gram is symmetric, so its C-ordered buffer read in Fortran order (gram.T) is the same matrix:
        # LAPACK factors and inverts it in place, with no Fortran copy
        potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (gram.T,))
        factor, info = potrf(gram.T, lower=False, overwrite_a=True, clean=False)
        if info != 0:
            raise ValueError(f"EASE: X^T X + regularization * I is not positive definite (LAPACK info {info}); "
                             "increase regularization")
        inverse, info = potri(factor, lower=False, overwrite_c=True)
        if info != 0:
            raise ValueError(f"EASE: the inverse failed (LAPACK info {info}); increase regularization")
        inverse = _symmetric_from_upper(inverse)
        # B = I - P diag(1/diag(P)): column j of B is -P[:, j] / P[j, j], with B[j, j] = 0.
        # Stored transposed (row i = B[:, i]) so serving reads item vectors row by row.
        diagonal = np.diag(inverse).copy()
        inverse /= -diagonal[:, None]  # row j of P / -P[j, j] = column j of B (P is symmetric)
        np.fill_diagonal(inverse, 0)
        item_factors = np.ascontiguousarray(inverse)
        _, item_side = fit_ridge_maps(features, X, None, item_factors)  # cold items' columns, in place
        return Fitted(None, item_factors, item_features=item_side)

    def _append_items(self, state: FittedState, vectors: np.ndarray) -> tuple[np.ndarray, Any]:
        """``add_items``: B grows by rows and columns (new items speak for nothing yet)."""
        count = vectors.shape[0]
        grown = np.zeros((state.n_items + count, state.n_items + count), dtype=state.item_factors.dtype)
        grown[:state.n_items, :state.n_items] = state.item_factors
        grown[state.n_items:, :state.n_items] = vectors
        side = state.item_features
        factors = np.hstack([side.factors, np.zeros((side.factors.shape[0], count), dtype=side.factors.dtype)])
        return grown, replace(side, factors=factors)

    # ------------------------------------------------------------- serving
    def _queries(self, state: FittedState, user_ids: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(liked_rows(state.seen_rows(user_ids)).toarray(), dtype=state.dtype)

    def _fold_in(self, state: FittedState, X_rows: sp.csr_matrix) -> np.ndarray:
        return np.ascontiguousarray(liked_rows(X_rows).toarray(), dtype=state.dtype)

    def _chunk_size(self, state: FittedState) -> int:
        return max(1, _QUERY_BYTES // max(state.n_items * state.dtype.itemsize, 1))

    def fold_in(self, X: Any) -> np.ndarray:
        """The query vectors of users described by ``X`` (their rows, densified)."""
        from ..utils.validation import check_interactions
        state = self._require_state()
        rows = check_interactions(X, "X", dtype=state.dtype, shape=(None, state.n_items), allow_empty=True)
        return self._fold_in(state, rows)

    def _similar_top(self, state: FittedState, ids: np.ndarray, n: int, side: str
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Items j with the largest B[i, j]: what having i speaks for most."""
        if side != "items":
            raise NotImplementedError("EASE has no user vectors: no similar_users")
        width = min(n, max(state.n_items - 1, 0))
        out_ids = np.full((ids.size, width), -1, dtype=np.int32)
        out = np.full((ids.size, width), -np.inf, dtype=state.dtype)
        for r, i in enumerate(ids):
            weights = state.item_factors[:, i]  # B[i, :]
            candidates = np.flatnonzero(np.arange(state.n_items) != i)
            order = np.lexsort((candidates, -weights[candidates]))[:width]
            out_ids[r, :order.size], out[r, :order.size] = candidates[order], weights[candidates[order]]
        return out_ids, out

    def _pair_scores(self, state: FittedState, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        out = np.empty(users.size, dtype=state.dtype)
        step = self._chunk_size(state)
        for start in range(0, users.size, step):
            u, i = users[start:start + step], items[start:start + step]
            rows = liked_rows(state.seen_rows(u))
            out[start:start + u.size] = np.asarray(rows.multiply(state.item_factors[i]).sum(axis=1)).ravel()
        return out

    def explain(self, user: Any, item: Any, X: Any = None, n: int | None = 10, raw_ids: bool = False
                ) -> tuple[float, np.ndarray, np.ndarray]:
        """Why ``item`` scores as it does for ``user``: the terms ``x_uj B[j, item]``.

        Parameters and returns as ``ItemKNN.explain``.
        """
        state = self._require_state()
        return explain_item_item(self, state, lambda i: state.item_factors[i].astype(np.float64), user, item,
                                 X, n, raw_ids)

    def partial_fit_users(self, user_ids: Any, X_rows: Any, raw_ids: bool = False) -> "EASE":
        """Replace (or add) users' interactions; B stays as fitted (a user is their row).

        Parameters
        ----------
        user_ids : array of int (raw ids with ``raw_ids=True``)
        X_rows : sparse matrix, len(user_ids) x n_items
        raw_ids : bool

        Returns
        -------
        self
        """
        return self._partial_fit("users", user_ids, X_rows, raw_ids)
