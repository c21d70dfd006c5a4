"""Dask plumbing shared by training, batch recommendation and search.

The client and its workers, task placement, waits that always have a
deadline, and the errors that mean "a worker was lost" (as opposed to a bug
or bad data, which propagate unchanged).
"""
from __future__ import annotations

import concurrent.futures
from typing import Any, Callable, Sequence

try:
    import distributed
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("fastrec.distributed needs Dask distributed: pip install 'fastrec[distributed]' "
                      "(or pip install 'dask[distributed]')") from exc

from ..utils.threads import resolve_num_threads

__all__ = ["ClusterError", "WORKER_LOST", "WorkerLost", "resolve_client", "check_timeout", "workers_of", "worker_info",
           "gather", "direct", "scatter_to", "submit_to", "wait_for", "worker_threads"]


class ClusterError(RuntimeError):
    """A computation on the Dask cluster could not finish.

    Raised when workers were lost more often than the retries allow, or when
    a wait passed its ``timeout``.  The estimator keeps its previous fitted
    state.
    """


class WorkerLost(OSError):
    """A worker that data was being sent to has left the cluster."""


# a worker died: its data is gone, a task on it was lost, or it could not be reached
WORKER_LOST: tuple[type[BaseException], ...] = (concurrent.futures.CancelledError, KilledWorker, CommClosedError,
                                                OSError)


def resolve_client(client: Any, name: str = "client") -> Any:
    """``client`` itself, or the current Dask client when it is None."""
    if client is None:
        try:
            return distributed.get_client()
        except ValueError:
            raise ValueError(f"{name} is None and there is no current Dask client; pass "
                             f"{name}=distributed.Client(...) (a LocalCluster or a scheduler address)") from None
    if not isinstance(client, distributed.Client):
        raise TypeError(f"{name} must be a distributed.Client or None, got {type(client).__name__}")
    if client.status not in ("running", "connecting", "newly-created"):
        raise ValueError(f"{name} is {client.status}; pass a connected distributed.Client")
    return client


def check_timeout(timeout: Any, name: str = "timeout") -> float | None:
    """None (wait as long as it takes) or a positive number of seconds."""
    from ..utils.validation import check_float  # on the client: workers import this module without SciPy

    if timeout is None:
        return None
    return check_float(timeout, name, minimum=0.0, strict_minimum=True)


def workers_of(client: Any, timeout: float | None) -> list[str]:
    """The addresses of the cluster's workers (sorted), waiting for at least one."""
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (TimeoutError, distributed.TimeoutError) as exc:
        raise ClusterError(f"the Dask cluster has no worker (waited timeout={timeout} s)") from exc
    workers = sorted(worker_info(client))
    if not workers:
        raise ClusterError("the Dask cluster has no worker")
    return workers


def worker_info(client: Any) -> dict[str, dict[str, Any]]:
    """The scheduler's record of every worker, asked afresh.

    Not ``client.scheduler_info()``: that returns the client's cached copy,
    which its periodic refresh (that asks for no per-worker records) can
    overwrite between the fetch and the return, giving an empty worker list.
    """
    try:
        return dict(client.sync(client.scheduler.identity, n_workers=-1)["workers"])
    except TypeError:  # older distributed lists every worker without the argument
        return dict(client.sync(client.scheduler.identity)["workers"])


def wait_for(client: Any, futures: Sequence[Any], timeout: float | None, what: str) -> None:
    """Wait until ``futures`` are done (finished, failed or lost), at most ``timeout`` seconds (ClusterError after)."""
    if not futures:
        return
    try:
        distributed.wait(list(futures), timeout=timeout)
    except (TimeoutError, distributed.TimeoutError) as exc:
        raise ClusterError(f"{what} did not finish within timeout={timeout} s") from exc


def gather(client: Any, futures: Sequence[Any], timeout: float | None, what: str) -> list[Any]:
    """The results of ``futures``, waiting at most ``timeout`` seconds (ClusterError after that)."""
    wait_for(client, futures, timeout, what)
    return client.gather(list(futures))


def direct(client: Any) -> bool:
    """Whether data the client scatters goes straight to the workers: yes, unless the client was made
    with ``direct_to_workers=False`` (workers it cannot reach).  Through the scheduler every byte
    travels twice, and a ``LocalCluster``'s scheduler shares the client's process and cores."""
    return client.direct_to_workers is not False


def scatter_to(client: Any, value: Any, worker: str, timeout: float | None = None) -> Any:
    """Send ``value`` to ``worker``; ``WorkerLost`` if that worker has left the cluster meanwhile."""
    try:
        return client.scatter([value], workers=[worker], hash=False, direct=direct(client),
                              **({} if timeout is None else {"timeout": timeout}))[0]
    except (KeyError, TimeoutError, distributed.TimeoutError) as exc:
        # the scheduler raises KeyError for a removed worker, "No valid workers found" for a closing one
        if worker not in workers_of(client, timeout):
            raise WorkerLost(f"worker {worker} left the cluster") from exc
        raise


def submit_to(client: Any, worker: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn`` on ``worker`` if it is alive (another worker otherwise), never merged with a similar call."""
    return client.submit(fn, *args, workers=[worker], allow_other_workers=True, pure=False, **kwargs)


def worker_threads(requested: int) -> int:
    """Threads a kernel uses inside a task: ``requested``, or (for 0) this worker's thread count.

    Dask starts workers with ``OMP_NUM_THREADS=1`` so that libraries do not
    oversubscribe; our kernels take their thread count explicitly, so a
    worker started with ``--nthreads 4`` solves its rows with 4 threads.
    Outside a worker, 0 means every usable CPU, as everywhere in fastrec.
    """
    if requested > 0:
        return int(requested)
    try:
        worker = distributed.get_worker()
    except ValueError:
        return resolve_num_threads(0)
    return max(1, int(worker.state.nthreads))
