"""Interaction weighting schemes as pure functions.

Each ``*_values`` function takes the entries of a users x items matrix in
coordinate form (``users``, ``items``, ``values`` and the ``shape``) and
returns a NEW float64 array of weights, one per entry; nothing is modified in
place.  ``bm25`` and ``tfidf`` also accept a scipy sparse matrix and return a
new CSR matrix.

Negative values mean "thumbs down".  The magnitude schemes (``log1p``,
``bm25``, ``tfidf``) transform ``|value|`` and keep the sign, so a negative
stays negative.  Zero entries stay zero.

The text-retrieval schemes treat each user as a document and each item as a
term: an item that many users touched says little about any one of them.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = [
    "binarize_values",
    "log1p_values",
    "bm25_values",
    "tfidf_values",
    "recency_values",
    "bm25",
    "tfidf",
]


def binarize_values(values: np.ndarray, threshold: float,
                    negative_threshold: float | None = None) -> np.ndarray:
    """1 where ``value >= threshold``, -1 where ``value <= negative_threshold``, else 0."""
    values = np.asarray(values)
    out = np.where(values >= threshold, 1.0, 0.0)
    if negative_threshold is not None:
        out[values <= negative_threshold] = -1.0
    return out


def log1p_values(values: np.ndarray) -> np.ndarray:
    """``sign(v) * log(1 + |v|)``: dampens large counts (plays, clicks), keeps the sign."""
    values = np.asarray(values, dtype=np.float64)
    return np.sign(values) * np.log1p(np.abs(values))


def _document_frequency(users: np.ndarray, items: np.ndarray, values: np.ndarray,
                        shape: tuple[int, int]) -> tuple[np.ndarray, int]:
    """Per item, how many users have a non-zero entry; and the number of users."""
    nonzero = values != 0
    df = np.bincount(items[nonzero], minlength=shape[1]).astype(np.float64)
    return df, shape[0]


def bm25_values(users: np.ndarray, items: np.ndarray, values: np.ndarray,
                shape: tuple[int, int], K1: float = 1.2, B: float = 0.75) -> np.ndarray:
    """Okapi BM25 weights with users as documents and items as terms.

    ``w' = sign(w) * idf_i * |w| (K1 + 1) / (|w| + K1 (1 - B + B len_u / avg_len))``

    where ``len_u`` is the sum of ``|w|`` over user u's entries, ``avg_len``
    its mean over users with at least one entry, and
    ``idf_i = log(1 + (N - df_i + 0.5) / (df_i + 0.5))`` with ``N`` users and
    ``df_i`` users having item i.  This idf is always positive, so even an item
    every user has keeps a small weight.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values.copy()
    magnitude = np.abs(values)
    df, n_docs = _document_frequency(users, items, values, shape)
    idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))
    length = np.bincount(users, weights=magnitude, minlength=shape[0])
    active = np.bincount(users[values != 0], minlength=shape[0]) > 0
    avg_len = length[active].mean() if active.any() else 1.0
    norm = (1.0 - B) + B * length[users] / (avg_len if avg_len > 0 else 1.0)
    # zero entries stay zero (and skip a possible 0/0 for users with no weight)
    tf = np.divide(magnitude * (K1 + 1.0), magnitude + K1 * norm,
                   out=np.zeros_like(magnitude), where=magnitude > 0)
    return np.sign(values) * tf * idf[items]


def tfidf_values(users: np.ndarray, items: np.ndarray, values: np.ndarray,
                 shape: tuple[int, int]) -> np.ndarray:
    """TF-IDF weights with users as documents and items as terms.

    ``w' = w * idf_i`` with the smoothed ``idf_i = log((1 + N) / (1 + df_i)) + 1``
    (``N`` users, ``df_i`` users having item i), which is at least 1.
    """
    values = np.asarray(values, dtype=np.float64)
    df, n_docs = _document_frequency(users, items, values, shape)
    idf = np.log((1.0 + n_docs) / (1.0 + df)) + 1.0
    return values * idf[items]


def recency_values(values: np.ndarray, timestamps: np.ndarray, half_life: float,
                   reference_time: float | None = None) -> np.ndarray:
    """Exponential time decay: ``w * 0.5 ** ((t_ref - t) / half_life)``.

    ``t_ref`` defaults to the latest timestamp, so the newest entry keeps its
    weight and one ``half_life`` earlier (in timestamp units) halves it.
    """
    values = np.asarray(values, dtype=np.float64)
    timestamps = np.asarray(timestamps, dtype=np.float64)
    if values.size == 0:
        return values.copy()
    t_ref = timestamps.max() if reference_time is None else float(reference_time)
    return values * np.exp2(-(t_ref - timestamps) / half_life)


def _on_sparse(func: Any, X: Any, **kwargs: Any) -> sp.csr_matrix:
    """Apply a coordinate-form weighting to a sparse matrix; returns a new CSR."""
    if not sp.issparse(X):
        raise TypeError(f"X must be a scipy.sparse matrix, got {type(X).__name__}")
    coo = sp.coo_matrix(X, copy=True)
    coo.sum_duplicates()
    rows, cols = coo.row.astype(np.int64), coo.col.astype(np.int64)
    data = func(rows, cols, coo.data, coo.shape, **kwargs)
    out = sp.csr_matrix((data.astype(coo.dtype if coo.dtype.kind == "f" else np.float64), (rows, cols)),
                        shape=coo.shape)
    out.sort_indices()
    return out


def bm25(X: Any, K1: float = 1.2, B: float = 0.75) -> sp.csr_matrix:
    """BM25-weighted copy of a users x items sparse matrix (see ``bm25_values``)."""
    return _on_sparse(bm25_values, X, K1=K1, B=B)


def tfidf(X: Any) -> sp.csr_matrix:
    """TF-IDF-weighted copy of a users x items sparse matrix (see ``tfidf_values``)."""
    return _on_sparse(tfidf_values, X)
