"""ItemKNN and EASE with item side features: cold items from an exact ridge map of their features."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import fastrec
from fastrec import EASE, ItemKNN

from test_side_features import N_ITEMS, _data

COLD = (5, 6)


def _ridge_image(F: np.ndarray, targets: np.ndarray, warm: np.ndarray, cold: np.ndarray) -> np.ndarray:
    """NumPy reference: F[cold] @ (Fw^T Fw + I)^-1 Fw^T targets[warm], float64."""
    Fw = F[warm]
    return F[cold] @ np.linalg.solve(Fw.T @ Fw + np.eye(F.shape[1]), Fw.T @ targets[warm])


def _split():
    X, users, items, group_u, group_i = _data(cold=COLD)
    counts = np.bincount(X.to_csr().indices, minlength=N_ITEMS)
    return X, users, items, group_u, group_i, np.flatnonzero(counts > 0), np.flatnonzero(counts == 0)


def _knn():
    return ItemKNN(k=15, num_threads=1)


def _ease():
    return EASE(regularization=10.0, dtype=np.float64, num_threads=1)


def test_ease_cold_columns_are_the_ridge_image_and_warm_ones_unchanged():
    X, _, items, _, _, warm, cold = _split()
    plain = _ease().fit(X)
    model = _ease().fit(X, item_features=items)
    B_t = plain.item_factors_  # row i = B[:, i]
    np.testing.assert_allclose(model.item_factors_[warm], B_t[warm], rtol=1e-12)
    np.testing.assert_array_equal(B_t[cold], 0)  # what EASE alone gives a title nobody has seen
    expected = _ridge_image(items.side.toarray().astype(np.float64), B_t, warm, cold)
    np.testing.assert_allclose(model.item_factors_[cold], expected, rtol=1e-9, atol=1e-12)
    assert np.abs(model.item_factors_[cold]).max() > 0


def test_knn_cold_entries_are_the_top_k_of_the_ridge_image():
    X, _, items, _, _, warm, cold = _split()
    plain = _knn().fit(X)
    model = _knn().fit(X, item_features=items)
    S0, S = plain.item_similarity_.toarray(), model.item_similarity_.toarray()
    np.testing.assert_array_equal(S[np.ix_(warm, warm)], S0[np.ix_(warm, warm)])
    F = items.side.toarray().astype(np.float64)
    for image, got in ((_ridge_image(F, S0.T, warm, cold), S[:, cold].T),  # columns S[:, i]
                       (_ridge_image(F, S0, warm, cold), S[cold])):  # rows S[i, :]
        image[:, cold] = 0
        for r in range(cold.size):
            kept = np.flatnonzero(got[r])
            assert 0 < kept.size <= 15 and (image[r, kept] > 0).all()
            np.testing.assert_allclose(got[r, kept], image[r, kept], rtol=1e-5)
            # nothing left out beats what was kept
            assert np.delete(image[r], kept).max(initial=0) <= image[r, kept].min() + 1e-7


@pytest.mark.parametrize("make", [_knn, _ease])
def test_cold_items_reach_the_users_of_their_genre(make):
    X, _, items, group_u, group_i, _, cold = _split()
    model = make().fit(X, item_features=items)
    for item in cold:
        fans = np.flatnonzero(group_u == group_i[item])[:20]
        others = np.flatnonzero(group_u != group_i[item])[:20]
        assert model.predict(fans, np.full(fans.size, item)).min() > model.predict(
            others, np.full(others.size, item)).max()
    # the cold item shows up among the items similar to a warm item of its genre
    warm_peer = int(cold[0]) + 3
    similar, _ = model.similar_items(warm_peer, n=N_ITEMS - 1)
    assert np.isin(cold[0], similar)


@pytest.mark.parametrize("make", [_knn, _ease])
def test_user_features_are_refused_naming_the_argument(make):
    X, users, *_ = _split()
    with pytest.raises(TypeError, match="user_features: .* interactions only"):
        make().fit(X, user_features=users)


@pytest.mark.parametrize("make", [_knn, _ease])
def test_bad_item_features_name_the_argument(make):
    X, *_ = _split()
    with pytest.raises(ValueError, match="item_features has 61 rows"):
        make().fit(X, item_features=sp.csr_matrix(np.ones((N_ITEMS + 1, 3))))
    with pytest.raises(ValueError, match="item_features contains NaN"):
        make().fit(X, item_features=np.full((N_ITEMS, 3), np.nan))


@pytest.mark.parametrize("make", [_knn, _ease])
def test_feature_names_survive_save_and_load(tmp_path, make):
    X, _, items, *_ = _split()
    model = make().fit(X, item_features=items)
    model.save(tmp_path / "m.npz")
    loaded = fastrec.load(tmp_path / "m.npz")
    side = loaded._require_state().item_features
    assert list(side.names) == list(items.side_names)
    np.testing.assert_array_equal(loaded.recommend(np.arange(10), n=5)[0], model.recommend(np.arange(10), n=5)[0])


def test_ease_add_items_grows_b_and_scores_the_new_title():
    X, _, items, group_u, group_i, _, _ = _split()
    model = _ease().fit(X, item_features=items)
    before = model.n_items_
    model.add_items(model.item_features_.transform({"genres": ["Drama"]}), ids=[1000])
    assert model.item_factors_.shape == (before + 1, before + 1)
    fans, others = np.flatnonzero(group_u == 2)[:20], np.flatnonzero(group_u != 2)[:20]
    assert model.predict(fans, np.full(20, before)).min() > model.predict(others, np.full(20, before)).max()
    lists, _ = model.recommend(fans, n=N_ITEMS)
    assert all(before in row for row in lists)
