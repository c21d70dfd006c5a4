"""Model files: a versioned, checksummed ``.npz`` that loads without running code.

A model file is an uncompressed NumPy ``.npz`` archive (a zip of ``.npy``
members) holding only numeric and fixed-width text arrays:

``__meta__``
    UTF-8 JSON as a uint8 array: the format name and version, the fastrec
    version that wrote it, the model class, its hyperparameters
    (``get_params()``) and the kinds of its extra fitted attributes.
``__checksum__``
    SHA-256 (32 uint8) over every other member, in sorted name order: name,
    dtype, shape and raw bytes.  It is verified before anything is built.
``user_factors``, ``item_factors``, ``item_bias`` (when the model has biases)
    The factors.
``user_items_indptr``, ``user_items_indices``, ``user_items_data``
    The users x items interactions seen at fit time (CSR).
``user_map``, ``item_map`` (when fitted from ``fastrec.Interactions``)
    Raw ids, int64 or fixed-width unicode.
``attr.<name>``
    Numeric array-valued fitted attributes.

Rules
-----
* Loading never executes code: ``np.load(..., allow_pickle=False)``, object
  arrays are rejected, the class is looked up among the ``FactorModel``
  subclasses already defined in this process (fastrec's own models by class
  name, others by ``module:qualname``) and never imported from the file.
  The checksum catches accidental damage; hand-made files with a valid
  checksum are still checked (dtypes, shapes, CSR structure, id ranges,
  attribute names), so a crafted file cannot make a kernel read out of bounds.
* A truncated, corrupted, foreign, newer-version or wrong-class file raises
  ``fastrec.ModelFormatError``.  A missing file raises ``FileNotFoundError``,
  and other ``OSError`` subclasses pass through too: a wrong path is not a bad file.
* Saving is atomic: the archive is written to a temporary file in the same
  directory, flushed to disk and renamed over ``path``; a failure part-way
  leaves any previous file untouched.  ``path`` is used exactly as given: no
  ``.npz`` suffix is added.
* Hyperparameters are stored as JSON.  Dtypes are stored by name (``"float32"``)
  and come back as NumPy scalar types; tuples come back as lists.  Values JSON
  cannot hold (a ``numpy.random.Generator`` as ``random_state``, a callable)
  are stored as None, with a ``UserWarning`` naming them at save time.  On
  load, a parameter the class no longer has is an error; one it gained since
  takes its default.
* Fitted attributes are the model's public instance attributes whose names
  end in ``_`` (scikit-learn convention).  Numeric arrays are stored as
  members; values JSON can hold (numbers, strings, lists of them such as
  ALS's ``loss_history_``) go in the metadata; anything else is skipped with
  a ``UserWarning``.

Pickle also works (``pickle.dumps(model)``), which is what ``multiprocessing``
uses.  Unpickling runs arbitrary code from the data, so never unpickle a model
from a source you do not trust; use ``save``/``load`` for files.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import json
import numbers
import os
import tempfile
import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp

from .models.base import FactorModel
from .models.state import FittedState, non_finite
from .data.idmap import IdMap
from .utils.validation import check_path, compressed_structure_problem
from .exceptions import ModelFormatError

__all__ = ["FORMAT_VERSION", "save_model", "load_model", "model_classes"]

FORMAT_NAME = "fastrec-model"
FORMAT_VERSION = 1

_META = "__meta__"
_CHECKSUM = "__checksum__"
_ATTR_PREFIX = "attr."
_FLOAT_KINDS = ("float32", "float64")


class _Unstorable(Exception):
    """A value the file format cannot hold."""


# ------------------------------------------------------------ class registry
def _class_key(cls: type) -> str:
    if cls.__module__.split(".")[0] == "fastrec":
        return cls.__qualname__
    return f"{cls.__module__}:{cls.__qualname__}"


def model_classes() -> dict[str, type]:
    """The model classes a file may name: every ``FactorModel`` subclass defined so far."""
    found: dict[str, type] = {}
    pending = list(FactorModel.__subclasses__())
    while pending:
        cls = pending.pop(0)
        found[_class_key(cls)] = cls  # a redefined class replaces its older namesake
        pending.extend(cls.__subclasses__())
    return found


# -------------------------------------------------------------- JSON values
def _encode_value(value: Any) -> Any:
    """A JSON-ready copy of a hyperparameter or attribute value, or raise _Unstorable."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        dtype = np.dtype(value)
        if dtype.kind not in "biufc":
            raise _Unstorable
        return {"__dtype__": dtype.name}
    if isinstance(value, (list, tuple)):
        return [_encode_value(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _encode_value(v) for k, v in value.items()}
    raise _Unstorable


def _decode_value(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode_value(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__dtype__"}:
            dtype = np.dtype(str(value["__dtype__"]))
            if dtype.kind not in "biufc":
                raise ModelFormatError(f"unsupported dtype {dtype} in the hyperparameters")
            return dtype.type
        return {k: _decode_value(v) for k, v in value.items()}
    return value


def _encode_params(model: FactorModel) -> tuple[dict[str, Any], list[str]]:
    params, dropped = {}, []
    for name, value in model.get_params().items():
        try:
            params[name] = _encode_value(value)
        except _Unstorable:
            params[name] = None
            dropped.append(name)
    if dropped:
        warnings.warn(f"{type(model).__name__} hyperparameter(s) {', '.join(dropped)} cannot be stored "
                      "in a model file and are saved as None", UserWarning, stacklevel=4)
    return params, dropped


def _fitted_attributes(model: FactorModel) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Meta entries and arrays for the public ``*_`` instance attributes."""
    kinds: dict[str, dict] = {}
    arrays: dict[str, np.ndarray] = {}
    skipped = []
    for name, value in sorted(vars(model).items()):
        if not name.endswith("_") or name.startswith("_"):
            continue
        if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            kinds[name] = {"kind": "array"}
            arrays[_ATTR_PREFIX + name] = np.ascontiguousarray(value)
            continue
        try:
            kinds[name] = {"kind": "value", "value": _encode_value(value)}
        except _Unstorable:
            skipped.append(name)
    if skipped:
        warnings.warn(f"fitted attribute(s) {', '.join(skipped)} of {type(model).__name__} cannot be "
                      "stored in a model file and are not saved", UserWarning, stacklevel=4)
    return kinds, arrays


# ----------------------------------------------------------------- checksum
def _checksum(arrays: dict[str, np.ndarray]) -> bytes:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        if name == _CHECKSUM:
            continue
        arr = arrays[name]
        digest.update(f"{name}\0{arr.dtype.str}\0{arr.shape}\0".encode())
        digest.update(np.ascontiguousarray(arr))  # the buffer itself: no copy of big factors
    return digest.digest()


def _bytes_array(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).copy()


# --------------------------------------------------------------------- save
def _is_file_object(target: Any, method: str) -> bool:
    return callable(getattr(target, method, None)) and not isinstance(target, (str, bytes, os.PathLike))


def save_model(model: FactorModel, path: Any) -> None:
    """Write a fitted model to ``path`` atomically (see the module docstring).

    ``path`` (``str`` or ``os.PathLike``) is used as given; no suffix is added.
    A binary file object opened for writing also works (written in place, so
    not atomically).  The file holds no pickled objects.  ``pickle`` also
    works for models (for ``multiprocessing``) but must never be used on
    files you do not trust.

    Raises
    ------
    TypeError
        ``model`` is not a fastrec model or ``path`` is not a path.
    NotFittedError
        The model has not been fitted.
    ValueError
        The model's factors hold NaN or infinite values (nothing is written).
    OSError
        The file cannot be written; any previous file at ``path`` is kept.
    """
    if not isinstance(model, FactorModel):
        raise TypeError(f"model must be a fastrec model, got {type(model).__name__}")
    to_file = _is_file_object(path, "write")
    if not to_file:
        path = check_path(path)
    state = model._require_state()
    if non_finite(state.user_factors, state.item_factors, state.item_bias):
        raise ValueError(f"this {type(model).__name__} has NaN or infinite factors; refusing to save a model "
                         "that would give wrong answers (refit it)")
    params, dropped = _encode_params(model)
    attributes, arrays = _fitted_attributes(model)
    csr = state.user_items
    arrays.update({
        "user_factors": np.ascontiguousarray(state.user_factors),
        "item_factors": np.ascontiguousarray(state.item_factors),
        "user_items_indptr": np.ascontiguousarray(csr.indptr),
        "user_items_indices": np.ascontiguousarray(csr.indices),
        "user_items_data": np.ascontiguousarray(csr.data),
    })
    if state.item_bias is not None:
        arrays["item_bias"] = np.ascontiguousarray(state.item_bias)
    for name, id_map in (("user_map", state.user_map), ("item_map", state.item_map)):
        if id_map is not None:
            arrays[name] = np.ascontiguousarray(id_map.labels)
    from ._version import __version__
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "model_class": _class_key(type(model)),
        "params": params,
        "fitted_params": _encode_fitted_params(model, state),
        "dropped_params": dropped,
        "attributes": attributes,
    }
    arrays[_META] = _bytes_array(json.dumps(meta, sort_keys=True).encode("utf-8"))
    arrays[_CHECKSUM] = _bytes_array(_checksum(arrays))
    for name, arr in arrays.items():  # np.savez would pickle these silently
        if arr.dtype.hasobject:
            raise TypeError(f"cannot store {name!r}: object arrays are not allowed in model files")
    if to_file:
        np.savez(path, **arrays)
    else:
        _write_atomic(path, arrays)


def _encode_fitted_params(model: FactorModel, state: FittedState) -> dict[str, Any]:
    """The hyperparameters the state was fitted with, those a file can hold."""
    names = set(model._get_param_names())
    encoded = {}
    for name, value in state.params.items():
        if name in names:
            with contextlib.suppress(_Unstorable):
                encoded[name] = _encode_value(value)
    return encoded


def _new_file_mode(path: str) -> int:
    """Keep an existing file's permissions; otherwise what ``open`` would give."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        pass
    umask = 0o022
    with contextlib.suppress(OSError, ValueError):  # os.umask() cannot be read thread-safely
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    umask = int(line.split()[1], 8)
    return 0o666 & ~umask


def _write_atomic(path: str, arrays: dict[str, np.ndarray]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    mode = _new_file_mode(path)
    tmp = tempfile.NamedTemporaryFile(dir=directory, prefix=f".{os.path.basename(path)}.",
                                      suffix=".tmp", delete=False)
    try:
        with tmp:
            np.savez(tmp, **arrays)  # a file object: numpy adds no suffix
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp.name, mode)
        os.replace(tmp.name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp.name)
        raise
    with contextlib.suppress(OSError):  # make the rename durable where the OS allows it
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------------- load
def load_model(path: Any, expected_class: type | None = None) -> FactorModel:
    """Read a model written by ``save_model``; it serves exactly as before saving.

    Parameters
    ----------
    path : str or os.PathLike
    expected_class : FactorModel subclass, optional
        The file must hold this class or a subclass of it (``ALS.load`` passes ALS).

    Raises
    ------
    FileNotFoundError, OSError
        ``path`` cannot be opened.
    ModelFormatError
        The file is truncated, corrupted, not a fastrec model, written by a
        newer format version, or holds another model class.
    """
    if _is_file_object(path, "read"):
        label = str(getattr(path, "name", "the model file"))
        arrays = _read_container(path, label)
        path = label
    else:
        path = check_path(path)
        with open(path, "rb") as fh:
            arrays = _read_container(fh, path)
    meta = _read_meta(arrays, path)
    if not hmac.compare_digest(arrays[_CHECKSUM].tobytes(), _checksum(arrays)):
        raise ModelFormatError(f"{path} is corrupted: its checksum does not match its contents")
    try:
        cls = _resolve_class(meta["model_class"], expected_class)
        state = _rebuild_state(arrays)
        attributes = {name: _attribute_value(cls, name, entry, arrays)
                      for name, entry in meta["attributes"].items()}
        model = _build_model(cls, meta)
        state = dataclasses.replace(state, params=_fitted_params(cls, model, meta), cache={})
    except (ValueError, TypeError, KeyError) as exc:  # ModelFormatError is a ValueError
        raise ModelFormatError(f"{path}: {exc}") from exc
    for name, value in attributes.items():
        setattr(model, name, value)
    model._state = state
    return model


def _read_container(fh: Any, label: str) -> dict[str, np.ndarray]:
    try:
        return _read_arrays(fh)
    except ModelFormatError:
        raise
    except Exception as exc:  # any failure to decode the container means a damaged file
        # numpy's own text may suggest allow_pickle=True: never repeat that advice
        raise ModelFormatError(f"{label} is not a readable fastrec model file "
                               f"(truncated, corrupted or not a model): {type(exc).__name__}") from exc


def _fitted_params(cls: type, model: FactorModel, meta: dict[str, Any]) -> dict[str, Any]:
    """The checked hyperparameters the saved state was fitted with.

    Files of format version 1 before fitted parameters were stored give the
    saved hyperparameters.  The thread count is this machine's, not the saver's.
    """
    fitted = meta.get("fitted_params") or {}
    if not isinstance(fitted, dict):
        raise ModelFormatError("metadata field 'fitted_params' is invalid")
    values = {**model.get_params(), **{k: _decode_value(v) for k, v in fitted.items()},
              "num_threads": model.get_params().get("num_threads", 0)}
    values = {k: v for k, v in values.items() if k in set(cls._get_param_names())}
    try:
        return cls(**values)._check_params()
    except (TypeError, ValueError) as exc:
        raise ModelFormatError(f"invalid fitted hyperparameters for {cls.__name__}: {exc}") from exc


def load(path: Any) -> FactorModel:
    """Read any fastrec model file, whatever its class (``ALS.load`` insists on ALS).

    See ``load_model`` for what is checked and raised.
    """
    return load_model(path)


def _read_arrays(fh: Any) -> dict[str, np.ndarray]:
    loaded = np.load(fh, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ModelFormatError("this is a single .npy array, not a fastrec model file")
    arrays = {}
    with loaded:
        for name in loaded.files:
            arr = loaded[name]
            if not isinstance(arr, np.ndarray) or arr.dtype.hasobject:
                raise ModelFormatError(f"member {name!r} is not a plain numeric or text array")
            arrays[name] = arr
    return arrays


def _read_meta(arrays: dict[str, np.ndarray], path: str) -> dict[str, Any]:
    foreign = f"{path} is not a fastrec model file (an .npz without fastrec's metadata)"
    raw = arrays.get(_META)
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
        raise ModelFormatError(foreign)
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise ModelFormatError(f"{path} is corrupted: unreadable metadata") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ModelFormatError(foreign)
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFormatError(f"{path} is corrupted: invalid format version {version!r}")
    if version > FORMAT_VERSION:
        from ._version import __version__
        raise ModelFormatError(
            f"{path} uses model format version {version} (written by fastrec "
            f"{meta.get('library_version', '?')}); this fastrec {__version__} reads up to version "
            f"{FORMAT_VERSION}. Upgrade fastrec to load it.")
    checksum = arrays.get(_CHECKSUM)
    if checksum is None or checksum.dtype != np.uint8 or checksum.shape != (32,):
        raise ModelFormatError(f"{path} is corrupted: its checksum is missing")
    types = {"model_class": str, "params": dict, "attributes": dict}
    for key, expected in types.items():
        if not isinstance(meta.get(key), expected):
            raise ModelFormatError(f"{path} is corrupted: metadata field {key!r} is missing or invalid")
    return meta


def _resolve_class(key: str, expected_class: type | None) -> type:
    cls = model_classes().get(key)
    if cls is None:
        raise ModelFormatError(f"the file holds a model of class {key!r}, which is not a fastrec model "
                               "class defined in this process (import the module defining it first)")
    if expected_class is not None and not issubclass(cls, expected_class):
        raise ModelFormatError(f"the file holds a model of class {key!r}, not {expected_class.__name__}; "
                               f"load it with {cls.__name__}.load")
    return cls


def _array(arrays: dict[str, np.ndarray], name: str, ndim: int, dtypes: tuple[str, ...],
           length: int | None = None) -> np.ndarray:
    arr = arrays.get(name)
    if arr is None:
        raise ModelFormatError(f"member {name!r} is missing")
    if arr.ndim != ndim or arr.dtype.name not in dtypes:
        raise ModelFormatError(f"member {name!r} has dtype {arr.dtype} and shape {arr.shape}; "
                               f"expected a {ndim}-D array of {' or '.join(dtypes)}")
    if length is not None and arr.shape[0] != length:
        raise ModelFormatError(f"member {name!r} has {arr.shape[0]} rows; expected {length}")
    return np.ascontiguousarray(arr)


def _rebuild_state(arrays: dict[str, np.ndarray]) -> FittedState:
    """A FittedState from the arrays, after checking every invariant the kernels rely on."""
    user_factors = _array(arrays, "user_factors", 2, _FLOAT_KINDS)
    n_users = user_factors.shape[0]
    item_factors = _array(arrays, "item_factors", 2, (user_factors.dtype.name,))
    n_items = item_factors.shape[0]
    if item_factors.shape[1] != user_factors.shape[1]:
        raise ModelFormatError("user and item factors have different numbers of columns")
    item_bias = None
    if "item_bias" in arrays:
        item_bias = _array(arrays, "item_bias", 1, (user_factors.dtype.name,), n_items)

    indptr = _array(arrays, "user_items_indptr", 1, ("int32", "int64"), n_users + 1)
    indices = _array(arrays, "user_items_indices", 1, ("int32",))
    data = _array(arrays, "user_items_data", 1, _FLOAT_KINDS, indices.size)
    problem = compressed_structure_problem(indptr, indices, n_users, n_items, data.size, canonical=True,
                                           minor="item")
    if problem is not None or indptr[-1] != indices.size:
        raise ModelFormatError(f"the seen-items matrix is malformed: {problem or 'trailing entries'}")
    user_items = sp.csr_matrix((data, indices, indptr), shape=(n_users, n_items))
    user_items.indices = indices  # scipy may widen index arrays; the kernels want int32
    user_items.indptr = indptr

    maps = []
    for name, count in (("user_map", n_users), ("item_map", n_items)):
        if name not in arrays:
            maps.append(None)
            continue
        labels = arrays[name]
        if labels.ndim != 1 or labels.size != count or not (labels.dtype == np.int64 or labels.dtype.kind == "U"):
            raise ModelFormatError(f"member {name!r} must hold {count} int64 or text ids")
        try:
            maps.append(IdMap(labels))
        except ValueError as exc:
            raise ModelFormatError(f"member {name!r}: {exc}") from exc
    return FittedState(user_factors, item_factors, user_items, item_bias, maps[0], maps[1])


def _build_model(cls: type, meta: dict[str, Any]) -> FactorModel:
    known = set(cls._get_param_names())
    unknown = sorted(set(meta["params"]) - known)
    if unknown:
        raise ModelFormatError(f"hyperparameter(s) {', '.join(unknown)} are unknown to {cls.__name__} "
                               "in this fastrec version")
    params = {name: _decode_value(value) for name, value in meta["params"].items()}
    try:
        model = cls(**params)
        check = getattr(model, "_check_params", None)
        if check is not None:
            check()
    except (TypeError, ValueError) as exc:
        raise ModelFormatError(f"invalid hyperparameters for {cls.__name__}: {exc}") from exc
    return model


def _attribute_value(cls: type, name: str, entry: Any, arrays: dict[str, np.ndarray]) -> Any:
    # only fitted-attribute names, so a file cannot replace methods or private state
    if not (name.isidentifier() and name.endswith("_") and not name.startswith("_")) or hasattr(cls, name):
        raise ModelFormatError(f"invalid fitted attribute name {name!r}")
    kind = entry.get("kind") if isinstance(entry, dict) else None
    if kind == "value":
        return _decode_value(entry.get("value"))
    arr = arrays.get(_ATTR_PREFIX + name)
    if kind != "array" or arr is None or arr.dtype.kind not in "biuf":
        raise ModelFormatError(f"fitted attribute {name!r} is missing or invalid")
    return arr
