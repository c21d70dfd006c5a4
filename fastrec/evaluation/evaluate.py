"""evaluate() and ranking_metrics(): score rankings against held-out interactions."""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from .beyond import GLOBAL_BEYOND, PER_USER_BEYOND, global_beyond, per_user_beyond
from .metrics import ACCURACY_METRICS, accuracy_per_user, check_ranking, relevant_items
from ..utils.progress import Progress
from ..utils.table import Table
from ..utils.validation import check_bool, check_float, check_ids, check_int, check_interactions

__all__ = ["evaluate", "ranking_metrics", "recommended_lists", "check_metrics", "ALL_METRICS", "DEFAULT_METRICS"]

DEFAULT_METRICS = ("precision", "recall", "map", "ndcg", "mrr", "hit_rate")
ALL_METRICS = ACCURACY_METRICS + PER_USER_BEYOND + GLOBAL_BEYOND
_NEEDS_TRAIN = ("popularity", "test_popularity", "long_tail", "novelty")


def check_metrics(metrics: Any) -> tuple[str, ...]:
    if isinstance(metrics, str):
        metrics = ALL_METRICS if metrics == "all" else (metrics,)
    names = tuple(dict.fromkeys(metrics))
    unknown = [m for m in names if m not in ALL_METRICS]
    if unknown or not names:
        raise ValueError(f"metrics must be a non-empty list of names from {ALL_METRICS} (or 'all'); "
                         f"got unknown {unknown}" if unknown else "metrics must not be empty")
    return names


def _mean(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def _training_exclusions(train: sp.csr_matrix, relevant: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """Per row: training items that are not relevant test items (unrankable non-positives)."""
    train_rows = train[rows]
    overlap = train_rows.multiply(relevant[rows]).tocsr()
    return np.diff(train_rows.indptr) - np.diff(overlap.indptr)


def ranking_metrics(ranked_ids: Any, test: Any, k: int = 10, metrics: Sequence[str] | str = DEFAULT_METRICS,
                    users: Any = None, train: Any = None, item_features: Any = None,
                    exclude_train: bool = True, head_share: float = 0.8,
                    per_user: bool = False) -> dict[str, float] | tuple[dict[str, float], Any]:
    """Metrics at ``k`` of precomputed rankings against test interactions.

    Works with the output of any recommender: ``ranked_ids[r]`` lists item
    ids, best first, padded with -1.

    Parameters
    ----------
    ranked_ids : (n_rows, n) array of int
        Duplicate-free ids per row; ``n`` may be smaller than ``k``.
    test : sparse matrix or fastrec.Interactions, users x items
        Held-out interactions; positive entries are the relevant items.
    k : int >= 1
        Only the first ``k`` ids of each row count.
    metrics : sequence of str, or "all"
        Names from ``ALL_METRICS``.
    users : array of int, optional
        The test row (user index) of each ranking row.  By default ranking row
        r is user r, and ``ranked_ids`` must have one row per test user.
    train : sparse matrix or fastrec.Interactions, optional
        Training interactions, same shape as ``test``.  Needed by the
        popularity-based metrics; with ``exclude_train`` it also removes the
        users' training items from the AUC negatives.
    item_features : (n_items, d) array or sparse matrix, optional
        Item vectors (factors, or genre indicators) for ``diversity``.
    exclude_train : bool
        Whether the rankings left out each user's training items.
    head_share : float in (0, 1]
        Share of training interactions held by the popular head (``long_tail``).
    per_user : bool
        Also return a per-user table.

    Returns
    -------
    summary : dict
        Metric name -> mean over evaluated users (global metrics over all
        their lists), plus ``n_users_evaluated`` and ``n_users_skipped``
        (ranking rows whose user has no positive test item).
    table : fastrec Table, only with ``per_user=True``
        One row per evaluated user: ``user`` (test row index) and each
        per-user metric.  The same type whether or not pandas is installed;
        ``table.to_pandas()`` gives a DataFrame.
    """
    names = check_metrics(metrics)
    k = check_int(k, "k", minimum=1)
    exclude_train = check_bool(exclude_train, "exclude_train")
    per_user = check_bool(per_user, "per_user")
    head_share = check_float(head_share, "head_share", minimum=0.0, maximum=1.0, strict_minimum=True)
    relevant = relevant_items(test, "test")
    n_users, n_items = relevant.shape
    ranked = check_ranking(ranked_ids, n_items)
    if users is None:
        if ranked.shape[0] != n_users:
            raise ValueError(f"ranked_ids has {ranked.shape[0]} rows but test has {n_users} users; "
                             "pass users= to give the test row of each ranking row")
        rows = np.arange(n_users, dtype=np.int64)
    else:
        rows = check_ids(users, n_users, "users", allow_scalar=False)[0].astype(np.int64)
        if rows.size != ranked.shape[0]:
            raise ValueError(f"users has {rows.size} entries but ranked_ids has {ranked.shape[0]} rows")
    train_csr = None
    if train is not None:
        train_csr = check_interactions(train, "train", shape=(n_users, n_items), allow_empty=True)
    missing = [m for m in names if m in _NEEDS_TRAIN]
    if missing and train_csr is None:
        raise ValueError(f"metrics {missing} need train= (item popularity comes from the training data)")
    if "diversity" in names:
        if item_features is None:
            raise ValueError("the diversity metric needs item_features= (n_items x d vectors)")
        if not sp.issparse(item_features):
            item_features = np.asarray(item_features)
        if item_features.ndim != 2 or item_features.shape[0] != n_items:
            raise ValueError(f"item_features must be a 2-D array with one row per item ({n_items}); "
                             f"got shape {np.shape(item_features)}")

    has_test = np.diff(relevant.indptr)[rows] > 0
    rows = rows[has_test]
    top = np.ascontiguousarray(ranked[has_test, :k])
    table: dict[str, np.ndarray] = {"user": rows}
    accuracy = [m for m in names if m in ACCURACY_METRICS]
    if accuracy:
        excluded = None
        if train_csr is not None and exclude_train and "auc" in accuracy:
            excluded = _training_exclusions(train_csr, relevant, rows)
        values = accuracy_per_user(top, k, rows, relevant, excluded)
        for name in accuracy:
            table[name] = values[:, ACCURACY_METRICS.index(name)]
    table.update(per_user_beyond([m for m in names if m in PER_USER_BEYOND], top, rows, relevant,
                                 train_csr, item_features, head_share))
    global_values = global_beyond([m for m in names if m in GLOBAL_BEYOND], top, n_items)

    summary = {name: global_values[name] if name in global_values else _mean(table[name])
               for name in names}
    summary["n_users_evaluated"] = int(rows.size)
    summary["n_users_skipped"] = int(has_test.size - rows.size)
    if per_user:
        return summary, Table(table)
    return summary


def _same_pattern(a: sp.csr_matrix | None, b: sp.csr_matrix) -> bool:
    return (a is not None and a.shape == b.shape and np.array_equal(a.indptr, b.indptr)
            and np.array_equal(a.indices, b.indices))


def _warn_seen_test(model: Any, relevant: sp.csr_matrix, stacklevel: int = 3) -> None:
    seen = getattr(model, "user_items_", None)
    if seen is None or seen.shape != relevant.shape:
        return
    leaked = seen.multiply(relevant).nnz
    if leaked:
        warnings.warn(f"the model saw {leaked} test interactions at fit time; recommend() excludes "
                      "them, so they count as misses. Fit the model on the training split only.",
                      stacklevel=stacklevel)


def recommended_lists(model: Any, train: Any, test: Any, k: int = 10, batch_size: int = 2048,
                      show_progress: bool = False, exclude_train: bool = True, fold_in: bool = False,
                      rerank: Any = None, _stacklevel: int = 3
                      ) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix, sp.csr_matrix]:
    """The top-``k`` lists ``evaluate`` scores: ``(users, ranked, relevant, train_csr)``.

    ``users`` are the test users with positive test interactions and
    ``ranked[r]`` the list of ``users[r]`` (padded with -1); ``relevant`` and
    ``train_csr`` are the checked test and train matrices.  Arguments as in
    ``evaluate``.
    """
    if not callable(getattr(model, "recommend", None)):
        raise TypeError(f"model must be a fitted recommender with a recommend() method or an array "
                        f"of ranked ids; got {type(model).__name__}")
    k = check_int(k, "k", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    exclude_train = check_bool(exclude_train, "exclude_train")
    fold_in = check_bool(fold_in, "fold_in")
    relevant = relevant_items(test, "test")
    train_csr = check_interactions(train, "train", allow_empty=True)
    if relevant.shape != train_csr.shape:
        raise ValueError(f"test has shape {relevant.shape} but train has shape {train_csr.shape}; both must "
                         "be users x items of the same data (as a split returns them)")
    n_model_users = getattr(model, "n_users_", None)
    if not fold_in and n_model_users is not None and relevant.shape[0] > n_model_users:
        raise ValueError(f"test has {relevant.shape[0]} users but the model knows {n_model_users}; "
                         "for users unseen at fit time pass fold_in=True")
    if not fold_in:
        _warn_seen_test(model, relevant, _stacklevel)
    users = np.flatnonzero(np.diff(relevant.indptr)).astype(np.int64)
    pass_rows = fold_in or (exclude_train and not _same_pattern(getattr(model, "user_items_", None),
                                                                 train_csr))
    extra = {} if rerank is None else {"rerank": rerank}  # models without the argument keep working
    ranked = np.full((users.size, k), -1, dtype=np.int32)
    n_batches = -(-users.size // batch_size)
    progress = Progress(n_batches, "evaluate", enabled=check_bool(show_progress, "show_progress"))
    for start in range(0, users.size, batch_size):
        batch = users[start:start + batch_size]
        X_rows = train_csr[batch] if pass_rows else None
        ids, _ = model.recommend(None if fold_in else batch, n=k, exclude_seen=exclude_train, X=X_rows,
                                 **extra)
        ids = np.asarray(ids).reshape(batch.size, -1)
        ranked[start:start + batch.size, :ids.shape[1]] = ids[:, :k]
        progress.update()
    progress.close()
    return users, ranked, relevant, train_csr


def evaluate(model: Any, train: Any, test: Any, k: int = 10,
             metrics: Sequence[str] | str = DEFAULT_METRICS, batch_size: int = 2048,
             per_user: bool = False, show_progress: bool = False, exclude_train: bool = True,
             fold_in: bool = False, item_features: Any = None,
             head_share: float = 0.8, rerank: Any = None) -> dict[str, float] | tuple[dict[str, float], Any]:
    """Score a fitted model's top-``k`` recommendations against test interactions.

    Recommendations come from ``model.recommend(users, n=k, exclude_seen=...)``
    in batches, for the users with positive test interactions; the metrics are
    then computed by ``ranking_metrics``.

    Parameters
    ----------
    model : fitted fastrec model, or a (n_users, n) array of ranked ids
        Any object with ``recommend(users, n=, exclude_seen=, X=)`` as in
        ``fastrec.FactorModel``.  An array is passed to ``ranking_metrics``.
    train : sparse matrix or fastrec.Interactions, users x items
        The training interactions.  With ``exclude_train`` they are never
        recommended: a model excludes what it saw at fit time, and when
        ``train`` differs from that it is passed as ``X`` too.
    test : sparse matrix or fastrec.Interactions, same shape as ``train``
    k : int >= 1
    metrics : sequence of str, or "all"
        See ``fastrec.evaluation.ALL_METRICS`` and the module docstring.
    batch_size : int
        Users per ``recommend`` call.
    per_user : bool
        Also return a per-user table (see ``ranking_metrics``).
    show_progress : bool
        Progress bar on stderr.
    exclude_train : bool
        Skip each user's training items when recommending.
    fold_in : bool
        The test users are unknown to the model: recommend from their ``train``
        rows by fold-in (``model.recommend(None, X=train_rows)``), e.g. after
        ``user_split``.
    item_features : array, optional
        Item vectors for ``diversity``; defaults to the model's ``item_factors_``.
    head_share : float
        See ``ranking_metrics``.
    rerank : fastrec.rerank re-ranker, optional
        Score the re-ranked lists: ``model.recommend(..., rerank=rerank)``
        fetches ``rerank.candidates`` per user and re-ranks them to ``k``.

    Returns
    -------
    summary : dict
        Metric -> float, plus ``n_users_evaluated`` and ``n_users_skipped``
        (test users without positive test interactions).
    table : only with ``per_user=True``; see ``ranking_metrics``.
    """
    if isinstance(model, np.ndarray):
        return ranking_metrics(model, test, k, metrics, train=train, item_features=item_features,
                               exclude_train=exclude_train, head_share=head_share, per_user=per_user)
    names = check_metrics(metrics)
    users, ranked, relevant, train_csr = recommended_lists(model, train, test, k, batch_size, show_progress,
                                                           exclude_train, fold_in, rerank, _stacklevel=4)
    if item_features is None and "diversity" in names:
        item_features = getattr(model, "item_factors_", None)

    result = ranking_metrics(ranked, relevant, k, names, users=users, train=train_csr,
                             item_features=item_features, exclude_train=exclude_train,
                             head_share=head_share, per_user=per_user)
    summary = result[0] if per_user else result
    summary["n_users_skipped"] = int(relevant.shape[0] - users.size)
    return result
