"""The cold-start part of ``fastrec demo``: a brand-new viewer and a new title, known by features only.

MovieTweetings has no demographics, so a viewer is described the way a
sign-up page would: by the genres she says she likes.  Training viewers get
the same feature from their history (their two most-watched genres); films
have their genres and release decade.  WARP with these features
(``BPR(loss="warp").fit(X, user_features=..., item_features=...)``) then
recommends to a viewer with no history, and ``add_items`` brings in a title
nobody has rated, which reaches the viewers of its genre.
"""
from __future__ import annotations

from typing import Any, TextIO

import numpy as np

from ..data.features import Features
from ..datasets.features import movie_features
from ..models.bpr import BPR

__all__ = ["show_cold_start", "COLD_PARAMS"]

#: WARP settings of the cold-start demo
COLD_PARAMS = dict(factors=32, loss="warp", learning_rate=0.05, regularization=0.001, iterations=20)
_NEW_VIEWER = {"likes": "Horror|Thriller"}
_NEW_TITLE = {"genres": "Horror|Thriller", "decade": "2010s"}
_NEW_TITLE_NAME = "A New Horror Release (2014)"


def _favourite_genres(data: Any, items: Features, top: int = 2) -> np.ndarray:
    """Each viewer's ``top`` most-watched genres, '|'-joined (ties by genre name)."""
    genre_cols = np.flatnonzero(np.char.startswith(items.side_names.astype(str), "genres="))
    counts = (data.to_csr() > 0).astype(np.float32) @ items.side[:, genre_cols].astype(np.float32)
    counts = np.asarray(counts.todense())
    names = np.char.replace(items.side_names[genre_cols].astype(str), "genres=", "")
    order = np.argsort(-counts, axis=1, kind="stable")[:, :top]
    return np.array(["|".join(names[j] for j in row if counts[u, j] > 0) for u, row in enumerate(order)])


def show_cold_start(out: TextIO, data: Any, titles: np.ndarray, seed: int, num_threads: int,
                    n_recs: int = 5, k: int = 10) -> dict[str, Any]:
    """Fit WARP with features on ``data`` (ratings as "watched"), then show both cold starts.

    Training uses one thread whatever ``num_threads`` (which serving uses), so
    the output is the same for the same seed.
    """
    watched = data.binarize(0)
    items = movie_features(data)
    likes = _favourite_genres(watched, items)
    users = Features.from_frame({"user": data.user_map.labels, "likes": likes}, "user", multi=["likes"])
    # one thread: Hogwild threads would make the demo's output vary from run to run
    model = BPR(**COLD_PARAMS, random_state=seed, num_threads=1)
    with_identity = Features(items.side, items.side_names, items.ids, identity=True, spec=items.spec)
    model.fit(watched, user_features=users, item_features=with_identity)

    out.write(f"\nCold start (WARP with side features: viewers' favourite genres; films' genres and decade):\n"
              f"  A brand-new viewer who says she likes {_NEW_VIEWER['likes'].replace('|', ' and ')}, "
              "with no history:\n")
    new_viewer = model.user_features_.transform({"likes": [_NEW_VIEWER["likes"]]})
    ids, _ = model.recommend(users=None, user_features=new_viewer, n=n_recs)
    for rank, item in enumerate(ids[0], start=1):
        genres = data.item_metadata["genres"][item].replace("|", ", ")
        out.write(f"    {rank}. {str(titles[item])[:44]:<44}  ({genres})\n")

    new_title = model.item_features_.transform({"genres": [_NEW_TITLE["genres"]], "decade": [_NEW_TITLE["decade"]]})
    model.add_items(new_title, ids=["new-release"])
    new_index = model.n_items_ - 1
    fans = np.char.find(likes.astype(str), "Horror") >= 0
    model.set_params(num_threads=num_threads)  # serving threads
    lists, _ = model.recommend(np.arange(data.shape[0]), n=k)
    reached = (lists == new_index).any(axis=1)
    share_fans, share_others = reached[fans].mean(), reached[~fans].mean()
    out.write(f"  A new title nobody has rated yet, \"{_NEW_TITLE_NAME}\" ({_NEW_TITLE['genres'].replace('|', ', ')}, "
              f"{_NEW_TITLE['decade']}), added with add_items:\n"
              f"    in the top {k} of {share_fans:.0%} of the {fans.sum():,} viewers who like horror, "
              f"and of {share_others:.0%} of the others\n")
    fan = int(np.flatnonzero(fans & reached)[0]) if (fans & reached).any() else int(np.flatnonzero(fans)[0])
    explanation = model.explain_features(new_index, user=fan)
    out.write(f"    why, for viewer {data.user_map.labels[fan]}: {explanation}\n")
    return {"reached_fans": float(share_fans), "reached_others": float(share_others),
            "new_viewer": [str(titles[i]) for i in ids[0]]}
