"""The ``fastrec`` command (also ``python -m fastrec``): one function per subcommand, and ``main``.

Subcommands: ``demo``, ``fit``, ``recommend``, ``similar``, ``info``,
``evaluate`` and ``bench``; ``fastrec COMMAND --help`` describes each.  Each
command parses nothing itself (``parser.py`` does), reads its inputs through
the library (``inputs.py``), calls the library and formats the result
(``output.py``).  A user mistake (missing file, bad column, unknown id,
corrupt model, invalid value) prints one line on stderr and exits with
status 1; usage errors exit with status 2.  ``--debug`` shows the full
traceback instead.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence, TextIO

import numpy as np

from .inputs import history_row, load_model, model_ids, read_id_file, read_interactions, uses_raw_ids
from .models import MODEL_OPTIONS, apply_weighting, build_model, check_weighting, describe
from .output import Ranking, check_writable, output_stream, write_rankings, write_report
from .parser import PROG, build_parser

__all__ = ["main", "build_parser"]

# exceptions that mean "bad input", reported in one line (ModelFormatError and
# NotFittedError are ValueErrors; ImportError: an optional dependency is missing;
# NotImplementedError: a model that cannot do what was asked; FloatingPointError:
# training diverged)
_USER_ERRORS = (OSError, ValueError, TypeError, KeyError, IndexError, ImportError,
                NotImplementedError, FloatingPointError)


# ---------------------------------------------------------------- commands
def _model_options(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in MODEL_OPTIONS}


def _read_data(args: argparse.Namespace) -> Any:
    return read_interactions(args.data, args.user_col, args.item_col, args.weight_col,
                             args.timestamp_col, sep=args.sep, header=args.header,
                             duplicates=args.duplicates, encoding=args.encoding)


def _cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from .demo import run_demo
    run_demo(seed=args.seed, n_users=args.users, n_recs=args.n, n_titles=args.titles,
             num_threads=args.threads, stream=out)
    return 0


def _cmd_fit(args: argparse.Namespace, out: TextIO) -> int:
    check_writable(args.out)
    threshold = check_weighting(args.weighting, args.threshold)
    model = build_model(args.model, show_progress=not args.quiet, **_model_options(args))
    data = _read_data(args)
    weighted = apply_weighting(data, args.weighting, threshold)
    features = _feature_files(args)
    start = time.perf_counter()
    _fit(model, weighted, data, args, features=features)
    elapsed = time.perf_counter() - start
    model.save(args.out)
    if not args.quiet:
        n_users, n_items = data.shape
        out.write(f"fitted {describe(model)} on {n_users:,} users x {n_items:,} items "
                  f"({weighted.nnz:,} interactions) in {elapsed:.2f} s; saved to {args.out}\n")
    return 0


def _feature_files(args: argparse.Namespace) -> dict[str, Any]:
    """``fit``'s user_features/item_features read from --user-features/--item-features, if given."""
    from .features import read_features
    features = {}
    for side, path, id_col in (("user", getattr(args, "user_features", None), args.user_col),
                               ("item", getattr(args, "item_features", None), args.item_col)):
        if path is not None:
            features[f"{side}_features"] = read_features(
                path, str(id_col), encoding=args.encoding, identity=args.feature_identity,
                unknown=args.feature_unknown, option=f"--{side}-features")
    return features


def _fit(model: Any, weighted: Any, data: Any, args: argparse.Namespace, what: str = "",
         features: dict[str, Any] | None = None) -> None:
    """``model.fit``; its error on empty data says which options emptied ``data``."""
    try:
        model.fit(weighted, **(features or {}))
    except ValueError as exc:
        if weighted.nnz or not data.nnz:
            raise
        chosen = f"--weighting {args.weighting}" + (f" --threshold {args.threshold:g}"
                                                    if args.threshold is not None else "")
        raise ValueError(f"{chosen} kept none of the {data.nnz:,} {what}interactions from "
                         f"{args.data}: {exc}") from exc


def _rankings(queries: Sequence[Any], ids: Any, scores: Any, raw_ids: bool) -> list[Ranking]:
    """One (query, items, scores) per query; index answers lose their -1 padding."""
    rows = []
    for query, row_ids, row_scores in zip(queries, ids, scores):
        if not raw_ids:  # raw-id answers have no padding (and -1 may be a real raw id)
            valid = row_ids >= 0
            row_ids, row_scores = row_ids[valid], row_scores[valid]
        rows.append((query, row_ids, row_scores))
    return rows


def _item_file(model: Any, path: str | None, what: str, skip_unknown: bool) -> np.ndarray | None:
    if path is None:
        return None
    return model_ids(model, "items", read_id_file(path, f"{what} ids"), what, skip_unknown)


def _cmd_recommend(args: argparse.Namespace, out: TextIO) -> int:
    if args.output is not None:
        check_writable(args.output)
    model = load_model(args.model)
    raw, skip = uses_raw_ids(model), args.skip_unknown
    options = dict(n=args.n, exclude_seen=args.exclude_seen, raw_ids=raw,
                   candidates=_item_file(model, args.candidates, "candidate item", skip),
                   exclude=_item_file(model, args.exclude, "excluded item", skip))
    if args.user_features is not None:
        from .features import read_new_rows
        queries, rows = read_new_rows(args.user_features, model, args.model)
        ids, scores = model.recommend(None, user_features=rows, **options)
    elif args.history is not None:
        history = _item_file(model, args.history, "history item", skip)
        queries: Sequence[Any] = [None]
        ids, scores = model.recommend(None, X=history_row(model, history), **options)
    else:
        batch = args.users_file is not None
        texts = read_id_file(args.users_file, "user ids") if batch else [args.user]
        queries = model_ids(model, "users", texts, "user", skip and batch)
        ids, scores = model.recommend(queries, **options) if len(queries) else ([], [])
    with output_stream(args.output, out) as stream:
        batch = args.users_file is not None or (args.user_features is not None and len(queries) > 1)
        write_rankings(stream, args.format or ("csv" if batch else "table"),
                       _rankings(queries, ids, scores, raw), "user")
    return 0


def _cmd_similar(args: argparse.Namespace, out: TextIO) -> int:
    if args.output is not None:
        check_writable(args.output)
    model = load_model(args.model)
    item = model_ids(model, "items", [args.item], "item")[0]
    ids, scores = model.similar_items(item, n=args.n, raw_ids=uses_raw_ids(model))
    with output_stream(args.output, out) as stream:
        write_rankings(stream, args.format or "table", [(item, ids, scores)], "item")
    return 0


def _cmd_info(args: argparse.Namespace, out: TextIO) -> int:
    from .info import model_report
    report, problem = model_report(args.model)
    write_report(out, report, as_json=args.json)
    if problem is not None:
        raise problem  # what could be read is printed; the error is the one line on stderr
    return 0


def _split(args: argparse.Namespace, data: Any) -> tuple[Any, Any]:
    from .. import evaluation
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
    from ..utils.validation import check_int
    from ..evaluation.evaluate import check_metrics, evaluate
    model = build_model(args.model, show_progress=not (args.quiet or args.json), **_model_options(args))
    # checked before the (long) fit, so a typo fails at once
    metrics = check_metrics([m.strip() for m in args.metrics.split(",") if m.strip()]
                             if args.metrics != "all" else "all")
    check_int(args.k, "--k", minimum=1)
    threshold = check_weighting(args.weighting, args.threshold)
    if args.report and not args.rerank:
        raise ValueError("--report needs --rerank (the report compares the model with its re-ranked lists)")
    if args.report:
        check_writable(args.report)
    data = _read_data(args)
    train, test = _split(args, data)
    if test.nnz == 0:
        raise ValueError(f"the {args.split} split left no test interactions; the data is too small")
    relevant = test.binarize(threshold) if args.weighting == "binary" else test
    start = time.perf_counter()
    _fit(model, apply_weighting(train, args.weighting, threshold), train, args, "training ")
    fit_seconds = time.perf_counter() - start
    summary = evaluate(model, train, relevant, k=args.k, metrics=metrics)
    report = {"data": args.data, "model": describe(model), "params": model.get_params(),
              "split": args.split, "k": args.k, "n_train": train.nnz, "n_test": test.nnz,
              "fit_seconds": round(fit_seconds, 4),
              "metrics": {m: summary[m] for m in summary if not m.startswith("n_users")},
              "n_users_evaluated": summary["n_users_evaluated"],
              "n_users_skipped": summary["n_users_skipped"]}
    if args.rerank:
        from .rerank import rerank_and_report
        report["reranked"] = rerank_and_report(args, model, train, relevant, args.k, metrics, out)
    if args.json:
        write_report(out, report, as_json=True)
        return 0
    out.write(f"{report['model']} on {args.data}\n"
              f"{args.split} split: {train.nnz:,} train / {test.nnz:,} test interactions; "
              f"fit in {fit_seconds:.2f} s\n"
              f"{summary['n_users_evaluated']:,} users evaluated ({summary['n_users_skipped']:,} "
              f"without test interactions skipped)\n")
    width = max(len(name) for name in report["metrics"]) + 2
    reranked = report.get("reranked", {}).get("metrics", {})
    if reranked:
        out.write(f"  {'':<{width + 4}}{'model':>10}{'re-ranked (' + args.rerank + ')':>30}\n")
    for name, value in report["metrics"].items():
        after = f"{reranked[name]:30.4f}" if name in reranked else ""
        out.write(f"  {name + '@' + str(args.k):<{width + 4}}{value:{10 if reranked else 0}.4f}{after}\n")
    if args.report:
        out.write(f"report written to {args.report}\n")
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
             "similar": _cmd_similar, "info": _cmd_info, "evaluate": _cmd_evaluate,
             "bench": _cmd_bench}


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
        sys.stderr.write(f"{PROG} {args.command}: error: {_one_line(exc)}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
