"""Partitions: sizes, disjointness, classes per client, test distributions, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedfomo.partition import (
    label_counts,
    make_partition,
    matching_test_indices,
    pathological_shards,
    train_val_split,
)


def _labels(per_class: list[int], seed: int = 0) -> np.ndarray:
    y = np.concatenate([np.full(n, c) for c, n in enumerate(per_class)])
    return np.random.default_rng(seed).permutation(y)


TRAIN = _labels([600, 540, 660, 610, 590, 570, 620, 580, 600, 630])
TEST = _labels([100] * 10, seed=1)


def test_pathological_exact_classes_and_disjoint():
    parts = pathological_shards(TRAIN, 15, 2, np.random.default_rng(0))
    assert len(parts) == 15
    allidx = np.concatenate(parts)
    assert len(allidx) == len(np.unique(allidx)) == len(TRAIN)  # disjoint and complete
    for p in parts:
        assert len(np.unique(TRAIN[p])) == 2
    # 30 shards over 10 classes: every class is used by exactly 3 clients
    users = np.zeros(10, int)
    for p in parts:
        users[np.unique(TRAIN[p])] += 1
    np.testing.assert_array_equal(users, 3)


def test_make_partition_sizes_and_splits():
    parts = make_partition(TRAIN, TEST, kind="pathological", num_clients=15, val_ratio=0.2, seed=3)
    for sp in parts:
        local = np.concatenate([sp.train, sp.val])
        assert len(np.intersect1d(sp.train, sp.val)) == 0
        assert len(sp.val) == pytest.approx(0.2 * len(local), abs=2)
        # test set: the dataset's test:train ratio, same classes and shares as local data
        assert len(sp.test) == round(len(local) * len(TEST) / len(TRAIN))
        assert set(np.unique(TEST[sp.test])) == set(np.unique(TRAIN[local]))
        assert len(np.unique(sp.test)) == len(sp.test)
    train_all = np.concatenate([np.concatenate([s.train, s.val]) for s in parts])
    assert len(np.unique(train_all)) == len(train_all)


def test_make_partition_deterministic_and_seed_sensitive():
    a = make_partition(TRAIN, TEST, kind="pathological", num_clients=15, val_ratio=0.2, seed=7)
    b = make_partition(TRAIN, TEST, kind="pathological", num_clients=15, val_ratio=0.2, seed=7)
    c = make_partition(TRAIN, TEST, kind="pathological", num_clients=15, val_ratio=0.2, seed=8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.train, y.train)
        np.testing.assert_array_equal(x.val, y.val)
        np.testing.assert_array_equal(x.test, y.test)
    assert any(not np.array_equal(x.train, z.train) for x, z in zip(a, c))


def test_iid_partition_balanced():
    parts = make_partition(TRAIN, TEST, kind="iid", num_clients=10, val_ratio=0.25, seed=0)
    sizes = [len(s.train) + len(s.val) for s in parts]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == len(TRAIN)


def test_samples_per_client_cap():
    parts = make_partition(TRAIN, TEST, kind="pathological", num_clients=15, val_ratio=0.2, seed=0,
                           samples_per_client=100)
    assert all(len(s.train) + len(s.val) == 100 for s in parts)


def test_impossible_classes_per_client():
    with pytest.raises(ValueError, match="classes_per_client"):
        pathological_shards(TRAIN, 5, 11, np.random.default_rng(0))
    with pytest.raises(ValueError, match="classes_per_client"):
        pathological_shards(TRAIN, 5, 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"partition\.name"):
        make_partition(TRAIN, TEST, kind="dirichlet", num_clients=5, val_ratio=0.2, seed=0)


def test_matching_test_indices_shares():
    local = np.array([0] * 30 + [3] * 10)
    idx = matching_test_indices(local, TEST, 20, np.random.default_rng(0))
    assert label_counts(TEST, idx, 10) == [15, 0, 0, 5, 0, 0, 0, 0, 0, 0]


def test_train_val_split_stratified():
    idx = np.arange(len(TRAIN))[:500]
    tr, va = train_val_split(idx, TRAIN, 0.2, np.random.default_rng(0))
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 500
    for c in range(10):
        n = (TRAIN[idx] == c).sum()
        assert (TRAIN[va] == c).sum() == round(0.2 * n)


@settings(max_examples=60, deadline=None)
@given(clients=st.integers(1, 60), cpc=st.integers(1, 10), seed=st.integers(0, 2**16))
def test_pathological_properties(clients, cpc, seed):
    parts = pathological_shards(TRAIN, clients, cpc, np.random.default_rng(seed))
    allidx = np.concatenate(parts)
    assert len(allidx) == len(np.unique(allidx))  # disjoint
    used = np.unique(TRAIN[allidx])
    assert len(used) == min(10, clients * cpc)
    assert len(allidx) == np.isin(TRAIN, used).sum()  # every sample of a used class is dealt
    for p in parts:
        assert len(np.unique(TRAIN[p])) == cpc
