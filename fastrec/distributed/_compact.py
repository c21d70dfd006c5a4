"""Compact CSR rows for the shards a DaskALS worker keeps for a whole fit.

A shard is read once per half-step, so it can be stored small and decoded in
bounded chunks just before each kernel call.  Per stored entry a
``CompactRows`` keeps:

* the column index's low 16 bits (uint16); the high bits are run-length
  coded over the entries (within a row the columns are sorted, so a row
  adds at most one run per 65,536 columns: none at all when the other side
  has at most 65,536 rows);
* the value: nothing when every value is the same (binary implicit data),
  a uint8 code into a table of the distinct values when there are at most
  256 of them (ratings), else the value itself.

That is 2 bytes per entry instead of 8 (int32 index + float32 value) on
binary data.  Decoding gives back the exact int32 indices and values, bit
for bit (values are compared by their bits).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..utils.csr_arrays import CSRArrays

__all__ = ["CompactRows", "CHUNK_ENTRIES"]

# entries decoded at a time: 128k entries of int32 indices and float32 values = 1 MB (and as much in
# temporaries), small next to a worker's factors; each chunk is one kernel call (~0.5 ms of work or more)
CHUNK_ENTRIES = 1 << 17
_LOW = 16
_MAX_CODES = 256


@dataclass
class CompactRows:
    """Rows of a CSR matrix stored compactly (see the module docstring); ``rows(lo, hi)`` decodes."""

    indptr: np.ndarray       # int64, n_rows + 1
    low: np.ndarray          # uint16 per entry: column & 0xFFFF
    run_starts: np.ndarray   # int64: the entry where each run of equal high halves starts (the first is 0)
    run_highs: np.ndarray    # int32: column >> 16 of each run
    table: np.ndarray        # the distinct values (bitwise) when coded or constant; else empty
    codes: np.ndarray | None   # uint8 per entry into ``table``; None when constant or stored plainly
    values: np.ndarray | None  # the values themselves, when they have more than 256 distinct bit patterns
    shape: tuple[int, int]
    dtype: np.dtype

    @property
    def nnz(self) -> int:
        return int(self.low.size)

    @property
    def constant(self) -> bool:
        """Whether every value is the same (``rows`` then serves them from one shared array)."""
        return self.values is None and self.codes is None

    @property
    def nbytes(self) -> int:
        arrays = (self.indptr, self.low, self.run_starts, self.run_highs, self.table, self.codes, self.values)
        return sum(a.nbytes for a in arrays if a is not None)

    @classmethod
    def from_csr(cls, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, shape: tuple[int, int],
                 column_map: np.ndarray | None = None, chunk: int = CHUNK_ENTRIES) -> "CompactRows":
        """Encode CSR arrays; ``column_map[indices]`` are the columns stored when given (mapped in chunks).

        No temporary is larger than a chunk, except the distinct values'
        search (one bitwise copy of ``data``) when they are not all equal.
        """
        indptr = np.asarray(indptr, dtype=np.int64)
        data = np.asarray(data)
        nnz = int(data.size)
        low = np.empty(nnz, dtype=np.uint16)
        starts: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
        highs: list[np.ndarray] = [np.zeros(1, dtype=np.int32)]
        previous = 0
        for a in range(0, nnz, chunk):
            b = min(a + chunk, nnz)
            cols = np.asarray(indices[a:b]) if column_map is None else column_map[indices[a:b]]
            cols = cols.astype(np.int64, copy=False)
            low[a:b] = cols & 0xFFFF
            high = (cols >> _LOW).astype(np.int32)
            changes = np.flatnonzero(np.diff(high, prepend=np.int32(previous)))
            if changes.size:
                starts.append(changes + a)
                highs.append(high[changes])
            previous = int(high[-1])
        table, codes, values = _encode_values(data)
        return cls(indptr, low, np.concatenate(starts), np.concatenate(highs), table, codes, values,
                   (int(shape[0]), int(shape[1])), data.dtype)

    def rows(self, lo: int, hi: int, reuse: bool = False) -> CSRArrays:
        """Rows ``lo:hi`` as CSR arrays: int64 indptr from 0, int32 indices, values of ``dtype``.

        The values of a constant block are a read-only view of one shared
        array (grown as needed), not a new array per call.  With ``reuse``
        the indices and coded values are decoded into this thread's work
        space, overwritten by its next ``reuse`` call: for a chunk read at
        once and dropped (a Dask worker gives freed memory back at once, so
        a fresh chunk-sized array costs its page faults every time).
        """
        a, b = int(self.indptr[lo]), int(self.indptr[hi])
        indptr = self.indptr[lo:hi + 1] - a
        if reuse:
            indices = _decode_space(b - a, None)[0]
            np.copyto(indices, self.low[a:b], casting="unsafe")
        else:
            indices = self.low[a:b].astype(np.int32)
        first = int(np.searchsorted(self.run_starts, a, side="right")) - 1
        last = int(np.searchsorted(self.run_starts, b, side="left"))
        highs = self.run_highs[first:last]
        if highs.any():
            edges = np.clip(self.run_starts[first:last], a, b)
            lengths = np.diff(np.append(edges, b))
            indices |= np.repeat(highs << np.int32(_LOW), lengths)
        return CSRArrays(indptr, indices, self._values(a, b, reuse), (hi - lo, self.shape[1]))

    def low_rows(self, lo: int, hi: int) -> CSRArrays | None:
        """Rows ``lo:hi`` with their stored uint16 column indices (a view, nothing decoded) when no column
        needs more than 16 bits, else None; values as ``rows(..., reuse=True)``."""
        if self.run_highs.any():
            return None
        a, b = int(self.indptr[lo]), int(self.indptr[hi])
        return CSRArrays(self.indptr[lo:hi + 1] - a, self.low[a:b], self._values(a, b, True), (hi - lo, self.shape[1]))

    def _values(self, a: int, b: int, reuse: bool) -> np.ndarray:
        """The values of entries ``a:b``: a view (plain or constant), or decoded codes (into this thread's
        work space with ``reuse``)."""
        if self.values is not None:
            return self.values[a:b]
        if self.codes is None:
            return self._constant(b - a)
        if reuse:
            return np.take(self.table, self.codes[a:b], out=_decode_space(b - a, self.dtype)[1])
        return self.table[self.codes[a:b]]

    def _constant(self, size: int) -> np.ndarray:
        filled = self.__dict__.get("_filled")
        if filled is None or filled.size < size:
            filled = np.full(size, self.table[0] if self.table.size else 0, dtype=self.dtype)
            filled.flags.writeable = False
            self.__dict__["_filled"] = filled
        return filled[:size]

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_filled"}  # a cache, not data

    def chunks(self, max_entries: int = CHUNK_ENTRIES) -> Iterator[tuple[int, int]]:
        """Consecutive row ranges holding at most ``max_entries`` entries (a longer row alone)."""
        n_rows = self.shape[0]
        lo = 0
        while lo < n_rows:
            limit = int(self.indptr[lo]) + max_entries
            hi = int(np.searchsorted(self.indptr, limit, side="right")) - 1
            hi = min(max(hi, lo + 1), n_rows)
            yield lo, hi
            lo = hi


_DECODE_SPACE = threading.local()


def _decode_space(entries: int, dtype: np.dtype | None) -> tuple[np.ndarray, np.ndarray | None]:
    """This thread's decoding buffers, grown as needed: ``entries`` int32 indices (and values of ``dtype``)."""
    indices, values = getattr(_DECODE_SPACE, "indices", None), getattr(_DECODE_SPACE, "values", None)
    if indices is None or indices.size < entries:
        indices = _DECODE_SPACE.indices = np.empty(max(entries, CHUNK_ENTRIES), dtype=np.int32)
    if dtype is not None and (values is None or values.size < entries or values.dtype != dtype):
        values = _DECODE_SPACE.values = np.empty(max(entries, CHUNK_ENTRIES), dtype=dtype)
    return indices[:entries], None if dtype is None else values[:entries]


def _encode_values(data: np.ndarray, chunk: int = CHUNK_ENTRIES
                   ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(table, codes, values): constant values as a one-entry table, few distinct ones as codes, else a copy."""
    if data.size == 0:
        return np.empty(0, dtype=data.dtype), None, None
    bits = data.view(np.dtype(f"u{data.dtype.itemsize}"))
    if bool((bits == bits[0]).all()):
        return data[:1].copy(), None, None
    distinct = np.unique(bits)
    if distinct.size > _MAX_CODES:
        return np.empty(0, dtype=data.dtype), None, data.copy()  # a copy: not a view into a received buffer
    codes = np.empty(data.size, dtype=np.uint8)
    for a in range(0, data.size, chunk):
        codes[a:a + chunk] = np.searchsorted(distinct, bits[a:a + chunk])
    return distinct.view(data.dtype), codes, None
