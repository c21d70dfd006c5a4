"""Models fitted with side features: the feature-sum model, cold start, errors and persistence."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import fastrec
from fastrec import ALS, BPR, Features

N_USERS, N_ITEMS, GROUPS = 240, 60, 3


def _data(seed: int = 0, cold: tuple[int, ...] = (5, 6)):
    """Users of three groups like the items of their group; items ``cold`` have no interactions."""
    rng = np.random.default_rng(seed)
    group_u = rng.integers(0, GROUPS, N_USERS)
    group_i = np.arange(N_ITEMS) % GROUPS
    dense = ((group_u[:, None] == group_i[None, :]) & (rng.random((N_USERS, N_ITEMS)) < 0.35)).astype(np.float32)
    dense[:, list(cold)] = 0
    X = fastrec.Interactions.from_csr(sp.csr_matrix(dense))
    names = np.array(["Action", "Comedy", "Drama"])
    users = Features.from_frame({"user": np.arange(N_USERS), "group": names[group_u]}, "user",
                                categorical=["group"])
    items = Features.from_frame({"item": np.arange(N_ITEMS), "genres": names[group_i]}, "item", multi=["genres"])
    return X, users, items, group_u, group_i


def _bpr(**params):
    return BPR(**{"factors": 8, "loss": "warp", "iterations": 15, "random_state": 0, "num_threads": 1,
                  "regularization": 0.0, "learning_rate": 0.05, **params})


def test_identity_features_reproduce_the_plain_model():
    X, *_ = _data()
    csr = X.to_csr()
    for loss in ("bpr", "warp"):
        plain = _bpr(loss=loss).fit(csr)
        hybrid = _bpr(loss=loss).fit(csr, user_features=sp.identity(N_USERS, format="csr"),
                                     item_features=sp.identity(N_ITEMS, format="csr"))
        np.testing.assert_allclose(hybrid.user_factors_, plain.user_factors_, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(hybrid.item_factors_, plain.item_factors_, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(hybrid.item_bias_, plain.item_bias_, rtol=1e-4, atol=1e-5)


def test_cold_item_gets_its_features_part_of_the_score():
    """Without normalisation a warm item's vector is its features' part plus its identity's."""
    X, _, items, _, group_i = _data()
    with_id = Features(items.side, items.side_names, items.ids, identity=True, normalize=False, spec=items.spec)
    model = _bpr().fit(X, item_features=with_id)
    state = model._require_state()
    side = state.item_features
    cold, warm = 5, 5 + GROUPS  # same genre
    assert group_i[cold] == group_i[warm] and X.to_csr()[:, cold].nnz == 0
    assert side.matrix[cold].nnz == 1  # no identity feature: nothing trained one
    identity_column = side.n_side + warm
    users = np.arange(10)
    features_part = model.predict(users, np.full(10, warm)) - (
        model.user_factors_[users] @ side.factors[identity_column] + side.bias[identity_column])
    np.testing.assert_allclose(model.predict(users, np.full(10, cold)), features_part, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make", [_bpr, lambda: ALS(factors=8, iterations=5, random_state=0)])
def test_cold_start_through_the_serving_api(make):
    X, users, items, group_u, group_i = _data()
    model = make().fit(X, user_features=users, item_features=items)
    # a brand-new user described only by features gets the items of her group
    new_user = model.user_features_.transform({"group": ["Comedy"]})
    ids, scores = model.recommend(users=None, user_features=new_user, n=10)
    assert ids.shape == (1, 10) and (group_i[ids[0]] == 1).mean() >= 0.8
    # ... and a few interactions too (X=): those are excluded and refine the vector
    few = sp.csr_matrix(([1.0, 1.0], ([0, 0], [1, 4])), shape=(1, N_ITEMS))
    ids, _ = model.recommend(users=None, user_features=new_user, X=few, n=10)
    assert not np.isin([1, 4], ids[0]).any() and (group_i[ids[0]] == 1).mean() >= 0.5
    # a cold item (column without interactions) reaches the users of its genre
    cold = 5
    fans = np.flatnonzero(group_u == group_i[cold])[:30]
    lists, _ = model.recommend(fans, n=25)
    assert np.isin(cold, lists).any()
    similar, _ = model.similar_items(cold, n=5)
    assert similar.size == 5 and (group_i[similar] == group_i[cold]).all()
    # explain names the features
    explanation = model.explain_features(cold, user=int(fans[0]))
    assert explanation.item_features[0][0] == f"genres={['Action', 'Comedy', 'Drama'][group_i[cold]]}"
    assert "genres=" in str(explanation)


def test_add_items_scores_new_titles_from_their_features():
    X, users, items, group_u, group_i = _data()
    model = _bpr().fit(X, user_features=users, item_features=items)
    before = model.n_items_
    new = model.item_features_.transform({"genres": ["Drama", "Drama|Comedy"]}, ids=[1000, 1001])
    model.add_items(new)
    assert model.n_items_ == before + 2
    assert list(model.item_map_.to_ids([before, before + 1])) == [1000, 1001]
    fans = np.flatnonzero(group_u == 2)[:40]
    lists, _ = model.recommend(fans, n=25)
    assert np.isin(before, lists).any()
    ids, _ = model.similar_items(1000, n=3, raw_ids=True)
    assert (group_i[ids] == 2).all()
    with pytest.raises(ValueError, match="ids: 1 item"):
        model.add_items(model.item_features_.transform({"genres": ["Drama"]}), ids=[1000])
    with pytest.raises(ValueError, match="ids: the model has raw item ids"):
        model.add_items(sp.csr_matrix(np.ones((1, 3))))


def test_unknown_ids_are_explicit():
    X, _, _, _, group_i = _data()
    table = {"item": np.append(np.arange(N_ITEMS), 500),
             "genres": np.append(np.array(["A", "B", "C"])[group_i], "B")}
    refused = Features.from_frame(table, "item", multi=["genres"])
    with pytest.raises(KeyError, match="item_features: 1 id"):
        _bpr().fit(X, item_features=refused)
    appended = Features.from_frame(table, "item", multi=["genres"], unknown="append")
    model = _bpr().fit(X, item_features=appended)
    assert model.n_items_ == N_ITEMS + 1 and model.item_map_.to_index(500) == N_ITEMS
    assert np.linalg.norm(model.item_factors_[N_ITEMS]) > 0
    dropped = Features.from_frame(table, "item", multi=["genres"], unknown="drop")
    assert _bpr().fit(X, item_features=dropped).n_items_ == N_ITEMS


@pytest.mark.parametrize("bad, message", [
    (sp.csr_matrix(np.ones((N_ITEMS + 1, 3))), "item_features has 61 rows"),
    (np.full((N_ITEMS, 3), np.nan), "item_features contains NaN"),
    (-np.ones((N_ITEMS, 3)), "item_features holds 180 negative"),
    ("genres", "item_features must be"),
])
def test_bad_feature_input_names_the_argument(bad, message):
    X, *_ = _data()
    with pytest.raises((ValueError, TypeError), match=message):
        _bpr().fit(X, item_features=bad)


def test_serving_errors_name_the_argument():
    X, users, items, *_ = _data()
    model = _bpr().fit(X, item_features=items)
    with pytest.raises(ValueError, match="user_features: the model was fitted without user_features"):
        model.recommend(users=None, user_features=users.transform({"group": ["Drama"]}))
    model = _bpr().fit(X, user_features=users)
    foreign = Features.from_frame({"u": [1], "city": ["Paris"]}, "u", categorical=["city"])
    with pytest.raises(ValueError, match="user_features has feature"):
        model.recommend(users=None, user_features=foreign)
    with pytest.raises(ValueError, match="pass users=None"):
        model.recommend(users=0, user_features=users.transform({"group": ["Drama"]}))
    with pytest.raises(ValueError, match="user_features has 2 columns"):
        model.recommend(users=None, user_features=np.ones((1, 2)))
    with pytest.raises(TypeError, match="user_features: EASE scores users from their interactions only"):
        fastrec.EASE().fit(X, user_features=users)


@pytest.mark.parametrize("make", [_bpr, lambda: ALS(factors=8, iterations=3, random_state=0)])
def test_feature_names_survive_save_and_load(tmp_path, make):
    X, users, items, *_ = _data()
    model = make().fit(X, user_features=users, item_features=items)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = fastrec.load(path)
    assert list(loaded.user_features_.side_names) == list(users.side_names)
    assert list(loaded.item_features_.side_names) == list(items.side_names)
    new_user = loaded.user_features_.transform({"group": ["Action"]})
    np.testing.assert_array_equal(loaded.recommend(users=None, user_features=new_user, n=5)[0],
                                  model.recommend(users=None, user_features=new_user, n=5)[0])
    loaded.add_items(loaded.item_features_.transform({"genres": ["Comedy"]}), ids=[777])
    assert loaded.n_items_ == N_ITEMS + 1


def test_partial_fit_users_grows_the_feature_rows():
    X, users, *_ = _data()
    model = _bpr().fit(X, user_features=users)
    model.partial_fit_users([N_USERS], sp.csr_matrix(np.eye(1, N_ITEMS)), raw_ids=True)
    assert model._require_state().user_features.matrix.shape[0] == N_USERS + 1


def test_auto_learning_rate_is_larger_for_warp_with_features():
    """learning_rate="auto": FEATURE_LEARNING_RATE for WARP (adagrad) with side features, the plain
    0.05 otherwise (same seed, one thread: the same factors as the number given)."""
    from fastrec.models.hybrid import FEATURE_LEARNING_RATE
    X, users, items, *_ = _data()
    csr = X.to_csr()
    assert FEATURE_LEARNING_RATE != 0.05

    def factors(loss, rate, **features):
        return _bpr(loss=loss, learning_rate=rate, iterations=3).fit(csr, **features).item_factors_

    for loss, with_features in (("warp", FEATURE_LEARNING_RATE), ("bpr", 0.05)):
        auto = factors(loss, "auto", user_features=users, item_features=items)
        np.testing.assert_array_equal(auto, factors(loss, with_features, user_features=users, item_features=items))
        assert not np.array_equal(auto, factors(loss, 0.13, user_features=users, item_features=items))
        np.testing.assert_array_equal(factors(loss, "auto"), factors(loss, 0.05))


def test_auto_penalties_follow_the_identity_features():
    """regularization="auto": cold-start penalties for a side without identity features, the plain
    model's for every feature of a side with them; a number applies to all."""
    from fastrec.models.hybrid import FEATURE_REGULARIZATION, _penalties
    from fastrec.models.side import prepare_features
    X, users, items, *_ = _data()
    with_id = Features(items.side, items.side_names, items.ids, identity=True, spec=items.spec)
    csr = X.to_csr()
    _, _, _, user_side, item_side = prepare_features(csr, X.user_map, X.item_map, users, with_id, np.float32)
    rE = _penalties(user_side, user_side.n_features, 0.4, "auto", np.float32, "user")
    np.testing.assert_allclose(rE, FEATURE_REGULARIZATION["user"])
    rF = _penalties(item_side, item_side.n_features, 0.4, "auto", np.float32, "item")
    assert item_side.n_features > item_side.n_side and np.allclose(rF, 0.4)
    _, _, _, _, plain_items = prepare_features(csr, X.user_map, X.item_map, None, items, np.float32)
    rF = _penalties(plain_items, plain_items.n_features, 0.4, "auto", np.float32, "item")
    np.testing.assert_allclose(rF, FEATURE_REGULARIZATION["item"])
    np.testing.assert_allclose(_penalties(plain_items, plain_items.n_features, 0.3, 0.3, np.float32, "item"), 0.3)
    np.testing.assert_allclose(_penalties(None, 7, 0.4, "auto", np.float32, "user"), 0.4)
