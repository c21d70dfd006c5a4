"""Item-item nearest neighbours: cosine, TF-IDF and BM25 similarities (as in implicit).

Each item keeps its ``k`` most similar items; a user's score for item i is
``sum_j r_uj S[j, i]`` over the items j the user interacted with.  Both the
similarities and the scores come from the compiled kernel ``ext/_knn.pyx``
(OpenMP, GIL released, per-thread accumulators: no items x items matrix).

Weightings, computed on the items x users matrix (items are the documents):

* ``cosine``: the raw values, similarity = cosine of the item columns;
* ``tfidf``: values ``sqrt(r) * idf(user)`` with ``idf = log(n_items) - log1p(items of the user)``,
  then cosine;
* ``bm25``: ``r (K1 + 1) / (K1 L_i + r) * idf(user)`` with ``L_i = 1 - B + B |i| / mean|i|``
  (the item's total weight over the mean), then plain dot products.

These are the formulas of implicit's ``CosineRecommender``, ``TFIDFRecommender``
and ``BM25Recommender``.  ``shrinkage`` multiplies a similarity by ``c / (c +
shrinkage)`` with c the number of users the two items share (Koren 2008), so
pairs seen together by few users count less.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..kernels import load_kernel
from ..utils.validation import check_choice, check_dtype, check_float, check_int, check_num_threads
from ..utils.threads import resolve_num_threads
from .base import Fitted, Recommender
from .item_item import cold_item_entries, explain_item_item, item_features_only, liked_rows
from .state import FittedState

__all__ = ["ItemKNN"]

SIMILARITIES = ("cosine", "tfidf", "bm25")
# per-thread candidate buffers of every item (threads x items x 2k) are used up to this size
_PAIR_BUFFER_BUDGET = 256 << 20


def weighted_by_item(X: sp.csr_matrix, similarity: str, k1: float, b: float, dtype: Any = np.float64
                     ) -> tuple[sp.csr_matrix, np.ndarray]:
    """The weighted users x items matrix (values in ``dtype``, the index arrays of ``X`` shared when
    it holds no thumbs down) and each item's scale (1 / norm for cosine-based similarities).

    The weighting is the kernel's ``weigh_entries``; per-user and per-item quantities (idf,
    lengths, norms) are summed in float64.
    """
    W = X if X.nnz == 0 or X.data.min() > 0 else liked_rows(X)
    data = W.data if W.data.dtype in (np.float32, np.float64) else W.data.astype(np.float64)
    values = np.empty(W.nnz, dtype=dtype)
    scale = np.empty(W.shape[1], dtype=dtype)
    load_kernel("knn").weigh_entries(W.indptr, W.indices, data, SIMILARITIES.index(similarity), k1, b,
                                     values, scale, np.empty(W.shape[1]))
    weighted = sp.csr_matrix(W.shape, dtype=dtype)
    weighted.data, weighted.indices, weighted.indptr = values, W.indices, W.indptr
    weighted.has_sorted_indices = W.has_sorted_indices
    return weighted, scale


class ItemKNN(Recommender):
    """Item-item neighbours with cosine, TF-IDF or BM25 similarity.

    Parameters
    ----------
    k : int
        Neighbours kept per item.
    similarity : {"cosine", "tfidf", "bm25"}
        See the module docstring.
    bm25_k1, bm25_b : float
        BM25's term saturation and length normalisation.
    shrinkage : float
        Similarities of items shared by ``c`` users are multiplied by
        ``c / (c + shrinkage)``; 0 turns it off.
    dtype : float32 or float64
    num_threads : int
        0 uses every CPU this process may use.

    Attributes
    ----------
    item_similarity_ : scipy.sparse.csr_matrix
        ``S[j, i]``: the similarity of i among j's neighbours (at most ``k`` per row, plus the
        entries of items without interactions when fitted with ``item_features``).

    Notes
    -----
    Only items that some neighbour list of the user's items reaches get a
    score; a user whose items reach fewer than ``n`` eligible items gets a
    shorter list (padded with -1 in a batch).  Negative values ("thumbs
    down") count as seen but speak for nothing.  Equal similarities at the
    k-th place keep the more popular neighbour (more users behind the same
    value), then the lower id, whatever the thread count.
    """

    _state_members = ("item_similarity",)
    _takes_features = True  # item features only: cold items' similarities from a ridge map

    def __init__(self, k: int = 100, similarity: str = "cosine", bm25_k1: float = 1.2, bm25_b: float = 0.75,
                 shrinkage: float = 0.0, dtype: Any = np.float32, num_threads: int = 0):
        self.k = k
        self.similarity = similarity
        self.bm25_k1 = bm25_k1
        self.bm25_b = bm25_b
        self.shrinkage = shrinkage
        self.dtype = dtype
        self.num_threads = num_threads

    def _check_params(self) -> dict[str, Any]:
        return {
            "k": check_int(self.k, "k", minimum=1, maximum=100_000),
            "similarity": check_choice(self.similarity, "similarity", SIMILARITIES),
            "bm25_k1": check_float(self.bm25_k1, "bm25_k1", minimum=0.0),
            "bm25_b": check_float(self.bm25_b, "bm25_b", minimum=0.0, maximum=1.0),
            "shrinkage": check_float(self.shrinkage, "shrinkage", minimum=0.0),
            "dtype": check_dtype(self.dtype),
            "num_threads": resolve_num_threads(check_num_threads(self.num_threads)),
        }

    def fit(self, X: Any, user_features: Any = None, item_features: Any = None) -> "ItemKNN":
        """Compute every item's ``k`` nearest neighbours from a users x items matrix.

        Parameters
        ----------
        X : scipy.sparse matrix, 2-D array or ``fastrec.Interactions``
            Interaction strengths, users x items; never modified.
        user_features : None
            Refused (TypeError): an item-item model knows users by their interactions only.
        item_features : fastrec.Features or sparse matrix, optional
            Item side features (aligned as in ``BPR.fit``).  Items without
            interactions get neighbours from them: an exact ridge map fitted on
            the items with interactions takes features to a column ``S[:, i]``
            (and a second one to a row ``S[i, :]``), and each cold item keeps
            its ``k`` largest positive mapped similarities to items with
            interactions.  Items with interactions are unchanged.  The mapped
            values are averages of similarities, so they are smaller than a
            warm item's nearest neighbours: cold items rank well among
            themselves and below strong warm matches.

        Returns
        -------
        self
        """
        item_features_only(user_features, "ItemKNN")
        return self._fit_template(X, item_features=item_features)

    def _fit(self, X: sp.csr_matrix, params: dict[str, Any], features: tuple[Any, Any] | None = None) -> Fitted:
        dtype = params["dtype"]
        by_user, scale = weighted_by_item(X, params["similarity"], params["bm25_k1"], params["bm25_b"], dtype)
        by_user.sort_indices()
        n_items = by_user.shape[1]
        k = min(params["k"], max(n_items - 1, 1))
        threads = params["num_threads"]
        kernel = load_kernel("knn")
        row_args = (by_user.indptr.astype(np.int64), by_user.indices.astype(np.int32, copy=False), by_user.data)
        # the by-item layout: each item's users (sorted) and where each entry sits in the by-user rows
        col_indptr = np.empty(n_items + 1, dtype=np.int64)
        col_users = np.empty(by_user.nnz, dtype=np.int32)
        col_pos = np.empty(by_user.nnz, dtype=np.int64)
        kernel.by_item(row_args[0], row_args[1], col_indptr, col_users, col_pos)
        ids = np.empty((n_items, k), dtype=np.int32)
        sims = np.empty((n_items, k), dtype=dtype)
        counts = np.empty(n_items, dtype=np.int32)
        # equal similarities: the neighbour more users have (more evidence), then the lower id
        popularity = np.diff(col_indptr).astype(np.int32)
        buffer_bytes = threads * n_items * 2 * k * (dtype.itemsize + 4)
        if buffer_bytes <= _PAIR_BUFFER_BUDGET:
            # each pair once, into both items' per-thread candidate buffers: half the multiply-adds
            kernel.item_neighbours_pairs(
                col_indptr, col_users, col_pos, *row_args, scale, popularity, float(params["shrinkage"]), k,
                np.empty((threads, n_items, 2 * k), dtype=dtype), np.empty((threads, n_items, 2 * k), dtype=np.int32),
                np.zeros((threads, n_items), dtype=np.int32), ids, sims, counts, threads)
        else:  # a catalogue too big for per-thread buffers of every item: each item's row alone
            kernel.item_neighbours(col_indptr, col_users, by_user.data[col_pos], *row_args,
                                   scale, popularity, float(params["shrinkage"]), k, ids, sims, counts, threads)
        S = _neighbour_matrix(kernel, ids, sims, counts)
        side = None if features is None else features[1]
        if side is None:
            return Fitted(None, None, item_similarity=S)
        S, W = cold_item_entries(S, side, np.bincount(X.indices, minlength=n_items), k, dtype)
        return Fitted(None, None, item_similarity=S, item_features=replace(side, factors=W))

    @property
    def item_similarity_(self) -> sp.csr_matrix:
        """(n_items, n_items) CSR: row j holds j's neighbours i and S[j, i]; read-only."""
        return self._require_state().item_similarity

    # ------------------------------------------------------------- serving
    def _rank(self, state: FittedState, user_ids: np.ndarray | None, fresh: sp.csr_matrix | None,
              recalculate: bool, n: int, exclude_seen: bool, mask: np.ndarray, cands: np.ndarray | None,
              show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        stored = None if user_ids is None else state.seen_rows(user_ids)
        profile = fresh if (stored is None or recalculate) else stored
        if exclude_seen:
            seen = profile if stored is None or fresh is None else (abs(stored) + abs(fresh)).tocsr()
            seen.sort_indices()
        else:
            seen = sp.csr_matrix(profile.shape, dtype=profile.dtype)
        rows = profile.shape[0]
        width = min(n, state.n_items)
        ids = np.full((rows, width), -1, dtype=np.int32)
        scores = np.full((rows, width), -np.inf, dtype=state.dtype)
        allowed = np.zeros(0, dtype=np.uint8)
        if cands is not None:
            allowed = np.zeros(state.n_items, dtype=np.uint8)
            allowed[cands] = 1
        S = state.item_similarity
        query = liked_rows(profile).astype(state.dtype)
        load_kernel("knn").score_rows(
            query.indptr.astype(np.int64), query.indices.astype(np.int32, copy=False), query.data,
            S.indptr.astype(np.int64), S.indices, S.data,
            seen.indptr.astype(np.int64), seen.indices.astype(np.int32, copy=False),
            mask, allowed, state.n_items, width, ids, scores, 1 if rows == 1 else self._serving_threads())
        return ids, scores

    def _similar_top(self, state: FittedState, ids: np.ndarray, n: int, side: str
                     ) -> tuple[np.ndarray, np.ndarray]:
        if side != "items":
            raise NotImplementedError("ItemKNN keeps item neighbours only: no similar_users")
        S = state.item_similarity
        width = min(n, max(state.n_items - 1, 0))
        out_ids = np.full((ids.size, width), -1, dtype=np.int32)
        out = np.full((ids.size, width), -np.inf, dtype=S.dtype)
        rows = S[ids]
        for r in range(ids.size):
            cols, vals = rows.indices[rows.indptr[r]:rows.indptr[r + 1]], rows.data[rows.indptr[r]:rows.indptr[r + 1]]
            order = np.lexsort((cols, -vals))[:width]
            out_ids[r, :order.size], out[r, :order.size] = cols[order], vals[order]
        return out_ids, out

    def _pair_scores(self, state: FittedState, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        rows = liked_rows(state.seen_rows(users)).astype(np.float64)
        columns = state.item_similarity.T.tocsr()[items].astype(np.float64)  # S[:, i] as rows
        return np.asarray(rows.multiply(columns).sum(axis=1)).ravel().astype(state.dtype)

    def explain(self, user: Any, item: Any, X: Any = None, n: int | None = 10, raw_ids: bool = False
                ) -> tuple[float, np.ndarray, np.ndarray]:
        """Why ``item`` scores as it does for ``user``: the terms ``r_uj S[j, item]``.

        Parameters
        ----------
        user, item : index (raw ids with ``raw_ids=True``)
        X : sparse matrix (1 x n_items), optional
            The user's interactions, if not those stored at fit time.
        n : int or None
            Keep the ``n`` largest contributions (None keeps all).
        raw_ids : bool

        Returns
        -------
        score, item_ids, contributions
            The score (the sum of every contribution) and the contributing
            items, largest contribution first.
        """
        state = self._require_state()
        column = state.item_similarity.T.tocsr()

        def weights_to(i: int) -> np.ndarray:
            return column[[i]].toarray().ravel()
        return explain_item_item(self, state, weights_to, user, item, X, n, raw_ids)

    def partial_fit_users(self, user_ids: Any, X_rows: Any, raw_ids: bool = False) -> "ItemKNN":
        """Replace (or add) users' interactions; the similarities stay as fitted.

        Parameters
        ----------
        user_ids : array of int (raw ids with ``raw_ids=True``)
        X_rows : sparse matrix, len(user_ids) x n_items
            Each user's complete interactions.
        raw_ids : bool

        Returns
        -------
        self
        """
        return self._partial_fit("users", user_ids, X_rows, raw_ids)


def _neighbour_matrix(kernel: Any, ids: np.ndarray, sims: np.ndarray, counts: np.ndarray) -> sp.csr_matrix:
    """The kernel's (items, k) neighbour lists (the first ``counts[i]`` of row i, sorted by id) as a
    canonical CSR."""
    n_items = ids.shape[0]
    indptr = np.zeros(n_items + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = np.empty(indptr[-1], dtype=np.int32)
    data = np.empty(indptr[-1], dtype=sims.dtype)
    kernel.neighbour_csr(ids, sims, indptr, indices, data)
    # assigned, not passed to the constructor: scipy would scan the indices to pick an index dtype
    # (narrowing or widening them; the kernels want these) and check them (the kernel wrote them)
    S = sp.csr_matrix((n_items, n_items), dtype=sims.dtype)
    S.data, S.indices, S.indptr = data, indices, indptr
    S.has_sorted_indices = True
    S.has_canonical_format = True
    return S
