"""Dask clusters for the distributed tests: real worker processes, on loopback only.

One two-worker cluster (one thread each) serves the whole session; a
one-worker cluster with two threads checks the single-worker layout and
that a worker's kernels use its threads despite Dask's OMP_NUM_THREADS=1.
Every wait in these tests has a deadline, so a broken cluster fails a test
instead of hanging the suite.
"""
from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

distributed = pytest.importorskip("distributed")

WAIT = 60  # seconds: the longest any single wait may take


def start_cluster(n_workers: int, threads: int) -> tuple[object, object]:
    with warnings.catch_warnings():  # "port 8787 in use": its HTTP server moves to a free port
        warnings.simplefilter("ignore", UserWarning)
        cluster = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=threads, processes=True,
                                           host="127.0.0.1", dashboard_address=None, silence_logs=logging.CRITICAL)
    client = distributed.Client(cluster, timeout=WAIT)
    client.wait_for_workers(n_workers, timeout=WAIT)
    return cluster, client


def stop_cluster(cluster: object, client: object) -> None:
    client.close(timeout=WAIT)
    cluster.close(timeout=WAIT)


@pytest.fixture(scope="session")
def dask_client():
    cluster, client = start_cluster(2, 1)
    yield client
    stop_cluster(cluster, client)


@pytest.fixture
def own_cluster_client():
    """A two-worker cluster of the test's own, for tests that kill workers: the shared one stays whole."""
    cluster, client = start_cluster(2, 1)
    yield client
    stop_cluster(cluster, client)


@pytest.fixture(scope="session")
def one_worker_client():
    cluster, client = start_cluster(1, 2)
    yield client
    stop_cluster(cluster, client)


@pytest.fixture(scope="session")
def counts_matrix() -> sp.csr_matrix:
    """Counts, users x items, with empty users (rows 5, 17) and items (columns 3, 60)."""
    rng = np.random.default_rng(7)
    dense = rng.poisson(0.12, size=(140, 90)).astype(np.float32)
    dense[[5, 17]] = 0
    dense[:, [3, 60]] = 0
    return sp.csr_matrix(dense)
