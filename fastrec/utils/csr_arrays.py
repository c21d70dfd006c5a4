"""``CSRArrays``, apart from the input checks: code that only reads CSR arrays (a Dask worker's
half-step) imports it without SciPy.  ``fastrec.utils.validation`` re-exports it."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["CSRArrays"]


class CSRArrays(NamedTuple):
    """The arrays of a validated CSR matrix, for kernels that only read them."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    shape: tuple[int, int]

    @property
    def nnz(self) -> int:
        return int(self.data.size)
