"""The latent-distribution non-IID split (paper, Section 4 and Appendix A.5), as pure functions.

Pipeline (the embedding and its cache are in :mod:`fedfomo.embeddings`, VGG-11 in :mod:`fedfomo.vgg`),
with ``partition.cluster_by=kmeans`` (steps 1-3 are replaced by :func:`label_clusters`, the class
labels as clusters, with ``cluster_by=label``; see :func:`resolve_cluster_by`):

1. every train and test image is embedded (VGG-11's second FC layer, 4096-d, in the paper);
2. :func:`reduce_dim`: PCA of train and test embeddings together, to ``pca_dim`` (256);
3. :func:`kmeans_clusters`: K-Means into D clusters over train and test together, so similar
   images of both splits share a cluster; clusters are renumbered by decreasing size;
4. :func:`spread_clients`: clients are spread evenly over the D clusters in contiguous blocks
   (clients 0..k-1 in cluster 0, ...); when D does not divide the number of clients, the first
   ``num_clients % D`` clusters (the largest ones) get one client more;
5. :func:`sample_latent_clients`: the clients of a cluster share its train images out evenly at
   random, without replacement (disjoint local data, optionally capped by
   ``samples_per_client``), split train / val as the other partitions do; each client's test set
   is drawn without replacement from its cluster's official test images, of size
   ``len(local) * |test split| / |train split|`` (all of the cluster's test images if fewer);
6. :func:`shuffle_targets` (out-of-local-distribution setting, optional): the (val, test) pairs
   are permuted among clients by a seeded uniformly random permutation (not forced to be a
   derangement: a client may keep its own pair); training data stays.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fedfomo.partition import ClientSplit, cap_samples, train_val_split

EMBEDDERS = ("vgg11", "pixels")
#: ``partition.cluster_by``: how images are grouped into the D latent distributions.
CLUSTER_BY = ("auto", "kmeans", "label")


def resolve_cluster_by(cluster_by: str, num_distributions: int, num_classes: int) -> str:
    """What ``partition.cluster_by`` means for this run: ``kmeans`` or ``label``.

    ``label`` makes the class labels the clusters (cluster d = every train and test image of
    class d), as the FedFomo authors do for D=10 on CIFAR-10 (NVlabs/FedFomo,
    ``federated_datasets/cifar10.py``: with ``num_distributions == 10`` the distributions are the
    ten classes, no K-Means); it needs D equal to the number of classes. ``kmeans`` clusters
    embeddings (Appendix A.5). ``auto`` is ``label`` when D equals the number of classes, else
    ``kmeans``.

    Parameters
    ----------
    cluster_by : str
        ``auto``, ``kmeans`` or ``label``.
    num_distributions : int
        Number of clusters D.
    num_classes : int
        Number of classes of the dataset.

    Returns
    -------
    str
        ``kmeans`` or ``label``.

    Raises
    ------
    ValueError
        One line naming ``partition.cluster_by`` and what is allowed.

    """
    if cluster_by not in CLUSTER_BY:
        raise ValueError(f"partition.cluster_by={cluster_by!r} is not supported; allowed: {', '.join(CLUSTER_BY)}")
    if cluster_by == "auto":
        return "label" if num_distributions == num_classes else "kmeans"
    if cluster_by == "label" and num_distributions != num_classes:
        raise ValueError(f"partition.cluster_by=label needs partition.num_distributions={num_classes} (the number "
                         f"of classes), got {num_distributions}; allowed with D={num_distributions}: auto, kmeans")
    return cluster_by


def label_clusters(train_labels: np.ndarray, test_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The class labels as cluster ids (``partition.cluster_by=label``): no embedding, no K-Means.

    Cluster d holds every train and test image of class d; ids are not renumbered by size.

    Returns
    -------
    (np.ndarray, np.ndarray)
        int64 copies of ``train_labels`` and ``test_labels``.

    """
    return np.asarray(train_labels, dtype=np.int64).copy(), np.asarray(test_labels, dtype=np.int64).copy()


def reduce_dim(features: np.ndarray, pca_dim: int, seed: int) -> np.ndarray:
    """PCA of the rows of ``features`` to ``pca_dim`` dimensions (sklearn, seeded).

    Parameters
    ----------
    features : np.ndarray
        Embeddings, shape (N, d).
    pca_dim : int
        Target dimension; capped at ``min(N, d)``.
    seed : int
        Seed of the randomized SVD.

    Returns
    -------
    np.ndarray
        float32, shape (N, min(pca_dim, N, d)).

    """
    from sklearn.decomposition import PCA

    x = np.asarray(features, dtype=np.float32)
    k = min(int(pca_dim), x.shape[0], x.shape[1])
    if k >= x.shape[1]:
        # nothing to reduce; PCA would only rotate
        return x - x.mean(axis=0, keepdims=True)
    solver = "randomized" if k < 0.8 * min(x.shape) else "full"
    return PCA(n_components=k, svd_solver=solver, random_state=seed).fit_transform(x).astype(np.float32)


def kmeans_clusters(features: np.ndarray, num_distributions: int, seed: int, n_init: int = 10) -> np.ndarray:
    """K-Means cluster ids of the rows of ``features``, renumbered by decreasing cluster size.

    Parameters
    ----------
    features : np.ndarray
        Shape (N, d), train and test embeddings together.
    num_distributions : int
        Number of clusters D, 1 <= D <= N.
    seed : int
        K-Means seed.
    n_init : int
        K-Means restarts (the best inertia is kept).

    Returns
    -------
    np.ndarray
        int64 cluster ids in 0..D-1, shape (N,); cluster 0 is the largest (ties: lower K-Means id first).

    """
    from sklearn.cluster import KMeans

    x = np.asarray(features, dtype=np.float32)
    if not 1 <= num_distributions <= len(x):
        raise ValueError(f"partition.num_distributions={num_distributions} is impossible for {len(x)} images")
    raw = KMeans(n_clusters=num_distributions, n_init=n_init, random_state=seed).fit_predict(x)
    return relabel_by_size(raw, num_distributions)


def relabel_by_size(labels: np.ndarray, num_distributions: int) -> np.ndarray:
    """Renumber cluster ids so that cluster 0 is the largest (ties broken by the old id)."""
    sizes = np.bincount(labels, minlength=num_distributions)
    order = np.lexsort((np.arange(num_distributions), -sizes))  # new id -> old id
    new_of_old = np.empty(num_distributions, dtype=np.int64)
    new_of_old[order] = np.arange(num_distributions)
    return new_of_old[np.asarray(labels, dtype=np.int64)]


def spread_clients(num_clients: int, num_distributions: int) -> np.ndarray:
    """The cluster of every client: even contiguous blocks, the first clusters get the remainder.

    Parameters
    ----------
    num_clients : int
        Number of clients K.
    num_distributions : int
        Number of clusters D, 1 <= D <= K.

    Returns
    -------
    np.ndarray
        int64, shape (K,), non-decreasing; cluster c holds ``K // D + (c < K % D)`` clients.

    """
    if not 1 <= num_distributions <= num_clients:
        raise ValueError(f"partition.num_distributions={num_distributions} is out of range; "
                         f"allowed: 1..{num_clients} (num_clients)")
    per = np.full(num_distributions, num_clients // num_distributions)
    per[: num_clients % num_distributions] += 1
    return np.repeat(np.arange(num_distributions), per).astype(np.int64)


def sample_latent_clients(
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    train_clusters: np.ndarray,
    test_clusters: np.ndarray,
    client_cluster: np.ndarray,
    *,
    val_ratio: float,
    rng: np.random.Generator,
    samples_per_client: int | None = None,
) -> list[ClientSplit]:
    """Every client's train / val / test indices, drawn from its cluster.

    Parameters
    ----------
    train_labels, test_labels : np.ndarray
        Labels of the official train and test splits.
    train_clusters, test_clusters : np.ndarray
        Cluster id of every train and test image.
    client_cluster : np.ndarray
        Cluster of every client (:func:`spread_clients`).
    val_ratio : float
        Fraction of local data held out for validation (stratified by class).
    rng : np.random.Generator
        Source of randomness.
    samples_per_client : int, optional
        Cap on each client's local data (train + val), for scaled-down runs.

    Returns
    -------
    list of ClientSplit
        Local data of different clients are disjoint; ``cluster`` and ``target_cluster`` are set.

    Raises
    ------
    ValueError
        If a cluster has fewer train images than clients, or no test image.

    """
    train_clusters = np.asarray(train_clusters)
    test_clusters = np.asarray(test_clusters)
    ratio = len(test_labels) / len(train_labels)
    local: dict[int, np.ndarray] = {}
    for c in np.unique(client_cluster):
        members = np.flatnonzero(client_cluster == c)
        pool = np.flatnonzero(train_clusters == c)
        if len(pool) < len(members):
            raise ValueError(f"latent cluster {int(c)} has {len(pool)} training images for {len(members)} "
                             f"clients; lower partition.num_distributions or num_clients")
        for cid, part in zip(members, np.array_split(rng.permutation(pool), len(members)), strict=True):
            local[int(cid)] = part
    splits = []
    for cid, c in enumerate(client_cluster):
        idx = cap_samples(np.sort(local[cid]), samples_per_client, rng)
        train, val = train_val_split(idx, train_labels, val_ratio, rng)
        pool = np.flatnonzero(test_clusters == c)
        if len(pool) == 0:
            raise ValueError(f"latent cluster {int(c)} has no test images; lower partition.num_distributions")
        size = min(len(pool), max(1, int(round(len(idx) * ratio))))
        test = np.sort(rng.choice(pool, size=size, replace=False))
        splits.append(ClientSplit(train=train, val=val, test=test, cluster=int(c), target_cluster=int(c)))
    return splits


def shuffle_targets(splits: list[ClientSplit], rng: np.random.Generator) -> tuple[list[ClientSplit], np.ndarray]:
    """Permute the (val, test) pairs among clients; training data stays.

    Client ``i`` gets the val and test sets of client ``perm[i]``, ``perm`` a uniformly random
    permutation (a client may draw its own pair: this is not a derangement).

    Parameters
    ----------
    splits : list of ClientSplit
        The latent split.
    rng : np.random.Generator
        Source of randomness.

    Returns
    -------
    (list of ClientSplit, np.ndarray)
        The shuffled splits (``target_cluster`` updated, ``own_val`` the client's val before the
        shuffle) and ``perm``.

    """
    perm = rng.permutation(len(splits))
    out = [
        dataclasses.replace(sp, val=splits[j].val, test=splits[j].test, target_cluster=splits[j].target_cluster,
                            own_val=sp.val if sp.own_val is None else sp.own_val)
        for sp, j in zip(splits, perm, strict=True)
    ]
    return out, perm


def latent_partition(
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    train_clusters: np.ndarray,
    test_clusters: np.ndarray,
    *,
    num_clients: int,
    num_distributions: int,
    val_ratio: float,
    seed: int,
    samples_per_client: int | None = None,
    shuffle: bool = False,
) -> list[ClientSplit]:
    """The latent-distribution split from given cluster assignments (see the module docstring).

    Parameters
    ----------
    train_labels, test_labels : np.ndarray
        Labels of the official train and test splits.
    train_clusters, test_clusters : np.ndarray
        Cluster id (0..D-1) of every train and test image.
    num_clients : int
        Number of clients K.
    num_distributions : int
        Number of clusters D, 1 <= D <= K.
    val_ratio : float
        Fraction of local data held out for validation.
    seed : int
        Seed of every random choice (the shuffle comes last, so with and without ``shuffle``
        the same seed gives the same local data).
    samples_per_client : int, optional
        Cap on each client's local data (train + val).
    shuffle : bool
        Out-of-local-distribution setting: permute the (val, test) pairs among clients.

    Returns
    -------
    list of ClientSplit

    """
    for name, arr, ref in (("train", train_clusters, train_labels), ("test", test_clusters, test_labels)):
        if len(arr) != len(ref):
            raise ValueError(f"{name} cluster assignments cover {len(arr)} images, the {name} split has {len(ref)}")
    if len(train_clusters) and (train_clusters.min() < 0 or train_clusters.max() >= num_distributions):
        raise ValueError(f"cluster ids must lie in 0..{num_distributions - 1}")
    rng = np.random.default_rng(seed)
    client_cluster = spread_clients(num_clients, num_distributions)
    splits = sample_latent_clients(train_labels, test_labels, train_clusters, test_clusters, client_cluster,
                                   val_ratio=val_ratio, rng=rng, samples_per_client=samples_per_client)
    if shuffle:
        splits, _ = shuffle_targets(splits, rng)
    return splits
