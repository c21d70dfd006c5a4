"""MovieTweetings loaders, and the embedded MovieTweetings 100K demo set (MIT licence)."""
from __future__ import annotations

import functools
import gzip
from importlib import resources
from typing import Any

from ..data.interactions import Interactions
from ._formats import DataFiles, ratings_interactions, read_dat_movies, read_dat_ratings

__all__ = ["load_movietweetings", "load_demo"]

_DEMO_FILES = ("movietweetings-100k-ratings.dat.gz", "movietweetings-100k-movies.dat.gz")


def _parse(ratings: bytes, movies: bytes, ratings_label: str, movies_label: str) -> Interactions:
    # movie ids are IMDb ids: kept as zero-padded strings, e.g. "0133093" (tt0133093)
    table = read_dat_ratings(ratings, ratings_label, item_kind="str")
    inter = ratings_interactions(table[0], table[1], table[2], table[3])
    ids, titles, genres = read_dat_movies(movies, movies_label, item_kind="str", encoding="utf-8")
    return inter.with_item_metadata(ids, title=titles, genres=genres)


def load_movietweetings(path: Any) -> Interactions:
    """Load a MovieTweetings snapshot.

    Parameters
    ----------
    path : directory or .zip archive holding ``ratings.dat``
        (``user::movie::rating::timestamp``) and ``movies.dat``
        (``movie::Title (year)::Genre|Genre``, UTF-8).

    Returns
    -------
    Interactions
        Weights are the 0-10 ratings, timestamps Unix seconds.  User ids are
        the dataset's own integers; movie ids are IMDb ids as zero-padded
        strings (``"0133093"``).  ``item_metadata`` has ``"title"`` and
        ``"genres"`` ('|'-joined).
    """
    files = DataFiles(path)
    ratings_at, movies_at = files.require("ratings.dat", "movies.dat")
    return _parse(files.read(ratings_at), files.read(movies_at),
                  files.label(ratings_at), files.label(movies_at))


@functools.lru_cache(maxsize=1)
def _demo() -> Interactions:
    data = resources.files(__package__).joinpath("data")
    ratings, movies = (gzip.decompress(data.joinpath(name).read_bytes()) for name in _DEMO_FILES)
    return _parse(ratings, movies, *_DEMO_FILES)


def load_demo() -> Interactions:
    """The MovieTweetings 100K snapshot shipped inside fastrec.

    100,000 ratings (0-10) by 16,554 users of 10,506 movies, with timestamps
    and movie titles and genres; see ``load_movietweetings`` for the ids.
    MovieTweetings is (c) 2013 Simon Dooms, MIT licence (``fastrec/datasets/data/LICENSE``).
    The parsed set is cached: later calls return a cheap copy sharing its
    read-only arrays.
    """
    return _demo().copy()
