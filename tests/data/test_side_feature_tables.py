"""``fastrec.Features`` from tables and files, alignment, and the data sets' feature loaders."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from fastrec import Features, Interactions
from fastrec.data.idmap import IdMap

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def _table():
    return {"id": ["a", "b", "c", "a"], "gender": ["F", "M", None, "F"], "genres": ["X|Y", "Y", "", "Z"],
            "age": [17.0, 33.0, np.nan, 17.0]}


def test_from_frame_kinds_and_names():
    f = Features.from_frame(_table(), "id", categorical=["gender"], multi=["genres"], numeric={"age": [18, 30]},
                            normalize=False)
    assert list(f.ids.labels) == ["a", "b", "c"]
    assert list(f.side_names) == ["age<18", "age=[18, 30)", "age>=30", "gender=F", "gender=M", "genres=X",
                                  "genres=Y", "genres=Z"]
    dense = f.matrix.toarray()
    # "a" appears twice: its features are merged (each once)
    np.testing.assert_array_equal(dense[0], [1, 0, 0, 1, 0, 1, 1, 1])
    np.testing.assert_array_equal(dense[1], [0, 0, 1, 0, 1, 0, 1, 0])
    np.testing.assert_array_equal(dense[2], 0)  # missing values give no feature


def test_normalisation_and_identity_like_lightfm():
    f = Features.from_frame(_table(), "id", categorical=["gender"], identity=True)
    dense = f.matrix.toarray()
    assert f.names[-3:].tolist() == ["id=a", "id=b", "id=c"]
    np.testing.assert_allclose(dense.sum(axis=1), 1.0)
    np.testing.assert_allclose(dense[0, [0, 2]], [0.5, 0.5])  # gender=F and id=a


def test_quantile_buckets_and_transform():
    rng = np.random.default_rng(0)
    table = {"id": np.arange(100), "year": rng.integers(1950, 2000, 100).astype(float)}
    f = Features.from_frame(table, "id", numeric={"year": 4})
    assert len(f.side_names) == 4
    new = f.transform({"year": [1900.0, 2100.0, np.nan]})
    assert list(new.side_names) == list(f.side_names)
    dense = new.side.toarray()
    assert dense[0, f.side_names.tolist().index(f.side_names[0])] == 1 and dense[1].sum() == 1 and dense[2].sum() == 0
    unseen = Features.from_frame(_table(), "id", categorical=["gender"]).transform({"gender": ["X"]})
    assert unseen.side.nnz == 0  # a value never seen gives no feature


def test_aligned_follows_the_id_map_and_handles_unknown_rows():
    f = Features.from_frame(_table(), "id", categorical=["gender"], normalize=False)
    id_map = IdMap(np.array(["c", "a", "d"]))  # "b" is unknown, "d" has no features
    with pytest.raises(KeyError, match="user_features: 1 id"):
        f.aligned(id_map, 3, "user_features")
    appended = Features.from_frame(_table(), "id", categorical=["gender"], normalize=False, unknown="append")
    matrix, names, n_side, new = appended.aligned(id_map, 3, "user_features")
    assert list(new) == ["b"] and matrix.shape == (4, 2)
    np.testing.assert_array_equal(matrix.toarray(), [[0, 0], [1, 0], [0, 0], [0, 1]])
    dropped = Features.from_frame(_table(), "id", categorical=["gender"], unknown="drop")
    assert dropped.aligned(id_map, 3, "x")[0].shape == (3, 2)


def test_from_csv(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("item,genres,year\n10,Action|Comedy,1995\n11,Drama,2001\n")
    f = Features.from_csv(path, "item", multi=["genres"], numeric={"year": [2000]})
    assert list(f.ids.labels) == [10, 11]
    assert "genres=Comedy" in f.side_names and "year>=2000" in f.side_names


def test_bad_tables_name_the_problem():
    with pytest.raises(KeyError, match="no column"):
        Features.from_frame(_table(), "id", categorical=["city"])
    with pytest.raises(ValueError, match="numeric"):
        Features.from_frame(_table(), "id", numeric={"age": [30, 10]})
    with pytest.raises(ValueError, match="unknown"):
        Features.from_frame(_table(), "id", unknown="keep")
    with pytest.raises(ValueError, match="side contains NaN"):
        Features(sp.csr_matrix([[np.nan]]))


@pytest.mark.skipif(not (SHARED / "ml-1m-implicit" / "users.dat").exists(), reason="ML-1M not available")
def test_ml1m_features_align_with_the_interactions():
    from fastrec.datasets import load_ml1m_implicit
    from fastrec.datasets.features import load_movielens_features
    X = load_ml1m_implicit(SHARED / "ml-1m-implicit", split=False)
    users, items = load_movielens_features(SHARED / "ml-1m-implicit", X)
    assert users.ids == X.user_map and items.ids == X.item_map
    assert {"gender=F", "age=25-34", "occupation=writer"} <= set(users.side_names)
    assert {"genres=Comedy", "decade=1990s"} <= set(items.side_names)
    toy_story = X.item_map.to_index(1)
    names = set(items.side_names[items.side[toy_story].indices])
    assert names == {"genres=Animation", "genres=Children's", "genres=Comedy", "decade=1990s"}
    assert (np.diff(users.side.indptr) == 3).all()  # one gender, age band and occupation each


@pytest.mark.skipif(not (SHARED / "ml-100k" / "u.user").exists(), reason="ML-100K not available")
def test_ml100k_features():
    from fastrec.datasets import load_movielens
    from fastrec.datasets.features import load_movielens_features
    X = load_movielens(SHARED / "ml-100k")
    users, items = load_movielens_features(SHARED / "ml-100k", X)
    assert len(users) == X.shape[0] and len(items) == X.shape[1]
    first = X.user_map.to_index(1)  # 1|24|M|technician
    assert set(users.side_names[users.side[first].indices]) == {"age=18-24", "gender=M", "occupation=technician"}


def test_demo_genres():
    from fastrec.datasets.features import load_demo_features
    data, items = load_demo_features()
    assert items.ids == data.item_map and "genres=Horror" in items.side_names
    assert isinstance(data, Interactions)
