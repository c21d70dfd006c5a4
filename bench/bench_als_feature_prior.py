"""ALS with side features, two ways, on MovieLens 1M: the choice behind ``ALS(user_features=...)`` (issue 13).

The issue asks for a way to use features that keeps ALS's speed, chosen by
measurement between

* (ridge) plain ALS, then an exact ridge map ``W`` from features to the
  factors of the rows with interactions, fitted once after ALS; rows with no
  interactions get ``W f`` (what ``fastrec.ALS`` does), and
* (prior) factors pulled towards a learned map during ALS: each row's solve
  gets ``lambda_f ||x_u - W f_u||^2`` (its right-hand side ``+ lambda_f W f_u``,
  its diagonal ``+ lambda_f``), and ``W`` is refitted by the same ridge after
  every half-step; cold rows again get ``W f``.

Both run here on one exact NumPy ALS (Cholesky per row, Hu et al.'s
confidence with fastrec's defaults: 64 factors, regularization 0.1 scaled by
the row's count, alpha 1, 15 iterations), so they differ only in the prior.
The prior needs a new right-hand-side term in ``ext/_als.pyx``; this script
measures whether it would be worth it.  Measured: user cold start
(``cold_user_split``, 20% of the users, ranked over every title from gender,
age band and occupation) and warm users (random 80/20 split of the
interactions), ndcg@10 (and AUC for cold users).

Run from the repository root: ``python bench/bench_als_feature_prior.py [--append]``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import bench_features as BF  # noqa: E402

FACTORS = 64
ITERATIONS = 15
REGULARIZATION = 0.1  # times the row's count (fastrec's default ALS-WR scaling)
ALPHA = 1.0
RIDGE = 1.0  # fastrec.models.side.RIDGE_REGULARIZATION
PRIORS = (0.0, 1.0, 10.0, 100.0)


def _ridge(F: sp.csr_matrix, X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    from fastrec.models.side import ridge_map
    return ridge_map(F, X, rows, RIDGE)


def _half_step(R: sp.csr_matrix, Y: np.ndarray, prior: float, target: np.ndarray | None) -> np.ndarray:
    """Exact solves of every row of R against Y: (G + Y_u' (C_u - I) Y_u + (lam n_u + prior) I) x = Y_u' C_u p_u + prior t_u."""
    G = Y.T @ Y
    n, f = R.shape[0], Y.shape[1]
    counts = np.diff(R.indptr)
    A = np.broadcast_to(G, (n, f, f)).copy()
    b = np.zeros((n, f))
    for u in range(n):
        items = R.indices[R.indptr[u]:R.indptr[u + 1]]
        if items.size:
            c = 1 + ALPHA * R.data[R.indptr[u]:R.indptr[u + 1]]
            Yu = Y[items]
            A[u] += (Yu.T * (c - 1)) @ Yu
            b[u] = c @ Yu
    warm = counts > 0
    penalty = REGULARIZATION * counts + np.where(warm, prior, 0.0)
    A[:, np.arange(f), np.arange(f)] += np.maximum(penalty, 1e-9)[:, None]
    if prior and target is not None:
        b[warm] += prior * target[warm]
    return np.linalg.solve(A, b[..., None])[..., 0]


def als(R: sp.csr_matrix, F: sp.csr_matrix, prior: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user factors, item factors, W): ALS with the users' feature prior ``prior`` (0: none), then the map."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 0.01, (R.shape[0], FACTORS))
    Y = rng.normal(0, 0.01, (R.shape[1], FACTORS))
    Rt = R.T.tocsr()
    warm = np.flatnonzero(np.diff(R.indptr) > 0)
    W = np.zeros((F.shape[1], FACTORS))
    for _ in range(ITERATIONS):
        X = _half_step(R, Y, prior, F @ W if prior else None)
        if prior:
            W = _ridge(F, X, warm)
        Y = _half_step(Rt, X, 0.0, None)
    W = _ridge(F, X, warm)
    cold = np.flatnonzero(np.diff(R.indptr) == 0)
    X[cold] = F[cold] @ W
    return X, Y, W


def run(threads: int, report: C.Report, priors: tuple[float, ...] = PRIORS) -> list[dict]:
    from fastrec.evaluation import cold_user_split, random_split
    X, users, _ = BF.load()
    F = sp.csr_matrix(users.side, dtype=np.float64)
    rows = []
    cold_train, cold_test, _, cold = cold_user_split(X, 0.2, random_state=BF.SEED)
    Rc, Tc = cold_train.to_csr().astype(np.float64), cold_test.to_csr()
    warm_train, warm_test = random_split(X, 0.2, random_state=BF.SEED)
    Rw, Tw = warm_train.to_csr().astype(np.float64), warm_test.to_csr()
    for prior in priors:
        start = time.perf_counter()
        U, V, _ = als(Rc, F, prior)
        ndcg, auc = BF.ndcg_auc(U[cold] @ V.T, Tc[cold])
        U, V, _ = als(Rw, F, prior)
        warm = C.evaluate_factors(U, V, None, Rw.tocsr(), Tw)
        label = "ridge map after ALS (fastrec's choice)" if prior == 0 else f"prior lambda_f = {prior:g}"
        rows.append({"method": label, "cold users ndcg@10": ndcg, "cold users auc": auc,
                     "warm ndcg@10": warm["ndcg@10"], "seconds (both fits)": time.perf_counter() - start})
        print(rows[-1], flush=True)
    report.table(f"User cold start ({cold.size} held-out users, cold_user_split seed {BF.SEED}) and warm users "
                 f"(random 80/20, seed {BF.SEED}); exact NumPy ALS, {FACTORS} factors, {ITERATIONS} iterations, "
                 f"regularization {REGULARIZATION} x count, alpha {ALPHA}; user features: gender, age band, "
                 "occupation.", rows, ["method", "cold users ndcg@10", "cold users auc", "warm ndcg@10",
                                       "seconds (both fits)"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(parser)
    parser.add_argument("--append", action="store_true", help="append the section to bench/RESULTS.md")
    parser.add_argument("--priors", default=",".join(f"{p:g}" for p in PRIORS),
                        help="lambda_f values, comma-separated; 0 is the ridge map after ALS")
    args = parser.parse_args()
    env = C.environment()
    report = C.Report("ALS with user features: ridge map after ALS vs a feature prior during ALS (issue 13)")
    run(args.threads, report, tuple(float(v) for v in args.priors.split(",")))
    command = " ".join(["python bench/bench_als_feature_prior.py", *sys.argv[1:]])
    C.publish(report, "als_feature_prior", command, append=args.append, env=env)


if __name__ == "__main__":
    main()
