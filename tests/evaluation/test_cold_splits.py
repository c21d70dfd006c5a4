"""cold_item_split and cold_user_split: whole items or users held out, the same for the same seed."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from fastrec import Interactions
from fastrec.evaluation import cold_item_split, cold_user_split, user_split


def _X(seed=0):
    rng = np.random.default_rng(seed)
    dense = (rng.random((50, 40)) < 0.2).astype(np.float32)
    dense[:, 3] = 0  # an item without interactions is never held out
    return sp.csr_matrix(dense)


@pytest.mark.parametrize("split, axis", [(cold_item_split, 1), (cold_user_split, 0)])
def test_whole_rows_or_columns_are_held_out(split, axis):
    X = _X()
    train, test, kept, held = split(X, 0.25, random_state=3)
    assert train.shape == test.shape == X.shape
    assert (train + test != X).nnz == 0
    counts_train = np.asarray((train != 0).sum(axis=1 - axis)).ravel()
    counts_test = np.asarray((test != 0).sum(axis=1 - axis)).ravel()
    assert (counts_train[held] == 0).all() and (counts_test[kept] == 0).all()
    active = np.flatnonzero(np.asarray((X != 0).sum(axis=1 - axis)).ravel())
    assert held.size == round(0.25 * active.size) and np.isin(held, active).all()
    assert np.array_equal(np.union1d(kept, held), np.arange(X.shape[axis]))
    again = split(X, 0.25, random_state=3)
    assert np.array_equal(again[3], held) and (again[1] != test).nnz == 0
    assert not np.array_equal(split(X, 0.25, random_state=4)[3], held)


def test_counts_interactions_and_errors():
    X = _X()
    inter = Interactions.from_csr(X)
    train, test, _, held = cold_item_split(inter, 5, random_state=0)
    assert held.size == 5 and isinstance(train, Interactions) and train.item_map == inter.item_map
    assert np.array_equal(cold_user_split(X, 0.2, random_state=1)[3], user_split(X, 0.2, random_state=1)[3])
    with pytest.raises(ValueError, match="test_items"):
        cold_item_split(X, 1.5)
    with pytest.raises(ValueError, match="test_items asks for 100 items"):
        cold_item_split(X, 100)
