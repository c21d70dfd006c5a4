"""DaskALS on a LocalCluster: the same factors as single-machine ALS, Dask DataFrame input, faults."""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys

import numpy as np
import pytest

import fastrec
from fastrec import ALS, Interactions

distributed = pytest.importorskip("distributed")
dd = pytest.importorskip("dask.dataframe")
pd = pytest.importorskip("pandas")

from fastrec.distributed import ClusterError, DaskALS  # noqa: E402
from fastrec.distributed._cluster import worker_info, worker_threads  # noqa: E402

from conftest import WAIT  # noqa: E402

# float32: summation order moves factors of size ~0.5 by up to a few 1e-6 after three iterations
# (the portable build's CG, summed over user blocks, measured 2.3e-6 on an entry near zero)
TOL = {np.float32: dict(rtol=2e-4, atol=1e-5), np.float64: dict(rtol=1e-9, atol=1e-12)}


def assert_same_model(got, ref, dtype=np.float32):
    assert got.user_factors_.dtype == ref.user_factors_.dtype
    np.testing.assert_allclose(got.user_factors_, ref.user_factors_, **TOL[dtype])
    np.testing.assert_allclose(got.item_factors_, ref.item_factors_, **TOL[dtype])


# The reference loss is computed with one thread, as DaskALS scores each block's loss: both
# sides then agree to float summation order (~1e-7 measured).  The old "last iteration drift"
# (1e-4 to 4e-4 relative, about one fit in six) was a race in the compiled ``als_loss``
# (per-entry c/pref shared between OpenMP threads), fixed in ext/_als.pyx and tested in
# tests/models/test_als.py::test_als_loss_kernel_is_the_same_with_two_threads.
LOSS_RTOL = 2e-6


def reference(params, X):
    """Single-machine ALS with a serial loss (its factors are the same at any thread count)."""
    return ALS(**params, num_threads=1).fit(X, compute_loss=True)


@pytest.mark.parametrize("solver,dtype,exchange,item_step", [("cg", np.float32, "rows", "auto"),
                                                             ("cg", np.float64, "auto", "auto"),
                                                             ("cg", np.float32, "broadcast", "sums"),
                                                             ("cg", np.float32, "broadcast", "gather"),
                                                             ("cholesky", np.float32, "broadcast", "auto"),
                                                             ("cholesky", np.float64, "rows", "gather")])
def test_two_workers_give_the_single_machine_factors(dask_client, counts_matrix, solver, dtype, exchange, item_step):
    params = dict(factors=6, iterations=4, solver=solver, dtype=dtype, random_state=11)
    ref = ALS(**params).fit(counts_matrix)
    model = DaskALS(**params, client=dask_client).fit(counts_matrix, exchange=exchange, timeout=WAIT,
                                                     item_step=item_step)
    assert_same_model(model, ref, dtype)
    assert model.n_users_ == 140 and model.n_items_ == 90
    assert model.user_items_.nnz == counts_matrix.nnz
    # the empty users and items get what single-machine ALS gives them
    np.testing.assert_allclose(model.user_factors_[[5, 17]], ref.user_factors_[[5, 17]], **TOL[dtype])


def test_pipelined_sweeps_give_the_same_bits(dask_client, counts_matrix):
    """Without a loss to report, the next sweep is submitted before the last one's stats are read (its Gram
    matrix summed on a worker): the factors are bit for bit those of the sweep-by-sweep fit."""
    params = dict(factors=6, iterations=4, random_state=3, dtype=np.float64)
    pipelined = DaskALS(**params, client=dask_client).fit(counts_matrix, compute_loss=False, timeout=WAIT)
    stepwise = DaskALS(**params, client=dask_client).fit(counts_matrix, compute_loss=True, timeout=WAIT)
    np.testing.assert_array_equal(pipelined.user_factors_, stepwise.user_factors_)
    np.testing.assert_array_equal(pipelined.item_factors_, stepwise.item_factors_)
    assert_same_model(pipelined, ALS(**params).fit(counts_matrix), np.float64)


def test_pipelined_sweeps_on_a_worker_with_two_threads(one_worker_client, counts_matrix):
    """Two threads run a worker's tasks at once (two blocks' sums over the same shard, its kept counts and
    work spaces): the factors are still ALS's."""
    params = dict(factors=5, iterations=3, random_state=4, dtype=np.float64)
    model = DaskALS(**params, client=one_worker_client).fit(counts_matrix, compute_loss=False, blocks=3,
                                                            timeout=WAIT)
    assert_same_model(model, ALS(**params).fit(counts_matrix), np.float64)


@pytest.mark.parametrize("solver,dtype", [("cg", np.float32), ("cholesky", np.float64)])
def test_one_worker_with_two_threads_gives_the_single_machine_factors(one_worker_client, counts_matrix,
                                                                      solver, dtype):
    params = dict(factors=5, iterations=3, solver=solver, dtype=dtype, random_state=2)
    ref = reference(params, counts_matrix)
    model = DaskALS(**params, client=one_worker_client).fit(counts_matrix, compute_loss=True, timeout=WAIT)
    assert_same_model(model, ref, dtype)
    # a worker with two threads still scores its blocks' loss serially (see LOSS_RTOL)
    np.testing.assert_allclose(model.loss_history_, ref.loss_history_, rtol=LOSS_RTOL)


def test_more_blocks_than_workers_and_the_loss(dask_client, counts_matrix):
    params = dict(factors=4, iterations=3, random_state=5, regularization=0.05, alpha=2.0)
    ref = reference(params, counts_matrix)
    seen = []
    model = DaskALS(**params, client=dask_client).fit(
        counts_matrix, callback=lambda it, elapsed, loss: seen.append((it, loss)), blocks=5, timeout=WAIT)
    assert_same_model(model, ref)
    np.testing.assert_allclose(model.loss_history_, ref.loss_history_, rtol=LOSS_RTOL)
    assert [it for it, _ in seen] == [0, 1, 2]


def test_ials_parameters_follow_als(dask_client, counts_matrix):
    params = dict(factors=4, iterations=3, random_state=1, unobserved_weight=0.3, regularization=0.01)
    ref = reference(params, counts_matrix)
    model = DaskALS(**params, client=dask_client).fit(counts_matrix, compute_loss=True, exchange="rows",
                                                      timeout=WAIT)
    assert_same_model(model, ref)
    np.testing.assert_allclose(model.loss_history_, ref.loss_history_, rtol=LOSS_RTOL)


def test_worker_threads_despite_dask_omp_setting(one_worker_client):
    assert one_worker_client.run(lambda: os.environ.get("OMP_NUM_THREADS")) == {
        w: "1" for w in worker_info(one_worker_client)}
    assert one_worker_client.submit(worker_threads, 0, pure=False).result(timeout=WAIT) == 2
    assert one_worker_client.submit(worker_threads, 3, pure=False).result(timeout=WAIT) == 3


def test_parameters_are_als_plus_client_and_the_model_saves_as_als(dask_client, counts_matrix, tmp_path):
    names = set(ALS().get_params())
    assert set(DaskALS().get_params()) == names | {"client"}
    assert {k: v for k, v in DaskALS().get_params().items() if k != "client"} == ALS().get_params()
    model = DaskALS(factors=3, iterations=2, random_state=0, client=dask_client).fit(counts_matrix, timeout=WAIT)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = ALS.load(path)
    assert type(loaded) is ALS
    np.testing.assert_array_equal(loaded.item_factors_, model.item_factors_)
    np.testing.assert_array_equal(model.recommend(3, n=5)[0], loaded.recommend(3, n=5)[0])
    copy = pickle.loads(pickle.dumps(model))
    assert copy.client is None and model.client is dask_client
    np.testing.assert_array_equal(copy.user_factors_, model.user_factors_)


def test_dask_dataframe_with_string_ids_gives_the_interactions_model(dask_client):
    rng = np.random.default_rng(3)
    n = 900
    frame = pd.DataFrame({"user": np.char.add("u", rng.integers(0, 70, n).astype(str)),
                          "item": np.char.add("i", rng.integers(0, 45, n).astype(str)),
                          "weight": rng.integers(1, 4, n).astype(float)})  # repeated pairs are summed
    data = Interactions.from_dataframe(frame, user_col="user", item_col="item", weight_col="weight")
    params = dict(factors=5, iterations=3, random_state=4)
    ref = ALS(**params).fit(data)
    model = DaskALS(**params, client=dask_client).fit(dd.from_pandas(frame, npartitions=3), timeout=WAIT)
    assert model.user_map_ == data.user_map and model.item_map_ == data.item_map
    assert_same_model(model, ref)
    assert model.user_items_.shape == data.shape and model.user_items_.nnz == 0  # never gathered
    unweighted = DaskALS(**params, client=dask_client).fit(dd.from_pandas(frame[["user", "item"]], npartitions=2),
                                                           weight_col=None, timeout=WAIT)
    assert_same_model(unweighted, ALS(**params).fit(Interactions.from_dataframe(frame, "user", "item")))


def test_dask_dataframe_errors_name_the_column(dask_client):
    frame = pd.DataFrame({"user": [1, 2, None], "item": [1, 2, 3], "weight": [1.0, 1.0, 1.0]})
    with pytest.raises(ValueError, match="'user'"):
        DaskALS(client=dask_client).fit(dd.from_pandas(frame, npartitions=2), timeout=WAIT)
    with pytest.raises(KeyError, match="weight_col='w'"):
        DaskALS(client=dask_client).fit(dd.from_pandas(frame, npartitions=1), weight_col="w", timeout=WAIT)


def _killer(client, iteration):
    """A callback that kills one worker process (SIGKILL) after ``iteration``, once."""
    pids = client.run(os.getpid)
    address = sorted(pids)[-1]
    killed = []

    def callback(it, elapsed, loss):
        if it == iteration and not killed:
            os.kill(pids[address], signal.SIGKILL)
            killed.append(address)
    return callback, killed


def test_a_killed_worker_is_survived_with_the_same_result(own_cluster_client, counts_matrix):
    params = dict(factors=4, iterations=4, random_state=8)
    ref = ALS(**params).fit(counts_matrix)
    callback, killed = _killer(own_cluster_client, 1)
    model = DaskALS(**params, client=own_cluster_client).fit(counts_matrix, callback=callback, retries=1,
                                                             timeout=WAIT)
    assert killed
    assert_same_model(model, ref)
    assert len(model.loss_history_) == 4


def test_a_worker_killed_during_pipelined_sweeps_is_survived(own_cluster_client, counts_matrix):
    """Without a loss the sweeps are pipelined: the callback of sweep 1 runs while sweep 2 is already on the
    workers, so the kill lands mid-graph; the fit starts again and gives the same factors."""
    params = dict(factors=4, iterations=4, random_state=8)
    ref = ALS(**params).fit(counts_matrix)
    callback, killed = _killer(own_cluster_client, 1)
    model = DaskALS(**params, client=own_cluster_client).fit(counts_matrix, callback=callback, compute_loss=False,
                                                             retries=1, timeout=WAIT)
    assert killed
    assert_same_model(model, ref)


def test_a_killed_worker_without_retries_keeps_the_previous_state(own_cluster_client, counts_matrix):
    model = DaskALS(factors=3, iterations=2, random_state=0, client=own_cluster_client).fit(
        counts_matrix[:50], timeout=WAIT)
    before = model.user_factors_.copy()
    callback, killed = _killer(own_cluster_client, 0)
    with pytest.raises(ClusterError, match="lost a worker 1 time.*keeps its previous fitted state"):
        model.fit(counts_matrix, callback=callback, retries=0, timeout=WAIT)
    assert killed
    assert model.n_users_ == 50
    np.testing.assert_array_equal(model.user_factors_, before)


def test_argument_errors(dask_client, counts_matrix):
    model = DaskALS(client=dask_client)
    with pytest.raises(ValueError, match="exchange"):
        model.fit(counts_matrix, exchange="all")
    with pytest.raises(ValueError, match="timeout"):
        model.fit(counts_matrix, timeout=0)
    with pytest.raises(ValueError, match="blocks"):
        model.fit(counts_matrix, blocks=0)
    with pytest.raises(TypeError, match="client must be a distributed.Client"):
        DaskALS(client="tcp://127.0.0.1:1").fit(counts_matrix)
    with pytest.raises(ValueError, match="factors"):
        DaskALS(factors=0, client=dask_client).fit(counts_matrix)
    with pytest.raises(ValueError, match="no interactions"):
        model.fit(counts_matrix * 0)
    huge = counts_matrix.astype(np.float32)
    huge.data[:] = 3e37  # confidences beyond float32: refused before any worker sees them, as ALS does
    with pytest.raises(ValueError, match="beyond what float32 ALS can solve"):
        DaskALS(alpha=10.0, client=dask_client).fit(huge, timeout=WAIT)
    assert not hasattr(model, "user_factors_")
    with pytest.raises(ValueError, match="item_step"):
        model.fit(counts_matrix, item_step="scatter")
    with pytest.raises(ValueError, match="item_step='sums' needs solver='cg'"):
        DaskALS(solver="cholesky", client=dask_client).fit(counts_matrix, item_step="sums")
    with pytest.raises(ValueError, match="item_step='sums' needs"):
        model.fit(counts_matrix, exchange="rows", item_step="sums")


def test_import_fastrec_does_not_import_dask():
    code = ("import sys, fastrec; fastrec.ALS; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT)
    assert out.stdout.strip() == "[]", out.stderr
    assert fastrec.distributed.DaskALS is DaskALS  # loaded on first use
