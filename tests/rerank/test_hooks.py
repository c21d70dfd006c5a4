"""recommend(..., rerank=), evaluate(..., rerank=), tradeoff(), the metrics, and bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

import fastrec
from fastrec.evaluation import aplt, arp, evaluate, exposure_share, fair_share, miscalibration, tradeoff
from fastrec.evaluation import per_user_split, ranking_metrics
from fastrec.rerank import MMR, Calibrated, FairTopK, PopularityDebias, parse_reranker

N_USERS, N_ITEMS = 60, 40


@pytest.fixture(scope="module")
def data():
    X = sp.random(N_USERS, N_ITEMS, density=0.2, format="csr", random_state=3, dtype=np.float32)
    X.data[:] = 1
    train, test = per_user_split(X, 0.25, random_state=0)
    model = fastrec.ALS(factors=6, iterations=3, random_state=0).fit(train)
    groups = (np.random.default_rng(0).random((N_ITEMS, 4)) < 0.35).astype(float)
    return model, train, test, groups


def rerankers(groups):
    return [Calibrated(groups), PopularityDebias(), PopularityDebias(variant="binary"), MMR(),
            MMR(similarity=groups)]


def test_tradeoff_zero_returns_the_model_list(data):
    model, train, _, groups = data
    users = np.arange(N_USERS)
    own_ids, own_scores = model.recommend(users, n=7)
    for R in rerankers(groups):
        ids, scores = model.recommend(users, n=7, rerank=R.with_tradeoff(0.0))
        np.testing.assert_array_equal(ids, own_ids)
        np.testing.assert_array_equal(scores, own_scores)
        # folded-in users (history from X) and a single user too
        X_rows = train[users[:5]]
        np.testing.assert_array_equal(model.recommend(None, n=7, X=X_rows, rerank=R.with_tradeoff(0.0))[0],
                                      model.recommend(None, n=7, X=X_rows)[0])
        np.testing.assert_array_equal(model.recommend(3, n=7, rerank=R.with_tradeoff(0.0))[0],
                                      model.recommend(3, n=7)[0])


def test_recommend_with_rerank_equals_rerank_of_candidates(data):
    model, _, _, groups = data
    users = np.arange(N_USERS)
    for R in rerankers(groups) + [FairTopK("long_tail")]:
        R.candidates = 15
        cand_ids, cand_scores = model.recommend(users, n=15)
        expected = R.rerank(model, users, cand_ids, cand_scores, n=6)
        got = model.recommend(users, n=6, rerank=R)
        np.testing.assert_array_equal(got[0], expected[0])
        # exclusions and candidates still apply
        ids, _ = model.recommend(users, n=6, rerank=R, exclude=[0, 1, 2], candidates=np.arange(30))
        assert not np.isin(ids, [0, 1, 2]).any() and (ids < 30).all()
        seen = model.user_items_
        for u in users:
            assert not np.isin(ids[u], seen[u].indices).any()


def test_recommend_rerank_raw_ids():
    rng = np.random.default_rng(0)
    users = rng.integers(100, 130, 400)
    items = rng.integers(1000, 1040, 400)
    inter = fastrec.Interactions.from_arrays(users, items, duplicates="max")
    model = fastrec.ALS(factors=4, iterations=2, random_state=0).fit(inter)
    ids, _ = model.recommend(int(users[0]), n=5, raw_ids=True, rerank=MMR(0.5))
    assert len(ids) == 5 and set(ids) <= set(items.tolist())


def test_evaluate_with_rerank_scores_the_reranked_lists(data):
    model, train, test, groups = data
    R = Calibrated(groups, tradeoff=0.7)
    summary = evaluate(model, train, test, k=5, rerank=R)
    users = np.flatnonzero(np.diff(test.indptr))
    ids, _ = model.recommend(users, n=5, rerank=R)
    expected = ranking_metrics(ids, test, 5, users=users)
    for name in ("precision", "ndcg", "recall"):
        assert summary[name] == pytest.approx(expected[name])
    assert evaluate(model, train, test, k=5) == evaluate(model, train, test, k=5, rerank=None)


def test_tradeoff_table(data):
    model, train, test, groups = data
    table = tradeoff(model, train, test, Calibrated(groups), values=[0.0, 0.5, 1.0], k=5)
    assert table.columns == ["value", "ndcg", "miscalibration", "ndcg_change", "metric_change"]
    assert math.isnan(table["value"][0]) and table["value"][1:].tolist() == [0.0, 0.5, 1.0]
    assert table["ndcg"][1] == table["ndcg"][0] and table["miscalibration"][1] == table["miscalibration"][0]
    assert table["miscalibration"][3] < table["miscalibration"][0]
    for R in (PopularityDebias(), MMR(), FairTopK("long_tail")):
        t = tradeoff(model, train, test, R, values=[0.3], k=5)
        assert R.metric in t.columns and t.n_rows == 2
    with pytest.raises(TypeError, match="reranker"):
        tradeoff(model, train, test, "calibrated")


# ------------------------------------------------------------------ metrics
def test_metrics_against_plain_python(data):
    model, train, test, groups = data
    rng = np.random.default_rng(1)
    ranked = np.array([rng.permutation(N_ITEMS)[:6] for _ in range(N_USERS)], dtype=np.int32)
    ranked[0, 4:] = -1
    popularity = np.asarray((train > 0).sum(axis=0)).ravel().astype(float)
    order = sorted(range(N_ITEMS), key=lambda i: (-popularity[i], i))
    head, running = set(), 0.0
    for i in order:
        if running >= 0.8 * popularity.sum():
            break
        head.add(i)
        running += popularity[i]
    lists = [[i for i in row if i >= 0] for row in ranked]
    assert aplt(ranked, train, k=6) == pytest.approx(np.mean([np.mean([i not in head for i in l]) for l in lists]))
    assert arp(ranked, train, k=6) == pytest.approx(np.mean([np.mean([popularity[i] for i in l]) for l in lists]))
    group = [0, 5, 7, 11]
    plain = sum(i in group for l in lists for i in l) / sum(len(l) for l in lists)
    disc = [(1 / math.log2(j + 2), i in group) for l in lists for j, i in enumerate(l)]
    assert exposure_share(ranked, group, N_ITEMS, k=6, discounted=False) == pytest.approx(plain)
    assert exposure_share(ranked, group, N_ITEMS, k=6) == pytest.approx(sum(w for w, g in disc if g)
                                                                         / sum(w for w, _ in disc))
    # miscalibration: Steck's C_KL from its definition
    kls = []
    for u, l in enumerate(lists):
        hist = train[u].indices

        def dist(items):
            return np.mean([groups[i] / groups[i].sum() if groups[i].sum() else np.zeros(4) for i in items], axis=0)
        if not len(hist) or not l or not dist(hist).any():
            continue
        p, q = dist(hist), dist(l)
        qs = 0.99 * q + 0.01 * p
        kls.append(sum(p[g] * math.log(p[g] / qs[g]) for g in range(4) if p[g] > 0))
    assert miscalibration(ranked, train, groups, k=6) == pytest.approx(np.mean(kls))
    # FA*IR satisfaction: k=6, p=0.5, alpha=0.1 -> table from fair_table
    from fastrec.rerank import fair_table
    table = fair_table(6, 0.5, 0.1)
    meets = [all(sum(i in group for i in row[:j + 1] if i >= 0) >= table[j] for j in range(6)) for row in ranked]
    assert fair_share(ranked, group, N_ITEMS, k=6, p=0.5) == pytest.approx(np.mean(meets))


def test_fair_top_k_meets_the_table_for_every_user(data):
    model, train, test, _ = data
    protected = np.arange(N_ITEMS) % 7 == 0
    R = FairTopK(protected, p=0.5, alpha=0.1, candidates=3)
    users = np.arange(N_USERS)
    ids, _ = model.recommend(users, n=8, rerank=R)
    assert fair_share(ids, protected, N_ITEMS, k=8, p=0.5) == 1.0


# ------------------------------------------------------------------ bad input
def test_bad_input_gets_clear_errors(data):
    model, _, _, groups = data
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="tradeoff"):
            Calibrated(groups, tradeoff=bad)
        with pytest.raises(ValueError, match="tradeoff"):
            MMR(tradeoff=bad)
        with pytest.raises(ValueError, match="tradeoff"):
            PopularityDebias(tradeoff=bad)
    with pytest.raises(ValueError, match="item_groups has 10 rows but the model has 40 items"):
        model.recommend(0, n=5, rerank=Calibrated(groups[:10]))
    with pytest.raises(ValueError, match="item_groups must be a 2-D"):
        Calibrated(np.ones(5))
    with pytest.raises(ValueError, match="item_groups must hold finite non-negative"):
        Calibrated(-groups)
    with pytest.raises(ValueError, match="smoothing"):
        Calibrated(groups, smoothing=0)
    with pytest.raises(ValueError, match="protected is empty"):
        FairTopK([])
    with pytest.raises(ValueError, match="protected is empty"):
        FairTopK(np.zeros(N_ITEMS, dtype=bool))
    with pytest.raises(ValueError, match="p must be"):
        FairTopK([1, 2], p=1.0)
    with pytest.raises(IndexError, match="protected contains item 99"):
        model.recommend(0, n=5, rerank=FairTopK([99]))
    with pytest.raises(ValueError, match="n is 41 but the catalogue has 40 items"):
        model.recommend(0, n=41, rerank=MMR())
    with pytest.raises(ValueError, match="variant"):
        PopularityDebias(variant="soft")
    with pytest.raises(ValueError, match="similarity"):
        MMR(similarity="genres")
    with pytest.raises(ValueError, match="similarity has 3 rows"):
        model.recommend(0, n=5, rerank=MMR(similarity=np.ones((3, 3))))
    with pytest.raises(TypeError, match="rerank must be a fastrec.rerank re-ranker"):
        model.recommend(0, n=5, rerank="mmr")
    with pytest.raises(ValueError, match="candidates"):
        MMR(candidates=0)
    with pytest.raises(ValueError, match="order"):
        MMR(order="random")
    with pytest.raises(ValueError, match="unknown re-ranker 'diverse'"):
        parse_reranker("diverse:0.5")
    with pytest.raises(ValueError, match="calibrated needs item groups"):
        parse_reranker("calibrated:0.5")
    assert parse_reranker("mmr:0.25").tradeoff == 0.25 and parse_reranker("fair:0.4").p == 0.4


def test_explain_says_why_an_item_was_moved_in(data):
    model, _, _, groups = data
    names = ["Drama", "Comedy", "Action", "Horror"]
    cases = [(Calibrated(groups, 0.9, group_names=names), "for genre balance: "),
             (PopularityDebias(0.9), "item: "), (MMR(0.9), "for diversity"),
             (FairTopK(np.arange(N_ITEMS) % 5 == 0, p=0.6), "to meet FA*IR's minimum")]
    for R, reason in cases:
        explained = 0
        for user in range(N_USERS):
            own = model.recommend(user, n=5)[0]
            new = model.recommend(user, n=5, rerank=R)[0]
            added = [i for i in new if i not in own]
            if added:
                text = R.explain(model, user, added[0], n=5)
                assert text.startswith("added at rank") and reason in text, text
                if isinstance(R, PopularityDebias):
                    assert " as a long-tail item: " in text or " as a popular item: " in text
                explained += 1
            assert R.explain(model, user, new[0], n=5).startswith(("kept from the model's list", "added"))
        assert explained > 0
        outside = next(i for i in range(N_ITEMS) if i not in model.recommend(0, n=5, rerank=R)[0])
        assert "not in the re-ranked top 5" in R.explain(model, 0, outside, n=5)
    assert any(name in Calibrated(groups, 0.9, group_names=names).explain(model, u, i, n=5)
               for u in range(N_USERS) for i in model.recommend(u, n=5, rerank=cases[0][0])[0]
               if i not in model.recommend(u, n=5)[0] for name in names)
    with pytest.raises(ValueError, match="group_names has 2 names"):
        Calibrated(groups, group_names=["a", "b"])


def test_calibrated_takes_a_features_table_aligned_by_raw_ids():
    from fastrec.data.features import Features
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 50, 600), rng.integers(0, 30, 600)
    inter = fastrec.Interactions.from_arrays(users, 1000 + items, duplicates="max")
    model = fastrec.ALS(factors=4, iterations=2, random_state=0).fit(inter)
    labels = inter.item_map.labels
    groups = (rng.random((labels.size, 3)) < 0.5).astype(float)
    order = rng.permutation(labels.size)  # the table lists the items in another order, by raw id
    table = Features.from_matrix(sp.csr_matrix(groups[order]), names=["a", "b", "c"], ids=labels[order])
    by_table = model.recommend(np.arange(20), n=5, rerank=Calibrated(table, 0.8))[0]
    by_matrix = model.recommend(np.arange(20), n=5, rerank=Calibrated(groups, 0.8))[0]
    np.testing.assert_array_equal(by_table, by_matrix)
    assert Calibrated(table).group_names == ["a", "b", "c"]
