"""Top-K serving on factors trained on real data, vs implicit, for the AVX-512 and AVX2 builds (issue 17).

``bench_topk.py`` serves factors fitted on make_synthetic data, whose planted
low-rank structure lets the norm-sorted pruning stop after a few percent of
the catalogue.  Factors fitted on real data are far less prunable, so this
bench serves:

* ``ml-1m``, ``movietweetings``: fastrec ALS (default hyperparameters) fitted
  on the shared ML-1M implicit data and on MovieTweetings 100K (every rating
  a positive), served to their own users with their own items as "seen";
* ``ml-1m x35k``, ``ml-1m x300k``: catalogues of 35,648 and 300,000 items
  (43,169 users; the x300k batch takes its first 4,096 users) made from the
  ML-1M factors: row r copies row ``r mod n`` plus Gaussian noise of 0.1x
  each column's standard deviation (copy 0 exact); a user copy's seen items
  are its original's, each moved to a random copy of the item;
* each at 15 ALS iterations (converged, the bars) and, with ``--iterations
  15 1``, after 1 iteration (not low-rank at all; for information).

Both libraries get the same float32 arrays (implicit: an implicit.cpu ALS
model with ``user_factors``/``item_factors`` assigned), the same seen
items, N=10 and the same threads (2); implicit runs with BLAS at one thread.

* Batch: ``model.recommend(all users, n=10)`` against implicit's
  ``recommend(userids, user_items, N=10, filter_already_liked_items=True)``,
  alternated, medians.  Bar: >= 6x implicit on converged factors.
* Single user: ``model.recommend(u, n=10)`` against implicit's one-user call
  at 1 and 2 threads (the faster is the anchor), alternated blocks of users;
  p50.  Bar: <= 0.15x implicit's on converged factors.
* Floors: batch, users x items x factors x 2 FLOPs at the measured sgemm
  rate (2 threads); one user, items x factors x 4 bytes at the measured
  memory copy rate (the catalogue may well sit in cache, so it can be beaten).

Every configuration runs once per kernel build, each build in its own
process (``FASTREC_KERNELS=avx2`` caps the choice on an AVX-512 machine).  The
AVX2 process also runs OpenBLAS on its Haswell (AVX2) kernels
(``OPENBLAS_CORETYPE=Haswell``, unless set), so implicit's GEMM is that of an
AVX2-only CPU as well; its GEMM floor is measured with them.

Run: ``python bench/bench_topk_real.py [--factors 64 128] [--catalogues ml-1m ml-1m-x35k]
[--iterations 15 1] [--builds avx512 avx2] [--no-batch] [--append]``
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

N = 10
BATCH_BAR = 6.0  # fastrec throughput / implicit's, at least (converged factors)
SINGLE_BAR = 0.15  # fastrec p50 / implicit's, at most (converged factors)
NOISE = 0.1  # tiled copies: Gaussian noise in units of each column's standard deviation
TILED_USERS = 43_169
BIG_BATCH_USERS = 4_096
CATALOGUES = {"ml-1m": ("ml-1m", None), "movietweetings": ("movietweetings", None),
              "ml-1m-x35k": ("ml-1m", 35_648), "ml-1m-x300k": ("ml-1m", 300_000)}
MOVIETWEETINGS = C.DATA / "movietweetings-100k"


def load_real(name: str) -> sp.csr_matrix:
    """Binary float32 users x items CSR of a shared real dataset."""
    if name == "ml-1m":
        return C.load_ml1m()
    from fastrec.datasets import load_movietweetings
    X = load_movietweetings(MOVIETWEETINGS).to_csr(np.float32)
    X.data[:] = 1
    return C._canonical_csr(X)


def perturbed(A: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rows: row r is ``A[r mod len(A)]`` plus noise (the first len(A) rows exact)."""
    out = A[np.arange(n) % A.shape[0]].astype(np.float32)
    noise = rng.standard_normal(out.shape, dtype=np.float32) * (NOISE * A.std(axis=0, dtype=np.float64)).astype(np.float32)
    noise[:min(n, A.shape[0])] = 0
    return out + noise


def tiled_seen(X: sp.csr_matrix, n_users: int, n_items: int, rng: np.random.Generator) -> sp.csr_matrix:
    """User copy u sees its original's items, each moved to a random copy of the item."""
    rows = X[np.arange(n_users) % X.shape[0]].tocoo()
    copies = n_items // X.shape[1]
    cols = rows.col + X.shape[1] * rng.integers(0, copies, rows.col.size)
    S = sp.csr_matrix((np.ones(cols.size, np.float32), (rows.row, cols)), shape=(n_users, n_items))
    return C._canonical_csr(S)


def serving_pair(catalogue: str, factors: int, iterations: int, threads: int):
    """(fastrec model, implicit twin, seen CSR, users for the batch) for one configuration."""
    import fastrec
    data, n_items = CATALOGUES[catalogue]
    X = load_real(data)
    fitted = C.trained_als(X, factors, threads, iterations=iterations)
    if n_items is None:
        model, seen = fitted, X
    else:
        rng = np.random.default_rng(17)
        U = perturbed(np.asarray(fitted.user_factors_), TILED_USERS, rng)
        V = perturbed(np.asarray(fitted.item_factors_), n_items, rng)
        seen = tiled_seen(X, TILED_USERS, n_items, rng)
        model = fastrec.ALS(factors=factors, iterations=0, num_threads=threads).fit(seen)
        model._state = dataclasses.replace(model._state, user_factors=U, item_factors=V, cache={})
    n_batch = seen.shape[0] if n_items is None or n_items < 100_000 else BIG_BATCH_USERS
    return model, C.implicit_twin(model, threads), seen, np.arange(n_batch)


def measure(catalogue: str, factors: int, iterations: int, threads: int, repeats: int,
            single_users: int, rates: C.MachineRates, with_batch: bool = True) -> dict:
    model, twin, seen, users = serving_pair(catalogue, factors, iterations, threads)
    seen_batch = seen[users]

    def ours():
        return C.timed(lambda: model.recommend(users, n=N))[1]

    def theirs():
        with C.blas_limit(1):
            return C.timed(lambda: twin.recommend(users, seen_batch, N=N, filter_already_liked_items=True))[1]
    # exactness against implicit: same ids wherever scores are not tied at the k-th place
    ids, scores = model.recommend(users[:500], n=N)
    with C.blas_limit(1):
        their_ids, _ = twin.recommend(users[:500], seen_batch[:500], N=N, filter_already_liked_items=True)
    agree = float(np.mean([np.intersect1d(a, b).size / N for a, b in zip(ids, their_ids)]))
    f_s = i_s = float("nan")
    if with_batch:
        batch = C.alternate({"fastrec": ours, "implicit": theirs}, repeats)
        f_s, i_s = batch.median("fastrec").wall, batch.median("implicit").wall
    n_items = seen.shape[1]
    floor = 2.0 * users.size * n_items * factors / (rates.sgemm_gflops * 1e9)
    rng = np.random.default_rng(1)
    picks = rng.choice(seen.shape[0], size=min(single_users, seen.shape[0]), replace=False)
    rows = [seen[int(u)] for u in picks]
    calls = {"fastrec": lambda j: model.recommend(int(picks[j]), n=N)}
    for t in sorted({1, threads}):
        tw = twin if t == threads else C.implicit_twin(model, t)
        calls[f"implicit@{t}"] = lambda j, tw=tw: tw.recommend(int(picks[j]), rows[j], N=N,
                                                              filter_already_liked_items=True)
    lat = C.latencies(calls, picks.size, 100)
    p50 = {name: float(np.median(lat.walls(name))) for name in calls}
    anchor = min((name for name in calls if name != "fastrec"), key=p50.get)
    return {"catalogue": catalogue, "factors": factors, "iterations": iterations,
            "users": users.size, "items": n_items, "fastrec s": f_s, "implicit s": i_s,
            "speed-up": i_s / f_s, "GEMM floor s": floor, "fastrec / floor": f_s / floor,
            "top-10 agreement": agree, "fastrec p50 us": 1e6 * p50["fastrec"],
            "implicit p50 us": 1e6 * p50[anchor], "vs": anchor, "ratio p50": p50["fastrec"] / p50[anchor],
            "stream floor us": 1e6 * n_items * factors * 4 / (rates.copy_gbs * 1e9)}


def child(args: argparse.Namespace) -> None:
    """Measure every configuration with the build this process loads; JSON rows on stdout."""
    from fastrec.kernels import kernel_variant
    rates = C.machine_rates()
    rows = []
    for catalogue in args.catalogues:
        for iterations in args.iterations:
            for f in args.factors:
                print(f"{kernel_variant()}: {catalogue}, {f} factors, {iterations} iterations ...",
                      file=sys.stderr, flush=True)
                row = measure(catalogue, f, iterations, args.threads, args.repeats, args.single_users, rates,
                              with_batch=not args.no_batch)
                rows.append({"build": kernel_variant(), **row})
    print(json.dumps({"rates": vars(rates), "rows": rows}))


def run(builds: Sequence[str], argv: Sequence[str]) -> tuple[C.Report, dict]:
    results = {}
    for build in builds:
        env = dict(os.environ, FASTREC_KERNELS=build)
        if build == "avx2" and "OPENBLAS_CORETYPE" not in os.environ:
            # an AVX2-only CPU for both libraries: OpenBLAS (implicit's GEMM) on its Haswell kernels too
            env["OPENBLAS_CORETYPE"] = "Haswell"
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", *argv],
                              env=env, stdout=subprocess.PIPE, text=True, cwd=C.REPO, check=True)
        results[build] = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = [row for build in builds for row in results[build]["rows"]]
    rows.sort(key=lambda r: (r["catalogue"], r["iterations"] != 15, r["factors"], r["build"]))
    report = C.Report("Top-K on factors trained on real data vs implicit (issue 17)")
    batch, single = [], []
    for r in rows:
        label = {k: r[k] for k in ("catalogue", "factors", "iterations", "build")}
        judged = r["iterations"] >= 15
        if r["speed-up"] == r["speed-up"]:  # not NaN: a batch was measured
            batch.append({**label, "users": r["users"], "items": r["items"], "fastrec s": r["fastrec s"],
                          "implicit s": r["implicit s"], "speed-up wall": r["speed-up"],
                          "GEMM floor s": r["GEMM floor s"], "fastrec / floor": r["fastrec / floor"],
                          "top-10 agreement": r["top-10 agreement"],
                          "bar": f">= {BATCH_BAR:g}x" if judged else f"(info: >= {BATCH_BAR:g}x)",
                          "pass": bool(r["speed-up"] >= BATCH_BAR) if judged else None})
        single.append({**label, "fastrec p50 us": r["fastrec p50 us"], "implicit p50 us": r["implicit p50 us"],
                       "vs": r["vs"], "ratio p50": r["ratio p50"], "stream floor us": r["stream floor us"],
                       "bar": f"<= {SINGLE_BAR:g}" if judged else f"(info: <= {SINGLE_BAR:g})",
                       "pass": bool(r["ratio p50"] <= SINGLE_BAR) if judged else None})
    rates = results[builds[0]]["rates"]
    if batch:
        report.table(f"Batch: recommend N={N} for every user (x300k: the first {BIG_BATCH_USERS:,}), seen items "
                     f"excluded, 2 threads each, alternated runs, medians. GEMM floor at the sgemm rate measured "
                     f"in each build's run ({rates['sgemm_gflops']:.0f} GFLOP/s at 2 threads for "
                     f"{builds[0]}).", batch, list(batch[0]))
    report.table("Single user: p50 of `recommend(u, n=10)` vs implicit's one-user call (faster of 1 and 2 "
                 f"threads), 100-user alternated blocks. Stream floor: the item factors read once at the "
                 f"measured copy rate ({rates['copy_gbs']:.1f} GB/s).", single, list(single[0]))
    return report, results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=C.THREADS)
    parser.add_argument("--factors", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--catalogues", nargs="+", choices=list(CATALOGUES), default=list(CATALOGUES))
    parser.add_argument("--iterations", type=int, nargs="+", default=[15])
    parser.add_argument("--builds", nargs="+", choices=["avx512", "avx2", "baseline"], default=["avx512", "avx2"])
    parser.add_argument("--repeats", type=int, default=2, help="alternated pairs of batch runs")
    parser.add_argument("--single-users", type=int, default=1000)
    parser.add_argument("--no-batch", action="store_true", help="single-user latency only")
    parser.add_argument("--append", action="store_true", help="append the section to bench/RESULTS.md")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    raw = list(sys.argv[1:] if argv is None else argv)
    passed = [a for a in raw if a not in ("--append",)]
    env = C.environment()
    report, results = run(args.builds, passed)
    report.raw = results
    C.publish(report, "topk_real", "python bench/bench_topk_real.py " + " ".join(raw), append=args.append, env=env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
