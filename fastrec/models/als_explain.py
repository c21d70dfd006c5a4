"""ALS's ``explain``: Hu et al.'s (2008, section 5) split of a score into the user's items."""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from .ials import kernel_form, kernel_values

__all__ = ["hu_contributions"]


def hu_contributions(item_factors: np.ndarray, row: sp.csr_matrix, item: int, params: Any, lam: float,
                     given: bool) -> tuple[np.ndarray, np.ndarray]:
    """(the row's items j, their terms ``s_ij c_j p_j``) with ``s_ij = y_i^T W_u y_j``.

    ``W_u`` is the inverse of the user's regularised, confidence-weighted Gram
    matrix; ``lam`` the row's penalty; ``given`` whether the row came as X (for the error).
    """
    Y = item_factors.astype(np.float64)
    liked = row.indices
    form = kernel_form(params)
    r = kernel_values(row, form).data.astype(np.float64)
    conf = form.alpha * np.abs(r) + (0.0 if form.implicit else 1.0)
    pref = (r > 0).astype(np.float64) * form.scale  # iALS: the kernel's solve times 1/(1 + alpha0)
    Yu = Y[liked]
    A = Y.T @ Y + lam * np.eye(Y.shape[1]) + (Yu * (conf - 1)[:, None]).T @ Yu
    try:
        w = np.linalg.solve(A, Y[item])
    except np.linalg.LinAlgError:
        what = "X" if given else "the user's stored interactions"
        raise ValueError(f"explain: {what} give a singular system (values too large or no "
                         "regularization); the score cannot be split into contributions") from None
    return liked, (Yu @ w) * conf * pref
