"""What a Dask worker imports to run a CG fit's tasks (both half-steps): not SciPy (about 25 MB of its memory),
not the estimators.

The tasks are pickled here, in a process that has imported everything, and
run in a fresh interpreter that starts with nothing but pickle: unpickling
imports what a worker would (the task functions, the shard's classes, the
parameters), then the tasks run as a worker runs them.
"""
from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

pytest.importorskip("distributed")

from fastrec import ALS  # noqa: E402
from fastrec.distributed import _tasks  # noqa: E402

WORKER = """
import json, pickle, sys
import numpy as np
with open(sys.argv[1], "rb") as fh:
    build, solve = pickle.load(fh)
shard = build[0](*build[1])
solved = solve[0](shard, *solve[1], **solve[2])
again = solve[0](shard, solved, *solve[1][1:], **solve[2])  # in place in its canvas, as the next sweep
from distributed.protocol import deserialize, serialize
back = deserialize(*serialize(again))
from fastrec.distributed import _tasks as T  # the item half-step by sums over user blocks
params = solve[1][2]
block = T.ItemBlock(0, 40, np.full(40, 0.5, dtype=np.float32), np.zeros(40, dtype=bool))
state = T.cg_begin(np.ones((40, 5), dtype=np.float32), block, params, side_rows=40)
for round_ in range(1 + params["cg_steps"]):
    sums = T.item_sums(shard, again, T.cg_vector(state), 0, params, round_ == 0, 1)
    state = (T.cg_residual if round_ == 0 else T.cg_step)(state, again.gram, sums)
items = T.cg_finish(state, params)
from threadpoolctl import threadpool_info
from fastrec.utils.threads import blas_single_thread
with blas_single_thread(scipy_blas=False):
    limited = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
print(json.dumps({"scipy": sorted(m for m in sys.modules if m.split(".")[0] == "scipy"),
                  "models": sorted(m for m in sys.modules if m in ("fastrec.models.als", "fastrec.models.base")),
                  "factors": back.factors.tolist(), "gram": back.gram.tolist(), "loss": back.loss,
                  "blas_limits": limited, "items_moved": bool(np.abs(items.factors - 1).max() > 1e-3)}))
"""


@pytest.mark.parametrize("params", [dict(), dict(unobserved_weight=0.2)])
def test_a_cg_fit_task_runs_without_scipy_and_gives_als_factors(tmp_path, params):
    X = sp.random(60, 40, density=0.2, format="csr", random_state=3, dtype=np.float32)
    X.data[:] = np.round(X.data * 5) + 1
    als = ALS(factors=5, regularization=0.05, random_state=0, **params)
    p = {k: v for k, v in als._check_params().items() if k != "random_state"}
    rng = np.random.default_rng(0)
    start = rng.standard_normal((60, 5)).astype(np.float32)
    Y = rng.standard_normal((40, 5)).astype(np.float32)
    gram = als._gram(Y, 1)
    build = (_tasks.build_shard, ("users", 0, 60, 40, np.array([0, 40]), 0.0, p, (X.indptr, X.indices, X.data)))
    solve = (_tasks.solve_block, (start, gram, p, 1, True, Y), {"side_rows": 60})
    path = tmp_path / "tasks.pkl"
    path.write_bytes(pickle.dumps((build, solve)))
    out = subprocess.run([sys.executable, "-c", WORKER, str(path)], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["scipy"] == []
    assert result["models"] == []
    assert result["blas_limits"] and all(n == 1 for n in result["blas_limits"])  # NumPy's BLAS, limited
    # the same two half-steps by ALS itself (its kernel call and iALS scaling)
    shard = build[0](*build[1])
    ref = start.copy()
    rows = _tasks.kernel_values(X, _tasks.kernel_form(p))
    for _ in range(2):
        als._half_step(rows, ref, Y, shard.reg, p, "cg", 1, YtY=gram)
    np.testing.assert_array_equal(np.array(result["factors"], dtype=np.float32), ref)
    np.testing.assert_allclose(np.array(result["gram"]), ref.T.astype(np.float64) @ ref, rtol=1e-5, atol=1e-6)
    assert result["loss"] > 0
    assert result["items_moved"]
