"""Latency of a one-user partial fit (and of the recommend after it), against implicit's.

ALS at 64 factors (one iteration: the factors' values do not matter here) on
the MovieLens-20M-shaped synthetic data, fastrec and implicit fitted on the
same matrix with the same thread count.  Each of ``--repeats`` random stored
users replaces their row with itself (a canonical float32 CSR row, as a
service would pass) and fastrec then recommends for that user (the seen-items
filter reads the update); the libraries alternate in blocks of 10 users (one
library's calls would otherwise evict the other's data from the caches).
Reported: p50 / p90 / mean in milliseconds and fastrec's p50 over implicit's.
fastrec's overlay of pending rows is merged into new base arrays every
``merge_threshold(n_users)`` updates; that merge is timed once and shown
amortised per update.  implicit gets one BLAS thread (its own advice); the
fastrec path runs no BLAS.  implicit solves even one user on a team of
``num_threads`` OpenMP threads, which on a loaded machine waits for the
scheduler; it is also timed at one thread, alternated in the same loop, and
the ratio is given against both, and in CPU time of the calling thread
(both single-threaded there), which a loaded machine disturbs less.

Then ``--items`` random stored items replace their column with itself
(fastrec, then implicit's partial_fit_items), each followed by a recommend.

    python bench/bench_partial_fit.py [--quick] [--repeats 200] [--items 20]
    FASTREC_KERNELS=avx2 python bench/bench_partial_fit.py
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def _summary(times: list[float]) -> str:
    ms = np.asarray(times) * 1e3
    return f"p50 {np.median(ms):.3f} ms, p90 {np.percentile(ms, 90):.3f} ms, mean {ms.mean():.3f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--items", type=int, default=20, help="one-item partial fits to time (0: none)")
    args = parser.parse_args()
    import fastrec
    from fastrec.kernels import load_kernel
    from fastrec.models.state import merge_threshold
    from threadpoolctl import threadpool_limits
    X = _common.synthetic(_common.data_shape(args.quick))
    print(f"data: {_common.describe(X)}; kernels: {getattr(load_kernel('als'), '__name__', '?')}")
    model = fastrec.ALS(factors=64, iterations=1, random_state=0, num_threads=_common.THREADS).fit(X)
    model.recommend(0, n=10)  # the ranking index and the fold-in plan, built once
    try:
        from implicit.cpu.als import AlternatingLeastSquares
    except ImportError:
        AlternatingLeastSquares = None
        print("implicit is not installed: fastrec only")
    theirs = None
    with threadpool_limits(1, "blas"):
        if AlternatingLeastSquares is not None:
            theirs = AlternatingLeastSquares(factors=64, iterations=1, random_state=0,
                                             num_threads=_common.THREADS)
            theirs.fit(X, show_progress=False)
        rng = np.random.default_rng(0)
        users = rng.integers(X.shape[0], size=args.repeats)
        rows = [X[[int(u)]] for u in users]
        timed: dict[str, list[float]] = {name: [] for name in ("ours", "ours_cpu", "recs", "imp", "imp_one",
                                                               "imp_cpu")}

        def ours_block(block: list, keep: bool) -> None:
            for user, row in block:
                cpu, start = time.thread_time(), time.perf_counter()
                model.partial_fit_users([user], row)
                middle = time.perf_counter()
                cpu = time.thread_time() - cpu
                model.recommend(user, n=10)
                if keep:
                    timed["ours"].append(middle - start)
                    timed["ours_cpu"].append(cpu)
                    timed["recs"].append(time.perf_counter() - middle)

        def their_block(block: list, keep: bool, threads: int) -> None:
            theirs.num_threads = threads  # read by each call (recalculate_user)
            for user, row in block:
                cpu, start = time.thread_time(), time.perf_counter()
                theirs.partial_fit_users([user], row)
                if keep:
                    timed["imp" if threads > 1 else "imp_one"].append(time.perf_counter() - start)
                    if threads == 1:
                        timed["imp_cpu"].append(time.thread_time() - cpu)

        pairs = [(int(u), r) for u, r in zip(users, rows)]
        blocks = [pairs[:10]] + [pairs[k:k + 10] for k in range(0, len(pairs), 10)]  # the first one warms up
        for number, block in enumerate(blocks):  # alternated block by block: A, B, C, A, B, C, ...
            ours_block(block, number > 0)
            if theirs is not None:
                their_block(block, number > 0, _common.THREADS)
                their_block(block, number > 0, 1)
        ours, recs, imp, imp_one = timed["ours"], timed["recs"], timed["imp"], timed["imp_one"]
        ours_cpu, imp_cpu = timed["ours_cpu"], timed["imp_cpu"]
        item_times = _item_updates(model, theirs, X, args.items) if args.items else None
    state = model._state
    pending = 0 if state.pending is None else state.pending.length
    start = time.perf_counter()
    state.merged()
    merge = time.perf_counter() - start
    threshold = merge_threshold(state.n_users)
    print(f"fastrec partial_fit_users, one user: {_summary(ours)}")
    print(f"fastrec recommend after it:          {_summary(recs)}")
    if imp:
        print(f"implicit partial_fit_users, {_common.THREADS} threads: {_summary(imp)}")
        print(f"implicit partial_fit_users, 1 thread:  {_summary(imp_one)}")
        best = min(np.median(imp), np.median(imp_one))
        print(f"ratio fastrec / implicit (p50, same threads): {np.median(ours) / np.median(imp):.2f}; "
              f"against implicit's faster setting: {np.median(ours) / best:.2f}")
        print(f"calling thread's CPU time p50: fastrec {np.median(ours_cpu) * 1e3:.3f} ms, implicit at 1 thread "
              f"{np.median(imp_cpu) * 1e3:.3f} ms, ratio {np.median(ours_cpu) / np.median(imp_cpu):.2f}")
    print(f"overlay merge ({pending} pending rows): {merge * 1e3:.1f} ms, every {threshold} updates "
          f"= {merge / threshold * 1e3:.3f} ms amortised per update")
    if item_times:
        print(f"fastrec partial_fit_items, one item:  {_summary(item_times['ours'])}")
        print(f"fastrec recommend after it:           {_summary(item_times['recs'])} (the ranking index is patched, not rebuilt)")
        if item_times["imp"]:
            print(f"implicit partial_fit_items, {_common.THREADS} threads: {_summary(item_times['imp'])}")
            print(f"ratio fastrec / implicit (p50): {np.median(item_times['ours']) / np.median(item_times['imp']):.2f}")


def _item_updates(model, theirs, X, count: int) -> dict:
    """``count`` random stored items replace their column with itself, alternating fastrec and implicit."""
    columns = X.T.tocsr()
    rng = np.random.default_rng(1)
    items = rng.integers(X.shape[1], size=count + 3)
    out: dict[str, list[float]] = {"ours": [], "recs": [], "imp": []}
    for number, item in enumerate(items.tolist()):
        keep = number >= 3  # the first builds the base's column index (once per base)
        start = time.perf_counter()
        model.partial_fit_items([item], columns[[item]].T.tocsr())
        middle = time.perf_counter()
        model.recommend(int(item) % X.shape[0], n=10)
        end = time.perf_counter()
        if keep:
            out["ours"].append(middle - start)
            out["recs"].append(end - middle)
        if theirs is not None:
            theirs.num_threads = _common.THREADS
            start = time.perf_counter()
            theirs.partial_fit_items([item], columns[[item]])
            if keep:
                out["imp"].append(time.perf_counter() - start)
    return out


if __name__ == "__main__":
    main()
