"""recommend_all and hyperparameter search on a LocalCluster."""
from __future__ import annotations

import concurrent.futures

import numpy as np
import pytest

from fastrec import ALS, BPR, Interactions
from fastrec.evaluation import per_user_split
from fastrec.exceptions import NotFittedError
from fastrec.model_selection import grid_search, random_search

distributed = pytest.importorskip("distributed")
dd = pytest.importorskip("dask.dataframe")
pd = pytest.importorskip("pandas")

from fastrec.distributed import DaskALS, recommend_all  # noqa: E402

from conftest import WAIT  # noqa: E402


@pytest.fixture(scope="module")
def events():
    rng = np.random.default_rng(12)
    n = 1500
    return pd.DataFrame({"user": np.char.add("user-", rng.integers(0, 120, n).astype(str)),
                         "item": rng.integers(1000, 1080, n),
                         "weight": rng.integers(1, 5, n).astype(float)})


@pytest.fixture(scope="module")
def fitted(events):
    data = Interactions.from_dataframe(events, user_col="user", item_col="item", weight_col="weight")
    return ALS(factors=6, iterations=3, random_state=0).fit(data), data


def collect(client, frame):
    return client.compute(frame).result(timeout=WAIT)


def as_lists(table, key="user"):
    table = table.sort_values([key, "rank"])
    return {user: (group["item"].tolist(), group["score"].to_numpy()) for user, group in table.groupby(key)}


def assert_matches_recommend(table, model, users, expected_users, **kwargs):
    lists = as_lists(table)
    ids, scores = model.recommend(users, **kwargs)
    assert sorted(lists) == sorted(expected_users)
    for user, want_ids, want_scores in zip(expected_users, ids, scores):
        got_ids, got_scores = lists[user]
        assert list(want_ids) == got_ids
        np.testing.assert_allclose(got_scores, want_scores, rtol=1e-6)


def test_recommend_all_equals_recommend_for_every_user_in_raw_ids(dask_client, fitted):
    model, data = fitted
    table = collect(dask_client, recommend_all(model, dask_client, n=7, block_users=25))
    assert list(table.columns) == ["user", "rank", "item", "score"]
    users = data.user_map.labels
    assert_matches_recommend(table, model, users, list(users), n=7, raw_ids=True)
    assert table.groupby("user")["rank"].apply(lambda r: list(r) == list(range(1, len(r) + 1))).all()
    # text ids come back as categoricals (codes and the labels once), integer ids as they are
    assert isinstance(table["user"].dtype, pd.CategoricalDtype) and table["item"].dtype == np.int64


def test_recommend_all_text_item_ids_are_categorical(dask_client, events):
    frame = events.assign(item=np.char.add("title ", events["item"].to_numpy().astype(str)))
    data = Interactions.from_dataframe(frame, user_col="user", item_col="item", weight_col="weight")
    model = ALS(factors=5, iterations=2, random_state=0).fit(data)
    result = recommend_all(model, dask_client, n=4, block_users=40)
    table = collect(dask_client, result)
    assert isinstance(table["item"].dtype, pd.CategoricalDtype)
    assert list(table["item"].cat.categories) == list(data.item_map.labels)  # every block: the same categories
    users = data.user_map.labels
    assert_matches_recommend(table, model, users, list(users), n=4, raw_ids=True)


def test_recommend_all_filters_and_indices(dask_client, fitted):
    model, data = fitted
    exclude, candidates = [1003, 1010], np.arange(1000, 1040)
    table = collect(dask_client, recommend_all(model, dask_client, n=5, exclude=exclude, candidates=candidates))
    users = data.user_map.labels
    assert_matches_recommend(table, model, users, list(users), n=5, exclude=exclude, candidates=candidates,
                             raw_ids=True)
    plain = collect(dask_client, recommend_all(model, dask_client, n=4, raw_ids=False, exclude_seen=False))
    assert plain["user"].dtype.kind == "i" and plain["item"].dtype.kind == "i"
    assert_matches_recommend(plain, model, np.arange(model.n_users_), list(range(model.n_users_)), n=4,
                             exclude_seen=False)


def test_recommend_all_short_lists_and_compact_columns(dask_client, fitted):
    model, data = fitted
    candidates = np.arange(1000, 1006)  # most users have seen some of these: shorter lists
    table = collect(dask_client, recommend_all(model, dask_client, n=6, candidates=candidates, block_users=30))
    users = data.user_map.labels
    assert_matches_recommend(table, model, users, list(users), n=6, candidates=candidates, raw_ids=True)
    assert table.groupby("user").size().min() < 6  # the padded path was taken
    plain = collect(dask_client, recommend_all(model, dask_client, n=3, raw_ids=False))
    assert [str(t) for t in plain.dtypes] == ["int32", "int32", "int32", "float32"]
    np.testing.assert_array_equal(np.sort(plain["user"].unique()), np.arange(model.n_users_))


def test_recommend_all_declines_a_model_that_ranks_otherwise(dask_client, fitted):
    class Shifted(ALS):
        def _queries(self, state, user_ids):
            return super()._queries(state, user_ids) + 1

    model, data = fitted
    shifted = Shifted(factors=2, iterations=1).fit(data)
    with pytest.raises(TypeError, match="ranks users by their factors"):
        recommend_all(shifted, dask_client)


def test_recommend_all_writes_parquet(dask_client, fitted, tmp_path):
    model, _ = fitted
    dask_client.wait_for_workers(2, timeout=WAIT)  # the blocks per worker depend on how many there are
    files = recommend_all(model, dask_client, n=3, path=tmp_path / "out", block_users=50, timeout=WAIT)
    assert len(files) == 4 and all(f.endswith(".parquet") for f in files)  # 2 blocks of <= 50 users per worker
    table = pd.concat([pd.read_parquet(f) for f in files])
    expected = collect(dask_client, recommend_all(model, dask_client, n=3))
    assert as_lists(table).keys() == as_lists(expected).keys()
    assert len(table) == len(expected)


def test_recommend_all_excludes_a_frames_items_for_a_frame_fitted_model(dask_client, events, fitted):
    _, data = fitted
    frame = dd.from_pandas(events, npartitions=3)
    model = DaskALS(factors=6, iterations=3, random_state=0, client=dask_client).fit(frame, timeout=WAIT)
    assert model.user_items_.nnz == 0  # the model's own answers exclude nothing: the frame says what was seen
    table = collect(dask_client, recommend_all(model, dask_client, n=6, X=frame))
    users = data.user_map.labels
    assert_matches_recommend(table, model, users, list(users), n=6, X=data.to_csr(), raw_ids=True)


def test_recommend_all_works_for_bpr_and_checks_its_arguments(dask_client, fitted):
    model, data = fitted
    bpr = BPR(factors=4, iterations=2, random_state=0).fit(data)
    table = collect(dask_client, recommend_all(bpr, dask_client, n=3))
    assert_matches_recommend(table, bpr, data.user_map.labels, list(data.user_map.labels), n=3, raw_ids=True)
    with pytest.raises(NotFittedError):
        recommend_all(ALS(), dask_client)
    with pytest.raises(ValueError, match="n must be"):
        recommend_all(model, dask_client, n=-1)
    with pytest.raises(KeyError):
        recommend_all(model, dask_client, exclude=["no such item"])
    with pytest.raises(ValueError, match="X has"):
        recommend_all(model, dask_client, X=data.to_csr()[:5])


def within(seconds, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, failing the test instead of hanging past ``seconds``."""
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        return pool.submit(fn, *args, **kwargs).result(timeout=seconds)
    finally:
        pool.shutdown(wait=False)


def test_grid_and_random_search_on_the_cluster_match_local_search(dask_client, fitted):
    _, data = fitted
    train, validation = per_user_split(data.to_csr(), 0.3, random_state=0)
    estimator = ALS(factors=4, iterations=2, random_state=1)
    grid = {"regularization": [0.01, 0.3], "alpha": [1.0, 4.0]}
    local = grid_search(estimator, grid, train, validation, k=5, show_progress=False)
    remote = within(WAIT, grid_search, estimator, grid, train, validation, k=5, show_progress=False,
                    client=dask_client)
    assert [r["ndcg"] for r in remote.records] == pytest.approx([r["ndcg"] for r in local.records], rel=1e-6)
    assert remote.best_params_ == local.best_params_ and remote.n_run == 4
    np.testing.assert_allclose(remote.best_estimator_.user_factors_, local.best_estimator_.user_factors_,
                               rtol=1e-5, atol=1e-7)
    assert remote.best_estimator_.num_threads == 0
    sampled = within(WAIT, random_search, estimator, {"regularization": [0.01, 0.3]}, 2, train, validation,
                     k=5, show_progress=False, random_state=0, client=dask_client)
    assert sampled.n_run == 2 and sampled.best_score_ == max(r["ndcg"] for r in sampled.records)
    # no new candidate starts after time_limit (the first always runs)
    limited = within(WAIT, grid_search, estimator, grid, train, validation, k=5, show_progress=False,
                     time_limit=0.0, client=dask_client)
    assert limited.stopped_by_time_limit and 1 <= limited.n_run < 4
    with pytest.raises(TypeError, match="single-machine estimator"):
        grid_search(DaskALS(), grid, train, validation, client=dask_client, show_progress=False)


def test_cluster_search_timeout_raises_a_clear_error(dask_client, fitted):
    from fastrec.distributed import ClusterError
    from fastrec.distributed.search import cluster_runs

    _, data = fitted
    train, validation = per_user_split(data.to_csr(), 0.3, random_state=0)
    args = (train, validation, 5, ("ndcg",), None)
    candidates = [{"regularization": r} for r in (0.01, 0.1, 0.3)]
    never = lambda: False  # noqa: E731
    runs = cluster_runs(dask_client, ALS(factors=4, iterations=2), candidates, args, never, [], timeout=1e-3)
    with pytest.raises(ClusterError, match=r"did not finish within timeout=0.001 s \(0 candidates scored"):
        next(runs)
    done = list(cluster_runs(dask_client, ALS(factors=4, iterations=2), candidates, args, never, [], timeout=WAIT))
    assert [params for params, _, _ in done] == candidates and all(row["ndcg"] >= 0 for _, _, row in done)
    with pytest.raises(ValueError, match="timeout"):
        next(cluster_runs(dask_client, ALS(), candidates, args, never, [], timeout=-1))


def test_grid_search_passes_client_timeout_to_the_cluster(dask_client, fitted):
    from fastrec.distributed import ClusterError

    _, data = fitted
    train, validation = per_user_split(data.to_csr(), 0.3, random_state=0)
    grid = {"regularization": [0.01, 0.1, 0.3]}
    with pytest.raises(ClusterError, match=r"timeout=0.001 s"):
        grid_search(ALS(factors=4, iterations=2), grid, train, validation, k=5, show_progress=False,
                    client=dask_client, client_timeout=1e-3)
    with pytest.raises(ValueError, match="client_timeout .*client="):
        random_search(ALS(factors=4, iterations=2), grid, 2, train, validation, show_progress=False,
                      client_timeout=5)
