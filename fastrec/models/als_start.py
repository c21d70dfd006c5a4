"""Where an ALS fit starts: the checked input's confidences and the initial factors."""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from .ials import kernel_form

__all__ = ["initial_factors"]


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
