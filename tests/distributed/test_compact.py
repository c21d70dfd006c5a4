"""Compact shard rows: exact round trips against the CSR they came from, the exchange plan, chunked solves.

These run in the test process (no cluster): ``build_shard`` and
``solve_block`` are plain functions the workers call.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("distributed")

from fastrec.kernels import kernel_variant  # noqa: E402
from fastrec import ALS  # noqa: E402
from fastrec.distributed import _tasks  # noqa: E402
from fastrec.distributed._compact import CompactRows  # noqa: E402
from fastrec.models.ials import kernel_form, kernel_values  # noqa: E402


def random_csr(seed: int, n_rows: int, n_cols: int, density: float, values: str, dtype=np.float32) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    X = sp.random(n_rows, n_cols, density=density, format="csr", random_state=rng, dtype=np.float64)
    if values == "ones":
        X.data[:] = 1.0
    elif values == "ratings":
        X.data = rng.integers(1, 11, X.nnz) / 2.0
    elif values == "signs":
        X.data = rng.choice([-1.0, 1.0], X.nnz)
    else:  # many distinct values
        X.data = rng.uniform(0.1, 5.0, X.nnz)
    X = X.astype(dtype)
    X.indices = X.indices.astype(np.int32)
    X.sort_indices()
    return X


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2 ** 31), n_rows=st.integers(0, 40), n_cols=st.sampled_from([1, 7, 65536, 65537, 300000]),
       per_row=st.integers(0, 30), values=st.sampled_from(["ones", "ratings", "signs", "many"]),
       chunk=st.integers(1, 50), dtype=st.sampled_from([np.float32, np.float64]))
def test_compact_rows_round_trip(seed, n_rows, n_cols, per_row, values, chunk, dtype):
    X = random_csr(seed, n_rows, n_cols, min(1.0, per_row / n_cols), values, dtype)
    if values == "ratings" and X.nnz:
        X.data[0] = -0.0  # a value compared by its bits: -0.0 stays -0.0
    rows = CompactRows.from_csr(X.indptr, X.indices, X.data, X.shape, chunk=chunk)
    assert rows.nnz == X.nnz and rows.shape == X.shape
    whole = rows.rows(0, n_rows)
    np.testing.assert_array_equal(whole.indptr, X.indptr)
    assert whole.indices.dtype == np.int32 and whole.data.dtype == dtype
    np.testing.assert_array_equal(whole.indices, X.indices)
    np.testing.assert_array_equal(whole.data.view(np.uint8), X.data.view(np.uint8))  # bit for bit
    rng = np.random.default_rng(seed)
    for _ in range(5):
        lo, hi = np.sort(rng.integers(0, n_rows + 1, 2))
        ref = X[lo:hi]
        low = rows.low_rows(int(lo), int(hi))  # the stored uint16 columns, when no column needs more
        assert (low is None) == bool((X.indices >= 65536).any())
        if low is not None:
            assert low.indices.dtype == np.uint16
            np.testing.assert_array_equal(low.indptr, ref.indptr)
            np.testing.assert_array_equal(low.indices, ref.indices)
            np.testing.assert_array_equal(low.data.view(np.uint8), ref.data.view(np.uint8))
        for reuse in (False, True):  # decoded into this thread's work space, or into new arrays
            part = rows.rows(int(lo), int(hi), reuse=reuse)
            np.testing.assert_array_equal(part.indptr, ref.indptr)
            np.testing.assert_array_equal(part.indices, ref.indices)
            np.testing.assert_array_equal(part.data.view(np.uint8), ref.data.view(np.uint8))
            assert part.shape == ref.shape
    # the chunks cover the rows in order, each within the bound unless it is one longer row
    bounds = list(rows.chunks(chunk))
    assert [lo for lo, _ in bounds] == ([0] + [hi for _, hi in bounds[:-1]] if n_rows else [])
    assert (bounds[-1][1] if bounds else 0) == n_rows
    for lo, hi in bounds:
        size = int(X.indptr[hi] - X.indptr[lo])
        assert size <= chunk or hi == lo + 1


def test_compact_rows_storage():
    """Binary data over at most 65,536 columns: 2 bytes per entry, no value array, no high runs."""
    X = random_csr(0, 2000, 30000, 0.01, "ones")
    rows = CompactRows.from_csr(X.indptr, X.indices, X.data, X.shape)
    assert rows.values is None and rows.codes is None and rows.table.tolist() == [1.0]
    assert rows.run_highs.tolist() == [0]
    assert rows.nbytes == 2 * X.nnz + X.indptr.size * 8 + 8 + 4 + 4
    ratings = random_csr(0, 2000, 30000, 0.01, "ratings")
    coded = CompactRows.from_csr(ratings.indptr, ratings.indices, ratings.data, ratings.shape)
    assert coded.codes.dtype == np.uint8 and coded.values is None and coded.table.size == 10
    many = random_csr(0, 200, 100000, 0.01, "many")
    plain = CompactRows.from_csr(many.indptr, many.indices, many.data, many.shape)
    assert plain.values is not None and plain.codes is None
    assert 1 < plain.run_highs.size <= 200 * 2  # at most one change per row past column 65,535 (two ranges)


def test_compact_rows_column_map():
    X = random_csr(1, 50, 1000, 0.05, "ratings")
    column_map = np.random.default_rng(1).permutation(200000).astype(np.int32)[:1000]
    rows = CompactRows.from_csr(X.indptr, X.indices, X.data, X.shape, column_map=column_map, chunk=17)
    np.testing.assert_array_equal(rows.rows(0, 50).indices, column_map[X.indices])


def reference_plan(indices, other_bounds, min_fraction):
    """The plan as first written: sorted unique columns, mapped by binary search."""
    needed = np.unique(indices)
    kinds, selections, local, offset = [], {}, np.empty(needed.size, np.int64), 0
    for j in range(other_bounds.size - 1):
        lo, hi = other_bounds[j], other_bounds[j + 1]
        inside = (needed >= lo) & (needed < hi)
        cols = needed[inside]
        if not cols.size:
            kinds.append(_tasks.SKIP)
        elif cols.size >= min_fraction * (hi - lo):
            kinds.append(_tasks.WHOLE)
            local[inside] = offset + cols - lo
            offset += hi - lo
        else:
            kinds.append(_tasks.ROWS)
            selections[j] = cols - lo
            local[inside] = offset + np.arange(cols.size)
            offset += cols.size
    return local[np.searchsorted(needed, indices)], np.array(kinds), selections


@pytest.mark.parametrize("min_fraction", [0.0, 0.5, np.inf])
def test_plan_matches_the_reference(min_fraction):
    rng = np.random.default_rng(3)
    n_other = 5000
    indices = np.concatenate([rng.integers(0, 1000, 300), rng.integers(1500, 1600, 900), rng.integers(4000, 5000, 50)])
    bounds = np.array([0, 1000, 1500, 2500, 4000, 5000])
    mapped, kinds, selections = reference_plan(indices, bounds, min_fraction)
    column_map, got_kinds, got_selections = _tasks._plan(indices.astype(np.int32), n_other, bounds, min_fraction)
    np.testing.assert_array_equal(got_kinds, kinds)
    assert got_kinds[3] == _tasks.SKIP  # no column there
    assert sorted(got_selections) == sorted(selections)
    for j in selections:
        np.testing.assert_array_equal(got_selections[j], selections[j])
    assert column_map is not None
    np.testing.assert_array_equal(column_map[indices], mapped)
    every = _tasks._plan(np.arange(n_other, dtype=np.int32), n_other, bounds, 0.5)
    assert every[0] is None and (every[1] == _tasks.WHOLE).all()  # identity: no map kept


@pytest.mark.parametrize("params, values", [(dict(solver="cg"), "ratings"), (dict(solver="cg"), "ones"),
                                            (dict(solver="cholesky", dtype=np.float64), "ratings"),
                                            (dict(solver="cg", unobserved_weight=0.1), "signs"),
                                            (dict(confidence="implicit"), "many")])
def test_chunked_solve_equals_one_half_step(monkeypatch, params, values):
    """solve_block decodes and solves in chunks: the factors equal ALS's half-step on the whole rows, bit for bit."""
    dtype = params.get("dtype", np.float32)
    X = random_csr(5, 300, 80, 0.1, values, dtype)
    als = ALS(factors=8, regularization=0.05, random_state=0, **params)
    p = als._check_params()
    rng = np.random.default_rng(0)
    start = rng.standard_normal((300, 8)).astype(dtype)
    Y = rng.standard_normal((80, 8)).astype(dtype)
    gram = als._gram(Y, 1)
    shard = _tasks.build_shard("users", 0, 300, 80, np.array([0, 80]), 0.0, p,
                               (X.indptr, X.indices, X.data))
    assert shard.rows.nnz == X.nnz
    monkeypatch.setattr(_tasks, "CHUNK_ENTRIES", 37)  # many chunks, rows of ~8 entries
    assert len(list(shard.rows.chunks(37))) > 10
    solved = _tasks.solve_block(shard, start, gram, p, 1, True, Y)
    ref = start.copy()
    rows = kernel_values(X, kernel_form(p))
    als._half_step(rows, ref, Y, shard.reg, p, p["solver"], 1, YtY=gram)
    if kernel_variant() == "avx2" and p["solver"] == "cg":
        # the AVX2 build's CG solves a group of short rows together, rounding a little differently
        # from a row solved alone, and chunk edges move the groups: equal up to rounding there
        np.testing.assert_allclose(solved.factors, ref, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_array_equal(solved.factors, ref)
    np.testing.assert_array_equal(start, np.random.default_rng(0).standard_normal((300, 8)).astype(dtype))
    monkeypatch.setattr(_tasks, "CHUNK_ENTRIES", 1 << 20)  # one chunk: the loss summed whole
    whole = _tasks.solve_block(shard, start, gram, p, 1, True, Y)
    np.testing.assert_array_equal(whole.factors, ref)
    assert solved.loss == pytest.approx(whole.loss, rel=1e-6)
    assert solved.loss != 0.0


def test_solved_travels_as_its_arrays_without_the_canvas():
    from distributed.protocol import deserialize, serialize
    canvas = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    solved = _tasks.Solved(canvas[10:25], np.eye(3), 2, 1.5, 0.25, 10, canvas)
    header, frames = serialize(solved)
    assert header["serializer"] == "dask"  # buffers, not an in-band pickle
    assert sum(memoryview(f).nbytes for f in frames) == 15 * 3 * 4 + 9 * 8  # the block's rows, not the canvas
    back = deserialize(header, frames)
    np.testing.assert_array_equal(back.factors, canvas[10:25])
    np.testing.assert_array_equal(back.gram, np.eye(3))
    assert (back.failures, back.loss, back.penalty, back.lo, back.canvas) == (2, 1.5, 0.25, 10, None)
    import pickle
    assert pickle.loads(pickle.dumps(solved)).canvas is None
    assert back.sums is None
    # a user block moved (or spilled) before its residual sums were handed on carries them along
    solved.sums = np.arange(12.0).reshape(4, 3)
    for back in (deserialize(*serialize(solved)), pickle.loads(pickle.dumps(solved))):
        np.testing.assert_array_equal(back.factors, canvas[10:25])
        np.testing.assert_array_equal(back.gram, np.eye(3))
        parts = _tasks.sums_parts(back, np.array([0, 1, 4]))
        np.testing.assert_array_equal(np.concatenate(parts), np.arange(12.0).reshape(4, 3))


def test_half_steps_in_canvases_equal_the_copying_ones(monkeypatch):
    """Two blocks per side solved as on two workers: in place in canvases (blocks received copied into them,
    no concatenation) gives the factors of the copying path, bit for bit, over several sweeps."""
    X = random_csr(7, 120, 90, 0.08, "ones")
    X.indices = X.indices.astype(np.int32)
    Xt = X.T.tocsr()
    Xt.indices = Xt.indices.astype(np.int32)
    als = ALS(factors=6, regularization=0.05, random_state=0)
    p = als._check_params()
    bounds = {"users": np.array([0, 50, 120]), "items": np.array([0, 40, 90])}
    n = {"users": 120, "items": 90}
    other = {"users": "items", "items": "users"}
    shards = {side: [_tasks.build_shard(side, int(b[k]), int(b[k + 1]), n[other[side]], bounds[other[side]], 0.0,
                                        p, _block(X if side == "users" else Xt, int(b[k]), int(b[k + 1])))
                     for k in range(2)] for side, b in bounds.items()}
    rng = np.random.default_rng(1)
    start = {side: [rng.standard_normal((int(b[k + 1] - b[k]), 6)).astype(np.float32) for k in range(2)]
             for side, b in bounds.items()}
    results, concatenated = {}, []
    gathered = _tasks._gathered
    monkeypatch.setattr(_tasks, "_gathered", lambda *args: concatenated.append(1) or gathered(*args))
    for in_place in (False, True):
        concatenated.clear()
        blocks = {side: list(v) for side, v in start.items()}
        for _ in range(3):
            for side in ("users", "items"):
                pieces = blocks[other[side]]
                gram = sum(als._gram(_tasks.factors_of(q), 1).astype(np.float64) for q in pieces).astype(np.float32)
                new = []
                for k in range(2):  # block k of each side "lives on worker k": it sees its own blocks' canvases
                    local = [q if j == k else _tasks.Solved(_tasks.factors_of(q).copy(), q.gram, 0, 0.0, 0.0, q.lo)
                             if isinstance(q, _tasks.Solved) else q for j, q in enumerate(pieces)]
                    solved = _tasks.solve_block(shards[side][k], blocks[side][k], gram, p, 1, False, *local,
                                                side_rows=n[side] if in_place else None)
                    if in_place and isinstance(blocks[side][k], _tasks.Solved):
                        assert solved.canvas is blocks[side][k].canvas  # solved where the last one was
                        assert np.shares_memory(solved.factors, blocks[side][k].factors)
                    new.append(solved)
                blocks[side] = new
        results[in_place] = {side: [b.factors.copy() for b in v] for side, v in blocks.items()}
        # copying: every block concatenates its pieces; in place: only the first half-step (plain initial arrays)
        assert len(concatenated) == (2 if in_place else 12)
        if in_place:  # worker 0's user canvas holds every user's current factors (what its items read last)
            canvas = blocks["users"][0].canvas
            np.testing.assert_array_equal(canvas[50:120], blocks["users"][1].factors)
            assert not np.shares_memory(canvas, blocks["users"][1].factors)
    for side in ("users", "items"):
        for k in range(2):
            np.testing.assert_array_equal(results[True][side][k], results[False][side][k])


def _block(csr, lo, hi):
    part = csr[lo:hi]
    return part.indptr.astype(np.int64), part.indices.astype(np.int32), part.data


def _summed_item_half_step(shards, users, start, other_gram, params, item_bounds, reg, empty, threads=1):
    """The item half-step as DaskALS runs it by sums over user blocks, task by task (one process)."""
    new = []
    for j in range(item_bounds.size - 1):
        lo, hi = int(item_bounds[j]), int(item_bounds[j + 1])
        old = start[lo:hi].copy()
        for round_ in range(1 + params["cg_steps"]):
            vector = old if round_ == 0 else _tasks.cg_vector(state)  # the residual's: of the old factors
            sums = [_tasks.item_sums(shard, block, vector, lo, params, round_ == 0, threads)
                    for shard, block in zip(shards, users)]
            if round_ == 0:
                state = _tasks.cg_begin(old, _tasks.ItemBlock(lo, hi, reg[lo:hi], empty[lo:hi]), params, *sums,
                                        side_rows=item_bounds[-1])
            state = (_tasks.cg_residual if round_ == 0 else _tasks.cg_step)(state, other_gram, *sums)
        new.append(_tasks.cg_finish(state, params))
    return new


@pytest.mark.parametrize("params, values", [(dict(), "ratings"), (dict(), "ones"),
                                            (dict(unobserved_weight=0.3), "signs"),
                                            (dict(confidence="implicit", alpha=3.0), "many"),
                                            (dict(cg_steps=6, regularization=1e-4), "ratings"),
                                            (dict(factors=2, cg_steps=5), "ratings")])  # CG converges
def test_item_half_step_by_sums_over_user_blocks_equals_als(monkeypatch, params, values):
    """Three user blocks' sums and two item blocks' dense CG steps give ALS's item half-step (float64: to
    rounding), its penalty and Gram matrix; items without entries are zero, as the kernel leaves them."""
    keep = np.ones(50)
    keep[[4, 31]] = 0  # two items without entries
    X = sp.csr_matrix(random_csr(11, 90, 50, 0.12, values, np.float64) @ sp.diags(keep))
    X.eliminate_zeros()
    X.sort_indices()
    X.indices = X.indices.astype(np.int32)
    f = params.pop("factors", 7)
    als = ALS(factors=f, regularization=params.pop("regularization", 0.05), dtype=np.float64, random_state=0,
              **params)
    p = {k: v for k, v in als._check_params().items() if k != "random_state"}
    rng = np.random.default_rng(2)
    U = rng.standard_normal((90, f))
    start = rng.standard_normal((50, f))
    user_bounds, item_bounds = np.array([0, 25, 60, 90]), np.array([0, 21, 50])
    shards = [_tasks.build_shard("users", int(a), int(b), 50, np.array([0, 50]), 0.0, p, _block(X, int(a), int(b)))
              for a, b in zip(user_bounds[:-1], user_bounds[1:])]
    users = [_tasks.Solved(U[a:b], np.zeros((f, f)), 0, 0.0, 0.0, int(a)) for a, b in zip(user_bounds[:-1],
                                                                                           user_bounds[1:])]
    counts = np.diff(X.tocsc().indptr)
    reg = _tasks.row_penalty(counts, 90, p)
    monkeypatch.setattr(_tasks, "SUMS_CHUNK_ENTRIES", 40)  # the users' rows decoded in several chunks
    new = _summed_item_half_step(shards, users, start, als._gram(U, 1), p, item_bounds, reg, counts == 0)
    ref = start.copy()
    Xt = X.T.tocsr()
    Xt.indices = Xt.indices.astype(np.int32)
    als._half_step(kernel_values(Xt, kernel_form(p)), ref, U, reg, p, "cg", 1, YtY=als._gram(U, 1))
    got = np.concatenate([b.factors for b in new])
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)
    assert not got[[4, 31]].any() and np.abs(got - start).max() > 0.1
    scale = p["unobserved_weight"] if p["unobserved_weight"] else 1.0
    np.testing.assert_allclose(sum(b.penalty for b in new), scale * float(reg @ (ref * ref).sum(axis=1)), rtol=1e-9)
    np.testing.assert_allclose(sum(b.gram for b in new), ref.T @ ref, rtol=1e-9)
    assert sum(b.failures for b in new) == 0


def test_item_sums_threads_give_the_same_bits():
    """The user blocks' sums split items between threads: every item's sum runs over its users in order."""
    X = random_csr(3, 200, 64, 0.2, "ratings")
    p = {k: v for k, v in ALS(factors=8)._check_params().items() if k != "random_state"}
    shard = _tasks.build_shard("users", 0, 200, 64, np.array([0, 64]), 0.0, p, _block(X, 0, 200))
    rng = np.random.default_rng(0)
    U, V = rng.standard_normal((200, 8)).astype(np.float32), rng.standard_normal((40, 8)).astype(np.float32)
    one = _tasks.item_sums(shard, U, V, 10, p, True, 1)
    np.testing.assert_array_equal(_tasks.item_sums(shard, U, V, 10, p, True, 3), one)
    assert np.abs(one).max() > 0


def test_released_canvas_rows_read_zero_and_the_others_stay():
    """A canvas's rows outside the block are given back between half-steps: whole pages only."""
    canvas = np.arange(4000 * 64, dtype=np.float32).reshape(4000, 64) + 1
    before = canvas.copy()
    _tasks._release_rows(canvas, 100, 3900)
    np.testing.assert_array_equal(canvas[:100], before[:100])
    np.testing.assert_array_equal(canvas[3900:], before[3900:])
    assert not canvas[120:3880].any()  # 256-byte rows: every page inside 100:3900 is released
    _tasks._release_rows(canvas, 5, 5)  # nothing to release
    np.testing.assert_array_equal(canvas[:100], before[:100])


@pytest.mark.parametrize("params, values", [(dict(), "ratings"), (dict(), "ones"),
                                            (dict(unobserved_weight=0.3), "signs"),
                                            (dict(confidence="implicit", alpha=3.0), "many")])
def test_user_solve_adds_the_item_residual_sums(monkeypatch, params, values):
    """solve_block(residual_sums=True) leaves the user block's part of the item residual's sums, handed on
    in blocks of items once: equal to item_sums of the solved block (the first CG round it replaces)."""
    X = random_csr(5, 60, 40, 0.2, values, np.float64)
    als = ALS(factors=6, dtype=np.float64, random_state=0, **params)
    p = {k: v for k, v in als._check_params().items() if k != "random_state"}
    rng = np.random.default_rng(3)
    Y, start = rng.standard_normal((40, 6)), rng.standard_normal((60, 6))
    shard = _tasks.build_shard("users", 0, 60, 40, np.array([0, 40]), 0.0, p, _block(X, 0, 60))
    monkeypatch.setattr(_tasks, "SUMS_CHUNK_ENTRIES", 50)  # several chunks, each adding its part
    monkeypatch.setattr(_tasks, "CHUNK_ENTRIES", 50)  # the plain solve below, chunked alike
    solved = _tasks.solve_block(shard, start.copy(), als._gram(Y, 1), p, 1, False, Y, in_place=True,
                                residual_sums=True)
    bounds = np.array([0, 15, 40])
    parts = _tasks.sums_parts(solved, bounds)
    assert solved.sums is None  # handed on: the block no longer holds them
    with pytest.raises(RuntimeError, match="no residual sums"):
        _tasks.sums_parts(solved, bounds)
    for j, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        ref = _tasks.item_sums(shard, solved, Y[lo:hi], int(lo), p, True, 1)
        np.testing.assert_allclose(_tasks.part_of(parts, j), ref, rtol=1e-12, atol=1e-12)
        assert np.abs(ref).max() > 0.1
    plain = _tasks.solve_block(shard, start.copy(), als._gram(Y, 1), p, 1, False, Y, in_place=True)
    np.testing.assert_array_equal(plain.factors, solved.factors)  # the sums change nothing else


def test_item_sums_from_several_threads_at_once():
    """A worker with several threads runs item_sums tasks at once: each thread has its own work space."""
    from concurrent.futures import ThreadPoolExecutor
    X = random_csr(4, 20000, 80, 0.1, "ratings")
    p = {k: v for k, v in ALS(factors=8)._check_params().items() if k != "random_state"}
    shard = _tasks.build_shard("users", 0, 20000, 80, np.array([0, 80]), 0.0, p, _block(X, 0, 20000))
    rng = np.random.default_rng(1)
    U = rng.standard_normal((20000, 8)).astype(np.float32)
    blocks = [(lo, rng.standard_normal((hi - lo, 8)).astype(np.float32)) for lo, hi in [(0, 30), (30, 80), (5, 70)]]
    serial = [_tasks.item_sums(shard, U, V, lo, p, False, 1) for lo, V in blocks]
    with ThreadPoolExecutor(3) as pool:
        for _ in range(5):
            together = list(pool.map(lambda b: _tasks.item_sums(shard, U, b[1], b[0], p, False, 1), blocks))
            for got, ref in zip(together, serial):
                np.testing.assert_array_equal(got, ref)


def _kernel_sums(X, U, V, lo, counts=None, known=False):
    from fastrec.kernels import load_kernel
    out = np.zeros_like(V)
    users, values = np.empty(max(X.nnz, 1), np.int32), np.empty(max(X.nnz, 1), np.float32)
    kept = load_kernel("als_dist").item_sums(X.indptr.astype(np.int64), X.indices, X.data, U, V, out, lo,
                                             np.float32(2.0), False, False, 1, users, values, False, counts, known)
    return out, kept


def test_item_sums_reads_the_counts_it_wrote():
    """The counts of a chunk's entries per item, written by one call, skip the counting pass of the next
    ones with the same bits; counts that do not match the rows are refused, never trusted."""
    X = random_csr(8, 300, 90, 0.1, "ratings")
    rng = np.random.default_rng(2)
    U, V = rng.standard_normal((300, 8)).astype(np.float32), rng.standard_normal((50, 8)).astype(np.float32)
    ref, kept = _kernel_sums(X, U, V, 20)
    assert not kept  # no counts given
    counts = np.full(50, 7, dtype=np.uint16)
    first, kept = _kernel_sums(X, U, V, 20, counts)
    assert kept
    np.testing.assert_array_equal(counts, np.bincount(X.indices[(X.indices >= 20) & (X.indices < 70)] - 20,
                                                      minlength=50))
    again, kept = _kernel_sums(X, U, V, 20, counts, True)
    np.testing.assert_array_equal(first, ref)
    np.testing.assert_array_equal(again, ref)
    for wrong in (counts + 1, np.roll(counts, 1), np.where(np.arange(50) == 3, counts + 5, counts)):
        wrong = wrong.astype(np.uint16)
        if wrong.sum() == counts.sum() and (wrong == counts).all():
            continue
        with pytest.raises(ValueError, match="counts do not match"):
            _kernel_sums(X, U, V, 20, wrong, True)


def test_item_sums_keeps_no_counts_above_uint16():
    X = sp.csr_matrix((np.ones(70000, np.float32), (np.arange(70000), np.zeros(70000, np.int64))),
                      shape=(70000, 3))
    X.indices = X.indices.astype(np.int32)
    U, V = np.ones((70000, 2), np.float32), np.ones((3, 2), np.float32)
    counts = np.zeros(3, np.uint16)
    out, kept = _kernel_sums(X, U, V, 0, counts)
    assert not kept and out[0, 0] == 280000.0  # (c - 1) (u . v) u = 2 * 2 * 1 per user (alpha 2)


def test_user_shards_keep_their_chunk_counts(monkeypatch):
    """item_sums (and the user solve's residual sums) keep each chunk's counts with the shard: later calls,
    for any block of items inside what was counted, give the same bits."""
    X = random_csr(6, 400, 70, 0.15, "ones")
    p = {k: v for k, v in ALS(factors=8)._check_params().items() if k != "random_state"}
    monkeypatch.setattr(_tasks, "SUMS_CHUNK_ENTRIES", 600)  # several chunks
    shard = _tasks.build_shard("users", 0, 400, 70, np.array([0, 70]), 0.0, p, _block(X, 0, 400))
    rng = np.random.default_rng(4)
    U, V = rng.standard_normal((400, 8)).astype(np.float32), rng.standard_normal((70, 8)).astype(np.float32)
    whole = _tasks.item_sums(shard, U, V, 0, p, False, 1)  # counts every chunk, all items
    cache = shard.__dict__["_chunk_counts"]
    assert len(cache) == len(list(shard.rows.chunks(600))) > 2
    assert sum(int(c.counts.sum()) for c in cache.values()) == X.nnz
    for lo, hi in [(0, 70), (10, 40), (40, 70)]:
        plain = shard.__dict__.pop("_chunk_counts")
        fresh = _tasks.item_sums(shard, U, V[lo:hi], lo, p, False, 1)
        shard.__dict__["_chunk_counts"] = plain
        np.testing.assert_array_equal(_tasks.item_sums(shard, U, V[lo:hi], lo, p, False, 1), fresh)
    np.testing.assert_array_equal(_tasks.item_sums(shard, U, V, 0, p, False, 1), whole)
    shard.__dict__.pop("_chunk_counts")  # parts first: the whole range is not known until counted
    parts = [_tasks.item_sums(shard, U, V[lo:hi], lo, p, False, 1) for lo, hi in [(10, 40), (40, 70)]]
    np.testing.assert_array_equal(_tasks.item_sums(shard, U, V, 0, p, False, 1), whole)
    np.testing.assert_array_equal(np.concatenate(parts), whole[10:])


def test_item_sums_read_uint16_columns_as_int32_ones():
    """The kernel reads a shard's stored uint16 columns as it reads decoded int32 ones: the same bits."""
    from fastrec.kernels import load_kernel
    X = random_csr(9, 200, 3000, 0.01, "many")
    rng = np.random.default_rng(5)
    U, V = rng.standard_normal((200, 8)).astype(np.float32), rng.standard_normal((1000, 8)).astype(np.float32)
    got = []
    for indices in (X.indices.astype(np.int32), X.indices.astype(np.uint16)):
        out = np.zeros_like(V)
        users, values = np.empty(X.nnz, np.int32), np.empty(X.nnz, np.float32)
        load_kernel("als_dist").item_sums(X.indptr.astype(np.int64), indices, X.data, U, V, out, 1500,
                                          np.float32(1.5), False, True, 2, users, values, False)
        got.append(out)
    np.testing.assert_array_equal(got[0], got[1])
    assert np.abs(got[0]).max() > 0.1


def test_item_sums_over_more_than_65536_items_equal_numpy():
    """Wide catalogues: the columns are decoded (their high halves), the counts are not kept; the step's sums
    equal a NumPy reference, sum_u (c - 1) (x_u . v_i) x_u."""
    X = random_csr(10, 120, 70000, 0.0005, "ratings", np.float64)
    p = {k: v for k, v in ALS(factors=4, alpha=0.5, dtype=np.float64)._check_params().items()
         if k != "random_state"}
    shard = _tasks.build_shard("users", 0, 120, 70000, np.array([0, 70000]), 0.0, p, _block(X, 0, 120))
    assert shard.rows.low_rows(0, 120) is None and (X.indices >= 65536).any()
    rng = np.random.default_rng(6)
    U, V = rng.standard_normal((120, 4)), rng.standard_normal((70000 - 60000, 4))
    got = _tasks.item_sums(shard, U, V, 60000, p, False, 1)
    ref = np.zeros_like(V)
    coo = X.tocoo()
    for u, i, r in zip(coo.row, coo.col, coo.data):
        if i >= 60000:
            ref[i - 60000] += 0.5 * abs(r) * (U[u] @ V[i - 60000]) * U[u]
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    assert np.abs(ref).max() > 0.1 and "_chunk_counts" not in shard.__dict__
