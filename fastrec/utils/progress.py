"""A dependency-free progress line for long loops (written to stderr)."""
from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``Progress(total, desc)``; call ``update(**fields)`` once per step, ``close()`` at the end."""

    def __init__(self, total: int, desc: str, enabled: bool = True, stream: TextIO | None = None):
        self.total = total
        self.desc = desc
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.done = 0
        self.start = time.perf_counter()

    def update(self, **fields: float) -> None:
        self.done += 1
        if not self.enabled:
            return
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        elapsed = time.perf_counter() - self.start
        extra = " ".join(f"{k}={v:.5g}" for k, v in fields.items())
        self.stream.write(f"\r{self.desc} [{'#' * filled}{'.' * (width - filled)}] "
                          f"{self.done}/{self.total} {elapsed:.1f}s {extra}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
