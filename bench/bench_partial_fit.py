"""Latency of a one-user partial fit and of the recommend that follows it.

ALS at 64 factors (one iteration: the factors' values do not matter here) on
the MovieLens-20M-shaped synthetic data; 15 random users each replace their
row with itself, then get a recommendation.  Medians in milliseconds.

    python bench/bench_partial_fit.py [--quick]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    import fastrec
    X = _common.synthetic(_common.data_shape(args.quick))
    model = fastrec.ALS(factors=64, iterations=1, random_state=0, num_threads=_common.THREADS).fit(X)
    model.recommend(0, n=10)  # the ranking index, built once
    rng = np.random.default_rng(0)
    times = []
    for _ in range(args.repeats):
        user = int(rng.integers(X.shape[0]))
        row = X[[user]]
        start = time.perf_counter()
        model.partial_fit_users([user], row)
        middle = time.perf_counter()
        model.recommend(user, n=10)
        times.append((middle - start, time.perf_counter() - middle))
    p50 = np.median(np.array(times) * 1e3, axis=0)
    print(f"data: {_common.describe(X)}")
    print(f"partial_fit_users p50 {p50[0]:.1f} ms; the recommend after it p50 {p50[1]:.2f} ms")


if __name__ == "__main__":
    main()
