"""Progress bars for long loops (tqdm) and the library's logger.

Progress goes to stderr through ``tqdm.auto``: a bar with an ETA on a
terminal, a widget in a notebook, and plain lines when stderr is a file or a
pipe.  tqdm is imported only when a bar is shown, so serving never loads it.
Everything else the library says goes to the ``fastrec`` logger.
"""
from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = ["Progress", "logger"]

logger = logging.getLogger("fastrec")


class Progress:
    """``Progress(total, desc, enabled)``; ``update(**fields)`` once per step, then ``close()``.

    ``fields`` (a loss, an AUC, a score) are shown after the bar.
    """

    def __init__(self, total: int, desc: str, enabled: bool = True, unit: str = "it"):
        self._bar: Any = None
        if enabled:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=True,
                             dynamic_ncols=True)

    def update(self, **fields: float) -> None:
        if self._bar is not None:
            if fields:
                self._bar.set_postfix({k: f"{v:.5g}" for k, v in fields.items()}, refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
