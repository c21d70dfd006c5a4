"""Map raw ids (ints or strings) to contiguous indices and back, vectorised."""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ..utils.validation import integer_labels, whole_float_labels

__all__ = ["IdMap"]


def _as_label_array(labels: Any) -> np.ndarray:
    """Labels as int64 or fixed-width unicode: never object arrays (they need pickle).

    Integer labels are kept exactly: when one does not fit in int64 (uint64
    ids above ``2**63 - 1``, big Python ints) they all become decimal strings.
    """
    arr = np.asarray(labels)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.dtype.kind in "iu":
        return integer_labels(arr)
    if arr.dtype.kind == "b":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        return whole_float_labels(arr, "IdMap labels")
    if arr.dtype == object and arr.size and all(
            isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) for v in arr):
        return integer_labels(arr)
    return arr.astype(str)


class IdMap:
    """Raw ids <-> indices ``0..n-1``.

    Parameters
    ----------
    labels : array-like
        The raw id of each index; must be unique.
    """

    def __init__(self, labels: Any):
        self.labels = _as_label_array(labels)
        self.labels.flags.writeable = False
        self._order = np.argsort(self.labels, kind="stable")
        self._sorted = self.labels[self._order]
        if self._sorted.size > 1 and np.any(self._sorted[1:] == self._sorted[:-1]):
            raise ValueError("ids in an IdMap must be unique")

    @classmethod
    def from_raw(cls, raw: Any) -> tuple["IdMap", np.ndarray]:
        """Build a map from raw ids (repeats allowed) and return it with each entry's index.

        Indices follow the sorted order of the distinct ids.
        """
        arr = _as_label_array(raw)
        labels, inverse = np.unique(arr, return_inverse=True)
        return cls(labels), inverse.astype(np.int32).reshape(-1)

    def __len__(self) -> int:
        return int(self.labels.size)

    def __repr__(self) -> str:
        return f"IdMap({len(self)} ids, dtype={self.labels.dtype})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and np.array_equal(self.labels, other.labels)

    def to_index(self, raw: Any, unknown: str = "raise") -> np.ndarray | int:
        """Indices of raw ids.

        Parameters
        ----------
        raw : scalar or array-like of raw ids
        unknown : {"raise", "mask"}
            ``"raise"`` raises ``KeyError`` naming unknown ids; ``"mask"`` returns -1 for them.
        """
        scalar = np.ndim(raw) == 0
        query = np.atleast_1d(np.asarray(raw))
        whole = None  # mask of float queries that are whole numbers
        # Compare with the caller's values, not a cast of them: casting would
        # truncate 'bobby' to a 'bob' label or 1.7 to 1 and report a false match.
        if self.labels.dtype.kind == "i":
            if query.dtype.kind in "ib":
                arr = query.astype(np.int64)
            elif query.dtype.kind in "uf":
                # only whole numbers within int64 can match: a cast would wrap
                # uint64 2**64 - 1 to -1 or truncate 1.7 to 1
                whole = query <= np.iinfo(np.int64).max
                if query.dtype.kind == "f":
                    whole &= np.isfinite(query) & (query == np.round(query)) & (query >= -2.0 ** 63)
                    whole &= query < 2.0 ** 63
                arr = np.where(whole, query, 0).astype(np.int64)
            else:
                arr, whole = None, None
        else:
            arr = query.astype(str)
        if arr is None or self._sorted.size == 0:
            pos = np.zeros(query.shape, dtype=np.intp)
            found = np.zeros(query.shape, dtype=bool)
        else:
            pos = np.minimum(np.searchsorted(self._sorted, arr), self._sorted.size - 1)
            found = self._sorted[pos] == arr
            if whole is not None:
                found &= whole
        out = np.where(found, self._order[pos] if self._sorted.size else -1, -1).astype(np.int32)
        arr = query
        if not found.all():
            if unknown == "raise":
                missing = arr[~found]
                shown = ", ".join(map(repr, missing[:5].tolist()))
                more = f" and {missing.size - 5} more" if missing.size > 5 else ""
                raise KeyError(f"unknown id(s): {shown}{more}")
            if unknown != "mask":
                raise ValueError(f"unknown must be 'raise' or 'mask', got {unknown!r}")
        return int(out[0]) if scalar else out

    def to_ids(self, index: Any) -> np.ndarray:
        """Raw ids of indices (-1 entries, used as padding, are not allowed)."""
        idx = np.asarray(index)
        if idx.size and (idx.min() < 0 or idx.max() >= self.labels.size):
            raise IndexError(f"indices must be in [0, {self.labels.size})")
        out = self.labels[idx]
        return out
