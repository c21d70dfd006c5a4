"""``fastrec info``, ``recommend --history/--candidates/--exclude``, option checks, exact ids,
encodings and progress, run in-process through ``fastrec.cli.main``."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import fastrec
from fastrec.persistence import FORMAT_VERSION
import fastrec.data.tables as tables
from fastrec import ALS, BPR
from fastrec.cli import commands as cli

BIG = "18446744073709551615"  # 2**64 - 1: -1 once wrapped into int64
FIT = ["--user-col", "user", "--item-col", "item", "--weight-col", "rating", "--factors", "4",
       "--iterations", "6"]


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_error_line(code: int, err: str, fragment: str) -> None:
    assert code == 1, err
    assert err.count("\n") == 1 and err.startswith("fastrec ") and "Traceback" not in err, err
    assert fragment in err, err


def _both_readers(monkeypatch):
    """Run a loop body with pandas reading CSV (when installed), then with the csv-module reader."""
    if tables.optional_pandas() is not None:
        yield "pandas"
    with monkeypatch.context() as patch:
        patch.setattr(tables, "optional_pandas", lambda: None)
        yield "csv module"


@pytest.fixture(scope="module")
def ratings(tmp_path_factory) -> Path:
    """30 users in two taste groups: even users rate i00-i11, odd users i12-i23."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("features") / "r.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["user", "item", "rating"])
        for u in range(30):
            for i in rng.choice(12, size=5, replace=False) + 12 * (u % 2):
                writer.writerow([f"u{u:02d}", f"i{i:02d}", int(rng.integers(1, 6))])
    return path


@pytest.fixture(scope="module")
def model_path(ratings) -> Path:
    out = ratings.parent / "m.npz"
    assert cli.main(["fit", str(ratings), *FIT, "--out", str(out), "--quiet"]) == 0
    return out


def _ids_file(path: Path, ids) -> Path:
    path.write_text("# ids\n" + "".join(f"{v}\n" for v in ids))
    return path


# ------------------------------------------------------------------ info
def test_info_reports_the_model(capsys, model_path):
    model = ALS.load(model_path)
    code, out, err = _run(capsys, "info", model_path, "--json")
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert report["class"] == "ALS" and report["library_version"] == fastrec.__version__
    assert report["format_version"] == FORMAT_VERSION and report["checksum"].startswith("ok")
    assert (report["users"], report["items"], report["factors"]) == (30, 24, 4)
    assert report["interactions"] == model.user_items_.nnz == 150
    assert report["raw_user_ids"] == report["raw_item_ids"] == "text"
    assert report["dtype"] == "float32" and report["item_bias"] is False
    assert report["parameters"]["factors"] == 4 and report["parameters"]["iterations"] == 6
    assert report["parameters"]["alpha"] == model.alpha

    code, out, err = _run(capsys, "info", model_path)
    assert (code, err) == (0, "")
    lines = dict(line.split(":", 1) for line in out.splitlines() if not line.startswith("  ")
                 and not line.endswith(":"))
    assert lines["class"].strip() == "ALS" and lines["users"].strip() == "30"
    assert lines["interactions"].strip() == "150" and lines["checksum"].strip().startswith("ok")
    assert "  factors:" in out and "parameters:" in out


def test_info_bpr_and_model_without_raw_ids(capsys, tmp_path, ratings):
    path = tmp_path / "w.npz"
    assert cli.main(["fit", str(ratings), "--user-col", "user", "--item-col", "item", "--model", "warp",
                     "--factors", "3", "--iterations", "2", "--out", str(path), "--quiet"]) == 0
    report = json.loads(_run(capsys, "info", path, "--json")[1])
    assert report["class"] == "BPR" and report["parameters"]["loss"] == "warp"
    assert report["item_bias"] is True and report["factors"] == 3

    X = sp.random(12, 8, density=0.4, format="csr", random_state=np.random.default_rng(1))
    X.data[:] = 1
    ALS(factors=3, iterations=2).fit(X).save(tmp_path / "plain.npz")
    report = json.loads(_run(capsys, "info", tmp_path / "plain.npz", "--json")[1])
    assert report["raw_user_ids"] == "none (ids are indices 0..11)"
    assert report["raw_item_ids"] == "none (ids are indices 0..7)"


def test_info_checksum_mismatch(capsys, tmp_path, model_path):
    with np.load(model_path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["user_factors"] = arrays["user_factors"] + np.float32(1)  # checksum left as it was
    bad = tmp_path / "tampered.npz"
    np.savez(bad, **arrays)
    code, out, err = _run(capsys, "info", bad)
    _one_error_line(code, err, "checksum does not match")
    assert "MISMATCH" in out and "ALS" in out and fastrec.__version__ in out
    code, out, err = _run(capsys, "info", tmp_path / "absent.npz")
    _one_error_line(code, err, "absent.npz")
    notes = tmp_path / "notes.npz"
    notes.write_text("not a model")
    code, out, err = _run(capsys, "info", notes)
    _one_error_line(code, err, "not a readable fastrec model file")


# ------------------------------------------------------------ recommend
def _raw_history(model, items) -> sp.csr_matrix:
    idx = model.item_map_.to_index(np.array(items))
    return sp.csr_matrix((np.ones(len(items), dtype=np.float32), (np.zeros(len(items), dtype=int), idx)),
                         shape=(1, model.n_items_))


def test_recommend_history_folds_in_a_new_user(capsys, tmp_path, model_path):
    model = ALS.load(model_path)
    history = _ids_file(tmp_path / "h.txt", ["i00", "i03", "i07"])
    code, out, err = _run(capsys, "recommend", model_path, "--history", history, "--n", "4",
                          "--format", "jsonl")
    assert (code, err) == (0, "")
    record = json.loads(out)
    ids, scores = model.recommend(None, X=_raw_history(model, ["i00", "i03", "i07"]), n=4, raw_ids=True)
    assert record["user"] is None and record["items"] == ids[0].tolist()
    np.testing.assert_allclose(record["scores"], scores[0], rtol=1e-5)
    assert not {"i00", "i03", "i07"} & set(record["items"])  # the history is excluded
    assert all(item < "i12" for item in record["items"])  # and its taste group learnt

    code, out, _ = _run(capsys, "recommend", model_path, "--history", history, "--n", "2")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["user", "rank", "item", "score"]
    assert [line.split()[:3] for line in lines[1:]] == [["-", "1", ids[0][0]], ["-", "2", ids[0][1]]]


def test_recommend_history_with_bpr(capsys, tmp_path, ratings):
    path = tmp_path / "b.npz"
    assert cli.main(["fit", str(ratings), "--user-col", "user", "--item-col", "item", "--model", "bpr",
                     "--factors", "4", "--iterations", "3", "--out", str(path), "--quiet"]) == 0
    model = BPR.load(path)
    history = _ids_file(tmp_path / "h.txt", ["i13", "i13", "i20"])  # repeats add up
    code, out, _ = _run(capsys, "recommend", path, "--history", history, "--n", "3", "--format", "jsonl")
    X = _raw_history(model, ["i13", "i13", "i20"])
    assert X[0, model.item_map_.to_index("i13")] == 2
    ids, _ = model.recommend(None, X=X, n=3, raw_ids=True)
    assert code == 0 and json.loads(out)["items"] == ids[0].tolist()


def test_recommend_candidates_and_exclude(capsys, tmp_path, model_path):
    model = ALS.load(model_path)
    candidates = ["i01", "i02", "i05", "i08", "i10", "i20"]
    cand_file = _ids_file(tmp_path / "c.txt", candidates)
    excl_file = _ids_file(tmp_path / "e.txt", ["i02", "i20"])
    code, out, err = _run(capsys, "recommend", model_path, "--user", "u00", "--candidates", cand_file,
                          "--exclude", excl_file, "--format", "jsonl")
    assert (code, err) == (0, "")
    ids, scores = model.recommend("u00", n=10, candidates=candidates, exclude=["i02", "i20"], raw_ids=True)
    record = json.loads(out)
    assert record["items"] == ids.tolist() and ids.size > 0
    assert set(record["items"]) <= set(candidates) - {"i02", "i20"}
    np.testing.assert_allclose(record["scores"], scores, rtol=1e-5)

    users = _ids_file(tmp_path / "u.txt", ["u01", "u04"])
    code, out, _ = _run(capsys, "recommend", model_path, "--users-file", users, "--candidates", cand_file,
                        "--n", "2")
    rows = list(csv.DictReader(io.StringIO(out)))
    batch, _ = model.recommend(["u01", "u04"], n=2, candidates=candidates, raw_ids=True)
    assert code == 0
    assert [r["item"] for r in rows if r["user"] == "u01"] == batch[0].tolist()
    assert [r["item"] for r in rows if r["user"] == "u04"] == batch[1].tolist()

    history = _ids_file(tmp_path / "h.txt", ["i00"])
    code, out, _ = _run(capsys, "recommend", model_path, "--history", history, "--exclude", excl_file,
                        "--candidates", cand_file, "--format", "jsonl")
    ids, _ = model.recommend(None, X=_raw_history(model, ["i00"]), n=10, candidates=candidates,
                             exclude=["i02", "i20"], raw_ids=True)
    assert code == 0 and json.loads(out)["items"] == ids[0].tolist()


def test_recommend_unknown_ids_in_files(capsys, tmp_path, model_path):
    unknown = _ids_file(tmp_path / "c.txt", ["i05", "nope"])
    only_unknown = _ids_file(tmp_path / "n.txt", ["nope"])
    for option in ("--candidates", "--exclude"):
        code, _, err = _run(capsys, "recommend", model_path, "--user", "u00", option, unknown)
        _one_error_line(code, err, "'nope'")
    code, _, err = _run(capsys, "recommend", model_path, "--history", unknown)
    _one_error_line(code, err, "unknown history item id(s): 'nope'")
    code, out, _ = _run(capsys, "recommend", model_path, "--user", "u01", "--candidates", unknown,
                        "--skip-unknown", "--format", "jsonl")
    assert code == 0 and json.loads(out)["items"] == ["i05"]  # u01 (odd) never saw i05
    code, _, err = _run(capsys, "recommend", model_path, "--history", only_unknown, "--skip-unknown")
    _one_error_line(code, err, "names no item the model knows")


def test_recommend_history_on_a_model_without_raw_ids(capsys, tmp_path):
    X = sp.random(12, 8, density=0.4, format="csr", random_state=np.random.default_rng(1))
    X.data[:] = 1
    model = ALS(factors=3, iterations=4, random_state=0).fit(X)
    model.save(tmp_path / "plain.npz")
    history = _ids_file(tmp_path / "h.txt", [1, 6])
    code, out, _ = _run(capsys, "recommend", tmp_path / "plain.npz", "--history", history, "--n", "3",
                        "--format", "jsonl")
    row = sp.csr_matrix((np.ones(2, dtype=np.float32), ([0, 0], [1, 6])), shape=(1, 8))
    ids, _ = model.recommend(None, X=row, n=3)
    assert code == 0 and json.loads(out)["items"] == ids[0].tolist()
    bad = _ids_file(tmp_path / "b.txt", [8])
    code, _, err = _run(capsys, "recommend", tmp_path / "plain.npz", "--history", bad)
    _one_error_line(code, err, "ids are indices 0..7")


# ------------------------------------------------------------ option checks
def test_threshold_needs_binary_weighting(capsys, tmp_path, ratings):
    for command in (["fit", ratings, *FIT, "--out", tmp_path / "x.npz"], ["evaluate", ratings, *FIT]):
        for weighting in ([], ["--weighting", "bm25"]):
            code, _, err = _run(capsys, *command, *weighting, "--threshold", "3")
            chosen = weighting[1] if weighting else "raw"
            _one_error_line(code, err, f"--threshold does not apply to --weighting {chosen} "
                                       "(it is for --weighting binary)")
    assert not (tmp_path / "x.npz").exists()
    code, _, err = _run(capsys, "fit", ratings, *FIT, "--model", "bpr", "--alpha", "2", "--out", tmp_path / "x")
    _one_error_line(code, err, "--alpha does not apply to --model bpr (it is for --model als)")


def test_weighting_that_drops_everything_is_one_line(capsys, tmp_path, ratings):
    code, _, err = _run(capsys, "fit", ratings, *FIT, "--weighting", "binary", "--threshold", "6",
                        "--out", tmp_path / "x.npz")
    _one_error_line(code, err, "--weighting binary --threshold 6 kept none of the 150 interactions")
    assert "holds no interactions" in err and not (tmp_path / "x.npz").exists()
    code, _, err = _run(capsys, "evaluate", ratings, *FIT, "--weighting", "binary", "--threshold", "6")
    _one_error_line(code, err, "kept none of the")


# ------------------------------------------------------------ exact ids, CSV values
def test_uint64_ids_through_the_cli(capsys, tmp_path, monkeypatch):
    for _ in _both_readers(monkeypatch):
        _check_uint64_ids(capsys, tmp_path)


def _check_uint64_ids(capsys, tmp_path):
    data = tmp_path / "big.csv"
    data.write_text(f"user_id,item_id\n{BIG},1\n5,2\n{BIG},2\n5,3\n7,3\n7,1\n")
    path = tmp_path / "big.npz"
    code, _, err = _run(capsys, "fit", data, "--factors", "2", "--iterations", "2", "--out", path, "--quiet")
    assert (code, err) == (0, "")
    model = ALS.load(path)
    assert sorted(model.user_map_.labels.tolist()) == [BIG, "5", "7"]  # not -1: kept exactly, as text
    assert model.item_map_.labels.tolist() == [1, 2, 3]
    code, out, _ = _run(capsys, "recommend", path, "--user", BIG, "--format", "jsonl")
    assert code == 0 and json.loads(out) == {"user": BIG, "items": [3], "scores": json.loads(out)["scores"]}
    code, _, err = _run(capsys, "recommend", path, "--user", "-1")
    _one_error_line(code, err, "unknown user id(s): '-1'")


@pytest.mark.parametrize("value, message", [
    ("nan", "column 'rating', row 2: 'nan' is not a number"),
    ("1e40", "column 'rating', row 2: 1e+40 is too large for a float32 weight"),
    ("", "column 'rating', row 2: missing value"),
])
def test_bad_weights_name_column_and_row(capsys, tmp_path, monkeypatch, value, message):
    data = tmp_path / "w.csv"
    data.write_text(f"user,item,rating\nu1,i1,4\nu2,i1,{value}\n")
    for _ in _both_readers(monkeypatch):
        code, _, err = _run(capsys, "fit", data, *FIT, "--out", tmp_path / "x.npz")
        _one_error_line(code, err, message)


def test_latin1_and_bom(capsys, tmp_path, monkeypatch):
    for _ in _both_readers(monkeypatch):
        _check_latin1_and_bom(capsys, tmp_path)


def _check_latin1_and_bom(capsys, tmp_path):
    data = tmp_path / "latin1.csv"
    data.write_bytes("user,item\nJosé,Café\nZoë,Café\nZoë,Thé\n".encode("latin-1"))
    path = tmp_path / "l.npz"
    for extra in ([], ["--encoding", "latin-1"]):
        code, _, err = _run(capsys, "fit", data, "--user-col", "user", "--item-col", "item", "--factors", "2",
                            "--iterations", "2", *extra, "--out", path, "--quiet")
        assert (code, err) == (0, "")
        model = ALS.load(path)
        assert sorted(model.user_map_.labels.tolist()) == ["José", "Zoë"]
        assert sorted(model.item_map_.labels.tolist()) == ["Café", "Thé"]
    code, out, _ = _run(capsys, "recommend", path, "--user", "José", "--format", "jsonl")
    assert code == 0 and json.loads(out)["items"] == ["Thé"]
    code, _, err = _run(capsys, "fit", data, "--user-col", "user", "--item-col", "item",
                        "--encoding", "utf-8", "--out", path)
    _one_error_line(code, err, "is not valid utf-8 text")

    bom = tmp_path / "bom.csv"
    bom.write_bytes("user,item\nü,1\nv,2\n".encode("utf-8-sig"))
    code, _, err = _run(capsys, "fit", bom, "--user-col", "user", "--item-col", "item", "--factors", "2",
                        "--iterations", "2", "--out", path, "--quiet")
    assert (code, err) == (0, "")
    assert sorted(ALS.load(path).user_map_.labels.tolist()) == ["v", "ü"]


# ------------------------------------------------------------ progress
def test_progress_shown_by_default_and_hidden_by_quiet(capsys, tmp_path, ratings):
    code, out, err = _run(capsys, "fit", ratings, *FIT, "--out", tmp_path / "m.npz")
    assert code == 0 and "6/6" in err and "loss=" in err and "saved to" in out
    code, out, err = _run(capsys, "fit", ratings, *FIT, "--out", tmp_path / "m.npz", "--quiet")
    assert (code, out, err) == (0, "", "")
    code, out, err = _run(capsys, "evaluate", ratings, *FIT)
    assert code == 0 and "6/6" in err and "ndcg@10" in out
    code, out, err = _run(capsys, "evaluate", ratings, *FIT, "--quiet")
    assert code == 0 and err == ""
