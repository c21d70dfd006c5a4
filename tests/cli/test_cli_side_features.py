"""``fastrec fit --user-features/--item-features`` and the demo's cold-start section."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import fastrec
from fastrec.cli import commands as cli

GENRES = np.array(["Action", "Comedy", "Drama"])


def _files(tmp_path: Path) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(0)
    group_u, group_i = rng.integers(0, 3, 150), np.arange(45) % 3
    ratings = ["user_id,item_id"] + [f"u{u},m{i}" for u in range(150) for i in range(45)
                                     if group_i[i] == group_u[u] and rng.random() < 0.3 and i != 5]
    users = ["user_id,group,age"] + [f"u{u},{GENRES[group_u[u]]},{15 + u % 50}" for u in range(150)]
    items = ["item_id,genres"] + [f"m{i},{GENRES[group_i[i]]}|Film" for i in range(45)] + ["m999,Comedy|Film"]
    paths = []
    for name, lines in (("r.csv", ratings), ("users.csv", users), ("items.csv", items)):
        (tmp_path / name).write_text("\n".join(lines) + "\n")
        paths.append(tmp_path / name)
    return tuple(paths)


def _fitted(tmp_path: Path, capsys) -> Path:
    ratings, users, items = _files(tmp_path)
    out = tmp_path / "m.npz"
    code = cli.main(["fit", str(ratings), "--model", "warp", "--user-features", str(users), "--item-features",
                     str(items), "--feature-unknown", "append", "--factors", "8", "--iterations", "5",
                     "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    return out


def test_fit_with_feature_files(tmp_path, capsys):
    model = fastrec.load(_fitted(tmp_path, capsys))
    assert model.n_items_ == 46 and "m999" in set(model.item_map_.labels)  # m5 and m999 appended
    names = set(model.user_features_.side_names)
    assert {"group=Action", "group=Drama"} <= names and any(n.startswith("age=") for n in names)  # age bucketed
    assert {"genres=Film", "genres=Comedy"} <= set(model.item_features_.side_names)
    new_user = model.user_features_.transform({"group": ["Comedy"], "age": [30]})
    ids, _ = model.recommend(users=None, user_features=new_user, n=5)
    assert ids.shape == (1, 5)


def test_unknown_feature_ids_are_refused_by_default(tmp_path, capsys):
    ratings, _, items = _files(tmp_path)
    code = cli.main(["fit", str(ratings), "--model", "warp", "--item-features", str(items), "--iterations", "2",
                     "--out", str(tmp_path / "m.npz")])
    assert code != 0 and "item_features: 2 id(s) have features but no interactions" in capsys.readouterr().err


def test_demo_shows_cold_start(capsys):
    code = cli.main(["demo", "--users", "1", "--titles", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "A brand-new viewer who says she likes Horror and Thriller" in out
    assert "A New Horror Release" in out and "viewers who like horror" in out


def test_recommend_new_users_from_a_feature_file(tmp_path, capsys):
    path = _fitted(tmp_path, capsys)
    model = fastrec.load(path)
    new = tmp_path / "new.csv"
    new.write_text("user_id,age,group\nnew1,30,Comedy\nnew2,61,Drama\n")
    code = cli.main(["recommend", str(path), "--user-features", str(new), "--n", "3"])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    lines = out.strip().splitlines()
    assert lines[0] == "user,rank,item,score" and len(lines) == 7
    for label, group in (("new1", "Comedy"), ("new2", "Drama")):
        rows = model.user_features_.transform({"group": [group], "age": [30 if group == "Comedy" else 61]})
        expected, _ = model.recommend(None, user_features=rows, n=3, raw_ids=True)
        got = [line.split(",")[2] for line in lines[1:] if line.startswith(label + ",")]
        assert got == list(expected[0])
    # no id column: rows are numbered; one row prints a table
    single = tmp_path / "one.csv"
    single.write_text("group,age\nAction,25\n")
    assert cli.main(["recommend", str(path), "--user-features", str(single), "--n", "2"]) == 0
    assert "item" in capsys.readouterr().out


def test_recommend_user_features_errors_name_the_option(tmp_path, capsys):
    path = _fitted(tmp_path, capsys)
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,city\nx,Paris\n")
    assert cli.main(["recommend", str(path), "--user-features", str(bad)]) != 0
    err = capsys.readouterr().err
    assert f"--user-features {bad}: no column(s) group, age" in err
    ratings, _, _ = _files(tmp_path)
    plain = tmp_path / "plain.npz"
    assert cli.main(["fit", str(ratings), "--model", "warp", "--iterations", "2", "--out", str(plain),
                     "--quiet"]) == 0
    good = tmp_path / "good.csv"
    good.write_text("group,age\nAction,25\n")
    assert cli.main(["recommend", str(plain), "--user-features", str(good)]) != 0
    assert "--user-features: " in (err := capsys.readouterr().err) and "fitted without user features" in err


def test_info_shows_the_feature_names_and_counts(tmp_path, capsys):
    import json
    path = _fitted(tmp_path, capsys)
    assert cli.main(["info", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    model = fastrec.load(path)
    assert report["user_features"]["features"] == len(model.user_features_.side_names)
    assert report["item_features"]["features"] == len(model.item_features_.side_names) == 4
    assert "genres=Comedy" in report["item_features"]["names"]
    assert cli.main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "item_features:" in out and "  names:" in out and "group=Action" in out
