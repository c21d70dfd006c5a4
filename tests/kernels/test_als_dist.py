"""item_sums (ext/_als_dist.pyx): one block of users' part of the item CG sums, against NumPy."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from fastrec.kernels import load_kernel


def item_sums(indptr, indices, data, X, V, out, item_lo, alpha, implicit, residual, threads):
    """The kernel with its work space."""
    space = max(int(indptr[-1]), 1)
    load_kernel("als_dist").item_sums(indptr, indices, data, X, V, out, item_lo, alpha, implicit, residual, threads,
                                      np.empty(space, np.int32), np.empty(space, X.dtype))


def test_item_sums_on_constant_values_equal_the_general_path():
    rng = np.random.default_rng(1)
    X = sp.random(80, 500, density=0.05, format="csr", random_state=3, dtype=np.float32)
    X.data[:] = 1.0
    X.indices = X.indices.astype(np.int32)
    U = rng.standard_normal((80, 64)).astype(np.float32)
    V = rng.standard_normal((300, 64)).astype(np.float32)
    kernel = load_kernel("als_dist")
    for residual in (True, False):
        outs = []
        for constant in (False, True):
            out = np.zeros_like(V)
            kernel.item_sums(X.indptr, X.indices, X.data, U, V, out, 100, np.float32(1.0), False, residual, 1,
                             np.empty(X.nnz, np.int32), np.empty(X.nnz if not constant else 1, np.float32), constant)
            outs.append(out)
        np.testing.assert_array_equal(outs[0], outs[1])
        np.testing.assert_allclose(outs[0], reference(X, U, V, 100, 1.0, False, residual), rtol=1e-3, atol=1e-3)


def reference(X: sp.csr_matrix, U: np.ndarray, V: np.ndarray, item_lo: int, alpha: float, implicit: bool,
              residual: bool) -> np.ndarray:
    out = np.zeros(V.shape, dtype=np.float64)
    coo = X.tocoo()
    for u, i, r in zip(coo.row, coo.col, coo.data):
        if not item_lo <= i < item_lo + V.shape[0]:
            continue
        c = alpha * abs(r) if implicit else 1 + alpha * abs(r)
        d = float(np.dot(U[u].astype(np.float64), V[i - item_lo]))
        w = (1 - c) * d + (c if r > 0 else 0.0) if residual else (c - 1) * d
        out[i - item_lo] += w * U[u]
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("threads", [1, 3])
def test_item_sums_equal_numpy(dtype, implicit, residual, threads):
    rng = np.random.default_rng(4)
    X = sp.random(50, 70, density=0.15, format="csr", random_state=5, dtype=np.float64)
    X.data = np.round(X.data * 4) - 1.5  # negative values ("thumbs down"), no zeros
    X.indices = X.indices.astype(np.int32)
    X.data = X.data.astype(dtype)
    U = rng.standard_normal((50, 6)).astype(dtype)
    item_lo, n = 20, 35  # a range in the middle: the entries of other items are skipped
    V = rng.standard_normal((n, 6)).astype(dtype)
    start = rng.standard_normal((n, 6)).astype(dtype)
    out = start.copy()
    item_sums(X.indptr.astype(np.int64), X.indices, X.data, U, V, out, item_lo,
                                      dtype(0.7), implicit, residual, threads)
    expected = start + reference(X, U, V, item_lo, 0.7, implicit, residual)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out, expected, **tol)
    assert np.abs(expected - start).max() > 0.1  # the range holds entries


def test_item_sums_order_does_not_depend_on_threads():
    rng = np.random.default_rng(0)
    X = sp.random(300, 2500, density=0.05, format="csr", random_state=1, dtype=np.float32)
    X.indices = X.indices.astype(np.int32)
    U = rng.standard_normal((300, 64)).astype(np.float32)  # 64 factors: ranges of 1,024 items, split over threads
    V = rng.standard_normal((2500, 64)).astype(np.float32)
    outs = []
    for threads in (1, 2, 4):
        out = np.zeros_like(V)
        item_sums(X.indptr, X.indices, X.data, U, V, out, 0, np.float32(1.0), False, False, threads)
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_item_sums_check_shapes():
    X = sp.random(5, 4, density=0.5, format="csr", random_state=0, dtype=np.float32)
    U = np.zeros((5, 3), np.float32)
    with pytest.raises(ValueError, match="shapes"):
        item_sums(X.indptr, X.indices, X.data, U, np.zeros((4, 2), np.float32), np.zeros((4, 3), np.float32), 0,
                  np.float32(1), False, True, 1)
    with pytest.raises(ValueError, match="indptr"):
        item_sums(X.indptr[:-1], X.indices, X.data, U, np.zeros((4, 3), np.float32), np.zeros((4, 3), np.float32),
                  0, np.float32(1), False, True, 1)
    with pytest.raises(ValueError, match="users and values"):
        load_kernel("als_dist").item_sums(X.indptr, X.indices, X.data, U, np.zeros((4, 3), np.float32),
                                          np.zeros((4, 3), np.float32), 0, np.float32(1), False, True, 1,
                                          np.empty(1, np.int32), np.empty(1, np.float32))


def test_item_sums_never_write_outside_the_range_on_unsorted_rows():
    """Callers pass canonical (sorted) rows; an unsorted row still only adds to the items in range."""
    indptr, indices = np.array([0, 4], dtype=np.int64), np.array([5, 1, 6, 0], dtype=np.int32)
    data = np.ones(4, dtype=np.float32)
    U = np.ones((1, 3), np.float32)
    out = np.zeros((3, 3), np.float32)
    item_sums(indptr, indices, data, U, np.zeros((3, 3), np.float32), out, 4,
                                      np.float32(1), False, True, 1)
    assert set(np.unique(out).tolist()) <= {0.0, 2.0}  # c = 2, p = 1 for the items in range it finds


@pytest.mark.parametrize("threads", [1, 2])
def test_item_sums_with_64_factors_and_many_items(threads):
    """Rows of 64 factors (the four-rows-at-a-time path of weighted_gram_apply) over 3,000 items."""
    rng = np.random.default_rng(9)
    X = sp.random(120, 3000, density=0.02, format="csr", random_state=2, dtype=np.float64)
    X.data = np.round(X.data * 4) + 1
    X.indices = X.indices.astype(np.int32)
    X.data = X.data.astype(np.float32)
    U = rng.standard_normal((120, 64)).astype(np.float32)
    V = rng.standard_normal((2990, 64)).astype(np.float32)
    out = np.zeros_like(V)
    item_sums(X.indptr, X.indices, X.data, U, V, out, 10, np.float32(0.5), False, True,
                                      threads)
    np.testing.assert_allclose(out, reference(X, U, V, 10, 0.5, False, True), rtol=1e-3, atol=1e-3)
