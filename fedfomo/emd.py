"""Earth Mover's Distance between label distributions, the paper's measure of non-IIDness.

The paper reports, per setting, "the average Earth Mover's Distance (EMD) between local client
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
