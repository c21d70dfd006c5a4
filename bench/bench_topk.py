"""Top-K serving: batch throughput, single-user latency, memory and thread scaling vs implicit.

Factors come from two sources, each given to fastrec and (the same arrays)
to an implicit CPU ALS model: "trained", a 15-iteration fastrec ALS fit with
default hyperparameters on the MovieLens-20M-shaped data (cached on disk),
which is what a user serves; and "random", random normal factors, the hard
case for fastrec's top-K, which prunes items by an exact norm bound.  Both
libraries exclude each user's items from that data ("seen") and return N=10;
both use the same thread count; implicit runs with BLAS limited to one thread.
The bars are judged on the trained factors.

* Batch: ``model.recommend(all users, n=10)`` against implicit's
  ``model.recommend(userids, user_items, N=10, filter_already_liked_items=True)``,
  alternated, medians; users per second.  Bar: fastrec >= 2x implicit.
* Single user: ``model.recommend(u, n=10)`` against implicit's single-user call
  (its one-row ``user_items`` is sliced beforehand, outside the timing), in
  alternated blocks of users; p50 and p99.  Bar: fastrec p50 <= 0.4x implicit.
* Memory: peak RSS of fastrec's all-user batch in a fresh process, minus the
  RSS before it and the outputs.  Bar: at most a fixed buffer of about 256 MB.
* Floor: users x items x factors x 2 FLOPs at the measured sgemm rate;
  scaling from 1 to 2 threads for both libraries (on a slice of users).

Run: ``python bench/bench_topk.py [--quick] [--factors 64 128] [--source trained random]``
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

N = 10
BATCH_BAR = 2.0  # fastrec throughput / implicit's, at least
SINGLE_BAR = 0.4  # fastrec p50 / implicit's, at most
BUFFER_BAR_MB = 256.0


def _fastrec_batch(model, users: np.ndarray) -> C.Sample:
    _, sample = C.timed(lambda: model.recommend(users, n=N))
    return sample


def _implicit_batch(twin, users: np.ndarray, seen) -> C.Sample:
    with C.blas_limit(1):
        _, sample = C.timed(lambda: twin.recommend(users, seen, N=N, filter_already_liked_items=True))
    return sample


def agreement(model, twin, X, users: np.ndarray) -> float:
    """Share of the two libraries' top-N ids that agree (ties may order differently)."""
    ours, _ = model.recommend(users, n=N)
    with C.blas_limit(1):
        theirs, _ = twin.recommend(users, X[users], N=N, filter_already_liked_items=True)
    return float(np.mean([np.intersect1d(a, b).size / N for a, b in zip(ours, theirs)]))


def batch(model, twin, X, repeats: int) -> tuple[C.Alternated, np.ndarray]:
    users = np.arange(X.shape[0])
    result = C.alternate({"fastrec": lambda: _fastrec_batch(model, users),
                          "implicit": lambda: _implicit_batch(twin, users, X)}, repeats)
    return result, users


def single_user(model, twins: dict, X, n_users: int, block: int, seed: int = 0) -> C.Alternated:
    """Per-call latencies of one-user recommends, alternating blocks of users between contenders."""
    rng = np.random.default_rng(seed)
    users = rng.choice(X.shape[0], size=n_users, replace=False)
    rows = [X[int(u)] for u in users]  # implicit's per-call input, sliced outside the timing
    calls = {"fastrec": lambda j: model.recommend(int(users[j]), n=N)}
    for name, tw in twins.items():
        calls[name] = lambda j, tw=tw: tw.recommend(int(users[j]), rows[j], N=N,
                                                    filter_already_liked_items=True)
    return C.latencies(calls, n_users, block)


def memory_child(quick: bool, factors: int, source: str, threads: int) -> dict:
    """In a fresh process: RSS during the all-user batch, and what was resident before it."""
    X = C.synthetic(C.data_shape(quick), verbose=False)
    model = C.serving_model(X, factors, source, threads)
    model.recommend(0, n=N)  # loads the kernel; allocates nothing sizeable
    users = np.arange(X.shape[0])
    before = C.current_rss()
    with C.PeakRSS() as rss:
        ids, scores = model.recommend(users, n=N)
    return {"rss_before": before, "sampled_delta": rss.peak_delta, "outputs": ids.nbytes + scores.nbytes}


def memory(quick: bool, factors: int, source: str, threads: int) -> dict:
    """Memory of the all-user batch beyond its outputs, measured in a fresh child process.

    A fresh process matters: after earlier runs the allocator reuses freed,
    still-resident pages and the RSS would not show the call's needs.  The
    figure is the larger of the sampled peak and the child's ``ru_maxrss``,
    each minus the RSS just before the call.
    """
    args = [str(Path(__file__).resolve()), "--memory-child", "--factors", str(factors),
            "--source", source, "--threads", str(threads)] + (["--quick"] if quick else [])
    out, peak = C.run_child(args)
    info = json.loads(out.strip().splitlines()[-1])
    delta = max(info["sampled_delta"], peak - info["rss_before"])
    extra = (delta - info["outputs"]) / 2 ** 20
    return {"peak RSS delta MB": delta / 2 ** 20, "outputs MB": info["outputs"] / 2 ** 20,
            "beyond outputs MB": extra, "bar": f"<= {BUFFER_BAR_MB:g} MB", "pass": bool(extra <= BUFFER_BAR_MB)}


def scaling(model, twin, X, n_users: int, repeats: int, threads: Sequence[int]) -> dict:
    """Users/s at each thread count for both libraries, on the first ``n_users`` users."""
    users = np.arange(min(n_users, X.shape[0]))
    seen = X[users]
    runners = {}
    for t in threads:
        runners[f"fastrec@{t}"] = lambda t=t: (model.set_params(num_threads=t), _fastrec_batch(model, users))[1]

        def anchor(t=t):
            twin.num_threads = t
            return _implicit_batch(twin, users, seen)
        runners[f"implicit@{t}"] = anchor
    try:
        result = C.alternate(runners, repeats)
    finally:
        model.set_params(num_threads=max(threads))
        twin.num_threads = max(threads)
    return {name: users.size / result.median(name).wall for name in runners}


def _verdict(source: str, bar: str, passed: bool) -> dict:
    """Bars are judged on trained factors; random ones are shown for information."""
    if source == "trained":
        return {"bar": bar, "pass": bool(passed)}
    return {"bar": f"(info: {bar})", "pass": None}


def one_configuration(X, f: int, source: str, quick: bool, threads: int, repeats: int,
                      rates: C.MachineRates, with_scaling: bool) -> dict:
    """Every measure for one factor count and factor source: table rows and raw numbers."""
    label = {"factors": f, "factors from": source}
    model = C.serving_model(X, f, source, threads)
    twin = C.implicit_twin(model, threads)
    agree = agreement(model, twin, X, np.arange(0, X.shape[0], max(1, X.shape[0] // 500)))
    print(f"top-K {f} factors, {source}: batch ...", file=sys.stderr, flush=True)
    result, users = batch(model, twin, X, repeats)
    ours, anchor = result.median("fastrec"), result.median("implicit")
    speedup = anchor.wall / ours.wall
    out: dict = {"batch": {
        **label, "fastrec users/s": users.size / ours.wall, "implicit users/s": users.size / anchor.wall,
        "speed-up wall": speedup, "speed-up cpu": anchor.cpu / ours.cpu,
        "fastrec wall s": ours.wall, "implicit wall s": anchor.wall,
        "fastrec cpu s": ours.cpu, "implicit cpu s": anchor.cpu, "top-10 agreement": agree,
        **_verdict(source, f">= {BATCH_BAR:g}x", speedup >= BATCH_BAR)}}
    print(f"top-K {f} factors, {source}: single user ...", file=sys.stderr, flush=True)
    single_twins = {f"implicit@{threads}": twin}
    if threads != 1:  # one user cannot use two threads; compare with implicit's faster setting
        single_twins["implicit@1"] = C.implicit_twin(model, 1)
    lat = single_user(model, single_twins, X, n_users=400 if quick else 2000, block=100)
    out["single"] = C.latency_row(lat, SINGLE_BAR, **label)
    out["memory"] = {**label, **memory(quick, f, source, threads)}
    for key in ("single", "memory"):
        out[key].update(_verdict(source, out[key]["bar"], out[key]["pass"]))
    flops = 2.0 * X.shape[0] * X.shape[1] * f
    out["floor"] = {**label, "GFLOP (all users)": flops / 1e9,
                    "floor s at sgemm rate": flops / (rates.sgemm_gflops * 1e9),
                    "fastrec GFLOP/s (exhaustive equivalent)": flops / ours.wall / 1e9,
                    "fastrec % of sgemm": 100 * flops / ours.wall / 1e9 / rates.sgemm_gflops,
                    "implicit GFLOP/s": flops / anchor.wall / 1e9}
    out["raw"] = {"batch": result.samples, "single": lat.samples, "agreement": agree}
    if with_scaling:
        print(f"top-K {f} factors, {source}: thread scaling ...", file=sys.stderr, flush=True)
        counts = sorted({1, threads})
        out["scaling"] = {"factors": f, "source": source, "users": X.shape[0] // 4, "threads": counts,
                          "users_per_s": scaling(model, twin, X, X.shape[0] // 4, repeats, counts),
                          "floor_users_per_s": {1: rates.sgemm_gflops_1t * 1e9 / (2.0 * X.shape[1] * f),
                                                threads: rates.sgemm_gflops * 1e9 / (2.0 * X.shape[1] * f)}}
    return out


def run(quick: bool = False, threads: int = C.THREADS, factors: Sequence[int] = (64, 128),
        repeats: int | None = None, sources: Sequence[str] = ("trained", "random")) -> C.Report:
    X = C.synthetic(C.data_shape(quick))
    rates = C.machine_rates()
    repeats = repeats or 2
    report = C.Report("Top-K serving vs implicit (issue 3)")
    parts = [one_configuration(X, f, source, quick, threads, repeats, rates, with_scaling=f == factors[0])
             for source in sources for f in factors]
    sources_text = "; ".join(f"{s}: {C.FACTOR_SOURCES[s]}" for s in sources)
    report.table(f"Data: seen items of {C.describe(X)}; factors from {sources_text}; N={N}; {threads} threads "
                 f"each. Batch: all users, alternated runs, medians.",
                 [p["batch"] for p in parts], list(parts[0]["batch"]))
    report.table("Single user: `recommend(u, n=10)` vs implicit `recommend(u, user_items[u], N=10)`; alternated "
                 "blocks of 100 users; implicit@N = num_threads=N; ratios against the faster implicit setting.",
                 [p["single"] for p in parts], list(parts[0]["single"]))
    report.table("Memory of the all-user batch, in a fresh process: peak RSS (sampled every 2 ms, and "
                 "ru_maxrss) minus the RSS before the call.", [p["memory"] for p in parts], list(parts[0]["memory"]))
    report.table(f"GEMM floor of exhaustive scoring ({rates.line()}). Above 100% of sgemm means the kernel "
                 "skipped work (fastrec's top-K prunes items by an exact norm bound), not that it beat the floor.",
                 [p["floor"] for p in parts], list(parts[0]["floor"]))
    scaling_rows = []
    for part in parts:
        s = part.get("scaling")
        if s:
            scaling_rows += [{"factors": s["factors"], "factors from": s["source"], "threads": t,
                              "fastrec users/s": s["users_per_s"][f"fastrec@{t}"],
                              "implicit users/s": s["users_per_s"][f"implicit@{t}"],
                              "GEMM floor users/s": s["floor_users_per_s"][t]} for t in s["threads"]]
    if scaling_rows:
        report.table(f"Thread scaling ({X.shape[0] // 4:,} users).", scaling_rows, list(scaling_rows[0]))
    report.raw = {"data": C.describe(X), "threads": threads, "rates": vars(rates),
                  "configurations": [{"factors": p["batch"]["factors"], "source": p["batch"]["factors from"],
                                      **p["raw"]} for p in parts],
                  "scaling": [p["scaling"] for p in parts if "scaling" in p]}
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_common_args(parser)
    parser.add_argument("--factors", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--repeats", type=int, help="alternated pairs of batch runs")
    parser.add_argument("--source", nargs="+", choices=sorted(C.FACTOR_SOURCES), default=["trained", "random"],
                        help="where the factors come from")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args.quick, args.factors[0], args.source[0], args.threads)))
        return 0
    report = run(args.quick, args.threads, args.factors, args.repeats, args.source)
    print(report.markdown())
    report.save("topk")
    return 0


if __name__ == "__main__":
    sys.exit(main())
