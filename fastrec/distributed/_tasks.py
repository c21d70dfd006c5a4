"""What runs on the workers during a distributed ALS fit.

A ``Shard`` is one block of rows of the interactions (a block of users, or
a block of items read by column), resident on a worker for the whole fit.
It is built once, with its rows' regularisation and its exchange plan: for
each block of the other side's factors, whether the shard needs none of it,
all of it (sent whole: a broadcast) or some rows (sent as those rows only,
Spark's "out-blocks"); its column indices point into the concatenation of
what it receives.  Each half-step solves a shard's rows with ALS's own
half-step (``models.als_start.half_step``, the compiled kernel) and returns a
``Solved`` block: the new factors, their Gram matrix and the counts the driver
sums.

A worker imports this module, not the estimators: no SciPy (about 25 MB of a
worker's memory) for a CG fit; building a shard from Dask DataFrame pieces and
the Cholesky solver of long rows import it when they run.
"""
from __future__ import annotations

import ctypes
import functools
import mmap
import threading
import warnings
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
from dask.sizeof import sizeof
from distributed.protocol import dask_deserialize, dask_serialize
from distributed.protocol.numpy import deserialize_numpy_ndarray, serialize_numpy_ndarray

from ..kernels import load_kernel
from ..models.als_start import _check_confidence, gram, half_step, loss_weight
from ..models.ials import ials_loss, is_ials, kernel_form, kernel_values, row_penalty
from ..utils.csr_arrays import CSRArrays
from ._cluster import worker_threads
from ._compact import CHUNK_ENTRIES, CompactRows

# The sums over a block of users (item_sums, and the user solve that adds the residual's) read each
# chunk's users' factors about once per entry, from cache, and every item's vector and sum once per
# chunk: larger chunks read the items fewer times (-16% per entry from 128k to 256k entries, as much as
# 512k gave, on the 20M-shaped data, in a process set up as a Dask worker), for 1.5 MB more work space.
SUMS_CHUNK_ENTRIES = 2 * CHUNK_ENTRIES

__all__ = ["Shard", "Solved", "SKIP", "WHOLE", "ROWS", "build_shard", "shard_from_pieces", "shard_summary",
           "selection", "column_counts", "kept_factors", "take_rows", "aligned", "solve_block", "block_stats", "factors_of", "ItemBlock", "ItemCG", "cg_begin",
           "cg_vector", "item_sums", "sums_parts", "part_of", "cg_start", "cg_residual", "cg_step", "cg_finish", "user_loss",
           "summed_gram", "gram_of", "forget_chunk_counts"]

# how a shard receives each block of the other side's factors
SKIP, WHOLE, ROWS = 0, 1, 2


@dataclass
class Shard:
    """A block of rows ``lo:hi`` of one side, as the half-step kernel reads it.

    ``rows`` holds the values the kernel reads with column indices into the
    concatenation of the received pieces (see ``kinds``), compactly
    (``CompactRows``, decoded in chunks by ``solve_block``); ``selections[j]`` are the rows of
    the other side's block j it needs when ``kinds[j] == ROWS``.
    """

    side: str
    lo: int
    hi: int
    rows: CompactRows
    reg: np.ndarray
    max_row_length: int
    kinds: np.ndarray
    selections: dict[int, np.ndarray]
    loss_weight: float


@dataclass
class Solved:
    """A block of new factors and what the driver sums over blocks.

    On the worker that solved it, ``factors`` is rows ``lo:lo + len`` of
    ``canvas``, an array with a row for every row of its side: the next
    half-step of this block solves in place there, and the other half-step
    copies the blocks it receives into the canvas's other rows and reads it
    whole (no concatenation).  Only pages written take memory.  The canvas
    is not pickled: a block sent to another worker (or spilled) is its rows.
    """

    factors: np.ndarray
    gram: np.ndarray
    failures: int
    loss: float
    penalty: float
    lo: int = -1
    canvas: np.ndarray | None = None
    # a user block solved with ``residual_sums``: its part of the item residual's sums, every item,
    # until ``sums_parts`` hands it on in blocks of items (they travel with the block if Dask moves
    # or spills it before then)
    sums: np.ndarray | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "canvas": None}


# Dask sends a Solved as its arrays' buffers (header + frames), as it sends a bare ndarray.  Pickled,
# it was copied in band on the sending worker (measured: +32 MB to send an 18 MB block).
@dask_serialize.register(Solved)
def _serialize_solved(solved: Solved) -> tuple[dict, list]:
    factors_header, factors_frames = serialize_numpy_ndarray(np.ascontiguousarray(solved.factors))
    gram_header, gram_frames = serialize_numpy_ndarray(np.ascontiguousarray(solved.gram))
    header = {"factors": factors_header, "gram": gram_header, "split": len(factors_frames),
              "scalars": [int(solved.failures), float(solved.loss), float(solved.penalty), int(solved.lo)]}
    frames = [*factors_frames, *gram_frames]
    if solved.sums is not None:
        header["sums"], sums_frames = serialize_numpy_ndarray(np.ascontiguousarray(solved.sums))
        header["gram_end"] = len(frames)
        frames += sums_frames
    return header, frames


@dask_deserialize.register(Solved)
def _deserialize_solved(header: dict, frames: list) -> Solved:
    split, end = header["split"], header.get("gram_end", len(frames))
    failures, loss, penalty, lo = header["scalars"]
    sums = deserialize_numpy_ndarray(header["sums"], frames[end:]) if "sums" in header else None
    return Solved(deserialize_numpy_ndarray(header["factors"], frames[:split]),
                  deserialize_numpy_ndarray(header["gram"], frames[split:end]), failures, loss, penalty, lo,
                  sums=sums)


@sizeof.register(Solved)
def _sizeof_solved(solved: Solved) -> int:
    return int(solved.factors.nbytes + solved.gram.nbytes + (0 if solved.sums is None else solved.sums.nbytes))


def _plan(indices: np.ndarray, n_other: int, other_bounds: np.ndarray, min_fraction: float
          ) -> tuple[np.ndarray | None, np.ndarray, dict[int, np.ndarray]]:
    """The local column of each global one, and how each block of the other side is received.

    A block is sent whole when the shard needs at least ``min_fraction`` of
    its rows (0 always broadcasts), else only the needed rows, in order.  The
    map is None when every block is sent whole (local columns are global).
    Memory: a flag and a map per column of the other side, and chunks of
    ``indices`` (no sorted copy of them).
    """
    n_blocks = other_bounds.size - 1
    used = np.zeros(n_other, dtype=bool)
    for a in range(0, indices.size, CHUNK_ENTRIES):
        used[indices[a:a + CHUNK_ENTRIES]] = True
    needed = np.flatnonzero(used)
    edges = np.searchsorted(needed, other_bounds)
    kinds = np.full(n_blocks, SKIP, dtype=np.int8)
    selections: dict[int, np.ndarray] = {}
    local = np.empty(needed.size, dtype=np.int32)
    offset = 0
    for j in range(n_blocks):
        lo, hi = int(other_bounds[j]), int(other_bounds[j + 1])
        cols = needed[edges[j]:edges[j + 1]]
        if not cols.size:
            continue
        if cols.size >= min_fraction * (hi - lo):
            kinds[j] = WHOLE
            local[edges[j]:edges[j + 1]] = offset + (cols - lo)
            offset += hi - lo
        else:
            kinds[j] = ROWS
            selections[j] = (cols - lo).astype(np.int64)
            local[edges[j]:edges[j + 1]] = offset + np.arange(cols.size)
            offset += cols.size
    if (kinds == WHOLE).all():  # the concatenation is the whole other side
        return None, kinds, selections
    column_map = np.full(n_other, -1, dtype=np.int32)
    column_map[needed] = local
    return column_map, kinds, selections


def build_shard(side: str, lo: int, hi: int, n_other: int, other_bounds: np.ndarray, min_fraction: float,
                params: dict[str, Any], arrays: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Shard:
    """A shard from the canonical CSR arrays (indptr, indices, data) of rows ``lo:hi`` (global column indices).

    The shard keeps its rows as ``CompactRows`` (local columns, values as the
    kernel reads them); the arrays received are not kept.
    """
    indptr, indices, data = arrays
    n_rows = hi - lo
    indptr = np.asarray(indptr, dtype=np.int64)
    indices = np.asarray(indices)
    block = SimpleNamespace(nnz=int(data.size), data=data, shape=(n_rows, n_other))
    _check_confidence(block, params)
    counts = np.diff(indptr)
    reg = row_penalty(counts, n_other, params)
    column_map, kinds, selections = _plan(indices, n_other, np.asarray(other_bounds), min_fraction)
    # as ALS._fit: iALS reads signs
    values = kernel_values(CSRArrays(indptr, indices, np.asarray(data), (n_rows, n_other)), kernel_form(params)).data
    rows = CompactRows.from_csr(indptr, indices, values, (n_rows, n_other), column_map)
    return Shard(side, lo, hi, rows, reg, int(counts.max(initial=0)), kinds, selections,
                 loss_weight(block.nnz, block.data, block.shape, params))


def shard_from_pieces(side: str, lo: int, hi: int, n_other: int, other_bounds: np.ndarray,
                      min_fraction: float, params: dict[str, Any], *pieces: Any) -> Shard:
    """A shard from (rows, columns, weights) triplets in global ids, as ``Interactions`` would merge them.

    Repeated pairs are summed in float64, stored as float32 weights (as
    ``Interactions`` does), then converted to the model's dtype; zeros are
    dropped (as ``check_interactions`` does).
    """
    import scipy.sparse as sp  # here only: a fit from a scipy matrix never imports SciPy on a worker

    from ..data.interactions import _float32_weights  # the same check and message as Interactions

    rows = np.concatenate([p[0] for p in pieces]) if pieces else np.empty(0, np.int64)
    cols = np.concatenate([p[1] for p in pieces]) if pieces else np.empty(0, np.int32)
    weights = np.concatenate([p[2] for p in pieces]) if pieces else np.empty(0, np.float64)
    matrix = sp.csr_matrix((weights, (rows - lo, cols)), shape=(hi - lo, n_other), dtype=np.float64)
    matrix.sum_duplicates()
    _float32_weights(matrix.data, "weights", merged=True)
    matrix.data = matrix.data.astype(np.float32).astype(params["dtype"])
    matrix.eliminate_zeros()
    return build_shard(side, lo, hi, n_other, other_bounds, min_fraction, params,
                       (matrix.indptr, matrix.indices.astype(np.int32), matrix.data))


def shard_summary(shard: Shard) -> tuple[np.ndarray, int, float]:
    """(kinds, stored entries, loss weight): what the driver needs to know of a shard."""
    return shard.kinds, shard.rows.nnz, shard.loss_weight


def column_counts(shard: Shard) -> np.ndarray:
    """Entries per column of the shard (its columns are the other side's rows: every block received whole)."""
    counts = np.zeros(shard.rows.shape[1], dtype=np.int64)
    for r0, r1 in shard.rows.chunks(CHUNK_ENTRIES):
        counts += np.bincount(shard.rows.rows(r0, r1, reuse=True).indices, minlength=counts.size)
    return counts


def selection(shard: Shard, block: int) -> np.ndarray:
    """The rows of the other side's ``block`` this shard needs (run on that block's worker, kept there)."""
    return shard.selections[block]


def aligned(array: np.ndarray) -> np.ndarray:
    """``array``, or its copy when it is not aligned to its item size.

    An array received from the client can start anywhere in the message's
    buffer: NumPy then copies it whole for every matrix product (two copies
    for ``X.T @ X``), so a block solved in place is aligned once, as it
    arrives.
    """
    return array if array.flags.aligned else array.copy()


def factors_of(block: Any) -> np.ndarray:
    return block.factors if isinstance(block, Solved) else block


def kept_factors(block: Any) -> np.ndarray:
    """A solved block's factors as an array of their own, kept on its worker after the fit (``_resident``).

    A block solved in a canvas (a row for every row of its side, filled by
    other half-steps) is copied out, so the canvas goes.
    """
    factors = factors_of(block)
    return factors.copy() if isinstance(block, Solved) and block.canvas is not None else factors


def take_rows(block: Any, rows: np.ndarray) -> np.ndarray:
    """The rows of a factor block another shard needs."""
    return factors_of(block)[rows]


def _gathered(pieces: tuple[Any, ...], f: int, dtype: Any) -> np.ndarray:
    arrays = [factors_of(p) for p in pieces]
    if not arrays:
        return np.empty((0, f), dtype=dtype)
    if len(arrays) == 1:
        return np.ascontiguousarray(arrays[0])
    return np.concatenate(arrays)


def _own_rows(shard: Shard | ItemBlock, start: Any, dtype: Any, side_rows: int | None, in_place: bool = False
              ) -> tuple[np.ndarray, np.ndarray | None]:
    """(X, canvas): where the block's rows are solved, starting from ``start``'s factors.

    ``in_place``: in ``start``'s own array (no canvas), copied only when it
    cannot be written or has another dtype or layout.
    """
    if in_place:
        factors = factors_of(start)
        if factors.dtype == dtype and factors.flags.c_contiguous and factors.flags.writeable:
            return factors, None
        return np.array(factors, dtype=dtype, order="C", copy=True), None
    if side_rows is None:  # a copy: ``start`` stays as it was
        return np.array(factors_of(start), dtype=dtype, order="C", copy=True), None
    if (isinstance(start, Solved) and start.canvas is not None and start.canvas.dtype == dtype
            and start.canvas.shape[0] == side_rows and start.lo == shard.lo):
        return start.factors, start.canvas  # this worker's own previous block: solved in place
    factors = factors_of(start)
    canvas = np.empty((side_rows, factors.shape[1]), dtype=dtype)
    X = canvas[shard.lo:shard.hi]
    X[...] = factors
    return X, canvas


def _other_rows(shard: Shard, pieces: tuple[Any, ...], f: int, dtype: Any) -> np.ndarray:
    """The other side's factors as the shard's columns index them: a canvas filled in place, or a concatenation.

    A canvas serves when every block is received whole (the columns are the
    other side's rows) and one of the pieces is a block solved on this
    worker: the others are copied into their rows of its canvas (the same
    bytes when two tasks of a worker do it at once).
    """
    n_other = shard.rows.shape[1]
    if (pieces and bool((shard.kinds == WHOLE).all()) and all(isinstance(p, Solved) and p.lo >= 0 for p in pieces)):
        hosts = [p.canvas for p in pieces if p.canvas is not None and p.canvas.shape == (n_other, f)
                 and p.canvas.dtype == dtype]
        if hosts:
            canvas = hosts[0]
            for p in pieces:
                if p.canvas is not canvas:
                    canvas[p.lo:p.lo + p.factors.shape[0]] = p.factors
            return canvas
    return _gathered(pieces, f, dtype)


def gram_of(other_gram: np.ndarray | list[tuple], dtype: Any) -> np.ndarray:
    """The other side's Gram matrix: as given, or summed here from its blocks' stats (``summed_gram``: the
    same bits on every worker), so that no task of its own has to sum it first."""
    return summed_gram(dtype, *other_gram) if isinstance(other_gram, (list, tuple)) else other_gram


def solve_block(shard: Shard, start: Any, other_gram: np.ndarray | list[tuple], params: dict[str, Any],
                threads: int, with_loss: bool, *pieces: Any, side_rows: int | None = None,
                in_place: bool = False, residual_sums: bool = False) -> Solved:
    """New factors for the shard's rows, the other side's ``pieces`` fixed (``other_gram``: their full Gram).

    ``start`` (the current factors) is the CG warm start.  Without
    ``side_rows`` it is copied, never modified; with ``in_place`` it is
    solved where it is (the item half-step by sums over user blocks needs
    no canvas of users).  With ``side_rows`` (the
    number of rows of the shard's side) the block lives in a canvas (see
    ``Solved``): a ``start`` solved on this worker is updated in place (the
    driver never reads a block once the next half-step of its side has
    started; a fit that loses a worker starts again from the client's
    factors).  With ``with_loss`` the block's part of the training
    objective is computed too: its rows' weighted errors against the pieces,
    without the other side's penalty (the driver adds it once).

    With ``residual_sums`` (a user block, the pieces every item's factors)
    the block's part of the item half-step's residual sums (``item_sums``,
    for every item) is added chunk by chunk right after the chunk is solved,
    while its rows are in cache: the item half-step then starts with its
    residual instead of a first round over the users (``Solved.sums``).
    """
    threads = worker_threads(threads)
    other_gram = gram_of(other_gram, params["dtype"])
    X, canvas = _own_rows(shard, start, params["dtype"], side_rows, in_place)
    Y = _other_rows(shard, pieces, X.shape[1], X.dtype)
    rows, reg, solver = shard.rows, shard.reg, params["solver"]
    failures = 0
    sums = _ResidualSums(shard, Y, params, threads) if residual_sums else None
    with warnings.catch_warnings():  # the driver warns once, on the client
        warnings.simplefilter("ignore", RuntimeWarning)
        chunk = SUMS_CHUNK_ENTRIES if residual_sums else CHUNK_ENTRIES
        for r0, r1 in rows.chunks(chunk):  # decoded a chunk at a time: rows solve independently
            part = rows.rows(r0, r1, reuse=True)
            failures += half_step(part, X[r0:r1], Y, reg[r0:r1], params, solver, threads,
                                  other_gram, shard.max_row_length)
            if sums is not None:
                sums.add(part, X[r0:r1], r0, r1)
    loss = _rows_loss(shard, X, Y, other_gram, params) if with_loss else 0.0
    return Solved(X, gram(X), int(failures), loss, _penalty(shard.reg, X, params), shard.lo, canvas,
                  None if sums is None else sums.out)


class _ResidualSums:
    """A user block's part of the residual's sums for every item, added a chunk of solved rows at a time."""

    def __init__(self, shard: Shard, Y: np.ndarray, params: dict[str, Any], threads: int):
        if not bool((shard.kinds == WHOLE).all()):
            raise ValueError("residual sums need every item's factors (each block received whole)")
        self.form, self.threads, self.constant, self.shard = kernel_form(params), threads, shard.rows.constant, shard
        # the residual's sums are taken of the items' old factors as CG starts from them (cg_begin)
        self.V = Y if self.form.scale == 1.0 else Y * Y.dtype.type(1.0 / self.form.scale)
        self.out = np.zeros(Y.shape, dtype=Y.dtype)

    def add(self, part: CSRArrays, X: np.ndarray, r0: int, r1: int) -> None:
        _add_item_sums(part, X, self.V, self.out, 0, self.form, True, self.threads, self.constant,
                       _ChunkCounts.of(self.shard, r0, r1))


def sums_parts(users: Solved, bounds: np.ndarray) -> tuple[np.ndarray, ...]:
    """A user block's residual sums (``solve_block(residual_sums=True)``) in blocks of items, handed on once."""
    sums, users.sums = users.sums, None
    if sums is None:
        raise RuntimeError("this user block holds no residual sums (solved without them, or handed on already)")
    return tuple(sums[lo:hi] for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def part_of(parts: tuple[np.ndarray, ...], j: int) -> np.ndarray:
    return parts[j]


def _rows_loss(shard: Shard, X: np.ndarray, Y: np.ndarray, other_gram: np.ndarray, params: dict[str, Any]) -> float:
    """The objective's terms of the shard's rows, their own penalty included (ALS._loss, by rows).

    One thread: a block's loss is then summed in the same order on every run
    (it is a small share of the half-step).  This once also hid a race in
    als_loss (per-entry c/pref shared between OpenMP threads), fixed in
    ext/_als.pyx since.  Every term is a sum over rows, so the chunks' losses
    add up.
    """
    kernel, no_columns = load_kernel("als"), np.zeros(Y.shape[0], X.dtype)
    rows, reg, loss = shard.rows, shard.reg, 0.0
    for r0, r1 in rows.chunks(CHUNK_ENTRIES):
        part, Xr = rows.rows(r0, r1, reuse=True), X[r0:r1]
        if is_ials(params):
            loss += ials_loss(kernel, part, Xr, Y, reg[r0:r1], no_columns, params, 1, gram=other_gram)
        else:
            loss += float(kernel.als_loss(part.indptr, part.indices, part.data, Xr, Y, other_gram, reg[r0:r1],
                                          no_columns, X.dtype.type(params["alpha"]),
                                          params["confidence"] == "implicit", 1))
    return loss


def _penalty(reg: np.ndarray, X: np.ndarray, params: dict[str, Any]) -> float:
    """These rows' penalty in the objective (iALS's kernel penalties are the objective's / alpha0)."""
    scale = params["unobserved_weight"] if is_ials(params) else 1.0
    norms = np.empty(X.shape[0], dtype=np.float64)
    for c0 in range(0, X.shape[0], 4096):  # by chunks: in float64 X whole would take twice its own memory
        norms[c0:c0 + 4096] = np.einsum("ij,ij->i", X[c0:c0 + 4096], X[c0:c0 + 4096], dtype=np.float64)
    return scale * float(np.dot(reg.astype(np.float64), norms))


# ---------------------------------------------------------------- the item half-step by sums over user blocks
# CG on an item needs from the users only sums over the users who rated it (ext/_als_dist.pyx): each
# worker adds its own users' part for every block of items (``item_sums``), the block's owner adds the
# parts and takes CG's dense steps (``cg_residual``, ``cg_step``: ``cg_row`` of ext/_als.pyx, vectorised
# over the block's items).  No worker holds the other workers' user factors.

@dataclass
class ItemBlock:
    """What the owner of items ``lo:hi`` knows of them: their penalties and which have no entries at all."""

    lo: int
    hi: int
    reg: np.ndarray
    empty: np.ndarray


@dataclass
class ItemCG:
    """CG's state for a block of items, on its owner: ``x`` (the block's factors) is solved in place.

    While solving, ``x`` holds the kernel's unknowns: the factors divided by
    ``scale`` (iALS, see models/ials.py).
    """

    block: ItemBlock
    x: np.ndarray
    scale: float
    canvas: np.ndarray | None = None
    gram: np.ndarray | None = None  # the users' Gram matrix, from ``cg_start``
    r: np.ndarray | None = None
    p: np.ndarray | None = None
    rsold: np.ndarray | None = None
    active: np.ndarray | None = None
    failures: int = 0


def cg_begin(start: Any, block: ItemBlock, params: dict[str, Any], *after: Any, side_rows: int) -> ItemCG:
    """The warm start: the block's current factors, in place in its canvas (zero for items without entries).

    ``after``: the tasks that read ``start`` as it was (the first round's
    sums on this worker), done before it changes.  The canvas (a row for
    every item, see ``Solved``) lets the next user half-step read every
    item's factors without concatenating them; its other rows are
    released here (their pages given back) until then.
    """
    X, canvas = _own_rows(block, start, params["dtype"], side_rows)
    if canvas is not None:
        _release_rows(canvas, 0, block.lo)
        _release_rows(canvas, block.hi, canvas.shape[0])
    scale = kernel_form(params).scale
    if scale != 1.0:
        X *= X.dtype.type(1.0 / scale)
    X[block.empty] = 0  # as the kernel: a row without entries is zero
    return ItemCG(block, X, scale, canvas)


def _release_rows(canvas: np.ndarray, lo: int, hi: int) -> None:
    """Give back the memory pages lying wholly in rows ``lo:hi`` (they read as zeros until written again)."""
    if hi <= lo or not canvas.flags.c_contiguous:
        return
    page = mmap.PAGESIZE
    row = canvas.strides[0]
    start = canvas.ctypes.data + lo * row
    first, last = -(-start // page) * page, (start + (hi - lo) * row) // page * page
    if last > first:
        try:
            _libc().madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), 4)  # MADV_DONTNEED
        except (OSError, AttributeError, TypeError):  # no libc madvise here: the pages stay
            pass


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def cg_vector(state: ItemCG) -> np.ndarray:
    """What the user blocks' sums are taken of next: the warm start, then each search direction."""
    return state.x if state.p is None else state.p


def item_sums(shard: Shard, users: Any, vector: Any, lo: int, params: dict[str, Any], residual: bool,
              threads: int) -> np.ndarray:
    """This user block's part of the residual's (or a step's) sums for items ``lo:lo + len(vector)``.

    The residual's are taken of the block's old factors (a block of items as
    ``cg_begin`` gets it: divided by the iALS scale, as there), the steps' of
    the owner's search directions.
    """
    X = factors_of(users)
    form = kernel_form(params)
    vector = factors_of(vector)
    if residual and form.scale != 1.0:
        vector = vector * vector.dtype.type(1.0 / form.scale)
    out = np.zeros(vector.shape, dtype=X.dtype)
    threads = worker_threads(threads)
    for r0, r1 in shard.rows.chunks(SUMS_CHUNK_ENTRIES):
        # the kernel reads the stored uint16 columns where they are whole (up to 65,536 items): no decoding
        part = shard.rows.low_rows(r0, r1) or shard.rows.rows(r0, r1, reuse=True)
        _add_item_sums(part, X[r0:r1], vector, out, lo, form, residual, threads, shard.rows.constant,
                       _ChunkCounts.of(shard, r0, r1))
    return out


class _ChunkCounts:
    """The entries per item of one chunk of a user shard's rows, kept with the shard for its later sums.

    The sums regroup a chunk's entries by item in two passes, counting then
    placing; the counts are the same for every round and every iteration
    (the shard does not change), so the first call for a range of items
    writes them and the later ones skip the counting pass.  2 bytes per item
    and chunk (an item with more than 65,535 entries in a chunk is counted
    every time), kept only while that is at most a quarter of the chunk's
    own storage (2 bytes an entry on binary data): catalogues up to 64k
    items with 256k-entry chunks.
    """

    def __init__(self, n_items: int):
        self.counts = np.zeros(n_items, dtype=np.uint16)
        self.filled: list[tuple[int, int]] = []

    @staticmethod
    def of(shard: Shard, r0: int, r1: int) -> "_ChunkCounts | None":
        n_items = shard.rows.shape[1]
        if n_items > SUMS_CHUNK_ENTRIES // 4:
            return None
        cache = shard.__dict__.setdefault("_chunk_counts", {})
        counts = cache.get((r0, r1))
        if counts is None:
            counts = cache[(r0, r1)] = _ChunkCounts(n_items)
        return counts

    def known(self, lo: int, hi: int) -> bool:
        return any(a <= lo and hi <= b for a, b in self.filled)


def forget_chunk_counts(shard: Shard) -> None:
    """Drop a user shard's kept counts once its fit is done (a shard kept for ``recommend_all`` needs none)."""
    shard.__dict__.pop("_chunk_counts", None)


def _add_item_sums(part: CSRArrays, X: np.ndarray, V: np.ndarray, out: np.ndarray, lo: int, form: Any,
                   residual: bool, threads: int, constant: bool, counts: _ChunkCounts | None = None) -> None:
    """Add one chunk of users' part of the sums for items ``lo:lo + len(V)`` (``item_sums`` of ext/_als_dist.pyx).

    ``constant``: binary data, whose values need no regrouping (nor space).
    ``counts``: the chunk's entries per item, read where known, else written.
    """
    entries = int(part.indptr[-1])
    users_space, values_space = _work_space(entries, X.dtype, 1 if constant else entries)
    hi = lo + V.shape[0]
    known = counts is not None and counts.known(lo, hi)
    kept = load_kernel("als_dist").item_sums(
        part.indptr, part.indices, part.data, X, V, out, lo, X.dtype.type(form.alpha), form.implicit, residual,
        threads, users_space, values_space, constant, None if counts is None else counts.counts[lo:hi], known)
    if counts is not None and kept and not known:
        counts.filled.append((lo, hi))


_WORK_SPACE: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}


def _work_space(entries: int, dtype: np.dtype, values: int) -> tuple[np.ndarray, np.ndarray]:
    """item_sums' work space (an int32 per entry of a chunk, and ``values`` values), kept by the worker between
    tasks: fresh arrays for every chunk would each cost page faults (Dask's workers return freed memory at once).
    One per thread: a worker with several threads runs several tasks at once."""
    key = (np.dtype(dtype).str, threading.get_ident())
    users, kept = _WORK_SPACE.get(key, (None, None))
    if users is None or users.size < entries or kept.size < values:
        users = np.empty(max(entries, 1, 0 if users is None else users.size), dtype=np.int32)
        kept = np.empty(max(values, 1), dtype=dtype)
        _WORK_SPACE[key] = (users, kept)
    return users, kept


def _summed(sums: tuple[np.ndarray, ...]) -> np.ndarray:
    """The user blocks' parts added up, into the first (this task's own input: nobody reads it after)."""
    total = sums[0] if sums[0].flags.writeable and sums[0].flags.c_contiguous else sums[0].copy()
    for part in sums[1:]:
        total += part
    return total


def cg_residual(state: ItemCG, other_gram: np.ndarray, *sums: np.ndarray, threads: int = 0) -> ItemCG:
    """r = p = b - A x from the user blocks' residual sums (``cg_residual`` of ext/_als.pyx)."""
    x = state.x
    state.r, state.p = np.zeros_like(x), np.zeros_like(x)
    state.rsold = np.zeros(x.shape[0], dtype=x.dtype)
    state.active = (~state.block.empty).astype(np.uint8)
    load_kernel("als_dist").cg_rows(x, state.r, state.p, _summed(sums), other_gram, state.block.reg, state.rsold,
                                    state.active, True, worker_threads(threads))
    return state


def cg_start(start: Any, block: ItemBlock, params: dict[str, Any], user_stats: list[tuple], *sums: np.ndarray,
             side_rows: int, threads: int = 0) -> ItemCG:
    """``cg_begin`` then ``cg_residual`` in one task, the users' Gram matrix summed from their blocks' stats
    here and kept for the steps (one task instead of three on the critical path)."""
    state = cg_begin(start, block, params, side_rows=side_rows)
    state.gram = gram_of(user_stats, params["dtype"])
    return cg_residual(state, state.gram, *sums, threads=threads)


def cg_step(state: ItemCG, other_gram: np.ndarray | None, *sums: np.ndarray, threads: int = 0) -> ItemCG:
    """One CG step (``cg_update``) of every active item, given the user blocks' sums of A's sparse part times p
    (``other_gram`` None: the one ``cg_start`` kept)."""
    if other_gram is None:
        other_gram = state.gram
    if state.active.any():
        state.failures += load_kernel("als_dist").cg_rows(
            state.x, state.r, state.p, _summed(sums), other_gram, state.block.reg, state.rsold, state.active, False,
            worker_threads(threads))
    return state


def cg_finish(state: ItemCG, params: dict[str, Any]) -> Solved:
    """The solved block (its factors in its canvas), as ``solve_block`` returns one."""
    X = state.x
    if state.scale != 1.0:
        X *= X.dtype.type(state.scale)
    state.r = state.p = state.gram = None
    return Solved(X, gram(X), state.failures, 0.0, _penalty(state.block.reg, X, params), state.block.lo,
                  state.canvas)


def user_loss(shard: Shard, users: Any, item_gram: np.ndarray, params: dict[str, Any], *pieces: Any) -> float:
    """The objective's terms of a block of users, their penalty included, against the new item factors."""
    X = factors_of(users)
    Y = _other_rows(shard, pieces, X.shape[1], X.dtype)
    return _rows_loss(shard, X, Y, item_gram, params)


def summed_gram(dtype: Any, *stats: tuple) -> np.ndarray:
    """The blocks' Gram matrices (the first of each block's stats) summed in float64, in block order."""
    return np.sum([s[0].astype(np.float64) for s in stats], axis=0).astype(dtype)


def block_stats(solved: Solved) -> tuple[np.ndarray, int, float, float]:
    """The small part of a solved block, for the driver: (gram, failures, loss, penalty)."""
    return solved.gram, solved.failures, solved.loss, solved.penalty
