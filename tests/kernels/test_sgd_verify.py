"""Negative verification in the SGD kernel: the positives filter and the exact search behind it."""
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings, strategies as st

from fastrec.models.bpr import _rank_weights


def random_rows(rng, n_users, n_items, longest):
    lengths = rng.integers(0, min(longest, n_items) + 1, n_users)
    rows = [np.sort(rng.choice(n_items, size=k, replace=False)).astype(np.int32) for k in lengths]
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    indices = np.concatenate(rows + [np.empty(0, dtype=np.int32)]).astype(np.int32)
    return rows, indptr, indices


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n_users=st.integers(1, 40), n_items=st.integers(1, 2000), longest=st.integers(0, 2000),
       seed=st.integers(0, 2**32 - 1))
def test_positives_mask_matches_set_membership(sgd_kernel, n_users, n_items, longest, seed):
    rng = np.random.default_rng(seed)
    rows, indptr, indices = random_rows(rng, n_users, n_items, longest)
    users = rng.integers(0, n_users, 3000).astype(np.int32)
    items = rng.integers(0, n_items, 3000).astype(np.int32)
    # half the queries are positives, so both answers are exercised
    for j in range(0, 3000, 2):
        if rows[users[j]].size:
            items[j] = rng.choice(rows[users[j]])
    expected = np.array([items[j] in set(rows[users[j]].tolist()) for j in range(users.size)])
    np.testing.assert_array_equal(sgd_kernel.positives_mask(indptr, indices, users, items), expected)
    np.testing.assert_array_equal(sgd_kernel.positives_mask(indptr, indices, users, items, False),
                                  expected)


def test_filter_rules_out_most_non_positives(sgd_kernel):
    rng = np.random.default_rng(3)
    _, indptr, indices = random_rows(rng, 300, 5000, 1000)
    users = np.repeat(np.arange(300, dtype=np.int32), np.diff(indptr))
    words = sgd_kernel.positives_filter(indptr, indices, users)
    assert words.dtype == np.uint64 and words.size == (indices.size * 16 + 63) // 64
    # 16 bits per positive, 3 set by each: about 1 - exp(-3 / 16) = 17% of the bits are ones
    ones = np.unpackbits(words.view(np.uint8)).sum()
    assert 0.1 * words.size * 64 < ones < 0.25 * words.size * 64


def epoch_args(X, f, seed, loss):
    rng = np.random.default_rng(seed)
    indptr = X.indptr.astype(np.int64)
    indices = X.indices.astype(np.int32)
    users = np.repeat(np.arange(X.shape[0], dtype=np.int32), np.diff(indptr))
    U = (0.1 * rng.standard_normal((X.shape[0], f))).astype(np.float32)
    V = (0.1 * rng.standard_normal((X.shape[1], f))).astype(np.float32)
    b = np.zeros(X.shape[1], dtype=np.float32)
    empty = np.empty((0, f), dtype=np.float32)
    return [loss, indptr, indices, users, np.empty(0, np.float32), U, V, b, empty, empty,
            np.empty(0, np.float32), _rank_weights(X.shape[1], np.float32), np.float32(0.05),
            np.float32(0.01), 20_000, 10, True, True, np.array([11], dtype=np.uint64), 1]


@pytest.mark.parametrize("loss", [0, 1])
def test_epoch_with_filter_is_the_epoch_without(sgd_kernel, loss):
    """The filter only skips searches: same draws, same steps, same factors (one thread)."""
    X = sp.random(200, 400, density=0.3, format="csr", random_state=5, dtype=np.float32)
    X.data[:] = 1
    X.sort_indices()
    plain, filtered = epoch_args(X, 16, 0, loss), epoch_args(X, 16, 0, loss)
    words = sgd_kernel.positives_filter(filtered[1], filtered[2], filtered[3])
    counts = sgd_kernel.sgd_epoch(*plain)
    assert sgd_kernel.sgd_epoch(*filtered, positive_filter=words) == counts
    assert counts[1] > 10_000
    for a, b in zip(plain[5:8], filtered[5:8]):
        np.testing.assert_array_equal(a, b)


def test_filter_of_other_positives_is_refused(sgd_kernel):
    X = sp.random(50, 80, density=0.3, format="csr", random_state=1, dtype=np.float32)
    args = epoch_args(X, 8, 0, 0)
    with pytest.raises(ValueError, match="positive_filter"):
        sgd_kernel.sgd_epoch(*args, positive_filter=np.zeros(3, dtype=np.uint64))
    with pytest.raises(ValueError, match="users"):
        sgd_kernel.positives_mask(args[1], args[2], np.array([50], np.int32), np.array([0], np.int32))
