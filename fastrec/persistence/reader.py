"""Loading: every member checked before anything is built; loading never runs code."""
from __future__ import annotations

import dataclasses
import hmac
import json
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..data.idmap import IdMap
from ..exceptions import ModelFormatError
from ..models.base import Recommender
from ..models.state import FittedState
from ..utils.validation import check_path, compressed_structure_problem
from .codec import (_ATTR_PREFIX, _CHECKSUM, _FLOAT_KINDS, _META, FORMAT_NAME, FORMAT_VERSION, _checksum,
                    _decode_value, _is_file_object, model_classes)


# --------------------------------------------------------------------- load
def load_model(path: Any, expected_class: type | None = None) -> Recommender:
    """Read a model written by ``save_model``; it serves exactly as before saving.

    Parameters
    ----------
    path : str or os.PathLike
    expected_class : Recommender subclass, optional
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
        state = _with_features(_rebuild_state(arrays), arrays, meta.get("features") or {})
        for member in cls._state_members:  # what this class serves from
            if getattr(state, member) is None:
                raise ModelFormatError(f"member {member!r} is missing")
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


def _fitted_params(cls: type, model: Recommender, meta: dict[str, Any]) -> dict[str, Any]:
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


def load(path: Any) -> Recommender:
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
        from .._version import __version__
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
    if cls is None and ":" not in key:
        # one of fastrec's own models, not imported yet (``fastrec.models`` imports them on first use)
        import fastrec.models
        if key in fastrec.models.__all__:
            getattr(fastrec.models, key)
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


def _csr_member(arrays: dict[str, np.ndarray], prefix: str, shape: tuple[int, int], dtypes: tuple[str, ...],
                minor: str) -> sp.csr_matrix:
    """A canonical CSR from ``<prefix>_indptr/_indices/_data``, its structure checked first."""
    indptr = _array(arrays, f"{prefix}_indptr", 1, ("int32", "int64"), shape[0] + 1)
    indices = _array(arrays, f"{prefix}_indices", 1, ("int32",))
    data = _array(arrays, f"{prefix}_data", 1, dtypes, indices.size)
    problem = compressed_structure_problem(indptr, indices, shape[0], shape[1], data.size, canonical=True,
                                           minor=minor)
    if problem is not None or indptr[-1] != indices.size:
        raise ModelFormatError(f"member {prefix!r} is malformed: {problem or 'trailing entries'}")
    matrix = sp.csr_matrix((data, indices, indptr), shape=shape)
    matrix.indices = indices  # scipy may widen index arrays; the kernels want int32
    matrix.indptr = indptr
    return matrix


def _model_shape(arrays: dict[str, np.ndarray]) -> tuple[int, int]:
    """(users, items): stored since format 2; format 1 files have both factor matrices."""
    if "shape" in arrays:
        shape = _array(arrays, "shape", 1, ("int64",), 2)
        if shape.min() < 0 or shape.max() > np.iinfo(np.int32).max:
            raise ModelFormatError(f"member 'shape' holds an invalid shape {shape.tolist()}")
        return int(shape[0]), int(shape[1])
    users = _array(arrays, "user_factors", 2, _FLOAT_KINDS)
    items = _array(arrays, "item_factors", 2, _FLOAT_KINDS)
    return users.shape[0], items.shape[0]


def _rebuild_state(arrays: dict[str, np.ndarray]) -> FittedState:
    """A FittedState from the arrays, after checking every invariant the kernels rely on."""
    n_users, n_items = _model_shape(arrays)
    dtype = None
    factors = {}
    for side, count in (("user", n_users), ("item", n_items)):
        name = f"{side}_factors"
        factors[side] = None
        if name in arrays:
            factors[side] = _array(arrays, name, 2, (dtype,) if dtype else _FLOAT_KINDS, count)
            dtype = factors[side].dtype.name
    if factors["user"] is not None and factors["item"] is not None \
            and factors["item"].shape[1] != factors["user"].shape[1]:
        raise ModelFormatError("user and item factors have different numbers of columns")
    similarity = None
    if "item_similarity_indptr" in arrays:
        similarity = _csr_member(arrays, "item_similarity", (n_items, n_items),
                                 (dtype,) if dtype else _FLOAT_KINDS, "item")
        dtype = similarity.dtype.name
    if dtype is None:
        raise ModelFormatError("the file holds neither factors nor item similarities")
    item_bias = None
    if "item_bias" in arrays:
        item_bias = _array(arrays, "item_bias", 1, (dtype,), n_items)
    user_items = _csr_member(arrays, "user_items", (n_users, n_items), _FLOAT_KINDS, "item")

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
    return FittedState(factors["user"], factors["item"], user_items, item_bias, maps[0], maps[1],
                       item_similarity=similarity)


def _with_features(state: FittedState, arrays: dict[str, np.ndarray], meta: Any) -> FittedState:
    """``state`` with the side features stored in the file (names, matrices, factors), checked."""
    from ..models.side import SideFeatures
    if not isinstance(meta, dict):
        raise ModelFormatError("metadata field 'features' is invalid")
    sides = {}
    for side, count in (("user", state.n_users), ("item", state.n_items)):
        entry = meta.get(side)
        prefix = f"{side}_features"
        if entry is None:
            if f"{prefix}_names" in arrays:
                raise ModelFormatError(f"member {prefix + '_names'!r} has no metadata")
            continue
        names = arrays.get(f"{prefix}_names")
        if not isinstance(entry, dict) or names is None or names.ndim != 1 or names.dtype.kind != "U":
            raise ModelFormatError(f"the {side} features are missing or invalid")
        n_side = entry.get("n_side")
        if not isinstance(n_side, int) or isinstance(n_side, bool) or not 0 <= n_side <= names.size:
            raise ModelFormatError(f"the {side} features' n_side is invalid")
        dtype = state.dtype.name
        factors = _array(arrays, f"{prefix}_factors", 2, (dtype,), names.size)
        k = state.item_factors.shape[1] if state.item_factors is not None else factors.shape[1]
        if factors.shape[1] != k:
            raise ModelFormatError(f"member {prefix + '_factors'!r} has {factors.shape[1]} columns; expected {k}")
        bias = _array(arrays, f"{prefix}_bias", 1, (dtype,), names.size) if f"{prefix}_bias" in arrays else None
        matrix = _csr_member(arrays, prefix, (count, names.size), (dtype,), "feature")
        spec = entry.get("spec")
        if spec is not None and not isinstance(spec, dict):
            raise ModelFormatError(f"the {side} features' spec is invalid")
        sides[f"{side}_features"] = SideFeatures(matrix, names, n_side, bool(entry.get("normalize", False)),
                                                 factors, bias, spec)
    return dataclasses.replace(state, **sides) if sides else state


def _build_model(cls: type, meta: dict[str, Any]) -> Recommender:
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
