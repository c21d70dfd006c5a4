"""Fetch data files into a local cache, verifying their checksums."""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["cache_dir", "fetch", "file_digests", "verify_cached"]

_CHUNK = 1 << 20


def cache_dir() -> Path:
    """Where downloads go: ``$FASTREC_DATA``, else ``$XDG_CACHE_HOME/fastrec``, else ``~/.cache/fastrec``."""
    explicit = os.environ.get("FASTREC_DATA")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "fastrec"


def file_digests(path: Path) -> dict[str, str]:
    """SHA-256 and MD5 hex digests of a file."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            sha.update(chunk)
            md5.update(chunk)
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest()}


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _check(digests: dict[str, str], expected: dict[str, str | None], what: str) -> None:
    for algorithm, value in expected.items():
        if value is not None and digests[algorithm] != value.lower():
            raise ValueError(f"{what} failed its {algorithm.upper()} check: expected {value}, "
                             f"got {digests[algorithm]}")


def verify_cached(path: Path) -> None:
    """Check a cached download against the SHA-256 recorded when it was fetched."""
    sidecar = _sidecar(path)
    if not sidecar.exists():
        return  # placed there by hand: trusted as is
    recorded = sidecar.read_text().split()[0]
    _check(file_digests(path), {"sha256": recorded},
           f"the cached file {path} (delete it to download it again)")


def fetch(url: str, dest: Path, sha256: str | None = None, md5: str | None = None,
          timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` and verify it; returns ``dest``.

    The file is written under a temporary name and moved into place only
    after the checks pass, so a failed download leaves nothing behind.  The
    SHA-256 of the verified file is written beside it (``dest.sha256``) and
    checked again by ``verify_cached`` on later use.  ``md5`` is for sources
    that publish only MD5 sums (GroupLens does).

    Raises
    ------
    ConnectionError
        The server could not be reached (for example, no network).
    ValueError
        The file does not match a given checksum.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(handle, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    for chunk in iter(lambda: response.read(_CHUNK), b""):
                        out.write(chunk)
            except (urllib.error.URLError, OSError) as exc:
                raise ConnectionError(
                    f"could not download {url}: {getattr(exc, 'reason', exc)}. Without network "
                    f"access, download the file elsewhere and pass its local path instead") from exc
        digests = file_digests(tmp)
        _check(digests, {"sha256": sha256, "md5": md5}, f"the download of {url}")
        os.replace(tmp, dest)
        _sidecar(dest).write_text(f"{digests['sha256']}  {dest.name}\n")
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest
