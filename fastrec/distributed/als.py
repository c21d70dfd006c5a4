"""``DaskALS``: ``fastrec.ALS`` trained on a Dask cluster.

The layout is the one Spark's ALS uses.  The interactions are stored twice
on the workers, in blocks of users (rows) and blocks of items (columns), and
stay there for the whole fit.  Each half-step sends every block the other
side's factors it needs (whole blocks when it needs most of them, else only
the rows it reads, planned once), solves its rows with ALS's own compiled
half-step and returns its partial Gram matrix; the driver sums those for the
next half-step.  The data movement per iteration is worked out in
ARCHITECTURE.md ("Distributed ALS").
"""
from __future__ import annotations

import inspect
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..data.idmap import IdMap
from ..models.als import ALS, Callback, _check_confidence, initial_factors
from ..models.base import Fitted
from ..utils.progress import Progress, logger
from ..utils.validation import check_bool, check_callback, check_choice, check_int, check_num_threads
from ._cluster import WORKER_LOST, ClusterError, check_timeout, resolve_client, workers_of
from ._engine import ITEM_STEPS, csr_layout, finish_layout, min_fraction, run_iterations, summed_items
from ._resident import keep_users
from .frames import FrameInput, is_dask_frame

__all__ = ["DaskALS"]

_EXCHANGES = ("auto", "broadcast", "rows")


class DaskALS(ALS):
    """Implicit-feedback ALS whose fit runs on a Dask cluster.

    Every hyperparameter of ``fastrec.ALS``, with the same defaults and
    meaning, plus ``client``.  With the same ``random_state`` the factors
    equal those of ``ALS`` on one machine up to floating-point summation
    order, whatever the number of workers (the initial factors are drawn on
    the client exactly as ``ALS`` draws them).  A fitted ``DaskALS`` serves
    like an ``ALS`` (``recommend``, ``similar_items``, fold-in, ...) on the
    client, ``to_als()`` gives the plain ``ALS`` and ``save`` writes a file
    that ``fastrec.ALS.load`` reads without Dask.

    Parameters
    ----------
    factors, regularization, alpha, iterations, solver, cg_steps, regularization_scaling, confidence,
    unobserved_weight, regularization_exp, dtype, random_state, show_progress
        As in ``fastrec.ALS``.
    num_threads : int
        Threads each worker's kernel uses; 0 (the default) uses the
        worker's own thread count (``--nthreads``, ``threads_per_worker``),
        whatever ``OMP_NUM_THREADS`` Dask set in the worker.
    client : distributed.Client or None
        The cluster to run on; None uses the current client
        (``distributed.get_client()``) when ``fit`` is called.

    Attributes
    ----------
    user_factors_, item_factors_, loss_history_
        As in ``fastrec.ALS``.
    """

    _takes_features = False  # side features are not sent to the workers (fit ALS for them)

    def __init__(self, *args: Any, client: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.client = client

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, callback: Callback | None = None, compute_loss: bool | None = None, *,
            user_col: str = "user", item_col: str = "item", weight_col: str | None = "weight",
            exchange: str = "auto", blocks: int | None = None, timeout: float | None = None,
            retries: int = 1, item_step: str = "auto") -> "DaskALS":
        """Learn factors on the cluster.

        Parameters
        ----------
        X : scipy.sparse matrix, 2-D array, ``fastrec.Interactions`` or Dask DataFrame
            A matrix or ``Interactions`` is checked on the client (as by
            ``ALS.fit``) and its blocks are sent to the workers.  A Dask
            DataFrame holds one event per row (raw user id, raw item id,
            optional weight): it is read by the workers, never gathered on
            the client, so it can exceed the client's memory.  Ids get
            indices in sorted order and repeated pairs are summed, as
            ``Interactions.from_dataframe`` does, so both inputs give the
            same model.  The frame is read twice (its ids, then its events):
            ``persist()`` it first if reading it is costly.  The fitted model
            keeps no interactions on the client (``user_items_`` is empty):
            pass the frame as ``recommend_all(..., X=frame)`` to exclude seen
            items.
        callback : callable(iteration, elapsed_seconds, loss), optional
            Called on the client after every iteration.
        compute_loss : bool, optional
            As in ``ALS.fit`` (computed on the workers during the item half-step).
        user_col, item_col, weight_col : str
            The Dask DataFrame's columns (``weight_col=None``: every event counts 1).
        exchange : {"auto", "broadcast", "rows"}
            How a block receives the other side's factors: "broadcast" sends
            whole factor blocks, "rows" only the rows the block reads;
            "auto" sends whole blocks when the other side's factors are
            small (8 MiB) or the block reads at least half of them.
        blocks : int, optional
            Blocks per side (default: one per worker).
        timeout : float, optional
            Seconds any single wait on the cluster may last (building the
            shards, one half-step, gathering the factors); ``ClusterError``
            after that.  None waits as long as it takes.
        retries : int
            How many times a fit that lost a worker starts again: the shards
            are rebuilt from the input on the workers still alive and the
            fit restarts from the same initial factors (the result is the
            same).  Past that, ``ClusterError``.
        item_step : {"auto", "sums", "gather"}
            How the item half-step meets the users.  "sums" (CG with the item
            factors sent whole, which "auto" then picks): each worker adds its
            own users' part of every item's CG sums and the item's owner
            takes the step, so no worker holds other workers' user factors
            (memory per worker about (n_users / W + n_items) x factors;
            several message rounds per half-step).  "gather" (always for
            Cholesky): every item block's worker receives all user factors it
            reads and solves as ``ALS`` does (fewer rounds, about n_users x
            factors more memory per worker).  Both give ``ALS``'s factors.

        Returns
        -------
        self

        Raises
        ------
        ClusterError
            Workers were lost more than ``retries`` times, or a wait passed
            ``timeout``.  The model keeps its previous fitted state (as on
            any error).
        """
        check_callback(callback)
        if compute_loss is not None:
            compute_loss = check_bool(compute_loss, "compute_loss")
        options = {
            "exchange": check_choice(exchange, "exchange", _EXCHANGES),
            "blocks": None if blocks is None else check_int(blocks, "blocks", minimum=1),
            "timeout": check_timeout(timeout),
            "retries": check_int(retries, "retries", minimum=0),
            "item_step": check_choice(item_step, "item_step", ITEM_STEPS),
        }
        client = resolve_client(self.client)
        self.release()  # the previous fit's blocks leave the workers before this fit's shards arrive
        source = None
        if is_dask_frame(X):
            self._check_params()  # bad hyperparameters fail before the data is read
            source = FrameInput(X, user_col, item_col, weight_col).prepare(client, options["timeout"])
            X = source
        return self._fit_template(X, callback=callback, compute_loss=compute_loss, client=client, source=source,
                                  options=options)

    def _fit_input(self, X: Any, params: dict[str, Any]) -> tuple[sp.csr_matrix, IdMap | None, IdMap | None]:
        if isinstance(X, FrameInput):  # the interactions stay on the cluster
            return sp.csr_matrix(X.shape, dtype=params["dtype"]), X.user_map, X.item_map
        return super()._fit_input(X, params)

    def _fit(self, Cui: sp.csr_matrix, params: dict[str, Any], callback: Callback | None = None,
             compute_loss: bool | None = None, client: Any = None, source: FrameInput | None = None,
             options: dict[str, Any] | None = None) -> Fitted:
        if source is None:
            _check_confidence(Cui, params)  # fails here rather than on a worker
        dtype, f = params["dtype"], params["factors"]
        n_users, n_items = Cui.shape
        user_factors, item_factors = initial_factors(n_users, n_items, f, dtype, params["random_state"])
        worker_params = {k: v for k, v in params.items() if k != "random_state"}
        threads = check_num_threads(self.num_threads)
        itemsize = np.dtype(dtype).itemsize
        fractions = {"users": min_fraction(options["exchange"], n_items, f, itemsize),
                     "items": min_fraction(options["exchange"], n_users, f, itemsize)}
        summed = summed_items(worker_params, fractions, options["item_step"])
        if compute_loss is None:
            compute_loss = callback is not None or params["show_progress"]
        progress = Progress(params["iterations"], "DaskALS", enabled=params["show_progress"])
        history: list[float] = []
        start = time.perf_counter()

        def on_iteration(iteration: int, loss: float) -> None:
            if iteration < reported[0]:
                return  # reported before a restart (the same values again)
            reported[0] = iteration + 1
            if compute_loss:
                history.append(loss)
            progress.update(loss=loss)
            if callback is not None:
                callback(iteration, time.perf_counter() - start, loss)

        reported = [0]
        timeout, lost = options["timeout"], 0
        while True:
            layout = None
            try:
                workers = workers_of(client, timeout)
                n_blocks = options["blocks"] or len(workers)
                if source is None:
                    layout = csr_layout(client, workers, Cui, n_blocks, fractions, worker_params,
                                        params["num_threads"], timeout, summed)
                else:
                    layout = source.layout(client, workers, n_blocks, fractions, worker_params, timeout, summed)
                finish_layout(client, layout, worker_params, timeout)
                if layout.nnz == 0:
                    raise ValueError("X holds no interactions (every weight is zero); there is nothing to learn from")
                user_factors, item_factors, user_blocks = run_iterations(
                    client, layout, worker_params, threads, timeout, user_factors, item_factors, compute_loss,
                    on_iteration)
                # the users stay on the workers for recommend_all, as long as the fitted state is this one's
                self._resident = keep_users(client, layout, user_blocks, user_factors, Cui, seen=source is None)
                break
            except WORKER_LOST as exc:
                lost += 1
                if lost > options["retries"]:
                    raise ClusterError(f"DaskALS.fit lost a worker {lost} time(s) (retries={options['retries']}; "
                                       f"{_first_line(exc)}). The model keeps its previous fitted state.") from exc
                logger.warning("DaskALS: a worker was lost (%s); rebuilding the shards and starting again "
                               "(retry %d of %d)", _first_line(exc), lost, options["retries"])
            finally:
                layout = None  # the scheduler frees the shards once no future refers to them
        progress.close()
        return Fitted(user_factors, item_factors, attributes={"loss_history_": history})

    def release(self) -> None:
        """Free the user blocks this fitted model keeps on the workers.

        After ``fit`` each worker keeps its users' final factors and their
        interactions (compact, about 2 bytes per entry on binary data), so
        ``recommend_all`` ranks them where they are instead of sending every
        user's factors and seen items.  Per worker that is about
        (n_users / W) x factors x itemsize + 2 x nnz / W bytes until the next
        ``fit``, this call, the model's deletion or the client's closing.
        ``recommend_all`` still works afterwards (it sends the users).
        """
        resident = self.__dict__.pop("_resident", None)
        if resident is not None:
            resident.release()

    # ----------------------------------------------------------- conversion
    def to_als(self) -> ALS:
        """This fitted model as a single-machine ``fastrec.ALS`` (same hyperparameters and state, no client)."""
        state = self._require_state()
        als = ALS(**{k: v for k, v in self.get_params().items() if k != "client"})
        for name, value in vars(self).items():
            if name.endswith("_") and not name.startswith("_"):
                setattr(als, name, value)
        als._state = state
        return als

    def save(self, path: Any) -> None:
        """Write the model as a ``fastrec.ALS`` file (``fastrec.ALS.load`` reads it without Dask)."""
        self.to_als().save(path)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["client"] = None  # a client belongs to its process
        state.pop("_resident", None)  # and so do its futures
        return state


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _signature() -> inspect.Signature:
    """``ALS.__init__``'s parameters and ``client`` (keyword-only): ALS's hyperparameters, whatever they become."""
    base = inspect.signature(ALS.__init__)
    client = inspect.Parameter("client", inspect.Parameter.KEYWORD_ONLY, default=None)
    return base.replace(parameters=[*base.parameters.values(), client])


DaskALS.__init__.__signature__ = _signature()  # type: ignore[attr-defined]
