"""Earth Mover's Distance of label distributions (ours and the FedFomo authors') against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedfomo.emd import (
    TRAIN_LABEL_COUNTS,
    authors_emd,
    authors_emd_counts,
    average_emd,
    emd,
    label_distribution,
    partition_emd,
    partition_emd_authors,
    partition_emd_facts,
)
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


# ---------------------------------------------------------------- the authors' EMD (NVlabs/FedFomo compute_emd)


def test_authors_one_class_of_ten_balanced_is_2_70():
    # client: class 3 only (p = 1); reference: 10 balanced classes (q = 0.1 each)
    # labels of the client: |1 - 0.1| = 0.9; labels of the reference: 0.9 (class 3) + 9 x 0.1 = 1.8
    reference = np.repeat(np.arange(10), 50)
    for c in (0, 3, 9):
        assert authors_emd(np.full(100, c), reference) == pytest.approx(2.70, abs=1e-12)
    # ten clients holding one class each: the mean is 2.70 too
    splits = [ClientSplit(train=np.flatnonzero(reference == c)[:40], val=np.flatnonzero(reference == c)[40:],
                          test=np.array([0])) for c in range(10)]
    assert partition_emd_authors(reference, splits) == pytest.approx(2.70, abs=1e-12)


def test_authors_partial_overlap_by_hand():
    # client p = (0.5, 0.5, 0), reference q = (0, 0.75, 0.25): classes 0 (client only), 1 (both), 2 (reference only)
    # client's labels {0, 1}: 0.5 + 0.25; reference's labels {1, 2}: 0.25 + 0.25; total 1.25 (L1 distance: 1.0)
    a, b = np.array([0, 0, 1, 1]), np.array([1, 1, 1, 2])
    assert authors_emd(a, b) == pytest.approx(1.25)
    assert authors_emd(b, a) == pytest.approx(1.25)
    assert authors_emd_counts([2, 2, 0], [0, 3, 1]) == pytest.approx(1.25)
    # labels need not be 0..C-1
    assert authors_emd(np.array([7, 7, 42, 42]), np.array([42, 42, 42, 99])) == pytest.approx(1.25)
    # disjoint supports: each label counted once, 1 + 1
    assert authors_emd(np.array([0, 0]), np.array([1])) == pytest.approx(2.0)


def test_authors_emd_is_not_bounded_by_2():
    # a label present on both sides counts twice: near-opposite distributions over the same two labels approach 4
    assert authors_emd_counts([99, 1], [1, 99]) == pytest.approx(4 * 0.98)


def test_authors_rejects_bad_input():
    with pytest.raises(ValueError):
        authors_emd(np.array([], dtype=int), np.array([1]))
    with pytest.raises(ValueError):
        authors_emd_counts([1, 0], [1, 0, 0])
    with pytest.raises(ValueError):
        authors_emd_counts([0, 0], [1, 0])
    with pytest.raises(ValueError):
        partition_emd_authors(np.array([0, 1]), [])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 20), min_size=5, max_size=5), st.lists(st.integers(0, 20), min_size=5, max_size=5),
       st.integers(1, 4))
def test_authors_properties(p, q, k):
    p, q = np.array(p), np.array(q)
    if p.sum() == 0 or q.sum() == 0:
        return
    d = authors_emd_counts(p, q)
    assert d == pytest.approx(authors_emd_counts(q, p), abs=1e-12)  # symmetric
    assert authors_emd_counts(p, k * p) == pytest.approx(0.0, abs=1e-12)  # identical distributions
    l1 = np.abs(p / p.sum() - q / q.sum()).sum()
    assert l1 - 1e-12 <= d <= 2 * l1 + 1e-12  # between the L1 distance and twice it: in [0, 4)
    assert d < 4
    assert (d == 0) == np.allclose(p / p.sum(), q / q.sum())
    # from labels, the same number
    la, lb = np.repeat(np.arange(5), p), np.repeat(np.arange(5), q)
    assert authors_emd(la, lb) == pytest.approx(d, abs=1e-12)


def test_partition_emd_authors_uses_train_val_and_the_whole_training_set():
    labels = np.array([0, 0, 1, 1, 2, 2])  # the whole training set: 1/3 each
    # client 0: indices 0 (train) + 2 (val) = labels 0, 1; client 1: indices 4, 5 = labels 2, 2
    splits = [ClientSplit(train=np.array([0]), val=np.array([2]), test=np.array([0])),
              ClientSplit(train=np.array([4, 5]), val=np.array([], dtype=np.int64), test=np.array([0]))]
    # client 0: p = (.5, .5, 0): labels {0,1}: 2 x 1/6; reference {0,1,2}: 1/6 + 1/6 + 1/3 -> 1
    # client 1: p = (0, 0, 1): label {2}: 2/3; reference: 1/3 + 1/3 + 2/3 -> 2; mean 1.5
    # (index 1 and 3 belong to no client: the reference is not the pooled clients' data)
    assert partition_emd_authors(labels, splits) == pytest.approx(1.5)
    pooled = np.array([0, 1, 2, 2])
    assert partition_emd_authors(labels, splits, reference_labels=pooled) == pytest.approx(
        np.mean([authors_emd(np.array([0, 1]), pooled), authors_emd(np.array([2, 2]), pooled)]))
    facts = partition_emd_facts(labels, splits, 3)
    assert facts == {"emd": pytest.approx(partition_emd(labels, splits, 3)), "emd_ground": "index",
                     "emd_authors": pytest.approx(1.5)}


# ---------------------------------------------------------------- real data


@pytest.mark.realdata
def test_train_label_counts_match_the_real_files(data_root):
    from fedfomo.data import load_dataset

    c100 = data_root / "cifar-100-python"
    names = ["mnist", "cifar10"] + (["cifar100"] if (c100 / "train").exists() and (c100 / "test").exists() else [])
    for name in names:
        ds = load_dataset(name, str(data_root))
        assert tuple(np.bincount(ds.train_y.numpy(), minlength=ds.num_classes)) == TRAIN_LABEL_COUNTS[name], name


@pytest.mark.realdata
def test_cifar10_d10_label_split_gives_the_papers_2_70(data_root, monkeypatch):
    # the authors' D=10 on CIFAR-10: clusters are the classes (partition.cluster_by=auto), 15 clients;
    # the paper reports EMD 2.70 for it
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from fedfomo import embeddings
    from fedfomo.data import load_dataset

    def boom(*a, **k):
        raise AssertionError("label clusters need no embedding or K-Means")

    monkeypatch.setattr(embeddings, "clusters_from_config", boom)
    monkeypatch.setattr(embeddings, "embed_dataset", boom)
    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base=None):
        cfg = compose(config_name="config", overrides=["dataset=cifar10", "partition=latent",
                                                       "partition.num_distributions=10", "num_clients=15"])
    ds = load_dataset("cifar10", str(data_root))
    splits = embeddings.latent_splits(cfg, ds)
    y = ds.train_y.numpy()
    assert [s.cluster for s in splits] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 6, 7, 8, 9]
    for s in splits:  # every client holds one class, its cluster's
        assert set(np.unique(y[np.concatenate([s.train, s.val])])) == {s.cluster}
        assert set(np.unique(ds.test_y.numpy()[s.test])) == {s.cluster}
    assert partition_emd_authors(y, splits) == pytest.approx(2.70, abs=1e-9)
    # ours (1-D Wasserstein over class indices, vs the pooled clients) is another number
    assert partition_emd(y, splits, 10) > 1.0
