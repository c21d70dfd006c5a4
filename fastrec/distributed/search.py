"""Hyperparameter search candidates fitted on a Dask cluster (``grid_search(..., client=)``).

``train`` and ``validation`` go to every worker once.  Each candidate is
fitted and scored on a worker with as many kernel threads as that worker
has; only its results row comes back, and the fitted model stays on the
worker until the search knows whether it is the best one.
"""
from __future__ import annotations

import operator
import time
from collections.abc import Iterable, Iterator
from typing import Any

import distributed

from ._cluster import (
    ClusterError,
    check_timeout,
    direct,
    resolve_client,
    worker_threads,
    worker_info,
    workers_of,
)

__all__ = ["cluster_runs"]


def _fit_candidate(estimator: Any, params: dict[str, Any], train: Any, validation: Any, k: int,
                   names: tuple[str, ...], evaluate_kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """``model_selection._fit_and_score`` on a worker, its kernels using the worker's threads."""
    from ..model_selection import _fit_and_score

    every_cpu = "num_threads" not in params and estimator.get_params().get("num_threads") == 0
    if every_cpu:  # "every CPU" means this worker's threads here: other fits share the machine
        estimator = type(estimator)(**{**estimator.get_params(), "num_threads": worker_threads(0)})
    model, row = _fit_and_score(estimator, params, train, validation, k, names, evaluate_kwargs)
    if every_cpu:
        model.set_params(num_threads=0)
    return model, row


def cluster_runs(client: Any, estimator: Any, candidates: Iterable[dict[str, Any]], args: tuple,
                 out_of_time: Any, stopped: list[bool], timeout: float | None = None
                 ) -> Iterator[tuple[dict[str, Any], Any, dict[str, Any]]]:
    """(params, model getter, row) per candidate, in the candidates' order, fitted on the workers.

    As many candidates run at once as the workers have threads; no new one
    starts once ``out_of_time()`` (at least one always runs).  With
    ``timeout`` (seconds), ``ClusterError`` when the whole search on the
    cluster has not finished by then (``time_limit`` only stops new
    candidates from starting; this bounds a stuck or lost cluster).
    """
    from .als import DaskALS

    if isinstance(estimator, DaskALS):
        raise TypeError("with client=, each candidate is fitted on one worker: pass a single-machine estimator "
                        "(fastrec.ALS); a DaskALS spreads every fit over the cluster itself (search it without "
                        "client=)")
    client = resolve_client(client)
    timeout = check_timeout(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    train, validation, k, names, evaluate_kwargs = args
    workers = workers_of(client, timeout)
    slots = max(len(workers), sum(int(w.get("nthreads", 1)) for w in worker_info(client).values()))
    train_f, validation_f = client.scatter([train, validation], broadcast=True, hash=False,
                                              direct=direct(client))
    pending = iter(candidates)
    running: dict[Any, int] = {}
    submitted: list[tuple[dict[str, Any], Any]] = []
    finished: dict[int, dict[str, Any]] = {}
    exhausted = False

    def start_more() -> None:
        nonlocal exhausted
        while not exhausted and len(running) < slots:
            params = next(pending, None)
            exhausted = params is None or bool(submitted and out_of_time())
            if exhausted:
                if params is not None:
                    stopped.append(True)
                return
            both = client.submit(_fit_candidate, estimator, params, train_f, validation_f, k, names,
                                 evaluate_kwargs, pure=False)
            running[client.submit(operator.getitem, both, 1, pure=False)] = len(submitted)
            submitted.append((params, client.submit(operator.getitem, both, 0, pure=False)))

    start_more()
    next_index = 0
    while running:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            done = distributed.wait(list(running), timeout=remaining, return_when="FIRST_COMPLETED").done
        except (TimeoutError, distributed.TimeoutError) as exc:
            raise ClusterError(f"the search on the cluster did not finish within timeout={timeout} s "
                               f"({len(finished) + next_index} candidates scored, {len(running)} still running)"
                               ) from exc
        for row in sorted(done, key=running.get):
            finished[running.pop(row)] = row.result()
        start_more()
        while next_index in finished:
            params, model = submitted[next_index]
            submitted[next_index] = (params, None)  # only the search keeps a model it may return
            yield params, (lambda fitted=model: fitted.result()), finished.pop(next_index)
            next_index += 1
