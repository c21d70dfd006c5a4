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
from ..models.ials import row_penalty
from . import _tasks
from ._cluster import gather, scatter_to, submit_to

__all__ = ["Layout", "ITEM_STEPS", "balanced_bounds", "min_fraction", "summed_items", "csr_layout", "finish_layout",
           "run_iterations"]

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


ITEM_STEPS = ("auto", "sums", "gather")


def summed_items(params: dict[str, Any], fractions: dict[str, float], item_step: str = "auto") -> bool:
    """Whether the item half-step sums over the user blocks (``_tasks.item_sums``) instead of gathering
    every user's factors on each item block's worker.  It can for CG when every user block receives the
    item factors whole (its columns are item ids); "auto" does then, "gather" never.  Cholesky and the
    "rows" exchange gather; ``item_step="sums"`` with them is an error."""
    possible = params["solver"] == "cg" and fractions["users"] == 0.0
    if item_step == "sums" and not possible:
        raise ValueError("item_step='sums' needs solver='cg' and the item factors sent whole to every user block "
                         "(exchange='broadcast', or 'auto' with item factors of at most 8 MiB); use item_step='auto'")
    return possible and item_step != "gather"


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
    # the item half-step by sums over user blocks: no item shards, an ItemBlock on each block's owner
    summed: bool = False
    item_blocks: list[Any] = field(default_factory=list)

    def place(self, side: str) -> list[str]:
        """The worker of each block of ``side`` (round robin)."""
        return [self.workers[k % len(self.workers)] for k in range(self.bounds[side].size - 1)]


def csr_layout(client: Any, workers: list[str], csr: sp.csr_matrix, n_blocks: int, fractions: dict[str, float],
               params: dict[str, Any], threads: int, timeout: float | None, summed: bool) -> Layout:
    """Shards of a client-side CSR, built here and sent: users by rows, items by columns (CSC slices built in
    bounded memory) unless the item half-step sums over user blocks."""
    if summed:
        columns, item_counts = None, np.bincount(csr.indices, minlength=csr.shape[1])
        item_bounds = balanced_bounds(item_counts, n_blocks)
    else:
        entry_bytes = csr.indices.itemsize + csr.data.itemsize
        columns = ColumnSlices(csr, max(1, math.ceil(csr.nnz * entry_bytes / n_blocks)), threads)
        item_bounds = columns.bounds
    bounds = {"users": balanced_bounds(np.diff(csr.indptr), n_blocks), "items": item_bounds}
    layout = Layout(workers, bounds, {"users": [], "items": []}, summed=summed)
    n = {"users": csr.shape[0], "items": csr.shape[1]}

    def send(side: str, k: int, arrays: tuple[np.ndarray, ...]) -> None:
        # built here and sent compact (2 bytes an entry on binary data): a worker never holds a block's
        # CSR arrays (8 bytes an entry), which made its peak while the shards were built on it
        lo, hi = int(bounds[side][k]), int(bounds[side][k + 1])
        other = _OTHER[side]
        shard = _tasks.build_shard(side, lo, hi, n[other], bounds[other], fractions[side], params, arrays)
        layout.shards[side].append(scatter_to(client, shard, layout.place(side)[k], timeout))

    for k, (lo, hi) in enumerate(zip(bounds["users"][:-1].tolist(), bounds["users"][1:].tolist())):
        a, b = int(csr.indptr[lo]), int(csr.indptr[hi])
        send("users", k, (csr.indptr[lo:hi + 1] - a, csr.indices[a:b], csr.data[a:b]))
    if summed:  # the item blocks' penalties come from the built shards (finish_layout)
        return layout
    for k, (_, _, part) in enumerate(columns):  # each slice's buffers are reused: send copies
        send("items", k, (part.indptr.copy(), part.indices.copy(), part.data.copy()))
    return layout


def _item_blocks(client: Any, layout: Layout, params: dict[str, Any], timeout: float | None) -> None:
    """Each block of items' penalties (as an item shard's) and empty items, sent to its owner (summed layout).

    The entries per item are counted in the user shards, as stored (repeated
    pairs merged, zeros dropped).
    """
    item_counts = np.sum(gather(client, [submit_to(client, w, _tasks.column_counts, s) for w, s in
                                         zip(layout.owners["users"], layout.shards["users"])],
                                timeout, "counting the entries of each item"), axis=0)
    bounds = layout.bounds["items"]
    reg = row_penalty(item_counts, int(layout.bounds["users"][-1]), params)
    layout.item_blocks = [
        scatter_to(client, _tasks.ItemBlock(lo, hi, reg[lo:hi], item_counts[lo:hi] == 0), worker, timeout)
        for worker, lo, hi in zip(layout.place("items"), bounds[:-1].tolist(), bounds[1:].tolist())]


def finish_layout(client: Any, layout: Layout, params: dict[str, Any], timeout: float | None) -> Layout:
    """Wait for the shards, learn their exchange plans, and place each selection with its block."""
    for side in SIDES:
        layout.owners[side] = layout.place(side)
    sides = ("users",) if layout.summed else SIDES
    summaries = {side: gather(client, [submit_to(client, w, _tasks.shard_summary, s) for w, s in
                                       zip(layout.owners[side], layout.shards[side])],
                              timeout, f"building the {side} shards") for side in sides}
    layout.scratch = []  # dropped, so the scheduler frees them
    layout.nnz = sum(s[1] for s in summaries["users"])
    layout.loss_weight = sum(s[2] for s in summaries["users"])
    for side in sides:
        other = _OTHER[side]
        layout.kinds[side] = [s[0] for s in summaries[side]]
        layout.selections[side] = {
            (k, j): submit_to(client, layout.owners[other][j], _tasks.selection, layout.shards[side][k], j)
            for k, kinds in enumerate(layout.kinds[side]) for j in np.flatnonzero(kinds == _tasks.ROWS).tolist()}
    if layout.summed:
        _item_blocks(client, layout, params, timeout)
    return layout


def _blocks(client: Any, layout: Layout, side: str, factors: np.ndarray, timeout: float | None) -> list[Any]:
    bounds = layout.bounds[side]
    blocks = [scatter_to(client, factors[lo:hi], w, timeout)
              for w, lo, hi in zip(layout.owners[side], bounds[:-1].tolist(), bounds[1:].tolist())]
    if not layout.summed:  # copied into canvases
        return blocks
    # solved in place: aligned on arrival (the message's copy goes once its aligned copy exists)
    return [submit_to(client, w, _tasks.aligned, block) for w, block in zip(layout.owners[side], blocks)]


class _Driver:
    def __init__(self, client: Any, layout: Layout, params: dict[str, Any], threads: int, timeout: float | None):
        self.client, self.layout, self.params = client, layout, params
        self.threads, self.timeout = threads, timeout

    def half_step(self, side: str, own: list[Any], other: list[Any], other_gram: np.ndarray, with_loss: bool
                  ) -> tuple[list[Any], list[tuple]]:
        """Solve every block of ``side``; return the new blocks and their (gram, failures, loss, penalty)."""
        new, stats = self.submit_half_step(side, own, other, other_gram, with_loss)
        return new, self._stats(side, stats)

    def submit_half_step(self, side: str, own: list[Any], other: list[Any], other_gram: Any, with_loss: bool,
                         residual_sums: bool = False) -> tuple[list[Any], list[Any]]:
        """``half_step``'s tasks: the new blocks and their stats, as futures (nothing waited for)."""
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
            # summed item half-steps need no canvas of users: a user block is solved where it is
            in_place = layout.summed and side == "users"
            block = submit_to(client, worker, _tasks.solve_block, shard, own[k], other_gram, self.params,
                              self.threads, with_loss, *pieces, in_place=in_place,
                              side_rows=None if in_place else int(layout.bounds[side][-1]),
                              residual_sums=residual_sums)
            new.append(block)
            stats.append(submit_to(client, worker, _tasks.block_stats, block))
        return new, stats

    def _stats(self, side: str, stats: list[Any]) -> list[tuple]:
        results = gather(self.client, stats, self.timeout, f"the {side} half-step")
        failures = sum(r[1] for r in results)
        if failures:
            n_rows = int(self.layout.bounds[side][-1])
            warnings.warn(f"DaskALS: {failures} of {n_rows} row systems were singular and left unsolved; "
                          "use regularization > 0", RuntimeWarning, stacklevel=6)
        return results

    def summed_sweep(self, X: list[Any], Y: list[Any], item_gram: Any) -> tuple[list[Any], list[Any],
                                                                                list[Any], list[Any]]:
        """One iteration with the item half-step by sums over user blocks, as one task graph (``Y`` is emptied).

        The user half-step as ``half_step``; each item block's owner sums
        the user blocks' Gram matrices itself as CG starts (``cg_start``),
        so the item half-step starts without a round trip to the client
        or a task of its own.  Each user block adds its part of CG's
        residual sums while it is solved (of the old item factors, which
        it reads anyway: ``solve_block(residual_sums=True)``); then per CG
        step every user block adds its part of the sums for each block of
        items (``item_sums``, on the user block's worker, of the owner's
        search direction, ``cg_vector``) and the owner of the block takes
        the dense step.  Only item-block-sized arrays travel; no worker
        holds other workers' users.  Returns the new blocks and both
        half-steps' stats, all futures: nothing is waited for.
        """
        layout, client, params = self.layout, self.client, self.params
        bounds, owners = layout.bounds["items"], layout.owners["items"]
        user_owners = layout.owners["users"]
        X, user_stats = self.submit_half_step("users", X, Y, item_gram, False, residual_sums=True)
        parts = [submit_to(client, worker, _tasks.sums_parts, block, bounds) for worker, block in zip(user_owners, X)]
        states: list[Any] = []
        for round_ in range(1 + params["cg_steps"]):
            if round_:
                vectors = [submit_to(client, worker, _tasks.cg_vector, state) for worker, state in zip(owners, states)]
                sums = [[submit_to(client, user_worker, _tasks.item_sums, shard, X[k], vectors[j], int(bounds[j]),
                                   params, False, self.threads)
                         for k, (shard, user_worker) in enumerate(zip(layout.shards["users"], user_owners))]
                        for j in range(len(owners))]
            else:  # the residual's, from the user half-step
                sums = [[submit_to(client, user_worker, _tasks.part_of, parts[k], j)
                         for k, user_worker in enumerate(user_owners)] for j in range(len(owners))]
            if not round_:  # CG starts in the old blocks themselves once every read of them is done (the sums)
                states = [submit_to(client, worker, _tasks.cg_start, Y[j], block, params, list(user_stats),
                                    *sums[j], side_rows=int(bounds[-1]), threads=self.threads)
                          for j, (worker, block) in enumerate(zip(owners, layout.item_blocks))]
                Y.clear()  # the caller's list: the old blocks (and their copies elsewhere) go once CG starts
            else:
                states = [submit_to(client, worker, _tasks.cg_step, state, None, *sums[j], threads=self.threads)
                          for j, (worker, state) in enumerate(zip(owners, states))]
        new = [submit_to(client, worker, _tasks.cg_finish, state, params) for worker, state in zip(owners, states)]
        item_stats = [submit_to(client, w, _tasks.block_stats, b) for w, b in zip(owners, new)]
        return X, new, user_stats, item_stats

    def user_losses(self, users: list[Any], items: list[Any], item_gram: np.ndarray) -> float:
        """The objective's terms of every user block (penalties included) against the new item factors."""
        return sum(gather(self.client, [
            submit_to(self.client, worker, _tasks.user_loss, shard, users[k], item_gram, self.params, *items)
            for k, (shard, worker) in enumerate(zip(self.layout.shards["users"], self.layout.owners["users"]))],
            self.timeout, "the loss"))


def _finish_sweep(driver: _Driver, iteration: int, user_futures: list[Any], item_futures: list[Any],
                  on_iteration: Callable[[int, float], None]) -> None:
    """Wait for a pipelined sweep's stats (warning about singular rows) and report it (no loss)."""
    driver._stats("users", user_futures)
    driver._stats("items", item_futures)
    on_iteration(iteration, math.nan)


def run_iterations(client: Any, layout: Layout, params: dict[str, Any], threads: int,
                   timeout: float | None, user_factors: np.ndarray, item_factors: np.ndarray,
                   compute_loss: bool, on_iteration: Callable[[int, float], None]
                   ) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """Run ``params["iterations"]`` sweeps from the given factors; return the final factors (user, item) and
    the final user blocks (futures, on their workers).

    ``on_iteration(iteration, loss)`` is called after each sweep (loss NaN
    unless ``compute_loss``).  Lost workers surface as ``_cluster.WORKER_LOST``
    errors; the caller decides whether to start again.
    """
    driver = _Driver(client, layout, params, threads, timeout)
    dtype = params["dtype"]
    X = _blocks(client, layout, "users", user_factors, timeout)
    Y = _blocks(client, layout, "items", item_factors, timeout)
    item_gram: Any = gram(item_factors)  # what ALS's first half-step computes
    pending: tuple[int, list[Any], list[Any]] | None = None
    for iteration in range(params["iterations"]):
        if layout.summed and not compute_loss:
            # pipelined: the next sweep is submitted (its Gram matrix summed by the tasks that use it) before
            # this one's stats are waited for, so the workers never wait for the client between sweeps
            X, Y, user_futures, item_futures = driver.summed_sweep(X, Y, item_gram)
            item_gram = list(item_futures)  # summed by each user block's task itself (gram_of)
            if pending is not None:
                _finish_sweep(driver, *pending, on_iteration)
            pending = (iteration, user_futures, item_futures)
            continue
        if layout.summed:
            X, Y, user_futures, item_futures = driver.summed_sweep(X, Y, item_gram)
            user_stats, item_stats = driver._stats("users", user_futures), driver._stats("items", item_futures)
        else:
            X, user_stats = driver.half_step("users", X, Y, item_gram, False)
            user_gram = _tasks.summed_gram(dtype, *user_stats)
            Y, item_stats = driver.half_step("items", Y, X, user_gram, compute_loss)
        item_gram = _tasks.summed_gram(dtype, *item_stats)
        loss = math.nan
        if compute_loss and layout.summed:  # by users (their penalties included), plus the items' penalties
            total = driver.user_losses(X, Y, item_gram) + sum(s[3] for s in item_stats)
            loss = float(total / layout.loss_weight)
        elif compute_loss:
            total = sum(s[2] for s in item_stats) + sum(s[3] for s in user_stats)
            loss = float(total / layout.loss_weight)
        on_iteration(iteration, loss)
    if pending is not None:
        _finish_sweep(driver, *pending, on_iteration)
    factors = [_tasks.factors_of(p) for p in gather(client, X + Y, timeout, "gathering the factors")]
    if layout.summed:  # the user shards may be kept for recommend_all: without the sums' counts
        gather(client, [submit_to(client, worker, _tasks.forget_chunk_counts, shard)
                        for worker, shard in zip(layout.owners["users"], layout.shards["users"])], timeout,
               "finishing the fit")
    return np.concatenate(factors[:len(X)]), np.concatenate(factors[len(X):]), X
