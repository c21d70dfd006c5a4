"""Model and weighting options of the ``fastrec`` command, turned into library objects.

Everything here raises ``ValueError`` with a message fit for one line on
stderr; ``fastrec.cli.commands`` turns it into exit status 1.
"""
from __future__ import annotations

import inspect
from typing import Any, Sequence

from ..data.interactions import Interactions
from ..models.als import ALS
from ..models.bpr import BPR
from ..models.ease import EASE
from ..models.knn import SIMILARITIES, ItemKNN

__all__ = ["MODEL_CHOICES", "MODEL_OPTIONS", "SIMILARITIES", "WEIGHTINGS", "check_applies", "model_defaults",
           "build_model", "check_weighting", "apply_weighting", "describe"]

MODEL_CHOICES = ("als", "bpr", "warp", "knn", "ease")
_FACTOR_MODELS = ("als", "bpr", "warp")
WEIGHTINGS = ("raw", "binary", "log1p", "bm25", "tfidf")
DEFAULT_THRESHOLD = 0.0

# CLI option -> (estimator parameter, models that take it)
_MODEL_OPTIONS = {
    "factors": ("factors", _FACTOR_MODELS),
    "iterations": ("iterations", _FACTOR_MODELS),
    "regularization": ("regularization", _FACTOR_MODELS + ("ease",)),
    "alpha": ("alpha", ("als",)),
    "learning_rate": ("learning_rate", ("bpr", "warp")),
    "neighbours": ("k", ("knn",)),
    "similarity": ("similarity", ("knn",)),
    "shrinkage": ("shrinkage", ("knn",)),
    "threads": ("num_threads", MODEL_CHOICES),
    "seed": ("random_state", _FACTOR_MODELS),
}
# the CLI option names build_model takes (the ``argparse`` destinations)
MODEL_OPTIONS = tuple(_MODEL_OPTIONS)
# options that also do something else (--seed seeds the split): passed on where taken, never rejected
_NOT_ONLY_FOR_MODELS = ("seed",)


def check_applies(option: str, value: Any, selector: str, chosen: str, takers: Sequence[str]) -> None:
    """Reject an option given with a ``selector`` choice it does not apply to.

    ``check_applies("alpha", 3.0, "model", "bpr", ("als",))`` raises
    ``--alpha does not apply to --model bpr (it is for --model als)``;
    a None ``value`` (the option was not given) always passes.
    """
    if value is None or chosen in takers:
        return
    flag, choice = "--" + option.replace("_", "-"), "--" + selector
    raise ValueError(f"{flag} does not apply to {choice} {chosen} (it is for {choice} "
                     f"{' or '.join(takers)})")


def _estimator(model: str) -> type:
    return {"als": ALS, "knn": ItemKNN, "ease": EASE}.get(model, BPR)


def model_defaults(option: str) -> str:
    """The default of a model option for each model that takes it, for ``--help``."""
    param, models = _MODEL_OPTIONS[option]
    values: dict[Any, list[str]] = {}
    for name in models:
        value = inspect.signature(_estimator(name).__init__).parameters[param].default
        values.setdefault(value, []).append(name)
    if len(values) == 1:
        return str(next(iter(values)))
    return ", ".join(f"{value} for {'/'.join(names)}" for value, names in values.items())


def build_model(model: str, show_progress: bool, **options: Any) -> Any:
    """An unfitted ALS, BPR/WARP, ItemKNN (``knn``) or EASE from CLI options.

    None options keep the model's defaults.  Raises ``ValueError`` for an
    option the chosen model does not take.
    """
    params: dict[str, Any] = {"show_progress": show_progress} if model in _FACTOR_MODELS else {}
    for option, value in options.items():
        param, models = _MODEL_OPTIONS[option]
        if option in _NOT_ONLY_FOR_MODELS and model not in models:
            continue
        check_applies(option, value, "model", model, models)
        if value is not None:
            params[param] = value
    if model in ("bpr", "warp"):
        return BPR(loss=model, **params)
    return _estimator(model)(**params)


def check_weighting(weighting: str, threshold: float | None) -> float:
    """The ``--threshold`` to use; it must not be given without ``--weighting binary``."""
    check_applies("threshold", threshold, "weighting", weighting, ("binary",))
    return DEFAULT_THRESHOLD if threshold is None else threshold


def apply_weighting(data: Interactions, weighting: str, threshold: float = DEFAULT_THRESHOLD
                    ) -> Interactions:
    """The weighting a ``--weighting`` option names (``raw`` keeps the weights).

    ``threshold`` is the one ``check_weighting`` returned.
    """
    if weighting == "raw":
        return data
    if weighting == "binary":
        return data.binarize(threshold)
    return getattr(data, weighting)()


def describe(model: Any) -> str:
    """``ALS(factors=64, ...)`` with only the parameters a reader cares about."""
    keep = ("loss", "factors", "iterations", "regularization", "alpha", "learning_rate",
            "regularization_scaling", "unobserved_weight", "k", "similarity", "shrinkage")
    params = model.get_params()
    shown = ", ".join(f"{name}={params[name]!r}" for name in keep if name in params)
    return f"{type(model).__name__}({shown})"
