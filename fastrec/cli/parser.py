"""The argument parser of the ``fastrec`` command: every subcommand, option and help text."""
from __future__ import annotations

import argparse
import textwrap
from typing import Any

from .._version import __version__
from .models import DEFAULT_THRESHOLD, MODEL_CHOICES, SIMILARITIES, WEIGHTINGS, model_defaults

__all__ = ["build_parser", "PROG"]

PROG = "fastrec"
_SPLITS = ("random", "per-user", "leave-last", "temporal")
_DEFAULT_METRICS = "precision,recall,map,ndcg,mrr,hit_rate,coverage"


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
    g.add_argument("--timestamp-col", help="optional timestamp column: numbers such as Unix "
                   "seconds (or datetimes in Parquet); needed by the leave-last and temporal splits")
    g.add_argument("--sep", default=",", help="CSV field separator; '\\t' or 'tab' for tabs, "
                   "may be several characters such as '::' (default: ',')")
    g.add_argument("--no-header", dest="header", action="store_false",
                   help="the CSV has no header line: give columns as 0-based numbers")
    g.add_argument("--encoding", metavar="NAME", help="text encoding of the CSV, e.g. latin-1 or "
                   "cp1252 (default: UTF-8, falling back to Latin-1 when the file is not UTF-8)")
    g.add_argument("--duplicates", choices=("sum", "max", "last"), default="sum",
                   help="how repeated (user, item) rows merge (default: %(default)s)")
    g.add_argument("--weighting", choices=WEIGHTINGS, default="raw",
                   help="transform the weights before fitting: raw keeps them, binary makes "
                   "weights >= --threshold 1 and drops the rest, log1p damps counts, bm25/tfidf "
                   "down-weight heavy users and popular items (default: %(default)s)")
    g.add_argument("--threshold", type=float, metavar="X",
                   help="with --weighting binary only: the smallest weight kept "
                   f"(default: {DEFAULT_THRESHOLD})")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=MODEL_CHOICES, default="als",
                   help="als: implicit ALS (Hu et al.); bpr / warp: ranking losses trained "
                   "by SGD; knn: item-item neighbours (cosine, TF-IDF or BM25); ease: Steck's "
                   "closed-form item-item model, dense items x items (default: %(default)s)")
    g.add_argument("--factors", type=int, metavar="N",
                   help=f"latent dimensions (default: {model_defaults('factors')})")
    g.add_argument("--iterations", type=int, metavar="N", help="ALS sweeps or SGD epochs "
                   f"(default: {model_defaults('iterations')})")
    g.add_argument("--regularization", type=float, metavar="X",
                   help=f"L2 penalty, not for knn (default: {model_defaults('regularization')})")
    g.add_argument("--alpha", type=float, metavar="X", help="ALS only: confidence 1 + alpha * "
                   f"weight (default: {model_defaults('alpha')})")
    g.add_argument("--learning-rate", type=float, metavar="X",
                   help=f"bpr/warp only: SGD step size (default: {model_defaults('learning_rate')})")
    g.add_argument("--neighbours", "--neighbors", type=int, metavar="K",
                   help=f"knn only: neighbours kept per item (default: {model_defaults('neighbours')})")
    g.add_argument("--similarity", choices=SIMILARITIES,
                   help=f"knn only: item-item similarity (default: {model_defaults('similarity')})")
    g.add_argument("--shrinkage", type=float, metavar="X", help="knn only: similarities of items "
                   "shared by c users are multiplied by c / (c + X) "
                   f"(default: {model_defaults('shrinkage')})")
    g.add_argument("--threads", type=int, metavar="N",
                   help="threads; 0 uses every CPU this process may use (default: 0)")
    g.add_argument("--seed", type=int, default=0, help="random seed of the initial factors "
                   "and of the split (default: %(default)s)")


def _sub(subs: Any, name: str, help: str, description: str, epilog: str) -> argparse.ArgumentParser:
    return subs.add_parser(name, help=help, description=textwrap.fill(description, 79),
                           formatter_class=_formatter,
                           epilog="examples:\n" + epilog)


def build_parser() -> argparse.ArgumentParser:
    """The ``fastrec`` argument parser, with one subparser per command."""
    parser = _Parser(prog=PROG, formatter_class=_formatter,
                     description="Fast recommendations from implicit feedback: ALS, BPR, WARP, "
                     "item-item neighbours and EASE.",
                     epilog="examples:\n  fastrec demo\n"
                     "  fastrec fit ratings.csv --user-col user --item-col movie --out model.npz\n"
                     "  fastrec recommend model.npz --user 42\n"
                     "  fastrec info model.npz\n"
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
             "item ids, to the --out file (a versioned .npz without pickle).  Progress with the "
             "training loss (ALS) or sampled AUC (BPR/WARP) goes to stderr unless --quiet.",
             "  fastrec fit ratings.csv --user-col userId --item-col movieId --out model.npz\n"
             "  fastrec fit plays.csv --weight-col plays --weighting bm25 --alpha 5 --out m.npz\n"
             "  fastrec fit ratings.dat --sep :: --no-header --user-col 0 --item-col 1 "
             "--model warp --out m.npz\n"
             "  fastrec fit plays.csv --model knn --similarity bm25 --neighbours 50 --out knn.npz\n"
             "  fastrec fit stars.csv --weight-col stars --weighting binary --threshold 4 "
             "--encoding latin-1 --out m.npz\n"
             "  fastrec fit ratings.csv --model warp --user-features users.csv --item-features items.csv "
             "--feature-unknown append --out m.npz")
    _add_data_options(p)
    _add_model_options(p)
    p.add_argument("--out", required=True, metavar="MODEL", help="model file to write")
    p.add_argument("--quiet", action="store_true", help="no progress and no summary "
                   "(progress is shown by default)")
    p.add_argument("--user-features", metavar="FILE",
                   help="CSV of user side features (header; id column named like --user-col, else the "
                        "first; other columns categorical, 'A|B' multi-valued, many-valued numbers "
                        "bucketed); bpr/warp/als: new users are then recommended from their features")
    p.add_argument("--item-features", metavar="FILE",
                   help="CSV of item side features (like --user-features): items without interactions "
                        "are scored from their features (cold start)")
    p.add_argument("--feature-identity", action="store_true",
                   help="also give every user and item with interactions its own identity feature")
    p.add_argument("--feature-unknown", choices=("error", "drop", "append"), default="error",
                   help="ids in a feature file without interactions: refuse, drop, or add them as new "
                        "users/items (default: %(default)s)")

    p = _sub(subs, "recommend", "top-N items for a user, a file of users or a new user's history",
             "Recommend items to users of a saved model, by raw user id, or to a new user "
             "described by the items in --history (folded in, not stored), or to new users "
             "described by their features in --user-features.  One user prints a "
             "table; --users-file writes one batch (CSV columns user,rank,item,score, or one "
             "JSON object per user with --format jsonl).  --candidates ranks only the items it "
             "lists, --exclude never recommends the items it lists.  Id files hold one raw id "
             "per line; blank lines and lines starting with # are skipped.",
             "  fastrec recommend model.npz --user 42 --n 5\n"
             "  fastrec recommend model.npz --users-file users.txt --format jsonl --output recs.jsonl\n"
             "  fastrec recommend model.npz --user alice --no-exclude-seen\n"
             "  fastrec recommend model.npz --history watched.txt --n 5\n"
             "  fastrec recommend model.npz --user-features new_users.csv --n 5\n"
             "  fastrec recommend model.npz --user 42 --candidates in_stock.txt --exclude sold_out.txt")
    p.add_argument("model", metavar="MODEL", help="model file written by 'fastrec fit'")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", metavar="ID", help="raw user id")
    who.add_argument("--users-file", metavar="FILE", help="file with one raw user id per line")
    who.add_argument("--history", metavar="FILE", help="a new user's history: file with one raw "
                     "item id per line (an item listed twice counts twice)")
    who.add_argument("--user-features", metavar="FILE", help="new users described by their features "
                     "(models fitted with --user-features): a CSV with a header and the columns of the "
                     "fit's user feature file, one row per user (id column optional)")
    p.add_argument("--n", type=int, default=10, help="items per user (default: %(default)s)")
    p.add_argument("--candidates", metavar="FILE", help="file of raw item ids: rank only these")
    p.add_argument("--exclude", metavar="FILE", help="file of raw item ids never to recommend")
    p.add_argument("--exclude-seen", action=argparse.BooleanOptionalAction, default=True,
                   help="skip items the user interacted with at fit time, or listed in "
                   "--history (default: skip)")
    p.add_argument("--skip-unknown", action="store_true",
                   help="leave out ids the model does not know (users in --users-file, items "
                   "in --history, --candidates and --exclude) instead of failing")
    _add_output_options(p, "table for --user and --history, csv for --users-file")

    p = _sub(subs, "similar", "items most similar to an item",
             "Items whose factors are closest (cosine) to those of an item, by raw item id.",
             "  fastrec similar model.npz --item 0133093 --n 5\n"
             "  fastrec similar model.npz --item 7 --format csv")
    p.add_argument("model", metavar="MODEL", help="model file written by 'fastrec fit'")
    p.add_argument("--item", required=True, metavar="ID", help="raw item id")
    p.add_argument("--n", type=int, default=10, help="similar items (default: %(default)s)")
    _add_output_options(p, "table")

    p = _sub(subs, "info", "what a model file holds",
             "Print a saved model's class, hyperparameters, sizes (users, items, factors, "
             "interactions seen at fit time), its side features (how many, the first names), "
             "the fastrec version that wrote it, whether it "
             "has raw user and item ids, and whether its checksum matches (a corrupted file "
             "is reported, and exits with status 1).",
             "  fastrec info model.npz\n  fastrec info model.npz --json")
    p.add_argument("model", metavar="MODEL", help="model file written by 'fastrec fit'")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of lines")

    p = _sub(subs, "evaluate", "split, fit and score a model on held-out interactions",
             "Split DATA into train and test, fit the model on train and print ranking metrics "
             "at k on the test users' held-out interactions (relevant: positive weight, or "
             "weight >= --threshold with --weighting binary).  Training items are never "
             "recommended.",
             "  fastrec evaluate ratings.csv --split per-user --k 10\n"
             "  fastrec evaluate ratings.csv --weight-col rating --model warp --json\n"
             "  fastrec evaluate events.csv --timestamp-col ts --split leave-last --last-n 2\n"
             "  fastrec evaluate ratings.csv --model ease --regularization 200 --k 20\n"
             "  fastrec evaluate ratings.dat --sep :: --no-header --user-col 0 --item-col 1 "
             "--rerank calibrated:0.5 --item-groups movies.dat --report report.html")
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
    g.add_argument("--quiet", action="store_true", help="no progress (shown by default)")
    g.add_argument("--rerank", metavar="NAME[:VALUE]", help="also score re-ranked lists: calibrated "
                   "(needs --item-groups), popularity (xQuAD), mmr or fair (FA*IR for the long tail); "
                   "VALUE is the tradeoff (fair: p), e.g. calibrated:0.5")
    g.add_argument("--item-groups", metavar="FILE", help="item groups for --rerank calibrated: lines "
                   "'item::title::A|B' (movies.dat) or 'item,A|B'")
    g.add_argument("--report", metavar="HTML", help="with --rerank: write a self-contained HTML report "
                   "(metrics, accuracy-vs-fairness curve, long-tail plot; needs matplotlib)")

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
