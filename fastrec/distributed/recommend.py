"""Top-n lists for every user, computed on a Dask cluster.

The item factors (with the model's serving settings) go to each worker once;
the users are cut into blocks, each block's user factors and seen items go
to one worker, which ranks them with the model's own serving code (the
blocked, exactly pruned top-k kernel, one norm-sorted item index per worker).
"""
from __future__ import annotations

import copy
import os
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..kernels.topk import RankingIndex, candidate_ids, exclusion_mask
from ..models.factors import FactorModel
from ..models.serving import long_columns, raw_to_index
from ..models.state import FittedState, FitParams
from ..utils.validation import check_bool, check_int, check_interactions, check_n, check_path
from ._cluster import check_timeout, gather, resolve_client, scatter_to, worker_threads, workers_of
from .frames import FrameInput, is_dask_frame

__all__ = ["recommend_all"]

# users per block at most: bounds one task's memory, and many blocks keep every worker busy
_BLOCK_USERS = 16384


class _Context:
    """What every block on a worker shares: the serving model's settings, the items and their index."""

    def __init__(self, template: FactorModel, item_factors: np.ndarray, item_bias: np.ndarray | None,
                 item_labels: np.ndarray | None, params: FitParams):
        self.template, self.item_factors, self.item_bias = template, item_factors, item_bias
        self.item_labels, self.params = item_labels, params
        self._index: RankingIndex | None = None

    def index(self) -> RankingIndex:
        if self._index is None:  # built once per worker (a racing second build is harmless)
            self._index = RankingIndex.build(self.item_factors, self.item_bias)
        return self._index


def _long_frame(users: np.ndarray, ranks: np.ndarray, items: np.ndarray, scores: np.ndarray) -> Any:
    import pandas as pd
    return pd.DataFrame({"user": users, "rank": ranks, "item": items, "score": scores})


def _recommend_block(context: _Context, block: tuple, seen: sp.csr_matrix | None, lo: int, n: int,
                     mask: np.ndarray, candidates: np.ndarray | None, path: str | None) -> Any:
    """One block's lists as a (user, rank, item, score) pandas DataFrame, or the Parquet file written.

    The block holds users ``lo, lo + 1, ...``.  ``block`` is (their factors, their seen pattern
    (indptr, indices) or None, their raw ids or None); ``seen`` a CSR built on the workers instead
    of the pattern (a Dask DataFrame ``X``).  ``mask`` and ``candidates`` are checked already.
    """
    factors, pattern, user_labels = block
    n_items = context.item_factors.shape[0]
    if pattern is not None:  # only which items were seen is sent, not their values
        seen = sp.csr_matrix((np.ones(pattern[1].size, factors.dtype), pattern[1], pattern[0]),
                             shape=(factors.shape[0], n_items))
    if seen is None:
        seen = sp.csr_matrix((factors.shape[0], n_items), dtype=factors.dtype)
    state = FittedState(user_factors=factors, item_factors=context.item_factors, user_items=seen,
                        item_bias=context.item_bias, params=context.params,
                        cache={"ranking_index": context.index()})
    model = copy.copy(context.template)
    model.num_threads = worker_threads(0)
    model._state = state
    local = np.arange(factors.shape[0], dtype=np.int32)
    ids, scores = model._rank(state, local, None, False, n, seen.nnz > 0, mask, candidates)
    users, ranks, items, scores = long_columns(local, ids, scores)
    frame = _long_frame(users.astype(np.int64) + lo if user_labels is None else user_labels[users], ranks,
                        items.astype(np.int64) if context.item_labels is None else context.item_labels[items],
                        scores)
    if path is None:
        return frame
    os.makedirs(os.path.dirname(path), exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


def _serving_template(model: FactorModel) -> FactorModel:
    """An unfitted model of the class that serves ``model`` (``ALS`` for a ``DaskALS``), same settings."""
    from .als import DaskALS
    params = {k: v for k, v in model.get_params().items() if k != "client"}
    if isinstance(model, DaskALS):
        from ..models.als import ALS
        return ALS(**params)
    return type(model)(**params)


def _seen_rows(state: FittedState, X: Any) -> sp.csr_matrix:
    """The items to exclude per user, from ``X`` (a matrix or ``Interactions``) or the model."""
    if X is None:
        return state.user_items
    seen = check_interactions(X, "X", dtype=state.dtype, shape=(state.n_users, state.n_items), allow_empty=True)
    for side in ("user", "item"):
        given, own = getattr(X, f"{side}_map", None), getattr(state, f"{side}_map")
        if given is not None and own is not None and given != own:
            raise ValueError(f"X's {side} ids differ from the model's: build X with the model's {side}_map")
    return seen


def recommend_all(model: Any, client: Any = None, n: int = 10, *, X: Any = None, exclude_seen: bool = True,
                  exclude: Any = None, candidates: Any = None, raw_ids: bool | None = None,
                  path: Any = None, block_users: int | None = None, timeout: float | None = None,
                  user_col: str = "user", item_col: str = "item") -> Any:
    """Top-``n`` items for every user of a fitted factor model, on a Dask cluster.

    Parameters
    ----------
    model : fitted fastrec factor model (``ALS``, ``DaskALS``, ``BPR``)
    client : distributed.Client, optional
        Default: the current client.
    n : int
        Items per user.
    X : sparse matrix, ``Interactions`` or Dask DataFrame, optional
        The items to exclude per user (with ``exclude_seen``).  Default: the
        interactions the model was fitted on (a ``DaskALS`` fitted on a Dask
        DataFrame keeps none: pass that frame here).  A Dask DataFrame holds
        raw (user, item) ids in ``user_col``/``item_col``; ids the model does
        not know are ignored.
    exclude_seen : bool
        Skip each user's items in ``X``.
    exclude, candidates : arrays of item ids, optional
        As in ``model.recommend`` (raw ids with ``raw_ids``).
    raw_ids : bool, optional
        Raw ids in ``exclude``/``candidates`` and the output.  Default: True
        when the model has raw ids (fitted from ``Interactions`` or a frame).
    path : str or os.PathLike, optional
        Write one Parquet file per block (``part-00000.parquet``, ...) into
        this directory (on the workers: a path they all see) instead of
        returning a DataFrame.
    block_users : int, optional
        Users per block at most (default 16,384); every worker gets the same number of blocks.
    timeout : float, optional
        Seconds any wait may take (sending the blocks; with ``path``, writing
        the files); ``ClusterError`` after that.

    Returns
    -------
    dask.dataframe.DataFrame with columns ``user``, ``rank`` (1-based),
    ``item`` and ``score``, already computing on the cluster (``.compute()``
    gathers it); or, with ``path``, the list of files written.  Each block
    (partition, file) holds consecutive users, each user's rows best first;
    the blocks are dealt to the workers round robin.
    """
    if not isinstance(model, FactorModel):
        raise TypeError(f"model must be a fitted fastrec factor model (ALS, DaskALS, BPR), got {type(model).__name__}")
    state = model._require_state()
    if state.user_factors is None or state.item_factors is None:
        raise TypeError(f"{type(model).__name__} has no user and item factors to rank with")
    client = resolve_client(client)
    n = check_n(n)
    exclude_seen = check_bool(exclude_seen, "exclude_seen")
    timeout = check_timeout(timeout)
    if raw_ids is None:
        raw_ids = state.user_map is not None and state.item_map is not None
    raw_ids = check_bool(raw_ids, "raw_ids")
    if raw_ids:
        if exclude is not None:
            exclude = raw_to_index(state, "items", exclude, "exclude")
        if candidates is not None:
            candidates = raw_to_index(state, "items", candidates, "candidates")
    mask = exclusion_mask(exclude, state.n_items)
    candidate_list = candidate_ids(candidates, state.n_items)
    if path is not None:
        path = check_path(path)
        os.makedirs(path, exist_ok=True)
    if block_users is not None:
        block_users = check_int(block_users, "block_users", minimum=1)

    workers = workers_of(client, timeout)
    per_worker = -(-state.n_users // (len(workers) * (block_users or _BLOCK_USERS)))
    # the same number of blocks on every worker, and small blocks dealt round robin: ids often follow
    # activity, and a few large blocks could give one worker the heavy users; the first blocks rank
    # while the next ones are being sent
    n_blocks = max(1, min(len(workers) * per_worker, state.n_users))
    bounds = np.linspace(0, state.n_users, n_blocks + 1).astype(np.int64)
    owners = [workers[k % len(workers)] for k in range(n_blocks)]
    item_labels = state.item_map.labels if raw_ids else None
    context = client.scatter(_Context(_serving_template(model), state.item_factors, state.item_bias, item_labels,
                                      state.params), broadcast=True, hash=False)
    seen_blocks: list[Any] = [None] * len(owners)
    seen = None
    if exclude_seen and is_dask_frame(X):
        if state.user_map is None or state.item_map is None:
            raise ValueError("X is a Dask DataFrame of raw ids, but the model has no raw ids to match them with")
        seen_blocks = FrameInput(X, user_col, item_col, None).seen_blocks(
            client, (state.user_map, state.item_map), bounds, owners, state.dtype)
    elif exclude_seen:
        seen = _seen_rows(state, X)
    payloads = []
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        pattern = None
        if seen is not None:  # views of the model's arrays: nothing is copied here
            a, b = int(seen.indptr[lo]), int(seen.indptr[hi])
            pattern = (seen.indptr[lo:hi + 1] - a, seen.indices[a:b])
        payloads.append((state.user_factors[lo:hi], pattern, state.user_map.labels[lo:hi] if raw_ids else None))
    if seen_blocks[0] is None:  # one message: the scheduler deals the blocks to the workers, round robin
        blocks = client.scatter(payloads, workers=workers, hash=False,
                                **({} if timeout is None else {"timeout": timeout}))
    else:  # each block beside its seen items, built on its worker
        blocks = [scatter_to(client, payload, worker, timeout) for payload, worker in zip(payloads, owners)]
    parts = []
    for k, (block, lo) in enumerate(zip(blocks, bounds[:-1].tolist())):
        file = None if path is None else os.path.join(path, f"part-{k:05d}.parquet")
        # runs where its block is (the largest input); the context is on every worker
        parts.append(client.submit(_recommend_block, context, block, seen_blocks[k], lo, n, mask,
                                   candidate_list, file, pure=False))
    if path is not None:
        return gather(client, parts, timeout, "writing the recommendations")
    import dask.dataframe as dd
    empty = np.empty(0)
    meta = _long_frame(empty.astype(np.int64) if not raw_ids else state.user_map.labels[:0],
                       empty.astype(np.int32),
                       empty.astype(np.int64) if item_labels is None else item_labels[:0],
                       empty.astype(state.dtype))
    return dd.from_delayed(parts, meta=meta, verify_meta=False)
