"""Tests of fastrec.Interactions and the weighting functions."""
from __future__ import annotations

import gzip
import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from fastrec import Interactions
from fastrec.models.base import id_maps_of
from fastrec.data.idmap import IdMap
from fastrec.utils.validation import check_interactions
from fastrec.data.weighting import bm25, bm25_values, tfidf

try:
    import pandas as pd
except ImportError:  # pandas is optional: only the DataFrame tests need it
    pd = None
needs_pandas = pytest.mark.skipif(pd is None, reason="pandas is not installed")


def dense_by_ids(inter: Interactions) -> dict:
    """{(raw user, raw item): weight} of every entry."""
    users = inter.to_ids(inter.users, kind="user").tolist()
    items = inter.to_ids(inter.items, kind="item").tolist()
    return dict(zip(zip(users, items), inter.weights.tolist()))


def reference_merge(users, items, weights, timestamps, policy):
    """Plain-Python duplicate merging, the specification of ``duplicates``."""
    groups: dict = {}
    for pos, (u, i, w) in enumerate(zip(users, items, weights)):
        t = timestamps[pos] if timestamps is not None else 0
        groups.setdefault((u, i), []).append((t, pos, w))
    out = {}
    for pair, events in groups.items():
        if policy == "sum":
            out[pair] = sum(w for _, _, w in events)
        elif policy == "max":
            out[pair] = max(w for _, _, w in events)
        else:
            out[pair] = max(events, key=lambda e: (e[0], e[1]))[2]
    return out


# ---------------------------------------------------------------- building
def test_from_arrays_string_ids_round_trip():
    users = np.array(["bob", "amy", "bob", "cat"])
    items = np.array(["x", "y", "z", "x"])
    inter = Interactions.from_arrays(users, items, [1.0, 2.0, 3.0, 4.0])
    assert inter.shape == (3, 3) and inter.nnz == 4 and len(inter) == 4
    assert inter.users.dtype == np.int32 and inter.items.dtype == np.int32
    assert inter.weights.dtype == np.float32
    assert inter.timestamps is None and inter.item_metadata == {}
    assert dense_by_ids(inter) == {("bob", "x"): 1.0, ("amy", "y"): 2.0, ("bob", "z"): 3.0, ("cat", "x"): 4.0}
    idx = inter.to_index(["cat", "amy"], kind="user")
    assert inter.to_ids(idx, kind="user").tolist() == ["cat", "amy"]
    assert inter.to_index("z", kind="item") == inter.item_map.to_index("z")
    with pytest.raises(KeyError, match="nobody"):
        inter.to_index(["nobody"])
    with pytest.raises(ValueError, match="kind"):
        inter.to_index("bob", kind="users")


def test_entries_sorted_and_csr_matches():
    inter = Interactions.from_arrays([3, 1, 2, 1], [7, 9, 7, 7], [1.5, 2.5, 3.5, 4.5])
    key = inter.users.astype(np.int64) * inter.shape[1] + inter.items
    assert np.all(np.diff(key) > 0)
    X = inter.to_csr()
    assert X.dtype == np.float32 and X.has_sorted_indices and X.shape == (3, 2)
    expected = np.zeros((3, 2))
    for (u, i), w in dense_by_ids(inter).items():
        expected[inter.to_index(u), inter.to_index(i, kind="item")] = w
    np.testing.assert_array_equal(X.toarray(), expected)
    assert inter.to_csr(np.float64).dtype == np.float64
    # the CSR is a copy: writing into it leaves the Interactions alone
    X.data[:] = 0
    assert inter.weights.max() == pytest.approx(4.5)


def test_constructor_from_indices_and_identity_maps():
    inter = Interactions([1, 0, 1], [2, 0, 2], [1.0, 2.0, 5.0], shape=(3, 4), duplicates="max")
    assert inter.shape == (3, 4)
    assert inter.users.tolist() == [0, 1] and inter.items.tolist() == [0, 2]
    assert inter.weights.tolist() == [2.0, 5.0]
    assert inter.to_ids([2], kind="user").tolist() == [2]
    with pytest.raises(IndexError, match="items"):
        Interactions([0], [5], shape=(1, 3))
    with pytest.raises(ValueError, match="shape"):
        Interactions([0], [0], user_map=IdMap([10, 11]), shape=(3, 1))
    with pytest.raises(TypeError, match="user_map"):
        Interactions([0], [0], user_map=[0])


def test_from_csr_round_trip():
    X = sp.random(6, 5, density=0.5, format="csr", random_state=0, dtype=np.float32)
    inter = Interactions.from_csr(X)
    assert inter.shape == X.shape
    assert (inter.to_csr() != X).nnz == 0
    with pytest.raises(TypeError, match="scipy.sparse"):
        Interactions.from_csr(X.toarray())


def test_models_accept_interactions():
    inter = Interactions.from_arrays(["a", "b", "b"], [1, 1, 2], [1.0, 2.0, 3.0])
    csr = check_interactions(inter)
    assert (csr != inter.to_csr()).nnz == 0
    user_map, item_map = id_maps_of(inter)
    assert user_map is inter.user_map and item_map is inter.item_map


def test_als_fit_keeps_raw_id_maps():
    import fastrec

    inter = Interactions.from_arrays(["u1", "u1", "u2", "u3", "u3"], ["a", "b", "b", "a", "c"])
    model = fastrec.ALS(factors=2, iterations=1, random_state=0).fit(inter)
    assert model.user_map_ is inter.user_map and model.item_map_ is inter.item_map
    assert model.item_factors_.shape == (3, 2)


# -------------------------------------------------------------- duplicates
@pytest.mark.parametrize("policy,expected", [("sum", 6.0), ("max", 5.0), ("last", 1.0)])
def test_duplicates_without_timestamps(policy, expected):
    inter = Interactions.from_arrays([1, 1, 1, 2], [9, 9, 9, 9], [5.0, 0.0, 1.0, 7.0], duplicates=policy)
    assert inter.nnz == 2
    assert dense_by_ids(inter) == {(1, 9): expected, (2, 9): 7.0}


def test_duplicates_last_uses_timestamps_then_input_order():
    users, items = [1, 1, 1, 1], [9, 9, 9, 9]
    inter = Interactions.from_arrays(users, items, [5.0, 2.0, 3.0, 4.0], [10, 30, 30, 20], duplicates="last")
    assert inter.weights.tolist() == [3.0]  # t=30 twice: the later row wins
    assert inter.timestamps.tolist() == [30.0]
    summed = Interactions.from_arrays(users, items, [5.0, 2.0, 3.0, 4.0], [10, 30, 30, 20])
    assert summed.weights.tolist() == [14.0] and summed.timestamps.tolist() == [30.0]


def test_unweighted_duplicates_become_counts():
    inter = Interactions.from_arrays(["a", "a", "a", "b"], ["x", "x", "y", "x"])
    assert dense_by_ids(inter) == {("a", "x"): 2.0, ("a", "y"): 1.0, ("b", "x"): 1.0}


id_values = st.one_of(st.integers(-3, 6), st.sampled_from(["a", "b", "ü", "10", "x y"]))


@settings(max_examples=60, deadline=None)
@given(
    events=st.lists(st.tuples(id_values, id_values, st.floats(-5, 5, width=32), st.integers(0, 4)),
                    min_size=1, max_size=30),
    strings=st.booleans(), with_time=st.booleans(), policy=st.sampled_from(["sum", "max", "last"]),
)
def test_property_merge_matches_reference(events, strings, with_time, policy):
    users = [str(e[0]) if strings else (e[0] if isinstance(e[0], int) else len(e[0])) for e in events]
    items = [str(e[1]) for e in events]
    weights = [e[2] for e in events]
    times = [e[3] for e in events] if with_time else None
    users_arr = np.array(users)
    before = users_arr.copy()
    inter = Interactions.from_arrays(users_arr, items, weights, times, duplicates=policy)
    np.testing.assert_array_equal(users_arr, before)
    expected = reference_merge(users, items, weights, times, policy)
    got = dense_by_ids(inter)
    assert set(got) == set(expected)
    for pair, w in expected.items():
        assert got[pair] == pytest.approx(w, rel=1e-5, abs=1e-4)
    assert inter.shape == (len(set(users)), len(set(items)))
    X = inter.to_csr()
    assert X.nnz == inter.nnz and X.has_sorted_indices


# --------------------------------------------------------------- id maps
def test_test_set_with_training_maps():
    train = Interactions.from_arrays(["a", "b", "c"], [1, 2, 3])
    test = Interactions.from_arrays(["c", "a"], [1, 3], user_map=train.user_map, item_map=train.item_map)
    assert test.shape == train.shape
    assert dense_by_ids(test) == {("c", 1): 1.0, ("a", 3): 1.0}
    with pytest.raises(KeyError) as err:
        Interactions.from_arrays(["a", "zed", "c"], [1, 2, 99], user_map=train.user_map,
                                 item_map=train.item_map)
    assert "'zed'" in str(err.value) and "99" in str(err.value) and "unknown='drop'" in str(err.value)
    dropped = Interactions.from_arrays(["a", "zed", "c"], [1, 2, 99], user_map=train.user_map,
                                       item_map=train.item_map, unknown="drop")
    assert dropped.n_unknown_dropped == 2 and dense_by_ids(dropped) == {("a", 1): 1.0}
    assert "n_unknown_dropped=2" in repr(dropped)
    with pytest.raises(ValueError, match="unknown"):
        Interactions.from_arrays(["a"], [1], user_map=train.user_map, unknown="mask")


def test_longer_string_ids_are_not_truncated_into_matches():
    train = Interactions.from_arrays(["bob", "amy"], ["x", "y"])
    with pytest.raises(KeyError, match="bobby"):
        train.to_index("bobby")
    test = Interactions.from_arrays(["bobby", "amy"], ["x", "yy"], user_map=train.user_map,
                                    item_map=train.item_map, unknown="drop")
    assert test.n_unknown_dropped == 2 and test.nnz == 0


def test_one_given_map_builds_the_other_after_dropping():
    train = Interactions.from_arrays(["a", "b"], [1, 2])
    test = Interactions.from_arrays(["a", "zed"], [5, 6], user_map=train.user_map, unknown="drop")
    assert test.item_map.labels.tolist() == [5]  # item 6 only came with the unknown user


def test_subset_keeps_maps_and_order():
    inter = Interactions.from_arrays([1, 2, 3, 4], [1, 1, 2, 2], [1, 2, 3, 4], [4, 3, 2, 1])
    by_mask = inter.subset(inter.weights > 2)
    assert by_mask.user_map is inter.user_map and by_mask.item_map is inter.item_map
    assert by_mask.shape == inter.shape and by_mask.weights.tolist() == [3.0, 4.0]
    assert by_mask.timestamps.tolist() == [2.0, 1.0]
    by_index = inter.subset([3, 0, 3])
    assert by_index.weights.tolist() == [1.0, 4.0]
    assert inter.subset(np.zeros(4, dtype=bool)).nnz == 0
    with pytest.raises(ValueError, match="mask"):
        inter.subset([True, False])
    with pytest.raises(IndexError, match="selector"):
        inter.subset([4])


def test_item_metadata_alignment():
    inter = Interactions.from_arrays([1, 1], ["m2", "m1"])
    rich = inter.with_item_metadata(["m1", "m9", "m2"], title=["One", "Nine", "Two"], year=[2001, 1999, 2002])
    assert rich.item_metadata["title"].tolist() == ["One", "Two"]
    assert rich.item_metadata["year"].tolist() == [2001, 2002]
    partial = inter.with_item_metadata(["m2"], title=["Two"], year=[2002])
    assert partial.item_metadata["title"].tolist() == ["", "Two"]
    assert math.isnan(partial.item_metadata["year"][0])
    assert inter.item_metadata == {}  # the original is unchanged
    assert rich.subset([0]).item_metadata["title"].tolist() == ["One", "Two"]
    with pytest.raises(ValueError, match="title"):
        inter.with_item_metadata(["m1"], title=["a", "b"])


def test_arrays_are_read_only_and_inputs_untouched():
    users = np.array([2, 1, 2])
    weights = np.array([1.0, 2.0, 3.0])
    inter = Interactions.from_arrays(users, [1, 1, 1], weights)
    assert users.flags.writeable and weights.flags.writeable
    assert users.tolist() == [2, 1, 2] and weights.tolist() == [1.0, 2.0, 3.0]
    for arr in (inter.users, inter.items, inter.weights):
        with pytest.raises(ValueError):
            arr[0] = 0
    indices = np.array([0, 1])
    Interactions(indices, indices)
    assert indices.flags.writeable


def test_repr_counts():
    inter = Interactions.from_arrays([1, 2], [3, 3], timestamps=[1, 2])
    assert repr(inter) == "Interactions(n_users=2, n_items=1, nnz=2, timestamps)"


# -------------------------------------------------------------- validation
@pytest.mark.parametrize("kwargs,error,match", [
    (dict(users=[1, 2], items=[1]), ValueError, "items has 1 entries but 2"),
    (dict(users=[], items=[]), ValueError, "empty"),
    (dict(users=[1, 2], items=[1, 2], weights=[1.0, np.nan]), ValueError, "weights contains NaN"),
    (dict(users=[1, 2], items=[1, 2], weights=[1.0, np.inf]), ValueError, "weights contains NaN"),
    (dict(users=[1, 2], items=[1, 2], weights=[1.0]), ValueError, "weights has 1 entries"),
    (dict(users=[1, 2], items=[1, 2], weights=["a", "b"]), TypeError, "weights must hold real"),
    (dict(users=[1, 2], items=[1, 2], timestamps=[0, np.nan]), ValueError, "timestamps"),
    (dict(users=np.array([1, None], dtype=object), items=[1, 2]), ValueError, "users contains missing"),
    (dict(users=[1.5, 2.0], items=[1, 2]), ValueError, "users holds float ids"),
    (dict(users=[[1, 2]], items=[1, 2]), ValueError, "users must be 1-D"),
    (dict(users=[1], items=[1], duplicates="mean"), ValueError, "duplicates must be one of"),
])
def test_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        Interactions.from_arrays(**kwargs)


def test_datetime_timestamps_become_seconds():
    times = np.array(["1970-01-01T00:00:10", "1970-01-02"], dtype="datetime64[s]")
    inter = Interactions.from_arrays([1, 2], [1, 1], timestamps=times)
    assert inter.timestamps.tolist() == [10.0, 86400.0]
    with pytest.raises(ValueError, match="NaT"):
        Interactions.from_arrays([1, 2], [1, 1], timestamps=np.array(["NaT", "1970-01-02"], dtype="datetime64[s]"))


# ------------------------------------------------------------ dataframes
@needs_pandas
def test_from_dataframe():
    df = pd.DataFrame({
        "u": ["a", "b", "a"], "i": [10, 20, 10], "r": [1.0, 2.0, 3.0],
        "when": pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-03"]).tz_localize("Europe/Paris"),
    })
    before = df.copy()
    inter = Interactions.from_dataframe(df, user_col="u", item_col="i", weight_col="r",
                                        timestamp_col="when", duplicates="last")
    pd.testing.assert_frame_equal(df, before)
    assert dense_by_ids(inter) == {("a", 10): 3.0, ("b", 20): 2.0}
    paris_midnight = pd.Timestamp("2020-01-03", tz="Europe/Paris").timestamp()
    assert inter.timestamps[inter.to_index("a")] == pytest.approx(paris_midnight)
    with pytest.raises(KeyError, match=r"weight_col='rating'"):
        Interactions.from_dataframe(df, user_col="u", item_col="i", weight_col="rating")
    with pytest.raises(KeyError, match=r"user_col='user_id'.*item_col='item_id'"):
        Interactions.from_dataframe(df)
    with pytest.raises(TypeError, match="DataFrame"):
        Interactions.from_dataframe({"u": [1]}, user_col="u")


@needs_pandas
def test_from_dataframe_missing_and_nullable_values():
    df = pd.DataFrame({"user_id": pd.array([1, 2, None], dtype="Int64"), "item_id": [1, 2, 3]})
    with pytest.raises(ValueError, match="user_id.*missing"):
        Interactions.from_dataframe(df)
    ok = pd.DataFrame({"user_id": pd.array([1, 2], dtype="Int64"), "item_id": pd.Categorical(["x", "y"])})
    inter = Interactions.from_dataframe(ok)
    assert inter.user_map.labels.dtype == np.int64 and inter.to_ids([1], kind="item").tolist() == ["y"]


# ------------------------------------------------------------------- CSV
def test_from_csv(tmp_path, reader):
    path = tmp_path / "events.csv"
    path.write_text('user,item,plays,ts\nu1,"film, the",3,100\nu2,007,1,50\nu1,"film, the",2,200\n')
    inter = Interactions.from_csv(path, user_col="user", item_col="item", weight_col="plays",
                                  timestamp_col="ts")
    assert dense_by_ids(inter) == {("u1", "film, the"): 5.0, ("u2", "007"): 1.0}
    assert sorted(inter.timestamps.tolist()) == [50.0, 200.0]
    with pytest.raises(KeyError, match="weight_col='rating'"):
        Interactions.from_csv(path, user_col="user", item_col="item", weight_col="rating")


def test_from_csv_headerless_gzip_and_tabs(tmp_path, reader):
    path = tmp_path / "events.tsv.gz"
    path.write_bytes(gzip.compress(b"1\t10\t4.5\n2\t10\t3\n1\t11\t1\n"))
    inter = Interactions.from_csv(path, user_col=0, item_col=1, weight_col=2, sep="\t", header=False)
    assert dense_by_ids(inter) == {(1, 10): 4.5, (2, 10): 3.0, (1, 11): 1.0}
    assert inter.user_map.labels.dtype == np.int64
    with pytest.raises(KeyError, match="weight_col=5"):
        Interactions.from_csv(path, user_col=0, item_col=1, weight_col=5, sep="\t", header=False)


def test_from_csv_bad_values(tmp_path, reader):
    path = tmp_path / "bad.csv"
    path.write_text("user_id,item_id,w\n1,2,\n")
    with pytest.raises(ValueError, match="column 'w', row 1: missing value"):
        Interactions.from_csv(path, weight_col="w")
    path.write_text("user_id,item_id\n1,\n")
    with pytest.raises(ValueError, match="items contains missing"):
        Interactions.from_csv(path)
    path.write_text("")
    with pytest.raises(ValueError, match="empty"):
        Interactions.from_csv(path)
    with pytest.raises(FileNotFoundError):
        Interactions.from_csv(tmp_path / "absent.csv")


# -------------------------------------------------------------- weighting
@pytest.fixture
def ratings():
    # users 'a', 'b', 'c'; items 1, 2, 3
    return Interactions.from_arrays(["a", "a", "b", "b", "b", "c"], [1, 2, 1, 2, 3, 1],
                                    [5.0, 1.0, 4.0, 2.0, 3.0, 0.5], [0, 10, 20, 30, 40, 40])


def test_binarize(ratings):
    pos = ratings.binarize(4)
    assert dense_by_ids(pos) == {("a", 1): 1.0, ("b", 1): 1.0}
    assert pos.shape == ratings.shape and pos.item_map is ratings.item_map
    both = ratings.binarize(4, negative_threshold=2)
    assert dense_by_ids(both) == {("a", 1): 1.0, ("a", 2): -1.0, ("b", 1): 1.0, ("b", 2): -1.0, ("c", 1): -1.0}
    kept = ratings.binarize(4, drop_zeros=False)
    assert kept.nnz == ratings.nnz and sorted(kept.weights.tolist()) == [0, 0, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="negative_threshold"):
        ratings.binarize(3, negative_threshold=3)
    assert ratings.weights.max() == 5.0  # the original is unchanged


def test_log1p(ratings):
    signed = Interactions.from_arrays([1, 2], [1, 1], [9.0, -3.0])
    assert dense_by_ids(signed.log1p()) == pytest.approx({(1, 1): math.log(10), (2, 1): -math.log(4)})
    np.testing.assert_allclose(ratings.log1p().weights, np.log1p(ratings.weights), rtol=1e-6)


def test_bm25_hand_computed():
    # X = [[1, 0], [1, 3]]: N = 2 users; df = (2, 1); lengths (1, 4), average 2.5
    inter = Interactions([0, 1, 1], [0, 0, 1], [1.0, 1.0, 3.0])
    got = inter.bm25(K1=1.2, B=0.75).weights
    idf0, idf1 = math.log(1 + 0.5 / 2.5), math.log(1 + 1.5 / 1.5)
    norm0, norm1 = 0.25 + 0.75 * 1 / 2.5, 0.25 + 0.75 * 4 / 2.5
    expected = [idf0 * 1 * 2.2 / (1 + 1.2 * norm0),
                idf0 * 1 * 2.2 / (1 + 1.2 * norm1),
                idf1 * 3 * 2.2 / (3 + 1.2 * norm1)]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert expected[0] == pytest.approx(0.2416, abs=1e-4)


def bm25_reference(X: np.ndarray, K1: float, B: float) -> np.ndarray:
    n_users = X.shape[0]
    df = (X != 0).sum(axis=0)
    lengths = np.abs(X).sum(axis=1)
    avg = lengths[(X != 0).any(axis=1)].mean()
    out = np.zeros_like(X, dtype=np.float64)
    for u in range(X.shape[0]):
        for i in range(X.shape[1]):
            w = X[u, i]
            if w == 0:
                continue
            idf = math.log(1 + (n_users - df[i] + 0.5) / (df[i] + 0.5))
            norm = 1 - B + B * lengths[u] / avg
            out[u, i] = math.copysign(idf * abs(w) * (K1 + 1) / (abs(w) + K1 * norm), w)
    return out


@settings(max_examples=40, deadline=None)
@given(dense=st.lists(st.lists(st.sampled_from([0.0, 0.0, 1.0, 2.0, 5.0, -1.0]), min_size=4, max_size=4),
                      min_size=1, max_size=6),
       K1=st.floats(0.0, 3.0), B=st.floats(0.0, 1.0))
def test_property_bm25_and_tfidf_match_reference(dense, K1, B):
    X = np.array(dense)
    if not X.any():
        X[0, 0] = 1.0
    sparse = sp.csr_matrix(X)
    inter = Interactions.from_csr(sparse)
    np.testing.assert_allclose(inter.bm25(K1=K1, B=B).to_csr(np.float64).toarray(),
                               bm25_reference(X, K1, B), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bm25(sparse, K1=K1, B=B).toarray(), bm25_reference(X, K1, B),
                               rtol=1e-5, atol=1e-6)
    df = (X != 0).sum(axis=0)
    idf = np.log((1 + X.shape[0]) / (1 + df)) + 1
    np.testing.assert_allclose(inter.tfidf().to_csr().toarray(), X * idf, rtol=1e-5)
    np.testing.assert_allclose(tfidf(sparse).toarray(), X * idf, rtol=1e-5)


def test_bm25_values_on_empty_input():
    empty = np.zeros(0, dtype=np.int64)
    assert bm25_values(empty, empty, np.zeros(0), (3, 3)).size == 0


def test_recency(ratings):
    decayed = ratings.recency(half_life=20)
    # t_max = 40: 'a',1 at t=0 is two half-lives old
    expected = {("a", 1): 5 * 0.25, ("a", 2): 1 * 0.5 ** 1.5, ("b", 1): 4 * 0.5, ("b", 2): 2 * 0.5 ** 0.5,
                ("b", 3): 3.0, ("c", 1): 0.5}
    assert dense_by_ids(decayed) == pytest.approx(expected, rel=1e-6)
    ref = ratings.recency(half_life=10, reference_time=50)
    assert dense_by_ids(ref)[("b", 3)] == pytest.approx(1.5)
    with pytest.raises(ValueError, match="half_life"):
        ratings.recency(0)
    with pytest.raises(ValueError, match="needs timestamps"):
        Interactions.from_arrays([1], [1]).recency(10)


def test_weighting_chains(ratings):
    chained = ratings.recency(40).binarize(1.5).bm25()
    assert isinstance(chained, Interactions) and chained.user_map is ratings.user_map
    assert np.all(chained.weights > 0)
    assert chained.nnz == ratings.recency(40).binarize(1.5).nnz


def test_bad_weighting_parameters(ratings):
    with pytest.raises(ValueError, match="B must be <= 1"):
        ratings.bm25(B=2)
    with pytest.raises(TypeError, match="K1"):
        ratings.bm25(K1="big")
    with pytest.raises(TypeError, match="scipy.sparse"):
        bm25(np.eye(2))
