"""Tests of fastrec.datasets: format parsing on small fixtures, shared data, demo, synthetic."""
from __future__ import annotations

import hashlib
import io
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastrec import Interactions
from fastrec.datasets import (load_demo, load_ml1m_implicit, load_movielens, load_movietweetings,
                              make_movielens20m_like, make_synthetic)
from fastrec.datasets import movielens as movielens_module
from fastrec.datasets.synthetic import _alias_table, _sample_items, allocate_counts

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent")


def entries(inter: Interactions) -> dict:
    users = inter.to_ids(inter.users, kind="user").tolist()
    items = inter.to_ids(inter.items, kind="item").tolist()
    return dict(zip(zip(users, items), inter.weights.tolist()))


def metadata_of(inter: Interactions, item, column: str):
    return inter.item_metadata[column][inter.to_index(item, kind="item")]


# ------------------------------------------------------------- fixtures
def write_100k(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("1\t10\t5\t881250949\n2\t10\t3\t891717742\n1\t20\t1\t878887116\n")
    flags_10 = ["0"] * 19
    flags_10[1] = flags_10[8] = "1"  # Action, Drama
    flags_20 = ["0"] * 19
    flags_20[18] = "1"  # Western
    lines = [f"10|Café Society (1995)|01-Jan-1995||http://x|{'|'.join(flags_10)}",
             f"20|Dead Man (1995)|01-Jan-1995||http://y|{'|'.join(flags_20)}",
             f"30|Never Rated (1990)|01-Jan-1990||http://z|{'|'.join(['0'] * 19)}"]
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return folder


def write_1m(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    (folder / "movies.dat").write_bytes(
        '661::James and the Giant Peach (1996)::Animation|Children\'s|Musical\n'
        '1193::One Flew Over the Cuckoo\'s Nest "Étoile" (1975)::Drama\n'.encode("latin-1"))
    return folder


def write_20m(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,4.5,1112484676\n7,2,0.5,1094785740\n")
    (folder / "movies.csv").write_text(
        'movieId,title,genres\n2,"American President, The (1995)",Comedy|Drama|Romance\n'
        '29,City of Lost Children (1995),(no genres listed)\n', encoding="utf-8")
    return folder


def zip_folder(folder: Path, target: Path, prefix: str) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr(f"{prefix}/", "")
        for file in folder.iterdir():
            archive.write(file, f"{prefix}/{file.name}")
    return target


# -------------------------------------------------------------- movielens
def test_movielens_100k_format(tmp_path, reader):
    inter = load_movielens(write_100k(tmp_path / "ml-100k"))
    assert entries(inter) == {(1, 10): 5.0, (2, 10): 3.0, (1, 20): 1.0}
    assert sorted(inter.timestamps.tolist()) == [878887116.0, 881250949.0, 891717742.0]
    assert metadata_of(inter, 10, "title") == "Café Society (1995)"
    assert metadata_of(inter, 10, "genres") == "Action|Drama"
    assert metadata_of(inter, 20, "genres") == "Western"
    assert inter.shape == (2, 2)  # movie 30 has no rating


def test_movielens_100k_uses_u_genre(tmp_path):
    folder = write_100k(tmp_path / "ml-100k")
    names = [f"G{k}" for k in range(19)]
    (folder / "u.genre").write_text("".join(f"{n}|{k}\n" for k, n in enumerate(names)))
    inter = load_movielens(folder)
    assert metadata_of(inter, 10, "genres") == "G1|G8"


def test_movielens_dat_format(tmp_path, reader):
    inter = load_movielens(write_1m(tmp_path / "ml-1m"))
    assert entries(inter) == {(1, 1193): 5.0, (1, 661): 3.0, (2, 1193): 4.0}
    assert metadata_of(inter, 1193, "title") == 'One Flew Over the Cuckoo\'s Nest "Étoile" (1975)'
    assert metadata_of(inter, 661, "genres") == "Animation|Children's|Musical"


def test_movielens_csv_format(tmp_path, reader):
    inter = load_movielens(write_20m(tmp_path / "ml-20m"))
    assert entries(inter) == {(1, 2): 3.5, (1, 29): 4.5, (7, 2): 0.5}
    assert metadata_of(inter, 2, "title") == "American President, The (1995)"
    assert metadata_of(inter, 29, "genres") == "(no genres listed)"


@pytest.mark.parametrize("writer", [write_100k, write_1m, write_20m])
def test_movielens_from_zip_and_nested_folder(tmp_path, writer):
    folder = writer(tmp_path / "src" / "ml-x")
    direct = load_movielens(folder)
    nested = load_movielens(tmp_path / "src")  # files one folder down, as after unzipping
    zipped = load_movielens(zip_folder(folder, tmp_path / "ml-x.zip", "ml-x"))
    for other in (nested, zipped):
        assert entries(other) == entries(direct)
        assert np.array_equal(other.item_metadata["title"], direct.item_metadata["title"])


def test_movielens_min_rating(tmp_path):
    inter = load_movielens(write_20m(tmp_path / "ml-20m"), min_rating=3.5)
    assert entries(inter) == {(1, 2): 3.5, (1, 29): 4.5}
    assert inter.shape == (1, 2)  # user 7 only had a low rating
    with pytest.raises(ValueError, match="min_rating"):
        load_movielens(tmp_path / "ml-20m", min_rating=6)


def test_movielens_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_movielens(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="u.data"):
        load_movielens(tmp_path / "empty")
    folder = write_1m(tmp_path / "ml-1m")
    (folder / "movies.dat").unlink()
    with pytest.raises(FileNotFoundError, match="movies.dat"):
        load_movielens(folder)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="directory or a .zip"):
        load_movielens(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="variant"):
        load_movielens(variant="30m")
    bad = write_1m(tmp_path / "bad")
    (bad / "ratings.dat").write_text("1::1193::5::978300760\n1::661\n")
    with pytest.raises((ValueError, KeyError)):
        load_movielens(bad)


# ---------------------------------------------------------- downloading
@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("FASTREC_DATA", str(folder))
    return folder


def test_download_without_network_is_a_clear_error(cache, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_movielens(variant="1m")
    with pytest.raises(ConnectionError, match="could not download https://files.grouplens.org/.*ml-1m.zip"):
        load_movielens(variant="1m", download=True)
    assert not cache.exists() or not any(cache.iterdir())  # no partial file left


class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_download_verifies_and_caches(tmp_path, cache, monkeypatch):
    archive = zip_folder(write_100k(tmp_path / "ml-100k"), tmp_path / "ml-100k.zip", "ml-100k").read_bytes()
    calls = []

    def serve(url, timeout=None):
        calls.append(url)
        return FakeResponse(archive)

    monkeypatch.setattr(urllib.request, "urlopen", serve)
    monkeypatch.setitem(movielens_module.MOVIELENS_VARIANTS, "100k",
                        ("ml-100k.zip", hashlib.md5(b"something else").hexdigest()))
    with pytest.raises(ValueError, match="MD5"):
        load_movielens(download=True)
    assert not (cache / "ml-100k.zip").exists()

    monkeypatch.setitem(movielens_module.MOVIELENS_VARIANTS, "100k",
                        ("ml-100k.zip", hashlib.md5(archive).hexdigest()))
    inter = load_movielens(download=True)
    assert entries(inter)[(1, 10)] == 5.0
    assert calls == ["https://files.grouplens.org/datasets/movielens/ml-100k.zip"] * 2
    sidecar = (cache / "ml-100k.zip.sha256").read_text().split()[0]
    assert sidecar == hashlib.sha256(archive).hexdigest()
    # later loads use the cache without the network
    monkeypatch.setattr(urllib.request, "urlopen", None)
    assert entries(load_movielens()) == entries(inter)
    (cache / "ml-100k.zip").write_bytes(archive[:-10])
    with pytest.raises(ValueError, match="SHA256"):
        load_movielens()


# ------------------------------------------------------- ML-1M implicit
def write_implicit(folder: Path) -> Path:
    write_1m(folder)
    (folder / "ratings.dat").unlink()
    (folder / "interactions.tsv").write_text(
        "user_id\tmovie_id\tsplit\n1\t1193\ttrain\n1\t661\ttest\n2\t1193\ttrain\n3\t661\ttrain\n")
    return folder


def test_ml1m_implicit_split(tmp_path, reader):
    folder = write_implicit(tmp_path / "ml-1m-implicit")
    train, test = load_ml1m_implicit(folder)
    assert train.user_map is test.user_map and train.item_map is test.item_map
    assert train.shape == test.shape == (3, 2)
    assert entries(train) == {(1, 1193): 1.0, (2, 1193): 1.0, (3, 661): 1.0}
    assert entries(test) == {(1, 661): 1.0}
    assert metadata_of(test, 661, "title") == "James and the Giant Peach (1996)"
    everything = load_ml1m_implicit(folder / "interactions.tsv", split=False)
    assert isinstance(everything, Interactions) and everything.nnz == 4
    assert everything.timestamps is None


def test_ml1m_implicit_bad_split_column(tmp_path):
    folder = write_implicit(tmp_path / "x")
    (folder / "interactions.tsv").write_text("user_id\tmovie_id\tsplit\n1\t1\tvalid\n")
    with pytest.raises(ValueError, match="valid"):
        load_ml1m_implicit(folder)
    (folder / "interactions.tsv").write_text("user\tmovie_id\n1\t1\n")
    with pytest.raises(KeyError, match="user_id"):
        load_ml1m_implicit(folder)


# -------------------------------------------------------- MovieTweetings
def test_movietweetings_format(tmp_path, reader):
    folder = tmp_path / "mt"
    folder.mkdir()
    (folder / "ratings.dat").write_text("1::0133093::9::1365029107\n2::0004936::0::1366576639\n")
    (folder / "movies.dat").write_text(
        "0004936::The Bank (1915)::Comedy|Short\n0133093::The Matrix (1999)::Action|Sci-Fi\n"
        "0002844::Fantômas - À l'ombre de la guillotine (1913)::\n", encoding="utf-8")
    inter = load_movietweetings(folder)
    assert entries(inter) == {(1, "0133093"): 9.0, (2, "0004936"): 0.0}
    assert metadata_of(inter, "0133093", "title") == "The Matrix (1999)"
    assert metadata_of(inter, "0004936", "genres") == "Comedy|Short"


def test_demo_is_embedded_fast_and_not_shared():
    start = time.perf_counter()
    demo = load_demo()
    first = time.perf_counter() - start
    start = time.perf_counter()
    again = load_demo()
    second = time.perf_counter() - start
    assert first < 3.0 and second < 0.05, (first, second)
    assert demo.nnz == 100_000 and demo.shape == (16_554, 10_506)
    assert demo.user_map.labels[:3].tolist() == [1, 2, 3]
    assert demo.item_map.labels.dtype.kind == "U" and len(demo.item_map.labels[0]) == 7
    assert demo.weights.min() == 0 and demo.weights.max() == 10
    assert demo.timestamps is not None
    assert metadata_of(demo, "0133093", "title").startswith("The Matrix")
    demo.item_metadata["extra"] = np.zeros(demo.shape[1])
    assert "extra" not in again.item_metadata and "extra" not in load_demo().item_metadata
    with pytest.raises(ValueError):
        again.weights[0] = 1
    package_data = Path(__import__("fastrec").datasets.__file__).parent / "data"
    assert "Simon Dooms" in (package_data / "LICENSE").read_text()


# ---------------------------------------------------------- shared data
@needs_shared
def test_shared_movielens_100k():
    inter = load_movielens(SHARED / "ml-100k")
    assert inter.nnz == 100_000 and inter.shape == (943, 1_682)
    assert metadata_of(inter, 1, "title") == "Toy Story (1995)"
    assert metadata_of(inter, 1, "genres") == "Animation|Children's|Comedy"
    assert set(np.unique(inter.weights).tolist()) == {1, 2, 3, 4, 5}


@needs_shared
def test_shared_ml1m_implicit():
    train, test = load_ml1m_implicit(SHARED / "ml-1m-implicit")
    assert train.nnz + test.nnz == 1_000_209
    assert train.shape == test.shape == (6_040, 3_706)
    assert train.nnz == 800_167
    assert (train.to_csr().multiply(test.to_csr())).nnz == 0
    assert metadata_of(train, 1, "title") == "Toy Story (1995)"


@needs_shared
def test_shared_movietweetings_matches_demo():
    inter = load_movietweetings(SHARED / "movietweetings-100k")
    assert inter.nnz == 100_000 and inter.shape == (16_554, 10_506)
    demo = load_demo()
    assert inter.user_map == demo.user_map and inter.item_map == demo.item_map
    assert (inter.to_csr() != demo.to_csr()).nnz == 0
    np.testing.assert_array_equal(inter.timestamps, demo.timestamps)


# ------------------------------------------------------------ synthetic
def test_allocate_counts_is_exact_and_bounded():
    shares = np.array([0.7, 0.2, 0.05, 0.05])
    counts = allocate_counts(100, shares, low=1, high=40)
    assert counts.sum() == 100 and counts.min() >= 1 and counts.max() <= 40
    assert counts[0] == 40 and counts[1] > counts[2]
    assert allocate_counts(7, np.full(3, 1 / 3), 0, 5).sum() == 7
    with pytest.raises(ValueError, match="cannot split"):
        allocate_counts(100, shares, low=1, high=10)


@settings(max_examples=80, deadline=None)
@given(shares=st.lists(st.floats(0.001, 1.0), min_size=1, max_size=25),
       bounds=st.tuples(st.integers(0, 5), st.integers(0, 30)), fill=st.floats(0, 1))
def test_property_allocate_counts(shares, bounds, fill):
    low, high = min(bounds), max(bounds)
    shares = np.array(shares) / sum(shares)
    total = int(round(low * shares.size + fill * (high - low) * shares.size))
    counts = allocate_counts(total, shares, low, high)
    assert counts.sum() == total and counts.min() >= low and counts.max() <= high


def test_synthetic_shape_count_uniqueness_and_seed():
    inter = make_synthetic(300, 120, 5_000, random_state=7)
    assert isinstance(inter, Interactions) and inter.shape == (300, 120) and inter.nnz == 5_000
    X = inter.to_csr()
    assert X.nnz == 5_000 and X.max() == 1.0 and np.diff(X.indptr).min() >= 1
    same = make_synthetic(300, 120, 5_000, random_state=7)
    assert np.array_equal(same.users, inter.users) and np.array_equal(same.items, inter.items)
    other = make_synthetic(300, 120, 5_000, random_state=8)
    assert not np.array_equal(other.items, inter.items)
    csr = make_synthetic(300, 120, 5_000, random_state=7, as_csr=True, dtype=np.float64)
    assert csr.dtype == np.float64 and (csr != X).nnz == 0


def test_synthetic_power_laws():
    X = make_synthetic(2_000, 1_000, 60_000, random_state=0, as_csr=True)
    popularity = np.sort(np.bincount(X.indices, minlength=1_000))[::-1]
    assert popularity[:100].sum() > 0.3 * X.nnz  # top 10% of items: far above 10%
    activity = np.sort(np.diff(X.indptr))[::-1]
    assert activity[:200].sum() > 0.25 * X.nnz  # top 10% of users likewise
    flat = make_synthetic(2_000, 1_000, 60_000, user_alpha=0, item_alpha=0, random_state=0, as_csr=True)
    assert np.sort(np.bincount(flat.indices, minlength=1_000))[::-1][:100].sum() < 0.15 * flat.nnz


def test_synthetic_dense_and_edge_cases():
    full = make_synthetic(5, 4, 20, random_state=1).to_csr()
    assert full.nnz == 20 and np.all(full.toarray() == 1)
    sparse = make_synthetic(10, 5, 3, random_state=1)
    assert sparse.nnz == 3 and sparse.shape == (10, 5)
    assert make_synthetic(3, 3, 0, random_state=1).nnz == 0
    with pytest.raises(ValueError, match="exceeds"):
        make_synthetic(2, 2, 5)
    with pytest.raises(ValueError, match="temperature"):
        make_synthetic(2, 2, 2, temperature=0)


@pytest.mark.parametrize("weights", [[1.0], [0.5, 0.5], [0.7, 0.2, 0.1, 0.0], [1, 2, 3, 4, 100.0]])
def test_alias_table_encodes_the_distribution(weights):
    weights = np.array(weights)
    prob, alias = _alias_table(weights)
    n = weights.size
    implied = prob / n
    for column in range(n):
        if alias[column] != column:
            implied[alias[column]] += (1 - prob[column]) / n
    np.testing.assert_allclose(implied, weights / weights.sum(), atol=1e-12)


def test_synthetic_taste_steers_the_choice():
    # items 0-49 point along +e, items 50-99 along -e; all users point along +e
    n_users, n_items, k = 200, 100, 10
    user_factors = np.tile([[3.0, 0.0]], (n_users, 1))
    item_factors = np.zeros((n_items, 2))
    item_factors[:50, 0], item_factors[50:, 0] = 1.0, -1.0
    popularity = np.full(n_items, 1.0 / n_items)
    counts = np.full(n_users, k, dtype=np.int64)
    indptr = np.arange(0, (n_users + 1) * k, k, dtype=np.int64)
    seeds = np.arange(n_users, dtype=np.uint64)
    items = _sample_items(counts, indptr, seeds, popularity, user_factors, item_factors, 1.0)
    assert np.mean(items < 50) > 0.9
    rows = items.reshape(n_users, k)
    assert np.all(np.diff(rows, axis=1) > 0)  # sorted and distinct per user


@pytest.mark.slow
def test_movielens20m_like_is_fast():
    start = time.perf_counter()
    X = make_movielens20m_like(random_state=0, as_csr=True)
    elapsed = time.perf_counter() - start
    assert X.shape == (138_493, 26_744) and X.nnz == 10_000_000
    assert elapsed < 45, elapsed
