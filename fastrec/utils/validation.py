"""Every input check, in one place.

Errors name the argument and say what was expected.  Checks never modify the
caller's data: conversions always produce new arrays.
"""
from __future__ import annotations

import numbers
import os
from typing import Any, Iterable

import numpy as np
import scipy.sparse as sp

from .csr_arrays import CSRArrays

__all__ = [
    "check_dtype",
    "check_int",
    "check_float",
    "check_choice",
    "check_bool",
    "check_num_threads",
    "check_interactions",
    "check_ids",
    "check_n",
    "check_raw_ids",
    "integer_labels",
    "whole_float_labels",
    "check_values",
    "check_timestamps",
    "check_columns",
    "check_selector",
    "check_path",
    "check_random_state",
    "check_callback",
    "check_scalar_id",
    "check_rows",
    "compressed_structure_problem",
    "CSRArrays",
    "CSR_TYPES",
    "INT32_MAX",
]

INT32_MAX = np.iinfo(np.int32).max


def check_dtype(dtype: Any, name: str = "dtype") -> np.dtype:
    """Return float32 or float64, or raise for anything else."""
    if dtype is None:
        raise TypeError(f"{name} must be float32 or float64, got None")
    try:
        resolved = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{name} must be float32 or float64, got {dtype!r}") from exc
    if resolved not in (np.float32, np.float64):
        raise ValueError(f"{name} must be float32 or float64, got {resolved}")
    return resolved


def check_int(value: Any, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (not bool) within [minimum, maximum]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_float(value: Any, name: str, minimum: float | None = None,
                maximum: float | None = None, strict_minimum: bool = False) -> float:
    """A finite real number within the bounds (``strict_minimum`` excludes the minimum)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None:
        if strict_minimum and value <= minimum:
            raise ValueError(f"{name} must be > {minimum}, got {value}")
        if not strict_minimum and value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_num_threads(value: Any, name: str = "num_threads") -> int:
    """0 (all usable CPUs) or a positive thread count."""
    return check_int(value, name, minimum=0, maximum=1024)


def _as_array(value: Any, name: str) -> np.ndarray:
    """``np.asarray`` whose errors (ragged nested lists, odd objects) name the argument."""
    try:
        return np.asarray(value)
    except ValueError as exc:
        raise ValueError(f"{name} cannot be converted to an array: {exc}") from exc
    except TypeError as exc:
        raise TypeError(f"{name} cannot be converted to an array: {exc}") from exc


def _dense_to_csr(arr: np.ndarray, name: str) -> sp.csr_matrix:
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")  # before scipy's own error
    return sp.csr_matrix(arr)


def _as_sparse(X: Any, name: str) -> sp.spmatrix:
    if hasattr(X, "to_csr") and callable(X.to_csr) and not sp.issparse(X):
        X = X.to_csr()  # fastrec.Interactions and look-alikes
    if sp.issparse(X):
        return X
    if isinstance(X, np.ndarray) or isinstance(X, (list, tuple)):
        arr = _as_array(X, name)
        if arr.ndim != 2:
            raise ValueError(f"{name} must be a 2-D users x items matrix, got {arr.ndim}-D input")
        return _dense_to_csr(arr, name)
    raise TypeError(
        f"{name} must be a scipy.sparse matrix (users x items), a 2-D array or "
        f"fastrec.Interactions; got {type(X).__name__}"
    )


def check_interactions(X: Any, name: str = "X", dtype: Any = np.float32,
                       shape: tuple[int | None, int | None] | None = None,
                       allow_empty: bool = False, copy: bool = True) -> sp.csr_matrix:
    """Validate a users x items interaction matrix and return it as a canonical CSR.

    The result has sorted column indices, duplicates summed, explicit zeros
    removed, int32 indices and values of ``dtype``.  The caller's matrix is
    never modified.

    Parameters
    ----------
    shape : optional expected (n_rows, n_cols); None entries are not checked.
        When the shape is the transpose of the expected one, the error says so.
    allow_empty : accept a matrix with zero rows (used by fold-in calls).
    copy : when False and ``X`` is already such a CSR, return a new matrix
        over read-only views of its arrays instead of a copy (``fit`` on a big
        input); otherwise always copy.
    """
    dtype = check_dtype(dtype)
    X = _as_sparse(X, name)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got {X.ndim}-D")
    n_rows, n_cols = X.shape
    if not allow_empty and (n_rows == 0 or n_cols == 0):
        raise ValueError(f"{name} has zero size {X.shape}; it needs at least one user and one item")
    if n_rows > INT32_MAX or n_cols > INT32_MAX:
        raise ValueError(f"{name} has shape {X.shape}; fastrec supports at most {INT32_MAX} users and items")
    if shape is not None:
        exp_rows, exp_cols = shape
        if exp_cols is not None and n_cols != exp_cols:
            hint = ""
            if exp_rows is not None and (n_rows, n_cols) == (exp_cols, exp_rows):
                hint = " It looks transposed: fastrec expects users x items."
            elif n_rows == exp_cols:
                hint = " Its rows match the item count: is it items x users? fastrec expects users x items."
            raise ValueError(f"{name} has {n_cols} columns but the model has {exp_cols} items.{hint}")
        if exp_rows is not None and n_rows != exp_rows:
            raise ValueError(f"{name} has {n_rows} rows but {exp_rows} were expected")
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_):
        raise TypeError(f"{name} must hold numbers, got dtype {X.dtype}")
    if np.issubdtype(X.dtype, np.complexfloating):
        raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}")

    if not copy and reusable_csr(X, dtype):
        return _read_only_view(X)
    _check_compressed_structure(X, name)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow shows up as inf, reported below
        csr = sp.csr_matrix(X, dtype=dtype, copy=True)
    if csr.data.size and not np.isfinite(csr.data).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    csr.sum_duplicates()  # also sorts indices
    csr.eliminate_zeros()
    if csr.indices.dtype != np.int32:
        csr.indices = csr.indices.astype(np.int32)
    if csr.indptr.dtype not in (np.int32, np.int64):
        csr.indptr = csr.indptr.astype(np.int64)
    return csr


def check_ids(ids: Any, n: int, name: str, allow_scalar: bool = True) -> tuple[np.ndarray, bool]:
    """Validate integer ids in [0, n); return (int32 1-D array, was_scalar)."""
    arr = _as_array(ids, name)
    scalar = arr.ndim == 0
    if scalar and not allow_scalar:
        raise ValueError(f"{name} must be a 1-D array of ids")
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        if arr.dtype.kind == "f" and arr.size and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            pass  # integral floats are accepted
        else:
            raise TypeError(f"{name} must be integer indices, got dtype {arr.dtype}")
    if arr.ndim > 1:
        raise ValueError(f"{name} must be a scalar or 1-D array of ids, got shape {arr.shape}")
    arr = arr.reshape(-1)
    if arr.size:
        lo, hi = arr.min(), arr.max()
        if lo < 0:
            raise IndexError(f"{name} contains negative id {int(lo)}; ids must be in [0, {n})")
        if hi >= n:
            raise IndexError(f"{name} contains id {int(hi)} but only {n} exist; ids must be in [0, {n})")
    return arr.astype(np.int32, copy=False), scalar


def check_n(n: Any, name: str = "n") -> int:
    return check_int(n, name, minimum=0, maximum=INT32_MAX)


def check_path(path: Any, name: str = "path") -> str:
    """A filesystem path given as ``str`` or ``os.PathLike[str]``, returned as ``str``."""
    try:
        resolved = os.fspath(path)
    except TypeError as exc:
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}") from exc
    if not isinstance(resolved, str):
        raise TypeError(f"{name} must be a text path (str or os.PathLike[str]), got {type(resolved).__name__}")
    if not resolved:
        raise ValueError(f"{name} must not be empty")
    return resolved


def _missing_mask(arr: np.ndarray) -> np.ndarray:
    """True where an object or float array holds None or NaN."""
    if arr.dtype == object:
        return np.asarray(arr == None) | np.asarray(arr != arr)  # noqa: E711 (elementwise)
    if arr.dtype.kind == "f":
        return np.isnan(arr)
    return np.zeros(arr.shape, dtype=bool)


def _describe_bad(mask: np.ndarray) -> str:
    bad = np.flatnonzero(mask)
    return f"{bad.size} of them, first at position {int(bad[0])}"


_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1


def integer_labels(values: np.ndarray) -> np.ndarray:
    """Integer ids, exactly: int64 when every one fits, else all as decimal strings.

    ``values`` is an integer array (any width, signed or not) or an object
    array of Python integers.  Ids are never wrapped (uint64 ``2**64 - 1`` is
    not -1): when one does not fit in int64 the whole column becomes text,
    ``"18446744073709551615"``, so every id keeps its value.
    """
    arr = np.asarray(values)
    if arr.dtype.kind == "i":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "u":
        if not arr.size or int(arr.max()) <= _INT64_MAX:
            return arr.astype(np.int64)
        return np.array([str(v) for v in arr.tolist()], dtype=str)
    as_ints = [int(v) for v in arr.tolist()]
    if all(_INT64_MIN <= v <= _INT64_MAX for v in as_ints):
        return np.array(as_ints, dtype=np.int64)
    return np.array([str(v) for v in as_ints], dtype=str)


def whole_float_labels(arr: np.ndarray, name: str) -> np.ndarray:
    """Float ids as int64: they must be whole numbers within the int64 range."""
    if not np.all(np.isfinite(arr) & (arr == np.round(arr))):
        raise ValueError(f"{name} holds float ids that are not whole numbers")
    if arr.size and (arr.min() < _INT64_MIN or arr.max() >= 2.0 ** 63):
        raise ValueError(f"{name} holds float ids beyond the int64 range, which floats cannot hold "
                         "exactly; pass them as integers or strings")
    return arr.astype(np.int64)


def check_raw_ids(values: Any, name: str, n: int | None = None) -> np.ndarray:
    """Raw ids (ints or strings) as a 1-D int64 or unicode array without missing values.

    Object arrays holding only integers and integer arrays become int64 when
    every id fits, else decimal strings (see ``integer_labels``: ids are kept
    exactly, never wrapped); other object arrays become strings; whole-number
    floats become int64.  Conversions copy; the caller's array is never modified.
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if n is not None and arr.size != n:
        raise ValueError(f"{name} has {arr.size} entries but {n} were expected (lengths must match)")
    missing = _missing_mask(arr)
    if missing.any():
        raise ValueError(f"{name} contains missing ids (None or NaN): {_describe_bad(missing)}")
    if arr.dtype == object:
        if all(isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) for v in arr):
            return integer_labels(arr)
        return arr.astype(str)
    if arr.dtype.kind == "f":
        return whole_float_labels(arr, name)
    if arr.dtype.kind in "iu":
        return integer_labels(arr)
    if arr.dtype.kind in "US":
        return arr.astype(str, copy=False)
    raise TypeError(f"{name} must hold integer or string ids, got dtype {arr.dtype}")


def check_values(values: Any, name: str, n: int) -> np.ndarray:
    """``n`` finite real numbers as a 1-D float64 array (a copy unless already float64)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size != n:
        raise ValueError(f"{name} has {arr.size} entries but {n} were expected (lengths must match)")
    if arr.dtype.kind not in "biuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}") from exc
    arr = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{name} contains NaN or infinite values: {_describe_bad(bad)}")
    return arr


def check_timestamps(values: Any, name: str, n: int) -> np.ndarray:
    """Timestamps as float64; datetime64 values become seconds since the epoch."""
    arr = np.asarray(values)
    if arr.dtype.kind == "M":
        nat = np.isnat(arr)
        if nat.any():
            raise ValueError(f"{name} contains missing times (NaT): {_describe_bad(nat)}")
        arr = arr.astype("datetime64[ns]").astype(np.int64) / 1e9
    return check_values(arr, name, n)


def check_columns(available: Iterable[Any], wanted: dict[str, Any], source: str) -> None:
    """Raise ``KeyError`` naming every wanted column that ``available`` lacks.

    ``wanted`` maps argument names (``"user_col"``) to column names; None
    values are optional columns that were not asked for.
    """
    have = list(available)
    missing = [repr(col) if arg == str(col) else f"{arg}={col!r}"
               for arg, col in wanted.items() if col is not None and col not in have]
    if missing:
        raise KeyError(f"{source} has no column(s) {', '.join(missing)}; its columns are {have}")


def check_selector(selector: Any, n: int, name: str = "selector") -> np.ndarray:
    """A new boolean mask of length ``n`` from a mask or integer positions in [0, n)."""
    arr = np.asarray(selector)
    if arr.dtype == np.bool_:
        if arr.shape != (n,):
            raise ValueError(f"{name} is a boolean mask of shape {arr.shape}; expected ({n},)")
        return arr.copy()
    positions, _ = check_ids(arr, n, name)
    mask = np.zeros(n, dtype=bool)
    mask[positions] = True
    return mask


def check_random_state(value: Any, name: str = "random_state") -> Any:
    """None, a non-negative integer seed, or a ``numpy.random.Generator``."""
    if value is None or isinstance(value, np.random.Generator):
        return value
    return check_int(value, name, minimum=0)


def check_callback(value: Any, name: str = "callback") -> Any:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable(iteration, elapsed, loss) or None, got {value!r}")
    return value


def check_scalar_id(value: Any, n: int, name: str) -> int:
    """One integer id in [0, n)."""
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a single {name} id, got an array of shape {np.shape(value)}")
    ids, _ = check_ids(value, n, name)
    return int(ids[0])


def check_rows(X: Any, name: str, dtype: np.dtype, n_cols: int) -> CSRArrays:
    """Validated read-only CSR arrays of ``X`` (rows x n_cols), copying only when needed.

    A canonical CSR the kernels can read as it is (see ``reusable_csr``) is
    used without conversion (the latency of a one-user fold-in is mostly scipy
    conversion otherwise); anything else goes through ``check_interactions``.
    """
    if reusable_csr(X, dtype, n_cols):
        return CSRArrays(X.indptr, X.indices, X.data, X.shape)
    csr = check_interactions(X, name, dtype=dtype, shape=(None, n_cols), allow_empty=True)
    return CSRArrays(csr.indptr, csr.indices, csr.data, csr.shape)


# exact types (no subclasses), for the latency paths' type checks
CSR_TYPES = tuple({sp.csr_matrix, getattr(sp, "csr_array", sp.csr_matrix)})


def compressed_structure_problem(indptr: Any, indices: Any, n_major: int, n_minor: int, n_data: int,
                                 canonical: bool = False, minor: str = "column") -> str | None:
    """What is wrong with a CSR/CSC's index arrays, or None when they describe a matrix.

    scipy's own conversions trust these arrays and would read out of bounds.
    With ``canonical``, indices must also be sorted and unique within each row.
    """
    indptr, indices = np.asarray(indptr), np.asarray(indices)
    if (indptr.ndim != 1 or indptr.size != n_major + 1 or not np.issubdtype(indptr.dtype, np.integer)
            or indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer)):
        return "its indptr or indices do not match its shape"
    if (indptr[0] != 0 or indptr[-1] > indices.size or n_data < indptr[-1]
            or (indptr.size > 2 and np.any(indptr[1:] < indptr[:-1]))):
        return "its indptr must rise from 0 to at most the number of stored entries"
    stored = indices[: int(indptr[-1])]
    if stored.size and (stored.min() < 0 or stored.max() >= n_minor):
        bad = int(stored.min() if stored.min() < 0 else stored.max())
        return f"it stores {minor} index {bad} outside [0, {n_minor})"
    if canonical and stored.size > 1:
        increasing = np.diff(stored) > 0
        starts = indptr[1:-1]
        increasing[starts[(starts > 0) & (starts < stored.size)] - 1] = True  # row boundaries
        if not increasing.all():
            return f"its {minor} indices are unsorted or repeated within a row"
    return None


def _structure_problem(X: Any) -> str | None:
    n_major, n_minor = X.shape if X.format == "csr" else X.shape[::-1]
    return compressed_structure_problem(X.indptr, X.indices, n_major, n_minor, np.asarray(X.data).size,
                                        minor="column" if X.format == "csr" else "row")


def _check_compressed_structure(X: Any, name: str) -> None:
    """Reject a CSR/CSC whose index arrays do not describe its arrays (see ``_structure_problem``)."""
    if X.format in ("csr", "csc"):
        problem = _structure_problem(X)
        if problem:
            raise ValueError(f"{name} is a malformed {X.format.upper()} matrix: {problem}")


def reusable_csr(X: Any, dtype: np.dtype, n_cols: int | None = None) -> bool:
    """Whether kernels can read ``X``'s arrays as they are.

    True for a well-formed CSR of ``dtype`` with contiguous int32 indices,
    sorted and unique within rows and in range, and finite non-zero values.
    """
    if not isinstance(X, CSR_TYPES) or X.ndim != 2 or X.dtype != dtype:
        return False
    indptr, indices, data = X.indptr, X.indices, X.data
    if ((n_cols is not None and X.shape[1] != n_cols) or indices.dtype != np.int32
            or indptr.dtype not in (np.int32, np.int64) or data.ndim != 1
            or not indptr.flags.c_contiguous or not indices.flags.c_contiguous
            or not data.flags.c_contiguous or _structure_problem(X) is not None):
        return False
    if indptr[-1] != indices.size or data.size != indices.size:
        return False
    if not X.has_canonical_format:  # safe now that indptr is known to be sound
        return False
    return not data.size or bool(np.isfinite(data).all() and data.all())


def _read_only_view(X: Any) -> sp.csr_matrix:
    """A CSR matrix sharing ``X``'s arrays through read-only views (``X`` itself stays writeable)."""
    csr = sp.csr_matrix(X.shape, dtype=X.dtype)
    csr.data, csr.indices, csr.indptr = X.data.view(), X.indices.view(), X.indptr.view()
    for arr in (csr.data, csr.indices, csr.indptr):
        arr.flags.writeable = False
    csr.has_canonical_format = True
    return csr
