"""Rendle's iALS parameterisation, solved exactly by the Hu-form ALS kernel.

Rendle, Krichene, Zhang and Koren, "Revisiting the Performance of iALS on Item
Recommendation Benchmarks" (2021) write implicit ALS as

    L(W, H) = sum_{(u,i) in S} (y_ui - 1)^2 + alpha0 sum_{u,i} y_ui^2
              + lambda sum_u (n_u + alpha0 m)^nu |w_u|^2
              + lambda sum_i (n_i + alpha0 n)^nu |h_i|^2

with ``y_ui = w_u . h_i``, S the observed pairs, n_u (n_i) the observed pairs
of a user (item), n users and m items: every pair is pulled towards 0 with
weight ``alpha0`` (``unobserved_weight``), observed pairs towards 1 with
weight 1, and a row's penalty grows with its total weight to the power ``nu``
(``regularization_exp``).  fastrec also keeps negative values as "thumbs
down": an observed pair with a negative value is pulled towards 0 instead of
1.  Only the sign of a stored value counts (S is a set).

The kernel (``ext/_als.pyx``) solves, per row, the Hu et al. normal equations

    (H^T H + rho I + a sum_{i in S_u} h_i h_i^T) x = (1 + a) sum_{i in S_u+} h_i

(confidence ``c = 1 + a`` for |r| = 1, Gram weight 1, target 1).  The iALS
row system is

    (alpha0 H^T H + sum_{i in S_u} h_i h_i^T + lambda p_u I) w = sum_{i in S_u+} h_i,

``p_u = (n_u + alpha0 m)^nu``.  Dividing it by alpha0 gives the kernel's
left-hand side with ``a = 1 / alpha0`` and ``rho = lambda p_u / alpha0``, and
the kernel's right-hand side is ``(1 + a) / a = 1 + alpha0`` times the iALS
one, so the kernel returns ``x = (1 + alpha0) w``: the iALS solve is the
kernel's, scaled by ``t = 1 / (1 + alpha0)``.  The same holds for the item
side, so fits, partial fits and fold-in run the unchanged kernel on the
model's own factors.

Seen globally, the same mapping reads: dividing L by alpha0 turns each
observed term into ``c (y - t)^2`` plus a constant, with ``c = 1 + 1/alpha0``
and target ``t = 1/(1 + alpha0)``; the substitution ``W = sqrt(t) W'``,
``H = sqrt(t) H'`` turns that into the Hu objective in ``W', H'`` with target
1, ``alpha = 1/alpha0`` and penalties ``lambda (1 + alpha0) / alpha0 * p``.
fastrec keeps W and H (the iALS minimisers, whose dot products are the iALS
predictions) and applies the factor ``t`` per solve instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import scipy.sparse as sp

# SciPy and the input checks are imported where used: a Dask worker's half-step imports this module
# without them (fastrec/distributed/_tasks.py)

__all__ = ["KernelForm", "FoldInIALS", "check_ials_params", "ials_loss", "is_ials", "kernel_form",
           "kernel_values", "row_penalty"]


@dataclass(frozen=True)
class KernelForm:
    """What the ALS kernel is called with for a model's hyperparameters.

    ``alpha`` and ``implicit`` are the kernel's confidence scale and
    convention; every solved row is multiplied by ``scale``; with ``binary``
    stored values count by their sign only.
    """

    alpha: float
    implicit: bool
    scale: float
    binary: bool


def is_ials(params: dict[str, Any]) -> bool:
    """Whether checked ALS hyperparameters select Rendle's iALS parameterisation."""
    return params.get("unobserved_weight") is not None


def check_ials_params(unobserved_weight: Any, regularization_exp: Any, params: dict[str, Any]
                      ) -> dict[str, Any]:
    """Checked ``unobserved_weight`` and ``regularization_exp`` (nu defaults to 1 under iALS).

    ``params`` are ALS's other checked hyperparameters: under iALS, ``alpha``,
    ``confidence`` and ``regularization_scaling`` must keep their defaults,
    which iALS replaces.
    """
    from ..utils.validation import check_float

    if unobserved_weight is None:
        if regularization_exp is not None:
            raise ValueError("regularization_exp applies only with unobserved_weight (Rendle's iALS); "
                             f"got regularization_exp={regularization_exp!r} and no unobserved_weight")
        return {"unobserved_weight": None, "regularization_exp": None}
    alpha0 = check_float(unobserved_weight, "unobserved_weight", minimum=0.0, strict_minimum=True)
    nu = 1.0 if regularization_exp is None else check_float(regularization_exp, "regularization_exp",
                                                             minimum=0.0)
    for name, default in (("alpha", 1.0), ("confidence", "hu"), ("regularization_scaling", "count")):
        if params[name] != default:
            raise ValueError(f"{name}={params[name]!r} does not apply with unobserved_weight (iALS weighs "
                             f"observed pairs 1 and every pair unobserved_weight); leave {name} at "
                             f"{default!r}")
    return {"unobserved_weight": alpha0, "regularization_exp": nu}


def kernel_form(params: dict[str, Any]) -> KernelForm:
    """The kernel's arguments for checked ALS hyperparameters (see the module docstring)."""
    if is_ials(params):
        alpha0 = params["unobserved_weight"]
        return KernelForm(1.0 / alpha0, False, 1.0 / (1.0 + alpha0), True)
    return KernelForm(params["alpha"], params["confidence"] == "implicit", 1.0, False)


def row_penalty(counts: np.ndarray, n_other: int, params: dict[str, Any]) -> np.ndarray:
    """Each row's regularisation as the kernel takes it, given its stored entries.

    ``lambda`` (``regularization_scaling="none"``), ``lambda * n`` (``"count"``)
    or, for iALS, ``lambda / alpha0 * (n + alpha0 * n_other) ** nu``.

    Raises
    ------
    ValueError
        The iALS penalty overflows the model's dtype.
    """
    lam, dtype = params["regularization"], params["dtype"]
    counts = np.asarray(counts, dtype=np.float64)
    if is_ials(params):
        alpha0, nu = params["unobserved_weight"], params["regularization_exp"]
        penalty = lam / alpha0 * (counts + alpha0 * n_other) ** nu
        with np.errstate(over="ignore"):
            out = penalty.astype(dtype)
        if not np.isfinite(out).all():
            raise ValueError(f"regularization_exp={nu}: the penalty regularization * (n + unobserved_weight "
                             f"* {n_other}) ** regularization_exp overflows {np.dtype(dtype).name}; use a "
                             "smaller regularization_exp")
        return out
    if params["regularization_scaling"] == "count":
        return (lam * counts).astype(dtype)
    return np.full(counts.shape[0], lam, dtype=dtype)


def kernel_values(rows: Any, form: KernelForm) -> Any:
    """``rows`` (CSR, or ``CSRArrays``) with the values the kernel reads: their signs for iALS.

    The index arrays are shared, not copied; ``rows`` is returned as it is
    when its values already are +-1 or the form reads magnitudes.
    """
    if not form.binary or np.all(np.abs(rows.data) == 1):
        return rows
    signs = np.sign(rows.data)
    if isinstance(rows, tuple):  # CSRArrays
        return rows._replace(data=signs)
    import scipy.sparse as sp

    out = sp.csr_matrix((signs, rows.indices, rows.indptr), shape=rows.shape, copy=False)
    out.has_sorted_indices = rows.has_sorted_indices
    return out


def ials_loss(kernel: Any, Cui: sp.csr_matrix, X: np.ndarray, Y: np.ndarray, reg_users: np.ndarray,
              reg_items: np.ndarray, params: dict[str, Any], threads: int, gram: np.ndarray | None = None
              ) -> float:
    """The iALS objective L(W, H) (module docstring), from the kernel's Hu-form loss.

    ``Cui`` holds sign values (``kernel_values``) and ``reg_*`` are the
    kernel's row penalties (``row_penalty``).  With ``t = 1/(1+alpha0)``:
    ``L = alpha0 t^2 Hu(W / t, H; reg_users, reg_items / t^2) + n_pos (1 - t)``
    where Hu is the kernel's objective with ``alpha = 1/alpha0`` and n_pos
    counts the positive entries.  ``gram`` is ``Y.T @ Y`` when the caller has
    it (a block of rows whose ``Y`` holds only the columns they use).  Every
    term is a sum over rows (with zero ``reg_items``), so blocks of rows add up.
    """
    alpha0 = params["unobserved_weight"]
    t = 1.0 / (1.0 + alpha0)
    scaled = np.ascontiguousarray(X / X.dtype.type(t))
    if gram is None:
        gram = np.ascontiguousarray(Y.T @ Y)
    total = kernel.als_loss(Cui.indptr, Cui.indices, Cui.data, scaled, Y, gram, reg_users,
                            (reg_items / reg_items.dtype.type(t * t)).astype(reg_items.dtype),
                            X.dtype.type(1.0 / alpha0), False, threads)
    positives = int(np.count_nonzero(Cui.data > 0))
    return float(alpha0 * t * t * total + positives * (1.0 - t))


class FoldInIALS:
    """One row's iALS factors by the kernel's latency path (``fold_in_row``): the model's constants,
    derived once per item side and kept in the state's cache (``"fold_in_plan_ials"``).

    Called with a row's CSR arrays, it returns the factors (1 x f) or None.
    The row's values count by sign, its penalty is ``row_penalty`` for its
    length (the kernel declines rows that are not canonical, so that length is
    the one the general path would use; each length's penalty is computed once,
    by the same function, so it is the same number), and the solve is scaled
    back by ``t``.
    """

    __slots__ = ("item_factors", "gram", "params", "form", "penalties")

    def __init__(self, item_factors: np.ndarray, gram: np.ndarray, params: dict[str, Any]) -> None:
        self.item_factors, self.gram, self.params = item_factors, gram, params
        self.form = kernel_form(params)
        self.penalties: dict[int, float] = {}  # row length -> penalty, for rows the kernel solved

    def __call__(self, kernel: Any, indptr: Any, indices: Any, data: Any) -> np.ndarray | None:
        if type(data) is not np.ndarray or data.dtype.kind != "f":
            return None
        n = data.size
        reg = self.penalties.get(n)
        if reg is None:
            reg = float(row_penalty(np.array([n]), self.item_factors.shape[0], self.params)[0])
        factors = kernel.fold_in_row(indptr, indices, np.sign(data), self.item_factors, self.gram, 0.0, reg,
                                     self.form.alpha, False)
        if factors is not None:
            self.penalties[n] = reg  # lengths the kernel takes: at most its row limit, so few
            factors *= factors.dtype.type(self.form.scale)
        return factors
