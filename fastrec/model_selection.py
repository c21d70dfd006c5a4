"""Hyperparameter search: fit each candidate on train, score it on validation with ``evaluate``.

The best ALS model with one call::

    from fastrec import ALS
    from fastrec.evaluation import per_user_split
    from fastrec.model_selection import grid_search, default_grid

    train, val = per_user_split(X, test_fraction=0.2, random_state=0)
    search = grid_search(ALS(random_state=0), {"regularization": [0.01, 0.1], "alpha": [1.0, 10.0]},
                         train, val, metric="ndcg", k=10)
    model = search.best_estimator_        # fitted already; no refit needed
    search.best_params_, search.best_score_
    # or a small built-in grid: grid_search(ALS(), default_grid(ALS), train, val)
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .utils.progress import Progress
from .utils.validation import check_bool, check_float, check_int
from .utils.table import Table
from .evaluation import ALL_METRICS, evaluate

__all__ = ["grid_search", "random_search", "default_grid", "SearchResult"]

_DEFAULT_GRIDS: dict[str, dict[str, list]] = {
    "ALS": {"factors": [32, 64], "regularization": [0.01, 0.05, 0.2], "alpha": [1.0, 4.0, 16.0]},
    "BPR": {"factors": [32, 64], "learning_rate": [0.01, 0.05, 0.1], "regularization": [0.001, 0.01]},
}


def default_grid(estimator: Any) -> dict[str, list]:
    """A small starting grid for a fastrec estimator class or instance (a new dict).

    For ``ALS``: factors 32/64, regularization 0.01/0.05/0.2, alpha 1/4/16 (18 fits);
    for ``BPR``: factors 32/64, learning_rate 0.01/0.05/0.1, regularization 0.001/0.01 (12 fits).
    """
    name = estimator.__name__ if isinstance(estimator, type) else type(estimator).__name__
    if name not in _DEFAULT_GRIDS:
        raise ValueError(f"no default grid for {name}; known: {sorted(_DEFAULT_GRIDS)}")
    return {key: list(values) for key, values in _DEFAULT_GRIDS[name].items()}


@dataclass
class SearchResult:
    """What a search found.

    Attributes
    ----------
    results : fastrec Table
        One row per fitted candidate, in run order: its parameters (one column
        each), the requested metrics, ``fit_time`` and ``score_time`` in seconds.
        The same type whether or not pandas is installed; ``results.to_pandas()``
        gives a DataFrame.
    best_params_ : dict
        Parameters of the candidate with the highest ``metric`` (first on ties).
    best_score_ : float
    best_estimator_ : the fitted best estimator
    best_index_ : int
        Its row in ``results``.
    metric : str
    n_candidates : int
        Candidates planned; ``n_run`` were fitted before ``time_limit`` stopped the search.
    n_run : int
    stopped_by_time_limit : bool
    elapsed : float
        Seconds for the whole search.
    records : list of dict
        ``results`` as plain dicts, as the candidates' parameters were given.
    """

    results: Any = field(repr=False)
    best_params_: dict[str, Any]
    best_score_: float
    best_estimator_: Any
    best_index_: int
    metric: str
    n_candidates: int
    n_run: int
    stopped_by_time_limit: bool
    elapsed: float
    records: list[dict[str, Any]] = field(repr=False, default_factory=list)


def _clone(estimator: Any, params: Mapping[str, Any]) -> Any:
    return type(estimator)(**estimator.get_params()).set_params(**params)


def _plain(value: Any) -> Any:
    """NumPy scalars (and 0-d arrays) as Python numbers, for tidy results."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    return value.item() if isinstance(value, np.generic) else value


def _check_grid(param_grid: Any) -> list[dict[str, list]]:
    grids = [param_grid] if isinstance(param_grid, Mapping) else list(param_grid)
    if not grids:
        raise ValueError("param_grid must not be empty")
    for grid in grids:
        if not isinstance(grid, Mapping):
            raise TypeError(f"param_grid must be a dict of lists or a list of such dicts; got {type(grid).__name__}")
        for key, values in grid.items():
            if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__") or len(list(values)) == 0:
                raise ValueError(f"param_grid[{key!r}] must be a non-empty list of values")
    return [{key: list(values) for key, values in grid.items()} for grid in grids]


def _grid_candidates(grids: list[dict[str, list]]) -> list[dict[str, Any]]:
    out = []
    for grid in grids:
        keys = sorted(grid)
        for combo in itertools.product(*(grid[key] for key in keys)):
            out.append(dict(zip(keys, combo)))
    return out


def _check_distributions(distributions: Any) -> dict[str, Any]:
    if not isinstance(distributions, Mapping) or not distributions:
        raise ValueError("param_distributions must be a non-empty dict")
    for key, dist in distributions.items():
        if hasattr(dist, "rvs") or callable(dist):
            continue
        if isinstance(dist, (str, bytes)) or not hasattr(dist, "__len__") or not len(dist):
            raise ValueError(f"param_distributions[{key!r}] must be a non-empty list, an object with "
                             ".rvs(random_state=...) or a callable taking a numpy Generator")
    return dict(distributions)


def _sample(distribution: Any, rng: np.random.Generator) -> Any:
    if hasattr(distribution, "rvs"):
        return _plain(distribution.rvs(random_state=rng))
    if callable(distribution):
        return _plain(distribution(rng))
    return distribution[int(rng.integers(len(distribution)))]


def _random_candidates(distributions: Mapping[str, Any], n_iter: int,
                       rng: np.random.Generator) -> Iterator[dict[str, Any]]:
    keys = sorted(distributions)
    for _ in range(n_iter):
        yield {key: _sample(distributions[key], rng) for key in keys}


def _check_estimator(estimator: Any) -> None:
    for method in ("get_params", "set_params", "fit"):
        if not callable(getattr(estimator, method, None)):
            raise TypeError(f"estimator must have get_params, set_params and fit; "
                            f"{type(estimator).__name__} lacks {method}")


def _fit_and_score(estimator: Any, params: dict[str, Any], train: Any, validation: Any, k: int,
                   names: tuple[str, ...], evaluate_kwargs: Mapping[str, Any] | None) -> tuple[Any, dict[str, Any]]:
    """One candidate: the fitted model and its results row (parameters, metrics, times)."""
    model = _clone(estimator, params)
    tick = time.perf_counter()
    model.fit(train)
    fit_time = time.perf_counter() - tick
    scores = evaluate(model, train, validation, k=k, metrics=names, **dict(evaluate_kwargs or {}))
    row = {**params, **{name: scores[name] for name in names},
           "fit_time": fit_time, "score_time": time.perf_counter() - tick - fit_time}
    return model, row


def _local_runs(estimator: Any, candidates: Iterable[dict[str, Any]], args: tuple, out_of_time: Any,
                stopped: list[bool]) -> Iterator[tuple[dict[str, Any], Any, dict[str, Any]]]:
    """(params, model getter, row) per candidate, fitted here, until ``out_of_time()`` (one at least)."""
    ran = False
    for params in candidates:
        if ran and out_of_time():
            stopped.append(True)
            return
        ran = True
        model, row = _fit_and_score(estimator, params, *args)
        yield params, (lambda fitted=model: fitted), row


def _run_search(estimator: Any, candidates: Iterable[dict[str, Any]],
                n_candidates: int, train: Any, validation: Any, metric: str, k: int,
                metrics: Sequence[str] | None, time_limit: float | None, show_progress: bool,
                desc: str, evaluate_kwargs: Mapping[str, Any] | None, client: Any = None,
                client_timeout: float | None = None) -> SearchResult:
    _check_estimator(estimator)
    if metric not in ALL_METRICS:
        raise ValueError(f"metric must be one of {ALL_METRICS}; got {metric!r}")
    k = check_int(k, "k", minimum=1)
    if time_limit is not None:
        time_limit = check_float(time_limit, "time_limit", minimum=0.0)
    names = tuple(dict.fromkeys((metric, *(metrics or ()))))
    progress = Progress(n_candidates, desc, enabled=check_bool(show_progress, "show_progress"))
    rows: list[dict[str, Any]] = []
    tried: list[dict[str, Any]] = []
    best_model, best_index, best_score = None, -1, -math.inf
    start = time.perf_counter()
    stopped: list[bool] = []

    def out_of_time() -> bool:
        return time_limit is not None and time.perf_counter() - start >= time_limit

    args = (train, validation, k, names, evaluate_kwargs)
    if client is None:
        if client_timeout is not None:
            raise ValueError("client_timeout bounds a search on a Dask cluster: pass client= too, "
                             "or use time_limit for a local search")
        runs = _local_runs(estimator, candidates, args, out_of_time, stopped)
    else:
        from .distributed.search import cluster_runs  # Dask: imported only when asked for
        runs = cluster_runs(client, estimator, candidates, args, out_of_time, stopped, timeout=client_timeout)
    for params, model, row in runs:
        rows.append(row)
        tried.append(dict(params))
        score = row[metric]
        if not math.isnan(score) and (best_model is None or score > best_score):
            best_model, best_index, best_score = model, len(rows) - 1, score
        elif best_model is None:  # keep something fitted even if every score is NaN
            best_model, best_index, best_score = model, len(rows) - 1, score
        progress.update(**{metric: score, "best": best_score})
    progress.close()
    return SearchResult(results=Table.from_records(rows), best_params_=tried[best_index],
                        best_score_=float(best_score), best_estimator_=best_model(),
                        best_index_=best_index, metric=metric, n_candidates=n_candidates,
                        n_run=len(rows), stopped_by_time_limit=bool(stopped),
                        elapsed=time.perf_counter() - start, records=rows)


def grid_search(estimator: Any, param_grid: Mapping[str, Sequence] | Sequence[Mapping[str, Sequence]],
                train: Any, validation: Any, metric: str = "ndcg", k: int = 10,
                time_limit: float | None = None, show_progress: bool = True,
                metrics: Sequence[str] | None = None,
                evaluate_kwargs: Mapping[str, Any] | None = None, client: Any = None,
                client_timeout: float | None = None) -> SearchResult:
    """Fit and score every combination of ``param_grid``; keep the best fitted model.

    Parameters
    ----------
    estimator : fastrec estimator
        A template: each candidate is ``type(estimator)(**estimator.get_params())``
        with the candidate's parameters set.  It is not modified.
    param_grid : dict of lists, or a list of such dicts
        Candidates are the products of each dict's lists (keys in sorted order).
    train, validation : sparse matrices or fastrec.Interactions, users x items
        Fit on ``train``; score with ``evaluate(model, train, validation)``.
    metric : str
        The metric to maximise (see ``fastrec.evaluation.ALL_METRICS``).
    k : int
        Cut-off for the metrics.
    time_limit : float, optional
        Seconds after which no new fit is started (a running fit finishes;
        at least one candidate always runs).  ``n_run`` says how many ran.
    show_progress : bool
        Progress bar on stderr with the latest and best score.
    metrics : sequence of str, optional
        More metrics to record in ``results``.
    evaluate_kwargs : dict, optional
        Extra arguments for ``evaluate`` (``batch_size``, ``exclude_train``, ...).
    client : distributed.Client, optional
        Fit and score the candidates on this Dask cluster's workers, as many
        at a time as the workers have threads (``pip install
        'fastrec[distributed]'``).  ``train`` and ``validation`` go to each
        worker once; only the best model comes back.  ``results`` keeps the
        candidates' order; ``time_limit`` stops starting new candidates.
    client_timeout : float, optional
        With ``client``: seconds after which a search that has not finished
        on the cluster (a stuck or lost cluster) raises
        ``fastrec.distributed.ClusterError`` instead of waiting for ever.

    Returns
    -------
    SearchResult
    """
    candidates = _grid_candidates(_check_grid(param_grid))
    return _run_search(estimator, candidates, len(candidates), train, validation, metric, k,
                       metrics, time_limit, show_progress, "grid search", evaluate_kwargs, client,
                       client_timeout)


def random_search(estimator: Any, param_distributions: Mapping[str, Any], n_iter: int,
                  train: Any, validation: Any, metric: str = "ndcg", k: int = 10,
                  time_limit: float | None = None, show_progress: bool = True,
                  random_state: Any = None, metrics: Sequence[str] | None = None,
                  evaluate_kwargs: Mapping[str, Any] | None = None, client: Any = None,
                  client_timeout: float | None = None) -> SearchResult:
    """Fit and score ``n_iter`` random candidates; keep the best fitted model.

    Parameters
    ----------
    param_distributions : dict
        Per parameter: a list (sampled uniformly), an object with
        ``.rvs(random_state=...)`` such as a ``scipy.stats`` distribution, or a
        callable taking a ``numpy.random.Generator`` and returning a value.
    n_iter : int >= 1
        Candidates to sample (repeats are possible).
    random_state : int, numpy Generator or None
        Seeds the sampling; the same seed gives the same candidates.  Fits
        are reproducible when the estimator's own ``random_state`` is fixed.

    Other parameters (``client`` and ``client_timeout`` too) are as in ``grid_search``.

    Returns
    -------
    SearchResult
    """
    param_distributions = _check_distributions(param_distributions)
    n_iter = check_int(n_iter, "n_iter", minimum=1)
    rng = np.random.default_rng(random_state)
    return _run_search(estimator, _random_candidates(param_distributions, n_iter, rng), n_iter,
                       train, validation, metric, k, metrics, time_limit, show_progress,
                       "random search", evaluate_kwargs, client, client_timeout)
