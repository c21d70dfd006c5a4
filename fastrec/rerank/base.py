"""``Reranker``: what every re-ranker shares (parameters, checks, history, the re-rank template).

A re-ranker is stateless between calls: everything it needs from training
(each user's history, item popularity, item factors) is read from the fitted
model at each call, and a folded-in user's history is the ``X`` row given for
them.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, ClassVar

import numpy as np
import scipy.sparse as sp

from ..utils.validation import (check_choice, check_float, check_ids, check_int, check_interactions,
                                check_scalar_id)
from .greedy import by_score, check_candidates, gather

__all__ = ["Reranker", "Fetch", "fitted_view"]

# fetch(rows, item_ids, m): the model's top-m among item_ids for the given rows of the batch
Fetch = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def fitted_view(model: Any) -> Any:
    """The fitted state a re-ranker reads (``user_items``, ``item_factors``, ``n_items``)."""
    require = getattr(model, "_require_state", None)
    if callable(require):
        return require()
    raise TypeError(f"model must be a fitted fastrec model, got {type(model).__name__}")


class Reranker:
    """Base class of the greedy re-rankers in ``fastrec.rerank``.

    Parameters
    ----------
    tradeoff : float in [0, 1]
        Weight of the re-ranker's aim against relevance; 0 returns the
        model's own list.
    candidates : int >= 1
        How many of the model's top items ``recommend(..., rerank=R)`` and
        ``evaluate(..., rerank=R)`` fetch per user before re-ranking.
    order : {"score", "greedy"}
        The greedy loop picks the list's items; ``"score"`` (the default)
        shows them best-scored first, ``"greedy"`` in the order picked.  The
        re-rankers' aims (calibration, long-tail share, intra-list diversity)
        depend on the set only, so ``"score"`` keeps them and ranks the most
        relevant items higher.
    """

    #: the fastrec.evaluation.fairness metric this re-ranker improves
    metric: ClassVar[str] = ""
    #: the parameter ``with_tradeoff`` and ``fastrec.evaluation.tradeoff`` sweep
    swept: ClassVar[str] = "tradeoff"
    #: whether ``_select`` reads the users' histories (else an empty matrix is passed)
    needs_history: ClassVar[bool] = True

    def __init__(self, tradeoff: float = 0.5, candidates: int = 100, order: str = "score"):
        self.tradeoff = check_float(tradeoff, "tradeoff", minimum=0.0, maximum=1.0)
        self.candidates = check_int(candidates, "candidates", minimum=1)
        self.order = check_choice(order, "order", ("score", "greedy"))

    def with_tradeoff(self, value: float) -> "Reranker":
        """A copy with the swept parameter (``tradeoff``; ``p`` for FairTopK) set to ``value``."""
        other = copy.copy(self)
        other._set_swept(value)
        return other

    def _set_swept(self, value: float) -> None:
        self.tradeoff = check_float(value, "tradeoff", minimum=0.0, maximum=1.0)

    def __repr__(self) -> str:
        shown = {k: v for k, v in vars(self).items() if not k.startswith("_") and np.ndim(v) == 0}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    # ------------------------------------------------------------ template
    def rerank(self, model: Any, users: Any, ids: Any, scores: Any, n: int = 10, X: Any = None,
               fetch: Fetch | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Re-rank candidate lists from ``model`` into the final top-``n``.

        Parameters
        ----------
        model : fitted fastrec model
            Where the users' histories, item popularity and factors come from.
        users : array of int, or None
            The stored user of each candidate row; None when ``X`` describes
            each row's user (folded-in users).
        ids, scores : (n_users, n_candidates) arrays
            Candidates, best first, padded with -1 (as ``model.recommend`` gives).
        n : int
            Length of the final lists (at most the catalogue size).
        X : sparse matrix, optional
            Each row's interactions; they replace the stored history.
        fetch : callable, optional
            ``fetch(rows, item_ids, m)``: the model's top-``m`` among
            ``item_ids`` for those rows (used by ``FairTopK`` when candidates
            hold too few protected items; ``model.recommend`` by default).

        Returns
        -------
        ids, scores : (n_users, min(n, n_candidates)) arrays
            The re-ranked ids (padded with -1) and the model's scores of them.
        """
        state = fitted_view(model)
        n = self.check_n(n, state.n_items)
        cand, cand_scores = check_candidates(ids, scores, state.n_items)
        user_ids = None
        if users is not None:
            user_ids = check_ids(users, state.n_users, "users", allow_scalar=True)[0]
            if user_ids.size != cand.shape[0]:
                raise ValueError(f"users has {user_ids.size} entries but ids has {cand.shape[0]} rows")
        elif X is None:
            raise ValueError("users is required unless X gives each row's history")
        history = self.history(state, user_ids, X, cand.shape[0])
        if fetch is None:
            fetch = _model_fetch(model, user_ids, X)
        return self._rerank(state, history, cand, cand_scores, n, fetch)

    def explain(self, model: Any, user: Any, item: Any, n: int = 10, X: Any = None) -> str:
        """Why ``item`` is (or is not) in ``user``'s re-ranked top-``n``, in one sentence.

        ``user`` is a stored user's index, or None with ``X`` (one row: a
        folded-in user's interactions).  An item the model itself ranked in
        the top ``n`` is "kept"; one the re-ranker moved in gets its reason,
        e.g. "added for genre balance: Documentary (12% of the history, 0% of
        the list without it)".
        """
        state = fitted_view(model)
        n = self.check_n(check_int(n, "n", minimum=1), state.n_items)
        item = check_scalar_id(item, state.n_items, "item")
        if user is None and X is None:
            raise ValueError("user is required unless X gives the user's interactions")
        asked = {"n": n, "X": X}
        own = np.asarray(model.recommend(user, **asked)[0]).ravel()
        new = np.asarray(model.recommend(user, rerank=self, **asked)[0]).ravel()
        if item not in new:
            return f"item {item} is not in the re-ranked top {n}"
        rank = int(np.flatnonzero(new == item)[0]) + 1
        if item in own:
            return f"kept from the model's list (rank {int(np.flatnonzero(own == item)[0]) + 1} -> {rank})"
        user_ids = None if user is None else np.atleast_1d(check_ids(user, state.n_users, "user")[0])
        history = self.history(state, user_ids, X, 1)
        return f"added at rank {rank} " + self._reason(state, history, item, new[new >= 0])

    def _reason(self, state: Any, history: sp.csr_matrix, item: int, listed: np.ndarray) -> str:
        return "by the re-ranker"

    @staticmethod
    def check_n(n: Any, n_items: int) -> int:
        n = check_int(n, "n", minimum=0)
        if n > n_items:
            raise ValueError(f"n is {n} but the catalogue has {n_items} items; a re-ranked list "
                             "cannot be longer than the catalogue")
        return n

    def history(self, state: Any, user_ids: np.ndarray | None, X: Any, n_rows: int) -> sp.csr_matrix:
        """Each row's positive interactions as a 0/1 CSR (from ``X`` when given, else stored)."""
        if not self.needs_history:
            return sp.csr_matrix((n_rows, state.n_items))
        if X is not None:
            rows = check_interactions(X, "X", dtype=np.float64, shape=(n_rows, state.n_items), allow_empty=True)
        else:
            rows = state.seen_rows(user_ids).astype(np.float64)
        rows = sp.csr_matrix(((rows.data > 0).astype(np.float64), rows.indices, rows.indptr), shape=rows.shape)
        rows.eliminate_zeros()
        return rows

    def _rerank(self, state: Any, history: sp.csr_matrix, ids: np.ndarray, scores: np.ndarray, n: int,
                fetch: Fetch) -> tuple[np.ndarray, np.ndarray]:
        """Checked inputs -> final lists; subclasses override ``_select`` (or this)."""
        width = min(n, ids.shape[1])
        if width == 0 or ids.shape[0] == 0:
            return np.full((ids.shape[0], width), -1, np.int32), np.full((ids.shape[0], width), -np.inf)
        positions = self._select(state, history, ids, scores, width)
        if self.order == "score":
            positions = by_score(scores, positions)
        return gather(ids, scores, positions)

    def _select(self, state: Any, history: sp.csr_matrix, ids: np.ndarray, scores: np.ndarray,
                n: int) -> np.ndarray:
        """(n_users, n) int32 positions into each candidate row, -1 where none is left.

        Kernels rescale ``scores`` to relevance per row (``greedy.relevance_row``).
        """
        raise NotImplementedError


def _model_fetch(model: Any, user_ids: np.ndarray | None, X: Any) -> Fetch:
    rows_X = None if X is None else check_interactions(X, "X", allow_empty=True)

    def fetch(rows: np.ndarray, item_ids: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        if user_ids is None:
            return model.recommend(None, n=m, candidates=item_ids, X=rows_X[rows])
        X_rows = None if rows_X is None else rows_X[rows]
        return model.recommend(user_ids[rows], n=m, candidates=item_ids, X=X_rows)
    return fetch


def item_group_shares(history: sp.csr_matrix, groups: sp.csr_matrix) -> np.ndarray:
    """(n_rows, n_groups) float64: each row's mean over its items of the items' group shares."""
    counts = np.diff(history.indptr).astype(np.float64)
    sums = np.asarray((history @ groups).todense(), dtype=np.float64)
    return np.divide(sums, counts[:, None], out=np.zeros_like(sums), where=counts[:, None] > 0)
