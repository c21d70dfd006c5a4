"""Top-n lists for every user, computed on a Dask cluster.

The items go to each worker once per call, as the model's norm-sorted
ranking index (built once on the client and cached, as ``recommend`` uses
it); the users are cut into blocks, each block's user factors and seen items
go to one worker, which ranks them with the serving top-k kernel (blocked,
exactly pruned) and keeps the (user, rank, item, score) table.

After a ``DaskALS`` fit the users are already on the workers (``_resident``):
each worker ranks its own blocks there, and only the items are sent (once:
kept beside the users for the next call on the same items).  Any change of
the model's users since that fit, a lost worker or another client, and the
users are sent as for any model.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..kernels.topk import RankingIndex, candidate_ids, exclusion_mask, top_k
from ..models.factors import FactorModel
from ..models.serving import long_columns, raw_to_index
from ..models.state import FittedState
from ..utils.validation import (
    check_bool,
    check_int,
    check_interactions,
    check_n,
    check_path,
)
from ._cluster import (
    check_timeout,
    direct,
    gather,
    resolve_client,
    scatter_to,
    worker_threads,
    workers_of,
)
from ._resident import ResidentUsers
from .frames import FrameInput, is_dask_frame

__all__ = ["recommend_all"]

# users per block at most: bounds one task's memory, and many blocks keep every worker busy
_BLOCK_USERS = 16384
# bytes of user blocks per message at most (see recommend_all)
_MESSAGE_BYTES = 64 * 2 ** 20
# rows of the long table per task at most, where the users are already on the workers (nothing to pipeline with
# sending them: fewer, larger tasks; on the 20M-shaped data 16,384-user parts took 0.28 s a call, 65,536 0.25 s)
_TASK_ROWS = 2 ** 20


class _Context:
    """What every block on a worker shares: the items (their norm-sorted index) and raw ids.

    Ranking every item needs only the norm-sorted index, built once on the
    client (the model's cached ``ranking_index``, as ``recommend`` uses it)
    and sent as is, with its packed codes: the workers do not rebuild them.  With candidates the
    kernel reads the item factors instead, and those are sent.
    """

    def __init__(self, item_factors: np.ndarray | None, item_bias: np.ndarray | None, item_labels: np.ndarray | None,
                 index: RankingIndex | None = None):
        self.item_factors, self.item_bias, self.item_labels = item_factors, item_bias, item_labels
        if index is not None:
            # the codes the kernel ranks with, built once here (and kept by the model), not per worker
            index.packed()
            index.positions()
            index = dataclasses.replace(index, _compact=dict(index._compact))
        self.index = index
        self._item_dtype: Any = None

    def items(self, codes: np.ndarray) -> Any:
        """The item column: indices, or raw ids (a categorical over all items for text ids, built once)."""
        if self.item_labels is None:
            return codes
        if not _is_text(self.item_labels):
            return self.item_labels[codes]
        if self._item_dtype is None:
            self._item_dtype = _text_dtype(self.item_labels)
        import pandas as pd
        return pd.Categorical.from_codes(codes, dtype=self._item_dtype)

    def rank(self, factors: np.ndarray, n: int, pattern: tuple | None, mask: np.ndarray,
             candidates: np.ndarray | None, threads: int) -> tuple[np.ndarray, np.ndarray]:
        """``top_k`` of these users: over the index, or over the candidates' factors."""
        if candidates is not None:
            return top_k(factors, self.item_factors, self.item_bias, n, pattern, mask, candidates, threads)
        # with an index the kernel reads only its rows (item_factors gives the dtype and item count)
        return top_k(factors, self.index.factors, None, n, pattern, mask, None, threads, index=self.index)


def _is_text(labels: np.ndarray) -> bool:
    return labels.dtype.kind in "OUST"


def _text_dtype(labels: np.ndarray) -> Any:
    import pandas as pd
    return pd.CategoricalDtype(pd.Index(labels))


def _users(labels: np.ndarray | None, codes: np.ndarray, lo: int) -> Any:
    """The user column: indices, or raw ids (text ids as a categorical over the block's users)."""
    if labels is None:
        return codes
    local = codes - np.int32(lo)
    if not _is_text(labels):
        return labels[local]
    import pandas as pd
    return pd.Categorical.from_codes(local, dtype=_text_dtype(labels))


def _long_frame(users: np.ndarray, ranks: np.ndarray, items: np.ndarray, scores: np.ndarray) -> Any:
    import pandas as pd
    return pd.DataFrame({"user": users, "rank": ranks, "item": items, "score": scores}, copy=False)


def _direct(model: FactorModel) -> bool:
    """Whether ``model`` ranks a stored user by its factor row against the items (no override of that)."""
    cls = type(model)
    return (cls._rank is FactorModel._rank and cls._rank_stored is FactorModel._rank_stored
            and cls._queries is FactorModel._queries)


def _long(ids: np.ndarray, scores: np.ndarray, lo: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(user, rank, item, score) columns of padded top-n rows, users numbered from ``lo`` (int32)."""
    m, n = ids.shape
    if ids.size and ids[:, -1].min() >= 0:  # every list full (the usual case): no mask, no copies
        return (np.repeat(np.arange(lo, lo + m, dtype=np.int32), n), np.tile(np.arange(1, n + 1, dtype=np.int32), m),
                ids.reshape(-1), scores.reshape(-1))
    users, ranks, items, scores = long_columns(np.arange(m, dtype=np.int32), ids, scores)
    return users + np.int32(lo), ranks, items, scores


def _recommend_block(context: _Context, block: tuple, seen: sp.csr_matrix | None, lo: int, n: int,
                     mask: np.ndarray, candidates: np.ndarray | None, path: str | None) -> Any:
    """One block's lists as a (user, rank, item, score) pandas DataFrame, or the Parquet file written.

    The block holds users ``lo, lo + 1, ...``.  ``block`` is (their factors, their seen pattern
    (indptr, indices) or None, their raw ids or None); ``seen`` a CSR built on the workers instead
    of the pattern (a Dask DataFrame ``X``).  ``mask`` and ``candidates`` are checked already.
    The received arrays go straight to the top-k kernel (``FactorModel._rank_stored``'s ranking,
    without building a model around them).
    """
    factors, pattern, user_labels = block
    threads = worker_threads(0)
    if seen is not None:
        pattern = (seen.indptr, seen.indices)
    if pattern is not None and pattern[1].dtype != np.int32:  # sent compact (see recommend_all)
        pattern = (pattern[0], pattern[1].astype(np.int32))
    ids, scores = context.rank(factors, n, pattern, mask, candidates, threads)
    users, ranks, items, scores = _long(ids, scores, lo)
    frame = _long_frame(_users(user_labels, users, lo), ranks, context.items(items), scores)
    if path is None:
        return frame
    os.makedirs(os.path.dirname(path), exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


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


def _resident_users(model: Any, state: FittedState, client: Any, X: Any, exclude_seen: bool,
                    workers: list[str]) -> ResidentUsers | None:
    """The user blocks a DaskALS fit left on the workers, if they are exactly ``state``'s users and usable here.

    Not with ``X`` (other seen items than the fit's), nor when seen items
    must be excluded and the blocks do not hold them; blocks that no longer
    match the model (refit, partial fit, lost worker, other client) are
    dropped.
    """
    resident = getattr(model, "_resident", None)
    if not isinstance(resident, ResidentUsers) or X is not None:
        return None
    if not resident.matches(state, client) or not set(resident.owners) <= set(workers):
        if client is resident.client:  # stale for good: free the workers' memory
            model.__dict__.pop("_resident", None)
            resident.release()
        return None
    if exclude_seen and state.user_items.nnz and resident.shards is None:
        return None
    return resident


def _resident_parts(client: Any, resident: ResidentUsers, context: Any, state: FittedState, n: int,
                    mask: np.ndarray, candidate_list: np.ndarray | None, raw_ids: bool, path: str | None,
                    block_users: int, seen: bool) -> list[Any]:
    """One task per at most ``block_users`` consecutive users of each resident block, on the block's worker."""
    parts = []
    bounds, factors, shards = resident.bounds, resident.factors, resident.shards  # as they are now (see release)
    for k, owner in enumerate(resident.owners):
        lo, hi = int(bounds[k]), int(bounds[k + 1])
        cuts = np.linspace(lo, hi, max(1, -(-(hi - lo) // block_users)) + 1).astype(np.int64)
        for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
            if b <= a:
                continue
            file = None if path is None else os.path.join(path, f"part-{len(parts):05d}.parquet")
            labels = state.user_map.labels[a:b] if raw_ids else None
            # pinned to the block's worker (no stealing: the block is the largest input)
            parts.append(client.submit(_recommend_resident, context, factors[k],
                                       shards[k] if seen else None, a - lo, b - lo, a, n, mask,
                                       candidate_list, labels, file, workers=[owner], allow_other_workers=False,
                                       pure=False))
    return parts


def _recommend_resident(context: _Context, factors: np.ndarray, shard: Any, lo: int, hi: int, first: int, n: int,
                        mask: np.ndarray, candidates: np.ndarray | None, user_labels: np.ndarray | None,
                        path: str | None) -> Any:
    """``_recommend_block`` of rows ``lo:hi`` of a resident block (users ``first, first + 1, ...``).

    The seen items are the shard's rows, decoded (their columns are item ids).
    """
    pattern = None
    if shard is not None:
        rows = shard.rows.rows(lo, hi)
        pattern = (rows.indptr, rows.indices)
    return _recommend_block(context, (factors[lo:hi], pattern, user_labels), None, first, n, mask, candidates,
                            path)


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
        Where a ``DaskALS`` fit left its users on the workers, each block of
        the fit is cut into parts of at most this many users (default: about
        a million rows, ``max(16384, 2**20 // n)`` users), ranked in place.
    timeout : float, optional
        Seconds any wait may take (sending the blocks; with ``path``, writing
        the files); ``ClusterError`` after that.

    Returns
    -------
    dask.dataframe.DataFrame with columns ``user``, ``rank`` (1-based),
    ``item`` and ``score``, already computing on the cluster (``.compute()``
    gathers it); or, with ``path``, the list of files written.  ``user`` and
    ``item`` are int32 indices or the raw ids (text ids as pandas
    categoricals: codes plus the labels once per block), ``rank`` int32 and
    ``score`` the model's dtype.  Each block
    (partition, file) holds consecutive users, each user's rows best first;
    the blocks are dealt to the workers round robin (or ranked where a
    ``DaskALS`` fit left them, in user order).

    Notes
    -----
    A ``DaskALS`` fitted from a matrix or ``Interactions`` keeps its users'
    factors and interactions on the workers (see ``DaskALS.release``); with
    ``X=None`` and the model's users unchanged since that fit (no partial
    fit, no refit that failed, the same ``client``, no worker lost) they are
    ranked where they are and only the items are sent.  Otherwise the users
    are sent from the client: the lists are ``model.recommend``'s either way.
    """
    if not isinstance(model, FactorModel) or not _direct(model):
        raise TypeError("model must be a fitted fastrec factor model that ranks users by their factors (ALS, DaskALS, "
                        f"BPR), got {type(model).__name__}")
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
    item_labels = state.item_map.labels if raw_ids else None
    resident = _resident_users(model, state, client, X, exclude_seen, workers)
    if resident is not None:  # ranked where a DaskALS fit left its users: only the items are sent
        context = _send_context(client, state, item_labels, candidate_list, resident)
        parts = _resident_parts(client, resident, context, state, n, mask, candidate_list, raw_ids, path,
                                block_users or max(_BLOCK_USERS, _TASK_ROWS // n),
                                exclude_seen and state.user_items.nnz > 0)
        return _result(client, parts, state, raw_ids, item_labels, path, timeout)
    per_worker = -(-state.n_users // (len(workers) * (block_users or _BLOCK_USERS)))
    # the same number of blocks on every worker, and small blocks dealt round robin: ids often follow
    # activity, and a few large blocks could give one worker the heavy users; the first blocks rank
    # while the next ones are being sent
    n_blocks = max(1, min(len(workers) * per_worker, state.n_users))
    bounds = np.linspace(0, state.n_users, n_blocks + 1).astype(np.int64)
    owners = [workers[k % len(workers)] for k in range(n_blocks)]
    context = _send_context(client, state, item_labels, candidate_list)
    seen_blocks: list[Any] = [None] * len(owners)
    seen = None
    if exclude_seen and is_dask_frame(X):
        if state.user_map is None or state.item_map is None:
            raise ValueError("X is a Dask DataFrame of raw ids, but the model has no raw ids to match them with")
        seen_blocks = FrameInput(X, user_col, item_col, None).seen_blocks(
            client, (state.user_map, state.item_map), bounds, owners, state.dtype)
    elif exclude_seen:
        seen = _seen_rows(state, X)
    # item ids below 2**16 travel as uint16: the seen items are most of the bytes sent
    compact = np.uint16 if state.n_items <= np.iinfo(np.uint16).max + 1 else None

    def payload(lo: int, hi: int) -> tuple:
        pattern = None
        if seen is not None:  # only which items were seen, not their values
            a, b = int(seen.indptr[lo]), int(seen.indptr[hi])
            indices = seen.indices[a:b]
            pattern = (seen.indptr[lo:hi + 1] - a, indices if compact is None else indices.astype(compact))
        return state.user_factors[lo:hi], pattern, state.user_map.labels[lo:hi] if raw_ids else None

    scatter_options = {"direct": direct(client), **({} if timeout is None else {"timeout": timeout})}
    parts = []
    # The first round (one block per worker) goes alone, so the workers start early; then as many rounds per
    # message as fit in _MESSAGE_BYTES: each message costs a round trip or two to the workers and the scheduler
    # (~20-30 ms measured on a loaded 2-core box), while the workers rank what they have.
    seen_bytes = 0 if seen is None else seen.indices.size * (2 if compact is not None else 4)
    round_bytes = (state.user_factors.nbytes + seen_bytes) * len(workers) / max(1, n_blocks)
    rounds = max(1, int(_MESSAGE_BYTES // max(1.0, round_bytes)))
    starts = [0] + list(range(len(workers), n_blocks, len(workers) * rounds))
    for first, stop in zip(starts, starts[1:] + [n_blocks]):
        ks = range(first, min(stop, n_blocks))
        payloads = [payload(int(bounds[k]), int(bounds[k + 1])) for k in ks]
        if seen_blocks[0] is None:  # the scheduler deals the round's blocks to the workers
            blocks = client.scatter(payloads, workers=[owners[k] for k in ks], hash=False, **scatter_options)
        else:  # each block beside its seen items, built on its worker
            blocks = [scatter_to(client, p, owners[k], timeout) for p, k in zip(payloads, ks)]
        for k, block in zip(ks, blocks):
            file = None if path is None else os.path.join(path, f"part-{k:05d}.parquet")
            # runs where its block is (the largest input); the context is on every worker
            parts.append(client.submit(_recommend_block, context, block, seen_blocks[k], int(bounds[k]), n, mask,
                                       candidate_list, file, pure=False))
    return _result(client, parts, state, raw_ids, item_labels, path, timeout)


def _send_context(client: Any, state: FittedState, item_labels: np.ndarray | None,
                  candidate_list: np.ndarray | None, resident: ResidentUsers | None = None) -> Any:
    """The items, sent to every worker once: the ranking index, or the item factors with candidates.

    With resident users the index stays on the workers with them, for the
    next call on the same index (the same object: any item change makes a
    new one) and item labels.
    """
    if candidate_list is None:  # the index the model serves with (built once, cached in the model)
        index = state.ranking_index()
        if resident is not None:
            kept = resident.context(index, item_labels)
            if kept is not None:
                return kept
        shared = _Context(None, None, item_labels, index)
        future = client.scatter(shared, broadcast=True, hash=False, direct=direct(client))
        if resident is not None:
            resident.keep_context(index, item_labels, future)
        return future
    else:
        shared = _Context(state.item_factors, state.item_bias, item_labels)
    return client.scatter(shared, broadcast=True, hash=False, direct=direct(client))


def _result(client: Any, parts: list[Any], state: FittedState, raw_ids: bool, item_labels: np.ndarray | None,
            path: str | None, timeout: float | None) -> Any:
    """The blocks' futures as a Dask DataFrame, or (with ``path``) the files written."""
    if path is not None:
        return gather(client, parts, timeout, "writing the recommendations")
    import dask.dataframe as dd
    no_ids = np.empty(0, dtype=np.int32)
    meta = _long_frame(_users(state.user_map.labels[:0] if raw_ids else None, no_ids, 0), no_ids,
                       _Context(state.item_factors[:0], None, item_labels).items(no_ids),
                       np.empty(0, dtype=state.dtype))
    if raw_ids and _is_text(state.user_map.labels):  # each block has its own users as categories
        from dask.dataframe.utils import clear_known_categories
        meta = clear_known_categories(meta, cols=["user"])
    return dd.from_delayed(parts, meta=meta, verify_meta=False)
