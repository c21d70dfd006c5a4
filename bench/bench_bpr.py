"""BPR and WARP: ranking quality and training time against LightFM and implicit (issue 4).

Quality (ML-1M implicit, random 80/20 split of the interactions with a fixed
seed, 64 factors, 2 threads each).  Every model is reduced to (user factors,
item factors, item biases) and ranked by the same NumPy top-k with training
items excluded (``_common.top_k_from_factors``), then scored by
``fastrec.evaluation.ranking_metrics``:
(a) fastrec WARP: ndcg@10 >= LightFM WARP's (learning rate 0.05, 30 epochs),
    in at most half of LightFM's training time, measured in the same run;
(b) fastrec BPR: ndcg@10 >= implicit BPR's (learning rate 0.05, 100 epochs).

Speed (MovieLens-20M-shaped synthetic data, 64 factors, 2 threads):
(c) fastrec BPR's seconds per epoch <= 0.5 x implicit BPR's.  The two fits
    alternate in one process; each reports every epoch's end through its
    callback, the first epoch is dropped and the figures are medians.
(d) Heavy-tailed data (issue 17): 138,493 users x 26,744 items x 20M
    interactions from ``make_synthetic`` with flatter exponents
    (``user_alpha=0.28, item_alpha=0.54``: users up to ~2,900 items, median
    126; items up to ~56,000 users), so that every user row is long and the
    popular items are very popular: fastrec BPR's seconds per epoch <= 0.3 x
    implicit's, same parameters, both verifying negatives.

Both builds: ``FASTREC_KERNELS=avx2 python bench/bench_bpr.py`` caps the
kernels at AVX2 on an AVX-512 machine (the report names the build).

Run: ``python bench/bench_bpr.py [--quick] [--repeats N] [--no-quality] [--no-speed] [--no-heavy]``
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Sequence


sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

FACTORS = 64
WARP_TIME_BAR = 0.5  # fastrec WARP time / LightFM WARP time
SPEED_BAR = 0.5  # fastrec BPR s/epoch / implicit BPR s/epoch
HEAVY_SPEED_BAR = 0.3  # the same on the heavy-tailed data (issue 17)
# users x items x interactions and the Zipf exponents of the heavy-tailed data
HEAVY_SHAPE = (138_493, 26_744, 20_000_000)
HEAVY_QUICK_SHAPE = (17_312, 6_686, 2_500_000)
HEAVY_ALPHAS = {"user_alpha": 0.28, "item_alpha": 0.54}
LIGHTFM = {"learning_rate": 0.05, "epochs": 30}
IMPLICIT = {"learning_rate": 0.05, "iterations": 100}
# fastrec rows: (label, BPR parameters); the first WARP and first BPR row are judged
FASTREC = [
    ("fastrec WARP, defaults (30 epochs)", {"loss": "warp"}),
    ("fastrec WARP, 15 epochs", {"loss": "warp", "iterations": 15}),
    ("fastrec BPR, defaults (30 epochs)", {"loss": "bpr"}),
    ("fastrec BPR, lr 0.02, 100 epochs", {"loss": "bpr", "learning_rate": 0.02, "iterations": 100}),
]


# ---------------------------------------------------------------- models
def fit_fastrec(train, threads: int, seed: int, **params: Any):
    import fastrec
    model = fastrec.BPR(factors=FACTORS, num_threads=threads, random_state=seed, **params)
    with C.Timer() as t:
        model.fit(train)
    return (model.user_factors_, model.item_factors_, model.item_bias_), t.sample


def fit_lightfm(train, threads: int, seed: int):
    from lightfm import LightFM
    model = LightFM(no_components=FACTORS, loss="warp", learning_rate=LIGHTFM["learning_rate"],
                    random_state=seed)
    coo = train.tocoo()
    with C.Timer() as t:
        model.fit(coo, epochs=LIGHTFM["epochs"], num_threads=threads)
    item_bias, item_factors = model.get_item_representations()
    _, user_factors = model.get_user_representations()  # the user bias does not change a ranking
    return (user_factors, item_factors, item_bias), t.sample


def implicit_bpr(threads: int, seed: int, **params: Any):
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    return BayesianPersonalizedRanking(factors=FACTORS, num_threads=threads, random_state=seed, **params)


def fit_implicit(train, threads: int, seed: int):
    model = implicit_bpr(threads, seed, **IMPLICIT)
    with C.blas_limit(1), C.Timer() as t:
        model.fit(train, show_progress=False)
    # implicit's CPU BPR keeps the item bias as the last factor (the user's is 1)
    return (model.user_factors, model.item_factors, None), t.sample


# --------------------------------------------------------------- quality
def quality(threads: int, seed: int) -> tuple[list[dict], dict]:
    train, test = C.ml1m_split()
    contenders: list[tuple[str, Callable[[], tuple]]] = [
        (f"LightFM WARP, lr {LIGHTFM['learning_rate']}, {LIGHTFM['epochs']} epochs",
         lambda: fit_lightfm(train, threads, seed)),
        (f"implicit BPR, lr {IMPLICIT['learning_rate']}, {IMPLICIT['iterations']} epochs",
         lambda: fit_implicit(train, threads, seed)),
    ]
    contenders += [(label, lambda p=params: fit_fastrec(train, threads, seed, **p))
                   for label, params in FASTREC]
    results = {}
    for label, fit in contenders:
        print(f"  {label} ...", file=sys.stderr, flush=True)
        (U, V, b), sample = fit()
        metrics = C.ranking_metrics(C.top_k_from_factors(U, V, b, train), test)
        results[label] = {**metrics, "seconds": sample.wall, "cpu seconds": sample.cpu}

    lightfm, implicit = (results[label] for label, _ in contenders[:2])
    judged_warp = next(label for label, p in FASTREC if p["loss"] == "warp")
    judged_bpr = next(label for label, p in FASTREC if p["loss"] == "bpr")
    rows = []
    for label, r in results.items():
        anchor = lightfm if "WARP" in label else implicit
        row = {"model": label, "ndcg@10": r["ndcg@10"], "p@10": r["p@10"], "seconds": r["seconds"],
               "ndcg / anchor": r["ndcg@10"] / anchor["ndcg@10"], "time / anchor": r["seconds"] / anchor["seconds"]}
        if label == judged_warp:
            row["bar"] = f"ndcg >= LightFM's, time <= {WARP_TIME_BAR} x"
            row["pass"] = bool(r["ndcg@10"] >= lightfm["ndcg@10"]
                               and r["seconds"] <= WARP_TIME_BAR * lightfm["seconds"])
        elif label == judged_bpr:
            row["bar"] = "ndcg >= implicit's"
            row["pass"] = bool(r["ndcg@10"] >= implicit["ndcg@10"])
        rows.append(row)
    return rows, {"seed": seed, "results": results, "train_nnz": train.nnz, "test_nnz": test.nnz}


# ---------------------------------------------------------------- speed
def heavy_tailed(quick: bool = False, seed: int = C.DATA_SEED):
    """The heavy-tailed data of (d), generated once and cached under ``bench/.cache``."""
    return C.synthetic(HEAVY_QUICK_SHAPE if quick else HEAVY_SHAPE, seed, name="heavy", **HEAVY_ALPHAS)


def tails(X) -> str:
    """The longest user row and the most popular item's users, and their medians."""
    import numpy as np
    rows, cols = np.diff(X.indptr), np.bincount(X.indices, minlength=X.shape[1])
    return (f"user rows up to {rows.max():,} (median {np.median(rows):.0f}), "
            f"items up to {cols.max():,} users (median {np.median(cols):.0f})")


def fastrec_epochs(X, threads: int, epochs: int, seed: int = 0) -> list[C.Sample]:
    import fastrec
    marks: list = []
    fastrec.BPR(factors=FACTORS, iterations=epochs, num_threads=threads,
                random_state=seed).fit(X, callback=C.iteration_marker(marks))
    return C.iteration_samples(marks)


def implicit_epochs(X, threads: int, epochs: int, seed: int = 0) -> list[C.Sample]:
    marks: list = []
    model = implicit_bpr(threads, seed, iterations=epochs, learning_rate=IMPLICIT["learning_rate"])
    with C.blas_limit(1):
        model.fit(X, show_progress=False, callback=C.iteration_marker(marks))
    return C.iteration_samples(marks)


def sample_cost(factors: int) -> tuple[float, float]:
    """(FLOPs, bytes) of one BPR step.

    FLOPs: two dot products (4f), the user update (4f) and the two item
    updates (3f each) = 14f; 6f is the bare minimum (the dots and one
    multiply-add per updated parameter).  Bytes: the user row and two item
    rows read and written (6 * 4f) plus the sample's indices and the
    negative's membership test (about 3 cache lines, 192 B).
    """
    return 14.0 * factors, 24.0 * factors + 192.0


def speed(X, threads: int, repeats: int, epochs: int, rates: C.MachineRates,
          bar: float = SPEED_BAR) -> tuple[dict, dict, dict]:
    result = C.alternate({
        "fastrec": lambda: fastrec_epochs(X, threads, epochs),
        "implicit": lambda: implicit_epochs(X, threads, epochs),
    }, repeats=repeats, warmup=False)
    ours, anchor = result.median("fastrec"), result.median("implicit")
    ratio = result.ratio("fastrec", "implicit")
    row = C.ratio_row(f"BPR, {FACTORS} factors", ours, anchor, ratio, bar, unit="s/epoch",
                      samples=len(result.samples["fastrec"]))
    flops, bytes_ = sample_cost(FACTORS)
    floor = {
        "samples/epoch": X.nnz,
        "FLOPs/sample": flops,
        "bytes/sample (no cache)": bytes_,
        "flop floor s/epoch": flops * X.nnz / (rates.sgemm_gflops * 1e9),
        "byte floor s/epoch": bytes_ * X.nnz / (rates.copy_gbs * 1e9),
        "fastrec ns/sample/thread": ours.wall / X.nnz * threads * 1e9,
        "implicit ns/sample/thread": anchor.wall / X.nnz * threads * 1e9,
    }
    raw = {"fastrec": result.samples["fastrec"], "implicit": result.samples["implicit"],
           "fastrec_median": ours, "implicit_median": anchor, "ratio": ratio}
    return row, floor, raw


# ------------------------------------------------------------------- run
def run(quick: bool = False, threads: int = C.THREADS, repeats: int | None = None,
        epochs: int | None = None, with_quality: bool = True, with_speed: bool = True,
        seed: int = 0, with_heavy: bool = True) -> C.Report:
    report = C.Report("BPR and WARP vs LightFM and implicit (issue 4)")
    env = C.environment()
    report.notes += [line[2:] for line in C.environment_lines(env)]  # markdown() adds the bullets
    if with_quality:
        if C.ml1m_available():
            print("BPR/WARP quality on ML-1M ...", file=sys.stderr, flush=True)
            rows, raw = quality(threads, seed)
            report.table(f"Quality: ML-1M implicit, random 80/20 split (seed {C.SPLIT_SEED}), {FACTORS} factors, "
                         f"{threads} threads, model seed {seed}; ndcg@10 and p@10 with training items "
                         "excluded, one top-k and metric implementation for every library; "
                         "anchor = LightFM WARP for WARP rows, implicit BPR for BPR rows.",
                         rows, ["model", "ndcg@10", "p@10", "seconds", "ndcg / anchor", "time / anchor",
                                "bar", "pass"])
            report.raw["quality"] = raw
        else:
            report.notes.append(f"quality skipped: {C.ML1M} not found")
    if with_speed:
        X = C.synthetic(C.data_shape(quick))
        rates = C.machine_rates()
        print("BPR speed on synthetic data ...", file=sys.stderr, flush=True)
        row, floor, raw = speed(X, threads, repeats or (2 if quick else 3), epochs or 3, rates)
        report.table(f"Speed: synthetic MovieLens-20M shape, {C.describe(X)}; {threads} threads each; "
                     "median seconds per epoch over alternated fits (first epoch of each fit dropped); "
                     "ratio = fastrec / implicit; both verify negatives.",
                     [row], C.ratio_columns("s/epoch", last=("samples", "bar", "pass")))
        report.table(f"Floors per epoch ({rates.line()}).", [floor], list(floor))
        report.raw["speed"] = raw
    if with_heavy:
        X = heavy_tailed(quick)
        rates = C.machine_rates()
        print("BPR speed on heavy-tailed data ...", file=sys.stderr, flush=True)
        row, floor, raw = speed(X, threads, repeats or (2 if quick else 3), epochs or 3, rates,
                                bar=HEAVY_SPEED_BAR)
        report.table(f"Speed, heavy-tailed data (issue 17): {C.describe(X)}, {tails(X)}; "
                     f"make_synthetic with {HEAVY_ALPHAS}; kernels {kernel_build()}; {threads} threads "
                     "each; median seconds per epoch over alternated fits (first epoch dropped); "
                     "ratio = fastrec / implicit; both verify negatives.",
                     [row], C.ratio_columns("s/epoch", last=("samples", "bar", "pass")))
        report.table(f"Floors per epoch, heavy-tailed data ({rates.line()}).", [floor], list(floor))
        report.raw["heavy"] = raw
    return report


def kernel_build() -> str:
    """The kernel variant the SGD module was loaded from (FASTREC_KERNELS caps it)."""
    from fastrec.kernels import kernel_variant
    return kernel_variant()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_common_args(parser)
    parser.add_argument("--repeats", type=int, help="alternated pairs of fits in the speed test")
    parser.add_argument("--epochs", type=int, help="epochs per speed fit (the first is not timed)")
    parser.add_argument("--seed", type=int, default=0, help="model seed for the quality runs")
    parser.add_argument("--no-quality", action="store_true", help="skip the ML-1M comparison")
    parser.add_argument("--no-speed", action="store_true", help="skip the synthetic-data timing")
    parser.add_argument("--no-heavy", action="store_true", help="skip the heavy-tailed-data timing")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is not timed)")
    report = run(args.quick, args.threads, args.repeats, args.epochs, not args.no_quality,
                 not args.no_speed, args.seed, not args.no_heavy)
    print(report.markdown())
    report.save("bpr")
    return 0


if __name__ == "__main__":
    sys.exit(main())
