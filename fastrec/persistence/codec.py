"""The file format's pieces: class registry, JSON values, the checksum."""
from __future__ import annotations

import hashlib
import numbers
import os
import warnings
from typing import Any

import numpy as np

from ..exceptions import ModelFormatError
from ..models.base import Recommender

FORMAT_NAME = "fastrec-model"
FORMAT_VERSION = 2  # 2: 'shape' member; factors optional; item similarities

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
    """The model classes a file may name: every ``Recommender`` subclass defined so far."""
    found: dict[str, type] = {}
    pending = list(Recommender.__subclasses__())
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


def _encode_params(model: Recommender) -> tuple[dict[str, Any], list[str]]:
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


def _fitted_attributes(model: Recommender) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
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


def _is_file_object(target: Any, method: str) -> bool:
    return callable(getattr(target, method, None)) and not isinstance(target, (str, bytes, os.PathLike))


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


