"""``save`` replaces a model file atomically: a new file is renamed over the old one.

Writing (or copying) over the existing file would also leave the right bytes
at the path after a successful save, so these tests look where the two differ:
another name for the old file (a hard link) and an open handle keep seeing
the old model; at the moment of the rename the path still holds the old bytes
and the new file is already complete; a write that fails part-way leaves the
old file byte for byte and no temporary file behind.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.sparse as sp

import fastrec
from fastrec import ALS


def fitted(seed):
    R = sp.random(30, 20, density=0.2, random_state=seed, format="csr", dtype=np.float32)
    return ALS(factors=4, iterations=2, random_state=seed, num_threads=1).fit(R)


def assert_same_factors(model, loaded):
    np.testing.assert_array_equal(loaded.user_factors_, model.user_factors_)
    np.testing.assert_array_equal(loaded.item_factors_, model.item_factors_)


@pytest.fixture
def old_file(tmp_path):
    """A directory holding one saved model: (path, model, its bytes)."""
    model = fitted(0)
    path = tmp_path / "model.npz"
    model.save(path)
    return path, model, path.read_bytes()


def test_hard_link_to_the_old_file_keeps_the_old_model(old_file, tmp_path):
    path, old, old_bytes = old_file
    link = tmp_path / "link.npz"
    os.link(path, link)
    new = fitted(1)
    new.save(path)
    assert link.read_bytes() == old_bytes, "save wrote into the old file instead of replacing it"
    assert path.read_bytes() != old_bytes
    assert_same_factors(old, ALS.load(link))
    assert_same_factors(new, ALS.load(path))
    assert sorted(os.listdir(tmp_path)) == ["link.npz", "model.npz"]


def test_open_handle_reads_the_old_model_after_save(old_file, tmp_path):
    path, old, old_bytes = old_file
    new = fitted(1)
    with open(path, "rb") as handle:
        head = handle.read(10)
        new.save(path)
        rest = handle.read()
    assert head + rest == old_bytes
    assert_same_factors(new, fastrec.load(path))
    assert os.listdir(tmp_path) == ["model.npz"]


def test_a_complete_file_is_renamed_over_the_old_one(old_file, tmp_path, monkeypatch):
    path, old, old_bytes = old_file
    new = fitted(1)
    seen = []

    def recording(real):
        def rename(src, dst, *args, **kwargs):
            if os.path.abspath(os.fspath(dst)) == str(path):
                src = os.fspath(src)
                # the moment of truth: the old file is whole, the new one complete
                seen.append((src, path.read_bytes() == old_bytes, fastrec.load(src)))
            return real(src, dst, *args, **kwargs)
        return rename

    monkeypatch.setattr(os, "replace", recording(os.replace))
    monkeypatch.setattr(os, "rename", recording(os.rename))
    new.save(path)
    monkeypatch.undo()
    assert len(seen) == 1, "save must rename exactly one new file over the path"
    src, old_intact, staged = seen[0]
    assert os.path.dirname(os.path.abspath(src)) == str(tmp_path), "the new file must be in the same directory"
    assert os.path.basename(src) != path.name
    assert old_intact, "the old file was changed before the rename"
    assert_same_factors(new, staged)
    assert not os.path.exists(src)
    assert os.listdir(tmp_path) == ["model.npz"]
    assert_same_factors(new, ALS.load(path))


def _failing_savez(calls):
    """An np.savez that writes the start of an archive, then fails like a full disk."""
    def savez(file, *args, **kwargs):
        calls.append(file)
        if isinstance(file, (str, bytes, os.PathLike)):
            with open(file, "wb") as fh:
                fh.write(b"PK\x03\x04" + b"\0" * 4096)
        else:
            file.write(b"PK\x03\x04" + b"\0" * 4096)
            file.flush()
        raise OSError("No space left on device")
    return savez


def test_a_write_failing_part_way_keeps_the_old_file(old_file, tmp_path, monkeypatch):
    path, old, old_bytes = old_file
    calls = []
    monkeypatch.setattr(np, "savez", _failing_savez(calls))
    monkeypatch.setattr(np, "savez_compressed", _failing_savez(calls))
    with pytest.raises(OSError, match="No space left"):
        fitted(1).save(path)
    monkeypatch.undo()
    assert calls, "save did not write through np.savez: the failure was not injected"
    assert path.read_bytes() == old_bytes
    assert os.listdir(tmp_path) == ["model.npz"], "a temporary file was left behind"
    assert_same_factors(old, ALS.load(path))


def test_a_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(np, "savez", _failing_savez(calls))
    monkeypatch.setattr(np, "savez_compressed", _failing_savez(calls))
    with pytest.raises(OSError, match="No space left"):
        fitted(1).save(tmp_path / "model.npz")
    assert calls
    assert os.listdir(tmp_path) == []
