"""Latent-factor models: serving from user and item vectors.

A factor model scores a (user, item) pair as ``user_factors_[u] . item_factors_[i]``
plus ``item_bias_[i]`` where the model has biases, and ranks with the blocked,
exactly pruned top-K kernel (``fastrec.kernels.topk``).  Subclasses implement
``_fit`` and ``_fold_in`` (factors for new users from interaction rows); a
model whose user vectors are computed rather than stored overrides ``_queries``.
"""
from __future__ import annotations


import numpy as np
import scipy.sparse as sp

from ..kernels import load_kernel
from ..kernels.topk import top_k
from ..utils.progress import Progress
from .base import Recommender
from .cold import ColdStartMixin
from .state import FittedState

__all__ = ["FactorModel"]

# users per chunk of a large recommend batch: bounds its working memory (a consecutive run's vectors
# are a view; a gathered chunk at 128 factors is 32 MB, its seen rows ~40 MB at ML-1M's density).
# Each chunk is a kernel call whose last block leaves a thread idle: 16,384 took 4% longer on 43k users
_RECOMMEND_CHUNK = 65536
_NO_SEEN = np.empty(0, dtype=np.int32)
_MAX_ONE_N = 2 ** 31 - 1


def _self_exclusion(ids: np.ndarray, n_total: int) -> sp.csr_matrix:
    """A CSR with one entry per row: the query itself, for similar_* calls."""
    m = ids.size
    return sp.csr_matrix((np.ones(m, dtype=np.float32), ids, np.arange(m + 1)), shape=(m, n_total))


class FactorModel(ColdStartMixin, Recommender):
    """Base class of the latent-factor models (ALS, BPR/WARP); cold start in ``cold.py``."""

    _state_members = ("user_factors", "item_factors")

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

    def _fold_in(self, state: FittedState, X_rows: sp.csr_matrix) -> np.ndarray:
        """Factors for users described only by ``X_rows`` (validated CSR), not stored."""
        raise NotImplementedError(f"{type(self).__name__} cannot compute factors for new users")

    def _queries(self, state: FittedState, user_ids: np.ndarray) -> np.ndarray:
        """The query vectors of stored users: a read-only view of the stored rows when the ids are a
        run of consecutive stored users without pending updates (a batch over every user copies no
        vectors), else a gathered copy."""
        base = state.user_factors if state.pending is None else None
        if (base is not None and user_ids.size > 1 and base.flags.c_contiguous
                and 0 <= user_ids[0] and user_ids[-1] < base.shape[0]
                and user_ids[-1] - user_ids[0] == user_ids.size - 1 and bool(np.all(np.diff(user_ids) == 1))):
            view = base[int(user_ids[0]):int(user_ids[-1]) + 1].view()
            view.flags.writeable = False
            return view
        return state.factor_rows("users", user_ids)

    def _recommend_one(self, state: FittedState, user: int, n: int, exclude_seen: bool
                       ) -> tuple[np.ndarray, np.ndarray] | None:
        """A stored user of a plain factor model, straight to the top-K kernel.

        ``top_k``'s code path for one query, through the state's bound
        ``CodesScan`` (``FittedState.one_user_scan``): no id array, no argument
        conversion, no gathered copy of the user's vector or seen row (the
        kernel reads them in place, from the partial-fit overlay for an updated
        user).  Models that compute their queries, users grown without a row,
        arrays the scan does not bind and out-of-range arguments take the
        general path.
        """
        if type(self)._queries is not FactorModel._queries or user < 0 or not 0 <= n <= _MAX_ONE_N:
            return None
        scan = state.one_user_scan()
        if scan is None:
            return None
        pending = state.pending
        entry = -1 if pending is None else pending.entry(user)
        if entry >= 0:  # updated by a partial fit: its row in the overlay
            vector, seen_row, _ = pending.log.entries[entry]
            if vector is None or seen_row.dtype != np.int32:
                return None
            return scan.query(vector.reshape(1, -1), seen_row if exclude_seen else _NO_SEEN, n,
                              self._serving_threads())
        if user < scan.n_users:
            return scan.stored(user, n, exclude_seen, self._serving_threads())
        return None  # grown without a row of its own, or out of range: the general path

    def _chunk_size(self, state: FittedState) -> int:
        return _RECOMMEND_CHUNK

    def _rank(self, state: FittedState, user_ids: np.ndarray | None, fresh: sp.csr_matrix | None,
              recalculate: bool, n: int, exclude_seen: bool, mask: np.ndarray, cands: np.ndarray | None,
              show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        if user_ids is not None and fresh is None:
            return self._rank_stored(state, user_ids, n, exclude_seen, mask, cands, show_progress)
        if user_ids is None or recalculate:
            queries = self._fold_in(state, fresh)
        else:
            queries = self._queries(state, user_ids)
        seen = None
        if exclude_seen:
            if user_ids is None:
                seen = fresh
            else:
                # union of the patterns: adding raw values could cancel an entry out
                seen = (abs(state.seen_rows(user_ids)) + abs(fresh)).tocsr()
                seen.sort_indices()
        return top_k(queries, state.item_factors, state.item_bias, n, seen, mask, cands,
                     self._serving_threads(), index=state.ranking_index())

    def _rank_stored(self, state: FittedState, user_ids: np.ndarray, n: int, exclude_seen: bool,
                     mask: np.ndarray, cands: np.ndarray | None, show_progress: bool = False
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Stored users, a chunk at a time: the gathered query vectors and seen
        rows stay a fixed size however many users are asked for."""
        index = state.ranking_index()
        threads = self._serving_threads()  # one query uses several only to split a large catalogue
        chunk_size = self._chunk_size(state)
        ids = scores = None
        starts = range(0, max(user_ids.size, 1), chunk_size)  # once even when empty
        progress = Progress(len(starts), "recommend", enabled=show_progress, unit="chunk")
        for start in starts:
            chunk = user_ids[start:start + chunk_size]
            seen = state.seen_pattern(chunk) if exclude_seen else None
            part_ids, part_scores = top_k(self._queries(state, chunk), state.item_factors, state.item_bias,
                                          n, seen, mask, cands, threads, index=index)
            if ids is None:
                ids = np.empty((user_ids.size, part_ids.shape[1]), dtype=part_ids.dtype)
                scores = np.empty((user_ids.size, part_ids.shape[1]), dtype=part_scores.dtype)
            ids[start:start + chunk.size] = part_ids
            scores[start:start + chunk.size] = part_scores
            progress.update()
        progress.close()
        return ids, scores

    def _similar_top(self, state: FittedState, ids: np.ndarray, n: int, side: str
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Cosine of the factors; a zero vector has no direction, so it is similar to nothing."""
        if state.factors(side) is None:
            raise NotImplementedError(f"{type(self).__name__} keeps no {side[:-1]} vectors: no similar_{side}")
        normed = state.normalized(side)
        total = normed.shape[0]
        out_ids, scores = top_k(normed[ids], normed, None, n, _self_exclusion(ids, total),
                                num_threads=1 if ids.size == 1 else self._serving_threads())
        out_ids[~normed[ids].any(axis=1)] = -1
        return out_ids, np.where(out_ids >= 0, scores, -np.inf).astype(scores.dtype, copy=False)

    def _pair_scores(self, state: FittedState, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        out = np.empty(users.size, dtype=state.item_factors.dtype)
        bias = state.item_bias if state.item_bias is not None else np.empty(0, out.dtype)
        user_factors = state.user_factors if state.pending is None or users.size >= 10000 else None
        if user_factors is None:  # pending updates: the few users' vectors, not the merged matrix
            user_factors = np.ascontiguousarray(state.factor_rows("users", users))
            users = np.arange(users.size, dtype=np.int32)
        load_kernel("topk").pair_scores(user_factors, state.item_factors, bias, users, items, out,
                                        1 if users.size < 10000 else self._serving_threads())
        return out
