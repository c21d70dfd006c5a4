"""``fastrec evaluate --rerank NAME:VALUE [--item-groups FILE] [--report FILE]``: re-rank, score, report."""
from __future__ import annotations

import argparse
from typing import Any, TextIO

import numpy as np
import scipy.sparse as sp

__all__ = ["read_item_groups", "rerank_and_report"]


def read_item_groups(path: str, item_map: Any) -> sp.csr_matrix:
    """Items x groups 0/1 matrix from a text file, aligned with ``item_map`` (an IdMap).

    Each line is ``item_id::title::Group1|Group2`` (MovieLens ``movies.dat``)
    or ``item_id,Group1|Group2`` (a comma or a tab after the id); items the
    file does not list have no group, and ids the data does not hold are skipped.
    """
    index = {str(label): i for i, label in enumerate(item_map.labels.tolist())}
    names: dict[str, int] = {}
    rows, cols = [], []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith("#"):
                continue
            if "::" in line:
                fields = line.split("::")
                item, groups = fields[0], fields[-1]
            else:
                item, _, groups = line.replace("\t", ",", 1).partition(",")
            row = index.get(item.strip())
            if row is None:
                continue
            for group in filter(None, (g.strip() for g in groups.split("|"))):
                rows.append(row)
                cols.append(names.setdefault(group, len(names)))
    if not names:
        raise ValueError(f"--item-groups {path}: no groups for any item of the data (expected lines "
                         "'item_id::title::A|B' or 'item_id,A|B')")
    matrix = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(item_map), len(names)))
    matrix.data[:] = 1.0  # an item listed twice keeps weight 1 per group
    return matrix


def rerank_and_report(args: argparse.Namespace, model: Any, train: Any, relevant: Any, k: int,
                      metrics: Any, out: TextIO) -> dict[str, Any]:
    """Score the re-ranked lists (and write ``--report``); returns the re-ranked metrics to show."""
    from ..evaluation.evaluate import evaluate
    from ..rerank import parse_reranker
    groups = read_item_groups(args.item_groups, train.item_map) if args.item_groups else None
    reranker = parse_reranker(args.rerank, item_groups=groups)
    summary = evaluate(model, train, relevant, k=k, metrics=metrics, rerank=reranker)
    shown = {m: summary[m] for m in summary if not m.startswith("n_users")}
    if args.report:
        from ..evaluation.report import rerank_report
        rerank_report(args.report, model, train, relevant, reranker, k=k)
    return {"rerank": args.rerank, "metrics": shown, "report": args.report}
