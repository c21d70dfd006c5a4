"""pytest-benchmark suites for fastrec's kernels, with implicit's equivalents beside them.

Run (from the repository root)::

    pytest bench/kernels --benchmark-enable
    pytest bench/kernels --benchmark-enable -k topk --benchmark-group-by=group

The project's pytest configuration disables benchmarks and collects only
``tests/``, so the normal test run skips this directory; without
``--benchmark-enable`` each case still runs once, as a smoke test.

Data: synthetic implicit feedback (``fastrec.datasets.make_synthetic``,
power-law activity and popularity, low rank), 20,000 users x 5,000 items x
500,000 interactions, cached under ``bench/.cache``.  Everything uses 2
threads; implicit runs with BLAS limited to one thread.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common as C  # noqa: E402

import fastrec  # noqa: E402

SHAPE = (20_000, 5_000, 500_000)
THREADS = C.THREADS
N = 10

try:
    import implicit.cpu.als as implicit_als
except ImportError:  # the anchor is optional here
    implicit_als = None
needs_implicit = pytest.mark.skipif(implicit_als is None, reason="implicit is not installed")


@pytest.fixture(scope="module")
def X():
    return C.synthetic(SHAPE, verbose=False)


@pytest.fixture(scope="module", params=[64, 128], ids=lambda f: f"f{f}")
def served(request, X):
    """(fastrec model, implicit twin) serving the same factors."""
    model = C.trained_als(X, request.param, THREADS)
    return model, C.implicit_twin(model, THREADS)


def _start_factors(n: int, f: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, f)) * 0.1).astype(np.float32)


# ---------------------------------------------------------------- ALS
@pytest.mark.parametrize("solver", ["cg", "cholesky"])
@pytest.mark.parametrize("factors", [64, 128])
def test_als_half_step_fastrec(benchmark, X, factors, solver):
    """One user half-step (all users solved against fixed item factors)."""
    benchmark.group = f"als-half-step-{solver}-f{factors}"
    model = fastrec.ALS(factors=factors, solver=solver, num_threads=THREADS, confidence="implicit",
                        regularization_scaling="none", regularization=0.01, alpha=1.0)
    params = model._check_params()
    users, items = _start_factors(X.shape[0], factors, 0), _start_factors(X.shape[1], factors, 1)
    reg = model._row_regularization(X, params)
    benchmark.extra_info.update(nnz=X.nnz, users=X.shape[0])
    benchmark.pedantic(model._half_step, args=(X, users, items, reg, params, solver, THREADS),
                       rounds=5, warmup_rounds=1)
    assert np.isfinite(users).all() and np.abs(users).max() > 0


@needs_implicit
@pytest.mark.parametrize("solver", ["cg", "cholesky"])
@pytest.mark.parametrize("factors", [64, 128])
def test_als_half_step_implicit(benchmark, X, factors, solver):
    benchmark.group = f"als-half-step-{solver}-f{factors}"
    with C.blas_limit(1):
        model = implicit_als.AlternatingLeastSquares(factors=factors, use_cg=solver == "cg",
                                                     regularization=0.01, num_threads=THREADS)
    users, items = _start_factors(X.shape[0], factors, 0), _start_factors(X.shape[1], factors, 1)

    def half_step():
        with C.blas_limit(1):
            model.solver(X, users, items, 0.01, num_threads=THREADS)

    benchmark.pedantic(half_step, rounds=5, warmup_rounds=1)
    assert np.isfinite(users).all() and np.abs(users).max() > 0


# ---------------------------------------------------------------- BPR / WARP
@pytest.mark.skipif(not hasattr(fastrec, "BPR"), reason="fastrec.BPR is not available")
@pytest.mark.parametrize("loss", ["bpr", "warp"])
def test_sgd_one_epoch_fastrec(benchmark, X, loss):
    """``fit`` for one epoch (includes the small setup: positives, initial factors)."""
    benchmark.group = f"sgd-epoch-{loss}"
    model = fastrec.BPR(factors=64, iterations=1, loss=loss, num_threads=THREADS, random_state=0)
    benchmark.pedantic(model.fit, args=(X,), rounds=3, warmup_rounds=1)
    assert np.isfinite(model.user_factors_).all() and np.isfinite(model.item_bias_).all()


@needs_implicit
def test_sgd_one_epoch_implicit_bpr(benchmark, X):
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    benchmark.group = "sgd-epoch-bpr"
    with C.blas_limit(1):
        model = BayesianPersonalizedRanking(factors=64, iterations=1, num_threads=THREADS, random_state=0)

    def fit():
        with C.blas_limit(1):
            model.fit(X, show_progress=False)

    benchmark.pedantic(fit, rounds=3, warmup_rounds=1)
    assert np.isfinite(model.item_factors).all()


# ---------------------------------------------------------------- top-K
def test_topk_batch_fastrec(benchmark, served, X):
    """All users, N=10, seen items excluded."""
    model, _ = served
    benchmark.group = f"topk-batch-f{model.item_factors_.shape[1]}"
    users = np.arange(X.shape[0])
    benchmark.extra_info["users"] = users.size
    ids, scores = benchmark.pedantic(model.recommend, args=(users,), kwargs={"n": N}, rounds=5,
                                     warmup_rounds=1)
    assert ids.shape == (users.size, N)
    for u in range(50):  # no seen item comes back, and scores are sorted
        assert not np.isin(ids[u], X.indices[X.indptr[u]:X.indptr[u + 1]]).any()
        assert np.all(np.diff(scores[u]) <= 0)


@needs_implicit
def test_topk_batch_implicit(benchmark, served, X):
    _, twin = served
    benchmark.group = f"topk-batch-f{twin.item_factors.shape[1]}"
    users = np.arange(X.shape[0])

    def recommend():
        with C.blas_limit(1):
            return twin.recommend(users, X, N=N, filter_already_liked_items=True)

    ids, _ = benchmark.pedantic(recommend, rounds=5, warmup_rounds=1)
    assert ids.shape == (users.size, N)


def test_recommend_single_user_fastrec(benchmark, served):
    model, _ = served
    benchmark.group = f"recommend-one-user-f{model.item_factors_.shape[1]}"
    ids, scores = benchmark(model.recommend, 123, n=N)
    assert ids.shape == (N,) and np.all(np.diff(scores) <= 0)


@needs_implicit
def test_recommend_single_user_implicit(benchmark, served, X):
    _, twin = served
    benchmark.group = f"recommend-one-user-f{twin.item_factors.shape[1]}"
    row = X[123]
    with C.blas_limit(1):
        ids, _ = benchmark(twin.recommend, 123, row, N=N, filter_already_liked_items=True)
    assert ids.shape == (N,)


def test_fold_in_single_user_fastrec(benchmark, served, X):
    model, _ = served
    benchmark.group = f"fold-in-one-user-f{model.item_factors_.shape[1]}"
    row = X[123]
    factors = benchmark(model.fold_in, row)
    assert factors.shape == (1, model.item_factors_.shape[1]) and np.isfinite(factors).all()
