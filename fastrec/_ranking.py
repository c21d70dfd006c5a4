"""Prepare arguments for the compiled top-K kernel and call it.

All filters are applied inside the kernel; this module only turns user-level
arguments (seen matrices, exclusion lists, candidate subsets) into the flat
arrays the kernel reads.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ._kernels import load_kernel
from ._threads import blas_single_thread
from ._validation import check_ids

__all__ = ["top_k", "exclusion_mask", "candidate_ids"]

_EMPTY_I32 = np.empty(0, dtype=np.int32)
_EMPTY_U8 = np.empty(0, dtype=np.uint8)


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


def top_k(queries: np.ndarray, item_factors: np.ndarray, item_bias: np.ndarray | None,
          n: int, seen: sp.csr_matrix | None = None, exclude_mask: np.ndarray = _EMPTY_U8,
          candidates: np.ndarray | None = None, num_threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Best ``n`` items for each query row; ids padded with -1 (score -inf) when too few are eligible.

    Parameters
    ----------
    queries : (m, f) query vectors, same dtype as ``item_factors``.
    seen : optional CSR (m x n_items) of items each query must skip (sorted indices).
    exclude_mask : uint8 mask over all items, or empty.
    candidates : sorted unique item ids to rank, or None for all items.
    """
    dtype = item_factors.dtype
    queries = np.ascontiguousarray(queries, dtype=dtype)
    m = queries.shape[0]
    if candidates is not None:
        item_rows = np.ascontiguousarray(item_factors[candidates])
        bias = item_bias[candidates] if item_bias is not None else None
        item_map = candidates.astype(np.int32, copy=False)
        n = min(n, candidates.size)
    else:
        item_rows, bias, item_map = item_factors, item_bias, _EMPTY_I32
        n = min(n, item_factors.shape[0])
    ids = np.empty((m, n), dtype=np.int32)
    scores = np.empty((m, n), dtype=dtype)
    if seen is not None:
        seen_indptr, seen_indices = seen.indptr, seen.indices
        if seen_indices.dtype != np.int32:
            seen_indices = seen_indices.astype(np.int32)
    else:
        seen_indptr, seen_indices = _EMPTY_I32, _EMPTY_I32
    bias_arr = np.ascontiguousarray(bias, dtype=dtype) if bias is not None else np.empty(0, dtype)
    kernel = load_kernel("topk")
    with blas_single_thread():
        kernel.topk(queries, item_rows, bias_arr, seen_indptr, seen_indices,
                    exclude_mask, item_map, ids, scores, num_threads)
    return ids, scores
