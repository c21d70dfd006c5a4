"""Reading interactions exactly: big integer ids, number columns, encodings, Parquet.

Each CSV test runs with pandas and with the csv-module reader (``reader``
fixture): both must give the same values and the same errors.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

import fastrec.data.tables as tables
from fastrec import ALS, Interactions
from fastrec.data.idmap import IdMap
from fastrec.utils.validation import check_raw_ids, integer_labels

try:
    import pandas as pd
except ImportError:  # pandas is optional
    pd = None

BIG = 2 ** 64 - 1  # the largest uint64: -1 once wrapped into int64


def by_ids(inter: Interactions) -> dict:
    users = inter.to_ids(inter.users, kind="user").tolist()
    items = inter.to_ids(inter.items, kind="item").tolist()
    return dict(zip(zip(users, items), inter.weights.tolist()))


# ------------------------------------------------------------ integer ids
def test_integer_labels_keep_every_value():
    assert integer_labels(np.array([3, -2], dtype=np.int8)).tolist() == [3, -2]
    fits = integer_labels(np.array([2 ** 63 - 1, 0], dtype=np.uint64))
    assert fits.dtype == np.int64 and fits.tolist() == [2 ** 63 - 1, 0]
    big = integer_labels(np.array([BIG, 5], dtype=np.uint64))
    assert big.dtype.kind == "U" and big.tolist() == ["18446744073709551615", "5"]
    assert integer_labels(np.array([2 ** 70, -1], dtype=object)).tolist() == [str(2 ** 70), "-1"]
    assert integer_labels(np.array([7, -1], dtype=object)).dtype == np.int64


def test_uint64_ids_are_not_wrapped():
    inter = Interactions.from_arrays(np.array([BIG, 5, BIG], dtype=np.uint64), [1, 2, 3], [1.0, 2.0, 3.0])
    assert inter.user_map.labels.tolist() == ["18446744073709551615", "5"]
    assert by_ids(inter) == {("18446744073709551615", 1): 1.0, ("18446744073709551615", 3): 3.0,
                             ("5", 2): 2.0}
    # a query by the integer finds the text label; -1 (what wrapping gave) is unknown
    assert inter.to_index(BIG) == inter.to_index("18446744073709551615") == 0
    with pytest.raises(KeyError):
        inter.to_index(-1)
    # uint64 ids that fit stay integers
    small = Interactions.from_arrays(np.array([2 ** 63 - 1, 1], dtype=np.uint64), [1, 2])
    assert small.user_map.labels.dtype == np.int64 and small.user_map.labels.tolist() == [1, 2 ** 63 - 1]
    # Python ints beyond int64 (an object column) too
    assert check_raw_ids(np.array([2 ** 64, 3], dtype=object), "users").tolist() == [str(2 ** 64), "3"]


def test_idmap_queries_never_wrap_or_truncate():
    id_map = IdMap([-1, 5])
    assert id_map.to_index(np.array([BIG, 5], dtype=np.uint64), unknown="mask").tolist() == [-1, 1]
    assert id_map.to_index(BIG, unknown="mask") == -1
    assert id_map.to_index([1e19, -1e19, 5.0, 5.5], unknown="mask").tolist() == [-1, -1, 1, -1]
    with pytest.raises(ValueError, match="beyond the int64 range"):
        IdMap([1e19, 1.0])
    with pytest.raises(ValueError, match="beyond the int64 range"):
        check_raw_ids(np.array([2.0 ** 63]), "users")


def test_uint64_ids_survive_fit_and_save(tmp_path):
    users = np.array([BIG, BIG - 1, BIG, BIG - 1, 3], dtype=np.uint64)
    inter = Interactions.from_arrays(users, ["a", "b", "b", "c", "a"])
    model = ALS(factors=2, iterations=2, random_state=0).fit(inter)
    model.save(tmp_path / "m.npz")
    loaded = ALS.load(tmp_path / "m.npz")
    assert sorted(loaded.user_map_.labels.tolist()) == ["18446744073709551614", "18446744073709551615", "3"]
    ids, _ = loaded.recommend(np.uint64(BIG), n=5, raw_ids=True)
    assert ids.tolist() == ["c"]  # every other item was seen


def test_csv_big_integer_ids(tmp_path, reader):
    path = tmp_path / "big.csv"
    path.write_text("user_id,item_id,rating\n18446744073709551615,1,2\n007,2,3\n-1,1,4\n")
    inter = Interactions.from_csv(path, weight_col="rating")
    # the column is text because one id does not fit int64: decimal strings, exact
    assert by_ids(inter) == {("18446744073709551615", 1): 2.0, ("7", 2): 3.0, ("-1", 1): 4.0}
    path.write_text("user_id,item_id\n9223372036854775807,1\n007,2\n")
    assert Interactions.from_csv(path).user_map.labels.tolist() == [7, 2 ** 63 - 1]
    path.write_text("user_id,item_id\n18446744073709551616x,1\n18446744073709551616,2\n")
    assert sorted(Interactions.from_csv(path).user_map.labels.tolist()) == [
        "18446744073709551616", "18446744073709551616x"]
    path.write_text("user_id,item_id\n1_000,1\n2,2\n")  # int() reads 1_000 as 1000; it is text
    assert sorted(Interactions.from_csv(path).user_map.labels.tolist()) == ["1_000", "2"]


# ------------------------------------------------------------ number columns
@pytest.mark.parametrize("value, message", [
    ("nan", r"column 'rating', row 3: 'nan' is not a number"),
    ("NaN", r"column 'rating', row 3: 'NaN' is not a number"),
    ("lots", r"column 'rating', row 3: 'lots' is not a number"),
    ("inf", r"column 'rating', row 3: inf is not a finite number"),
    ("1e40", r"column 'rating', row 3: 1e\+40 is too large for a float32 weight"),
    ("-1e39", r"column 'rating', row 3: -1e\+39 is too large for a float32 weight"),
    ("", r"column 'rating', row 3: missing value"),
])
def test_csv_bad_weights_name_column_and_row(tmp_path, reader, value, message):
    path = tmp_path / "w.csv"
    path.write_text(f"user_id,item_id,rating\n1,1,2\n\n2,2,3.5\n3,1,{value}\n")
    with pytest.raises(ValueError, match=message):
        Interactions.from_csv(path, weight_col="rating")


def test_csv_bad_timestamps_name_column_and_row(tmp_path, reader):
    path = tmp_path / "t.csv"
    path.write_text("user_id,item_id,ts\n1,1,100\n2,2,soon\n")
    with pytest.raises(ValueError, match=r"column 'ts', row 2: 'soon' is not a number"):
        Interactions.from_csv(path, timestamp_col="ts")


def test_csv_largest_float32_weight_is_kept(tmp_path, reader):
    path = tmp_path / "w.csv"
    path.write_text("user_id,item_id,rating\n1,1,3e38\n2,2,-2.5\n")
    inter = Interactions.from_csv(path, weight_col="rating")
    assert inter.weights.tolist() == [np.float32(3e38), -2.5]


def test_arrays_weights_beyond_float32():
    with pytest.raises(ValueError, match=r"weights\[1\] = 1e\+40 is too large for float32"):
        Interactions.from_arrays([1, 2], [1, 1], [1.0, 1e40])
    with pytest.raises(ValueError, match="summed weight of a repeated"):
        Interactions.from_arrays([1, 1], [1, 1], [3e38, 3e38])
    with pytest.raises(ValueError, match="too large for float32"):
        Interactions([0], [0], [1e39])


# ------------------------------------------------------------ encodings
def test_csv_latin1_falls_back_and_can_be_named(tmp_path, reader):
    path = tmp_path / "latin1.csv"
    path.write_bytes("user_id;item_id\nJosé;Café\r\nZoë;Crème brûlée\x85\r\n".encode("latin-1"))
    inter = Interactions.from_csv(path, sep=";")
    assert by_ids(inter) == {("José", "Café"): 1.0, ("Zoë", "Crème brûlée\x85"): 1.0}
    named = Interactions.from_csv(path, sep=";", encoding="latin-1")
    assert by_ids(named) == by_ids(inter)
    with pytest.raises(ValueError, match="not valid utf-8 text"):
        Interactions.from_csv(path, sep=";", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown encoding"):
        Interactions.from_csv(path, encoding="no-such-codec")


def test_csv_utf8_byte_order_mark(tmp_path, reader):
    path = tmp_path / "bom.csv"
    path.write_bytes("user_id,item_id,rating\nü1,10,2\n".encode("utf-8-sig"))
    inter = Interactions.from_csv(path, weight_col="rating")
    assert by_ids(inter) == {("ü1", 10): 2.0}


def test_csv_quoted_newlines_and_carriage_returns(tmp_path, reader):
    path = tmp_path / "q.csv"
    path.write_bytes(b'user_id,item_id\r\n"a\nb",1\r\nc,2\r\n')
    assert by_ids(Interactions.from_csv(path)) == {("a\nb", 1): 1.0, ("c", 2): 1.0}


# ------------------------------------------------------------ Parquet
def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return pd is not None


parquet = pytest.mark.skipif(not _has_pyarrow(), reason="needs pandas and pyarrow ('fastrec[io]')")


@parquet
def test_parquet_round_trip(tmp_path):
    inter = Interactions.from_arrays(["bob", "amy", "bob"], [10, 20, 30], [1.5, 2.0, 3.0],
                                     timestamps=[5.0, 6.0, 7.5])
    path = tmp_path / "events.parquet"
    inter.to_parquet(path)
    frame = pd.read_parquet(path)
    assert list(frame.columns) == ["user_id", "item_id", "weight", "timestamp"]
    back = Interactions.from_parquet(path, weight_col="weight", timestamp_col="timestamp")
    assert by_ids(back) == by_ids(inter) == {("bob", 10): 1.5, ("amy", 20): 2.0, ("bob", 30): 3.0}
    assert back.user_map == inter.user_map and back.item_map == inter.item_map
    assert back.timestamps.tolist() == inter.timestamps.tolist()
    np.testing.assert_array_equal(back.to_csr().toarray(), inter.to_csr().toarray())


@parquet
def test_parquet_columns_datetimes_and_uint64(tmp_path):
    frame = pd.DataFrame({"u": np.array([BIG, 4, BIG], dtype=np.uint64), "i": ["x", "y", "y"],
                          "r": [1.0, 2.0, 4.0], "other": ["p", "q", "r"],
                          "when": pd.to_datetime(["1970-01-01 00:00:10", "1970-01-01 00:01:00",
                                                  "1970-01-02 00:00:00"], utc=True)})
    path = tmp_path / "f.parquet"
    frame.to_parquet(path)
    inter = Interactions.from_parquet(path, user_col="u", item_col="i", weight_col="r", timestamp_col="when")
    assert by_ids(inter) == {("18446744073709551615", "x"): 1.0, ("18446744073709551615", "y"): 4.0,
                             ("4", "y"): 2.0}
    assert sorted(inter.timestamps.tolist()) == [10.0, 60.0, 86400.0]
    with pytest.raises(KeyError, match="weight_col='rating'"):
        Interactions.from_parquet(path, user_col="u", item_col="i", weight_col="rating")


@parquet
def test_parquet_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        Interactions.from_parquet(tmp_path / "absent.parquet")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match="not a readable Parquet file"):
        Interactions.from_parquet(junk)


def test_parquet_without_the_io_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'fastrec\[io\]'"):
        Interactions.from_parquet(tmp_path / "x.parquet")
    inter = Interactions.from_arrays([1], [2])
    with pytest.raises(ImportError, match=r"pyarrow.*pip install 'fastrec\[io\]'"):
        inter.to_parquet(tmp_path / "x.parquet")
    monkeypatch.setattr(tables, "optional_pandas", lambda: None)
    with pytest.raises(ImportError, match=r"pandas and pyarrow are missing"):
        inter.to_parquet(tmp_path / "x.parquet")
