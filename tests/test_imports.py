"""What a process that only serves a saved model imports, and where Numba caches its code."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

import fastrec

SERVE = """
import json, sys
import fastrec
model = fastrec.ALS.load(sys.argv[1])
model.recommend(0, n=5)
model.recommend([0, 1], n=5)
model.similar_items(0, n=3)
any_model = fastrec.load(sys.argv[1])
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'pandas', 'llvmlite')
                        or m.startswith(('fastrec.evaluation', 'fastrec.model_selection', 'fastrec.datasets',
                                         'fastrec.cli')))))
"""


def test_serving_a_saved_model_imports_no_numba_pandas_or_evaluation(tmp_path):
    X = sp.random(30, 20, density=0.3, format="csr", random_state=0, dtype=np.float32)
    path = tmp_path / "model.npz"
    fastrec.ALS(factors=4, iterations=2, random_state=0).fit(X).save(path)
    out = subprocess.run([sys.executable, "-c", SERVE, str(path)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_public_names_load_lazily():
    code = ("import sys, fastrec; assert 'numba' not in sys.modules; fastrec.per_user_split; "
            "fastrec.datasets.load_demo; assert 'fastrec.evaluation' in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_numba_cache_stays_out_of_the_package(tmp_path):
    """Numba's cache files in the installed package outlive an uninstall and shadow a later install."""
    code = ("import numpy as np, scipy.sparse as sp, fastrec\n"
            "from fastrec.utils.jit import cache_dir\n"
            "X = sp.random(40, 30, density=0.3, format='csr', random_state=0)\n"
            "fastrec.evaluation.per_user_split(X, 0.2, random_state=0)\n"
            "print(cache_dir())\n")
    env = {**__import__("os").environ, "FASTREC_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == str(tmp_path / "cache" / "numba")
    package = Path(fastrec.__file__).parent
    assert not [p for p in package.rglob("*") if p.suffix in (".nbi", ".nbc")]
    assert list((tmp_path / "cache" / "numba").rglob("*.nbi"))
