"""``fastrec info``: what a model file holds, read through ``fastrec.load``.

The fastrec version that wrote the file is in the file's ``__meta__`` member
(UTF-8 JSON, see ``fastrec.persistence``), read here with
``numpy.load(allow_pickle=False)``; everything else comes from the loaded
model.  Loading verifies the file's checksum, so a loaded model means the
checksum matched.
"""
from __future__ import annotations

import json
import zipfile
from typing import Any

import numpy as np

from ..exceptions import ModelFormatError
from .features import feature_summary
from .inputs import load_model

__all__ = ["model_report"]


def _stored_meta(path: str) -> dict[str, Any] | None:
    """The file's metadata, or None when it cannot be read (``fastrec.load`` then says why)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            raw = archive["__meta__"]
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (OSError, ValueError, KeyError, AttributeError, TypeError, zipfile.BadZipFile):
        return None
    return meta if isinstance(meta, dict) else None


def _id_kind(id_map: Any, n: int) -> str:
    if id_map is None:
        return f"none (ids are indices 0..{n - 1})"
    return "integers" if id_map.labels.dtype.kind == "i" else "text"


def model_report(path: str) -> tuple[dict[str, Any], ModelFormatError | None]:
    """A report on the model file at ``path``, and the error that kept it from loading, if any.

    A file that is not a fastrec model at all raises; one whose metadata can
    be read but that does not load (a checksum mismatch, say) gives what the
    metadata tells and the error.
    """
    meta = _stored_meta(path)
    try:
        model = load_model(path)
        problem = None
    except ModelFormatError as exc:
        if meta is None or meta.get("format") != "fastrec-model":
            raise
        model, problem = None, exc
    meta = meta or {}
    report: dict[str, Any] = {
        "file": path,
        "class": type(model).__name__ if model is not None else meta.get("model_class"),
        "library_version": meta.get("library_version"),  # the fastrec that wrote the file
        "format_version": meta.get("format_version"),
    }
    if problem is not None:
        mismatch = "checksum" in str(problem)
        report["checksum"] = ("MISMATCH: the file is corrupted" if mismatch
                              else f"not verified: the model does not load ({problem})")
        # as stored: JSON, with dtypes as {"__dtype__": name} (see fastrec.persistence)
        report["parameters"] = {name: value.get("__dtype__", value) if isinstance(value, dict) else value
                                for name, value in (meta.get("params") or {}).items()}
        return report, problem
    state = model._require_state()
    vectors = state.item_factors
    report.update({
        "checksum": "ok (verified on load)",
        "users": model.n_users_,
        "items": model.n_items_,
        "factors": None if vectors is None else vectors.shape[1],
        "neighbours": None if state.item_similarity is None else state.item_similarity.nnz,
        "interactions": model.user_items_.nnz,
        "dtype": str(state.dtype),
        "item_bias": state.item_bias is not None,
        "raw_user_ids": _id_kind(model.user_map_, model.n_users_),
        "raw_item_ids": _id_kind(model.item_map_, model.n_items_),
        "parameters": model.get_params(),
    })
    for side in ("user", "item"):
        summary = feature_summary(getattr(state, f"{side}_features"))
        if summary is not None:
            report[f"{side}_features"] = summary
    return report, None
