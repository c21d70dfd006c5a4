"""Correctness of the ALS kernels (`ext/_als.pyx`) and the `ALS` estimator.

Every numerical check compares against the dense NumPy references in
``reference.py``: exact per-row normal-equation solves and a dense
evaluation of the weighted objective.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import fastrec
from fastrec import ALS
from reference import (als_objective_dense, als_solve_rows, confidence_preference,
                       planted_low_rank, row_regularization)

CONVENTIONS = ("hu", "implicit")
SCALINGS = ("count", "none")
DTYPES = (np.float32, np.float64)
CHOLESKY, CG = 1, 0
# relative error allowed against an exact float64 solve, by factor dtype
SOLVE_RTOL = {np.float32: 1e-4, np.float64: 1e-10}


def canonical(R: sp.spmatrix) -> sp.csr_matrix:
    """What fastrec should train on: CSR, duplicates summed, explicit zeros dropped."""
    csr = sp.csr_matrix(R, dtype=np.float64, copy=True)
    csr.sum_duplicates()
    csr.eliminate_zeros()
    return csr


def random_ratings(n_users: int, n_items: int, density: float, seed: int,
                   values=(1.0, 2.0, 5.0, -1.0, -3.0, 0.25, 0.5)) -> sp.csr_matrix:
    """Canonical float64 CSR with positive, negative and fractional values.

    The first user and the last item are left empty on purpose.
    """
    rng = np.random.default_rng(seed)
    mask = rng.random((n_users, n_items)) < density
    mask[0, :] = False
    mask[:, -1] = False
    dense = np.where(mask, rng.choice(values, size=mask.shape), 0.0)
    return canonical(sp.csr_matrix(dense))


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    """Frobenius error relative to the reference solution's norm."""
    return float(np.linalg.norm(np.asarray(got, np.float64) - want) / max(np.linalg.norm(want), 1e-30))


def kernel_half_step(kernel, R: sp.csr_matrix, X0: np.ndarray, Y: np.ndarray, reg: np.ndarray, alpha: float,
                     convention: str, solver: int, cg_steps: int, num_threads: int, dtype) -> tuple[np.ndarray, int]:
    """Call ``kernel.als_half_step`` directly; returns the updated copy of X0 and the failure count."""
    X = np.array(X0, dtype=dtype, order="C")
    Yd = np.ascontiguousarray(Y, dtype=dtype)
    gram = np.ascontiguousarray(Yd.T @ Yd)
    failures = kernel.als_half_step(
        R.indptr.astype(np.int32), R.indices.astype(np.int32), R.data.astype(dtype), X, Yd, gram,
        np.asarray(reg, dtype=dtype), dtype(alpha), convention == "implicit", solver, cg_steps, num_threads)
    return X, failures


def recorded_losses(model: ALS, X) -> list[float]:
    losses: list[float] = []
    model.fit(X, callback=lambda iteration, elapsed, loss: losses.append(loss))
    return losses


# ------------------------------------------------------------ kernel solves
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("scaling", SCALINGS)
def test_cholesky_kernel_matches_exact_solve(als_kernel, dtype, convention, scaling):
    R = random_ratings(40, 25, 0.3, seed=1)
    Y = np.random.default_rng(2).standard_normal((25, 6)).astype(dtype)
    reg = row_regularization(R, 0.1, scaling)
    X0 = np.random.default_rng(3).standard_normal((40, 6))  # ignored by Cholesky
    X, failures = kernel_half_step(als_kernel, R, X0, Y, reg, 2.0, convention, CHOLESKY, 3, 1, dtype)
    want = als_solve_rows(R, Y, reg, 2.0, convention)
    assert failures == 0
    assert X.dtype == dtype
    assert rel_err(X, want) < SOLVE_RTOL[dtype]
    assert np.all(X[0] == 0), "a user without interactions must get zero factors"


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_cholesky_rows_longer_than_the_gather_buffer(als_kernel, convention):
    """A row longer than the kernel gathers at once (1 MB of float64 vectors at f = 64: 2048
    rows) is accumulated in several SYRK calls, with positive and negative weights."""
    f, n_items = 64, 5000
    rng = np.random.default_rng(30)
    values = rng.choice([0.25, 0.5, 1.0, 3.0, -2.0], size=(2, n_items))  # alpha * r < 1: c - 1 < 0
    values[1, ::2] = 0  # a second, shorter row
    R = canonical(sp.csr_matrix(values))
    Y = rng.standard_normal((n_items, f)) / 8
    reg = row_regularization(R, 0.1, "count")
    X, failures = kernel_half_step(als_kernel, R, np.zeros((2, f)), Y, reg, 2.0, convention, CHOLESKY,
                                   3, 2, np.float64)
    assert failures == 0
    assert rel_err(X, als_solve_rows(R, Y, reg, 2.0, convention)) < 1e-9


@pytest.mark.parametrize("f", [16, 32, 48, 64, 128])
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_cholesky_float32_multiples_of_16_match_exact_solve(als_kernel, f, convention):
    """float32 with f a multiple of 16 takes the blocked AVX-512 factor-and-solve where the
    CPU has it (several diagonal tiles, panel solves, rank-16 trailing updates)."""
    R = random_ratings(50, 3 * f, 0.3, seed=f)
    Y = (np.random.default_rng(f + 1).standard_normal((3 * f, f)) / np.sqrt(f)).astype(np.float32)
    reg = row_regularization(R, 0.1, "count")
    X, failures = kernel_half_step(als_kernel, R, np.zeros((50, f)), Y, reg, 2.0, convention, CHOLESKY,
                                   3, 2, np.float32)
    assert failures == 0
    assert rel_err(X, als_solve_rows(R, Y, reg, 2.0, convention)) < SOLVE_RTOL[np.float32]
    assert np.all(X[0] == 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("zero_from", [0, 5, 20, 40])
def test_cholesky_reports_a_zero_pivot_in_any_tile(als_kernel, dtype, zero_from):
    """Item factors zero from column ``zero_from`` on and no regularisation: pivot
    ``zero_from`` of every system is exactly zero (in the first or a later 16-column
    tile); each non-empty row must be counted as a failure and keep its old factors."""
    f = 48
    R = random_ratings(12, 60, 0.5, seed=zero_from)
    Y = np.random.default_rng(31).standard_normal((60, f))
    Y[:, zero_from:] = 0
    X0 = np.random.default_rng(32).standard_normal((12, f))
    X, failures = kernel_half_step(als_kernel, R, X0, Y, np.zeros(12), 2.0, "hu", CHOLESKY, 3, 2, dtype)
    nonempty = np.diff(R.indptr) > 0
    assert failures == int(nonempty.sum())
    np.testing.assert_array_equal(X[nonempty], X0[nonempty].astype(dtype))


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 2e-3), (np.float64, 1e-8)])
@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("warm", [False, True])
def test_cg_with_factors_steps_matches_exact_solve(als_kernel, dtype, rtol, convention, warm):
    f = 6
    R = random_ratings(40, 25, 0.3, seed=4)
    Y = np.random.default_rng(5).standard_normal((25, f)).astype(dtype)
    reg = row_regularization(R, 0.1, "count")
    X0 = np.random.default_rng(6).standard_normal((40, f)) if warm else np.zeros((40, f))
    X, failures = kernel_half_step(als_kernel, R, X0, Y, reg, 2.0, convention, CG, f, 1, dtype)
    want = als_solve_rows(R, Y, reg, 2.0, convention)
    assert failures == 0
    assert rel_err(X, want) < rtol
    assert np.all(X[0] == 0)


@pytest.mark.parametrize("f", [16, 48, 128])
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_cg_float32_multiples_of_16_matches_exact_solve(als_kernel, f, convention):
    """float32 with f a multiple of 16 (up to 128) applies the sparse part of each system
    in one register-resident pass where the CPU has AVX-512; rows of odd and even
    length, with and without c == 1 entries dropped, must still converge to the
    exact solve when CG runs f steps."""
    R = random_ratings(40, 2 * f, 0.3, seed=f + 7)
    Y = (np.random.default_rng(f + 8).standard_normal((2 * f, f)) / np.sqrt(f)).astype(np.float32)
    reg = row_regularization(R, 0.5, "count")
    X0 = np.random.default_rng(f + 9).standard_normal((40, f))
    X, failures = kernel_half_step(als_kernel, R, X0, Y, reg, 2.0, convention, CG, f, 2, np.float32)
    assert failures == 0
    assert rel_err(X, als_solve_rows(R, Y, reg, 2.0, convention)) < 2e-3


def test_cg_few_steps_is_inexact_but_improves_on_warm_start(als_kernel):
    """Guards the test above: with 1 step CG is not exact, yet it reduces the error."""
    f = 8
    R = random_ratings(60, 30, 0.4, seed=7)
    Y = np.random.default_rng(8).standard_normal((30, f))
    reg = row_regularization(R, 0.1, "count")
    X0 = np.random.default_rng(9).standard_normal((60, f))
    want = als_solve_rows(R, Y, reg, 2.0)
    X, _ = kernel_half_step(als_kernel, R, X0, Y, reg, 2.0, "hu", CG, 1, 1, np.float64)
    assert 1e-3 < rel_err(X, want) < rel_err(X0, want)


@pytest.mark.parametrize("solver", [CHOLESKY, CG])
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_threads_bit_identical(als_kernel, solver, dtype):
    R = random_ratings(300, 40, 0.2, seed=10)
    Y = np.random.default_rng(11).standard_normal((40, 8))
    X0 = np.random.default_rng(12).standard_normal((300, 8))
    reg = row_regularization(R, 0.05, "count")
    one, _ = kernel_half_step(als_kernel, R, X0, Y, reg, 2.0, "hu", solver, 3, 1, dtype)
    two, _ = kernel_half_step(als_kernel, R, X0, Y, reg, 2.0, "hu", solver, 3, 2, dtype)
    assert np.array_equal(one, two)


def test_kernel_accepts_int64_indptr(als_kernel):
    R = random_ratings(30, 20, 0.3, seed=13)
    Y = np.random.default_rng(14).standard_normal((20, 4))
    reg = row_regularization(R, 0.1, "count")
    X = np.zeros((30, 4))
    als_kernel.als_half_step(R.indptr.astype(np.int64), R.indices.astype(np.int32), R.data, X, Y,
                                     Y.T @ Y, reg, 2.0, False, CHOLESKY, 3, 1)
    assert rel_err(X, als_solve_rows(R, Y, reg, 2.0)) < 1e-10


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-11)])
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_als_loss_kernel_matches_dense_objective(als_kernel, dtype, rtol, convention):
    R = random_ratings(7, 5, 0.5, seed=15)
    rng = np.random.default_rng(16)
    X = rng.standard_normal((7, 3)).astype(dtype)
    Y = rng.standard_normal((5, 3)).astype(dtype)
    reg_rows = rng.random(7).astype(dtype)
    reg_cols = rng.random(5).astype(dtype)
    got = als_kernel.als_loss(R.indptr.astype(np.int32), R.indices.astype(np.int32), R.data.astype(dtype),
                                      X, Y, np.ascontiguousarray(Y.T @ Y), reg_rows, reg_cols, dtype(1.5),
                                      convention == "implicit", 1)
    want = als_objective_dense(R.toarray(), X, Y, reg_rows.astype(np.float64), reg_cols.astype(np.float64),
                               1.5, convention)
    assert got == pytest.approx(want, rel=rtol)


# ------------------------------------------------------------- fit / fold-in
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("scaling", SCALINGS)
def test_fit_last_half_step_and_fold_in_are_exact_solves(dtype, convention, scaling):
    """After fit the item factors solve the item systems for the final user factors,
    and fold_in solves the user systems for the final item factors."""
    R = random_ratings(50, 30, 0.25, seed=17)
    model = ALS(factors=5, iterations=3, solver="cholesky", regularization=0.1, alpha=2.0, dtype=dtype,
                confidence=convention, regularization_scaling=scaling, random_state=0, num_threads=1).fit(R)
    U, V = model.user_factors_, model.item_factors_
    assert U.dtype == dtype and V.dtype == dtype
    items = R.T.tocsr()
    want_items = als_solve_rows(items, U, row_regularization(items, 0.1, scaling), 2.0, convention)
    assert rel_err(V, want_items) < SOLVE_RTOL[dtype] * 10
    want_users = als_solve_rows(R, V, row_regularization(R, 0.1, scaling), 2.0, convention)
    folded = model.fold_in(R)
    assert folded.dtype == dtype
    assert rel_err(folded, want_users) < SOLVE_RTOL[dtype] * 10
    assert np.all(U[0] == 0) and np.all(V[-1] == 0), "empty users and items get zero factors"


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_fit_reported_loss_is_normalised_dense_objective(convention, dtype):
    R = random_ratings(12, 9, 0.4, seed=18)
    model = ALS(factors=3, iterations=2, solver="cholesky", regularization=0.2, alpha=1.5, dtype=dtype,
                confidence=convention, random_state=0, num_threads=1)
    losses = recorded_losses(model, R)
    assert len(losses) == 2 and model.loss_history_ == losses
    c, _ = confidence_preference(R.data, 1.5, convention)
    weight = c.sum() + R.shape[0] * R.shape[1] - R.nnz
    objective = als_objective_dense(R.toarray(), model.user_factors_, model.item_factors_,
                                    row_regularization(R, 0.2, "count"),
                                    row_regularization(R.T.tocsr(), 0.2, "count"), 1.5, convention)
    assert losses[-1] == pytest.approx(objective / weight, rel=1e-5 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("dtype, slack", [(np.float32, 1e-6), (np.float64, 1e-12)])
@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("scaling", SCALINGS)
def test_cholesky_loss_never_increases(dtype, slack, convention, scaling):
    R = random_ratings(120, 80, 0.08, seed=19)
    model = ALS(factors=8, iterations=25, solver="cholesky", alpha=2.0, dtype=dtype, confidence=convention,
                regularization=0.05 if scaling == "count" else 0.5, regularization_scaling=scaling,
                random_state=1, num_threads=1)
    losses = np.array(recorded_losses(model, R))
    assert losses.shape == (25,) and np.all(np.isfinite(losses))
    increases = losses[1:] - losses[:-1] * (1 + slack)
    assert np.all(increases <= 0), f"loss went up at iterations {np.nonzero(increases > 0)[0] + 1}: {losses}"
    assert losses[-1] < losses[0]


def test_cg_default_steps_reaches_cholesky_loss():
    """CG with 3 warm-started steps per half-step ends within 1% of exact ALS after 10 sweeps."""
    R = planted_low_rank(300, 200, 4, 15, seed=3)
    final = {}
    for solver in ("cholesky", "cg"):
        losses = recorded_losses(ALS(factors=16, iterations=10, solver=solver, random_state=0, num_threads=1), R)
        final[solver] = losses[-1]
    assert abs(final["cg"] - final["cholesky"]) <= 0.01 * final["cholesky"], final


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_fit_threads_bit_identical(solver):
    # large enough that BLAS may itself go parallel for the Gram matrices
    R = random_ratings(1500, 600, 0.02, seed=20)
    fits = [ALS(factors=32, iterations=2, solver=solver, random_state=0, num_threads=t).fit(R) for t in (1, 2)]
    assert np.array_equal(fits[0].user_factors_, fits[1].user_factors_)
    assert np.array_equal(fits[0].item_factors_, fits[1].item_factors_)


def test_singular_systems_are_not_silently_ignored():
    """With regularization=0 and more factors than items every Cholesky system is singular.

    The kernel counts the rows it could not solve; fit and fold_in must say so with a
    RuntimeWarning giving the count, rather than silently return the random initial
    factors (and fold_in all zeros).
    """
    R = sp.csr_matrix(np.array([[1.0, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 1]]))
    model = ALS(factors=10, regularization=0.0, iterations=1, solver="cholesky", dtype=np.float64, random_state=0)

    def singular_warnings(call):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        return [(w.category, str(w.message)) for w in caught if "singular" in str(w.message)]

    def message(failures, rows):
        return (RuntimeWarning,
                f"ALS: {failures} of {rows} row systems were singular and left unsolved; use regularization > 0")

    # one sweep: the 3 user systems, then the 4 item systems, all singular (and nothing else says so)
    assert singular_warnings(lambda: model.fit(R)) == [message(3, 3), message(4, 4)]
    assert singular_warnings(lambda: model.fold_in(R[:2])) == [message(2, 2)]
    assert singular_warnings(lambda: model.fold_in(R[:1])) == [message(1, 1)]  # the one-row latency path


def test_float32_and_float64_fits_agree():
    R = random_ratings(150, 100, 0.05, seed=21)
    single, double = (ALS(factors=8, iterations=3, solver="cholesky", dtype=dt, random_state=0,
                          num_threads=1).fit(R) for dt in DTYPES)
    assert rel_err(single.user_factors_, double.user_factors_) < 1e-4
    assert rel_err(single.item_factors_, double.item_factors_) < 1e-4


# ----------------------------------------------------------- input handling
def test_duplicates_summed_and_explicit_zeros_ignored():
    rows = np.array([0, 0, 0, 1, 1, 2, 2, 3, 3])
    cols = np.array([1, 1, 2, 0, 0, 3, 2, 1, 0])
    vals = np.array([1.0, 2.0, 0.0, 2.0, -2.0, 4.0, 1.0, -1.0, 5.0])  # (1,0) cancels to zero
    coo = sp.coo_matrix((vals, (rows, cols)), shape=(4, 5))
    # a CSR that stores the duplicates and the zeros explicitly, indices unsorted
    order = np.argsort(rows, kind="stable")
    raw_csr = sp.csr_matrix((vals[order], cols[order], np.r_[0, np.cumsum(np.bincount(rows, minlength=4))]),
                            shape=(4, 5))
    clean = canonical(coo)
    assert clean.nnz == 5
    params = dict(factors=3, iterations=3, solver="cholesky", dtype=np.float64, random_state=0, num_threads=1)
    reference = ALS(**params).fit(clean)
    for X in (coo, raw_csr, raw_csr.tocsc(), coo.toarray()):
        model = ALS(**params).fit(X)
        assert np.array_equal(model.user_factors_, reference.user_factors_)
        assert np.array_equal(model.item_factors_, reference.item_factors_)
        seen = model.user_items_
        assert seen.nnz == clean.nnz and (seen != clean).nnz == 0


def test_thumbs_down_pulls_score_towards_zero():
    """A negative value keeps preference 0 but adds confidence |r|: the item's score shrinks in magnitude."""
    R = planted_low_rank(100, 40, 3, 8, seed=4)
    model = ALS(factors=4, iterations=5, solver="cholesky", regularization=0.1, regularization_scaling="none",
                dtype=np.float64, random_state=0, num_threads=1).fit(R)
    base = sp.csr_matrix(([3.0, 3.0], ([0, 0], [1, 2])), shape=(1, 40))
    for item in range(3, 40):
        down = base + sp.csr_matrix(([-4.0], ([0], [item])), shape=(1, 40))
        before = model.fold_in(base)[0] @ model.item_factors_[item]
        after = model.fold_in(down)[0] @ model.item_factors_[item]
        assert abs(after) < abs(before) or before == after == 0


def _raw_sparse(rows, cols, vals, shape, fmt):
    """The entries in the requested input format, keeping duplicates and explicit zeros where it can."""
    rows, cols, vals = np.asarray(rows, np.int64), np.asarray(cols, np.int64), np.asarray(vals, np.float64)
    if fmt in ("csr", "csc"):
        major, minor, n_major = (rows, cols, shape[0]) if fmt == "csr" else (cols, rows, shape[1])
        order = np.argsort(major, kind="stable")
        indptr = np.r_[0, np.cumsum(np.bincount(major, minlength=n_major))]
        cls = sp.csr_matrix if fmt == "csr" else sp.csc_matrix
        return cls((vals[order], minor[order], indptr), shape=shape)
    coo = sp.coo_matrix((vals, (rows, cols)), shape=shape)
    if fmt == "coo":
        return coo
    if fmt == "coo_array":
        return sp.coo_array(coo)
    if fmt == "csr_array":
        return sp.csr_array(coo)
    if fmt == "list":
        return coo.toarray().tolist()
    return coo.toarray()


def _snapshot(X):
    if sp.issparse(X):
        parts = [X.data, X.row, X.col] if X.format == "coo" else [X.data, X.indices, X.indptr]
        return [p.copy() for p in parts]
    return [np.array(X, copy=True)]


@st.composite
def interaction_inputs(draw):
    n_users = draw(st.integers(1, 7))
    n_items = draw(st.integers(1, 7))
    size = draw(st.integers(0, 20))
    rows = draw(st.lists(st.integers(0, n_users - 1), min_size=size, max_size=size))
    cols = draw(st.lists(st.integers(0, n_items - 1), min_size=size, max_size=size))
    vals = draw(st.lists(st.sampled_from([-3.0, -1.0, 0.0, 0.5, 1.0, 2.0, 4.0]), min_size=size, max_size=size))
    fmt = draw(st.sampled_from(["coo", "csr", "csc", "dense", "list", "coo_array", "csr_array"]))
    convention = draw(st.sampled_from(CONVENTIONS))
    return (n_users, n_items), rows, cols, vals, fmt, convention


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(interaction_inputs())
@example(((1, 4), [0, 0, 0], [1, 1, 2], [1.0, -1.0, 3.0], "coo", "hu"))  # one user; a pair cancels to zero
@example(((3, 3), [], [], [], "csr", "implicit"))  # nothing observed at all
@example(((2, 3), [1, 1, 0], [2, 2, 0], [-1.0, -3.0, 0.0], "csc", "hu"))  # only thumbs down and a zero
def test_fit_property_exact_solves_and_input_untouched(case):
    shape, rows, cols, vals, fmt, convention = case
    X = _raw_sparse(rows, cols, vals, shape, fmt)
    before = _snapshot(X)
    clean = canonical(sp.coo_matrix((np.asarray(vals, float), (np.asarray(rows, int), np.asarray(cols, int))),
                                    shape=shape))
    model = ALS(factors=3, iterations=2, solver="cholesky", regularization=0.1, alpha=2.0, dtype=np.float64,
                confidence=convention, random_state=0, num_threads=1)
    if clean.nnz == 0:  # nothing to learn from is an error, never an all-zero model
        with pytest.raises(ValueError, match="no interactions"):
            model.fit(X)
        assert model._state is None
        return
    model.fit(X)
    for old, new in zip(before, _snapshot(X)):
        assert np.array_equal(old, new), "fit modified the caller's matrix"

    U, V = model.user_factors_, model.item_factors_
    assert U.shape == (shape[0], 3) and V.shape == (shape[1], 3)
    assert np.isfinite(U).all() and np.isfinite(V).all()
    seen = model.user_items_
    assert seen.shape == shape and seen.nnz == clean.nnz and (seen != clean).nnz == 0
    assert np.all(U[np.diff(clean.indptr) == 0] == 0), "empty users get zero factors"
    assert np.all(V[np.diff(clean.tocsc().indptr) == 0] == 0), "empty items get zero factors"
    items = clean.T.tocsr()
    want_items = als_solve_rows(items, U, row_regularization(items, 0.1, "count"), 2.0, convention)
    np.testing.assert_allclose(V, want_items, rtol=1e-8, atol=1e-10)
    want_users = als_solve_rows(clean, V, row_regularization(clean, 0.1, "count"), 2.0, convention)
    np.testing.assert_allclose(model.fold_in(X), want_users, rtol=1e-8, atol=1e-10)
    for old, new in zip(before, _snapshot(X)):
        assert np.array_equal(old, new), "fold_in modified the caller's matrix"


def _small():
    return random_ratings(10, 8, 0.4, seed=22)


BAD_FITS = [
    ("nan", lambda: ALS().fit(sp.csr_matrix(np.array([[np.nan, 1.0]]))), ValueError, "NaN"),
    ("inf", lambda: ALS().fit(np.array([[np.inf, 1.0]])), ValueError, "infinite"),
    ("1-D", lambda: ALS().fit(np.ones(3)), ValueError, "2-D"),
    ("3-D", lambda: ALS().fit(np.ones((2, 2, 2))), ValueError, "2-D"),
    ("1-D sparse", lambda: ALS().fit(sp.coo_array(np.ones(3))), ValueError, "2-D"),
    ("no users", lambda: ALS().fit(sp.csr_matrix((0, 3))), ValueError, "zero size"),
    ("no items", lambda: ALS().fit(np.zeros((3, 0))), ValueError, "zero size"),
    ("not a matrix", lambda: ALS().fit("abc"), TypeError, "X must be"),
    ("complex", lambda: ALS().fit(np.array([[1j, 1.0]])), TypeError, "real"),
    ("strings", lambda: ALS().fit(np.array([["a", "b"]])), (TypeError, ValueError), r"\bX\b"),
    ("objects", lambda: ALS().fit(np.array([[None, 1]], dtype=object)), (TypeError, ValueError), r"\bX\b"),
    ("factors 0", lambda: ALS(factors=0).fit(_small()), ValueError, "factors"),
    ("factors float", lambda: ALS(factors=2.5).fit(_small()), TypeError, "factors"),
    ("int dtype", lambda: ALS(dtype=np.int32).fit(_small()), ValueError, "dtype"),
    ("unknown dtype", lambda: ALS(dtype="banana").fit(_small()), TypeError, "dtype"),
    ("solver", lambda: ALS(solver="lu").fit(_small()), ValueError, "solver"),
    ("negative regularization", lambda: ALS(regularization=-1.0).fit(_small()), ValueError, "regularization"),
    ("nan regularization", lambda: ALS(regularization=np.nan).fit(_small()), ValueError, "regularization"),
    ("negative alpha", lambda: ALS(alpha=-1.0).fit(_small()), ValueError, "alpha"),
    ("cg_steps 0", lambda: ALS(cg_steps=0).fit(_small()), ValueError, "cg_steps"),
    ("negative iterations", lambda: ALS(iterations=-1).fit(_small()), ValueError, "iterations"),
    ("negative threads", lambda: ALS(num_threads=-1).fit(_small()), ValueError, "num_threads"),
    ("scaling", lambda: ALS(regularization_scaling="sqrt").fit(_small()), ValueError, "regularization_scaling"),
    ("confidence", lambda: ALS(confidence="log").fit(_small()), ValueError, "confidence"),
    ("show_progress", lambda: ALS(show_progress="yes").fit(_small()), TypeError, "show_progress"),
]


@pytest.mark.parametrize("name, call, error, message", BAD_FITS, ids=[case[0] for case in BAD_FITS])
def test_bad_fit_input_raises_clear_error(name, call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.fixture(scope="module")
def fitted64():
    R = random_ratings(40, 30, 0.2, seed=23)
    model = ALS(factors=4, iterations=4, solver="cholesky", regularization=0.1, dtype=np.float64,
                random_state=0, num_threads=1).fit(R)
    return model, R


def test_bad_fold_in_and_partial_fit_input(fitted64):
    model, R = fitted64
    with pytest.raises(ValueError, match="NaN"):
        model.fold_in(sp.csr_matrix(np.full((1, 30), np.nan)))
    with pytest.raises(ValueError, match="columns"):
        model.fold_in(sp.csr_matrix((1, 29)))
    with pytest.raises(ValueError, match="items x users"):
        model.fold_in(sp.csr_matrix((30, 40)))
    with pytest.raises(ValueError, match="duplicates"):
        model.partial_fit_users([1, 1], sp.csr_matrix((2, 30)))
    with pytest.raises(ValueError, match="rows"):
        model.partial_fit_users([1, 2], sp.csr_matrix((1, 30)))
    with pytest.raises(IndexError, match="user_ids"):
        model.partial_fit_users([-1], sp.csr_matrix((1, 30)))
    with pytest.raises(ValueError):
        model.partial_fit_items([0], sp.csr_matrix((39, 1)))
    with pytest.raises(IndexError, match="item"):
        model.explain(0, 30)


def test_unfitted_model_raises_not_fitted():
    model = ALS()
    assert issubclass(fastrec.NotFittedError, (ValueError))
    assert not hasattr(model, "user_factors_")  # NotFittedError is an AttributeError too
    calls = [lambda: model.user_factors_, lambda: model.recommend(0), lambda: model.similar_items(0),
             lambda: model.predict(0, 0), lambda: model.rank(0, [0]), lambda: model.fold_in(np.ones((1, 2))),
             lambda: model.explain(0, 0), lambda: model.partial_fit_users([0], np.ones((1, 2)))]
    for call in calls:
        with pytest.raises(fastrec.NotFittedError, match="not fitted"):
            call()


# -------------------------------------------------- fold-in, partial fit, explain
def test_fold_in_float32_matches_exact_solve():
    R = random_ratings(40, 30, 0.2, seed=24)
    model = ALS(factors=4, iterations=3, regularization=0.1, random_state=0, num_threads=1).fit(R)
    V = model.item_factors_
    assert V.dtype == np.float32
    rows = random_ratings(6, 30, 0.3, seed=25)
    want = als_solve_rows(rows, V, row_regularization(rows, 0.1, "count"), model.alpha)
    assert rel_err(model.fold_in(rows), want) < 1e-4
    assert model.fold_in(sp.csr_matrix((0, 30))).shape == (0, 4)


def test_partial_fit_users_grows_and_replaces(fitted64):
    base, R = fitted64
    model = ALS(**base.get_params())
    model._state = base._state  # share the fitted state; partial_fit swaps in a new one
    # random rows plus one sure entry each, so no row is empty
    sure = sp.csr_matrix(([2.0, 1.0, 3.0], ([0, 1, 2], [3, 4, 5])), shape=(3, 30))
    new_rows = canonical(random_ratings(3, 30, 0.3, seed=26) + sure)
    ids = [5, 42, 44]  # one existing user, two new ones with a gap of ids 40, 41, 43
    old_U = base.user_factors_.copy()
    model.partial_fit_users(ids, new_rows)
    assert model.n_users_ == 45 and base.n_users_ == 40, "the old state must be left as it was"
    U = model.user_factors_
    want = als_solve_rows(new_rows, model.item_factors_, row_regularization(new_rows, 0.1, "count"), model.alpha)
    np.testing.assert_allclose(U[ids], want, rtol=1e-9, atol=1e-12)
    untouched = np.setdiff1d(np.arange(40), ids)
    assert np.array_equal(U[untouched], old_U[untouched])
    assert np.all(U[[40, 41, 43]] == 0)
    assert np.array_equal(model.item_factors_, base.item_factors_)
    seen = model.user_items_
    assert seen.shape == (45, 30)
    assert (seen[ids] != new_rows).nnz == 0
    assert (seen[untouched] != R[untouched]).nnz == 0
    assert seen[[40, 41, 43]].nnz == 0
    rec, _ = model.recommend(42, n=30)
    assert not set(rec.tolist()) & set(new_rows[1].indices.tolist())


def test_partial_fit_items_grows_and_replaces(fitted64):
    base, R = fitted64
    model = ALS(**base.get_params())
    model._state = base._state
    new_cols = canonical(random_ratings(40, 2, 0.5, seed=27)
                         + sp.csr_matrix(([1.0, 2.0], ([1, 2], [0, 1])), shape=(40, 2)))
    ids = [3, 31]  # existing item 3, new item 31 (30 is a gap)
    model.partial_fit_items(ids, new_cols)
    assert model.n_items_ == 32
    V = model.item_factors_
    items = new_cols.T.tocsr()
    want = als_solve_rows(items, model.user_factors_, row_regularization(items, 0.1, "count"), model.alpha)
    np.testing.assert_allclose(V[ids], want, rtol=1e-9, atol=1e-12)
    assert np.all(V[30] == 0)
    untouched = np.setdiff1d(np.arange(30), ids)
    assert np.array_equal(V[untouched], base.item_factors_[untouched])
    seen = model.user_items_.tocsc()
    assert seen.shape == (40, 32)
    assert (seen[:, ids] != new_cols).nnz == 0
    assert (seen[:, untouched] != R.tocsc()[:, untouched]).nnz == 0
    assert seen[:, 30].nnz == 0


@pytest.mark.parametrize("user, item", [(1, 0), (5, 7), (17, 29), (33, 12)])
def test_explain_contributions_sum_to_exact_score(fitted64, user, item):
    model, R = fitted64
    score, ids, contributions = model.explain(user, item, n=None)
    exact = model.fold_in(R[user])[0] @ model.item_factors_[item]
    assert score == pytest.approx(exact, rel=1e-9, abs=1e-12)
    assert contributions.sum() == pytest.approx(score, rel=1e-9, abs=1e-12)
    assert sorted(ids.tolist()) == sorted(R[user].indices.tolist())
    assert np.all(np.diff(contributions) <= 0)
    top_score, top_ids, top_contributions = model.explain(user, item, n=2)
    assert top_score == score
    assert np.array_equal(top_ids, ids[:2]) and np.array_equal(top_contributions, contributions[:2])
    other = random_ratings(1, 30, 0.5, seed=user)
    other = canonical(other + sp.csr_matrix(([1.0], ([0], [0])), shape=(1, 30)))
    score_x, _, contributions_x = model.explain(user, item, X=other, n=None)
    assert score_x == pytest.approx(model.fold_in(other)[0] @ model.item_factors_[item], rel=1e-9, abs=1e-12)
    assert contributions_x.sum() == pytest.approx(score_x, rel=1e-9, abs=1e-12)


def test_get_params_set_params_round_trip():
    model = ALS(factors=7, regularization=0.3, solver="cholesky", dtype=np.float64, random_state=3)
    params = model.get_params()
    assert set(params) == {"factors", "regularization", "alpha", "iterations", "solver", "cg_steps",
                           "regularization_scaling", "confidence", "unobserved_weight", "regularization_exp",
                           "dtype", "num_threads", "random_state", "show_progress"}
    clone = ALS(**params)
    assert clone.get_params() == params
    assert clone.set_params(factors=5, alpha=4.0) is clone
    assert clone.factors == 5 and clone.alpha == 4.0 and model.factors == 7
    with pytest.raises(ValueError, match="banana"):
        clone.set_params(banana=1)
    clone.set_params(iterations=1)
    assert clone.fit(_small()).user_factors_.shape == (10, 5)
    assert "factors=5" in repr(clone)


# ------------------------------------------------------------------- quality
def test_recommendations_beat_popularity_on_planted_low_rank():
    R = planted_low_rank(300, 200, 4, 20, seed=0)
    rng = np.random.default_rng(1)
    held = np.zeros(R.shape, dtype=bool)
    for u in range(R.shape[0]):
        held[u, rng.choice(R.indices[R.indptr[u]:R.indptr[u + 1]], 3, replace=False)] = True
    train = canonical(sp.csr_matrix(R.toarray() * ~held))

    model = ALS(factors=8, iterations=10, random_state=0, num_threads=2).fit(train)
    ids, _ = model.recommend(np.arange(R.shape[0]), n=10)
    recall_als = np.take_along_axis(held, ids, axis=1).sum() / held.sum()

    popularity = np.asarray((train != 0).sum(axis=0), dtype=np.float64).ravel()
    pop_scores = np.where(train.toarray() != 0, -np.inf, popularity[None, :])
    pop_ids = np.argsort(-pop_scores, axis=1, kind="stable")[:, :10]
    recall_pop = np.take_along_axis(held, pop_ids, axis=1).sum() / held.sum()

    assert recall_als > 2 * recall_pop and recall_als > recall_pop + 0.15, (recall_als, recall_pop)


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-11)])
def test_als_loss_kernel_is_the_same_with_two_threads(als_kernel, dtype, rtol):
    # Each stored entry has its own confidence and preference; when they were shared
    # between OpenMP threads (set only through pointers), a 2-thread loss was
    # sometimes computed with another entry's c/pref.
    R = random_ratings(3000, 400, 0.05, seed=21)
    R.data = np.random.default_rng(22).uniform(-3, 5, R.nnz)
    R.data[R.data == 0] = 1.0
    rng = np.random.default_rng(23)
    X = rng.standard_normal((3000, 8)).astype(dtype)
    Y = rng.standard_normal((400, 8)).astype(dtype)
    reg_rows = rng.random(3000).astype(dtype)
    reg_cols = rng.random(400).astype(dtype)
    args = (R.indptr.astype(np.int32), R.indices.astype(np.int32), R.data.astype(dtype), X, Y,
            np.ascontiguousarray(Y.T @ Y), reg_rows, reg_cols, dtype(1.5), False)
    want = als_objective_dense(R.toarray(), X, Y, reg_rows.astype(np.float64), reg_cols.astype(np.float64),
                               1.5, "hu")
    one = als_kernel.als_loss(*args, 1)
    assert one == pytest.approx(want, rel=rtol)
    for _ in range(30):
        assert als_kernel.als_loss(*args, 2) == pytest.approx(want, rel=rtol)
