"""Saving: atomic by default, no pickle, refusing models that would answer wrongly."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any

import numpy as np

from ..models.base import Recommender
from ..models.state import FittedState, non_finite
from ..utils.validation import check_path
from .codec import (_CHECKSUM, _META, FORMAT_NAME, FORMAT_VERSION, _bytes_array, _checksum, _class_key,
                    _encode_params, _encode_value, _fitted_attributes, _is_file_object, _Unstorable)


# --------------------------------------------------------------------- save
def save_model(model: Recommender, path: Any) -> None:
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
    if not isinstance(model, Recommender):
        raise TypeError(f"model must be a fastrec model, got {type(model).__name__}")
    to_file = _is_file_object(path, "write")
    if not to_file:
        path = check_path(path)
    state = model._require_state()
    similarity = state.item_similarity
    if non_finite(state.user_factors, state.item_factors, state.item_bias,
                  None if similarity is None else similarity.data):
        raise ValueError(f"this {type(model).__name__} has NaN or infinite factors; refusing to save a model "
                         "that would give wrong answers (refit it)")
    params, dropped = _encode_params(model)
    attributes, arrays = _fitted_attributes(model)
    csr = state.user_items
    arrays["shape"] = np.array([state.n_users, state.n_items], dtype=np.int64)
    for name, matrix in (("user_items", csr), ("item_similarity", similarity)):
        if matrix is not None:
            arrays.update({f"{name}_indptr": np.ascontiguousarray(matrix.indptr),
                           f"{name}_indices": np.ascontiguousarray(matrix.indices),
                           f"{name}_data": np.ascontiguousarray(matrix.data)})
    for name, factors in (("user_factors", state.user_factors), ("item_factors", state.item_factors)):
        if factors is not None:
            arrays[name] = np.ascontiguousarray(factors)
    if state.item_bias is not None:
        arrays["item_bias"] = np.ascontiguousarray(state.item_bias)
    features_meta = _feature_members(state, arrays)
    for name, id_map in (("user_map", state.user_map), ("item_map", state.item_map)):
        if id_map is not None:
            arrays[name] = np.ascontiguousarray(id_map.labels)
    from .._version import __version__
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
    if features_meta:
        meta["features"] = features_meta
    arrays[_META] = _bytes_array(json.dumps(meta, sort_keys=True).encode("utf-8"))
    arrays[_CHECKSUM] = _bytes_array(_checksum(arrays))
    for name, arr in arrays.items():  # np.savez would pickle these silently
        if arr.dtype.hasobject:
            raise TypeError(f"cannot store {name!r}: object arrays are not allowed in model files")
    if to_file:
        np.savez(path, **arrays)
    else:
        _write_atomic(path, arrays)


def _feature_members(state: FittedState, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Add each side's features (matrix, names, factors, biases) to ``arrays``; their metadata."""
    meta = {}
    for side, features in (("user", state.user_features), ("item", state.item_features)):
        if features is None:
            continue
        prefix = f"{side}_features"
        matrix = features.matrix
        arrays.update({f"{prefix}_indptr": np.ascontiguousarray(matrix.indptr, dtype=np.int64),
                       f"{prefix}_indices": np.ascontiguousarray(matrix.indices, dtype=np.int32),
                       f"{prefix}_data": np.ascontiguousarray(matrix.data),
                       f"{prefix}_names": np.ascontiguousarray(features.names.astype(str)),
                       f"{prefix}_factors": np.ascontiguousarray(features.factors)})
        if features.bias is not None:
            arrays[f"{prefix}_bias"] = np.ascontiguousarray(features.bias)
        meta[side] = {"n_side": int(features.n_side), "normalize": bool(features.normalize),
                      "spec": features.spec}
    return meta


def _encode_fitted_params(model: Recommender, state: FittedState) -> dict[str, Any]:
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


