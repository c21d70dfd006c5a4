"""Numba compilation with its on-disk cache kept out of the installed package.

Numba's ``cache=True`` writes ``.nbi``/``.nbc`` files next to the source, in
``site-packages/fastrec/**/__pycache__``.  pip does not know those files, so
an uninstall leaves a ``fastrec/`` folder behind that shadows a later
editable install.  ``njit`` here points the cache at a per-user directory
instead:

1. ``NUMBA_CACHE_DIR``, when the user set it (Numba's own setting wins);
2. ``FASTREC_CACHE_DIR``/numba, else ``$XDG_CACHE_HOME``/fastrec/numba, else
   ``~/.cache/fastrec/numba``;
3. a ``fastrec-numba-<uid>`` folder under the system temporary directory, when
   that home cache cannot be written;
4. no cache at all (compiling on first use in each process) when neither can.

Numba reads ``config.CACHE_DIR`` when a function is decorated, so it is set
only around our own decorations and restored at once: other Numba users in
the process keep their settings.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

import numba

__all__ = ["njit", "prange", "cache_dir"]

prange = numba.prange


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".probe-", delete=True)
        probe.close()
        return True
    except OSError:
        return False


@lru_cache(maxsize=1)
def cache_dir() -> Path | None:
    """Where fastrec's compiled Numba functions are cached, or None when nowhere is writable."""
    if numba.config.CACHE_DIR:
        return Path(numba.config.CACHE_DIR)
    if os.environ.get("FASTREC_CACHE_DIR"):
        home = Path(os.environ["FASTREC_CACHE_DIR"]) / "numba"
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        home = Path(base) / "fastrec" / "numba"
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    for candidate in (home, Path(tempfile.gettempdir()) / f"fastrec-numba-{uid}"):
        if _writable(candidate):
            return candidate
    return None


@contextmanager
def _cache_in(directory: Path) -> Iterator[None]:
    previous = numba.config.CACHE_DIR
    numba.config.CACHE_DIR = str(directory)
    try:
        yield
    finally:
        numba.config.CACHE_DIR = previous


def njit(**options: Any) -> Callable[[Callable], Any]:
    """``numba.njit(**options)`` with the cache placed as the module docstring says."""
    def decorate(func: Callable) -> Any:
        directory = cache_dir()
        if directory is None:
            return numba.njit(cache=False, **options)(func)
        with _cache_in(directory):
            return numba.njit(cache=True, **options)(func)
    return decorate
