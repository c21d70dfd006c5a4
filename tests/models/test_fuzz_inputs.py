"""Fuzz every public method of a fitted ALS with malformed inputs.

Each example corrupts one argument of one call (the others stay valid) and
checks that
* only documented exceptions come out (ValueError, TypeError, IndexError,
  KeyError, NotFittedError), and their message names the corrupted argument;
  training may also stop with FloatingPointError (diverged) on extreme values;
* a value known to be invalid is never accepted: ids below 0 or past the end,
  NaN or infinite ids, matrices holding NaN or infinities, every ``_BAD_COUNTS``
  and ``_BAD_PARAMS`` value must raise one of those documented errors;
* the caller's objects are unchanged, byte for byte;
* a failed call leaves the model as it was (same fitted state, same params).
"""
from __future__ import annotations

import pickle
import re
from typing import Any, Callable

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fastrec import ALS, NotFittedError

ALLOWED = (ValueError, TypeError, IndexError, KeyError, NotFittedError)
N_USERS, N_ITEMS = 12, 9
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _training_matrix() -> sp.csr_matrix:
    X = sp.random(N_USERS, N_ITEMS, density=0.3, random_state=1, format="csr", dtype=np.float32)
    X.data = np.ceil(X.data * 4)
    return X


@pytest.fixture(scope="module")
def fitted() -> ALS:
    return ALS(factors=4, iterations=2, random_state=0, num_threads=1).fit(_training_matrix())


def _fresh_copy(model: ALS) -> ALS:
    return pickle.loads(pickle.dumps(model))


# ------------------------------------------------------------------ inputs
# Factories, so every example gets new objects the call could (wrongly) modify.
def _bad_ids(n: int) -> list[Callable[[], Any]]:
    return [
        lambda: None, lambda: "3", lambda: "abc", lambda: b"1", lambda: 1.5, lambda: np.nan,
        lambda: np.inf, lambda: -np.inf, lambda: -1, lambda: n, lambda: 2**31, lambda: 2**40,
        lambda: 2**63 - 1, lambda: -2**63, lambda: 2**64, lambda: 1 + 2j, lambda: True,
        lambda: np.bool_(False), lambda: [True, False], lambda: np.array([1 + 0j]),
        lambda: np.array([0, np.nan]), lambda: np.array([0.0, np.inf]), lambda: np.array([0.5, 1.0]),
        lambda: np.array([[0, 1]]), lambda: np.zeros((2, 2, 2), dtype=np.int64),
        lambda: np.array([], dtype=np.float64), lambda: np.array([], dtype=object), lambda: [],
        lambda: np.array([0, 1], dtype=object), lambda: np.array(["0", "1"]),
        lambda: np.array([0, "a"], dtype=object), lambda: [[0], [0, 1]], lambda: {0: 1},
        lambda: {0, 1}, lambda: object(), lambda: np.datetime64("2020-01-01"),
        lambda: np.array([0, 1], dtype="datetime64[D]"), lambda: np.array([2**63], dtype=np.uint64),
        lambda: np.array([-1], dtype=np.int8), lambda: np.array([0, n], dtype=np.int16),
        lambda: slice(0, 2), lambda: sp.csr_matrix([[0, 1]]), lambda: np.array([2**31, 0]),
        lambda: [0, -2**40], lambda: np.float32(2.0), lambda: range(3),
    ]


_BAD_COUNTS = [
    lambda: None, lambda: -1, lambda: 1.5, lambda: "5", lambda: np.nan, lambda: np.inf, lambda: 2**31,
    lambda: 2**70, lambda: [5], lambda: np.array([5]), lambda: True, lambda: 3 + 0j, lambda: np.float64(3.0),
    lambda: np.int64(-4), lambda: object(),
]


def _unsorted_duplicates(rows: int, cols: int) -> sp.csr_matrix:
    """A valid CSR with unsorted, duplicate and explicit-zero entries (checks must copy it)."""
    cols_idx = np.array([cols - 1, 0, cols - 1, 1] * rows, dtype=np.int32)
    data = np.array([1.0, 2.0, 3.0, 0.0] * rows, dtype=np.float32)
    indptr = np.arange(0, 4 * rows + 1, 4, dtype=np.int32)
    X = sp.csr_matrix((data, cols_idx, indptr), shape=(rows, cols))
    X.has_sorted_indices = False
    return X


def _with_value(rows: int, cols: int, value: float, sparse: bool):
    dense = np.ones((rows, cols), dtype=np.float64)
    dense[0, 0] = value
    return sp.csr_matrix(dense) if sparse else dense


class _FakeInteractions:
    """An Interactions look-alike whose to_csr returns nonsense."""

    def __init__(self, payload: Any):
        self.payload = payload

    def to_csr(self) -> Any:
        return self.payload


def _bad_matrices(rows: int, cols: int) -> list[Callable[[], Any]]:
    r = max(rows, 1)
    return [
        lambda: _with_value(r, cols, np.nan, sparse=True), lambda: _with_value(r, cols, np.inf, sparse=False),
        lambda: _with_value(r, cols, -np.inf, sparse=True), lambda: _with_value(r, cols, 1e300, sparse=False),
        lambda: _with_value(r, cols, -2.0, sparse=True),
        lambda: sp.random(cols, r, density=0.5, random_state=0, format="csr"),  # items x users
        lambda: np.ones((cols, r)), lambda: sp.csr_matrix((r, cols + 1)), lambda: np.ones((r, max(cols - 1, 0))),
        lambda: sp.csr_matrix((r, 0)), lambda: sp.csr_matrix((0, cols)), lambda: np.ones((r + 1, cols)),
        lambda: np.ones(cols), lambda: np.ones((r, cols, 2)), lambda: 5, lambda: None, lambda: "matrix",
        lambda: [[1, 2], [3]], lambda: [["1"] * cols] * r, lambda: np.full((r, cols), "1"),
        lambda: np.ones((r, cols), dtype=object), lambda: np.full((r, cols), "x", dtype=object),
        lambda: np.ones((r, cols), dtype=np.complex128), lambda: sp.csr_matrix(np.ones((r, cols)) * 1j),
        lambda: np.zeros((r, cols), dtype="datetime64[D]"), lambda: np.full((r, cols), 2**62, dtype=np.int64),
        lambda: np.ones((r, cols), dtype=bool), lambda: sp.coo_matrix(np.eye(r, cols)),
        lambda: sp.csc_matrix(np.eye(r, cols)), lambda: sp.lil_matrix(np.eye(r, cols)),
        lambda: sp.dok_matrix(np.eye(r, cols)), lambda: sp.csr_array(np.eye(r, cols)),
        lambda: sp.bsr_matrix(_with_value(r, cols, np.nan, sparse=False)), lambda: _unsorted_duplicates(r, cols),
        lambda: sp.csr_matrix((r, 2**31 + 3)), lambda: np.asmatrix(np.ones((r, cols))),
        lambda: _FakeInteractions("nonsense"), lambda: _FakeInteractions(np.ones((r, cols, 1))),
        lambda: {"rows": r}, lambda: np.float32(1.0),
    ]


def _generated_ids() -> st.SearchStrategy:
    dtypes = st.sampled_from([np.int8, np.int32, np.int64, np.uint32, np.uint64, np.float16, np.float64])
    return st.one_of(
        st.integers(min_value=-2**70, max_value=2**70),
        st.lists(st.integers(min_value=-2**40, max_value=2**40), max_size=5),
        dtypes.flatmap(lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, max_side=3))),
        st.floats(allow_nan=True, allow_infinity=True),
    )


def _generated_matrices(rows: int, cols: int) -> st.SearchStrategy:
    elements = st.floats(allow_nan=True, allow_infinity=True, width=32)
    shapes = st.sampled_from([(rows, cols), (cols, rows), (rows, cols + 1), (rows,), (rows, cols, 1)])
    return shapes.flatmap(lambda shape: hnp.arrays(np.float32, shape, elements=elements))


def _ids_strategy(n: int) -> st.SearchStrategy:
    return st.one_of(st.sampled_from(_bad_ids(n)).map(lambda make: make()), _generated_ids())


def _matrix_strategy(rows: int, cols: int) -> st.SearchStrategy:
    return st.one_of(st.sampled_from(_bad_matrices(rows, cols)).map(lambda make: make()),
                     _generated_matrices(rows, cols))


_COUNT = st.sampled_from(_BAD_COUNTS).map(lambda make: make())


def _is_ragged(value: Any) -> bool:
    return isinstance(value, list) and any(isinstance(v, list) for v in value) and \
        len({len(v) if isinstance(v, list) else -1 for v in value}) > 1


def _one_value(value: Any) -> bool:
    """Whether ``value`` holds exactly one element (sets and dicts pass: they are rejected anyway)."""
    if isinstance(value, (dict, set)):
        return True
    return not _is_ragged(value) and np.size(value) == 1


def _matrix_values(value: Any) -> np.ndarray:
    """The stored numbers of a dense or sparse matrix (empty for anything else)."""
    if sp.issparse(value):
        data = value.tocoo().data
    elif isinstance(value, np.ndarray):
        data = value
    else:
        return np.empty(0)
    return data if data.dtype.kind in "iufc" else np.empty(0)


# ----------------------------------------------------------------- checking
def _fingerprint(x: Any) -> Any:
    """Everything a call could change in an argument, as comparable bytes."""
    if sp.issparse(x):
        parts = [type(x).__name__, x.shape, x.dtype.str]
        for attr in ("data", "indices", "indptr", "row", "col", "offsets"):
            value = getattr(x, attr, None)
            if isinstance(value, np.ndarray):
                parts.append((attr, _fingerprint(value)))
        if x.format in ("lil", "dok"):
            parts.append(_fingerprint(x.toarray()))
        return tuple(parts)
    if isinstance(x, np.ndarray):
        if x.dtype.hasobject:
            return ("object", x.shape, pickle.dumps(x))
        return ("array", type(x).__name__, x.dtype.str, x.shape, x.tobytes(), x.flags.writeable)
    if isinstance(x, _FakeInteractions):
        return ("fake", _fingerprint(x.payload))
    if isinstance(x, object) and type(x) is object:
        return ("object()", id(x))
    return ("python", pickle.dumps(x))


def _names_argument(message: str, names: tuple[str, ...]) -> bool:
    return any(re.search(rf"\b{re.escape(name)}\b", message) for name in names)


def _invalid_ids(value: Any, n: int) -> bool:
    """Whether ``value`` is ids no call may accept: integers < 0 or >= n, or NaN / infinite numbers.

    Only plainly numeric values count (Python ints and lists of them, NumPy
    numbers and numeric arrays); bools and other oddities are left to the
    general checks.
    """
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, int):  # however large: Python ints do not overflow
        return value < 0 or value >= n
    if isinstance(value, list):
        if value and all(type(v) is int for v in value):
            return min(value) < 0 or max(value) >= n
        return False
    if isinstance(value, (float, np.ndarray, np.number)):
        arr = np.asarray(value)
        if arr.size == 0 or arr.dtype.kind not in "iuf":
            return False
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            return True
        return bool((arr < 0).any() or (arr >= n).any())
    return False


def _non_finite_matrix(value: Any) -> bool:
    """Whether ``value`` is a numeric matrix (dense or sparse) holding NaN or an infinity."""
    return not np.isfinite(_matrix_values(value)).all()


_TRAINING = ("fit", "partial_fit_users", "partial_fit_items")


def _call_and_check(model: ALS, method: str, kwargs: dict[str, Any], corrupted: tuple[str, ...],
                    invalid: bool = False) -> BaseException | None:
    """Call ``model.method(**kwargs)`` and check the outcome; return the exception raised, if any.

    ``invalid``: the corrupted argument is known to be invalid, so the call must raise.
    """
    before = {name: _fingerprint(value) for name, value in kwargs.items()}
    state, params = model._state, pickle.dumps(model.get_params())
    call = f"{method}({corrupted[0]}={kwargs.get(corrupted[0])!r:.80})"
    raised = None
    try:
        getattr(model, method)(**kwargs)
    except ALLOWED as exc:
        raised = exc
        message = str(exc)
        assert _names_argument(message, corrupted), (
            f"{call} raised {type(exc).__name__} without naming {corrupted[0]}: {message!r}")
    except FloatingPointError as exc:  # training on extreme (but valid) values may diverge
        raised = exc
        assert method in _TRAINING and not invalid, f"{call} raised FloatingPointError: {exc}"
    else:
        assert not invalid, f"{call} accepted an invalid {corrupted[0]} without an error"
    if raised is not None:
        assert model._state is state, f"failed {method} changed the fitted state"
        if method != "set_params":
            assert pickle.dumps(model.get_params()) == params, f"failed {method} changed params"
    for name, value in kwargs.items():
        assert _fingerprint(value) == before[name], f"{method} modified its argument {name}"
    return raised


# -------------------------------------------------------------- fuzz tests
# exclude_seen / recalculate are left out: see test_recommend_validates_flags (a known gap)
_RECOMMEND_ARGS = {"users": "ids", "n": "count", "exclude": "ids", "candidates": "ids", "X": "rows2"}


def _draw_bad(data: st.DataObject, kind: str, n: int) -> tuple[Any, bool]:
    """A corrupted value of the kind, and whether it is known to be invalid."""
    if kind == "ids":
        value = data.draw(_ids_strategy(n))
        return value, _invalid_ids(value, n)
    if kind == "count":
        return data.draw(_COUNT), True  # every _BAD_COUNTS entry is invalid
    if kind == "rows2":
        value = data.draw(_matrix_strategy(2, N_ITEMS))
        return value, _non_finite_matrix(value)
    raise AssertionError(kind)


@FUZZ
@given(data=st.data())
def test_recommend(fitted, data):
    arg = data.draw(st.sampled_from(sorted(_RECOMMEND_ARGS)))
    kwargs = {"users": np.array([0, 3]), "n": 4}
    if arg in ("X", "recalculate"):
        kwargs.update(X=_training_matrix()[[0, 3]], recalculate=True)
    kwargs[arg], invalid = _draw_bad(data, _RECOMMEND_ARGS[arg], N_ITEMS if arg != "users" else N_USERS)
    names = {"users": ("users", "X")}.get(arg, (arg,))
    _call_and_check(fitted, "recommend", kwargs, names, invalid)


@FUZZ
@given(data=st.data())
def test_recommend_new_users(fitted, data):
    X, invalid = _draw_bad(data, "rows2", N_ITEMS)
    _call_and_check(fitted, "recommend", {"users": None, "X": X}, ("X",), invalid)


@FUZZ
@given(data=st.data(), side=st.sampled_from(["items", "users"]), arg=st.sampled_from(["ids", "n"]))
def test_similar(fitted, data, side, arg):
    total = N_ITEMS if side == "items" else N_USERS
    kwargs = {side: [0, 1], "n": 3}
    if arg == "ids":
        kwargs[side], invalid = _draw_bad(data, "ids", total)
    else:
        kwargs["n"], invalid = _draw_bad(data, "count", total)
    _call_and_check(fitted, f"similar_{side}", kwargs, (side if arg == "ids" else "n",), invalid)


@FUZZ
@given(data=st.data(), arg=st.sampled_from(["users", "items"]))
def test_predict(fitted, data, arg):
    kwargs = {"users": np.array([0, 1, 2]), "items": np.array([3, 4, 5])}
    # ragged lists: see test_predict_names_ragged_ids (a known gap)
    n = N_USERS if arg == "users" else N_ITEMS
    kwargs[arg] = data.draw(_ids_strategy(n).filter(lambda v: not _is_ragged(v)))
    _call_and_check(fitted, "predict", kwargs, (arg,), _invalid_ids(kwargs[arg], n))


@FUZZ
@given(data=st.data(), arg=st.sampled_from(["user", "items"]))
def test_rank(fitted, data, arg):
    kwargs = {"user": 2, "items": [5, 1, 7]}
    kwargs[arg], invalid = _draw_bad(data, "ids", N_USERS if arg == "user" else N_ITEMS)
    _call_and_check(fitted, "rank", kwargs, (arg,), invalid)


@FUZZ
@given(data=st.data(), arg=st.sampled_from(["user", "item", "X"]))
def test_explain(fitted, data, arg):
    # n, and user/item that are not one id: see test_explain_validates_* (known gaps)
    kwargs = {"user": 2, "item": 3, "X": None, "n": 5}
    if arg == "X":
        kwargs["X"] = data.draw(_matrix_strategy(1, N_ITEMS))
        invalid = _non_finite_matrix(kwargs["X"])
    else:
        n = N_USERS if arg == "user" else N_ITEMS
        kwargs[arg] = data.draw(_ids_strategy(n).filter(_one_value))
        invalid = _invalid_ids(kwargs[arg], n)
    _call_and_check(fitted, "explain", kwargs, (arg,), invalid)


@FUZZ
@given(data=st.data())
def test_fold_in(fitted, data):
    X = data.draw(_matrix_strategy(3, N_ITEMS))
    _call_and_check(fitted, "fold_in", {"X": X}, ("X",), _non_finite_matrix(X))


def _growth_is_bounded(ids: Any) -> bool:
    """partial_fit_* grows the model to the largest id: keep fuzzed growth small."""
    try:
        arr = np.asarray(ids)
        if arr.dtype.kind not in "iuf" or arr.size == 0:
            return True
        finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
        return not np.any((finite >= 1000) & (finite < 2**31 - 1))
    except (ValueError, TypeError, OverflowError):
        return True


@FUZZ
@given(data=st.data(), side=st.sampled_from(["users", "items"]), arg=st.sampled_from(["ids", "X"]))
def test_partial_fit(fitted, data, side, arg):
    model = _fresh_copy(fitted)
    X = _training_matrix()
    id_name, x_name = ("user_ids", "X_rows") if side == "users" else ("item_ids", "X_cols")
    kwargs = {id_name: [1, 4], x_name: X[[1, 4]] if side == "users" else X[:, [1, 4]]}
    if arg == "ids":
        # ids past the end grow the model, up to the int32 limit
        kwargs[id_name] = data.draw(_ids_strategy(2**31 - 1).filter(_growth_is_bounded))
        invalid = _invalid_ids(kwargs[id_name], 2**31 - 1)
    else:
        kwargs[x_name] = data.draw(_matrix_strategy(2, N_ITEMS) if side == "users" else _matrix_strategy(N_USERS, 2))
        invalid = _non_finite_matrix(kwargs[x_name])
    # a wrong number of ids is reported against the matrix, which is fair
    _call_and_check(model, f"partial_fit_{side}", kwargs, (id_name, x_name) if arg == "ids" else (x_name,),
                    invalid)


@FUZZ
@given(data=st.data())
def test_fit_with_bad_matrix(data):
    model = ALS(factors=3, iterations=1, num_threads=1)
    X = data.draw(_matrix_strategy(5, 4).filter(lambda m: not isinstance(m, (int, float)) or m != 5))
    _call_and_check(model, "fit", {"X": X}, ("X",), _non_finite_matrix(X))


_BAD_PARAMS = {
    "factors": [0, -1, 1.5, "8", None, 10**9, True, np.nan],
    "regularization": [-0.1, np.nan, np.inf, "0.1", None, 1j],
    "alpha": [-1.0, np.nan, -np.inf, "2", None],
    "iterations": [-1, 2.5, "3", None],
    "solver": ["lu", None, 1, ["cg"]],
    "cg_steps": [0, -2, 1.0, None],
    "regularization_scaling": ["all", None, 3],
    "confidence": ["linear", None, 0],
    "dtype": [np.float16, np.int32, "float128", "nonsense", object(), np.complex64, str],
    "num_threads": [-1, 10**6, 1.5, "all", None],
    "show_progress": [1, "yes", None],
}


@FUZZ
@given(data=st.data(), name=st.sampled_from(sorted(_BAD_PARAMS)))
def test_set_params_then_fit(data, name):
    value = data.draw(st.sampled_from(_BAD_PARAMS[name]))
    model = ALS(factors=3, iterations=1, num_threads=1).fit(_training_matrix())
    _call_and_check(model, "set_params", {name: value}, (name,))
    assert model.get_params()[name] is value  # set_params stores, fit validates (sklearn)
    error = _call_and_check(model, "fit", {"X": _training_matrix()}, (name,), invalid=True)
    assert isinstance(error, (ValueError, TypeError)), f"fit with {name}={value!r} raised {error!r}"


def test_set_params_rejects_unknown_names(fitted):
    with pytest.raises(ValueError, match="invalid parameter 'factor'"):
        _fresh_copy(fitted).set_params(factor=3)


# ------------------------------------------- known-invalid values are always refused
# The fuzz tests above draw these among many others; here each one is certain to be tried.
def _negative_ids() -> list[Callable[[], Any]]:
    return [lambda: -1, lambda: np.int64(-3), lambda: [0, -1], lambda: np.array([2, -5])]


def _out_of_range_ids(n: int) -> list[Callable[[], Any]]:
    return [lambda: n, lambda: n + 7, lambda: [0, n], lambda: np.array([n], dtype=np.int64), lambda: 2**40]


_NON_FINITE_IDS = [lambda: np.nan, lambda: np.inf, lambda: np.array([0.0, np.nan])]

# (method, the other arguments, the corrupted argument, its size: ids from it on are out of range)
_ID_ARGUMENTS = [
    ("recommend", {"n": 3}, "users", N_USERS),
    ("recommend", {"users": [0, 3], "n": 3}, "exclude", N_ITEMS),
    ("recommend", {"users": [0, 3], "n": 3}, "candidates", N_ITEMS),
    ("similar_items", {"n": 3}, "items", N_ITEMS),
    ("similar_users", {"n": 3}, "users", N_USERS),
    ("predict", {"users": 1, "items": 2}, "users", N_USERS),
    ("predict", {"users": 1, "items": 2}, "items", N_ITEMS),
    ("rank", {"user": 2, "items": [5, 1]}, "user", N_USERS),
    ("rank", {"user": 2, "items": [5, 1]}, "items", N_ITEMS),
    ("explain", {"user": 2, "item": 3}, "user", N_USERS),
    ("explain", {"user": 2, "item": 3}, "item", N_ITEMS),
    # partial fits grow the model for ids past the end: only negative and non-finite ids are invalid
    ("partial_fit_users", {"X_rows": _training_matrix()[[1, 4]]}, "user_ids", None),
    ("partial_fit_items", {"X_cols": _training_matrix()[:, [1, 4]]}, "item_ids", None),
]

_INVALID_ID_CASES = [
    pytest.param(method, others, arg, n or 2**31 - 1, make, id=f"{method}-{arg}-{kind}{k}")
    for method, others, arg, n in _ID_ARGUMENTS
    for kind, makers in (("negative", _negative_ids()), ("nonfinite", _NON_FINITE_IDS),
                         ("out_of_range", _out_of_range_ids(n) if n else []))
    for k, make in enumerate(makers)
]


@pytest.mark.parametrize("method, others, arg, n, make", _INVALID_ID_CASES)
def test_invalid_ids_are_refused(fitted, method, others, arg, n, make):
    value = make()
    assert _invalid_ids(value, n)  # the fuzz tests would demand an error for it too
    model = _fresh_copy(fitted) if method.startswith("partial_fit") else fitted
    # a wrong number of ids may be reported against the matrix, which is fair
    names = (arg, "X_rows", "X_cols") if method.startswith("partial_fit") else (arg,)
    _call_and_check(model, method, {**others, arg: value}, names, invalid=True)


# (method, the other arguments, the matrix argument, its shape)
_MATRIX_ARGUMENTS = [
    ("fit", {}, "X", (5, 4)),
    ("fold_in", {}, "X", (2, N_ITEMS)),
    ("recommend", {"users": [0, 3], "n": 3}, "X", (2, N_ITEMS)),
    ("recommend", {"users": [0, 3], "n": 3, "recalculate": True}, "X", (2, N_ITEMS)),
    ("recommend", {"users": None, "n": 3}, "X", (2, N_ITEMS)),
    ("explain", {"user": 2, "item": 3}, "X", (1, N_ITEMS)),
    ("partial_fit_users", {"user_ids": [1, 4]}, "X_rows", (2, N_ITEMS)),
    ("partial_fit_items", {"item_ids": [1, 4]}, "X_cols", (N_USERS, 2)),
]


@pytest.mark.parametrize("method, others, arg, shape", _MATRIX_ARGUMENTS,
                         ids=[f"{m}-{a}" + ("-recalculate" if "recalculate" in o else "") +
                              ("-new" if o.get("users", 0) is None else "") for m, o, a, _ in _MATRIX_ARGUMENTS])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("sparse", [False, True])
def test_non_finite_matrices_are_refused(fitted, method, others, arg, shape, value, sparse):
    X = _with_value(*shape, value, sparse=sparse)
    assert _non_finite_matrix(X)
    model = ALS(factors=3, iterations=1, num_threads=1) if method == "fit" else _fresh_copy(fitted)
    _call_and_check(model, method, {**others, arg: X}, (arg,), invalid=True)


def test_known_invalid_values_are_recognised():
    """The classifiers deciding which fuzzed values must be refused."""
    for make in _negative_ids() + _NON_FINITE_IDS + _out_of_range_ids(N_ITEMS):
        assert _invalid_ids(make(), N_ITEMS)
    for valid in (0, N_ITEMS - 1, [0, 2], np.array([1, 3], dtype=np.uint8), np.float32(2.0), [], None, "3", True,
                  np.array([], dtype=np.float64), [[0], [0, 1]], np.array([0, 1], dtype=object)):
        assert not _invalid_ids(valid, N_ITEMS), valid
    assert _invalid_ids(2**70, N_ITEMS) and _invalid_ids(-2**63, N_ITEMS) and _invalid_ids(np.float16(np.inf), 5)
    assert _non_finite_matrix(sp.csr_matrix(np.array([[0, np.nan]]))) and _non_finite_matrix(np.array([[np.inf]]))
    assert _non_finite_matrix(sp.dok_matrix(np.array([[0, -np.inf]])))
    assert not _non_finite_matrix(np.ones((2, 2))) and not _non_finite_matrix(sp.csr_matrix((2, 2)))
    assert not _non_finite_matrix(np.full((2, 2), "x", dtype=object)) and not _non_finite_matrix(None)


# ------------------------------------------------- gaps found by this suite (fixed)

def test_explain_with_an_extreme_row(fitted):
    """numpy's LinAlgError('Singular matrix') used to escape explain without naming X."""
    row = np.zeros((1, N_ITEMS), dtype=np.float32)
    row[0, 3] = 5.186426e16  # found by test_explain
    _call_and_check(fitted, "explain", {"user": 2, "item": 3, "X": row}, ("X",))


@pytest.mark.parametrize("n", [np.inf, np.nan, -1, 2.5, "5", [5], True])
def test_explain_validates_n(fitted, n):
    with pytest.raises((ValueError, TypeError), match=r"\bn\b"):
        fitted.explain(2, 3, n=n)


@pytest.mark.parametrize("args", [([1, 2], 3), (2, [3, 4]), (2, []), ([], 3)])
def test_explain_needs_one_user_and_one_item(fitted, args):
    with pytest.raises((ValueError, TypeError, IndexError), match=r"\b(user|item)\b"):
        fitted.explain(*args)


@pytest.mark.parametrize("kwargs", [{"exclude_seen": np.array([True, False])}, {"exclude_seen": "no"},
                                    {"recalculate": "no"}])
def test_recommend_validates_flags(fitted, kwargs):
    with pytest.raises(TypeError, match="exclude_seen|recalculate"):
        fitted.recommend([0, 1], X=_training_matrix()[[0, 1]], **kwargs)


@pytest.mark.parametrize("arg", ["users", "items"])
def test_predict_names_ragged_ids(fitted, arg):
    kwargs = {"users": [0, 1], "items": [0, 1], arg: [[0], [0, 1]]}
    with pytest.raises(ValueError, match=arg):
        fitted.predict(**kwargs)


@pytest.mark.parametrize("random_state", [-1, "seed", 1.5, [1, -2]])
def test_fit_validates_random_state(random_state):
    with pytest.raises((ValueError, TypeError), match="random_state"):
        ALS(factors=3, iterations=1, random_state=random_state).fit(_training_matrix())


@pytest.mark.parametrize("callback", [5, "print"])
def test_fit_validates_callback(callback):
    with pytest.raises(TypeError, match="callback"):
        ALS(factors=3, iterations=1, num_threads=1).fit(_training_matrix(), callback=callback)


def test_partial_fit_items_count_mismatch_message(fitted):
    X = _training_matrix()
    with pytest.raises(ValueError) as info:
        _fresh_copy(fitted).partial_fit_items([1], X[:, [1, 4]])
    assert "model has" not in str(info.value) and "item_ids" in str(info.value)


# ------------------------------------------------------------ unfitted model
_UNFITTED_CALLS = {
    "recommend": lambda m: m.recommend(0),
    "recommend_new": lambda m: m.recommend(None, X=np.ones((1, 3))),
    "similar_items": lambda m: m.similar_items(0),
    "similar_users": lambda m: m.similar_users(0),
    "predict": lambda m: m.predict(0, 0),
    "rank": lambda m: m.rank(0, [0, 1]),
    "explain": lambda m: m.explain(0, 0),
    "fold_in": lambda m: m.fold_in(np.ones((1, 3))),
    "partial_fit_users": lambda m: m.partial_fit_users([0], np.ones((1, 3))),
    "partial_fit_items": lambda m: m.partial_fit_items([0], np.ones((3, 1))),
    "save": lambda m: m.save("never-written.npz"),
    "user_factors_": lambda m: m.user_factors_,
    "item_factors_": lambda m: m.item_factors_,
    "item_bias_": lambda m: m.item_bias_,
    "user_items_": lambda m: m.user_items_,
    "n_users_": lambda m: m.n_users_,
}


@pytest.mark.parametrize("call", sorted(_UNFITTED_CALLS))
def test_unfitted_model_raises_not_fitted(call, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NotFittedError, match="not fitted"):
        _UNFITTED_CALLS[call](ALS())
    assert list(tmp_path.iterdir()) == []


def test_not_fitted_is_also_an_attribute_error():
    assert not hasattr(ALS(), "user_factors_")  # lets sklearn-style checks work
