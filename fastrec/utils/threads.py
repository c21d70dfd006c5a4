"""Thread counts that respect affinity and cgroup quotas, and BLAS limits."""
from __future__ import annotations

import math
import os
import sys
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

from threadpoolctl import ThreadpoolController

__all__ = ["available_cpus", "resolve_num_threads", "blas_single_thread"]


def _cgroup_cpu_limit() -> float | None:
    """CPUs allowed by a cgroup v2 or v1 CFS quota, or None when unlimited."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as fh:  # cgroup v2
            quota, period = fh.read().split()[:2]
            if quota != "max":
                return int(quota) / int(period)
            return None
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as fh:
            quota_us = int(fh.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as fh:
            period_us = int(fh.read())
        if quota_us > 0 and period_us > 0:
            return quota_us / period_us
    except (OSError, ValueError):
        pass
    return None


@lru_cache(maxsize=1)
def available_cpus() -> int:
    """CPUs this process may use: affinity mask, capped by the cgroup quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_limit()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def resolve_num_threads(num_threads: int) -> int:
    """Turn a ``num_threads`` hyperparameter into a positive thread count (0 = all usable CPUs)."""
    if num_threads == 0:
        return available_cpus()
    return int(num_threads)


@lru_cache(maxsize=2)
def _controller(scipy_blas: bool = True) -> ThreadpoolController:
    # Scanning the loaded libraries is slow; do it once per process (twice with
    # scipy_blas=False first).  The ALS kernel's Cholesky path calls scipy's own
    # OpenBLAS (scipy.linalg.cython_blas), so make sure it is loaded first, or
    # the limits would never reach it.
    if scipy_blas:
        import scipy.linalg.cython_blas  # noqa: F401  (loads the library; nothing used)
    return ThreadpoolController()


@contextmanager
def blas_single_thread(scipy_blas: bool = True) -> Iterator[None]:
    """Limit BLAS to one thread while our own OpenMP threads call into it.

    ``scipy_blas=False`` limits the BLAS libraries loaded so far (NumPy's, for
    a matrix product) without loading SciPy's (a Dask worker's CG fit never
    imports SciPy); SciPy's is limited too once it is loaded.
    """
    scipy_blas = scipy_blas or "scipy.linalg.cython_blas" in sys.modules
    with _controller(scipy_blas).limit(limits=1, user_api="blas"):
        yield

