"""The driver of a distributed ALS fit: shard layout, half-steps, iterations.

Everything large stays on the workers.  The client sends the initial factor
blocks once, then per half-step only small messages (task specs and the
f x f Gram matrix); it receives per block the partial Gram matrix, the count
of unsolved rows and the block's part of the loss, and at the end the
factors.  Worker-to-worker traffic per half-step is the other side's factor
blocks, whole or as the rows each shard needs (see ``_tasks._plan``).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from ..kernels.als_columns import ColumnSlices
from ..models.als_start import gram
from . import _tasks
from ._cluster import gather, scatter_to, submit_to, wait_for

__all__ = ["Layout", "balanced_bounds", "min_fraction", "csr_layout", "finish_layout", "run_iterations"]

SIDES = ("users", "items")
_OTHER = {"users": "items", "items": "users"}
# below this many bytes the other side's factors are always sent whole ("broadcast when small")
_SMALL_FACTORS = 8 * 2 ** 20


def balanced_bounds(counts: np.ndarray, n_blocks: int) -> np.ndarray:
    """Boundaries of at most ``n_blocks`` contiguous blocks holding about equal sums of ``counts``."""
    cumulative = np.concatenate(([0], np.cumsum(counts, dtype=np.int64)))
    targets = np.arange(1, n_blocks) * (cumulative[-1] / n_blocks)
    cuts = np.searchsorted(cumulative, targets, side="left")
    return np.unique(np.concatenate(([0], cuts, [counts.size]))).astype(np.int64)


def min_fraction(exchange: str, n_other: int, factors: int, itemsize: int) -> float:
    """The share of a block's rows above which a shard receives that block whole."""
    if exchange == "broadcast" or (exchange == "auto" and n_other * factors * itemsize <= _SMALL_FACTORS):
        return 0.0
    return math.inf if exchange == "rows" else 0.5


@dataclass
class Layout:
    """Where a fit's shards live and how each receives the other side's factors."""

    workers: list[str]
    bounds: dict[str, np.ndarray]
    shards: dict[str, list[Any]]
    owners: dict[str, list[str]] = field(default_factory=dict)
    kinds: dict[str, list[np.ndarray]] = field(default_factory=dict)
    selections: dict[str, dict[tuple[int, int], Any]] = field(default_factory=dict)
    nnz: int = 0
    loss_weight: float = 0.0
    # intermediate results the shards are built from, dropped (not cancelled) once they exist
    scratch: list[Any] = field(default_factory=list)

    def place(self, side: str) -> list[str]:
        """The worker of each block of ``side`` (round robin)."""
        return [self.workers[k % len(self.workers)] for k in range(self.bounds[side].size - 1)]


def csr_layout(client: Any, workers: list[str], csr: sp.csr_matrix, n_blocks: int, fractions: dict[str, float],
               params: dict[str, Any], threads: int, timeout: float | None) -> Layout:
    """Shards of a client-side CSR: users by rows, items by columns (CSC slices built in bounded memory)."""
    entry_bytes = csr.indices.itemsize + csr.data.itemsize
    columns = ColumnSlices(csr, max(1, math.ceil(csr.nnz * entry_bytes / n_blocks)), threads)
    bounds = {"users": balanced_bounds(np.diff(csr.indptr), n_blocks), "items": columns.bounds}
    layout = Layout(workers, bounds, {"users": [], "items": []})
    n = {"users": csr.shape[0], "items": csr.shape[1]}

    def send(side: str, k: int, arrays: tuple[np.ndarray, ...]) -> None:
        worker = layout.place(side)[k]
        # one block's arrays on a worker at a time: the shards built there before are waited for
        # (a worker would otherwise hold its user and item blocks as received, 16 nnz / W bytes, at once)
        wait_for(client, [s for sd in SIDES for s, w in zip(layout.shards[sd], layout.place(sd)) if w == worker],
                 timeout, "building the shards")
        payload = scatter_to(client, arrays, worker, timeout)
        lo, hi = int(bounds[side][k]), int(bounds[side][k + 1])
        other = _OTHER[side]
        layout.shards[side].append(submit_to(client, worker, _tasks.build_shard, side, lo, hi, n[other],
                                             bounds[other], fractions[side], params, payload))

    for k, (lo, hi) in enumerate(zip(bounds["users"][:-1].tolist(), bounds["users"][1:].tolist())):
        a, b = int(csr.indptr[lo]), int(csr.indptr[hi])
        send("users", k, (csr.indptr[lo:hi + 1] - a, csr.indices[a:b], csr.data[a:b]))
    for k, (_, _, part) in enumerate(columns):  # each slice's buffers are reused: send copies
        send("items", k, (part.indptr.copy(), part.indices.copy(), part.data.copy()))
    return layout


def finish_layout(client: Any, layout: Layout, timeout: float | None) -> Layout:
    """Wait for the shards, learn their exchange plans, and place each selection with its block."""
    for side in SIDES:
        layout.owners[side] = layout.place(side)
    summaries = {side: gather(client, [submit_to(client, w, _tasks.shard_summary, s) for w, s in
                                       zip(layout.owners[side], layout.shards[side])],
                              timeout, f"building the {side} shards") for side in SIDES}
    layout.scratch = []  # dropped, so the scheduler frees them
    layout.nnz = sum(s[1] for s in summaries["users"])
    layout.loss_weight = sum(s[2] for s in summaries["users"])
    for side in SIDES:
        other = _OTHER[side]
        layout.kinds[side] = [s[0] for s in summaries[side]]
        layout.selections[side] = {
            (k, j): submit_to(client, layout.owners[other][j], _tasks.selection, layout.shards[side][k], j)
            for k, kinds in enumerate(layout.kinds[side]) for j in np.flatnonzero(kinds == _tasks.ROWS).tolist()}
    return layout


def _blocks(client: Any, layout: Layout, side: str, factors: np.ndarray, timeout: float | None) -> list[Any]:
    bounds = layout.bounds[side]
    return [scatter_to(client, factors[lo:hi], w, timeout)
            for w, lo, hi in zip(layout.owners[side], bounds[:-1].tolist(), bounds[1:].tolist())]


def _sum_grams(grams: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.sum([g.astype(np.float64) for g in grams], axis=0).astype(dtype)


class _Driver:
    def __init__(self, client: Any, layout: Layout, params: dict[str, Any], threads: int, timeout: float | None):
        self.client, self.layout, self.params = client, layout, params
        self.threads, self.timeout = threads, timeout

    def half_step(self, side: str, own: list[Any], other: list[Any], other_gram: np.ndarray, with_loss: bool
                  ) -> tuple[list[Any], list[tuple]]:
        """Solve every block of ``side``; return the new blocks and their (gram, failures, loss, penalty)."""
        layout, client = self.layout, self.client
        other_owners = layout.owners[_OTHER[side]]
        new, stats = [], []
        for k, (shard, worker) in enumerate(zip(layout.shards[side], layout.owners[side])):
            pieces = []
            for j, kind in enumerate(layout.kinds[side][k].tolist()):
                if kind == _tasks.WHOLE:
                    pieces.append(other[j])
                elif kind == _tasks.ROWS:
                    pieces.append(submit_to(client, other_owners[j], _tasks.take_rows, other[j],
                                            layout.selections[side][(k, j)]))
            block = submit_to(client, worker, _tasks.solve_block, shard, own[k], other_gram, self.params,
                              self.threads, with_loss, *pieces, side_rows=int(layout.bounds[side][-1]))
            new.append(block)
            stats.append(submit_to(client, worker, _tasks.block_stats, block))
        results = gather(client, stats, self.timeout, f"the {side} half-step")
        failures = sum(r[1] for r in results)
        if failures:
            n_rows = int(layout.bounds[side][-1])
            warnings.warn(f"DaskALS: {failures} of {n_rows} row systems were singular and left unsolved; "
                          "use regularization > 0", RuntimeWarning, stacklevel=5)
        return new, results


def run_iterations(client: Any, layout: Layout, params: dict[str, Any], threads: int,
                   timeout: float | None, user_factors: np.ndarray, item_factors: np.ndarray,
                   compute_loss: bool, on_iteration: Callable[[int, float], None]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Run ``params["iterations"]`` sweeps from the given factors; return the final factors.

    ``on_iteration(iteration, loss)`` is called after each sweep (loss NaN
    unless ``compute_loss``).  Lost workers surface as ``_cluster.WORKER_LOST``
    errors; the caller decides whether to start again.
    """
    driver = _Driver(client, layout, params, threads, timeout)
    dtype = params["dtype"]
    X = _blocks(client, layout, "users", user_factors, timeout)
    Y = _blocks(client, layout, "items", item_factors, timeout)
    item_gram = gram(item_factors)  # what ALS's first half-step computes
    for iteration in range(params["iterations"]):
        X, user_stats = driver.half_step("users", X, Y, item_gram, False)
        user_gram = _sum_grams([s[0] for s in user_stats], dtype)
        Y, item_stats = driver.half_step("items", Y, X, user_gram, compute_loss)
        item_gram = _sum_grams([s[0] for s in item_stats], dtype)
        loss = math.nan
        if compute_loss:
            total = sum(s[2] for s in item_stats) + sum(s[3] for s in user_stats)
            loss = float(total / layout.loss_weight)
        on_iteration(iteration, loss)
    factors = [_tasks.factors_of(p) for p in gather(client, X + Y, timeout, "gathering the factors")]
    return np.concatenate(factors[:len(X)]), np.concatenate(factors[len(X):])
