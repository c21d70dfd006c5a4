"""Shared benchmark plumbing: data, the random split and one ranking-metric implementation.

Every library is scored by the same code: each model is reduced to
``(user_factors, item_factors, item_bias)`` and ``top_k_from_factors`` ranks
all items with the training items excluded, so differences in the libraries'
own ``recommend`` functions cannot leak into the comparison.
"""
from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ML1M = DATA / "ml-1m-implicit" / "interactions.tsv"


def load_ml1m() -> sp.csr_matrix:
    """ML-1M implicit as a binary users x items CSR (ids densified in sorted order)."""
    raw = np.loadtxt(ML1M, delimiter="\t", skiprows=1, usecols=(0, 1), dtype=np.int64)
    users, u_idx = np.unique(raw[:, 0], return_inverse=True)
    items, i_idx = np.unique(raw[:, 1], return_inverse=True)
    ones = np.ones(raw.shape[0], dtype=np.float32)
    X = sp.csr_matrix((ones, (u_idx, i_idx)), shape=(users.size, items.size))
    X.sum_duplicates()
    return X


def random_split(X: sp.csr_matrix, test_fraction: float = 0.2, seed: int = 42
                 ) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """A uniformly random split of the interactions (not of the users)."""
    coo = X.tocoo()
    rng = np.random.default_rng(seed)
    is_test = rng.random(coo.nnz) < test_fraction

    def part(mask: np.ndarray) -> sp.csr_matrix:
        m = sp.csr_matrix((coo.data[mask], (coo.row[mask], coo.col[mask])), shape=X.shape)
        m.sort_indices()
        return m

    return part(~is_test), part(is_test)


def top_k_from_factors(U: np.ndarray, V: np.ndarray, bias: np.ndarray | None,
                       exclude: sp.csr_matrix, k: int = 10, batch: int = 1024) -> np.ndarray:
    """Top-k item ids per user by ``U V^T + bias``, excluding ``exclude``'s items."""
    U = np.asarray(U, dtype=np.float32)
    V = np.asarray(V, dtype=np.float32)
    out = np.empty((U.shape[0], k), dtype=np.int64)
    for start in range(0, U.shape[0], batch):
        stop = min(start + batch, U.shape[0])
        scores = U[start:stop] @ V.T
        if bias is not None:
            scores += np.asarray(bias, dtype=np.float32)[None, :]
        seen = exclude[start:stop].tocoo()
        scores[seen.row, seen.col] = -np.inf
        part = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        out[start:stop] = np.take_along_axis(part, order, axis=1)
    return out


def ranking_metrics(top: np.ndarray, test: sp.csr_matrix, k: int = 10) -> dict[str, float]:
    """Mean ndcg@k and precision@k (hits / k) over users with test items; binary relevance."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)
    ndcg, prec = [], []
    for u in range(test.shape[0]):
        relevant = test.indices[test.indptr[u]:test.indptr[u + 1]]
        if relevant.size == 0:
            continue
        hits = np.isin(top[u, :k], relevant)
        ndcg.append(float(discounts[hits].sum() / ideal[min(relevant.size, k) - 1]))
        prec.append(float(hits.sum()) / k)
    return {f"ndcg@{k}": float(np.mean(ndcg)), f"p@{k}": float(np.mean(prec))}


def evaluate_factors(U, V, bias, train: sp.csr_matrix, test: sp.csr_matrix, k: int = 10) -> dict[str, float]:
    return ranking_metrics(top_k_from_factors(U, V, bias, train, k), test, k)


class Timer:
    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from fastrec import available_cpus, kernel_variant
    return f"{cpu}, {available_cpus()} usable CPUs, fastrec kernels: {kernel_variant()}"


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c, "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
