"""Peak memory of ``fit`` on the MovieLens-20M-shaped data vs the input plus the factors (issue 7).

Each measurement runs in a fresh child process (``python bench/bench_memory.py
--child ...``), and its peak RSS is read by the parent with ``os.wait4`` (the
``RUSAGE_CHILDREN`` ``ru_maxrss`` of that one child):

* ``import``: the same imports (NumPy, SciPy, fastrec, implicit), no data: the baseline;
* ``load``: plus the cached CSR (float32 values, int32 indices);
* ``fit``: plus a 2-iteration fit at the given factors and solver.

The fit's memory is ``peak(fit) - peak(import)``, compared with the bytes of
the input CSR plus both factor matrices.  Bar: < 1.5x.  The child also
samples its own RSS during ``fit`` as a cross-check.  implicit is measured
the same way, for reference.

Run: ``python bench/bench_memory.py [--quick] [--factors 64] [--solver cg cholesky]``
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

BAR = 1.5
ITERATIONS = 2
MB = 2.0 ** 20


def child(mode: str, lib: str, shape: tuple[int, int, int], factors: int, solver: str, threads: int) -> dict:
    """What one child does; returns what it prints (JSON)."""
    import fastrec  # noqa: F401  (the same imports in every mode)
    import implicit.cpu.als  # noqa: F401
    out: dict = {"mode": mode, "lib": lib}
    if mode == "import":
        return out
    X = C.synthetic(shape, verbose=False)
    out["input_bytes"] = C.csr_bytes(X)
    if mode == "load":
        return out
    if lib == "fastrec":
        model = fastrec.ALS(factors=factors, solver=solver, iterations=ITERATIONS, num_threads=threads,
                            random_state=0)
        fit = lambda: model.fit(X)  # noqa: E731
    else:
        with C.blas_limit(1):
            model = implicit.cpu.als.AlternatingLeastSquares(
                factors=factors, use_cg=solver == "cg", iterations=ITERATIONS, num_threads=threads,
                random_state=0)
        fit = lambda: model.fit(X, show_progress=False)  # noqa: E731
    with C.blas_limit(1) if lib == "implicit" else C._nothing(), C.PeakRSS(interval=0.005) as rss:
        fit()
    out["sampled_fit_delta"] = rss.peak_delta
    return out


def measure(mode: str, lib: str, quick: bool, factors: int, solver: str, threads: int) -> tuple[dict, int]:
    args = [str(Path(__file__).resolve()), "--child", mode, "--lib", lib, "--factors", str(factors),
            "--solver", solver, "--threads", str(threads)] + (["--quick"] if quick else [])
    out, peak = C.run_child(args)
    return json.loads(out.strip().splitlines()[-1]), peak


def run(quick: bool = False, threads: int = C.THREADS, factors: Sequence[int] = (64,),
        solvers: Sequence[str] = ("cg", "cholesky"), libs: Sequence[str] = ("fastrec", "implicit")) -> C.Report:
    shape = C.data_shape(quick)
    X = C.synthetic(shape)  # generated (and cached) here, before any child needs it
    input_bytes = C.csr_bytes(X)
    _, base_peak = measure("import", "fastrec", quick, factors[0], solvers[0], threads)
    _, load_peak = measure("load", "fastrec", quick, factors[0], solvers[0], threads)
    rows = []
    for f in factors:
        factor_bytes = (X.shape[0] + X.shape[1]) * f * 4
        for solver in solvers:
            for lib in libs:
                print(f"memory: {lib} {solver} {f} factors ...", file=sys.stderr, flush=True)
                info, peak = measure("fit", lib, quick, f, solver, threads)
                fit_mem = peak - base_peak
                ratio = fit_mem / (input_bytes + factor_bytes)
                rows.append({
                    "library": lib, "solver": solver, "factors": f,
                    "input MB": input_bytes / MB, "factors MB": factor_bytes / MB,
                    "peak - baseline MB": fit_mem / MB, "ratio": ratio,
                    "peak - loaded MB": (peak - load_peak) / MB,
                    "sampled during fit MB": info["sampled_fit_delta"] / MB,
                    "bar": f"< {BAR:g}" if lib == "fastrec" else "(reference)",
                    "pass": bool(ratio < BAR) if lib == "fastrec" else None,
                })
    report = C.Report("Peak memory of fit (issue 7)")
    report.table(f"Data: {C.describe(X)} (float32 values, int32 indices); {ITERATIONS}-iteration fits, "
                 f"{threads} threads; each figure from its own child process; baseline (imports only) "
                 f"{base_peak / MB:.0f} MB, with the data loaded {load_peak / MB:.0f} MB. "
                 f"ratio = (peak - baseline) / (input + factors).", rows, list(rows[0]))
    report.raw = {"baseline_peak": base_peak, "load_peak": load_peak, "rows": rows}
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_common_args(parser)
    parser.add_argument("--factors", type=int, nargs="+", default=[64])
    parser.add_argument("--solver", nargs="+", choices=["cg", "cholesky"], default=["cg", "cholesky"])
    parser.add_argument("--lib", nargs="+", choices=["fastrec", "implicit"], default=["fastrec", "implicit"])
    parser.add_argument("--child", choices=["import", "load", "fit"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    solvers = args.solver
    if args.child:
        print(json.dumps(child(args.child, args.lib[0], C.data_shape(args.quick), args.factors[0],
                               solvers[0], args.threads)))
        return 0
    report = run(args.quick, args.threads, args.factors, solvers, args.lib)
    print(report.markdown())
    report.save("memory")
    return 0


if __name__ == "__main__":
    sys.exit(main())
