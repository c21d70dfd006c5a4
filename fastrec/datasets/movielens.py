"""MovieLens loaders (GroupLens research data; not redistributed with fastrec)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..utils.validation import check_bool, check_choice
from ..data.interactions import Interactions
from ._download import cache_dir, fetch, verify_cached
from ._formats import DataFiles, ratings_interactions, read_dat_movies, read_dat_ratings

__all__ = ["load_movielens", "load_ml1m_implicit", "item_genres", "MOVIELENS_VARIANTS"]

_BASE_URL = "https://files.grouplens.org/datasets/movielens/"
# variant -> (archive, MD5 published by GroupLens beside each archive)
MOVIELENS_VARIANTS = {
    "100k": ("ml-100k.zip", "0e33842e24a9c977be4e0107933c0723"),
    "1m": ("ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906"),
    "10m": ("ml-10m.zip", "ce571fd55effeba0271552578f2648bd"),
    "20m": ("ml-20m.zip", "cd245b17a1ae2cc31bb14903e1204af3"),
    "25m": ("ml-25m.zip", "6b51fb2759a8657d3bfcbfc42b592ada"),
}

# ML-100K's genre flag columns, used when the archive has no u.genre
_ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                  "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                  "Romance", "Sci-Fi", "Thriller", "War", "Western")


def load_movielens(path: Any = None, variant: str = "100k", download: bool = False,
                   min_rating: float | None = None) -> Interactions:
    """Load a MovieLens ratings set as ``Interactions``.

    The format is detected from the files present: ``u.data`` + ``u.item``
    (100K), ``ratings.dat`` + ``movies.dat`` (1M, 10M) or ``ratings.csv`` +
    ``movies.csv`` (20M, 25M).

    Parameters
    ----------
    path : directory or .zip archive, optional
        Where the files are (they may sit one folder down, as in the
        archives).  Without it the archive of ``variant`` is read from the
        cache directory (``$FASTREC_DATA`` or ``~/.cache/fastrec``).
    variant : {"100k", "1m", "10m", "20m", "25m"}
        Which set to take from the cache or download; ignored with ``path``.
    download : bool
        With no ``path``, fetch a variant missing from the cache from
        GroupLens, checking the MD5 sum they publish; its SHA-256 is then
        recorded and checked on every later load.  Please respect the
        GroupLens licence (research use, no redistribution).
    min_rating : float, optional
        Keep only ratings >= this (the id maps then hold only those users
        and movies).

    Returns
    -------
    Interactions
        Weights are the ratings, timestamps are Unix seconds, ids are
        MovieLens' own integers; ``item_metadata`` has ``"title"`` and
        ``"genres"`` ('|'-joined; "" for movies missing from the movie file).
    """
    check_choice(variant, "variant", MOVIELENS_VARIANTS)
    download = check_bool(download, "download")
    if path is None:
        path = _cached_archive(variant, download)
    files = DataFiles(path)
    if files.find("u.data") is not None:
        return _load_100k(files, min_rating)
    if files.find("ratings.dat") is not None:
        return _load_dat(files, min_rating)
    if files.find("ratings.csv") is not None:
        return _load_csv(files, min_rating)
    raise FileNotFoundError(f"{files.path} holds no MovieLens ratings: expected u.data (100K), "
                            f"ratings.dat (1M, 10M) or ratings.csv (20M, 25M)")


def _cached_archive(variant: str, download: bool) -> Path:
    archive, md5 = MOVIELENS_VARIANTS[variant]
    target = cache_dir() / archive
    if target.exists():
        verify_cached(target)
        return target
    if not download:
        raise FileNotFoundError(f"MovieLens {variant} is not in the cache ({target}); pass "
                                f"path= to read local files, or download=True to fetch it")
    return fetch(_BASE_URL + archive, target, md5=md5)


def _load_100k(files: DataFiles, min_rating: float | None) -> Interactions:
    ratings_at, items_at = files.require("u.data", "u.item")
    table = files.columns(ratings_at, {0: "id", 1: "id", 2: "float", 3: "float"},
                          sep="\t", header=False, quoting=False)
    inter = ratings_interactions(table[0], table[1], table[2], table[3], min_rating)
    genre_names = _ml100k_genre_names(files)
    n_fields = 5 + len(genre_names)
    meta = files.columns(items_at, {0: "id", 1: "str", **{k: "str" for k in range(5, n_fields)}},
                         sep="|", header=False, quoting=False, encoding="latin-1")
    flags = np.column_stack([meta[k] == "1" for k in range(5, n_fields)])
    genres = np.array(["|".join(g for g, on in zip(genre_names, row) if on) for row in flags], dtype=str)
    return inter.with_item_metadata(meta[0], title=meta[1], genres=genres)


def _ml100k_genre_names(files: DataFiles) -> tuple[str, ...]:
    location = files.find("u.genre")
    if location is None:
        return _ML100K_GENRES
    table = files.columns(location, {0: "str", 1: "id"}, sep="|", header=False, quoting=False,
                          encoding="latin-1")
    return tuple(table[0][np.argsort(table[1], kind="stable")])


def _load_dat(files: DataFiles, min_rating: float | None) -> Interactions:
    ratings_at, movies_at = files.require("ratings.dat", "movies.dat")
    table = read_dat_ratings(files.read(ratings_at), files.label(ratings_at))
    inter = ratings_interactions(table[0], table[1], table[2], table[3], min_rating)
    # ML-1M's movies.dat is Latin-1; UTF-8 is tried first
    ids, titles, genres = read_dat_movies(files.read(movies_at), files.label(movies_at))
    return inter.with_item_metadata(ids, title=titles, genres=genres)


def _load_csv(files: DataFiles, min_rating: float | None) -> Interactions:
    ratings_at, movies_at = files.require("ratings.csv", "movies.csv")
    cols = {"userId": "id", "movieId": "id", "rating": "float", "timestamp": "float"}
    table = files.columns(ratings_at, cols)
    inter = ratings_interactions(table["userId"], table["movieId"], table["rating"],
                                 table["timestamp"], min_rating)
    movies = files.columns(movies_at, {"movieId": "id", "title": "str", "genres": "str"})
    return inter.with_item_metadata(movies["movieId"], title=movies["title"], genres=movies["genres"])


def load_ml1m_implicit(path: Any, split: bool = True
                       ) -> tuple[Interactions, Interactions] | Interactions:
    """Load the binarised MovieLens 1M set with its published train/test split.

    Parameters
    ----------
    path : directory (or .zip) holding ``interactions.tsv`` (header
        ``user_id movie_id split``, tab-separated) and optionally ``movies.dat``;
        or the path of ``interactions.tsv`` itself.
    split : bool
        True returns ``(train, test)`` following the ``split`` column; both
        share the id maps built from all rows.  False returns everything.

    Returns
    -------
    Interactions or (train, test)
        Weights are 1, no timestamps; ``item_metadata`` has ``"title"`` and
        ``"genres"`` when ``movies.dat`` is present.
    """
    split = check_bool(split, "split")
    given = Path(path) if not isinstance(path, Path) else path
    files = DataFiles(given.parent if given.is_file() and given.suffix == ".tsv" else given)
    (table_at,) = files.require("interactions.tsv")
    table = files.columns(table_at, {"user_id": "id", "movie_id": "id", "split": "str"}, sep="\t")
    everything = Interactions.from_arrays(table["user_id"], table["movie_id"], duplicates="max")
    movies_at = files.find("movies.dat")
    if movies_at is not None:
        ids, titles, genres = read_dat_movies(files.read(movies_at), files.label(movies_at),
                                              encoding="latin-1")
        everything = everything.with_item_metadata(ids, title=titles, genres=genres)
    if not split:
        return everything
    labels = table["split"]
    unexpected = sorted(set(np.unique(labels).tolist()) - {"train", "test"})
    if unexpected:
        raise ValueError(f"{files.label(table_at)}: the split column holds {unexpected}; "
                         f"expected only 'train' and 'test'")
    parts = []
    for name in ("train", "test"):
        rows = labels == name
        part = Interactions.from_arrays(table["user_id"][rows], table["movie_id"][rows],
                                        duplicates="max", user_map=everything.user_map,
                                        item_map=everything.item_map)
        parts.append(part.with_item_metadata(everything.item_map.labels, **everything.item_metadata))
    return parts[0], parts[1]


def item_genres(interactions: Any, column: str = "genres", sep: str = "|") -> tuple[sp.csr_matrix, np.ndarray]:
    """Items x genres 0/1 matrix from an ``Interactions``' item metadata (e.g. MovieLens genres).

    Parameters
    ----------
    interactions : fastrec.Interactions
        With ``item_metadata[column]`` holding ``sep``-joined genre names per
        item (as ``load_movielens`` and ``load_ml1m_implicit`` attach them).
    column, sep : str

    Returns
    -------
    matrix : (n_items, n_genres) float32 CSR, rows aligned with the item map
        (items without genres have empty rows), for ``fastrec.rerank.Calibrated``.
    names : array of str, the genre of each column (sorted).
    """
    metadata = getattr(interactions, "item_metadata", None)
    if not isinstance(metadata, dict) or column not in metadata:
        raise ValueError(f"interactions has no item metadata column {column!r}; load it with its movie "
                         "file (movies.dat) or add it with with_item_metadata")
    per_item = [[g for g in str(text).split(sep) if g and g != "(no genres listed)"]
                for text in metadata[column]]
    names = np.array(sorted({g for genres in per_item for g in genres}), dtype=str)
    column_of = {g: j for j, g in enumerate(names)}
    indptr = np.cumsum([0] + [len(set(genres)) for genres in per_item])
    indices = np.array([column_of[g] for genres in per_item for g in sorted(set(genres))], dtype=np.int32)
    matrix = sp.csr_matrix((np.ones(indices.size, dtype=np.float32), indices, indptr),
                           shape=(len(per_item), names.size))
    return matrix, names
