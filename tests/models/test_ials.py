"""Rendle's iALS parameterisation of ALS (``unobserved_weight``, ``regularization_exp``).

The references here minimise the iALS objective directly, as a stacked
least-squares problem per row (``numpy.linalg.lstsq``), without the mapping
onto the Hu-form kernel that fastrec uses, so they check that mapping.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from fastrec import ALS

DTYPES = (np.float32, np.float64)
SOLVE_RTOL = {np.float32: 2e-4, np.float64: 1e-9}


def ratings(n_users: int = 40, n_items: int = 25, density: float = 0.25, seed: int = 0) -> sp.csr_matrix:
    """Canonical CSR with weights 1..5 and some thumbs down (-1, -2); user 0 and the last item empty."""
    rng = np.random.default_rng(seed)
    mask = rng.random((n_users, n_items)) < density
    mask[0, :] = False
    mask[:, -1] = False
    values = rng.choice([1.0, 2.0, 5.0, -1.0, -2.0], size=mask.shape, p=[0.5, 0.2, 0.1, 0.1, 0.1])
    csr = sp.csr_matrix(np.where(mask, values, 0.0))
    csr.sort_indices()
    return csr


def ials_rows_lstsq(R: sp.csr_matrix, H: np.ndarray, alpha0: float, lam: float, nu: float) -> np.ndarray:
    """argmin_w sum_{obs} (w.h_i - p_i)^2 + alpha0 sum_all (w.h_i)^2 + lam (n + alpha0 m)^nu |w|^2 per row.

    Written as min |A w - b|^2 with A stacking the observed rows, sqrt(alpha0) H
    and sqrt(penalty) I; rows without entries get 0.
    """
    H = np.asarray(H, dtype=np.float64)
    m, f = H.shape
    out = np.zeros((R.shape[0], f))
    for u in range(R.shape[0]):
        lo, hi = R.indptr[u], R.indptr[u + 1]
        if lo == hi:
            continue
        cols, vals = R.indices[lo:hi], R.data[lo:hi]
        penalty = lam * ((hi - lo) + alpha0 * m) ** nu
        A = np.vstack([H[cols], np.sqrt(alpha0) * H, np.sqrt(penalty) * np.eye(f)])
        b = np.concatenate([(vals > 0).astype(float), np.zeros(m + f)])
        out[u] = np.linalg.lstsq(A, b, rcond=None)[0]
    return out


def ials_objective(R: sp.csr_matrix, W: np.ndarray, H: np.ndarray, alpha0: float, lam: float, nu: float) -> float:
    """The iALS loss of Rendle et al., densely (sign of the stored value gives the target)."""
    D = R.toarray()
    W, H = np.asarray(W, np.float64), np.asarray(H, np.float64)
    Y = W @ H.T
    observed = D != 0
    fit = (((Y - (D > 0)) ** 2)[observed]).sum() + alpha0 * (Y ** 2).sum()
    n, m = D.shape
    user_pen = (observed.sum(axis=1) + alpha0 * m) ** nu
    item_pen = (observed.sum(axis=0) + alpha0 * n) ** nu
    return float(fit + lam * (user_pen @ (W ** 2).sum(axis=1) + item_pen @ (H ** 2).sum(axis=1)))


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(got, np.float64) - want) / max(np.linalg.norm(want), 1e-30))


def ials(dtype=np.float64, alpha0: float = 0.3, lam: float = 0.05, nu: float | None = 0.7, **kw) -> ALS:
    params = {"factors": 4, "iterations": 4, "solver": "cholesky", "random_state": 0, "num_threads": 1, **kw}
    return ALS(unobserved_weight=alpha0, regularization=lam, regularization_exp=nu, dtype=dtype, **params)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha0, lam, nu", [(0.3, 0.05, 0.7), (1.0, 0.01, 1.0), (0.05, 0.2, 0.0),
                                             (4.0, 0.003, 1.5)])
def test_fit_and_fold_in_are_exact_ials_row_solves(dtype, alpha0, lam, nu):
    R = ratings()
    model = ials(dtype, alpha0, lam, nu).fit(R)
    U, V = model.user_factors_, model.item_factors_
    assert U.dtype == dtype and V.dtype == dtype
    want_items = ials_rows_lstsq(R.T.tocsr(), U, alpha0, lam, nu)  # the last half-step
    assert rel_err(V, want_items) < SOLVE_RTOL[dtype]
    want_users = ials_rows_lstsq(R, V, alpha0, lam, nu)
    assert rel_err(model.fold_in(R), want_users) < SOLVE_RTOL[dtype]
    for u in (1, 7):  # the one-row latency path
        one = R[u].astype(dtype)
        assert rel_err(model.fold_in(one)[0], want_users[u]) < SOLVE_RTOL[dtype]
    assert np.all(U[0] == 0) and np.all(V[-1] == 0)


def test_default_exponent_is_one_and_cg_converges_to_the_same_fixed_point():
    R = ratings(seed=1)
    assert ials(nu=None).fit(R)._state.params["regularization_exp"] == 1.0
    exact = ials(nu=1.0).fit(R)
    want = ials_rows_lstsq(R, exact.item_factors_, 0.3, 0.05, 1.0)
    assert rel_err(ials(nu=None).fit(R).fold_in(R), want) < 1e-9
    cg = ALS(factors=4, iterations=4, solver="cg", cg_steps=4, unobserved_weight=0.3, regularization=0.05,
             dtype=np.float64, random_state=0, num_threads=1).fit(R)
    # with f CG steps per row each half-step is an exact solve (in exact arithmetic)
    assert rel_err(cg.item_factors_, exact.item_factors_) < 1e-6


@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_is_the_ials_objective_and_decreases(dtype):
    R = ratings(seed=2)
    alpha0, lam, nu = 0.5, 0.02, 0.8
    losses: list[float] = []
    model = ials(dtype, alpha0, lam, nu, iterations=6)
    model.fit(R, callback=lambda it, elapsed, loss: losses.append(loss))
    weight = R.nnz + alpha0 * R.shape[0] * R.shape[1]
    want = ials_objective(R, model.user_factors_, model.item_factors_, alpha0, lam, nu) / weight
    assert losses[-1] == pytest.approx(want, rel=1e-5 if dtype == np.float32 else 1e-10)
    assert all(b <= a * (1 + 1e-5) for a, b in zip(losses, losses[1:])), losses


def test_only_the_sign_of_a_value_counts():
    R = ratings(seed=3)
    scaled = R.copy()
    scaled.data *= 7.0
    signs = R.copy()
    signs.data = np.sign(signs.data)
    a, b, c = (ials().fit(X) for X in (R, scaled, signs))
    assert np.array_equal(a.user_factors_, c.user_factors_) and np.array_equal(a.item_factors_, c.item_factors_)
    assert np.array_equal(b.item_factors_, c.item_factors_)
    assert np.allclose(a.fold_in(scaled), a.fold_in(signs), rtol=0, atol=1e-12)
    assert np.allclose(a.fold_in(scaled[4]), a.fold_in(signs[4]), rtol=0, atol=1e-12)


def test_explain_and_partial_fit_follow_the_ials_solve():
    R = ratings(seed=4)
    model = ials().fit(R)
    folded = model.fold_in(R[5])[0]
    score, _, parts = model.explain(5, 3, n=None)
    assert score == pytest.approx(folded @ model.item_factors_[3], rel=1e-9, abs=1e-12)
    assert parts.sum() == pytest.approx(score, rel=1e-9, abs=1e-12)
    model.partial_fit_users([5], R[5])
    assert rel_err(model.user_factors_[5], ials_rows_lstsq(R[5], model.item_factors_, 0.3, 0.05, 0.7)[0]) < 1e-9
    items = R[:, [2]]
    model.partial_fit_items([2], items)
    want = ials_rows_lstsq(items.T.tocsr(), model.user_factors_, 0.3, 0.05, 0.7)[0]
    assert rel_err(model.item_factors_[2], want) < 1e-9


def test_save_load_keeps_the_parameterisation(tmp_path):
    R = ratings(seed=5)
    model = ials().fit(R)
    model.save(tmp_path / "m.npz")
    loaded = ALS.load(tmp_path / "m.npz")
    assert loaded.unobserved_weight == 0.3 and loaded.regularization_exp == 0.7
    assert np.allclose(loaded.fold_in(R), model.fold_in(R), rtol=0, atol=1e-12)


@pytest.mark.parametrize("params, error, match", [
    ({"unobserved_weight": 0.0}, ValueError, "unobserved_weight must be > 0"),
    ({"unobserved_weight": -1.0}, ValueError, "unobserved_weight"),
    ({"unobserved_weight": np.nan}, ValueError, "unobserved_weight must be finite"),
    ({"unobserved_weight": "0.1"}, TypeError, "unobserved_weight"),
    ({"unobserved_weight": 0.1, "regularization_exp": -0.5}, ValueError, "regularization_exp must be >= 0"),
    ({"unobserved_weight": 0.1, "regularization_exp": np.inf}, ValueError, "regularization_exp"),
    ({"regularization_exp": 1.0}, ValueError, "regularization_exp applies only with unobserved_weight"),
    ({"unobserved_weight": 0.1, "alpha": 5.0}, ValueError, "alpha=5.0 does not apply with unobserved_weight"),
    ({"unobserved_weight": 0.1, "confidence": "implicit"}, ValueError, "confidence='implicit' does not apply"),
    ({"unobserved_weight": 0.1, "regularization_scaling": "none"}, ValueError, "regularization_scaling"),
    ({"unobserved_weight": 0.1, "regularization_exp": 40.0}, ValueError, "regularization_exp=40.0.*overflows"),
    ({"unobserved_weight": 1e-12, "dtype": np.float32}, ValueError, "unobserved_weight=1e-12 is too small"),
])
def test_bad_parameters_name_the_argument(params, error, match):
    model = ALS(factors=2, iterations=1, num_threads=1, **params)
    with pytest.raises(error, match=match):
        model.fit(ratings(seed=6))
    assert model._state is None
