"""A self-contained HTML page on a re-ranker: metrics before and after, the trade-off curve, the long tail.

Figures are drawn with matplotlib (the ``[report]`` extra) through its Agg
canvas, without pyplot, so the caller's backend is untouched, and embedded as
base64 PNG: the page needs no network and no other file.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..utils.validation import check_int, check_path
from .beyond import item_popularity, long_tail_items
from .evaluate import ranking_metrics, recommended_lists
from .fairness import arp, exposure_share
from .tradeoff import LOWER_IS_BETTER, fairness_of, tradeoff

__all__ = ["rerank_report", "write_html"]

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;color:#222}"
          "table{border-collapse:collapse}td,th{padding:.3em .8em;border-bottom:1px solid #ddd;"
          "text-align:right}th:first-child,td:first-child{text-align:left}img{max-width:100%}")


def _figure(width: float = 6.4, height: float = 4.2) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("the report needs matplotlib: pip install 'fastrec[report]'") from exc
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _curve(table: Any, metric: str, name: str) -> str:
    figure = _figure()
    ax = figure.add_subplot()
    values, x, y = table["value"], table[metric], table["ndcg"]
    ax.plot(x[1:], y[1:], "o-", label=name)
    ax.plot(x[:1], y[:1], "s", color="black", label="model without re-ranking")
    for v, xi, yi in zip(values[1:], x[1:], y[1:]):
        ax.annotate(f"{v:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(f"{metric} ({'lower' if metric in LOWER_IS_BETTER else 'higher'} is better)")
    ax.set_ylabel("ndcg")
    ax.set_title("accuracy against " + metric)
    ax.legend()
    return _png(figure)


def _long_tail(popularity: np.ndarray, before: np.ndarray, after: np.ndarray) -> str:
    figure = _figure()
    ax = figure.add_subplot()
    for lists, label, marker in ((before, "model", "o"), (after, "re-ranked", "x")):
        counts = np.bincount(lists[lists >= 0], minlength=popularity.size)
        shown = counts > 0
        ax.scatter(popularity[shown] + 1, counts[shown], s=10, marker=marker, alpha=0.6, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("item popularity in training (users, +1)")
    ax.set_ylabel("times recommended")
    ax.set_title("long tail: how often each item is recommended")
    ax.legend()
    return _png(figure)


def write_html(path: Any, title: str, sections: Sequence[tuple[str, str]]) -> Path:
    """Write one page: ``sections`` are (heading, HTML body) pairs."""
    target = Path(check_path(path, "path"))
    body = "".join(f"<h2>{html.escape(heading)}</h2>\n{content}\n" for heading, content in sections)
    target.write_text(f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                      f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n{body}</body></html>\n",
                      encoding="utf-8")
    return target


def _table(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(row[c]))}</td>" for c in columns) + "</tr>"
                    for row in rows)
    return f"<table><tr>{head}</tr>{cells}</table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.4g}"
    return str(value)


def rerank_report(path: Any, model: Any, train: Any, test: Any, reranker: Any, k: int = 10,
                  values: Sequence[float] | None = None, title: str | None = None) -> dict[str, dict[str, float]]:
    """Write the HTML report of ``reranker`` on ``model`` to ``path``; return the metrics shown.

    The page holds the metrics of the model's lists and of the re-ranked
    ones (ndcg, precision, recall, coverage, the re-ranker's own metric, APLT,
    ARP and the long tail's discounted exposure share), the accuracy against
    fairness curve over ``values`` (see ``tradeoff``) and the long-tail plot:
    each item's training popularity against how often it is recommended,
    before and after.
    """
    k = check_int(k, "k", minimum=1)
    users, before, relevant, train_csr = recommended_lists(model, train, test, k)
    _, after, _, _ = recommended_lists(model, train, test, k, rerank=reranker)
    popularity = item_popularity(train_csr)
    tail = long_tail_items(popularity)
    metrics: dict[str, dict[str, float]] = {}
    for label, lists in (("model", before), ("re-ranked", after)):
        summary = ranking_metrics(lists, relevant, k, ["ndcg", "precision", "recall", "coverage", "long_tail"],
                                  users=users, train=train_csr)
        metrics[label] = {"ndcg": summary["ndcg"], "precision": summary["precision"], "recall": summary["recall"],
                          "coverage": summary["coverage"],
                          reranker.metric: fairness_of(reranker, model, train_csr, lists, users, k),
                          "aplt": summary["long_tail"], "arp": arp(lists, train_csr, k, users=users),
                          "long-tail exposure": exposure_share(lists, tail, tail.size, k)}
    rows = [{"metric": f"{name}@{k}", "model": metrics["model"][name], "re-ranked": metrics["re-ranked"][name],
             "change": f"{metrics['re-ranked'][name] / metrics['model'][name] - 1:+.1%}"
             if metrics["model"][name] else ""} for name in metrics["model"]]
    curve = tradeoff(model, train_csr, relevant, reranker, values, k)
    title = title or f"{reranker!r} on {type(model).__name__}"
    write_html(path, title, [
        ("Metrics", f"<p>{users.size:,} test users, top {k}; re-ranking {reranker.candidates} candidates "
                    f"per user.</p>" + _table(rows)),
        ("Accuracy against " + reranker.metric,
         f"<p>Each point is one value of {reranker.swept}.</p>"
         "<img alt='trade-off curve' src='data:image/png;base64,"
         f"{_curve(curve, reranker.metric, type(reranker).__name__)}'>" + _table(curve.records())),
        ("Long tail", f"<img alt='long-tail plot' src='data:image/png;base64,"
                      f"{_long_tail(popularity, before, after)}'>"),
    ])
    return metrics
