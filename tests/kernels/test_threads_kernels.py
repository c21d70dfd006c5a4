"""CPU counting (affinity, cgroup quotas), BLAS limits and kernel build selection."""
import builtins
import io
import os

import pytest
from threadpoolctl import threadpool_info

import fastrec
from fastrec import kernels as _kernels
from fastrec.utils import threads as _threads


def _fake_files(monkeypatch, files):
    real_open = builtins.open

    def fake_open(path, *args, **kwargs):
        if path in files:
            return io.StringIO(files[path])
        if str(path).startswith("/sys/fs/cgroup"):
            raise OSError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)


@pytest.mark.parametrize("files, expected", [
    ({"/sys/fs/cgroup/cpu.max": "150000 100000\n"}, 1.5),
    ({"/sys/fs/cgroup/cpu.max": "max 100000\n"}, None),
    ({"/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "50000", "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000"}, 0.5),
    ({"/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1", "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000"}, None),
    ({}, None),
])
def test_cgroup_quota_parsing(monkeypatch, files, expected):
    _fake_files(monkeypatch, files)
    assert _threads._cgroup_cpu_limit() == expected


def test_available_cpus_honours_quota_and_affinity(monkeypatch):
    _threads.available_cpus.cache_clear()
    try:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
        monkeypatch.setattr(_threads, "_cgroup_cpu_limit", lambda: 1.5)
        assert _threads.available_cpus() == 2  # ceil(1.5), below the 4 allowed CPUs
        _threads.available_cpus.cache_clear()
        monkeypatch.setattr(_threads, "_cgroup_cpu_limit", lambda: None)
        assert _threads.available_cpus() == 4
    finally:
        _threads.available_cpus.cache_clear()


def test_num_threads_zero_means_usable_cpus():
    assert _threads.resolve_num_threads(0) == fastrec.available_cpus() >= 1
    assert _threads.resolve_num_threads(3) == 3


def test_blas_limit_reaches_scipy_openblas_and_is_restored():
    import scipy.linalg.cython_blas  # noqa: F401  (the BLAS the kernels call)
    before = {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    with _threads.blas_single_thread():
        inside = {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    after = {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    assert inside and all(n == 1 for n in inside.values())
    assert after == before


@pytest.mark.parametrize("cap", ["baseline", "avx2", "avx512"])
def test_kernel_variant_cap(monkeypatch, cap):
    monkeypatch.setenv("FASTREC_KERNELS", cap)
    order = ["avx512", "avx2", "baseline"]
    chosen = _kernels.kernel_variant()
    assert order.index(chosen) >= order.index(cap)
    assert chosen == "baseline" or chosen in _kernels.runnable_variants()
