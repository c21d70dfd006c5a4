"""Model files: round trips, damaged and foreign files, atomic saves, pickle."""
from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import fastrec
from fastrec import ALS, ModelFormatError, NotFittedError
from fastrec.models import FactorModel, FittedState
from fastrec.data.idmap import IdMap
from fastrec.persistence import FORMAT_VERSION, load_model, model_classes, save_model
from fastrec.persistence.codec import _checksum


class BiasedModel(FactorModel):
    """A non-ALS model with item biases (stands in for BPR where that is missing)."""

    def __init__(self, factors: int = 4, dtype=np.float32, random_state=None):
        self.factors = factors
        self.dtype = dtype
        self.random_state = random_state

    def fit(self, X):
        X = sp.csr_matrix(X, dtype=self.dtype)
        X.sort_indices()
        rng = np.random.default_rng(self.random_state)
        n_users, n_items = X.shape
        self._state = FittedState(rng.standard_normal((n_users, self.factors)).astype(self.dtype),
                                  rng.standard_normal((n_items, self.factors)).astype(self.dtype),
                                  X, rng.standard_normal(n_items).astype(self.dtype))
        self.epochs_run_ = 3
        self.epoch_losses_ = np.array([0.5, 0.25, np.nan])
        return self


def _interactions(n_users=30, n_items=25, seed=0, dtype=np.float32):
    X = sp.random(n_users, n_items, density=0.15, random_state=seed, format="csr", dtype=dtype)
    X.data = np.ceil(X.data * 3)
    return X


def _fitted_als(dtype=np.float32, id_maps=False, seed=0) -> ALS:
    model = ALS(factors=6, iterations=3, dtype=dtype, random_state=seed, num_threads=1)
    model.fit(_interactions(seed=seed), compute_loss=True)
    if id_maps:
        s = model._state
        users = IdMap(np.array([f"user-{i:03d}" for i in range(s.n_users)]))
        items = IdMap(np.arange(s.n_items, dtype=np.int64) * 7 + 1000)
        model._state = FittedState(s.user_factors, s.item_factors, s.user_items, s.item_bias, users, items)
    return model


def _assert_same_model(a: FactorModel, b: FactorModel) -> None:
    """Same class, params, arrays and serving answers."""
    assert type(a) is type(b)
    assert a.get_params() == b.get_params()
    for attr in ("user_factors_", "item_factors_"):
        x, y = getattr(a, attr), getattr(b, attr)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)
    if a.item_bias_ is None:
        assert b.item_bias_ is None
    else:
        np.testing.assert_array_equal(a.item_bias_, b.item_bias_)
    assert (a.user_items_ != b.user_items_).nnz == 0
    assert a.user_items_.dtype == b.user_items_.dtype
    assert a.user_map_ == b.user_map_ and a.item_map_ == b.item_map_
    users = np.arange(a.n_users_)
    for exclude_seen in (True, False):
        ids_a, scores_a = a.recommend(users, n=7, exclude_seen=exclude_seen)
        ids_b, scores_b = b.recommend(users, n=7, exclude_seen=exclude_seen)
        np.testing.assert_array_equal(ids_a, ids_b)
        np.testing.assert_array_equal(scores_a, scores_b)
    for got, want in zip(b.recommend(3, n=5), a.recommend(3, n=5)):
        np.testing.assert_array_equal(got, want)
    for side in ("similar_items", "similar_users"):
        got, want = getattr(b, side)(np.arange(5), n=4), getattr(a, side)(np.arange(5), n=4)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    u = np.repeat(np.arange(a.n_users_), 3)
    i = np.tile(np.arange(3), a.n_users_)
    np.testing.assert_array_equal(a.predict(u, i), b.predict(u, i))
    for got, want in zip(b.rank(2, [4, 1, 0, 9]), a.rank(2, [4, 1, 0, 9])):
        np.testing.assert_array_equal(got, want)


def _raw_arrays(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def _meta(arrays) -> dict:
    return json.loads(arrays["__meta__"].tobytes().decode())


def _write_raw(path, arrays, meta=None, fix_checksum=True) -> None:
    """Write an archive like save_model does, optionally with edited meta; re-sign it."""
    arrays = dict(arrays)
    if meta is not None:
        arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8).copy()
    if fix_checksum:
        arrays["__checksum__"] = np.frombuffer(_checksum(arrays), dtype=np.uint8).copy()
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


# ------------------------------------------------------------------ round trip
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("id_maps", [False, True])
def test_round_trip_serves_identically(tmp_path, dtype, id_maps):
    model = _fitted_als(dtype, id_maps)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = ALS.load(path)
    _assert_same_model(model, loaded)
    assert loaded.loss_history_ == model.loss_history_ and len(loaded.loss_history_) == 3
    assert loaded.get_params()["dtype"] is dtype
    if id_maps:
        assert loaded.user_map_.labels.dtype.kind == "U"
        assert loaded.item_map_.labels.dtype == np.int64
        assert loaded.item_map_.to_index(1007) == 1
    else:
        assert loaded.user_map_ is None and loaded.item_map_ is None
    # the rebuilt state is as immutable as a fitted one
    assert not loaded.user_factors_.flags.writeable
    assert not loaded.user_items_.indices.flags.writeable
    assert loaded.user_items_.indices.dtype == np.int32


def test_round_trip_of_a_model_fitted_from_interactions(tmp_path):
    interactions_module = pytest.importorskip("fastrec.data.interactions")
    rng = np.random.default_rng(2)
    users = np.array([f"u{k}" for k in rng.integers(0, 40, 400)])
    items = rng.integers(0, 30, 400) * 11
    data = interactions_module.Interactions.from_arrays(users, items)
    model = ALS(factors=4, iterations=2, random_state=0, num_threads=1).fit(data)
    assert model.user_map_ is not None
    model.save(tmp_path / "m.npz")
    loaded = ALS.load(tmp_path / "m.npz")
    _assert_same_model(model, loaded)
    np.testing.assert_array_equal(loaded.item_map_.to_ids(loaded.recommend(0, n=3)[0]),
                                  model.item_map_.to_ids(model.recommend(0, n=3)[0]))


def test_loaded_model_keeps_working(tmp_path):
    model = _fitted_als()
    model.save(tmp_path / "m.npz")
    loaded = ALS.load(tmp_path / "m.npz")
    rows = _interactions(n_users=2, seed=5)
    np.testing.assert_allclose(loaded.fold_in(rows), model.fold_in(rows), rtol=1e-5, atol=1e-6)
    loaded.partial_fit_users([0, loaded.n_users_], rows)
    assert loaded.n_users_ == model.n_users_ + 1
    refit = ALS.load(tmp_path / "m.npz").fit(_interactions(), compute_loss=True)
    _assert_same_model(refit, model)  # same params and seed: the same fit


def test_biased_model_round_trip_and_generic_load(tmp_path):
    model = BiasedModel(factors=3, dtype=np.float64, random_state=1).fit(_interactions(dtype=np.float64))
    save_model(model, tmp_path / "b.npz")
    for loader in (BiasedModel.load, FactorModel.load, load_model):
        loaded = loader(tmp_path / "b.npz")
        _assert_same_model(model, loaded)
        assert loaded.epochs_run_ == 3
        np.testing.assert_array_equal(loaded.epoch_losses_, model.epoch_losses_)
    scores = model.predict(np.arange(4), np.arange(4))
    expected = np.einsum("ij,ij->i", model.user_factors_[:4], model.item_factors_[:4]) + model.item_bias_[:4]
    np.testing.assert_allclose(scores, expected)


@pytest.mark.skipif(not hasattr(fastrec, "BPR"), reason="fastrec.BPR not available yet")
def test_bpr_round_trip_and_wrong_class(tmp_path):
    model = fastrec.BPR(factors=4, iterations=2, random_state=0, num_threads=1).fit(_interactions())
    assert model.item_bias_ is not None
    model.save(tmp_path / "bpr.npz")
    _assert_same_model(model, fastrec.BPR.load(tmp_path / "bpr.npz"))
    with pytest.raises(ModelFormatError, match="BPR"):
        ALS.load(tmp_path / "bpr.npz")


def test_registry_holds_fastrec_models_by_name():
    classes = model_classes()
    assert classes["ALS"] is ALS
    assert classes[f"{__name__}:BiasedModel"] is BiasedModel


def test_path_is_used_as_given(tmp_path):
    model = _fitted_als()
    model.save(str(tmp_path / "model.bin"))
    assert sorted(os.listdir(tmp_path)) == ["model.bin"]
    _assert_same_model(model, ALS.load(str(tmp_path / "model.bin")))


def test_bad_arguments(tmp_path):
    model = _fitted_als()
    with pytest.raises(TypeError, match="path"):
        model.save(42)
    with pytest.raises(TypeError, match="path"):
        ALS.load(None)
    with pytest.raises(NotFittedError):
        ALS().save(tmp_path / "unfitted.npz")
    with pytest.raises(TypeError, match="model"):
        save_model("not a model", tmp_path / "x.npz")
    assert os.listdir(tmp_path) == []


def test_missing_file_is_not_a_format_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        ALS.load(tmp_path / "nope.npz")


def test_unstorable_param_is_saved_as_none_with_warning(tmp_path):
    model = ALS(factors=4, iterations=1, random_state=np.random.default_rng(3)).fit(_interactions())
    with pytest.warns(UserWarning, match="random_state"):
        model.save(tmp_path / "m.npz")
    loaded = ALS.load(tmp_path / "m.npz")
    assert loaded.random_state is None
    np.testing.assert_array_equal(loaded.item_factors_, model.item_factors_)


def test_unstorable_attribute_is_skipped_with_warning(tmp_path):
    model = _fitted_als()
    model.callback_ = print
    model.history_tuple_ = (1, 2.5)
    with pytest.warns(UserWarning, match="callback_"):
        model.save(tmp_path / "m.npz")
    loaded = ALS.load(tmp_path / "m.npz")
    assert not hasattr(loaded, "callback_")
    assert loaded.history_tuple_ == [1, 2.5]  # tuples come back as lists


def test_pickle_round_trip():
    model = _fitted_als(id_maps=True)
    _assert_same_model(model, pickle.loads(pickle.dumps(model)))


# ------------------------------------------------------------- bad files
def _expect_format_error(path, match=None, cls=ALS):
    with pytest.raises(ModelFormatError, match=match):
        cls.load(path)


def test_foreign_files(tmp_path):
    model = _fitted_als()
    # a plain np.savez with the same member names but no fastrec metadata
    with open(tmp_path / "plain.npz", "wb") as fh:
        np.savez(fh, user_factors=model.user_factors_, item_factors=model.item_factors_)
    _expect_format_error(tmp_path / "plain.npz", "not a fastrec model")
    np.save(tmp_path / "single.npy", model.user_factors_)
    _expect_format_error(tmp_path / "single.npy", "single .npy")
    (tmp_path / "text.npz").write_text("user,item\n1,2\n")
    _expect_format_error(tmp_path / "text.npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    _expect_format_error(tmp_path / "empty.npz")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("__meta__.npy", b"hello")
        zf.writestr("readme.txt", b"not numpy")
    _expect_format_error(tmp_path / "other.zip")


class _Boom:
    triggered = False

    def __reduce__(self):
        return (_Boom._trigger, ())

    @staticmethod
    def _trigger():
        _Boom.triggered = True
        return "pwned"


def test_pickled_members_are_never_unpickled(tmp_path):
    model = _fitted_als()
    model.save(tmp_path / "m.npz")
    arrays = _raw_arrays(tmp_path / "m.npz")
    arrays["attr.evil_"] = np.array([_Boom()], dtype=object)
    _Boom.triggered = False
    with open(tmp_path / "evil.npz", "wb") as fh:
        np.savez(fh, **arrays)
    _expect_format_error(tmp_path / "evil.npz")
    assert not _Boom.triggered


def test_newer_format_version(tmp_path):
    _fitted_als().save(tmp_path / "m.npz")
    arrays = _raw_arrays(tmp_path / "m.npz")
    meta = _meta(arrays)
    meta["format_version"] = FORMAT_VERSION + 1
    meta["library_version"] = "99.0"
    _write_raw(tmp_path / "new.npz", arrays, meta)
    _expect_format_error(tmp_path / "new.npz", f"version {FORMAT_VERSION + 1}.*99.0.*[Uu]pgrade")


def test_wrong_class(tmp_path):
    BiasedModel().fit(_interactions()).save(tmp_path / "b.npz")
    _expect_format_error(tmp_path / "b.npz", "BiasedModel.*not ALS.*BiasedModel.load")
    _fitted_als().save(tmp_path / "a.npz")
    _expect_format_error(tmp_path / "a.npz", "'ALS'.*not BiasedModel", cls=BiasedModel)


def test_checksum_mismatch(tmp_path):
    _fitted_als().save(tmp_path / "m.npz")
    arrays = _raw_arrays(tmp_path / "m.npz")
    arrays["user_factors"] = arrays["user_factors"] + 1
    _write_raw(tmp_path / "bad.npz", arrays, fix_checksum=False)
    _expect_format_error(tmp_path / "bad.npz", "checksum")


def _edit(arrays, name, value):
    arrays = dict(arrays)
    if value is None:
        del arrays[name]
    else:
        arrays[name] = value
    return arrays


_INCONSISTENT = {
    "indices_out_of_range": "stores item index 25 outside",
    "negative_index": "stores item index -1 outside",
    "unsorted_row": "unsorted or repeated within a row",
    "bad_indptr": "indptr must rise from 0",
    "short_indptr": "'user_items_indptr' has 30 rows; expected 31",
    "factor_columns": "different numbers of columns",
    "factor_dtype": "'item_factors' has dtype float64",
    "bias_length": "'item_bias' has 3 rows",
    "missing_factors": "'user_factors' is missing",
    "map_length": "'item_map' must hold 25",
    "duplicate_map": "'user_map': ids in an IdMap must be unique",
    "object_free_map_dtype": "'item_map' must hold 25 int64 or text ids",
    "unknown_class": "'os:system', which is not a fastrec model class",
    "unknown_param": "secret_switch are unknown to ALS",
    "invalid_param": "factors must be >= 1",
    "private_attribute": "invalid fitted attribute name '_state'",
    "method_attribute": "invalid fitted attribute name 'recommend'",
    "bad_attribute_kind": "fitted attribute 'loss_history_' is missing or invalid",
    "bad_dtype_param": "no-such-dtype",
    "meta_not_dict": "not a fastrec model file",
    "meta_not_json": "unreadable metadata",
}


@pytest.mark.parametrize("case", sorted(_INCONSISTENT))
def test_signed_but_inconsistent_files(tmp_path, case):
    """Files with a valid checksum but broken content (hand-made) are rejected before use."""
    _fitted_als(id_maps=True).save(tmp_path / "m.npz")
    arrays = _raw_arrays(tmp_path / "m.npz")
    meta = _meta(arrays)
    indices, indptr = arrays["user_items_indices"].copy(), arrays["user_items_indptr"].copy()
    if case == "indices_out_of_range":
        indices[-1] = arrays["item_factors"].shape[0]
        arrays = _edit(arrays, "user_items_indices", indices)
    elif case == "negative_index":
        indices[0] = -1
        arrays = _edit(arrays, "user_items_indices", indices)
    elif case == "unsorted_row":
        row = int(np.argmax(np.diff(indptr) >= 2))
        start = indptr[row]
        indices[start], indices[start + 1] = indices[start + 1], indices[start]
        arrays = _edit(arrays, "user_items_indices", indices)
    elif case == "bad_indptr":
        indptr[3] = indptr[-1] + 5
        arrays = _edit(arrays, "user_items_indptr", indptr)
    elif case == "short_indptr":
        arrays = _edit(arrays, "user_items_indptr", indptr[:-1])
    elif case == "factor_columns":
        arrays = _edit(arrays, "item_factors", arrays["item_factors"][:, :-1].copy())
    elif case == "factor_dtype":
        arrays = _edit(arrays, "item_factors", arrays["item_factors"].astype(np.float64))
    elif case == "bias_length":
        arrays = _edit(arrays, "item_bias", np.zeros(3, dtype=np.float32))
    elif case == "missing_factors":
        arrays = _edit(arrays, "user_factors", None)
    elif case == "map_length":
        arrays = _edit(arrays, "item_map", arrays["item_map"][:-1].copy())
    elif case == "duplicate_map":
        labels = arrays["user_map"].copy()
        labels[1] = labels[0]
        arrays = _edit(arrays, "user_map", labels)
    elif case == "object_free_map_dtype":
        arrays = _edit(arrays, "item_map", arrays["item_map"].astype(np.float64))
    elif case == "unknown_class":
        meta["model_class"] = "os:system"
    elif case == "unknown_param":
        meta["params"]["secret_switch"] = 1
    elif case == "invalid_param":
        meta["params"]["factors"] = -3
    elif case == "private_attribute":
        meta["attributes"]["_state"] = {"kind": "value", "value": None}
    elif case == "method_attribute":
        meta["attributes"]["recommend"] = {"kind": "value", "value": 1}
    elif case == "bad_attribute_kind":
        meta["attributes"]["loss_history_"] = {"kind": "pickle"}
    elif case == "bad_dtype_param":
        meta["params"]["dtype"] = {"__dtype__": "no-such-dtype"}
    elif case == "meta_not_dict":
        meta = [1, 2, 3]
    elif case == "meta_not_json":
        arrays = _edit(arrays, "__meta__", np.frombuffer(b"{not json", dtype=np.uint8).copy())
        meta = None
    _write_raw(tmp_path / "bad.npz", arrays, meta)
    _expect_format_error(tmp_path / "bad.npz", re.escape(_INCONSISTENT[case]))


def test_fuzzed_files_load_identically_or_raise_format_error(tmp_path):
    """Flipped bytes, truncations and overwritten ranges: never another exception."""
    model = _fitted_als(id_maps=True)
    original = tmp_path / "m.npz"
    model.save(original)
    data = original.read_bytes()
    rng = np.random.default_rng(12345)
    mutated = tmp_path / "mutated.npz"
    outcomes = {"loaded": 0, "rejected": 0}
    for trial in range(300):
        buf = bytearray(data)
        kind = trial % 3
        if kind == 0:  # flip a few bits anywhere
            for pos in rng.integers(0, len(buf), size=int(rng.integers(1, 4))):
                buf[pos] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:  # truncate
            buf = buf[: int(rng.integers(0, len(buf)))]
        else:  # overwrite a short range with random bytes
            start = int(rng.integers(0, len(buf)))
            chunk = rng.integers(0, 256, size=int(rng.integers(1, 16)), dtype=np.uint8).tobytes()
            buf[start:start + len(chunk)] = chunk
        mutated.write_bytes(bytes(buf))
        try:
            loaded = ALS.load(mutated)
        except ModelFormatError:
            outcomes["rejected"] += 1
        else:  # the damage hit bytes that carry no content (e.g. zip timestamps)
            _assert_same_model(model, loaded)
            outcomes["loaded"] += 1
    assert outcomes["rejected"] >= 250, outcomes


# ------------------------------------------------------------------ atomicity
def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    old = _fitted_als(seed=0)
    path = tmp_path / "model.npz"
    old.save(path)
    before = path.read_bytes()

    calls = {"n": 0}
    real_write_array = np.lib.format.write_array

    def failing_write_array(*args, **kwargs):  # fails after some members were written
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("disk full")
        return real_write_array(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", failing_write_array)
    with pytest.raises(OSError, match="disk full"):
        _fitted_als(seed=1).save(path)
    assert calls["n"] == 4
    monkeypatch.undo()

    assert os.listdir(tmp_path) == ["model.npz"]  # no temporary file left behind
    assert path.read_bytes() == before
    _assert_same_model(old, ALS.load(path))


def test_failed_fsync_keeps_the_old_file(tmp_path, monkeypatch):
    old = _fitted_als(seed=0)
    path = tmp_path / "model.npz"
    old.save(path)

    def failing_fsync(fd):
        raise OSError("I/O error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="I/O error"):
        _fitted_als(seed=1).save(path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["model.npz"]
    _assert_same_model(old, ALS.load(path))


def test_overwrite_replaces_and_keeps_permissions(tmp_path):
    path = tmp_path / "model.npz"
    _fitted_als(seed=0).save(path)
    os.chmod(path, 0o640)
    new = _fitted_als(seed=1)
    new.save(path)
    assert os.listdir(tmp_path) == ["model.npz"]
    assert (path.stat().st_mode & 0o777) == 0o640
    _assert_same_model(new, ALS.load(path))


def test_new_file_is_not_private(tmp_path):
    path = tmp_path / "model.npz"
    _fitted_als().save(path)
    assert path.stat().st_mode & 0o044  # readable beyond the owner under a usual umask


def test_saving_onto_a_directory_fails_cleanly(tmp_path):
    (tmp_path / "sub").mkdir()
    with pytest.raises(OSError):
        _fitted_als().save(tmp_path / "sub")
    assert os.listdir(tmp_path) == ["sub"]


def test_save_into_missing_directory_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        _fitted_als().save(tmp_path / "missing" / "m.npz")


def test_format_file_lists_expected_members(tmp_path):
    model = _fitted_als(id_maps=True)
    model.save(tmp_path / "m.npz")
    arrays = _raw_arrays(Path(tmp_path / "m.npz"))
    assert set(arrays) == {"__meta__", "__checksum__", "shape", "user_factors", "item_factors",
                           "user_items_indptr", "user_items_indices", "user_items_data", "user_map", "item_map"}
    assert arrays["shape"].tolist() == [model.n_users_, model.n_items_]
    meta = _meta(arrays)
    assert meta["attributes"]["loss_history_"] == {"kind": "value", "value": model.loss_history_}
    assert meta["format"] == "fastrec-model" and meta["format_version"] == FORMAT_VERSION
    assert meta["library_version"] == fastrec.__version__ and meta["model_class"] == "ALS"
    assert meta["params"]["dtype"] == {"__dtype__": "float32"}
    assert all(not a.dtype.hasobject for a in arrays.values())
