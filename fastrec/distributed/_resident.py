"""The user blocks a ``DaskALS`` fit leaves on its workers, for ``recommend_all`` to rank where they are.

At the end of a fit every worker holds its blocks of users: their final
factors and their shard (the compact rows of the interactions, whose column
indices are the items each user has seen when every item block was received
whole).  ``ResidentUsers`` keeps futures of both, so ``recommend_all``
sends only the items (the ranking index) instead of every user's factors
and seen items.

They stand for exactly one fitted state: the client-side user factors and
seen-items matrix of the fit (held by weak reference).  Any change of the
users (a refit, ``partial_fit_users``, a fold-in kept in the model, an item
update that rewrites users' seen rows) makes the model's state hold other
arrays, and a lost worker loses its futures: then the blocks are not used
(and dropped), and ``recommend_all`` ships the users from the client.
What frees them on the workers: the next ``fit`` (before it builds its own
shards), ``DaskALS.release()``, the model being garbage collected or
pickled without them, or the client closing.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _tasks
from ._cluster import submit_to

__all__ = ["ResidentUsers", "keep_users"]


@dataclass(eq=False)
class ResidentUsers:
    """Futures of a fit's user blocks on their workers, and the client-side arrays they equal."""

    client: Any
    bounds: np.ndarray            # the user blocks' boundaries (block k: users bounds[k]:bounds[k + 1])
    owners: list[str]             # the worker of each block
    factors: list[Any]            # futures: each block's final user factors (an ndarray of its own)
    shards: list[Any] | None      # futures: each block's Shard (its rows: the block's seen items), or None
    user_factors: weakref.ref     # the fitted state's user factors, which the blocks are the rows of
    user_items: weakref.ref       # the fitted state's seen-items matrix, which the shards hold the pattern of

    def matches(self, state: Any, client: Any) -> bool:
        """Whether these blocks are ``state``'s users, on ``client``'s live workers (no wait, no message)."""
        if client is not self.client or getattr(client, "status", None) != "running":
            return False
        if state.pending is not None:  # user rows updated since the fit: merged arrays are other objects
            return False
        factors, items = self.user_factors(), self.user_items()
        if factors is None or items is None or state.user_factors is not factors or state.user_items is not items:
            return False
        # "pending": kept_factors not run yet (it runs before any task that reads it); lost, erred or cancelled
        # futures (a worker died, the cluster restarted, the client closed) are not
        return bool(self.factors) and all(f.status in ("finished", "pending")
                                          for f in self.factors + (self.shards or []))

    # the items last sent for these users (recommend_all): (index, item labels, future on every worker)
    _context: tuple[weakref.ref, Any, Any] | None = None

    def context(self, index: Any, labels: Any) -> Any:
        """The future of the items sent for ``index`` (the very object) and ``labels``, if it is still there."""
        if self._context is None:
            return None
        kept, kept_labels, future = self._context
        if kept() is index and kept_labels is labels and future.status == "finished":
            return future
        return None

    def keep_context(self, index: Any, labels: Any, future: Any) -> None:
        self._context = (weakref.ref(index), labels, future)

    def release(self) -> None:
        """Drop the futures: the scheduler frees the blocks once nothing else refers to them."""
        self.factors = []
        self.shards = None
        self._context = None


def keep_users(client: Any, layout: Any, blocks: list[Any], user_factors: np.ndarray, user_items: Any,
               seen: bool) -> ResidentUsers:
    """The resident users of a finished fit: ``blocks`` (its last user blocks, futures) and the layout's shards.

    ``user_factors`` is the concatenation of ``blocks`` on the client and
    ``user_items`` the matrix the fitted state keeps; ``seen``: the shards'
    rows are that matrix's pattern (a fit from a matrix, not a Dask
    DataFrame).  A shard's columns are item ids only when it received every
    item block whole (else they index the rows it received): otherwise its
    seen items are not kept.
    """
    owners = list(layout.owners["users"])
    factors = [submit_to(client, worker, _tasks.kept_factors, block) for worker, block in zip(owners, blocks)]
    whole = all(bool((kinds == _tasks.WHOLE).all()) for kinds in layout.kinds["users"])
    shards = list(layout.shards["users"]) if seen and whole else None
    return ResidentUsers(client, np.asarray(layout.bounds["users"], dtype=np.int64), owners, factors, shards,
                         weakref.ref(user_factors), weakref.ref(user_items))
