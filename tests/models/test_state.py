"""FittedState's partial-update helpers against plain SciPy references."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from fastrec.models.state import FittedState, replace_rows


def _reference(matrix: sp.csr_matrix, ids: np.ndarray, rows: sp.csr_matrix, n_rows: int) -> np.ndarray:
    dense = np.zeros((n_rows, matrix.shape[1]), dtype=matrix.dtype)
    dense[: matrix.shape[0]] = matrix.toarray()
    dense[ids] = rows.toarray()
    return dense


@settings(max_examples=80, deadline=None)
@given(n_old=st.integers(0, 8), n_cols=st.integers(1, 6), extra=st.integers(0, 4), seed=st.integers(0, 10**6),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_replace_rows_matches_reference(n_old, n_cols, extra, seed, dtype):
    rng = np.random.default_rng(seed)
    matrix = sp.csr_matrix(rng.random((n_old, n_cols)) * (rng.random((n_old, n_cols)) < 0.5), dtype=dtype)
    n_rows = n_old + extra
    ids = rng.permutation(n_rows)[: rng.integers(0, n_rows + 1)] if n_rows else np.zeros(0, dtype=np.int64)
    rows = sp.csr_matrix(rng.random((ids.size, n_cols)) * (rng.random((ids.size, n_cols)) < 0.5), dtype=dtype)
    rows = rows[:, rng.permutation(n_cols)].tocsr()  # unsorted indices within rows are sorted on the way
    got = replace_rows(matrix, ids.astype(np.int32), rows, n_rows)
    np.testing.assert_array_equal(got.toarray(), _reference(matrix, ids, rows, n_rows))
    assert got.indices.dtype == np.int32 and got.has_canonical_format
    assert got.dtype == matrix.dtype


def test_partial_update_keeps_the_other_sides_caches():
    rng = np.random.default_rng(0)
    seen = sp.csr_matrix((rng.random((6, 5)) < 0.5).astype(np.float32))
    state = FittedState(rng.random((6, 3), dtype=np.float32), rng.random((5, 3), dtype=np.float32), seen)
    index = state.ranking_index()
    state.normalized("users")
    new = state.with_rows("users", np.array([2], dtype=np.int32), np.ones((1, 3), np.float32),
                          sp.csr_matrix(np.array([[1, 0, 0, 0, 1]], np.float32)), None)
    assert new.ranking_index() is index  # items unchanged: no rebuild
    assert "normalized_users" not in new.cache  # the users changed
    np.testing.assert_array_equal(new.user_factors[2], 1)
    np.testing.assert_array_equal(new.user_items[2].indices, [0, 4])
    items = state.with_rows("items", np.array([1], dtype=np.int32), np.zeros((1, 3), np.float32),
                            sp.csr_matrix(np.ones((1, 6), np.float32)), None)
    patched = items.cache["ranking_index"]  # patched for the changed item, not rebuilt, not shared
    assert patched is not index
    np.testing.assert_array_equal(patched.factors[patched.positions()[1]], 0)
    np.testing.assert_array_equal(patched.factors[patched.positions()], items.item_factors)
    np.testing.assert_array_equal(index.factors[index.positions()], state.item_factors)  # the old one unchanged
    np.testing.assert_array_equal(items.user_items[:, 1].toarray().ravel(), np.ones(6))
