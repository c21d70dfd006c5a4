"""recommend_all on the user blocks a DaskALS fit leaves on its workers: never stale, never wrong.

Every test compares recommend_all's lists for every user with
``model.recommend`` after something that changes (or loses) what the
workers hold: a refit, partial fits, a killed worker, another client.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import signal
import time

import numpy as np
import pytest
import scipy.sparse as sp

distributed = pytest.importorskip("distributed")
pd = pytest.importorskip("pandas")
dd = pytest.importorskip("dask.dataframe")

from fastrec import Interactions  # noqa: E402
from fastrec.distributed import DaskALS, recommend_all  # noqa: E402
from fastrec.distributed import recommend as recommend_module  # noqa: E402
from fastrec.distributed._cluster import workers_of  # noqa: E402

from conftest import WAIT  # noqa: E402


@pytest.fixture(scope="module")
def binary():
    """Users x items, binary, with empty users and items; 300 users, so blocks hold many users."""
    rng = np.random.default_rng(3)
    dense = (rng.random((300, 70)) < 0.1).astype(np.float32)
    dense[[4, 150]] = 0
    dense[:, [2, 40]] = 0
    return sp.csr_matrix(dense)


def lists(client, model, n=5, **kwargs):
    """recommend_all's (ids, scores) per user, as padded arrays in user order (indices, not raw ids)."""
    table = client.compute(recommend_all(model, client, n=n, raw_ids=False, **kwargs)).result(timeout=WAIT)
    table = table.sort_values(["user", "rank"])
    ids = np.full((model.n_users_, n), -1, dtype=np.int64)
    scores = np.full((model.n_users_, n), -np.inf)
    users, ranks = table["user"].to_numpy(), table["rank"].to_numpy() - 1
    ids[users, ranks] = table["item"].to_numpy()
    scores[users, ranks] = table["score"].to_numpy()
    return ids, scores


def assert_same_as_recommend(client, model, n=5, block_users=None, **kwargs):
    ids, scores = lists(client, model, n, block_users=block_users, **kwargs)
    want_ids, want_scores = model.recommend(np.arange(model.n_users_), n=n, **kwargs)
    width = want_ids.shape[1]  # n at most the number of items
    assert (ids[:, width:] == -1).all()
    ids, scores = ids[:, :width], scores[:, :width]
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6)
    return ids


def resident(model, client, exclude_seen=True):
    """Whether recommend_all would rank the blocks kept on the workers (not send the users)."""
    return recommend_module._resident_users(model, model._require_state(), client, None, exclude_seen,
                                            workers_of(client, WAIT)) is not None


@pytest.mark.parametrize("item_step", ["sums", "gather"])
def test_the_kept_blocks_give_recommend_for_every_user_with_filters(dask_client, binary, item_step):
    model = DaskALS(factors=5, iterations=3, random_state=0, client=dask_client).fit(binary, timeout=WAIT,
                                                                                    item_step=item_step)
    assert resident(model, dask_client)
    assert_same_as_recommend(dask_client, model, n=6)
    assert_same_as_recommend(dask_client, model, n=6, block_users=7)  # many tasks per block
    assert_same_as_recommend(dask_client, model, n=4, exclude_seen=False)
    assert_same_as_recommend(dask_client, model, n=4, exclude=[0, 5, 9])
    assert_same_as_recommend(dask_client, model, n=3, candidates=np.arange(10, 30))
    assert_same_as_recommend(dask_client, model, n=80)  # more than the items: padded lists
    assert resident(model, dask_client)
    # the kept shards hold their rows only: the sums' counts went with the fit
    kept = dask_client.gather(model._resident.shards)
    assert kept and all("_chunk_counts" not in shard.__dict__ for shard in kept)


def test_a_refit_and_partial_fits_never_leave_stale_lists(dask_client, binary):
    model = DaskALS(factors=5, iterations=3, random_state=0, client=dask_client).fit(binary, timeout=WAIT)
    before = assert_same_as_recommend(dask_client, model)
    # a refit on other data: the new fit's blocks, never the old ones
    other = binary[::-1].tocsr()
    model.fit(other, timeout=WAIT)
    assert resident(model, dask_client)
    after = assert_same_as_recommend(dask_client, model)
    assert not np.array_equal(before, after)  # the lists did change: stale blocks would fail the line above
    # a user partial fit: that user's new factors and seen items live on the client only
    user = 7
    old_list = after[user].copy()
    model.partial_fit_users([user], binary[[200]] * 3.0)
    assert not resident(model, dask_client)
    updated = assert_same_as_recommend(dask_client, model)
    assert not np.array_equal(updated[user], old_list)
    # the blocks of a changed state are dropped, not kept on the workers
    assert "_resident" not in vars(model)


def test_item_changes_reach_the_kept_users(dask_client, binary):
    model = DaskALS(factors=5, iterations=3, random_state=1, client=dask_client).fit(binary, timeout=WAIT)
    before = assert_same_as_recommend(dask_client, model)
    # the same users with other items (a state sharing the user arrays): the items sent with the last call
    # stay on the workers for the next, but only for the very index they were built from
    favourite = model.item_factors_.copy()
    favourite[10] = model.user_factors_.sum(axis=0) * 10  # everyone's first choice, unless seen
    model._state = dataclasses.replace(model._state, item_factors=favourite, cache={})
    assert resident(model, dask_client)
    after = assert_same_as_recommend(dask_client, model)
    assert not np.array_equal(before, after)
    # an item re-solved from its own column: its users' rows do not change, its vector and the index do
    model.partial_fit_items([12], binary[:, [12]])
    assert_same_as_recommend(dask_client, model)
    # an item partial fit with other entries moves them into its users' rows: those are sent from the client
    model.partial_fit_items([3], binary[:, [30]] * 4.0)
    assert not resident(model, dask_client)
    assert_same_as_recommend(dask_client, model)


def test_a_frame_fit_keeps_its_users_and_excludes_what_recommend_excludes(dask_client):
    rng = np.random.default_rng(5)
    events = pd.DataFrame({"user": rng.integers(0, 90, 900), "item": rng.integers(0, 40, 900)})
    frame = dd.from_pandas(events, npartitions=2)
    model = DaskALS(factors=4, iterations=2, random_state=0, client=dask_client).fit(frame, weight_col=None,
                                                                                   timeout=WAIT)
    assert model.user_items_.nnz == 0 and resident(model, dask_client)
    assert_same_as_recommend(dask_client, model)  # nothing excluded, as recommend
    data = Interactions.from_dataframe(events, user_col="user", item_col="item")
    table = dask_client.compute(recommend_all(model, dask_client, n=4, X=frame)).result(timeout=WAIT)
    got = table.sort_values(["user", "rank"])["item"].to_numpy().reshape(-1, 4)
    want, _ = model.recommend(data.user_map.labels, n=4, X=data.to_csr(), raw_ids=True)
    np.testing.assert_array_equal(got, want)


def test_rows_exchange_keeps_no_seen_items_and_sends_them(dask_client, binary):
    model = DaskALS(factors=4, iterations=2, random_state=0, client=dask_client).fit(
        binary, exchange="rows", blocks=4, timeout=WAIT)
    # each shard received the item blocks as the rows it reads: its columns are local, not item ids
    assert model._resident.shards is None
    assert not resident(model, dask_client) and resident(model, dask_client, exclude_seen=False)
    assert_same_as_recommend(dask_client, model)
    assert_same_as_recommend(dask_client, model, exclude_seen=False)


def test_pickling_release_and_another_client(dask_client, binary):
    model = DaskALS(factors=4, iterations=2, random_state=0, client=dask_client).fit(binary, timeout=WAIT)
    copy = pickle.loads(pickle.dumps(model))
    assert "_resident" not in vars(copy)
    np.testing.assert_array_equal(lists(dask_client, copy)[0], lists(dask_client, model)[0])
    with distributed.Client(dask_client.scheduler.address, timeout=WAIT) as other:
        assert not resident(model, other)
        assert_same_as_recommend(other, model)
    assert resident(model, dask_client)  # another client's call does not drop them
    model.release()
    assert not resident(model, dask_client)
    assert_same_as_recommend(dask_client, model)


def test_a_killed_worker_loses_its_blocks_and_recommend_all_sends_them(own_cluster_client, binary):
    client = own_cluster_client
    model = DaskALS(factors=5, iterations=3, random_state=0, client=client).fit(binary, timeout=WAIT)
    assert resident(model, client)
    pids = client.run(os.getpid)
    os.kill(pids[sorted(pids)[-1]], signal.SIGKILL)
    deadline = time.monotonic() + WAIT
    while resident(model, client):  # the scheduler tells the client its futures are lost
        assert time.monotonic() < deadline, "the client never heard of the lost worker"
        time.sleep(0.05)
    client.wait_for_workers(2, timeout=WAIT)  # the nanny restarted it, empty
    assert_same_as_recommend(client, model)


def test_raw_ids_and_parquet_from_the_kept_blocks(dask_client, tmp_path):
    rng = np.random.default_rng(9)
    events = pd.DataFrame({"user": np.char.add("u-", rng.integers(0, 150, 2000).astype(str)),
                           "item": np.char.add("i-", rng.integers(0, 60, 2000).astype(str))})
    data = Interactions.from_dataframe(events, user_col="user", item_col="item")
    model = DaskALS(factors=4, iterations=2, random_state=0, client=dask_client).fit(data, timeout=WAIT)
    assert resident(model, dask_client)
    users = data.user_map.labels
    want, _ = model.recommend(users, n=4, raw_ids=True)
    want = np.asarray(want).astype(str)
    table = dask_client.compute(recommend_all(model, dask_client, n=4, block_users=30)).result(timeout=WAIT)
    assert isinstance(table["user"].dtype, pd.CategoricalDtype) and isinstance(table["item"].dtype, pd.CategoricalDtype)
    got = table.assign(user=table["user"].astype(str)).sort_values(["user", "rank"])
    order = np.argsort(users.astype(str), kind="stable")
    np.testing.assert_array_equal(got["item"].astype(str).to_numpy().reshape(-1, 4), want[order])
    files = recommend_all(model, dask_client, n=4, path=tmp_path / "out", block_users=30, timeout=WAIT)
    assert len(files) >= 6  # 150 users in parts of at most 30
    written = pd.concat([pd.read_parquet(f) for f in files])
    written = written.assign(user=written["user"].astype(str)).sort_values(["user", "rank"])
    np.testing.assert_array_equal(written["item"].astype(str).to_numpy().reshape(-1, 4), want[order])
    assert resident(model, dask_client)
