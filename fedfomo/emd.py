"""Earth Mover's Distance between label distributions, the paper's measure of non-IIDness.

Two measures live here:

- :func:`partition_emd` (``emd`` in partition.json and summary.json): ours, a true EMD (1-D
  Wasserstein over class indices, described below), client vs the pooled federation;
- :func:`partition_emd_authors` (``emd_authors``): the number the FedFomo authors compute and
  report (NVlabs/FedFomo, ``federated/utils.py``, ``compute_emd``), client vs the whole official
  training set; see :func:`authors_emd`. Comparable with the paper's EMD values.

Ours (``emd``). The paper reports, per setting, "the average Earth Mover's Distance (EMD) between local client
data and the total dataset across all clients" without saying which ground distance it uses.

The ground distance used here (the default, ``ground="index"``) is ``|i - j|`` between class
ids ``i`` and ``j``: the EMD of two label distributions is then the 1-D Wasserstein-1 distance
between them over the class indices (:func:`scipy.stats.wasserstein_distance`). Its range
grows with the number of classes (0 to C-1). ``ground="discrete"`` (distance 1 between any two
different classes) is offered for comparison; it reduces to the total-variation distance
``0.5 * sum_c |p_c - q_c|``, in [0, 1].

A client's label distribution is that of its local data, train and val together (what the
client holds, after any ``shuffle_targets``); the federation's is that of all clients' local
data pooled (every image counted once per client holding it). The average is unweighted over
clients.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import wasserstein_distance

GROUNDS = ("index", "discrete")
DEFAULT_GROUND = "index"


def label_distribution(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Share of each class among ``labels``.

    Parameters
    ----------
    labels : np.ndarray
        int class ids, shape (N,), N >= 1.
    num_classes : int
        Number of classes C.

    Returns
    -------
    np.ndarray
        Shape (C,), non-negative, sums to 1.

    Raises
    ------
    ValueError
        If ``labels`` is empty.

    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0:
        raise ValueError("the label distribution of an empty set is undefined")
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return counts / counts.sum()


def emd(p: np.ndarray, q: np.ndarray, ground: str = DEFAULT_GROUND) -> float:
    """Earth Mover's Distance between two label distributions over the same classes.

    Parameters
    ----------
    p, q : np.ndarray
        Non-negative class weights, shape (C,) each (normalized here).
    ground : str
        The ground distance used: ``index`` (``|i - j|`` between class ids, the default) or
        ``discrete`` (1 between different classes: total variation).

    Returns
    -------
    float
        The distance, >= 0.

    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"label distributions must have the same shape (C,); got {p.shape} and {q.shape}")
    if p.sum() <= 0 or q.sum() <= 0 or (p < 0).any() or (q < 0).any():
        raise ValueError("label distributions must be non-negative with a positive total")
    p, q = p / p.sum(), q / q.sum()
    if ground == "index":
        classes = np.arange(len(p), dtype=np.float64)
        return float(wasserstein_distance(classes, classes, u_weights=p, v_weights=q))
    if ground == "discrete":
        return float(0.5 * np.abs(p - q).sum())
    raise ValueError(f"ground={ground!r} is not supported; allowed: {', '.join(GROUNDS)}")


def average_emd(client_labels: Sequence[np.ndarray], num_classes: int, ground: str = DEFAULT_GROUND) -> float:
    """Mean over clients of the EMD between a client's labels and the federation's.

    Parameters
    ----------
    client_labels : sequence of np.ndarray
        Each client's local labels (train and val together), each non-empty.
    num_classes : int
        Number of classes C.
    ground : str
        Ground distance, see :func:`emd`.

    Returns
    -------
    float
        Unweighted mean over clients; the federation's distribution pools every client's labels.

    """
    if len(client_labels) == 0:
        raise ValueError("average_emd needs at least one client")
    pooled = label_distribution(np.concatenate([np.asarray(y) for y in client_labels]), num_classes)
    return float(np.mean([emd(label_distribution(y, num_classes), pooled, ground) for y in client_labels]))


def partition_emd(train_labels: np.ndarray, splits: Sequence, num_classes: int, ground: str = DEFAULT_GROUND) -> float:
    """:func:`average_emd` of a partition: each client's local data is its ``train`` plus ``val`` indices.

    Parameters
    ----------
    train_labels : np.ndarray
        Labels of the official train split (the indices of ``splits`` point into it).
    splits : sequence of ClientSplit
        Every client's split (:class:`fedfomo.partition.ClientSplit`).
    num_classes : int
        Number of classes C.
    ground : str
        Ground distance, see :func:`emd`.

    Returns
    -------
    float
        The average EMD.

    """
    labels = np.asarray(train_labels)
    return average_emd([labels[np.concatenate([s.train, s.val])] for s in splits], num_classes, ground)


# ---------------------------------------------------------------- the authors' EMD (NVlabs/FedFomo)

#: Class counts of the full official training split of each dataset (the authors' reference
#: distribution, ``train_data.targets``), for recomputing :func:`authors_emd` from the label
#: counts of an old partition.json (tests/test_emd.py checks them against the real files).
TRAIN_LABEL_COUNTS = {
    "mnist": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    "cifar10": (5000,) * 10,
    "cifar100": (500,) * 100,
}


def authors_emd_counts(client_counts: ArrayLike, reference_counts: ArrayLike) -> float:
    """The authors' EMD from per-class counts over the same classes (see :func:`authors_emd`).

    Parameters
    ----------
    client_counts, reference_counts : array_like
        Non-negative counts (or weights) per class, shape (C,) each, each with a positive total.

    Returns
    -------
    float
        ``sum_{c: p_c > 0} |p_c - q_c| + sum_{c: q_c > 0} |p_c - q_c|`` with ``p``, ``q`` the
        normalized counts; in [0, 4).

    """
    p = np.asarray(client_counts, dtype=np.float64)
    q = np.asarray(reference_counts, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"label counts must have the same shape (C,); got {p.shape} and {q.shape}")
    if p.sum() <= 0 or q.sum() <= 0 or (p < 0).any() or (q < 0).any():
        raise ValueError("label counts must be non-negative with a positive total")
    p, q = p / p.sum(), q / q.sum()
    gap = np.abs(p - q)
    return float(gap[p > 0].sum() + gap[q > 0].sum())


def authors_emd(client_labels: np.ndarray, reference_labels: np.ndarray) -> float:
    """The "EMD" of the FedFomo authors' code between two label arrays.

    Re-implements ``compute_emd(targets_1, targets_2)`` of NVlabs/FedFomo
    (``federated/utils.py``): with ``p`` and ``q`` the label frequencies of ``client_labels``
    and ``reference_labels``, it sums ``|p(t) - q(t)|`` over the labels ``t`` present in
    ``client_labels``, plus ``|q(t) - p(t)|`` over the labels present in ``reference_labels``.
    A label present in both arrays is counted twice, a label present in only one once. It is not
    a transport distance: it lies between the L1 distance ``sum_t |p(t) - q(t)|`` and twice it
    (so in [0, 4)), is symmetric and is 0 only for identical distributions. One class out of 10
    balanced ones gives ``0.9 + (0.9 + 9 * 0.1) = 2.7``, the paper's EMD of CIFAR-10 with D=10.

    Parameters
    ----------
    client_labels, reference_labels : np.ndarray
        Class labels (any integers), shape (N,) and (M,), each non-empty.

    Returns
    -------
    float
        The authors' EMD, >= 0.

    References
    ----------
    Zhang et al., Personalized Federated Learning with First Order Model Optimization, ICLR
    2021; code https://github.com/NVlabs/FedFomo, ``federated/utils.py`` (``compute_emd``).

    """
    a = np.asarray(client_labels).ravel()
    b = np.asarray(reference_labels).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError("the label distribution of an empty set is undefined")
    classes = np.union1d(a, b)
    counts_a = np.bincount(np.searchsorted(classes, a), minlength=len(classes))
    counts_b = np.bincount(np.searchsorted(classes, b), minlength=len(classes))
    return authors_emd_counts(counts_a, counts_b)


def partition_emd_authors(train_labels: np.ndarray, splits: Sequence,
                          reference_labels: np.ndarray | None = None) -> float:
    """Mean over clients of :func:`authors_emd` (client's local data vs the whole training set).

    Mirrors what the FedFomo authors report per setting (NVlabs/FedFomo,
    ``federated_datasets/cifar10.py``: ``np.mean([compute_emd(client.targets,
    self.train_data.targets) for client in self.clients])``): ``client.targets`` are the labels
    of the client's whole local data before its train/val split, here its ``train`` plus ``val``
    indices; the reference is every label of the training split, not only the images the
    clients hold. The mean is unweighted over clients. The authors compute it before shuffling
    targets (out-of-local-distribution setting), so after ``shuffle_targets`` a client's own
    val indices from before the shuffle (``ClientSplit.own_val``) are used, not the val set it
    was given: the shuffled setting has the EMD of the unshuffled one.

    Parameters
    ----------
    train_labels : np.ndarray
        Labels of the official train split (the indices of ``splits`` point into it).
    splits : sequence of ClientSplit
        Every client's split (:class:`fedfomo.partition.ClientSplit`).
    reference_labels : np.ndarray, optional
        The reference labels; default ``train_labels`` (the full training set, as the authors).

    Returns
    -------
    float
        The average of the authors' EMD.

    """
    if len(splits) == 0:
        raise ValueError("partition_emd_authors needs at least one client")
    labels = np.asarray(train_labels).ravel()
    reference = labels if reference_labels is None else np.asarray(reference_labels).ravel()
    # the same as authors_emd per client, with the reference counted once
    classes = np.union1d(labels, reference)
    ref_counts = np.bincount(np.searchsorted(classes, reference), minlength=len(classes))
    out = []
    for s in splits:
        own_val = s.val if getattr(s, "own_val", None) is None else s.own_val
        local = labels[np.concatenate([s.train, own_val]).astype(np.int64)]
        if local.size == 0:
            raise ValueError("the label distribution of an empty set is undefined")
        out.append(authors_emd_counts(np.bincount(np.searchsorted(classes, local), minlength=len(classes)),
                                      ref_counts))
    return float(np.mean(out))


def partition_emd_facts(train_labels: np.ndarray, splits: Sequence, num_classes: int) -> dict:
    """Both EMDs of a partition, as partition.json and summary.json record them.

    Returns
    -------
    dict
        ``emd`` (ours, :func:`partition_emd`), ``emd_ground`` (its ground distance) and
        ``emd_authors`` (:func:`partition_emd_authors`).

    """
    return {"emd": partition_emd(train_labels, splits, num_classes), "emd_ground": DEFAULT_GROUND,
            "emd_authors": partition_emd_authors(train_labels, splits)}
