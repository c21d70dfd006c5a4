"""The HTML report is one self-contained page, from the library and from ``fastrec evaluate --rerank``."""
from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.sparse as sp

import fastrec
from fastrec.cli import main
from fastrec.evaluation import per_user_split

pytest.importorskip("matplotlib")


def _self_contained(text: str) -> None:
    assert not re.search(r"https?://", text)
    images = re.findall(r"<img[^>]*src=['\"]data:image/png;base64,([A-Za-z0-9+/=]+)['\"]", text)
    assert len(images) == 2 and all(len(b) > 1000 for b in images)
    assert not re.search(r"<(script|link)\b", text)


@pytest.fixture(scope="module")
def report_page(tmp_path_factory):
    from fastrec.evaluation.report import rerank_report
    from fastrec.rerank import MMR
    X = sp.random(80, 50, density=0.15, format="csr", random_state=0, dtype=np.float32)
    train, test = per_user_split(X, 0.25, random_state=0)
    model = fastrec.ALS(factors=4, iterations=2, random_state=0).fit(train)
    path = tmp_path_factory.mktemp("report") / "r.html"
    metrics = rerank_report(path, model, train, test, MMR(0.5), k=5, values=[0.2, 0.6])
    return path, metrics


def test_report_from_the_library(report_page):
    path, metrics = report_page
    assert metrics["model"]["diversity"] < metrics["re-ranked"]["diversity"]
    _self_contained(path.read_text())


def test_report_renders_in_headless_chromium(report_page, tmp_path):
    """The page as a browser shows it, offline: the plots' blue markers are on the screenshot."""
    import shutil
    import subprocess
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)),
                   None)
    if browser is None:
        pytest.skip("no headless Chromium (apt-get install chromium)")
    shot = tmp_path / "page.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1000,1800",
                    f"--screenshot={shot}", path_uri(report_page[0])], capture_output=True, timeout=120)
    from matplotlib.image import imread
    pixels = imread(shot)[..., :3]
    blue = (np.abs(pixels - np.array([0x1f, 0x77, 0xb4]) / 255).max(axis=-1) < 0.08).sum()
    assert pixels.shape[0] >= 1000 and blue > 50


def path_uri(path) -> str:
    return path.resolve().as_uri()


def test_cli_evaluate_rerank_report(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = {(int(u), int(i)) for u, i in zip(rng.integers(0, 60, 900), rng.integers(0, 40, 900))}
    (tmp_path / "data.csv").write_text("user_id,item_id\n" + "".join(f"u{u},{i}\n" for u, i in rows))
    genres = ["Drama", "Comedy", "Action", "Horror"]
    (tmp_path / "movies.dat").write_text("".join(f"{i}::Film {i}::{genres[i % 4]}|{genres[(i // 4) % 4]}\n"
                                                 for i in range(40)))
    out = tmp_path / "report.html"
    code = main(["evaluate", str(tmp_path / "data.csv"), "--factors", "4", "--iterations", "2", "--quiet",
                 "--rerank", "calibrated:0.5", "--item-groups", str(tmp_path / "movies.dat"),
                 "--report", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "re-ranked (calibrated:0.5)" in printed and "report written" in printed
    _self_contained(out.read_text())
    assert main(["evaluate", str(tmp_path / "data.csv"), "--report", str(out)]) == 1
    assert "--report needs --rerank" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "data.csv"), "--rerank", "calibrated"]) == 1
    assert "needs item groups" in capsys.readouterr().err


def test_item_genres_aligned_with_the_item_map():
    from fastrec.datasets import item_genres
    inter = fastrec.Interactions.from_arrays([1, 1, 2], [10, 20, 30]).with_item_metadata(
        [30, 10, 20], genres=np.array(["Drama", "Comedy|Drama", ""]))
    matrix, names = item_genres(inter)
    assert names.tolist() == ["Comedy", "Drama"]
    expected = {10: [1, 1], 20: [0, 0], 30: [0, 1]}
    for raw, row in expected.items():
        assert matrix[inter.to_index(raw, "item")].toarray().ravel().tolist() == row
    with pytest.raises(ValueError, match="no item metadata column 'tags'"):
        item_genres(inter, column="tags")
