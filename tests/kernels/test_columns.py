"""The item half-step's CSC slices (`fastrec/_columns.py`, transpose kernels in `ext/_als.pyx`),
and fit's no-copy handling of canonical CSR input."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastrec
from fastrec.kernels import als_columns as _columns
from fastrec.kernels.als_columns import ColumnSlices
from fastrec.utils.validation import check_interactions


def random_csr(n_rows: int, n_cols: int, density: float, seed: int, dtype=np.float32) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    X = sp.random(n_rows, n_cols, density=density, format="csr", random_state=rng, dtype=np.float64)
    X.data = rng.integers(1, 6, X.nnz).astype(dtype)
    X = X.astype(dtype)
    X.indices = X.indices.astype(np.int32)
    X.sort_indices()
    return X


def collect(slices: ColumnSlices) -> list[tuple[int, int, sp.csr_matrix]]:
    """Copies of every slice (the iterator reuses its buffers)."""
    out = []
    for lo, hi, arrays in slices:
        out.append((lo, hi, sp.csr_matrix((arrays.data.copy(), arrays.indices.copy(), arrays.indptr.copy()),
                                          shape=arrays.shape)))
    return out


def assert_same_csr(got: sp.csr_matrix, expected: sp.csr_matrix) -> None:
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got.indptr, expected.indptr)
    np.testing.assert_array_equal(got.indices, expected.indices)
    np.testing.assert_array_equal(got.data, expected.data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_rows=st.integers(1, 40), n_cols=st.integers(1, 30), density=st.floats(0, 1),
       budget=st.integers(1, 4000), threads=st.sampled_from([1, 2, 3]), seed=st.integers(0, 10 ** 6),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_slices_are_the_transpose(n_rows, n_cols, density, budget, threads, seed, dtype):
    X = random_csr(n_rows, n_cols, density, seed, dtype)
    slices = ColumnSlices(X, budget, threads)
    expected = X.T.tocsr()
    expected.sort_indices()
    got = collect(slices)
    assert [lo for lo, _, _ in got] == list(slices.bounds[:-1])
    assert got[0][0] == 0 and got[-1][1] == n_cols
    for (_, hi, _), (lo, _, _) in zip(got, got[1:]):
        assert hi == lo  # slices tile the columns
    for lo, hi, part in got:
        assert_same_csr(part, expected[lo:hi])
    np.testing.assert_array_equal(slices.column_counts, np.diff(expected.indptr))
    # a second sweep (the next ALS iteration) gives the same slices
    for (lo, hi, part), (lo2, hi2, part2) in zip(got, collect(slices)):
        assert (lo, hi) == (lo2, hi2)
        assert_same_csr(part2, part)


def test_budget_sets_the_number_of_slices():
    X = random_csr(200, 100, 0.2, 0)
    entry = 8  # int32 index + float32 value
    assert ColumnSlices(X, X.nnz * entry, 2).n_slices == 1
    four = ColumnSlices(X, X.nnz * entry // 4, 2)
    assert four.n_slices == 4
    sizes = [part.nnz for _, _, part in collect(four)]
    assert max(sizes) <= 1.5 * X.nnz / 4  # about equal slices


def test_empty_rows_and_columns():
    X = sp.csr_matrix((5, 7), dtype=np.float32)
    X.indices = X.indices.astype(np.int32)
    got = collect(ColumnSlices(X, 1, 2))
    assert len(got) == 1 and got[0][2].shape == (7, 5) and got[0][2].nnz == 0


def test_slice_budget_grows_with_the_problem():
    assert _columns.slice_budget(0, 0) == 32 * 2 ** 20
    assert _columns.slice_budget(400 * 2 ** 20, 0) == 100 * 2 ** 20


@pytest.mark.parametrize("solver", ["cg", "cholesky"])
def test_fit_with_many_slices_matches_one_slice(monkeypatch, solver):
    X = random_csr(300, 120, 0.08, 3)
    kwargs = dict(factors=8, iterations=3, solver=solver, random_state=0, num_threads=2)
    whole = fastrec.ALS(**kwargs).fit(X)
    monkeypatch.setattr("fastrec.models.als.slice_budget", lambda *_: 64)
    sliced = fastrec.ALS(**kwargs).fit(X)
    np.testing.assert_allclose(sliced.item_factors_, whole.item_factors_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sliced.user_factors_, whole.user_factors_, rtol=1e-5, atol=1e-6)


def test_fit_keeps_a_read_only_view_of_canonical_input():
    X = random_csr(50, 30, 0.2, 4)
    before = (X.data.copy(), X.indices.copy(), X.indptr.copy())
    model = fastrec.ALS(factors=4, iterations=2, random_state=0).fit(X)
    seen = model.user_items_
    assert np.shares_memory(seen.indices, X.indices)  # no copy of the input
    assert not seen.data.flags.writeable
    assert X.data.flags.writeable and X.indices.flags.writeable  # the caller's arrays are untouched
    for got, expected in zip((X.data, X.indices, X.indptr), before):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("make", [
    lambda X: X.astype(np.float64),                    # another dtype
    lambda X: X.tocoo(),                               # another format
    lambda X: sp.csr_matrix((X.data[::-1].copy(), X.indices[::-1].copy(), X.indptr), shape=X.shape),
])
def test_non_canonical_input_is_copied(make):
    X = make(random_csr(20, 10, 0.3, 5))
    csr = check_interactions(X, dtype=np.float32, copy=False)
    assert not np.shares_memory(csr.data, getattr(X, "data"))
    assert csr.has_canonical_format


def test_explicit_zeros_are_not_reused():
    X = random_csr(20, 10, 0.3, 6)
    X.data[0] = 0
    csr = check_interactions(X, dtype=np.float32, copy=False)
    assert csr.nnz == X.nnz - 1


@pytest.mark.parametrize("indptr", [[0, 2, 1, 3], [1, 2, 3, 3], [0, 1, 2, 9]])
def test_malformed_indptr_is_rejected(indptr):
    X = sp.csr_matrix((3, 4), dtype=np.float32)
    X.data = np.ones(3, np.float32)
    X.indices = np.array([0, 1, 2], np.int32)
    X.indptr = np.array(indptr, np.int32)
    with pytest.raises(ValueError, match="malformed CSR"):
        check_interactions(X, copy=False)
    with pytest.raises(ValueError, match="malformed CSR"):
        fastrec.ALS(factors=2, iterations=1).fit(X)
