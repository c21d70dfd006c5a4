"""Import time and time to the first recommendation from a saved model, in fresh processes.

A web service that only serves a saved model pays for ``import fastrec``,
``ALS.load`` and the first ``recommend`` at every start.  Each sample is a
new interpreter (``python -X importtime`` is not used: it slows imports).
The model is ALS at 64 factors on ML-1M when ``../shared/data`` is there,
else on synthetic data of the same shape.

    python bench/bench_import.py [--repeats 15]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import fastrec
t1 = time.perf_counter()
model = fastrec.ALS.load(sys.argv[1])
t2 = time.perf_counter()
model.recommend(0, n=10)
t3 = time.perf_counter()
heavy = sorted(m for m in ("numba", "pandas", "fastrec.evaluation", "tqdm") if m in sys.modules)
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "first_recommend": t3 - t2, "to_first": t3 - t0,
                  "heavy_modules": heavy}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    import fastrec
    if _common.ml1m_available():
        X, data = _common.load_ml1m(), "ML-1M implicit (6,040 x 3,706)"
    else:
        X, data = fastrec.datasets.make_synthetic(6040, 3706, 1_000_209, random_state=0), "synthetic 6,040 x 3,706"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.npz"
        fastrec.ALS(factors=64, iterations=15, random_state=0).fit(X).save(path)
        size_mb = path.stat().st_size / 1e6
        samples = []
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True,
                                 check=True)
            samples.append(json.loads(out.stdout))
    rows = []
    for key in ("import", "load", "first_recommend", "to_first"):
        values = [s[key] * 1e3 for s in samples]
        p50, p90 = _common.percentiles(values, (50, 90))
        rows.append({"step": key, "p50 ms": p50, "p90 ms": p90})
    print(f"data: {data}; model file {size_mb:.1f} MB; {args.repeats} fresh processes")
    print(_common.markdown_table(rows, ["step", "p50 ms", "p90 ms"]))
    print(f"heavy modules loaded by serving: {samples[0]['heavy_modules'] or 'none'}")


if __name__ == "__main__":
    main()
