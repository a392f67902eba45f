"""Earth Mover's Distance of label distributions against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedfomo.emd import average_emd, emd, label_distribution, partition_emd
from fedfomo.partition import ClientSplit


def test_label_distribution():
    np.testing.assert_allclose(label_distribution(np.array([0, 0, 2, 3]), 5), [0.5, 0, 0.25, 0.25, 0])
    with pytest.raises(ValueError):
        label_distribution(np.array([], dtype=int), 3)


@pytest.mark.parametrize(("a", "b", "index", "discrete"), [(0, 1, 0.5, 0.5), (0, 9, 4.5, 0.5), (3, 3, 0.0, 0.0)])
def test_two_clients_with_one_class_each(a, b, index, discrete):
    # equal-sized clients holding one class each: the federation is half a, half b
    clients = [np.full(10, a), np.full(10, b)]
    assert average_emd(clients, 10) == pytest.approx(index)
    assert average_emd(clients, 10, ground="index") == pytest.approx(index)
    assert average_emd(clients, 10, ground="discrete") == pytest.approx(discrete)


def test_unequal_clients_by_hand():
    # A = 3 x class 0, B = 1 x class 2; pooled = (0.75, 0, 0.25)
    # EMD(A): 0.25 of mass moves 0 -> 2 = 0.5; EMD(B): 0.75 moves 2 -> 0 = 1.5; mean 1.0
    clients = [np.array([0, 0, 0]), np.array([2])]
    assert average_emd(clients, 3) == pytest.approx(1.0)
    # total variation: A 0.25, B 0.75
    assert average_emd(clients, 3, ground="discrete") == pytest.approx(0.5)


def test_identical_clients_have_zero_emd():
    y = np.array([0, 1, 1, 2, 5])
    assert average_emd([y, y.copy(), y[::-1]], 6) == pytest.approx(0.0)


def test_emd_rejects_bad_input():
    with pytest.raises(ValueError, match="ground"):
        emd(np.array([1.0, 0.0]), np.array([0.0, 1.0]), ground="cosine")
    with pytest.raises(ValueError):
        emd(np.array([1.0, 0.0]), np.array([0.0, 1.0, 0.0]))
    with pytest.raises(ValueError):
        average_emd([], 3)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 20), min_size=6, max_size=6), st.lists(st.integers(0, 20), min_size=6, max_size=6))
def test_index_ground_is_l1_of_cdfs(p, q):
    # 1-D Wasserstein-1 with unit spacing = sum of |CDF_p - CDF_q|
    p, q = np.array(p, float), np.array(q, float)
    if p.sum() == 0 or q.sum() == 0:
        return
    expected = np.abs(np.cumsum(p / p.sum()) - np.cumsum(q / q.sum())).sum()
    assert emd(p, q) == pytest.approx(expected, abs=1e-9)
    assert emd(p, q) == pytest.approx(emd(q, p), abs=1e-12)
    assert emd(p, q, "discrete") == pytest.approx(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())


def test_partition_emd_uses_train_and_val():
    labels = np.array([0, 0, 1, 1, 0, 1])
    # client 0 holds 0,0 (train) + 1 (val); client 1 holds 1 (train) + 0,1 (val): both 2/3 vs 1/3
    splits = [ClientSplit(train=np.array([0, 1]), val=np.array([2]), test=np.array([0])),
              ClientSplit(train=np.array([3]), val=np.array([4, 5]), test=np.array([0]))]
    # pooled = (0.5, 0.5); each client is 1/6 away in mass over distance 1
    assert partition_emd(labels, splits, 2) == pytest.approx(1 / 6)
