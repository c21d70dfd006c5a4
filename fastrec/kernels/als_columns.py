"""A CSR matrix's columns, as CSC slices built in bounded memory.

ALS's item half-step reads the interactions by column.  A full CSC copy costs
as much memory as the input itself, so when it would exceed a budget the
columns are split into slices of about equal size, and each slice's CSC is
built into reused buffers just before the half-step solves those columns.
Building costs one pass over the input per sweep (about a transpose); when
everything fits in one slice it is built once and kept.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import scipy.sparse as sp

from . import load_kernel
from ..utils.validation import CSRArrays

__all__ = ["ColumnSlices", "slice_budget"]

_MIN_BUDGET = 32 * 2 ** 20


def slice_budget(input_bytes: int, factor_bytes: int) -> int:
    """Bytes one CSC slice may use: a quarter of the input plus factors, at least 32 MB.

    This keeps ``fit``'s peak memory near 1.25x the input plus the factors on
    big inputs, and builds small inputs' CSC once.
    """
    return max(_MIN_BUDGET, (input_bytes + factor_bytes) // 4)


class ColumnSlices:
    """Iterate over the columns of ``csr`` as (first column, last column + 1, CSC arrays).

    Parameters
    ----------
    csr : canonical CSR matrix (sorted int32 column indices, in range)
    budget_bytes : memory one slice's indices and values may use
    num_threads : threads building each slice

    Attributes
    ----------
    column_counts : ndarray of int64
        Stored entries per column.
    max_column_length : int
    bounds : ndarray of int64
        Slice boundaries: slice k holds columns bounds[k] .. bounds[k+1].
    n_slices : int
    """

    def __init__(self, csr: sp.csr_matrix, budget_bytes: int, num_threads: int):
        self._csr = csr
        self._threads = max(1, int(num_threads))
        n_rows, n_cols = csr.shape
        nnz = int(csr.indptr[-1])
        # one block of rows per thread, balanced by entries
        n_blocks = max(1, min(self._threads, n_rows))
        targets = np.arange(n_blocks + 1, dtype=np.float64) * (nnz / n_blocks)
        row_bounds = np.searchsorted(csr.indptr, targets, side="left").astype(np.int64)
        row_bounds[0], row_bounds[-1] = 0, n_rows
        self._row_bounds = np.maximum.accumulate(row_bounds)
        counts = np.zeros((n_blocks, n_cols), dtype=np.int64)
        load_kernel("als").column_counts_by_block(csr.indptr, csr.indices, self._row_bounds, counts,
                                                  self._threads)
        self.column_counts = counts.sum(axis=0)
        self.max_column_length = int(self.column_counts.max(initial=0))
        # in place, an exclusive prefix over blocks: where block p's entries of each column start
        running = np.zeros(n_cols, dtype=np.int64)
        for block in counts:  # few blocks (one per thread)
            block_counts = block.copy()
            block[:] = running
            running += block_counts
        self._block_offsets = counts

        entry_bytes = csr.indices.itemsize + csr.data.itemsize
        wanted = max(1, min(n_cols, math.ceil(nnz * entry_bytes / max(1, budget_bytes))))
        cumulative = np.concatenate(([0], np.cumsum(self.column_counts)))
        cuts = np.searchsorted(cumulative, np.arange(1, wanted) * (nnz / wanted), side="left")
        self.bounds = np.unique(np.concatenate(([0], cuts, [n_cols]))).astype(np.int64)
        self.n_slices = self.bounds.size - 1
        sizes = cumulative[self.bounds[1:]] - cumulative[self.bounds[:-1]]
        widths = np.diff(self.bounds)
        self._indptr = np.zeros(int(widths.max(initial=0)) + 1, dtype=np.int64)
        self._indices = np.empty(int(sizes.max(initial=0)), dtype=np.int32)
        self._data = np.empty(int(sizes.max(initial=0)), dtype=csr.data.dtype)
        self._cursor = np.empty(n_rows, dtype=np.int64)
        self._kept: list[tuple[int, int, CSRArrays]] | None = None

    def __iter__(self) -> Iterator[tuple[int, int, CSRArrays]]:
        """Yield each slice; its arrays are overwritten by the next one (unless there is one slice)."""
        if self._kept is not None:
            yield from self._kept
            return
        csr, kernel = self._csr, load_kernel("als")
        self._cursor[:] = csr.indptr[:-1]
        slices = []
        for lo, hi in zip(self.bounds[:-1].tolist(), self.bounds[1:].tolist()):
            width = hi - lo
            indptr = self._indptr[: width + 1]
            np.cumsum(self.column_counts[lo:hi], out=indptr[1:])
            size = int(indptr[-1])
            positions = indptr[:-1] + self._block_offsets[:, lo:hi]
            indices, data = self._indices[:size], self._data[:size]
            kernel.fill_column_slice(csr.indptr, csr.indices, csr.data, self._cursor, lo, hi,
                                     self._row_bounds, positions, indices, data, self._threads)
            item = (lo, hi, CSRArrays(indptr, indices, data, (width, csr.shape[0])))
            slices.append(item)
            yield item
        if self.n_slices == 1:
            self._kept = slices  # nothing else will overwrite the buffers
