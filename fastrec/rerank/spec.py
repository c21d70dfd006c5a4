"""Re-rankers from short text specs (``calibrated:0.5``), as the command line gives them."""
from __future__ import annotations

from typing import Any

from .base import Reranker

__all__ = ["parse_reranker", "RERANKER_NAMES"]

# name -> what its number sets
RERANKER_NAMES = {"calibrated": "tradeoff", "popularity": "tradeoff", "mmr": "tradeoff", "fair": "p"}


def parse_reranker(spec: str, item_groups: Any = None, candidates: int = 100) -> Reranker:
    """``NAME[:VALUE]`` -> a re-ranker: calibrated, popularity (xQuAD smooth), mmr, or fair (FA*IR).

    VALUE is the tradeoff (for ``fair``: p, with the long tail as the
    protected group).  ``calibrated`` needs ``item_groups``.
    """
    from . import MMR, Calibrated, FairTopK, PopularityDebias
    if not isinstance(spec, str):
        raise TypeError(f"rerank spec must be text such as 'calibrated:0.5', got {type(spec).__name__}")
    name, _, value_text = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in RERANKER_NAMES:
        raise ValueError(f"rerank: unknown re-ranker {name!r}; expected one of {', '.join(RERANKER_NAMES)} "
                         "(as NAME or NAME:VALUE, e.g. calibrated:0.5)")
    options: dict[str, Any] = {"candidates": candidates}
    if value_text.strip():
        try:
            options[RERANKER_NAMES[name]] = float(value_text)
        except ValueError:
            raise ValueError(f"rerank: {value_text!r} in {spec!r} is not a number") from None
    if name == "calibrated":
        if item_groups is None:
            raise ValueError("rerank: calibrated needs item groups (genres); pass item_groups "
                             "(--item-groups on the command line)")
        return Calibrated(item_groups, **options)
    if name == "popularity":
        return PopularityDebias(**options)
    if name == "mmr":
        return MMR(**options)
    return FairTopK("long_tail", **options)
