"""The ALS latency paths: the kernel-validated one-row fold-in, and CG's grouped short rows."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastrec
from reference import als_solve_rows, row_regularization

N_ITEMS = 80


@pytest.fixture(scope="module", params=[np.float32, np.float64], ids=["float32", "float64"])
def model(request):
    rng = np.random.default_rng(0)
    X = sp.random(120, N_ITEMS, density=0.15, format="csr", random_state=rng, dtype=np.float64)
    X.data = rng.integers(1, 4, X.nnz).astype(np.float64)
    return fastrec.ALS(factors=16, iterations=3, random_state=0, dtype=request.param).fit(X)


def one_row(cols, values, dtype=np.float32, n_items=N_ITEMS) -> sp.csr_matrix:
    row = sp.csr_matrix((np.asarray(values, dtype=dtype), np.asarray(cols, dtype=np.int32),
                         np.array([0, len(cols)])), shape=(1, n_items))
    return row


def exact(model, row: sp.csr_matrix) -> np.ndarray:
    canonical = sp.csr_matrix(row, dtype=np.float64, copy=True)
    canonical.sum_duplicates()
    canonical.eliminate_zeros()
    params = model.get_params()
    reg = row_regularization(canonical, params["regularization"], params["regularization_scaling"])
    return als_solve_rows(canonical, model.item_factors_, reg, params["alpha"], params["confidence"])


def test_fast_path_is_taken_and_exact(model):
    row = one_row([3, 10, 41], [1.0, 2.0, 1.0], model.item_factors_.dtype)
    plan_before = "fold_in_plan" in model._state.cache
    got = model.fold_in(row)
    assert "fold_in_plan" in model._state.cache or plan_before
    assert got.shape == (1, 16) and got.dtype == model.item_factors_.dtype
    rtol = 1e-4 if got.dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got, exact(model, row), rtol=rtol, atol=rtol)


def test_fast_and_general_paths_agree(model):
    dtype = model.item_factors_.dtype
    row = one_row([0, 5, 6, 70], [1.0, 3.0, 1.0, 2.0], dtype)
    fast = model.fold_in(row)
    general = model._solve_against(model._state, row, "items")  # the validated, batched path
    np.testing.assert_array_equal(fast, general)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cols=st.lists(st.integers(0, N_ITEMS - 1), max_size=12),
       values=st.lists(st.sampled_from([1.0, 2.0, 0.0, -1.0, 0.5]), min_size=12, max_size=12),
       index_dtype=st.sampled_from([np.int32, np.int64]), value_dtype=st.sampled_from([np.float32, np.float64]))
def test_any_row_matches_the_exact_solve(model, cols, values, index_dtype, value_dtype):
    """Unsorted, duplicate, zero and negative entries, other dtypes: the kernel hands them to the
    general path, which canonicalises them; either way the answer is the exact solve."""
    row = sp.csr_matrix((np.asarray(values[: len(cols)], dtype=value_dtype), np.asarray(cols, dtype=index_dtype),
                         np.array([0, len(cols)])), shape=(1, N_ITEMS))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got = model.fold_in(row)
    rtol = 2e-4 if model.item_factors_.dtype == np.float32 else 1e-9
    np.testing.assert_allclose(got, exact(model, row), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("bad, error", [
    (lambda: one_row([1, 2], [1.0, np.nan]), ValueError),
    (lambda: one_row([1, 2], [1.0, np.inf]), ValueError),
    (lambda: one_row([1, N_ITEMS], [1.0, 1.0]), (ValueError, IndexError)),
    (lambda: one_row([-1, 2], [1.0, 1.0]), (ValueError, IndexError)),
    (lambda: one_row([1, 2], [1.0, 1.0], n_items=N_ITEMS + 1), ValueError),
])
def test_bad_rows_still_raise(model, bad, error):
    with pytest.raises(error):
        model.fold_in(bad())


def test_kernel_declines_what_it_does_not_handle(model):
    kernel = fastrec.kernels.load_kernel("als")
    state = model._state
    model.fold_in(one_row([1], [1.0], state.item_factors.dtype))
    plan = state.cache["fold_in_plan"]
    dtype = state.item_factors.dtype
    other = np.float64 if dtype == np.float32 else np.float32
    good = (np.array([0, 2]), np.array([1, 5], np.int32), np.ones(2, dtype))
    assert kernel.fold_in_row(*good, *plan) is not None
    declined = [
        (np.array([0, 2]), np.array([5, 1], np.int32), np.ones(2, dtype)),      # unsorted
        (np.array([0, 2]), np.array([1, 1], np.int32), np.ones(2, dtype)),      # duplicate
        (np.array([0, 2]), np.array([1, 5], np.int32), np.array([1, 0], dtype)),  # explicit zero
        (np.array([0, 2]), np.array([1, 5], np.int64), np.ones(2, dtype)),      # index dtype
        (np.array([0, 2]), np.array([1, 5], np.int32), np.ones(2, other)),      # value dtype
        (np.array([0, 3]), np.array([1, 5], np.int32), np.ones(2, dtype)),      # indptr past the end
        (np.array([1, 2]), np.array([1, 5], np.int32), np.ones(2, dtype)),      # not one row
        ([0, 2], np.array([1, 5], np.int32), np.ones(2, dtype)),                # not arrays
    ]
    for arrays in declined:
        assert kernel.fold_in_row(*arrays, *plan) is None
    huge = np.finfo(dtype).max / 2  # a finite value whose confidence overflows: the solution is not finite
    assert kernel.fold_in_row(np.array([0, 2]), np.array([1, 5], np.int32), np.full(2, huge, dtype), *plan) is None


def test_partial_fit_of_an_overflowing_row_never_stores_a_non_finite_vector(model):
    """The one-user latency path declines a non-finite solution; the general path warns that the
    system is singular and keeps finite factors (no NaN ever reaches the model)."""
    dtype = model._state.item_factors.dtype
    row = one_row([1, 5], [np.finfo(dtype).max / 2] * 2, dtype)
    with pytest.warns(RuntimeWarning, match="singular"):
        model.partial_fit_users([0], row)
    assert np.isfinite(model.user_factors_[0]).all()


def test_grouped_cg_rows_match_single_rows(als_kernel):
    """CG solves runs of four short rows together; each must equal solving it alone."""
    rng = np.random.default_rng(5)
    for f in (16, 64, 100):
        R = sp.random(41, 60, density=0.2, format="csr", random_state=rng, dtype=np.float64)
        R.data[:] = 1.0
        Y = rng.standard_normal((60, f)).astype(np.float32) / 4
        gram = np.ascontiguousarray(Y.T @ Y)
        reg = np.full(41, 0.5, np.float32)
        X0 = (rng.standard_normal((41, f)) / 10).astype(np.float32)
        together = X0.copy()
        als_kernel.als_half_step(R.indptr.astype(np.int32), R.indices.astype(np.int32), R.data.astype(np.float32),
                                 together, Y, gram, reg, np.float32(2.0), False, 0, 3, 2)
        for u in range(41):
            alone = X0[u:u + 1].copy()
            row = R[u]
            als_kernel.als_half_step(row.indptr.astype(np.int32), row.indices.astype(np.int32),
                                     row.data.astype(np.float32), alone, Y, gram, reg[u:u + 1],
                                     np.float32(2.0), False, 0, 3, 1)
            np.testing.assert_array_equal(together[u], alone[0])
