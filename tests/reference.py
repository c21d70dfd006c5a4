"""Plain NumPy reference implementations the tests compare fastrec against.

Everything here favours obviousness over speed: dense float64 arithmetic,
explicit loops, no tricks shared with the code under test.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import scipy.sparse as sp

__all__ = [
    "confidence_preference",
    "row_regularization",
    "als_solve_rows",
    "als_objective_dense",
    "ease_closed_form",
    "seen_sets",
    "eligible_mask",
    "topk_reference",
    "assert_topk_valid",
    "cosine_scores",
    "planted_low_rank",
]


# ----------------------------------------------------------------------- ALS
def confidence_preference(r: np.ndarray, alpha: float, convention: str) -> tuple[np.ndarray, np.ndarray]:
    """Confidence c and preference p of stored values r (Hu et al.; negatives are thumbs down)."""
    r = np.asarray(r, dtype=np.float64)
    c = alpha * np.abs(r) + (1.0 if convention == "hu" else 0.0)
    p = (r > 0).astype(np.float64)
    return c, p


def row_regularization(R: sp.csr_matrix, lam: float, scaling: str) -> np.ndarray:
    """lambda * nnz(row) ("count") or lambda ("none") for every row of a canonical CSR."""
    if scaling == "count":
        return lam * np.diff(R.indptr).astype(np.float64)
    return np.full(R.shape[0], float(lam))


def als_solve_rows(R: sp.csr_matrix, Y: np.ndarray, reg: np.ndarray, alpha: float,
                   convention: str = "hu") -> np.ndarray:
    """Exact solution of every row's normal equations, one dense solve per row.

    (Y^T Y + reg_u I + sum_j (c_j - 1) y_j y_j^T) x_u = sum_j c_j p_j y_j;
    rows without stored values get x_u = 0.  ``R`` must be canonical CSR
    (duplicates summed, no explicit zeros).
    """
    Y = np.asarray(Y, dtype=np.float64)
    f = Y.shape[1]
    gram = Y.T @ Y
    X = np.zeros((R.shape[0], f))
    for u in range(R.shape[0]):
        lo, hi = R.indptr[u], R.indptr[u + 1]
        if lo == hi:
            continue
        cols = R.indices[lo:hi]
        c, p = confidence_preference(R.data[lo:hi], alpha, convention)
        Yu = Y[cols]
        A = gram + reg[u] * np.eye(f) + (Yu * (c - 1)[:, None]).T @ Yu
        X[u] = np.linalg.solve(A, Yu.T @ (c * p))
    return X


def als_objective_dense(R: np.ndarray, X: np.ndarray, Y: np.ndarray, reg_rows: np.ndarray,
                        reg_cols: np.ndarray, alpha: float, convention: str = "hu") -> float:
    """sum_{u,i} c_ui (p_ui - x_u.y_i)^2 + sum_u reg_u |x_u|^2 + sum_i reg_i |y_i|^2, densely.

    Zero entries of the dense ``R`` are unobserved (c = 1, p = 0).
    """
    R = np.asarray(R, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    c, p = confidence_preference(R, alpha, convention)
    observed = R != 0
    c = np.where(observed, c, 1.0)
    p = np.where(observed, p, 0.0)
    residual = p - X @ Y.T
    return float((c * residual ** 2).sum() + reg_rows @ (X ** 2).sum(1) + reg_cols @ (Y ** 2).sum(1))


# ---------------------------------------------------------------------- EASE
def ease_closed_form(X: np.ndarray, lam: float) -> np.ndarray:
    """B of Steck's closed form, float64: B = I - P diag(1/diag(P)), P = (X^T X + lam I)^-1."""
    P = np.linalg.inv(X.T @ X + lam * np.eye(X.shape[1]))
    B = -P / np.diag(P)[None, :]
    np.fill_diagonal(B, 0)
    return B


# --------------------------------------------------------------------- top-K
def seen_sets(seen: sp.spmatrix | Sequence[Iterable[int]] | None, m: int) -> list[set[int]]:
    """Per-query sets of item ids from a sparse matrix (stored entries) or lists."""
    if seen is None:
        return [set() for _ in range(m)]
    if sp.issparse(seen):
        csr = sp.csr_matrix(seen)
        return [set(csr.indices[csr.indptr[u]:csr.indptr[u + 1]].tolist()) for u in range(m)]
    return [set(int(i) for i in row) for row in seen]


def eligible_mask(m: int, n_items: int, seen: list[set[int]], exclude: Iterable[int] | None,
                  candidates: Iterable[int] | None) -> np.ndarray:
    """(m, n_items) boolean: which items each query may be recommended."""
    ok = np.ones((m, n_items), dtype=bool)
    if candidates is not None:
        ok[:] = False
        ok[:, np.asarray(list(candidates), dtype=np.int64)] = True
    if exclude is not None:
        ok[:, np.asarray(list(exclude), dtype=np.int64)] = False
    for u, items in enumerate(seen):
        if items:
            ok[u, np.fromiter(items, dtype=np.int64)] = False
    return ok


def topk_reference(Q: np.ndarray, Y: np.ndarray, bias: np.ndarray | None, n: int,
                   seen=None, exclude=None, candidates=None,
                   dtype=None) -> tuple[np.ndarray, np.ndarray]:
    """Full scores, masking, then a stable sort by (-score, id); pad with -1 / -inf.

    Returns (m, k) arrays with k = min(n, number of items ranked: all items,
    or the distinct candidates).  Scores are computed in float64 and cast to
    ``dtype`` (default: Y's), which is exact for small integer-valued inputs.
    """
    dtype = np.dtype(dtype or np.asarray(Y).dtype)
    Q = np.asarray(Q, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    m, n_items = Q.shape[0], Y.shape[0]
    scores = Q @ Y.T
    if bias is not None:
        scores = scores + np.asarray(bias, dtype=np.float64)[None, :]
    scores = scores.astype(dtype)
    pool = n_items if candidates is None else np.unique(np.asarray(list(candidates), dtype=np.int64)).size
    k = min(n, pool)
    ok = eligible_mask(m, n_items, seen_sets(seen, m), exclude, candidates)
    ids = np.full((m, k), -1, dtype=np.int32)
    out = np.full((m, k), -np.inf, dtype=dtype)
    item_ids = np.arange(n_items)
    for u in range(m):
        cand = item_ids[ok[u]]
        order = np.lexsort((cand, -scores[u, cand].astype(np.float64)))[:k]
        ids[u, :order.size] = cand[order]
        out[u, :order.size] = scores[u, cand[order]]
    return ids, out


def assert_topk_valid(ids: np.ndarray, scores: np.ndarray, full_scores: np.ndarray,
                      eligible: np.ndarray, k: int, atol: float) -> None:
    """Check a top-K answer against float64 ``full_scores`` when exact ties cannot be expected.

    Every row must hold min(k, eligible) distinct eligible ids, then -1/-inf
    padding; returned scores must match ``full_scores`` within ``atol``, be
    sorted descending (equal scores by ascending id), and no eligible item left
    out may beat the last one returned by more than ``atol``.
    """
    m = full_scores.shape[0]
    assert ids.shape == (m, k) and scores.shape == (m, k), (ids.shape, scores.shape, (m, k))
    assert ids.dtype == np.int32
    for u in range(m):
        n_ok = int(eligible[u].sum())
        n_valid = min(k, n_ok)
        got, got_s = ids[u, :n_valid], scores[u, :n_valid].astype(np.float64)
        assert np.all(ids[u, n_valid:] == -1), (u, ids[u])
        assert np.all(np.isneginf(scores[u, n_valid:])), (u, scores[u])
        assert np.all(got >= 0), (u, ids[u])
        assert np.unique(got).size == n_valid, (u, got)
        assert eligible[u, got].all(), (u, got[~eligible[u, got]])
        np.testing.assert_allclose(got_s, full_scores[u, got], rtol=0, atol=atol)
        if n_valid > 1:
            step = np.diff(got_s)
            assert np.all(step <= 0), (u, got_s)
            assert np.all(np.diff(got)[step == 0] > 0), (u, got, got_s)
        rest = eligible[u].copy()
        rest[got] = False
        if n_valid and rest.any():
            assert full_scores[u, rest].max() <= got_s[-1] + atol, (u, full_scores[u, rest].max(), got_s[-1])


def cosine_scores(F: np.ndarray) -> np.ndarray:
    """Cosine similarity between all rows (zero rows score 0)."""
    F = np.asarray(F, dtype=np.float64)
    norms = np.linalg.norm(F, axis=1, keepdims=True)
    N = F / np.where(norms > 0, norms, 1)
    return N @ N.T


# ----------------------------------------------------------------- test data
def planted_low_rank(n_users: int, n_items: int, rank: int, per_user: int,
                     seed: int = 0, sharpness: float = 2.0) -> sp.csr_matrix:
    """Binary users x items interactions sampled from a planted low-rank preference.

    Each user draws ``per_user`` distinct items with probability proportional
    to ``exp(sharpness * u.v)`` for unit-variance Gaussian factors, so the
    signal is personal, not popularity.
    """
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((n_users, rank)) / np.sqrt(rank)
    V = rng.standard_normal((n_items, rank))
    logits = sharpness * U @ V.T
    rows, cols = [], []
    for u in range(n_users):
        w = np.exp(logits[u] - logits[u].max())
        chosen = rng.choice(n_items, size=per_user, replace=False, p=w / w.sum())
        rows.append(np.full(per_user, u))
        cols.append(chosen)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    return sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(n_users, n_items))
