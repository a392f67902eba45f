"""Partitioning a dataset among clients: pathological (McMahan shards) and IID splits.

The latent-distribution split (``latent``) lives in :mod:`fedfomo.latent`.

Every function here is pure and seeded: the same arguments give the same partition. A
partition is a list of :class:`ClientSplit`, one per client, holding index arrays into the
dataset's official train split (``train``, ``val``) and official test split (``test``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

PARTITIONS = ("pathological", "iid", "latent")


@dataclass(frozen=True)
class ClientSplit:
    """Indices of one client's data.

    Attributes
    ----------
    train, val : np.ndarray
        Disjoint indices into the official train split (local data, split train/val).
    test : np.ndarray
        Indices into the official test split, drawn with the client's own label distribution.
    cluster : int, optional
        Latent split only: the latent distribution (cluster) of the client's training data.
    target_cluster : int, optional
        Latent split only: the cluster its val and test sets come from (differs from ``cluster``
        only after ``shuffle_targets``).
    own_val : np.ndarray, optional
        Latent split after ``shuffle_targets`` only: the client's own val indices before the
        shuffle (with ``train``, its local data; ``val`` then holds another client's). Used only
        by :func:`fedfomo.emd.partition_emd_authors`, which, as the FedFomo authors, measures the
        local data before the shuffle.

    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    cluster: int | None = None
    target_cluster: int | None = None
    own_val: np.ndarray | None = None


def pathological_shards(
    labels: np.ndarray, num_clients: int, classes_per_client: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Split a training set into McMahan-style shards, exactly ``classes_per_client`` per client.

    The ``num_clients * classes_per_client`` shards are cut from the label-sorted data so that
    no shard straddles two classes: every class is cut into (as close as possible to) the same
    number of equal shards. Shards are dealt at random, then repaired by random swaps until no
    client holds two shards of the same class, so each client has exactly
    ``classes_per_client`` distinct classes, chosen at random.

    Parameters
    ----------
    labels : np.ndarray
        int labels of the training set, shape (N,).
    num_clients : int
        Number of clients.
    classes_per_client : int
        Number of shards (and distinct classes) per client.
    rng : np.random.Generator
        Source of randomness.

    Returns
    -------
    list of np.ndarray
        Each client's indices into ``labels``, disjoint, sorted.

    """
    classes = np.unique(labels)
    num_classes = len(classes)
    if not 1 <= classes_per_client <= num_classes:
        raise ValueError(
            f"partition.classes_per_client={classes_per_client} is impossible: allowed 1..{num_classes}"
        )
    num_shards = num_clients * classes_per_client
    # How many shards each class is cut into: balanced, the remainder to random classes.
    per_class = np.full(num_classes, num_shards // num_classes)
    per_class[rng.permutation(num_classes)[: num_shards % num_classes]] += 1
    shards: list[np.ndarray] = []
    shard_class: list[int] = []
    for c, n in zip(classes, per_class, strict=True):
        if n == 0:
            continue
        idx = rng.permutation(np.flatnonzero(labels == c))
        if len(idx) < n:
            raise ValueError(
                f"partition.classes_per_client={classes_per_client} with num_clients={num_clients} "
                f"needs {n} shards of class {c}, which has only {len(idx)} samples"
            )
        for part in np.array_split(idx, n):
            shards.append(part)
            shard_class.append(int(c))
    order = rng.permutation(num_shards).reshape(num_clients, classes_per_client)
    cls = np.asarray(shard_class)
    _repair_duplicates(order, cls, rng)
    return [np.sort(np.concatenate([shards[s] for s in row])) for row in order]


def _repair_duplicates(order: np.ndarray, cls: np.ndarray, rng: np.random.Generator) -> None:
    """Swap shards between clients in place until no client holds one class twice."""
    num_clients, k = order.shape
    if k == 1:
        return
    for _ in range(100 * num_clients * k):
        bad = [i for i in range(num_clients) if len(set(cls[order[i]])) < k]
        if not bad:
            return
        i = bad[int(rng.integers(len(bad)))]
        row_cls = cls[order[i]]
        # a position in row i whose class occurs twice in the row
        dup_pos = [p for p in range(k) if (row_cls == row_cls[p]).sum() > 1]
        p = dup_pos[int(rng.integers(len(dup_pos)))]
        j, q = int(rng.integers(num_clients)), int(rng.integers(k))
        if j == i:
            continue
        a, b = order[i, p], order[j, q]
        new_i = np.delete(cls[order[i]], p)
        new_j = np.delete(cls[order[j]], q)
        if cls[b] in new_i or cls[a] in new_j:
            continue
        order[i, p], order[j, q] = b, a
    raise ValueError("could not deal shards so that every client has distinct classes")


def iid_split(num_samples: int, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Split ``num_samples`` indices uniformly at random into ``num_clients`` near-equal parts."""
    return [np.sort(p) for p in np.array_split(rng.permutation(num_samples), num_clients)]


def cap_samples(idx: np.ndarray, max_samples: int | None, rng: np.random.Generator) -> np.ndarray:
    """Keep at most ``max_samples`` of ``idx`` (a random subset), or all when it is None."""
    if max_samples is None or len(idx) <= max_samples:
        return idx
    return np.sort(rng.choice(idx, size=max_samples, replace=False))


def train_val_split(
    idx: np.ndarray, labels: np.ndarray, val_ratio: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split a client's local indices into train and val, stratified by class.

    Each class contributes ``round(val_ratio * count)`` samples to val (at least one sample
    overall stays on each side when the client has two or more samples).
    """
    train_parts, val_parts = [], []
    for c in np.unique(labels[idx]):
        members = rng.permutation(idx[labels[idx] == c])
        n_val = int(round(val_ratio * len(members)))
        val_parts.append(members[:n_val])
        train_parts.append(members[n_val:])
    train = np.concatenate(train_parts)
    val = np.concatenate(val_parts)
    if len(val) == 0 and len(train) > 1:
        val, train = train[:1], train[1:]
    if len(train) == 0 and len(val) > 1:
        train, val = val[:1], val[1:]
    return np.sort(train), np.sort(val)


def matching_test_indices(
    local_labels: np.ndarray, test_labels: np.ndarray, size: int, rng: np.random.Generator
) -> np.ndarray:
    """Draw ``size`` test indices with the label distribution of ``local_labels``.

    Class c gets ``size * share_c`` images (largest-remainder rounding), drawn without
    replacement from the official test images of class c (all of them if there are fewer).
    """
    classes, counts = np.unique(local_labels, return_counts=True)
    quota = size * counts / counts.sum()
    take = np.floor(quota).astype(int)
    rest = size - take.sum()
    take[np.argsort(-(quota - take), kind="stable")[:rest]] += 1
    parts = []
    for c, n in zip(classes, take, strict=True):
        pool = np.flatnonzero(test_labels == c)
        parts.append(rng.choice(pool, size=min(n, len(pool)), replace=False))
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


def make_partition(
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    *,
    kind: str,
    num_clients: int,
    val_ratio: float,
    seed: int,
    classes_per_client: int = 2,
    samples_per_client: int | None = None,
) -> list[ClientSplit]:
    """Build every client's train / val / test indices.

    Parameters
    ----------
    train_labels, test_labels : np.ndarray
        Labels of the official train and test splits.
    kind : str
        ``pathological`` or ``iid``.
    num_clients : int
        Number of clients.
    val_ratio : float
        Fraction of each client's local data held out for validation, in (0, 1).
    seed : int
        Seed of every random choice.
    classes_per_client : int
        Classes per client for the pathological split.
    samples_per_client : int, optional
        Cap on each client's local data (train + val), for scaled-down runs.

    Returns
    -------
    list of ClientSplit
        The test set of a client has ``len(local) * len(test_split) / len(train_split)`` images
        (the dataset's own test:train ratio) with the client's local label distribution.

    """
    rng = np.random.default_rng(seed)
    if kind == "pathological":
        local = pathological_shards(train_labels, num_clients, classes_per_client, rng)
    elif kind == "iid":
        local = iid_split(len(train_labels), num_clients, rng)
    elif kind == "latent":
        raise ValueError("partition.name='latent' needs cluster assignments: use fedfomo.latent.latent_partition")
    else:
        raise ValueError(f"partition.name={kind!r} is not supported; allowed: {', '.join(PARTITIONS)}")
    ratio = len(test_labels) / len(train_labels)
    splits = []
    for part in local:
        idx = cap_samples(part, samples_per_client, rng)
        train, val = train_val_split(idx, train_labels, val_ratio, rng)
        size = max(1, int(round(len(idx) * ratio)))
        test = matching_test_indices(train_labels[idx], test_labels, size, rng)
        splits.append(ClientSplit(train=train, val=val, test=test))
    return splits


def label_counts(labels: np.ndarray, idx: np.ndarray, num_classes: int) -> list[int]:
    """Count of each class among ``labels[idx]``."""
    return np.bincount(labels[idx], minlength=num_classes).astype(int).tolist()


def with_shared_train(split: ClientSplit, shared: np.ndarray | None) -> ClientSplit:
    """A client's split with the indices ``shared`` added to its train indices (union); val and test unchanged."""
    if shared is None or len(shared) == 0:
        return split
    return dataclasses.replace(split, train=np.union1d(split.train, shared))
