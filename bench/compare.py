"""Run every comparison and write ``bench/RESULTS.md`` with tables and charts.

    python bench/compare.py                 # the full suite (~8 min on a quiet 2-core machine)
    python bench/compare.py --quick         # small data, ~1.5 min; writes under bench/.cache
    python bench/compare.py --only als topk # a subset

Each bench is also runnable alone (``python bench/bench_als.py --help``).
Charts: ``als_time_vs_factors.png`` (seconds per iteration against factors,
per solver and library) and ``topk_throughput_vs_threads.png`` (batch users/s
against threads, with the GEMM floor).
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

# name -> module; bench_bpr belongs to the BPR/WARP work and may be absent
BENCHES = {"als": "bench_als", "foldin": "bench_foldin", "topk": "bench_topk",
           "memory": "bench_memory", "bpr": "bench_bpr"}
LABEL_KEYS = ("measure", "check", "call", "model", "library", "factors", "factors from", "config")
# the figure a bar is about, in order of preference
FIGURE_KEYS = ("ratio wall", "ratio p50", "speed-up wall", "ratio", "difference", "fastrec ndcg@10",
               "beyond outputs MB", "ndcg / anchor")


def run_bench(name: str, quick: bool, threads: int) -> tuple[C.Report | None, str]:
    """The bench's report, or None and a note saying why it is missing."""
    try:
        module = importlib.import_module(BENCHES[name])
    except ImportError as exc:
        return None, f"{name}: skipped ({BENCHES[name]}.py not importable: {exc})"
    if not hasattr(module, "run"):
        return None, f"{name}: skipped ({BENCHES[name]}.py has no run())"
    print(f"== {name}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        report = module.run(quick=quick, threads=threads)
    except Exception:  # one broken bench must not lose the others' results
        return None, f"{name}: FAILED\n\n```\n{traceback.format_exc()}```"
    report.save(name + ("-quick" if quick else ""))
    return report, f"{name}: {time.perf_counter() - start:.0f} s"


def _label(row: dict) -> str:
    parts = [f"{k}={row[k]}" if k in ("factors",) else str(row[k]) for k in LABEL_KEYS if row.get(k) is not None]
    if "solver" in row:
        parts.append(str(row["solver"]))
    return ", ".join(parts)


def summary_rows(reports: dict[str, C.Report]) -> list[dict]:
    """One row per bar: which bench, what, the figure, the bar and the verdict."""
    rows = []
    for name, report in reports.items():
        for _, table, _ in report.tables:
            for row in table:
                if row.get("pass") is None or "bar" not in row:
                    continue
                key = next((k for k in FIGURE_KEYS if row.get(k) is not None), None)
                rows.append({"bench": name, "what": _label(row), "figure": f"{key} = {C.fmt(row[key])}" if key else "",
                             "bar": row["bar"], "pass": row["pass"]})
    return rows


def _log_chart(path: Path, xlabel: str, ylabel: str, title: str, xticks: Sequence[int], draw) -> Path:
    """A log-y line chart: ``draw(ax)`` plots the lines, the rest is shared styling."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    draw(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.set_xticks(list(xticks))
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def als_chart(report: C.Report, path: Path) -> Path | None:
    """Seconds per iteration against factors, one line per library and solver."""
    speed = report.raw.get("speed") or []
    if not speed:
        return None
    colors = {"cg": "tab:blue", "cholesky": "tab:orange"}

    def draw(ax) -> None:
        for solver in sorted({r["solver"] for r in speed}):
            for lib, style in (("fastrec", "-"), ("implicit", "--")):
                points = sorted((r["factors"], r[f"{lib}_median"].wall) for r in speed if r["solver"] == solver)
                ax.plot([p[0] for p in points], [p[1] for p in points], style, marker="o",
                        color=colors.get(solver), label=f"{lib} {solver}")

    return _log_chart(path, "factors", "seconds per iteration (median, wall)",
                      f"ALS on {report.raw.get('data', '')}\n{report.raw.get('threads')} threads",
                      sorted({r["factors"] for r in speed}), draw)


def topk_chart(report: C.Report, path: Path) -> Path | None:
    """Batch users per second against threads, both libraries and the GEMM floor."""
    scaling = report.raw.get("scaling") or []
    if not scaling:
        return None
    threads = scaling[0]["threads"]
    colors = {"trained": "tab:blue", "random": "tab:green"}

    def draw(ax) -> None:
        for s in scaling:
            rates = s["users_per_s"]
            for lib, style in (("fastrec", "-"), ("implicit", "--")):
                ax.plot(s["threads"], [rates[f"{lib}@{t}"] for t in s["threads"]], style, marker="o",
                        color=colors.get(s["source"]), label=f"{lib}, {s['source']} factors")
        floor = scaling[0]["floor_users_per_s"]
        ax.plot(threads, [floor[t] for t in threads], ":", marker="x", color="gray",
                label="GEMM floor of exhaustive scoring")

    return _log_chart(path, "threads", "users per second (top-10, seen excluded)",
                      f"Batch top-K, {scaling[0]['factors']} factors, {scaling[0]['users']:,} users", threads, draw)


def write_results(path: Path, env: dict, reports: dict[str, C.Report], log: list[str], quick: bool,
                  charts: list[Path]) -> None:
    shape = C.data_shape(quick)
    lines = ["# fastrec benchmark results", "",
             "Written by `bench/compare.py`; see `bench/README.md` for what each bench measures. "
             "The machine is shared and noisy: every ratio comes from runs alternated in one process "
             "(fastrec, anchor, fastrec, anchor, ...) and compares medians, in wall time and in process "
             "CPU time (all threads).", "",
             *C.environment_lines(env),
             f"- Command: `python bench/{env['command']}`",
             f"- Data: ML-1M implicit (random 80/20 split, seed {C.SPLIT_SEED}) for quality; synthetic "
             f"MovieLens-20M-shaped data ({shape[0]:,} users x {shape[1]:,} items x {shape[2]:,} "
             f"interactions, `fastrec.datasets.make_synthetic`, seed {C.DATA_SEED}) for speed and memory"
             + (" (--quick: reduced shape)" if quick else ""),
             f"- Threads: {C.THREADS} for every library; implicit with BLAS limited to 1 thread", ""]
    summary = summary_rows(reports)
    if summary:
        lines += ["## Summary of the bars", "", C.markdown_table(summary, ["bench", "what", "figure", "bar", "pass"]), ""]
    for name, report in reports.items():
        lines += [report.markdown(level=2), ""]
    for chart in charts:
        lines += [f"![{chart.stem}]({chart.name})", ""]
    lines += ["## Run log", "", *[f"- {entry}" if "\n" not in entry else entry for entry in log], ""]
    path.write_text("\n".join(lines))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_common_args(parser)
    parser.add_argument("--only", nargs="+", choices=list(BENCHES), help="run only these benches")
    parser.add_argument("--output", type=Path,
                        help="the Markdown report (default bench/RESULTS.md; with --quick "
                             "bench/.cache/RESULTS-quick.md, so a smoke run never replaces the real results)")
    args = parser.parse_args(argv)
    output = args.output or (C.CACHE / "RESULTS-quick.md" if args.quick else C.BENCH / "RESULTS.md")
    output.parent.mkdir(parents=True, exist_ok=True)
    env = C.environment()
    reports: dict[str, C.Report] = {}
    log: list[str] = []
    for name in args.only or list(BENCHES):
        report, entry = run_bench(name, args.quick, args.threads)
        log.append(entry)
        if report is not None:
            reports[name] = report
    charts = []
    chart_dir = output.parent
    if "als" in reports:
        charts.append(als_chart(reports["als"], chart_dir / "als_time_vs_factors.png"))
    if "topk" in reports:
        charts.append(topk_chart(reports["topk"], chart_dir / "topk_throughput_vs_threads.png"))
    charts = [c for c in charts if c is not None]
    write_results(output, env, reports, log, args.quick, charts)
    print(f"wrote {output}" + "".join(f", {c}" for c in charts), file=sys.stderr)
    return 0 if all("FAILED" not in entry for entry in log) else 1


if __name__ == "__main__":
    sys.exit(main())
