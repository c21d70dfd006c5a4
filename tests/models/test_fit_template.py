"""The one fit path every model shares: guarded training, fitted parameters, growth and raw ids."""
from __future__ import annotations

import io

import numpy as np
import pytest
import scipy.sparse as sp

import fastrec
from fastrec import ALS, BPR, Interactions

MODELS = [
    lambda: ALS(factors=4, iterations=3, random_state=0, num_threads=1),
    lambda: BPR(factors=4, iterations=3, random_state=0, num_threads=1),
]


def _data(n_users=12, n_items=9, seed=0) -> Interactions:
    rng = np.random.default_rng(seed)
    users, items = np.nonzero(rng.random((n_users, n_items)) < 0.4)
    return Interactions.from_arrays([f"u{u}" for u in users], [f"i{i}" for i in items])


@pytest.mark.parametrize("make", MODELS)
def test_empty_training_data_is_an_error_and_keeps_the_old_state(make):
    model = make().fit(_data())
    before = model._state
    for empty in (sp.csr_matrix((4, 5), dtype=np.float32), sp.csr_matrix(np.zeros((3, 3)))):
        with pytest.raises(ValueError, match="no interactions"):
            model.fit(empty)
        assert model._state is before


def test_bpr_with_only_thumbs_down_is_an_error():
    with pytest.raises(ValueError, match="no positive interactions"):
        BPR(factors=2, iterations=1).fit(sp.csr_matrix(-np.eye(3)))


@pytest.mark.parametrize("loss", ["bpr", "warp"])
def test_diverging_sgd_raises_naming_learning_rate_and_keeps_state(loss):
    X = _data(60, 40, seed=3)
    model = BPR(factors=8, iterations=2, loss=loss, learning_schedule="sgd", random_state=0, num_threads=1).fit(X)
    before = model._state
    model.set_params(learning_rate=1e30, iterations=5)
    with pytest.raises(FloatingPointError, match="learning_rate"):
        model.fit(X)
    assert model._state is before
    assert np.isfinite(model.user_factors_).all()


def test_save_refuses_non_finite_factors(tmp_path):
    model = ALS(factors=2, iterations=1, random_state=0).fit(_data())
    state = model._state
    bad = state.user_factors.copy()
    bad[0, 0] = np.nan
    model._state = fastrec.models.FittedState(bad, state.item_factors, state.user_items)
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.save(tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


def test_huge_values_are_a_clear_error_for_als():
    X = sp.csr_matrix(np.array([[1e30, 1.0], [1.0, 0.0]], dtype=np.float32))
    with pytest.raises(ValueError, match="alpha"):
        ALS(factors=2, iterations=1).fit(X)


def test_set_params_after_fit_changes_nothing_a_fitted_model_answers(tmp_path):
    X = _data(30, 20, seed=1)
    model = ALS(factors=4, iterations=4, regularization=0.1, random_state=0, num_threads=1).fit(X)
    row = X.to_csr()[:2]
    folded = model.fold_in(row)
    explained = model.explain(0, 3)
    model.set_params(regularization=50.0, alpha=30.0)
    np.testing.assert_array_equal(model.fold_in(row), folded)
    assert model.explain(0, 3)[0] == pytest.approx(explained[0])
    model.save(tmp_path / "m.npz")
    loaded = ALS.load(tmp_path / "m.npz")
    assert loaded.regularization == 50.0  # the estimator's hyperparameters as set
    np.testing.assert_allclose(loaded.fold_in(row), folded, rtol=1e-6)  # answers as fitted

    bpr = BPR(factors=4, iterations=3, random_state=0, num_threads=1).fit(X)
    want = bpr.fold_in(row)
    bpr.set_params(iterations=0, learning_rate=5.0)
    np.testing.assert_array_equal(bpr.fold_in(row), want)


def test_save_and_load_through_file_objects():
    model = BPR(factors=3, iterations=2, random_state=0).fit(_data())
    buffer = io.BytesIO()
    model.save(buffer)
    buffer.seek(0)
    loaded = fastrec.load(buffer)
    assert type(loaded) is BPR
    np.testing.assert_array_equal(loaded.item_factors_, model.item_factors_)
    assert loaded.item_map_ == model.item_map_


@pytest.mark.parametrize("make", MODELS)
def test_growing_a_model_with_raw_ids_extends_the_maps(make, tmp_path):
    X = _data()
    model = make().fit(X)
    n = model.n_users_
    row = sp.csr_matrix(([1.0, 1.0], ([0, 0], [1, 4])), shape=(1, model.n_items_))
    with pytest.raises(ValueError, match="raw_ids=True"):
        model.partial_fit_users([n], row)  # would lose the raw-id map
    model.partial_fit_users(["new-user"], row, raw_ids=True)
    assert model.n_users_ == n + 1 and len(model.user_map_) == n + 1
    assert model.user_map_.to_index("new-user") == n
    np.testing.assert_array_equal(model.user_items_[n].indices, [1, 4])
    model.save(tmp_path / "g.npz")
    loaded = fastrec.load(tmp_path / "g.npz")
    ids, _ = loaded.recommend("new-user", n=3, raw_ids=True)
    assert not set(ids) & {model.item_map_.to_ids(1), model.item_map_.to_ids(4)}
    # an existing raw id is updated in place, not added
    model.partial_fit_users(["u0"], row, raw_ids=True)
    assert model.n_users_ == n + 1
    with pytest.raises(TypeError, match="strings"):
        model.partial_fit_users([123], row, raw_ids=True)


def test_growth_cap_applies_to_every_model():
    for make in MODELS:
        model = make().fit(sp.csr_matrix(np.eye(4, dtype=np.float32)))
        with pytest.raises(ValueError, match="would grow the model"):
            model.partial_fit_users([10**7], sp.csr_matrix((1, 4), dtype=np.float32))


@pytest.mark.parametrize("make", MODELS)
def test_raw_ids_through_the_serving_api(make):
    X = _data(20, 12, seed=2)
    model = make().fit(X)
    u = model.user_map_.to_index("u3")
    ids, scores = model.recommend(u, n=4)
    raw, raw_scores = model.recommend("u3", n=4, raw_ids=True)
    np.testing.assert_array_equal(raw, model.item_map_.to_ids(ids))
    np.testing.assert_array_equal(raw_scores, scores)
    batch, _ = model.recommend(["u3", "u5"], n=4, raw_ids=True)
    assert isinstance(batch, list) and list(batch[0]) == list(raw)
    excluded = raw[0]
    raw2, _ = model.recommend("u3", n=4, exclude=[excluded], raw_ids=True)
    assert excluded not in raw2
    sim, _ = model.similar_items("i2", n=3, raw_ids=True)
    np.testing.assert_array_equal(sim, model.item_map_.to_ids(model.similar_items(model.item_map_.to_index("i2"),
                                                                                  n=3)[0]))
    assert model.predict("u3", "i2", raw_ids=True) == pytest.approx(
        model.predict(u, model.item_map_.to_index("i2")))
    with pytest.raises(KeyError, match="users: unknown id"):
        model.recommend("nobody", raw_ids=True)
    plain = make().fit(X.to_csr())
    with pytest.raises(ValueError, match="no raw user ids"):
        plain.recommend(0, raw_ids=True)


def test_recommend_frame_matches_recommend():
    pd = pytest.importorskip("pandas")
    X = _data(15, 10, seed=4)
    model = ALS(factors=3, iterations=2, random_state=0).fit(X)
    frame = model.recommend_frame(n=3)
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == ["user_id", "rank", "item_id", "score"]
    for user in ("u0", "u7"):
        ids, scores = model.recommend(user, n=3, raw_ids=True)
        rows = frame[frame.user_id == user]
        assert list(rows.item_id) == list(ids) and list(rows["rank"]) == list(range(1, len(ids) + 1))
        np.testing.assert_allclose(rows.score, scores)


def test_recommend_frame_progress_and_polars(capsys):
    X = _data(15, 10, seed=4)
    model = ALS(factors=3, iterations=2, random_state=0).fit(X)
    pytest.importorskip("pandas")
    frame = model.recommend_frame(n=2, show_progress=True)
    assert "recommend" in capsys.readouterr().err and len(frame) == 2 * 15
    pl = pytest.importorskip("polars")
    other = model.recommend_frame(n=2, backend="polars")
    assert isinstance(other, pl.DataFrame) and other["item_id"].to_list() == frame["item_id"].tolist()
