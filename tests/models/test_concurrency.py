"""Thread safety of serving, and of refits while serving.

Serving calls from many threads must give exactly the single-threaded answers
(which are themselves checked against NumPy references), and a ``fit`` or
``partial_fit_users`` on a model that is serving must swap the new factors in
whole: every concurrent answer is that of one complete model state, never a
mix.  Speed (GIL release) is measured in bench/, not asserted here.
"""
from __future__ import annotations

import pickle
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
import pytest
import scipy.sparse as sp

from fastrec import ALS, BPR

N_USERS, N_ITEMS = 300, 500
WORKERS = 8
CALLS_PER_WORKER = 200


def _interactions(seed: int, n_users: int = N_USERS, n_items: int = N_ITEMS) -> sp.csr_matrix:
    """Power-law item popularity, so score ties and long seen lists both occur."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    rows, cols = [], []
    for user in range(n_users):
        k = int(rng.integers(1, 40))
        rows += [user] * k
        cols += list(rng.choice(n_items, size=k, replace=False, p=popularity / popularity.sum()))
    data = rng.integers(1, 5, size=len(rows)).astype(np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(n_users, n_items))


def _fitted(seed: int = 0, dtype=np.float32, kind: str = "als") -> ALS:
    return _model(kind, dtype, seed).fit(_interactions(seed))


def _model(kind: str, dtype=np.float32, seed: int = 0, iterations: int = 3) -> Any:
    """An unfitted model; BPR with one thread and a seed is deterministic, as the shadows need."""
    if kind == "als":
        return ALS(factors=16, iterations=iterations, dtype=dtype, random_state=seed, num_threads=2)
    return BPR(factors=16, iterations=iterations, dtype=dtype, random_state=seed, num_threads=1)


KINDS = ["als", "bpr"]


def _answer_key(result: Any) -> bytes:
    """Exact bytes of a serving result (tuples of arrays or one array)."""
    arrays = result if isinstance(result, tuple) else (result,)
    return b"|".join(np.ascontiguousarray(a).tobytes() + str(a.dtype).encode() for a in arrays)


# ----------------------------------------------------------- NumPy references
def _ref_top(scores: np.ndarray, eligible: np.ndarray, n: int) -> np.ndarray:
    """Best ``n`` eligible ids by (-score, id)."""
    ids = np.flatnonzero(eligible)
    order = np.lexsort((ids, -scores[ids]))
    return ids[order][:n]


def _check_row(ids: np.ndarray, scores: np.ndarray, ref_scores: np.ndarray, eligible: np.ndarray,
               n: int, tol: float) -> None:
    """A returned top-n row against the reference, allowing only near-ties to swap."""
    expected = _ref_top(ref_scores, eligible, n)
    k = expected.size
    assert np.all(ids[k:] == -1) and np.all(np.isneginf(scores[k:])), "padding"
    got = ids[:k]
    assert np.all(got >= 0) and np.unique(got).size == k and eligible[got].all()
    np.testing.assert_allclose(scores[:k], ref_scores[got], rtol=tol, atol=tol)
    # the same score sequence as the reference: ids may differ only where scores tie within tol
    np.testing.assert_allclose(ref_scores[got], ref_scores[expected], rtol=tol, atol=tol)
    assert np.all(np.diff(scores[:k].astype(np.float64)) <= 0)
    differs = got != expected
    assert k == 0 or differs.mean() <= 0.1, "too many positions differ from the reference order"


def _reference_check(model: ALS, name: str, kwargs: dict, result: Any) -> None:
    """Check one single-threaded answer against plain NumPy."""
    U = model.user_factors_.astype(np.float64)
    V = model.item_factors_.astype(np.float64)
    bias = 0.0 if model.item_bias_ is None else model.item_bias_.astype(np.float64)
    tol = 1e-4 if model.item_factors_.dtype == np.float32 else 1e-10
    if name == "predict":
        u, i = kwargs["users"], kwargs["items"]
        np.testing.assert_allclose(result, np.einsum("ij,ij->i", U[u], V[i]) + (bias[i] if np.ndim(bias) else 0),
                                   rtol=tol, atol=tol)
        return
    ids, scores = result
    if name == "similar_items":
        norms = np.linalg.norm(V, axis=1, keepdims=True)
        normed = V / np.where(norms > 0, norms, 1)  # all-zero vectors (unseen items) score 0
        queries = np.atleast_1d(kwargs["items"])
        counts = np.bincount(model.user_items_.indices, minlength=N_ITEMS)
        for row, item in enumerate(queries):
            eligible = np.ones(N_ITEMS, dtype=bool)
            eligible[item] = False
            if counts[item] == 0 or not V[item].any():  # an item never seen is similar to nothing
                eligible[:] = False
            _check_row(ids[row], scores[row], normed @ normed[item], eligible, kwargs["n"], tol)
        return
    users = np.atleast_1d(kwargs["users"])
    if ids.ndim == 1:
        ids, scores = ids[None, :], scores[None, :]
        pad = kwargs["n"] - ids.shape[1]
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    seen = model.user_items_
    for row, user in enumerate(users):
        eligible = np.ones(N_ITEMS, dtype=bool)
        eligible[seen.indices[seen.indptr[user]:seen.indptr[user + 1]]] = False
        if kwargs.get("exclude") is not None:
            eligible[kwargs["exclude"]] = False
        if kwargs.get("candidates") is not None:
            allowed = np.zeros(N_ITEMS, dtype=bool)
            allowed[kwargs["candidates"]] = True
            eligible &= allowed
        _check_row(ids[row], scores[row], U[user] @ V.T + bias, eligible, min(kwargs["n"], N_ITEMS), tol)


def _queries(seed: int) -> list[tuple[str, dict]]:
    rng = np.random.default_rng(seed)
    out: list[tuple[str, dict]] = []
    for _ in range(12):
        out.append(("recommend", {"users": int(rng.integers(N_USERS)), "n": int(rng.integers(1, 30))}))
        out.append(("recommend", {"users": rng.choice(N_USERS, size=64, replace=False), "n": 20}))
        out.append(("recommend", {"users": rng.choice(N_USERS, size=8, replace=False), "n": 15,
                                  "exclude": rng.choice(N_ITEMS, size=50),
                                  "candidates": rng.choice(N_ITEMS, size=120)}))
        out.append(("similar_items", {"items": rng.choice(N_ITEMS, size=16, replace=False), "n": 10}))
        out.append(("predict", {"users": rng.integers(0, N_USERS, 500), "items": rng.integers(0, N_ITEMS, 500)}))
    return out


def _run_concurrently(task: Callable[[int], Any], n_tasks: int, workers: int = WORKERS) -> list:
    start = threading.Barrier(workers)

    def wrapped(index: int) -> Any:
        if index < workers:
            start.wait(timeout=30)  # all workers begin together
        return task(index)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(wrapped, range(n_tasks)))


# ----------------------------------------------------------------- serving
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_concurrent_serving_matches_references(dtype):
    model = _fitted(dtype=dtype)
    queries = _queries(seed=1)
    # single-threaded answers, each checked against NumPy, from a copy with cold caches
    reference_model = pickle.loads(pickle.dumps(model))
    expected = []
    for name, kwargs in queries:
        result = getattr(reference_model, name)(**kwargs)
        _reference_check(reference_model, name, kwargs, result)
        expected.append(_answer_key(result))

    def worker(index: int) -> int:
        rng = np.random.default_rng(index)
        mismatches = 0
        for _ in range(CALLS_PER_WORKER):
            q = int(rng.integers(len(queries)))
            name, kwargs = queries[q]
            mismatches += _answer_key(getattr(model, name)(**kwargs)) != expected[q]
        return mismatches

    assert _run_concurrently(worker, WORKERS) == [0] * WORKERS


def test_concurrent_fold_in_and_lazy_caches():
    """Fold-in (cached Gram matrix) and cosine caches filled by racing threads."""
    model = _fitted()
    rows = _interactions(seed=9)[:20]
    want_factors = pickle.loads(pickle.dumps(model)).fold_in(rows)
    want_rec = _answer_key(pickle.loads(pickle.dumps(model)).recommend(None, X=rows, n=10))
    want_sim = _answer_key(pickle.loads(pickle.dumps(model)).similar_users(np.arange(30), n=5))
    fresh = pickle.loads(pickle.dumps(model))
    fresh._state.cache.clear()

    def worker(index: int) -> bool:
        ok = True
        for _ in range(20):
            ok &= np.array_equal(fresh.fold_in(rows), want_factors)
            ok &= _answer_key(fresh.recommend(None, X=rows, n=10)) == want_rec
            ok &= _answer_key(fresh.similar_users(np.arange(30), n=5)) == want_sim
        return ok

    assert all(_run_concurrently(worker, WORKERS))


def test_concurrent_large_batch_recommends():
    """Large batches (the kernel's own threads inside several Python threads) stay exact."""
    model = _fitted()
    users = np.arange(N_USERS)
    want = _answer_key(model.recommend(users, n=50))
    results = _run_concurrently(lambda i: _answer_key(model.recommend(users, n=50)), 16, workers=4)
    assert results == [want] * 16


# ------------------------------------------------------- swaps while serving
Reads = Callable[[ALS], "list[bytes]"]


def _read_until(done: threading.Event, read: Callable[[], list[bytes]], known: list[dict[bytes, int]],
                reading: threading.Event, min_reads: int = 20) -> list[int]:
    """Read until the writer is done; the state each call's answer matches (-1: none), in order."""
    seen: list[int] = []
    while not done.is_set() or len(seen) < min_reads:
        seen.extend(states.get(answer, -1) for states, answer in zip(known, read()))
        reading.set()
    return seen


def _known_states(answers: list[list[bytes]]) -> list[dict[bytes, int]]:
    """For each call of a read, its answer in each successive model state -> state index."""
    known: list[dict[bytes, int]] = [{} for _ in answers[0]]
    for state, per_call in enumerate(answers):
        for table, answer in zip(known, per_call):
            table.setdefault(answer, state)
    return known


def _serve_while_writing(model: ALS, read: Reads, write: Callable[[ALS], None],
                         known: list[dict[bytes, int]], readers: int = 4) -> list[list[int]]:
    done = threading.Event()
    reading = [threading.Event() for _ in range(readers)]

    def writer() -> None:
        try:
            for event in reading:  # write only once every reader is serving
                event.wait(timeout=30)
            write(model)
        finally:
            done.set()

    with ThreadPoolExecutor(max_workers=readers + 1) as pool:
        futures = [pool.submit(_read_until, done, lambda: read(model), known, event) for event in reading]
        pool.submit(writer).result()
        return [f.result() for f in futures]


def _read_all_users(model: ALS) -> list[bytes]:
    """Two serving calls; each is atomic on its own, so each is matched separately."""
    users = np.arange(N_USERS)
    pairs = np.arange(N_USERS * 3) % N_ITEMS
    return [_answer_key(model.recommend(users, n=10)), _answer_key(model.predict(np.repeat(users, 3), pairs))]


@pytest.mark.parametrize("kind", KINDS)
def test_partial_fit_users_swaps_whole_states(kind):
    model = _fitted(kind=kind)
    rng = np.random.default_rng(4)
    fresh = _interactions(seed=11, n_users=40)
    updates = [(rng.choice(N_USERS + 20, size=40, replace=False), fresh) for _ in range(6)]

    # the answer of every state the writer passes through, computed on a copy
    shadow = pickle.loads(pickle.dumps(model))
    answers = [_read_all_users(shadow)]
    for ids, rows in updates:
        shadow.partial_fit_users(ids, rows)
        answers.append(_read_all_users(shadow))
    known = _known_states(answers)
    assert all(len(table) == len(updates) + 1 for table in known)  # every update changes the answers

    def write(m: ALS) -> None:
        for ids, rows in updates:
            m.partial_fit_users(ids, rows)
            time.sleep(0.002)  # let readers serve between swaps (nothing is timed)

    observed = _serve_while_writing(model, _read_all_users, write, known)
    for states in observed:
        assert -1 not in states, "an answer matched no complete model state"
        assert states == sorted(states), "a reader saw an older state after a newer one"
    assert _read_all_users(model) == _read_all_users(shadow)


@pytest.mark.parametrize("kind", KINDS)
def test_refit_swaps_whole_state(kind):
    model = _model(kind).fit(_interactions(0))
    X_new = _interactions(seed=5)
    shadow = pickle.loads(pickle.dumps(model))
    known = _known_states([_read_all_users(shadow), _read_all_users(shadow.fit(X_new))])
    assert all(len(table) == 2 for table in known)

    observed = _serve_while_writing(model, _read_all_users, lambda m: m.fit(X_new), known)
    for states in observed:
        assert -1 not in states and states == sorted(states)
    assert _read_all_users(model) == _read_all_users(shadow)


@pytest.mark.parametrize("kind", KINDS)
def test_concurrent_partial_fits_lose_no_update(kind):
    """Writers are serialised: updates to disjoint users from several threads all survive."""
    model = _fitted(kind=kind)
    rng = np.random.default_rng(8)
    groups = np.array_split(rng.permutation(N_USERS)[:160], 8)
    rows = [_interactions(seed=20 + k, n_users=g.size) for k, g in enumerate(groups)]

    sequential = pickle.loads(pickle.dumps(model))
    for ids, X in zip(groups, rows):
        sequential.partial_fit_users(ids, X)

    _run_concurrently(lambda k: model.partial_fit_users(groups[k], rows[k]), len(groups))
    np.testing.assert_array_equal(model.user_factors_, sequential.user_factors_)
    assert (model.user_items_ != sequential.user_items_).nnz == 0
    np.testing.assert_array_equal(model.item_factors_, sequential.item_factors_)


@pytest.mark.parametrize("kind", KINDS)
def test_partial_fit_during_fit_waits_and_applies_to_the_new_model(kind):
    """A partial fit called while fit runs waits for it, then applies to the new model.

    Without the lock the partial fit would read the old state, and the fit's
    swap would then drop it (or it would overwrite the new model with old factors).
    """
    X_old, X_new = _interactions(0), _interactions(7)
    ids = np.arange(0, 40)
    rows = _interactions(seed=12, n_users=40)
    shadow = _model(kind, iterations=8).fit(X_old).fit(X_new)
    want = _read_all_users(shadow.partial_fit_users(ids, rows))

    model = _model(kind, iterations=8).fit(X_old)
    inside_fit = threading.Event()
    release = threading.Event()

    def callback(iteration: int, *_: Any) -> None:
        if iteration == 0:
            inside_fit.set()  # fit is training now, past its checks
            release.wait(timeout=30)

    with ThreadPoolExecutor(max_workers=2) as pool:
        fitting = pool.submit(model.fit, X_new, callback)
        assert inside_fit.wait(timeout=30)
        partial = pool.submit(model.partial_fit_users, ids, rows)
        time.sleep(0.05)  # the partial fit has had time to run if nothing holds it back
        release.set()
        partial.result()
        fitting.result()
    assert _read_all_users(model) == want, "the partial fit was lost or applied to the old model"
