"""Shared benchmark plumbing: data, splits, metrics, timing, memory, floors and environment.

Every bench script imports this module (run them from the repository root,
``python bench/<name>.py``; each puts ``bench/`` on ``sys.path`` itself).

* Data: ML-1M implicit from ``../shared/data`` (randomly split 80/20 with a
  fixed seed) and MovieLens-20M-shaped synthetic data from
  ``fastrec.datasets.make_movielens20m_like``, cached as ``.npz`` under
  ``bench/.cache/`` (git-ignored) so it is generated once per machine.
* Metrics: one implementation for every library, ``fastrec.evaluation.ranking_metrics``
  applied to each library's recommended id arrays.
* Timing: wall time (``perf_counter``) and process CPU time (``process_time``)
  together; comparisons alternate the contenders in one process
  (A, B, A, B, ...) and take medians, because the machine is shared and noisy.
* Memory: resident-set size sampled from ``/proc/self/statm`` during a call,
  and the peak RSS of a child process via ``os.wait4``.
* Floors: the machine's measured sgemm rate and memory copy bandwidth.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import scipy.sparse as sp
from threadpoolctl import ThreadpoolController, threadpool_info

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CACHE = BENCH / ".cache"
DATA = REPO.parent / "shared" / "data"
ML1M = DATA / "ml-1m-implicit" / "interactions.tsv"

SPLIT_SEED = 42  # the ML-1M random 80/20 split
DATA_SEED = 0  # the synthetic data
THREADS = 2  # every library gets this many threads
SERVING_ITERATIONS = 15  # fastrec's default: the factors a user would serve

# MovieLens-20M positives (fastrec.datasets.make_movielens20m_like) and the --quick shape
ML20M_SHAPE = (138_493, 26_744, 10_000_000)
QUICK_SHAPE = (17_312, 6_686, 1_000_000)


# ------------------------------------------------------------------ data
def ml1m_available() -> bool:
    return ML1M.exists()


def load_ml1m() -> sp.csr_matrix:
    """ML-1M implicit as a binary float32 users x items CSR (its split column ignored)."""
    from fastrec.datasets import load_ml1m_implicit
    return load_ml1m_implicit(ML1M, split=False).to_csr(np.float32)


def random_split(X: sp.csr_matrix, test_fraction: float = 0.2, seed: int = SPLIT_SEED
                 ) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """A uniformly random split of the interactions (fastrec's), with sorted int32 CSR halves."""
    from fastrec.evaluation import random_split as split
    return tuple(_canonical_csr(part) for part in split(X, test_fraction, random_state=seed))


def ml1m_split(seed: int = SPLIT_SEED) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(train, test): the random 80/20 split of ML-1M used by every quality figure."""
    return random_split(load_ml1m(), 0.2, seed)


def _canonical_csr(X: Any) -> sp.csr_matrix:
    X = sp.csr_matrix(X, dtype=np.float32)
    X.sum_duplicates()
    X.sort_indices()
    X.indices = X.indices.astype(np.int32, copy=False)
    X.indptr = X.indptr.astype(np.int32, copy=False)
    return X


def synthetic(shape: tuple[int, int, int] = ML20M_SHAPE, seed: int = DATA_SEED,
              verbose: bool = True, name: str = "synthetic", **generator: Any) -> sp.csr_matrix:
    """MovieLens-20M-shaped implicit data (binary, float32 CSR), cached under ``bench/.cache``.

    ``generator`` goes to ``make_synthetic`` (say, popularity exponents for
    heavy-tailed data) and into the cache file's name, as ``name`` does.
    """
    n_users, n_items, nnz = shape
    options = "".join(f"_{k}{v}" for k, v in generator.items())
    path = CACHE / f"{name}_{n_users}x{n_items}x{nnz}{options}_seed{seed}.npz"
    if path.exists():
        with np.load(path) as z:
            X = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=(n_users, n_items))
        X.has_sorted_indices = True
        return X
    from fastrec.datasets import make_synthetic
    if verbose:
        print(f"generating {name} data {n_users} x {n_items} x {nnz} (cached at {path}) ...",
              file=sys.stderr, flush=True)
    X = _canonical_csr(make_synthetic(n_users, n_items, nnz, random_state=seed, as_csr=True, **generator))
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, data=X.data, indices=X.indices, indptr=X.indptr)
    os.replace(tmp, path)
    return X


def data_shape(quick: bool) -> tuple[int, int, int]:
    return QUICK_SHAPE if quick else ML20M_SHAPE


def describe(X: sp.csr_matrix) -> str:
    return f"{X.shape[0]:,} users x {X.shape[1]:,} items x {X.nnz:,} interactions"


def csr_bytes(X: sp.csr_matrix) -> int:
    return int(X.data.nbytes + X.indices.nbytes + X.indptr.nbytes)


def trained_als(X: sp.csr_matrix, factors: int, threads: int = THREADS,
                iterations: int = SERVING_ITERATIONS, seed: int = 0, **params: Any):
    """A fastrec ALS fitted on ``X`` (default hyperparameters unless ``params``), cached on disk.

    Realistic factors for the serving benchmarks.  The model file lives under
    ``bench/.cache/models`` and is refitted when missing or unreadable; the
    model is always returned as loaded from that file, so a first run and a
    cached run serve the same thing.
    """
    import fastrec
    extra = "".join(f"_{k}-{v}" for k, v in sorted(params.items()))
    path = CACHE / "models" / f"als_{X.shape[0]}x{X.shape[1]}x{X.nnz}_f{factors}_it{iterations}_s{seed}{extra}.npz"
    if path.exists():
        try:
            return fastrec.ALS.load(path).set_params(num_threads=threads)
        except Exception as exc:  # an older file format: refit
            print(f"refitting {path.name}: {exc}", file=sys.stderr)
    print(f"fitting ALS ({factors} factors, {iterations} iterations{extra}) for the serving benches "
          f"(cached in {path.parent}) ...", file=sys.stderr, flush=True)
    model = fastrec.ALS(factors=factors, iterations=iterations, num_threads=threads,
                        random_state=seed, **params).fit(X)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return fastrec.ALS.load(path).set_params(num_threads=threads)


def random_als(X: sp.csr_matrix, factors: int, threads: int = THREADS, seed: int = 0):
    """A fastrec ALS serving random normal factors (a fit of zero iterations).

    The hard case for a top-K that prunes by norm bounds: nothing dominates.
    """
    import fastrec
    return fastrec.ALS(factors=factors, iterations=0, num_threads=threads, random_state=seed).fit(X)


FACTOR_SOURCES = {"trained": f"a {SERVING_ITERATIONS}-iteration fastrec ALS fit (default hyperparameters)",
                  "random": "random normal (an ALS fit of 0 iterations)"}


def serving_model(X: sp.csr_matrix, factors: int, source: str, threads: int = THREADS):
    """The model whose factors the serving benches use: ``source`` is "trained" or "random"."""
    if source == "trained":
        return trained_als(X, factors, threads)
    if source == "random":
        return random_als(X, factors, threads)
    raise ValueError(f"source must be one of {sorted(FACTOR_SOURCES)}, got {source!r}")


def implicit_twin(model: Any, threads: int = THREADS, **params: Any):
    """An implicit CPU ALS model serving the same factors as the fastrec ``model``."""
    from implicit.cpu.als import AlternatingLeastSquares
    with blas_limit(1):
        twin = AlternatingLeastSquares(factors=model.item_factors_.shape[1], num_threads=threads, **params)
    twin.user_factors = np.array(model.user_factors_, dtype=np.float32)  # writable copies
    twin.item_factors = np.array(model.item_factors_, dtype=np.float32)
    return twin


# --------------------------------------------------------------- metrics
def ranking_metrics(top: np.ndarray, test: sp.csr_matrix, k: int = 10) -> dict[str, float]:
    """ndcg@k and precision@k of recommended ids (rows = users, -1 = padding) against ``test``."""
    from fastrec.evaluation import ranking_metrics as fastrec_metrics
    m = fastrec_metrics(np.asarray(top), test, k=k, metrics=("ndcg", "precision"))
    return {f"ndcg@{k}": float(m["ndcg"]), f"p@{k}": float(m["precision"]),
            "users": m["n_users_evaluated"]}


def top_k_from_factors(U: np.ndarray, V: np.ndarray, bias: np.ndarray | None,
                       exclude: sp.csr_matrix, k: int = 10, batch: int = 1024) -> np.ndarray:
    """Top-k item ids per user by ``U V^T + bias`` with ``exclude``'s items skipped.

    For libraries whose own recommend cannot exclude seen items in bulk
    (LightFM); plain NumPy so it favours nobody.
    """
    U = np.asarray(U, dtype=np.float32)
    V = np.asarray(V, dtype=np.float32)
    out = np.empty((U.shape[0], k), dtype=np.int64)
    for start in range(0, U.shape[0], batch):
        stop = min(start + batch, U.shape[0])
        scores = U[start:stop] @ V.T
        if bias is not None:
            scores += np.asarray(bias, dtype=np.float32)[None, :]
        seen = exclude[start:stop].tocoo()
        scores[seen.row, seen.col] = -np.inf
        part = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        out[start:stop] = np.take_along_axis(part, order, axis=1)
    return out


def evaluate_factors(U, V, bias, train: sp.csr_matrix, test: sp.csr_matrix, k: int = 10) -> dict[str, float]:
    return ranking_metrics(top_k_from_factors(U, V, bias, train, k), test, k)


# ---------------------------------------------------------------- timing
@dataclass
class Sample:
    """One timed run: wall seconds and process CPU seconds (all threads)."""

    wall: float
    cpu: float


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds`` (wall) and ``t.cpu_seconds``."""

    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        self.cpu_start = time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start
        self.cpu_seconds = time.process_time() - self.cpu_start

    @property
    def sample(self) -> Sample:
        return Sample(self.seconds, self.cpu_seconds)


def iteration_marker(marks: list) -> Callable[..., None]:
    """A fit callback that appends (wall, cpu) at the end of every iteration or epoch."""
    def callback(*_: Any) -> None:
        marks.append((time.perf_counter(), time.process_time()))
    return callback


def iteration_samples(marks: list[tuple[float, float]]) -> list["Sample"]:
    """Per-iteration samples from ``iteration_marker`` marks; the first iteration is dropped."""
    return [Sample(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks, marks[1:])]


def timed(fn: Callable[[], Any]) -> tuple[Any, Sample]:
    with Timer() as t:
        out = fn()
    return out, t.sample


@dataclass
class Alternated:
    """Samples of several contenders run round-robin in one process."""

    samples: dict[str, list[Sample]] = field(default_factory=dict)

    def walls(self, name: str) -> np.ndarray:
        return np.array([s.wall for s in self.samples[name]])

    def cpus(self, name: str) -> np.ndarray:
        return np.array([s.cpu for s in self.samples[name]])

    def median(self, name: str) -> Sample:
        return Sample(float(np.median(self.walls(name))), float(np.median(self.cpus(name))))

    def ratio(self, name: str, anchor: str) -> Sample:
        """Median of ``name`` over median of ``anchor``, for wall and CPU time."""
        a, b = self.median(name), self.median(anchor)
        return Sample(a.wall / b.wall, a.cpu / b.cpu)


def alternate(runners: dict[str, Callable[[], Sample | Sequence[Sample]]], repeats: int,
              warmup: bool = True) -> Alternated:
    """Run each runner ``repeats`` times, alternating A, B, A, B, ...; collect its samples.

    A runner returns one ``Sample`` or several (e.g. one per ALS iteration).
    ``warmup`` runs each once first, untimed (JIT, page faults, caches).
    """
    if warmup:
        for fn in runners.values():
            fn()
    result = Alternated({name: [] for name in runners})
    for _ in range(repeats):
        for name, fn in runners.items():
            out = fn()
            result.samples[name].extend([out] if isinstance(out, Sample) else list(out))
    return result


def latencies(calls: dict[str, Callable[[int], Any]], n: int, block: int = 100) -> Alternated:
    """Per-call samples of ``calls[name](j)`` for j in 0..n-1, in alternated blocks.

    Block b of every contender runs before block b+1 of any, so slow phases
    of a noisy machine hit all of them alike.  The order rotates from block
    to block: the same inputs are used by every contender, and whoever runs a
    block first meets them in colder caches.  The first block runs once
    more, untimed, as a warm-up.  Contenders whose name starts with
    "implicit" run with BLAS at one thread (set once per block).  The wall
    clock brackets only the call (the CPU clock is read outside it).
    """
    result = Alternated({name: [] for name in calls})
    wall, cpu = time.perf_counter, time.process_time
    names = list(calls)
    for b, start in enumerate([0, *range(0, n, block)]):
        shift = b % len(names)
        for name in names[shift:] + names[:shift]:
            fn = calls[name]
            out = result.samples[name] if b else []
            with blas_limit(1) if name.startswith("implicit") else _nothing():
                for j in range(start, min(start + block, n)):
                    c = cpu()
                    w = wall()
                    fn(j)
                    w = wall() - w
                    out.append(Sample(w, cpu() - c))
    return result


def latency_row(result: Alternated, bar: float | None, ours: str = "fastrec", **first: Any) -> dict:
    """p50/p99 in ms of ``ours`` and of every other contender, the ratios against the best of them."""
    row: dict[str, Any] = dict(first)
    p_ours = percentiles(result.walls(ours))
    anchors = {name: percentiles(result.walls(name)) for name in result.samples if name != ours}
    best = min(anchors, key=lambda name: anchors[name][0])
    row[f"{ours} p50 ms"] = 1e3 * p_ours[0]
    row[f"{ours} p99 ms"] = 1e3 * p_ours[1]
    for name, p in anchors.items():
        row[f"{name} p50 ms"] = 1e3 * p[0]
        row[f"{name} p99 ms"] = 1e3 * p[1]
    row["ratio p50"] = p_ours[0] / anchors[best][0]
    row["ratio p99"] = p_ours[1] / anchors[best][1]
    row["vs"] = best
    for name in result.samples:
        row[f"{name} cpu p50 ms"] = 1e3 * percentiles(result.cpus(name))[0]
    row["calls each"] = len(result.samples[ours])
    if bar is not None:
        row["bar"] = f"p50 ratio <= {bar:g}"
        row["pass"] = bool(row["ratio p50"] <= bar)
    return row


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 99)) -> list[float]:
    return [float(v) for v in np.percentile(np.asarray(values, dtype=np.float64), qs)]


_controller: ThreadpoolController | None = None


@contextmanager
def blas_limit(n: int = 1) -> Iterator[None]:
    """BLAS limited to ``n`` threads (implicit's docs ask for 1 around its calls).

    Entering costs a little (the limit is set on every loaded BLAS), so enter
    it around a batch of timed calls, not inside each one.
    """
    global _controller
    if _controller is None:  # scanning the loaded libraries is slow: once per process
        _controller = ThreadpoolController()
    with _controller.limit(limits=n, user_api="blas"):
        yield


# ---------------------------------------------------------------- memory
_PAGE = os.sysconf("SC_PAGE_SIZE")


def current_rss() -> int:
    """Resident-set size of this process, in bytes."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE


def max_rss() -> int:
    """Peak RSS of this process so far (``ru_maxrss``), in bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakRSS:
    """Sample this process's RSS every ``interval`` seconds during a block.

    ``peak_delta`` is the highest RSS seen minus the RSS at entry: the extra
    memory the block needed at its worst, whatever the allocator (our
    kernels' ``malloc`` as well as NumPy).
    """

    def __init__(self, interval: float = 0.002):
        self.interval = interval

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, current_rss())
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakRSS":
        self.start = self.peak = current_rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.peak = max(self.peak, current_rss())
        self._stop.set()
        self._thread.join()
        self.end = current_rss()
        self.peak_delta = self.peak - self.start


# Runs the measured child and reports its peak RSS as a last line.  This
# middleman matters: Linux carries a process's peak RSS across exec, so a child
# forked straight from a big benchmark process would inherit that process's
# peak; the middleman is small when it forks, so the child's figure is its own.
_LAUNCHER = """
import resource, subprocess, sys
code = subprocess.call([sys.executable, *sys.argv[1:]])
sys.stdout.flush()
print("__peak_rss_kb__", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True)
sys.exit(code)
"""


def run_child(args: Sequence[str], timeout: float = 1800) -> tuple[str, int]:
    """Run ``python args...`` in a fresh process; return (its stdout, its peak RSS in bytes).

    The peak is ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` taken by a small
    middleman process that ran only this child.
    """
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, *args], stdout=subprocess.PIPE, cwd=REPO,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"child {list(args)} failed with exit code {proc.returncode}")
    lines = proc.stdout.rstrip("\n").split("\n")
    tag, peak_kb = lines[-1].split()
    assert tag == "__peak_rss_kb__", lines[-1]
    return "\n".join(lines[:-1]), int(peak_kb) * 1024


# ---------------------------------------------------------------- floors
def sgemm_gflops(threads: int = THREADS, n: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` float32 matmul rate (GFLOP/s) with BLAS at ``threads``."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    best = np.inf
    with blas_limit(threads):
        a @ b
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best / 1e9


def copy_bandwidth(mbytes: int = 256, repeats: int = 5) -> float:
    """Best-of memory copy rate in GB/s, counting bytes read plus bytes written (one thread)."""
    src = np.ones(mbytes * 2 ** 20 // 8)
    dst = np.empty_like(src)
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return 2 * src.nbytes / best / 1e9


@dataclass
class MachineRates:
    sgemm_gflops: float  # at THREADS threads
    sgemm_gflops_1t: float
    copy_gbs: float

    def line(self) -> str:
        return (f"measured sgemm {self.sgemm_gflops:.1f} GFLOP/s at {THREADS} threads "
                f"({self.sgemm_gflops_1t:.1f} at 1), memory copy {self.copy_gbs:.1f} GB/s")


def machine_rates() -> MachineRates:
    return MachineRates(sgemm_gflops(THREADS), sgemm_gflops(1), copy_bandwidth())


# ----------------------------------------------------------- environment
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str:
    try:
        mod = __import__(module)
        return str(getattr(mod, "__version__", "?"))
    except Exception:  # an anchor missing is reported, not fatal
        return "not installed"


def environment() -> dict[str, Any]:
    """Date, machine and library versions, for the head of every report."""
    import fastrec
    blas = [f"{i['internal_api']} {i.get('version')} ({i.get('architecture')})"
            for i in threadpool_info() if i["user_api"] == "blas"]
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cpus": fastrec.available_cpus(),
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "fastrec": fastrec.__version__,
        "fastrec_kernels": fastrec.kernel_variant(),
        "implicit": _version("implicit"),
        "lightfm": _version("lightfm"),
        "numpy": np.__version__,
        "scipy": _version("scipy"),
        "blas": ", ".join(sorted(set(blas))),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
    }


def machine() -> str:
    env = environment()
    return (f"{env['cpu']}, {env['cores']} cores ({env['usable_cpus']} usable), "
            f"fastrec kernels: {env['fastrec_kernels']}")


def environment_lines(env: dict[str, Any]) -> list[str]:
    return [
        f"- Date: {env['date']}",
        f"- Machine: {env['cpu']}, {env['cores']} cores ({env['usable_cpus']} usable), "
        f"load average at start {env['load_average']} (shared machine)",
        f"- Software: Python {env['python']}, fastrec {env['fastrec']} ({env['fastrec_kernels']} kernels), "
        f"implicit {env['implicit']}, LightFM {env['lightfm']}, NumPy {env['numpy']}, "
        f"SciPy {env['scipy']}, BLAS {env['blas']}",
    ]


# --------------------------------------------------------------- reports
def fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "PASS" if v else "FAIL"
    if isinstance(v, float):
        if not np.isfinite(v):
            return str(v)
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "" if v is None else str(v)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(c, "")).replace("|", "\\|") for c in columns) + " |")
    return "\n".join(lines)


@dataclass
class Report:
    """What one bench measured: a title, tables of rows, free-text notes and raw numbers."""

    title: str
    tables: list[tuple[str, list[dict], list[str]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def table(self, caption: str, rows: list[dict], columns: list[str]) -> None:
        self.tables.append((caption, rows, columns))

    def markdown(self, level: int = 2) -> str:
        parts = [f"{'#' * level} {self.title}", ""]
        for caption, rows, columns in self.tables:
            if caption:
                parts += [f"{caption}", ""]
            parts += [markdown_table(rows, columns), ""]
        parts += [f"- {n.removeprefix('- ')}" for n in self.notes]
        return "\n".join(parts).rstrip() + "\n"

    def save(self, name: str) -> Path:
        """Write the raw numbers as JSON under ``bench/.cache/results``."""
        out = CACHE / "results" / f"{name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"title": self.title, "tables": self.tables, "notes": self.notes,
                                   "raw": self.raw}, indent=1, default=_jsonable))
        return out


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Sample):
        return {"wall": v.wall, "cpu": v.cpu}
    return str(v)


def ratio_row(name: str, ours: Sample, anchor: Sample, ratio: Sample, bar: float | None,
              unit: str = "s", **extra: Any) -> dict:
    """A table row: our and the anchor's median wall/CPU, their ratios, the bar and the verdict."""
    row = {"measure": name,
           f"fastrec wall {unit}": ours.wall, f"anchor wall {unit}": anchor.wall, "ratio wall": ratio.wall,
           f"fastrec cpu {unit}": ours.cpu, f"anchor cpu {unit}": anchor.cpu, "ratio cpu": ratio.cpu}
    if bar is not None:
        row["bar"] = f"<= {bar:g}"
        row["pass"] = bool(ratio.wall <= bar)
    row.update(extra)
    return row


RATIO_COLUMNS = ["fastrec wall {u}", "anchor wall {u}", "ratio wall", "fastrec cpu {u}",
                 "anchor cpu {u}", "ratio cpu"]


def ratio_columns(unit: str = "s", first: Sequence[str] = ("measure",),
                  last: Sequence[str] = ("bar", "pass")) -> list[str]:
    return [*first, *(c.format(u=unit) for c in RATIO_COLUMNS), *last]


def add_common_args(parser: Any) -> None:
    parser.add_argument("--quick", action="store_true",
                        help=f"small data {QUICK_SHAPE} and fewer repeats (a smoke run)")
    parser.add_argument("--threads", type=int, default=THREADS, help="threads for every library")


def ensure_bench_path() -> None:
    """Let scripts run as ``python bench/x.py`` import their siblings."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))


def publish(report: Report, name: str, command: str, append: bool = False,
            env: dict[str, Any] | None = None) -> str:
    """Print ``report`` with the environment (``env``, taken at the start of the run; now by
    default), the load at the end and ``command``; save its raw numbers as ``name``; with
    ``append``, add the section to bench/RESULTS.md.  Returns the text."""
    text = report.markdown() + "\n".join(environment_lines(env or environment())) + "\n"
    text += f"- Load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n"
    text += f"- Command: `{command}`\n"
    print(text)
    report.save(name)
    if append:
        with open(BENCH / "RESULTS.md", "a", encoding="utf-8") as out:
            out.write("\n\n" + text)
    return text
