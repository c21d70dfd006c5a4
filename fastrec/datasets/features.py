"""Side features of the bundled and MovieLens data sets, aligned to their interactions.

* ``movie_features``: genres and release decade of the movies of any loaded
  MovieLens or MovieTweetings ``Interactions`` (from their item metadata);
* ``load_user_features``: MovieLens demographics, ML-1M ``users.dat`` (gender,
  age band, occupation) or ML-100K ``u.user`` (gender, age put in ML-1M's
  bands, occupation);
* ``load_movielens_features``: both, for a MovieLens directory;
* ``load_demo_features``: the embedded MovieTweetings data with its movies'
  genres and decades.

Every function returns ``fastrec.Features`` whose rows follow the
interactions' user or item map (``Features.aligned``), ready for
``model.fit(X, user_features=..., item_features=...)``.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..data.features import Features
from ..data.interactions import Interactions
from ._formats import DataFiles
from .movielens import item_genres

__all__ = ["movie_features", "load_user_features", "load_movielens_features", "load_demo_features",
           "ML1M_AGE_BANDS", "ML1M_OCCUPATIONS"]

# ML-1M's README: the age code is the band's lower bound
ML1M_AGE_BANDS = {1: "Under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}
ML1M_OCCUPATIONS = ("other", "academic/educator", "artist", "clerical/admin", "college/grad student",
                    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
                    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
                    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer")
_YEAR = re.compile(r"\((\d{4})\)\s*$")


def _decade(title: str) -> str:
    match = _YEAR.search(str(title))
    return f"{match.group(1)[:3]}0s" if match else ""


def _require_interactions(interactions: Any) -> Interactions:
    if not isinstance(interactions, Interactions):
        raise TypeError(f"interactions must be fastrec.Interactions, got {type(interactions).__name__}")
    return interactions


def movie_features(interactions: Any, decade: bool = True, identity: bool = False,
                   normalize: bool = True) -> Features:
    """Genres (multi-valued) and release decade of each movie, rows in the item map's order.

    Parameters
    ----------
    interactions : fastrec.Interactions
        Loaded with its movie file (``item_metadata`` has ``"genres"``, and
        ``"title"`` with the year in parentheses, as MovieLens and
        MovieTweetings titles have).
    decade : bool
        Add ``decade=1990s`` from the title's year.
    identity, normalize : bool
        See ``fastrec.Features.from_frame``.

    Returns
    -------
    Features named ``genres=<Genre>`` and ``decade=<1990s>``.  Genres are
    parsed by ``item_genres`` (the re-rankers' genre matrix): the same names
    for the same movies.
    """
    interactions = _require_interactions(interactions)
    matrix, names = item_genres(interactions)
    per_item = np.split(names[matrix.indices], matrix.indptr[1:-1])
    table: dict[str, Any] = {"item_id": interactions.item_map.labels,
                             "genres": np.array(["|".join(g) for g in per_item], dtype=str)}
    if decade:
        titles = interactions.item_metadata.get("title", np.full(len(interactions.item_map), ""))
        table["decade"] = np.array([_decade(t) for t in titles], dtype=str)
    return Features.from_frame(table, "item_id", categorical=["decade"] if decade else (), multi=["genres"],
                               identity=identity, normalize=normalize)


def _ml1m_users(files: DataFiles, location: str) -> dict[str, np.ndarray]:
    table = files.columns(location, {0: "id", 1: "str", 2: "id", 3: "id"}, sep="::", header=False,
                          quoting=False)
    ages = np.array([ML1M_AGE_BANDS.get(int(a), str(a)) for a in table[2]], dtype=str)
    jobs = np.array([ML1M_OCCUPATIONS[int(o)] if 0 <= int(o) < len(ML1M_OCCUPATIONS) else str(o)
                     for o in table[3]], dtype=str)
    return {"user_id": table[0], "gender": table[1], "age": ages, "occupation": jobs}


def _ml100k_users(files: DataFiles, location: str) -> dict[str, np.ndarray]:
    table = files.columns(location, {0: "id", 1: "id", 2: "str", 3: "str"}, sep="|", header=False,
                          quoting=False)
    bounds = np.array(sorted(ML1M_AGE_BANDS))
    ages = np.array([ML1M_AGE_BANDS[int(bounds[np.searchsorted(bounds, int(a), side="right") - 1])]
                     if int(a) >= bounds[0] else ML1M_AGE_BANDS[1] for a in table[1]], dtype=str)
    return {"user_id": table[0], "gender": table[2], "age": ages, "occupation": table[3]}


def load_user_features(path: Any, interactions: Any, identity: bool = False, normalize: bool = True,
                       unknown: str = "drop") -> Features:
    """MovieLens demographics: ``gender=F``, ``age=25-34``, ``occupation=writer``, aligned to the users.

    Parameters
    ----------
    path : directory or .zip holding ML-1M's ``users.dat`` or ML-100K's ``u.user``
    interactions : fastrec.Interactions
        The ratings of the same set (user ids are MovieLens' own).
    identity, normalize : bool
        See ``fastrec.Features.from_frame``.
    unknown : {"drop", "error", "append"}
        Users in the file without interactions (none in the published sets).

    Returns
    -------
    Features; ML-100K ages are put in ML-1M's bands so both sets share names.
    """
    interactions = _require_interactions(interactions)
    files = DataFiles(path)
    location = files.find("users.dat")
    if location is not None:
        table = _ml1m_users(files, location)
    else:
        location = files.find("u.user")
        if location is None:
            raise FileNotFoundError(f"{files.path} has neither users.dat (ML-1M) nor u.user (ML-100K)")
        table = _ml100k_users(files, location)
    features = Features.from_frame(table, "user_id", categorical=["gender", "age", "occupation"],
                                   identity=identity, normalize=normalize, unknown=unknown)
    return _aligned_to(features, interactions.user_map)


def _aligned_to(features: Features, id_map: Any) -> Features:
    """``features`` with its rows in ``id_map``'s order (plus appended rows), as a new ``Features``."""
    matrix, _, n_side, new_labels = Features(features.side, features.side_names, features.ids,
                                             normalize=False, unknown=features.unknown).aligned(
        id_map, len(id_map), "features")
    labels = np.concatenate([id_map.labels, new_labels])
    return Features(matrix[:, :n_side], features.side_names, labels, identity=features.identity,
                    normalize=features.normalize, unknown=features.unknown, spec=features.spec)


def load_movielens_features(path: Any, interactions: Any, identity: bool = False
                            ) -> tuple[Features, Features]:
    """``(user_features, item_features)`` of a MovieLens directory: demographics, genres and decades.

    ``interactions`` must carry the movie metadata (``load_movielens(path)``
    or ``load_ml1m_implicit(path)`` with ``movies.dat`` beside it).
    """
    return load_user_features(path, interactions, identity=identity), movie_features(interactions,
                                                                                     identity=identity)


def load_demo_features(identity: bool = False) -> tuple[Interactions, Features]:
    """The embedded MovieTweetings 100K set and its movies' genres and decades.

    Returns
    -------
    (interactions, item_features)
    """
    from .movietweetings import load_demo
    interactions = load_demo()
    return interactions, movie_features(interactions, identity=identity)
