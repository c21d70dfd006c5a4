"""Synthetic implicit-feedback data with power-law activity and planted low-rank taste.

How it is made
--------------
* Item popularity follows a Zipf law, ``pop_i ~ rank_i ** -item_alpha``, over
  items in random order.
* User activity follows a Zipf law too, ``share_u ~ rank_u ** -user_alpha``;
  the counts are rounded so that they add up to exactly ``n_interactions``,
  with every user at least 1 (when ``n_interactions >= n_users``) and at most
  ``n_items``.
* Taste: users and items get Gaussian factors ``p_u``, ``q_i`` (``factors``
  dimensions); the affinity ``a_ui = p_u . q_i / sqrt(factors)`` has unit
  variance.
* Each user's items are drawn without replacement with probability roughly
  proportional to ``pop_i * exp(a_ui / temperature)``: a pool of candidates is
  drawn from the popularity law (alias method), then the top ``k_u`` of
  ``a_ui / temperature + log(multiplicity) + Gumbel noise`` are kept (the
  maximum of ``m`` standard Gumbels is a Gumbel shifted by ``log m``, so a
  candidate drawn ``m`` times counts ``m`` times).  Very active users (more
  than a quarter of the catalogue) are drawn exactly, with Gumbel top-k over
  every item.

Users are processed in parallel (Numba ``prange``, in chunks of users); each
user has its own SplitMix64 random stream, seeded from ``random_state``, so the
result does not depend on the thread count.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from ..utils.jit import njit, prange

from ..data.idmap import IdMap
from ..utils.validation import check_bool, check_dtype, check_float, check_int
from ..data.interactions import Interactions

__all__ = ["make_synthetic", "make_movielens20m_like"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11, _S32 = (np.uint64(s) for s in (30, 27, 31, 11, 32))
_LOW32 = np.uint64(0xFFFFFFFF)
_INV_2_53 = 1.0 / 9007199254740992.0
_INV_2_32 = 1.0 / 4294967296.0
_POOL_FACTOR = 3  # candidates drawn per wanted item
_EXACT_FRACTION = 0.25  # users wanting more than this share of the items are drawn exactly


@njit(inline="always")
def _next(state: np.uint64) -> tuple[np.uint64, np.uint64]:
    """SplitMix64: the new state and a 64-bit output."""
    state = state + _GOLDEN
    z = state
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return state, z ^ (z >> _S31)


@njit(inline="always")
def _uniform(state: np.uint64) -> tuple[np.uint64, float]:
    """A float in the open interval (0, 1)."""
    state, z = _next(state)
    return state, (float(z >> _S11) + 0.5) * _INV_2_53


@njit(inline="always")
def _gumbel(state: np.uint64) -> tuple[np.uint64, float]:
    state, u = _uniform(state)
    return state, -np.log(-np.log(u))


@njit(inline="always")
def _affinity(user_factors: np.ndarray, item_factors: np.ndarray, u: int, i: int) -> float:
    acc = 0.0
    for f in range(user_factors.shape[1]):
        acc += user_factors[u, f] * item_factors[i, f]
    return acc


@njit()
def _draw_exact(u, k, state, log_pop, user_factors, item_factors, inv_temp, out):
    n_items = log_pop.size
    keys = np.empty(n_items)
    for i in range(n_items):
        state, g = _gumbel(state)
        keys[i] = log_pop[i] + _affinity(user_factors, item_factors, u, i) * inv_temp + g
    chosen = np.argsort(keys)[n_items - k:]
    out[:] = np.sort(chosen).astype(np.int32)


@njit()
def _alias_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker/Vose alias table: O(1) draws from a discrete distribution."""
    n = weights.size
    scaled = weights * (n / weights.sum())
    prob = np.ones(n)
    alias = np.arange(n)
    small = np.empty(n, dtype=np.int64)
    large = np.empty(n, dtype=np.int64)
    n_small = n_large = 0
    for i in range(n):
        if scaled[i] < 1.0:
            small[n_small] = i
            n_small += 1
        else:
            large[n_large] = i
            n_large += 1
    while n_small > 0 and n_large > 0:
        n_small -= 1
        s = small[n_small]
        g = large[n_large - 1]
        prob[s] = scaled[s]
        alias[s] = g
        scaled[g] = scaled[g] + scaled[s] - 1.0
        if scaled[g] < 1.0:
            n_large -= 1
            small[n_small] = g
            n_small += 1
    return prob, alias  # leftovers keep prob 1 (rounding)


@njit()
def _draw_pool(u, k, state, prob, alias, user_factors, item_factors, inv_temp, multiplicity, out) -> bool:
    """Pool sampling; False when the pool had fewer than k distinct items.

    ``multiplicity`` is a zeroed scratch array of n_items, left zeroed.
    """
    n_items = prob.size
    m = _POOL_FACTOR * k + 8
    distinct = np.empty(m, dtype=np.int64)
    n = 0
    for _ in range(m):
        state, z = _next(state)
        column = np.int64(((z >> _S32) * np.uint64(n_items)) >> _S32)  # high bits: the column
        coin = float(z & _LOW32) * _INV_2_32  # low bits: the coin
        item = column if coin < prob[column] else alias[column]
        if multiplicity[item] == 0:
            distinct[n] = item
            n += 1
        multiplicity[item] += 1
    keys = np.empty(n)
    for j in range(n):
        item = distinct[j]
        state, g = _gumbel(state)
        keys[j] = (_affinity(user_factors, item_factors, u, item) * inv_temp
                   + np.log(multiplicity[item]) + g)
        multiplicity[item] = 0
    if n < k:
        return False
    chosen = np.argsort(keys)[n - k:]
    out[:] = np.sort(distinct[chosen]).astype(np.int32)
    return True


@njit(parallel=True)
def _sample_items(counts, indptr, seeds, popularity, user_factors, item_factors, inv_temp):
    items = np.empty(indptr[-1], dtype=np.int32)
    n_users, n_items = counts.size, popularity.size
    prob, alias = _alias_table(popularity)
    log_pop = np.log(popularity)
    # users in chunks so each chunk reuses one scratch array; many chunks balance the load
    n_chunks = min(n_users, 256)
    for chunk in prange(n_chunks):
        multiplicity = np.zeros(n_items, dtype=np.int32)
        for u in range(chunk * n_users // n_chunks, (chunk + 1) * n_users // n_chunks):
            k = counts[u]
            if k == 0:
                continue
            out = items[indptr[u]:indptr[u + 1]]
            state = seeds[u]
            if k > _EXACT_FRACTION * n_items or not _draw_pool(
                    u, k, state, prob, alias, user_factors, item_factors, inv_temp, multiplicity, out):
                # a different stream from the pool attempt: reseed by stepping once
                state, _ = _next(state ^ _GOLDEN)
                _draw_exact(u, k, state, log_pop, user_factors, item_factors, inv_temp, out)
    return items


def _zipf_shares(n: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf weights ``rank ** -alpha`` over ranks in random order, summing to 1."""
    shares = np.arange(1, n + 1, dtype=np.float64) ** -alpha
    shares /= shares.sum()
    return shares[rng.permutation(n)]


def allocate_counts(total: int, shares: np.ndarray, low: int, high: int) -> np.ndarray:
    """Integer counts in [low, high], roughly proportional to ``shares``, adding up to ``total``.

    Rounding and clipping leave a remainder; it is spread over the users still
    within bounds in proportion to their shares (largest remainders first),
    again until nothing is left.  Each round fills some users to a bound, so
    few rounds are needed.
    """
    n = shares.size
    if not low * n <= total <= high * n:
        raise ValueError(f"cannot split {total} interactions over {n} users with {low} to {high} each")
    counts = np.clip(np.floor(shares * total), low, high).astype(np.int64)
    while True:
        diff = total - int(counts.sum())
        if diff == 0:
            return counts
        capacity = high - counts if diff > 0 else counts - low
        weight = np.where(capacity > 0, shares, 0.0)
        if weight.sum() == 0:  # only zero shares have room left
            weight = (capacity > 0).astype(np.float64)
        target = weight / weight.sum() * abs(diff)
        step = np.floor(target).astype(np.int64)
        remainder = abs(diff) - int(step.sum())
        if remainder:
            fraction = np.where(capacity > step, target - step, -1.0)
            step[np.argsort(-fraction, kind="stable")[:remainder]] += 1
        counts += np.sign(diff) * np.minimum(step, capacity)


def make_synthetic(n_users: int, n_items: int, n_interactions: int, factors: int = 16,
                   user_alpha: float = 0.5, item_alpha: float = 0.9, temperature: float = 1.0,
                   random_state: Any = None, dtype: Any = np.float32,
                   as_csr: bool = False) -> Interactions | sp.csr_matrix:
    """Generate implicit feedback with realistic skew and low-rank structure.

    See the module docstring for the model.  Every user-item pair appears at
    most once and the number of interactions is exactly ``n_interactions``.

    Parameters
    ----------
    n_users, n_items, n_interactions : int
        ``n_interactions`` must be at most ``n_users * n_items``.
    factors : int
        Rank of the planted taste structure.
    user_alpha, item_alpha : float
        Zipf exponents of user activity and item popularity (0 = uniform).
        The defaults give a MovieLens-like spread: for the ML-20M shape the
        least active users have about 35 interactions, the most active about
        13,000.
    temperature : float
        Lower values make taste (the low-rank part) matter more than popularity.
    random_state : int, numpy Generator or None
        Same seed, same data, whatever the thread count.
    dtype : float32 or float64
        Dtype of the CSR values when ``as_csr=True``; ``Interactions`` always
        holds float32 weights (use ``to_csr(dtype)``).
    as_csr : bool
        Return a users x items CSR matrix instead of ``Interactions``.

    Returns
    -------
    Interactions (ids are the indices 0..n-1) or scipy.sparse.csr_matrix, all weights 1.
    """
    n_users = check_int(n_users, "n_users", minimum=1)
    n_items = check_int(n_items, "n_items", minimum=1)
    n_interactions = check_int(n_interactions, "n_interactions", minimum=0)
    if n_interactions > n_users * n_items:
        raise ValueError(f"n_interactions={n_interactions} exceeds n_users * n_items = {n_users * n_items}")
    factors = check_int(factors, "factors", minimum=1)
    user_alpha = check_float(user_alpha, "user_alpha", minimum=0)
    item_alpha = check_float(item_alpha, "item_alpha", minimum=0)
    temperature = check_float(temperature, "temperature", minimum=0, strict_minimum=True)
    dtype = check_dtype(dtype)
    as_csr = check_bool(as_csr, "as_csr")
    rng = np.random.default_rng(random_state)

    popularity = _zipf_shares(n_items, item_alpha, rng)
    low = 1 if n_interactions >= n_users else 0
    counts = allocate_counts(n_interactions, _zipf_shares(n_users, user_alpha, rng), low, n_items)
    user_factors = rng.standard_normal((n_users, factors)) / np.sqrt(factors)
    item_factors = rng.standard_normal((n_items, factors))
    seeds = rng.integers(0, np.iinfo(np.int64).max, size=n_users, dtype=np.int64).astype(np.uint64)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    items = _sample_items(counts, indptr, seeds, popularity, user_factors, item_factors,
                          1.0 / temperature)
    if as_csr:
        X = sp.csr_matrix((np.ones(n_interactions, dtype=dtype), items, indptr), shape=(n_users, n_items))
        X.has_sorted_indices = True
        return X
    users = np.repeat(np.arange(n_users, dtype=np.int32), counts)
    return Interactions(users, items, user_map=IdMap(np.arange(n_users)),
                        item_map=IdMap(np.arange(n_items)))


def make_movielens20m_like(random_state: Any = 0, **kwargs: Any) -> Interactions | sp.csr_matrix:
    """``make_synthetic`` shaped like MovieLens 20M's positives.

    138,493 users x 26,744 items x 10,000,000 interactions (about the half of
    ML-20M's 20M ratings that are 4 stars or more).  Other keyword arguments
    go to ``make_synthetic``.
    """
    return make_synthetic(138_493, 26_744, 10_000_000, random_state=random_state, **kwargs)
