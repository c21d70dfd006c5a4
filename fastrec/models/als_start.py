"""Where an ALS fit starts (the checked input's confidences, the initial factors) and its half-step
without the estimator: what a Dask worker runs (``fastrec.distributed``), importing neither SciPy nor
the models."""
from __future__ import annotations

import warnings
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import scipy.sparse as sp

from ..kernels import load_kernel
from ..utils.threads import blas_single_thread
from .ials import is_ials, kernel_form

__all__ = ["initial_factors", "gram", "half_step", "loss_weight"]

SOLVERS = {"cg": 0, "cholesky": 1}


def _check_confidence(Cui: sp.csr_matrix, params: dict[str, Any]) -> None:
    """Reject values whose confidence the solver cannot represent (it would overflow to NaN)."""
    if not Cui.nnz:
        return
    form = kernel_form(params)
    largest = (1.0 if form.binary else float(np.abs(Cui.data).max())) * form.alpha
    limit = float(np.finfo(params["dtype"]).max) ** 0.25  # c, c^2 and sums of them stay finite
    if largest > limit and form.binary:
        raise ValueError(f"unobserved_weight={params['unobserved_weight']:.3g} is too small: the solver's "
                         f"confidence 1 / unobserved_weight reaches {largest:.3g}, beyond what "
                         f"{np.dtype(params['dtype']).name} ALS can solve ({limit:.3g})")
    if largest > limit:
        raise ValueError(f"X holds values up to {largest / max(params['alpha'], 1e-300):.3g}, so "
                         f"alpha * |value| reaches {largest:.3g}, beyond what {np.dtype(params['dtype']).name} "
                         f"ALS can solve ({limit:.3g}); scale X down (log1p, binarize) or lower alpha")


def initial_factors(n_users: int, n_items: int, factors: int, dtype: Any, random_state: Any
                    ) -> tuple[np.ndarray, np.ndarray]:
    """ALS's starting factors: small normal draws, the users' first, then the items'.

    Drawn in float32 (no float64 temporary adding to peak memory), and the
    same draws whatever the dtype, so float32 and float64 fits agree;
    ``fastrec.distributed.DaskALS`` starts from the same draws.

    Returns
    -------
    user_factors, item_factors : ndarray of ``dtype``, (n_users, factors) and (n_items, factors)
    """
    rng = np.random.default_rng(random_state)
    user_factors = rng.standard_normal((n_users, factors), dtype=np.float32).astype(dtype, copy=False)
    user_factors *= 0.01
    item_factors = rng.standard_normal((n_items, factors), dtype=np.float32).astype(dtype, copy=False)
    item_factors *= 0.01
    return user_factors, item_factors


def gram(factors: np.ndarray) -> np.ndarray:
    """``factors.T @ factors`` (as ``ALS._gram``).

    One BLAS thread: a multithreaded OpenBLAS keeps its workers spinning
    after the call, stealing the cores the OpenMP half-step needs next.
    """
    with blas_single_thread(scipy_blas=False):  # NumPy's BLAS: no SciPy on a worker
        return np.ascontiguousarray(factors.T @ factors)


def half_step(csr: Any, X: np.ndarray, Y: np.ndarray, reg: np.ndarray, params: dict[str, Any], solver: str,
              threads: int, YtY: np.ndarray, max_row_length: int) -> int:
    """Solve every row of ``csr`` (CSR arrays) into ``X``, ``Y`` fixed: ``ALS._half_step``'s kernel call.

    Returns the number of singular rows (warned about as ALS does).
    """
    kernel = load_kernel("als")
    form = kernel_form(params)
    if form.scale != 1.0:  # iALS: the kernel solves for (1 + alpha0) times the factors
        X *= X.dtype.type(1.0 / form.scale)
    uses_blas = solver == "cholesky" and max_row_length > kernel.SMALL_ROW_LIMIT
    with blas_single_thread() if uses_blas else nullcontext():  # loads SciPy's BLAS, the kernel's SYRK
        failures = kernel.als_half_step(
            csr.indptr, csr.indices, csr.data, X, Y, YtY, reg, X.dtype.type(form.alpha), form.implicit,
            SOLVERS[solver], params["cg_steps"], threads)
    if form.scale != 1.0:
        X *= X.dtype.type(form.scale)
    if failures:
        warnings.warn(f"ALS: {failures} of {X.shape[0]} row systems were singular and left "
                      "unsolved; use regularization > 0", RuntimeWarning, stacklevel=3)
    return failures


def loss_weight(nnz: int, data: np.ndarray, shape: tuple[int, int], params: dict[str, Any]) -> float:
    """The sum of every pair's confidence (unobserved pairs count 1): the loss's denominator."""
    if is_ials(params):
        return nnz + params["unobserved_weight"] * shape[0] * shape[1]
    chunk = 1 << 20  # summed in chunks: no temporary as big as the data
    absolute = sum(float(np.abs(data[i:i + chunk], dtype=np.float64).sum()) for i in range(0, nnz, chunk))
    observed = params["alpha"] * absolute + (nnz if params["confidence"] == "hu" else 0)
    return observed + shape[0] * shape[1] - nnz
