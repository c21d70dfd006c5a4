"""Prepare arguments for the compiled top-K kernel and call it.

All filters are applied inside the kernel; this module only turns user-level
arguments (seen matrices, exclusion lists, candidate subsets) into the flat
arrays the kernel reads.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from . import _cpu_features, kernel_variant, load_kernel
from ..utils.threads import blas_single_thread
from ..utils.validation import check_ids

__all__ = ["top_k", "exclusion_mask", "candidate_ids", "csr_rows", "RankingIndex", "PackedCodes", "packed_codes",
           "one_user_scan"]

_EMPTY_I32 = np.empty(0, dtype=np.int32)
_EMPTY_U8 = np.empty(0, dtype=np.uint8)
# tile sizes: a 256 x 512 float32 score tile (512 KB) stays in L2, and GEMM packs
# each item tile once per 256 users (64 x 1024 took 1.5x the time on ML-1M factors
# tiled to 35k items); a single query checks the pruning bound more often
_BLOCK_USERS = 256
# the code path stores a query's bounds only where they reach its k-th best, so its tile is mostly
# untouched: 512 users per block read the codes half as often (3% faster on ML-1M tiled to 35k)
_CODES_BLOCK_USERS = 512
_MIN_BLOCK_USERS = 16
_BLOCK_ITEMS = 512
_BLOCK_ITEMS_ONE = 256
# codes' integer dots stay exact in float32 after the offset is removed (127 * 63 * f < 2^24)
_MAX_CODE_FACTORS = 2048
_SPLIT_BYTES = 2 ** 21


@functools.lru_cache(maxsize=None)
def _vector_build() -> tuple[bool, bool]:
    """(the kernels in use are an AVX2/AVX-512 build, AVX-512 VNNI is usable): fixed for the process."""
    variant = kernel_variant()
    return variant in ("avx2", "avx512"), variant == "avx512" and bool(_cpu_features().get("AVX512VNNI"))


def _codes_pay(item_rows: np.ndarray) -> bool:
    """Whether a query takes the integer-code path: float32 rows on a vector build."""
    return (item_rows.dtype == np.float32 and 0 < item_rows.shape[1] <= _MAX_CODE_FACTORS
            and _vector_build()[0])


def _has_vnni() -> bool:
    """AVX-512 VNNI (``vpdpbusd``) usable by the AVX-512 build."""
    return _vector_build()[1]


def max_query_split(packed: "PackedCodes") -> int:
    """Threads one query's scan may be dealt to: one per block of rows once its codes outgrow a
    core's cache (2 MiB), where reading them with every core pays for waking the threads; else 1.
    The kernel takes one thread instead while another one-query call is running."""
    return 1 if packed.codes.nbytes < _SPLIT_BYTES else -(-packed.scale.size // _BLOCK_ITEMS)


def one_query_split(packed: "PackedCodes", num_threads: int) -> int:
    """``max_query_split`` for ``num_threads`` threads."""
    return max(1, min(num_threads, max_query_split(packed)))


def _block_users(m: int, num_threads: int, most: int = _BLOCK_USERS) -> int:
    """Users per tile: ``most``, or fewer so a small batch still gives every thread a few blocks."""
    return max(_MIN_BLOCK_USERS, min(most, -(-m // (4 * max(1, num_threads)))))


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
    # derived arrays built on first use and kept: packed(), positions()
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
        dtype = item_factors.dtype
        bias = None if item_bias is None else np.ascontiguousarray(item_bias[order])
        return cls(order, np.ascontiguousarray(item_factors[order]), bias,
                   direction.astype(dtype), _suffix_bounds(Ys, sq, direction).astype(dtype))

    def with_items(self, items: np.ndarray, vectors: np.ndarray) -> "RankingIndex":
        """This index with items ``items`` (ids) given new ``vectors`` (biases unchanged): a partial fit.

        The rows stay where they are (the norm order only makes the bounds
        tight), the direction is kept (any unit vector gives a valid bound),
        the suffix bounds of the rows up to the last changed one also cover
        the changed rows' new values (the old values stay covered: still
        bounds, a little looser, until the index is rebuilt), and the packed
        codes, if built, are recomputed for those rows only.  O(n f) copying
        and O(n) for the bounds, instead of a sort, an SVD and a repack.  The
        index is new: readers of this one see it unchanged.
        """
        rows = self.positions()[items]
        factors = self.factors.copy()
        factors[rows] = vectors
        suffix = self.suffix_bounds.copy()
        if rows.size:
            # rows up to the last changed one see the changed rows among those after them: their bounds
            # take the new rows' values in too (the old values stay in: a bound, just not the tightest)
            Y = factors[rows].astype(np.float64)
            sq = np.einsum("ij,ij->i", Y, Y)
            if self.bias is not None:
                sq += np.square(self.bias[rows].astype(np.float64))
            along = Y @ self.direction.astype(np.float64)
            perp = np.sqrt(np.maximum(sq - along * along, 0.0))
            head = int(rows.max()) + 1
            changed = np.full((head, 3), [-np.inf, np.inf, -np.inf])
            np.maximum.at(changed[:, 0], rows, along)
            np.minimum.at(changed[:, 1], rows, along)
            np.maximum.at(changed[:, 2], rows, perp)
            changed[:, 0] = np.maximum.accumulate(changed[::-1, 0])[::-1]
            changed[:, 1] = np.minimum.accumulate(changed[::-1, 1])[::-1]
            changed[:, 2] = np.maximum.accumulate(changed[::-1, 2])[::-1]
            old = suffix[:head].astype(np.float64)
            up = _round_up32 if suffix.dtype == np.float32 else (lambda values: values)  # never below
            suffix[:head, 0] = up(np.maximum(old[:, 0], changed[:, 0]))
            suffix[:head, 1] = -up(-np.minimum(old[:, 1], changed[:, 1]))
            suffix[:head, 2] = up(np.maximum(old[:, 2], changed[:, 2]))
        index = RankingIndex(self.order, factors, self.bias, self.direction, suffix)
        index._compact["positions"] = self.positions()
        index._compact["patched_rows"] = self.patched_rows + int(rows.size)
        packed = self._compact.get("packed")
        if packed is not None:
            index._compact["packed"] = packed.with_rows(rows, factors[rows],
                                                        None if self.bias is None else self.bias[rows])
        return index

    @property
    def patched_rows(self) -> int:
        """Rows changed by ``with_items`` since the index was built (they may sit out of norm order)."""
        return self._compact.get("patched_rows", 0)

    def positions(self) -> np.ndarray:
        """The row of each item id in the sorted rows (the inverse of ``order``), built on first use."""
        if "positions" not in self._compact:
            positions = np.empty(self.order.size, dtype=np.int32)
            positions[self.order] = np.arange(self.order.size, dtype=np.int32)
            self._compact["positions"] = positions
        return self._compact["positions"]

    def packed(self) -> "PackedCodes | None":
        """7-bit codes of the sorted rows (see ``packed_codes``), or None for float64 rows.

        Built on the first query that takes the code path and kept (float64
        rows keep the float scan).
        """
        if "packed" not in self._compact:
            packed = None
            if self.factors.dtype == np.float32 and self.factors.shape[1] > 0:
                packed = packed_codes(self.factors, self.bias)
            self._compact["packed"] = packed
        return self._compact["packed"]


def _suffix_bounds(Ys: np.ndarray, sq: np.ndarray, direction: np.ndarray,
                   after: np.ndarray | None = None) -> np.ndarray:
    """(n, 3): over rows i..n-1 of ``Ys`` (float64), max and min of y.e and max of |(y, b)_perp|,
    combined with ``after``, the bounds of the rows that follow (when ``Ys`` is a head)."""
    along = Ys @ direction
    perp = np.sqrt(np.maximum(sq - along * along, 0.0))
    if after is not None:
        hi, lo, far = (float(v) for v in after)
        along_hi, along_lo, perp = np.append(along, hi), np.append(along, lo), np.append(perp, far)
    else:
        along_hi = along_lo = along
    suffix = np.empty((len(along_hi), 3))
    suffix[:, 0] = np.maximum.accumulate(along_hi[::-1])[::-1]
    suffix[:, 1] = np.minimum.accumulate(along_lo[::-1])[::-1]
    suffix[:, 2] = np.maximum.accumulate(perp[::-1])[::-1]
    return suffix[:len(Ys)]


@dataclass(frozen=True)
class PackedCodes:
    """Rows as 7-bit codes packed for ``topk_codes``, with their per-row arrays (padded to 32 rows)."""

    codes: np.ndarray  # int8, (n_pad / 16) x ceil(f / 4) x 16 x 4, flattened
    scale: np.ndarray  # float32 step of each row
    corr: np.ndarray   # int32, 128 * sum of the row's codes (the queries' +128 offset)
    err: np.ndarray    # float32, per unit of |(q, 1)| + |e_q|
    norm: np.ndarray   # float32, |(y, b)| rounded up, per unit of |e_q|
    bias: np.ndarray   # float32 padded biases, or empty
    # the head: the first head_quads quads of factors (0: no head).  A query's dot over them with the
    # rest bounded by |q_tail| |y_tail| can show a row out of reach before the tail is computed.
    corr_head: np.ndarray  # int32, 128 * sum of the row's head codes
    tail: np.ndarray       # float32, |y_tail| (the factors after the head) rounded up
    head_quads: int

    def with_rows(self, rows: np.ndarray, factors: np.ndarray, bias: np.ndarray | None) -> "PackedCodes":
        """A copy with rows ``rows`` (positions) coded from new ``factors`` (and biases)."""
        part = packed_codes(factors, bias)
        f4 = self.codes.size // self.scale.size // 4
        codes = self.codes.copy()
        grid = codes.reshape(-1, f4, 16, 4)  # group, quad, row in group, code
        part_grid = part.codes.reshape(-1, f4, 16, 4)
        local = np.arange(rows.size)
        grid[rows // 16, :, rows % 16, :] = part_grid[local // 16, :, local % 16, :]
        arrays = {}
        for name in ("scale", "corr", "err", "norm", "corr_head", "tail"):
            values = getattr(self, name).copy()
            values[rows] = getattr(part, name)[:rows.size]
            arrays[name] = values
        padded_bias = self.bias
        if bias is not None:
            padded_bias = self.bias.copy()
            padded_bias[rows] = bias
        return PackedCodes(codes, arrays["scale"], arrays["corr"], arrays["err"], arrays["norm"], padded_bias,
                           arrays["corr_head"], arrays["tail"], self.head_quads)


def _round_up32(values: np.ndarray) -> np.ndarray:
    """float64 values as float32 no smaller than them."""
    out = values.astype(np.float32)
    return np.where(out < values, np.nextafter(out, np.float32(np.inf)), out).astype(np.float32)


def head_quads(f4: int) -> int:
    """Quads of factors in the head of ``f4`` (even, about 5/8 of them; 0 below 8 quads: no head).

    On ML-1M factors tiled to 35k items at 128 factors, a head of 80 factors leaves about 30% of
    (query, 16-row) pairs whose bound still reaches the k-th best after the head."""
    if f4 < 8:
        return 0
    quads = (5 * f4) // 8
    return quads - quads % 2


def packed_codes(factors: np.ndarray, bias: np.ndarray | None, chunk: int = 65536) -> PackedCodes:
    """7-bit codes of float32 rows packed for ``topk_codes``, and the bound terms of each row.

    Row i is ``scale[i] * c_i`` plus a residual r_i, with |c_i| <= 63 (step
    max|y_i| / 63): small enough that ``vpmaddubsw`` never saturates on
    (8-bit query code + 128) x c pairs.  A query q = s_q q~ + e_q, so
    q.y_i - s_q scale[i] q~.c_i = s_q q~.r_i + e_q.y_i, at most
    (|q| + |e_q|) |r_i| + |e_q| |y_i|.  ``err[i]`` is |r_i| plus
    (4f + 16) 2^-23 |(y_i, b_i)| (the float32 rounding of the bound and of the
    exact score, each within (f + 2) 2^-24 |(q, 1)| |(y_i, b_i)|, with a
    fourfold margin) and ``norm[i]`` is |(y_i, b_i)|,
    both rounded up; the kernel multiplies them by (|(q, 1)| + |e_q|) and
    |e_q| (each times 1 + 1e-5).  Rows are padded with zero rows to a multiple
    of 32 and grouped by 16, each group holding ceil(f / 4) quads of 64 bytes
    (16 rows x 4 codes).  The head (``head_quads``) gets its own correction ``corr_head`` and
    the rest of each row its norm ``tail`` (rounded up): the head's integer dot, the same error
    terms and |q_tail| ``tail[i]`` bound the score too.
    """
    n, f = factors.shape
    f4 = -(-f // 4)
    n_pad = -(-n // 32) * 32
    codes = np.zeros((n_pad, 4 * f4), dtype=np.int8)
    scale = np.zeros(n_pad, dtype=np.float32)
    err = np.zeros(n_pad, dtype=np.float64)
    norms = np.zeros(n_pad, dtype=np.float64)
    tails = np.zeros(n_pad, dtype=np.float64)
    head = 4 * head_quads(f4)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        Y = factors[start:stop].astype(np.float64)
        step = (np.abs(Y).max(axis=1) / 63).astype(np.float32)
        safe = np.where(step > 0, step, 1).astype(np.float64)
        c = np.clip(np.rint(Y / safe[:, None]), -63, 63)
        codes[start:stop, :f] = c
        scale[start:stop] = step
        err[start:stop] = np.linalg.norm(Y - step.astype(np.float64)[:, None] * c, axis=1) * (1 + 1e-6)
        sq = np.einsum("ij,ij->i", Y, Y)
        if bias is not None:
            sq += np.square(bias[start:stop].astype(np.float64))
        norms[start:stop] = np.sqrt(sq)
        if head:
            tails[start:stop] = np.linalg.norm(Y[:, head:], axis=1)
    err += (4 * f + 16) * 2.0 ** -23 * norms
    corr = (128 * codes.sum(axis=1, dtype=np.int64)).astype(np.int32)
    corr_head = (128 * codes[:, :head].sum(axis=1, dtype=np.int64)).astype(np.int32)
    grouped = codes.reshape(n_pad // 16, 16, f4, 4).transpose(0, 2, 1, 3)
    padded_bias = np.empty(0, np.float32)
    if bias is not None:
        padded_bias = np.zeros(n_pad, dtype=np.float32)
        padded_bias[:n] = bias
    return PackedCodes(np.ascontiguousarray(grouped).reshape(-1), scale, corr, _round_up32(err),
                       _round_up32(norms * (1 + 1e-6)), padded_bias, corr_head,
                       _round_up32(tails * (1 + 1e-6)), head // 4)


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


def top_k_codes(index: RankingIndex, queries: np.ndarray, n: int, seen_indptr: np.ndarray,
                seen_indices: np.ndarray, exclude_mask: np.ndarray = _EMPTY_U8, num_threads: int = 1
                ) -> tuple[np.ndarray, np.ndarray]:
    """``top_k`` over the index's packed codes (``_codes_pay`` of its rows must hold), ``n`` at most
    the number of items: integer dots of 7-bit item codes and 8-bit query codes (2-4x the float32
    rate, a quarter of the bytes), exact float32 rescoring of what can enter.  One query over a
    large catalogue is dealt to ``num_threads`` threads (``one_query_split``)."""
    packed = index.packed()
    m = queries.shape[0]
    split = one_query_split(packed, num_threads) if m == 1 else 1
    if m == 1:
        num_threads = split  # one query wakes no thread it does not deal work to
    rows = split if split > 1 else m  # a split query's threads each fill a row, merged into the first
    ids = np.empty((rows, n), dtype=np.int32)
    scores = np.empty((rows, n), dtype=np.float32)
    load_kernel("topk").topk_codes(
        queries, index.factors, packed.bias, packed.codes, packed.scale, packed.corr, packed.err, packed.norm,
        seen_indptr, seen_indices, index.positions(), exclude_mask, index.order, ids, scores, num_threads,
        index.direction, index.suffix_bounds,
        block_users=_block_users(m, num_threads, _CODES_BLOCK_USERS) if m > 1 else 1,
        block_items=_BLOCK_ITEMS, vnni=_has_vnni(), split=split, code_corr_head=packed.corr_head,
        code_tail=packed.tail, head_quads=packed.head_quads)
    return (ids, scores) if split == 1 else (ids[:1], scores[:1])


def one_user_scan(index: RankingIndex, users: np.ndarray, seen: sp.csr_matrix) -> Any:
    """The compiled one-user scan (``CodesScan``) over ``index``'s codes, bound to the stored users'
    factors and seen rows, or None where ``top_k_codes`` does not apply to them as they are
    (float64 or a non-vector build, strided user factors, int64 seen ids, fewer seen rows than users).

    Bound once per model state: a one-user query through it then converts none of the arrays (about
    2 us of the 10 us a one-user ``recommend`` on ML-1M took).
    """
    if not (_codes_pay(index.factors) and users.dtype == np.float32 and users.ndim == 2
            and users.flags.c_contiguous and seen.indices.dtype == np.int32
            and seen.indptr.dtype in (np.int32, np.int64) and seen.shape[0] >= users.shape[0]):
        return None
    packed = index.packed()
    return load_kernel("topk").CodesScan(
        index.factors, packed.bias, packed.codes, packed.scale, packed.corr, packed.err, packed.norm,
        index.positions(), index.order, index.direction, index.suffix_bounds, users,
        seen.indptr[:users.shape[0] + 1], seen.indices, _BLOCK_ITEMS, _has_vnni(), max_query_split(packed),
        packed.corr_head, packed.tail, packed.head_quads)


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
    if isinstance(seen, tuple):
        seen_indptr, seen_indices = seen
    elif seen is not None:
        seen_indptr, seen_indices = seen.indptr, seen.indices
        if seen_indices.dtype != np.int32:
            seen_indices = seen_indices.astype(np.int32)
    else:
        seen_indptr, seen_indices = _EMPTY_I32, _EMPTY_I32
    if bounds and _codes_pay(item_rows):
        return top_k_codes(index, queries, n, seen_indptr, seen_indices, exclude_mask, num_threads)
    ids = np.empty((m, n), dtype=np.int32)
    scores = np.empty((m, n), dtype=dtype)
    bias_arr = np.ascontiguousarray(bias, dtype=dtype) if bias is not None else np.empty(0, dtype)
    kernel = load_kernel("topk")
    if m == 1:  # one query is scored with our own dots on one thread: no BLAS, no limit to set
        kernel.topk(queries, item_rows, bias_arr, seen_indptr, seen_indices, exclude_mask, item_map, ids, scores,
                    1, block_users=1, block_items=_BLOCK_ITEMS_ONE, **bounds)
    else:
        with blas_single_thread():
            kernel.topk(queries, item_rows, bias_arr, seen_indptr, seen_indices, exclude_mask, item_map, ids,
                        scores, num_threads, block_users=_block_users(m, num_threads), block_items=_BLOCK_ITEMS,
                        **bounds)
    return ids, scores
