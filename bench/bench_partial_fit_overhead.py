"""What a one-user ``partial_fit_users`` costs beyond its fold-in kernel, in a warm loop.

ALS at 64 factors (one iteration) on the MovieLens-20M-shaped synthetic data,
as in ``bench_partial_fit.py``.  Blocks of ``--block`` calls cycle over 200
random stored users, each replacing its row with itself (a canonical float32
CSR row).  Alternated block by block: the whole call, and the compiled
fold-in kernel alone (``fold_in_row`` with the model's cached plan) on the
same rows.  Each block starts from the same merged state, so the overlay
stays short, as between two merges.  Reported: the median per call, in CPU
time of the calling thread (``thread_time``, which a loaded machine disturbs
less than wall time), and the difference: the Python side (argument checks,
the copy-on-write overlay, the new state) plus what the call does to the
kernel's caches.  ``--unobserved-weight`` fits Rendle's iALS instead: the
"kernel alone" line is then its plan (the kernel, the row's signs and the
scaling).

    python bench/bench_partial_fit_overhead.py [--quick] [--blocks 40] [--block 2000] [--unobserved-weight 0.5]
    FASTREC_KERNELS=avx2 python bench/bench_partial_fit_overhead.py
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
    parser.add_argument("--blocks", type=int, default=40, help="blocks of each kind")
    parser.add_argument("--block", type=int, default=2000, help="calls per block")
    parser.add_argument("--unobserved-weight", type=float, default=None, help="iALS's alpha0 (default: Hu's ALS)")
    args = parser.parse_args()
    import fastrec
    from fastrec.kernels import load_kernel
    X = _common.synthetic(_common.data_shape(args.quick))
    kernel = load_kernel("als")
    print(f"data: {_common.describe(X)}; kernels: {getattr(kernel, '__name__', '?')}")
    model = fastrec.ALS(factors=64, iterations=1, random_state=0, num_threads=_common.THREADS,
                        unobserved_weight=args.unobserved_weight).fit(X)
    model.recommend(0, n=10)
    model.partial_fit_users([0], X[[0]])  # the fold-in plan
    base = model._state.merged()
    plan = base.cache.get("fold_in_plan")
    ials_plan = base.cache.get("fold_in_plan_ials")
    rng = np.random.default_rng(0)
    pairs = [(int(u), X[[int(u)]]) for u in rng.integers(X.shape[0], size=200)]

    def calls(n: int) -> float:
        model._state = base
        start = time.thread_time()
        for k in range(n):
            user, row = pairs[k % 200]
            model.partial_fit_users([user], row)
        return (time.thread_time() - start) / n

    def kernel_only(n: int) -> float:
        fold_in_row = kernel.fold_in_row
        start = time.thread_time()
        for k in range(n):
            _, row = pairs[k % 200]
            if ials_plan is None:
                fold_in_row(row.indptr, row.indices, row.data, *plan)
            else:
                ials_plan(kernel, row.indptr, row.indices, row.data)
        return (time.thread_time() - start) / n

    calls(args.block)  # warm-up
    kernel_only(args.block)
    whole, alone = [], []
    for _ in range(args.blocks):
        whole.append(calls(args.block))
        alone.append(kernel_only(args.block))
    whole_us, alone_us = np.median(whole) * 1e6, np.median(alone) * 1e6
    print(f"partial_fit_users, one user: {whole_us:.2f} us per call (median of {args.blocks} blocks, "
          f"min {min(whole) * 1e6:.2f})")
    print(f"fold-in kernel alone:        {alone_us:.2f} us per call (min {min(alone) * 1e6:.2f})")
    print(f"the rest:                    {whole_us - alone_us:.2f} us per call")


if __name__ == "__main__":
    main()
