"""The ``fastrec`` command (also ``python -m fastrec``).

Subcommands: ``demo``, ``fit``, ``recommend``, ``similar``, ``evaluate`` and
``bench``; ``fastrec COMMAND --help`` describes each.  A user mistake (missing
file, bad column, unknown id, corrupt model, invalid value) prints one line
on stderr and exits with status 1; usage errors exit with status 2.  ``--debug``
shows the full traceback instead.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Sequence, TextIO

import numpy as np

from . import __version__
from ._cli_data import (MODEL_CHOICES, WEIGHTINGS, apply_weighting, build_model, describe,
                        item_index, json_ready, model_defaults, raw_item_ids, read_id_file,
                        read_interactions, user_indices, write_rankings)

__all__ = ["main", "build_parser"]

_PROG = "fastrec"
_SPLITS = ("random", "per-user", "leave-last", "temporal")
_DEFAULT_METRICS = "precision,recall,map,ndcg,mrr,hit_rate,coverage"
# exceptions that mean "bad input", reported in one line (ModelFormatError and
# NotFittedError are ValueErrors)
_USER_ERRORS = (OSError, ValueError, TypeError, KeyError, IndexError)


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line on stderr (exit status 2), pointing at ``--help``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


# ------------------------------------------------------------------ parser
def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", metavar="DATA", help="CSV file (any separator; .gz ok) or Parquet file "
                   "(.parquet/.pq, needs pandas and pyarrow) with one row per interaction")
    g = p.add_argument_group("data columns")
    g.add_argument("--user-col", default="user_id", help="user id column (default: %(default)s)")
    g.add_argument("--item-col", default="item_id", help="item id column (default: %(default)s)")
    g.add_argument("--weight-col", help="optional weight column: rating, count... "
                   "(default: every row weighs 1)")
    g.add_argument("--timestamp-col", help="optional timestamp column, numbers (e.g. Unix "
                   "seconds); needed by the leave-last and temporal splits")
    g.add_argument("--sep", default=",", help="CSV field separator; '\\t' or 'tab' for tabs, "
                   "may be several characters such as '::' (default: ',')")
    g.add_argument("--no-header", dest="header", action="store_false",
                   help="the CSV has no header line: give columns as 0-based numbers")
    g.add_argument("--duplicates", choices=("sum", "max", "last"), default="sum",
                   help="how repeated (user, item) rows merge (default: %(default)s)")
    g.add_argument("--weighting", choices=WEIGHTINGS, default="raw",
                   help="transform the weights before fitting: raw keeps them, binary makes "
                   "weights >= --threshold 1 and drops the rest, log1p damps counts, bm25/tfidf "
                   "down-weight heavy users and popular items (default: %(default)s)")
    g.add_argument("--threshold", type=float, default=0.0,
                   help="with --weighting binary: the smallest weight kept (default: %(default)s)")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=MODEL_CHOICES, default="als",
                   help="als: implicit ALS (Hu et al.); bpr / warp: ranking losses trained "
                   "by SGD (default: %(default)s)")
    g.add_argument("--factors", type=int, metavar="N",
                   help=f"latent dimensions (default: {model_defaults('factors')})")
    g.add_argument("--iterations", type=int, metavar="N", help="ALS sweeps or SGD epochs "
                   f"(default: {model_defaults('iterations')})")
    g.add_argument("--regularization", type=float, metavar="X",
                   help=f"L2 penalty (default: {model_defaults('regularization')})")
    g.add_argument("--alpha", type=float, metavar="X", help="ALS only: confidence 1 + alpha * "
                   f"weight (default: {model_defaults('alpha')})")
    g.add_argument("--learning-rate", type=float, metavar="X",
                   help=f"bpr/warp only: SGD step size (default: {model_defaults('learning_rate')})")
    g.add_argument("--threads", type=int, metavar="N",
                   help="threads; 0 uses every CPU this process may use (default: 0)")
    g.add_argument("--seed", type=int, default=0, help="random seed of the initial factors "
                   "and of the split (default: %(default)s)")


def _model_options(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in
            ("factors", "iterations", "regularization", "alpha", "learning_rate", "threads", "seed")}


def _sub(subs: Any, name: str, help: str, description: str, epilog: str) -> argparse.ArgumentParser:
    return subs.add_parser(name, help=help, description=textwrap.fill(description, 79),
                           formatter_class=_formatter,
                           epilog="examples:\n" + epilog)


def build_parser() -> argparse.ArgumentParser:
    """The ``fastrec`` argument parser, with one subparser per command."""
    parser = _Parser(prog=_PROG, formatter_class=_formatter,
                     description="Fast recommendations from implicit feedback: ALS, BPR and WARP.",
                     epilog="examples:\n  fastrec demo\n"
                     "  fastrec fit ratings.csv --user-col user --item-col movie --out model.npz\n"
                     "  fastrec recommend model.npz --user 42\n"
                     "Run 'fastrec COMMAND --help' for the options of a command.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of errors instead of one line")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = _sub(subs, "demo", "fit and explain a model on the embedded MovieTweetings data",
             "Fit ALS on the MovieTweetings 100K ratings shipped with fastrec (80% of each "
             "user's ratings), show what a few users watched, what we recommend them and why, "
             "what fans of popular films also like, and held-out ndcg, precision, recall and "
             "coverage next to a most-popular baseline.",
             "  fastrec demo\n  fastrec demo --users 5 --seed 1")
    p.add_argument("--users", type=int, default=3, help="users shown (default: %(default)s)")
    p.add_argument("--n", type=int, default=5, help="recommendations per user (default: %(default)s)")
    p.add_argument("--titles", type=int, default=3,
                   help="popular films shown with 'fans also like' (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the split, the model and the users shown (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="threads; 0 = all CPUs (default: 0)")

    p = _sub(subs, "fit", "fit a model on a CSV or Parquet file and save it",
             "Fit a model on interactions read from DATA and save it, with the raw user and "
             "item ids, to the --out file (a versioned .npz without pickle).  A progress line "
             "with the training loss (ALS) or sampled AUC (BPR/WARP) goes to stderr.",
             "  fastrec fit ratings.csv --user-col userId --item-col movieId --out model.npz\n"
             "  fastrec fit plays.csv --weight-col plays --weighting bm25 --alpha 5 --out m.npz\n"
             "  fastrec fit ratings.dat --sep :: --no-header --user-col 0 --item-col 1 "
             "--model warp --out m.npz")
    _add_data_options(p)
    _add_model_options(p)
    p.add_argument("--out", required=True, metavar="MODEL", help="model file to write")
    p.add_argument("--quiet", action="store_true", help="no progress line and no summary")

    p = _sub(subs, "recommend", "top-N items for one user or a file of users",
             "Recommend items to users of a saved model, by raw user id.  One user prints a "
             "table; --users-file writes one batch (CSV columns user,rank,item,score, or one "
             "JSON object per user with --format jsonl).",
             "  fastrec recommend model.npz --user 42 --n 5\n"
             "  fastrec recommend model.npz --users-file users.txt --format jsonl --output recs.jsonl\n"
             "  fastrec recommend model.npz --user alice --no-exclude-seen")
    p.add_argument("model", metavar="MODEL", help="model file written by 'fastrec fit'")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", metavar="ID", help="raw user id")
    who.add_argument("--users-file", metavar="FILE", help="file with one raw user id per line "
                     "(blank lines and lines starting with # are skipped)")
    p.add_argument("--n", type=int, default=10, help="items per user (default: %(default)s)")
    p.add_argument("--exclude-seen", action=argparse.BooleanOptionalAction, default=True,
                   help="skip items the user interacted with at fit time (default: skip)")
    p.add_argument("--skip-unknown", action="store_true",
                   help="with --users-file: leave out unknown users instead of failing")
    _add_output_options(p, "table for --user, csv for --users-file")

    p = _sub(subs, "similar", "items most similar to an item",
             "Items whose factors are closest (cosine) to those of an item, by raw item id.",
             "  fastrec similar model.npz --item 0133093 --n 5\n"
             "  fastrec similar model.npz --item 7 --format csv")
    p.add_argument("model", metavar="MODEL", help="model file written by 'fastrec fit'")
    p.add_argument("--item", required=True, metavar="ID", help="raw item id")
    p.add_argument("--n", type=int, default=10, help="similar items (default: %(default)s)")
    _add_output_options(p, "table")

    p = _sub(subs, "evaluate", "split, fit and score a model on held-out interactions",
             "Split DATA into train and test, fit the model on train and print ranking metrics "
             "at k on the test users' held-out interactions (relevant: positive weight, or "
             "weight >= --threshold with --weighting binary).  Training items are never "
             "recommended.",
             "  fastrec evaluate ratings.csv --split per-user --k 10\n"
             "  fastrec evaluate ratings.csv --weight-col rating --model warp --json\n"
             "  fastrec evaluate events.csv --timestamp-col ts --split leave-last --last-n 2")
    _add_data_options(p)
    _add_model_options(p)
    g = p.add_argument_group("evaluation")
    g.add_argument("--split", choices=_SPLITS, default="per-user",
                   help="random: a fraction of all interactions; per-user: of each user's; "
                   "leave-last: each user's latest --last-n; temporal: everything after a "
                   "time quantile (default: %(default)s)")
    g.add_argument("--test-fraction", type=float, default=0.2,
                   help="share held out by random, per-user and temporal (default: %(default)s)")
    g.add_argument("--last-n", type=int, default=1,
                   help="interactions per user held out by leave-last (default: %(default)s)")
    g.add_argument("--k", type=int, default=10, help="metric cut-off (default: %(default)s)")
    g.add_argument("--metrics", default=_DEFAULT_METRICS,
                   help="comma-separated names, or 'all' (default: %(default)s)")
    g.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    g.add_argument("--quiet", action="store_true", help="no progress line")

    p = _sub(subs, "bench", "run the comparison benchmarks (source checkout only)",
             "Run bench/compare.py, the speed and accuracy comparison with implicit (and "
             "LightFM when installed).  It needs a source checkout of fastrec; arguments "
             "after -- are passed on.",
             "  fastrec bench --quick\n  fastrec bench -- --help")
    p.add_argument("--quick", action="store_true", help="small data sets, a few minutes")
    p.add_argument("extra", nargs="*", metavar="ARG", help="passed on to bench/compare.py")
    return parser


def _add_output_options(p: argparse.ArgumentParser, default_format: str) -> None:
    p.add_argument("--format", choices=("table", "csv", "jsonl"),
                   help=f"output format (default: {default_format})")
    p.add_argument("--output", metavar="PATH", help="write to PATH instead of stdout")


# ---------------------------------------------------------------- commands
def _read_data(args: argparse.Namespace) -> Any:
    return read_interactions(args.data, args.user_col, args.item_col, args.weight_col,
                             args.timestamp_col, sep=args.sep, header=args.header,
                             duplicates=args.duplicates)


def _cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from .demo import run_demo
    for name in ("users", "n", "titles"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(args, name)}")
    run_demo(seed=args.seed, n_users=args.users, n_recs=args.n, n_titles=args.titles,
             num_threads=args.threads, stream=out)
    return 0


def _cmd_fit(args: argparse.Namespace, out: TextIO) -> int:
    model = build_model(args.model, show_progress=not args.quiet, **_model_options(args))
    data = _read_data(args)
    weighted = apply_weighting(data, args.weighting, args.threshold)
    start = time.perf_counter()
    model.fit(weighted)
    elapsed = time.perf_counter() - start
    model.save(args.out)
    if not args.quiet:
        n_users, n_items = data.shape
        out.write(f"fitted {describe(model)} on {n_users:,} users x {n_items:,} items "
                  f"({weighted.nnz:,} interactions) in {elapsed:.2f} s; saved to {args.out}\n")
    return 0


def _load(path: str) -> Any:
    from .persistence import load_model
    if os.path.isdir(path):
        raise IsADirectoryError(21, "the model file is a directory", path)
    return load_model(path)


def _write(args: argparse.Namespace, out: TextIO, fmt: str, rows: list, key: str) -> None:
    if args.output is None:
        write_rankings(out, fmt, rows, key)
        return
    with open(args.output, "w", encoding="utf-8", newline="") as fh:
        write_rankings(fh, fmt, rows, key)


def _cmd_recommend(args: argparse.Namespace, out: TextIO) -> int:
    model = _load(args.model)
    batch = args.users_file is not None
    raw = read_id_file(args.users_file) if batch else [args.user]
    users, raw_known = user_indices(model, raw, skip_unknown=args.skip_unknown and batch)
    rows = []
    if users.size:
        ids, scores = model.recommend(users, n=args.n, exclude_seen=args.exclude_seen)
        ids, scores = np.atleast_2d(ids), np.atleast_2d(scores)
        for user_id, row_ids, row_scores in zip(raw_known, ids, scores):
            valid = row_ids >= 0
            rows.append((user_id, raw_item_ids(model, row_ids[valid]), row_scores[valid]))
    _write(args, out, args.format or ("csv" if batch else "table"), rows, "user")
    return 0


def _cmd_similar(args: argparse.Namespace, out: TextIO) -> int:
    model = _load(args.model)
    ids, scores = model.similar_items(item_index(model, args.item), n=args.n)
    _write(args, out, args.format or "table", [(args.item, raw_item_ids(model, ids), scores)], "item")
    return 0


def _split(args: argparse.Namespace, data: Any) -> tuple[Any, Any]:
    from . import evaluation
    if args.split in ("leave-last", "temporal") and data.timestamps is None:
        raise ValueError(f"--split {args.split} needs timestamps: pass --timestamp-col")
    if args.split == "random":
        return evaluation.random_split(data, args.test_fraction, random_state=args.seed)
    if args.split == "per-user":
        return evaluation.per_user_split(data, args.test_fraction, random_state=args.seed)
    if args.split == "leave-last":
        return evaluation.leave_last_k_out(data, k=args.last_n)
    if not 0 < args.test_fraction < 1:
        raise ValueError(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    return evaluation.temporal_split(data, quantile=1 - args.test_fraction)


def _cmd_evaluate(args: argparse.Namespace, out: TextIO) -> int:
    from ._validation import check_int
    from .evaluation import _check_metrics, evaluate
    model = build_model(args.model, show_progress=not (args.quiet or args.json), **_model_options(args))
    # checked before the (long) fit, so a typo fails at once
    metrics = _check_metrics([m.strip() for m in args.metrics.split(",") if m.strip()]
                             if args.metrics != "all" else "all")
    check_int(args.k, "--k", minimum=1)
    data = _read_data(args)
    train, test = _split(args, data)
    if test.nnz == 0:
        raise ValueError(f"the {args.split} split left no test interactions; the data is too small")
    relevant = test.binarize(args.threshold) if args.weighting == "binary" else test
    start = time.perf_counter()
    model.fit(apply_weighting(train, args.weighting, args.threshold))
    fit_seconds = time.perf_counter() - start
    summary = evaluate(model, train, relevant, k=args.k, metrics=metrics)
    report = {"data": args.data, "model": describe(model), "params": model.get_params(),
              "split": args.split, "k": args.k, "n_train": train.nnz, "n_test": test.nnz,
              "fit_seconds": round(fit_seconds, 4),
              "metrics": {m: summary[m] for m in summary if not m.startswith("n_users")},
              "n_users_evaluated": summary["n_users_evaluated"],
              "n_users_skipped": summary["n_users_skipped"]}
    if args.json:
        out.write(json.dumps(json_ready(report)) + "\n")
        return 0
    out.write(f"{report['model']} on {args.data}\n"
              f"{args.split} split: {train.nnz:,} train / {test.nnz:,} test interactions; "
              f"fit in {fit_seconds:.2f} s\n"
              f"{summary['n_users_evaluated']:,} users evaluated ({summary['n_users_skipped']:,} "
              f"without test interactions skipped)\n")
    width = max(len(name) for name in report["metrics"]) + 2
    for name, value in report["metrics"].items():
        out.write(f"  {name + '@' + str(args.k):<{width + 4}}{value:.4f}\n")
    return 0


def _bench_script() -> Path:
    """Where a source checkout keeps the benchmark driver (absent from installed wheels)."""
    return Path(__file__).resolve().parent.parent / "bench" / "compare.py"


def _cmd_bench(args: argparse.Namespace, out: TextIO) -> int:
    script = _bench_script()
    if not script.is_file():
        raise FileNotFoundError(2, "the benchmarks are not installed with fastrec; run them from "
                                "a source checkout (git clone, then python bench/compare.py)",
                                str(script))
    command = [sys.executable, str(script)] + (["--quick"] if args.quick else []) + list(args.extra)
    out.flush()
    return subprocess.call(command, cwd=str(script.parent.parent))


_COMMANDS = {"demo": _cmd_demo, "fit": _cmd_fit, "recommend": _cmd_recommend,
             "similar": _cmd_similar, "evaluate": _cmd_evaluate, "bench": _cmd_bench}


# ------------------------------------------------------------------- main
def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        message = f"{exc.strerror}: {exc.filename}"
    elif isinstance(exc, KeyError) and len(exc.args) == 1:
        message = str(exc.args[0])  # str(KeyError) adds quotes
    else:
        message = str(exc) or type(exc).__name__
    return " ".join(message.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fastrec`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return _COMMANDS[args.command](args, sys.stdout)
    except BrokenPipeError:  # output piped into e.g. head, which stopped reading
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush stays quiet
        return 0
    except _USER_ERRORS as exc:
        if args.debug:
            raise
        sys.stderr.write(f"{_PROG} {args.command}: error: {_one_line(exc)}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"{_PROG}: interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
