"""Prepare arguments for the compiled top-K kernel and call it.

All filters are applied inside the kernel; this module only turns user-level
arguments (seen matrices, exclusion lists, candidate subsets) into the flat
arrays the kernel reads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from . import load_kernel
from ..utils.threads import blas_single_thread
from ..utils.validation import check_ids

__all__ = ["top_k", "exclusion_mask", "candidate_ids", "csr_rows", "RankingIndex", "compact_rows"]

_EMPTY_I32 = np.empty(0, dtype=np.int32)
_EMPTY_U8 = np.empty(0, dtype=np.uint8)
# tile sizes: a 256 x 512 float32 score tile (512 KB) stays in L2, and GEMM packs
# each item tile once per 256 users (64 x 1024 took 1.5x the time on ML-1M factors
# tiled to 35k items); a single query checks the pruning bound more often
_BLOCK_USERS = 256
_MIN_BLOCK_USERS = 16
_BLOCK_ITEMS = 512
_BLOCK_ITEMS_ONE = 256


def _block_users(m: int, num_threads: int) -> int:
    """Users per tile: 256, or fewer so a small batch still gives every thread a few blocks."""
    return max(_MIN_BLOCK_USERS, min(_BLOCK_USERS, -(-m // (4 * max(1, num_threads)))))


def exclusion_mask(exclude: Any, n_items: int) -> np.ndarray:
    """A uint8 mask over items from a list of ids to exclude (duplicates allowed)."""
    if exclude is None:
        return _EMPTY_U8
    ids, _ = check_ids(exclude, n_items, "exclude")
    if ids.size == 0:
        return _EMPTY_U8
    mask = np.zeros(n_items, dtype=np.uint8)
    mask[ids] = 1
    return mask


def candidate_ids(candidates: Any, n_items: int) -> np.ndarray | None:
    """Sorted unique candidate item ids, or None to rank every item."""
    if candidates is None:
        return None
    ids, _ = check_ids(candidates, n_items, "candidates")
    return np.unique(ids)


@dataclass(frozen=True)
class RankingIndex:
    """Item rows in non-increasing norm order, with the bounds the top-K kernel prunes by.

    ``direction`` is the items' dominant direction e (top right singular
    vector).  ``suffix_bounds[i]`` holds, over the sorted rows i..n-1, the max
    and min of y.e and the max norm of the part of (y, bias) orthogonal to e,
    so that ``q.y + b <= max(a*max_e, a*min_e) + |(q, 1)_perp| * max_perp``.
    """

    order: np.ndarray          # int32 item id of each sorted row
    factors: np.ndarray        # (n_items, f) rows in that order
    bias: np.ndarray | None    # biases in that order
    direction: np.ndarray      # (f,) unit vector
    suffix_bounds: np.ndarray  # (n_items, 3)
    # compact(): the rows as int8 codes for single queries, built on first use
    _compact: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def build(cls, item_factors: np.ndarray, item_bias: np.ndarray | None) -> "RankingIndex":
        with blas_single_thread():  # see ALS._gram: no spinning BLAS workers
            return cls._build(item_factors, item_bias)

    @classmethod
    def _build(cls, item_factors: np.ndarray, item_bias: np.ndarray | None) -> "RankingIndex":
        Y = item_factors.astype(np.float64)
        sq = np.einsum("ij,ij->i", Y, Y)
        if item_bias is not None:
            sq = sq + np.square(item_bias.astype(np.float64))
        order = np.argsort(-sq, kind="stable").astype(np.int32)
        Ys, sq = Y[order], sq[order]
        head = Ys[: min(len(Ys), 4096)]
        if head.size and np.any(head) and head.shape[1] <= 256:
            direction = np.linalg.svd(head, full_matrices=False)[2][0]
        elif head.size and np.any(head):
            # wide rows (EASE's item-item columns): power iteration, not an O(n f^2) SVD.
            # Any unit direction gives a valid bound; a better one only prunes more.
            direction = head[0] / np.linalg.norm(head[0])
            for _ in range(20):
                direction = head.T @ (head @ direction)
                norm = np.linalg.norm(direction)
                if norm == 0:
                    direction = head[0] / np.linalg.norm(head[0])
                    break
                direction /= norm
        else:
            direction = np.zeros(Y.shape[1])
            if Y.shape[1]:
                direction[0] = 1.0
        along = Ys @ direction
        perp = np.sqrt(np.maximum(sq - along * along, 0.0))
        suffix = np.empty((len(Ys), 3))
        suffix[:, 0] = np.maximum.accumulate(along[::-1])[::-1]
        suffix[:, 1] = np.minimum.accumulate(along[::-1])[::-1]
        suffix[:, 2] = np.maximum.accumulate(perp[::-1])[::-1]
        dtype = item_factors.dtype
        bias = None if item_bias is None else np.ascontiguousarray(item_bias[order])
        return cls(order, np.ascontiguousarray(item_factors[order]), bias,
                   direction.astype(dtype), suffix.astype(dtype))

    def compact(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """``(codes, code_scale, code_err)`` of the sorted rows (see ``compact_rows``), or None.

        Built on the first single query and kept (a batch never needs them, and
        an index rebuilt after item updates should not pay for them); None for
        float64 rows or more than 512 factors, which keep the float scan.
        """
        if "rows" not in self._compact:
            rows = None
            if self.factors.dtype == np.float32 and 0 < self.factors.shape[1] <= 512:
                Y = self.factors.astype(np.float64)
                sq = np.einsum("ij,ij->i", Y, Y)
                if self.bias is not None:
                    sq += np.square(self.bias.astype(np.float64))
                rows = compact_rows(self.factors, np.sqrt(sq))
            self._compact["rows"] = rows
        return self._compact["rows"]


def compact_rows(factors: np.ndarray, norms: np.ndarray, chunk: int = 65536
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """int8 codes of float32 rows, their scales and a bound on each row's score error.

    Row i is ``code_scale[i] * codes[i]`` up to a residual r_i (each entry off by
    at most half a step, the step being max|y_i| / 127).  ``code_err[i]`` is
    |r_i| plus ``norms[i]`` (= |(y_i, b_i)|) times (4f + 16) 2^-23 (the float32
    rounding of the approximate and of the exact score, each within (f + 2)
    2^-24 |(q, 1)| |(y_i, b_i)|, with a fourfold margin) and sqrt(f) 2^-15
    (twice the int16 query's residual, at most sqrt(f) 0.51 max|q| / 32767),
    rounded up.  The kernel multiplies it by |(q, 1)| (1 + 1e-5 + sqrt(f) 2^-15),
    which bounds how far the exact score it computes can lie above the
    approximate one.
    """
    n, f = factors.shape
    codes = np.empty((n, f), dtype=np.int8)
    scale = np.empty(n, dtype=np.float32)
    err = np.empty(n, dtype=np.float64)
    for start in range(0, n, chunk):
        Y = factors[start:start + chunk].astype(np.float64)
        step = (np.abs(Y).max(axis=1) / 127).astype(np.float32)
        safe = np.where(step > 0, step, 1).astype(np.float64)
        c = np.clip(np.rint(Y / safe[:, None]), -127, 127)
        codes[start:start + chunk] = c
        scale[start:start + chunk] = step
        resid = np.linalg.norm(Y - step.astype(np.float64)[:, None] * c, axis=1)
        err[start:start + chunk] = resid * (1 + 1e-6)
    err += ((4 * f + 16) * 2.0 ** -23 + np.sqrt(f) * 2.0 ** -15) * norms
    err32 = err.astype(np.float32)
    err32 = np.where(err32 < err, np.nextafter(err32, np.float32(np.inf)), err32).astype(np.float32)
    return codes, scale, err32


def csr_rows(csr: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(indptr, indices)`` of the given rows of a CSR matrix, without building a matrix."""
    starts = csr.indptr[rows].astype(np.int64)
    lengths = csr.indptr[rows + 1] - starts
    indptr = np.zeros(rows.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    if rows.size == 1:
        return indptr, csr.indices[starts[0]:starts[0] + lengths[0]]
    positions = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
    return indptr, csr.indices[positions]


def _seen_row(indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The one query's seen ids (int32, sorted) from its CSR arrays, or an empty array."""
    if indptr.size == 0:
        return _EMPTY_I32
    row = indices[int(indptr[0]):int(indptr[1])]
    return np.ascontiguousarray(row, dtype=np.int32)


def top_k(queries: np.ndarray, item_factors: np.ndarray, item_bias: np.ndarray | None,
          n: int, seen: sp.csr_matrix | None = None, exclude_mask: np.ndarray = _EMPTY_U8,
          candidates: np.ndarray | None = None, num_threads: int = 1,
          index: RankingIndex | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Best ``n`` items for each query row; ids padded with -1 (score -inf) when too few are eligible.

    Parameters
    ----------
    queries : (m, f) query vectors, same dtype as ``item_factors``.
    seen : optional CSR (m x n_items) of items each query must skip (sorted
        indices), or its ``(indptr, indices)`` arrays.
    exclude_mask : uint8 mask over all items, or empty.
    candidates : sorted unique item ids to rank, or None for all items.
    index : optional norm-sorted copy of the items (from ``FittedState.ranking_index``)
        that lets the kernel stop early; used when there are no candidates.
    """
    dtype = item_factors.dtype
    bounds: dict = {}
    queries = np.ascontiguousarray(queries, dtype=dtype)
    m = queries.shape[0]
    if candidates is not None:
        item_rows = np.ascontiguousarray(item_factors[candidates])
        bias = item_bias[candidates] if item_bias is not None else None
        item_map = candidates.astype(np.int32, copy=False)
        n = min(n, candidates.size)
    elif index is not None:
        item_rows, bias, item_map = index.factors, index.bias, index.order
        bounds = {"direction": index.direction, "suffix_bounds": index.suffix_bounds}
        n = min(n, item_factors.shape[0])
    else:
        item_rows, bias, item_map = item_factors, item_bias, _EMPTY_I32
        n = min(n, item_factors.shape[0])
    ids = np.empty((m, n), dtype=np.int32)
    scores = np.empty((m, n), dtype=dtype)
    if isinstance(seen, tuple):
        seen_indptr, seen_indices = seen
    elif seen is not None:
        seen_indptr, seen_indices = seen.indptr, seen.indices
        if seen_indices.dtype != np.int32:
            seen_indices = seen_indices.astype(np.int32)
    else:
        seen_indptr, seen_indices = _EMPTY_I32, _EMPTY_I32
    bias_arr = np.ascontiguousarray(bias, dtype=dtype) if bias is not None else np.empty(0, dtype)
    kernel = load_kernel("topk")
    args = (queries, item_rows, bias_arr, seen_indptr, seen_indices, exclude_mask, item_map,
            ids, scores, num_threads)
    compact = index.compact() if m == 1 and bounds else None
    if compact is not None:
        # one query: scan the int8 rows, rescore in float32 only what can enter
        kernel.topk_one(queries[0], item_rows, bias_arr, *compact,
                        _seen_row(seen_indptr, seen_indices), exclude_mask, item_map, ids[0], scores[0],
                        index.direction, index.suffix_bounds, block_items=_BLOCK_ITEMS_ONE)
    elif m == 1:  # one query is scored with our own dots: no BLAS, no limit to set
        kernel.topk(*args, block_users=1, block_items=_BLOCK_ITEMS_ONE, **bounds)
    else:
        with blas_single_thread():
            kernel.topk(*args, block_users=_block_users(m, num_threads), block_items=_BLOCK_ITEMS, **bounds)
    return ids, scores
