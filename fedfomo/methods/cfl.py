"""Clustered Federated Learning, CFL (Sattler et al., IEEE TNNLS 2020).

Paper: "Clustered Federated Learning: Model-Agnostic Distributed Multitask Optimization Under
Privacy Constraints". Authors' code: felisat/clustered-federated-learning.

The server keeps a partition of the clients into clusters, one model per cluster (all clients
start in one cluster with the common initial model). Every round each sampled client downloads
its cluster's model, trains E local epochs and uploads; the server forms each client's update
``dW_i = W_i - W_cluster``. A cluster is split in two when its clients have (nearly) converged
together but not individually: when the norm of the cluster's mean update is below
``method.eps1`` and the largest client update norm is above ``method.eps2`` (and the cluster
has at least ``method.min_cluster_size`` participating clients, from round ``method.min_round``
on). The split is the bi-partition of the clients by the cosine similarity of their updates that
minimises the largest similarity across the two groups (``method.linkage: single``, the paper's
rule; ``complete`` is the authors' code's complete-linkage clustering, which can disagree).
Then each cluster's model moves by the mean update of its participating clients (unweighted as
in the authors' code; ``method.weighted: true`` weights by train size). A client's personalized
model is its cluster's model.
"""

from __future__ import annotations

import logging

import numpy as np
from omegaconf import DictConfig

from fedfomo.checkpoint import pack, unpack
from fedfomo.config import ConfigError, check_bool, check_choice, check_float, check_int, require
from fedfomo.messages import Upload
from fedfomo.methods import Method
from fedfomo.methods.fedavg import FedAvgClient
from fedfomo.strategy import PersonalizedStrategy, Weights

log = logging.getLogger("fedfomo")
LINKAGES = ("single", "complete")


def flatten(update: Weights) -> np.ndarray:
    """All arrays of a model (or update) as one float64 vector."""
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in update]) if update else np.zeros(0)


def cosine_similarities(updates: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of the rows of ``updates`` (a zero row has similarity 0 to all)."""
    norms = np.linalg.norm(updates, axis=1)
    unit = updates / np.maximum(norms, 1e-12)[:, None]
    return unit @ unit.T


def should_split(updates: np.ndarray, eps1: float, eps2: float) -> tuple[bool, float, float]:
    """The split criterion: ``||mean update|| < eps1`` and ``max ||update_i|| > eps2``.

    Returns
    -------
    tuple of (bool, float, float)
        Whether to split, the mean update's norm and the largest update norm.

    """
    mean_norm = float(np.linalg.norm(updates.mean(axis=0)))
    max_norm = float(np.linalg.norm(updates, axis=1).max())
    return (mean_norm < eps1 and max_norm > eps2), mean_norm, max_norm


def bipartition(similarity: np.ndarray, linkage: str = "single") -> tuple[list[int], list[int]]:
    """Split row indices of a similarity matrix into two groups.

    ``single`` linkage on the distance ``-similarity`` with two clusters gives the bi-partition
    that minimises the largest similarity between the groups (the paper's rule); ``complete``
    is the authors' code's choice.

    Returns
    -------
    tuple of (list of int, list of int)
        The two groups, each sorted, the one holding index 0 first.

    """
    from sklearn.cluster import AgglomerativeClustering

    if len(similarity) < 2:
        raise ValueError(f"a bi-partition needs at least 2 items, got {len(similarity)}")
    distance = similarity.max() - similarity  # >= 0, zero on the diagonal when self-similarity is the max
    np.fill_diagonal(distance, 0.0)
    labels = AgglomerativeClustering(n_clusters=2, metric="precomputed", linkage=linkage).fit(distance).labels_
    first = [i for i in range(len(labels)) if labels[i] == labels[0]]
    return first, [i for i in range(len(labels)) if labels[i] != labels[0]]


class CFLStrategy(PersonalizedStrategy):
    """CFL's server: clusters, one model per cluster, the split rule and within-cluster averaging.

    Parameters
    ----------
    eps1, eps2 : float
        Split when the cluster's mean update norm < eps1 and its largest update norm > eps2.
    min_round : int
        No split before this round.
    min_cluster_size : int
        No split of a cluster with fewer participating clients.
    linkage : str
        ``single`` (paper) or ``complete`` (authors' code).
    weighted : bool
        Average the updates weighted by train size instead of plainly.
    **kwargs
        See :class:`PersonalizedStrategy`.

    """

    def __init__(self, *, eps1: float, eps2: float, min_round: int, min_cluster_size: int, linkage: str,
                 weighted: bool, **kwargs) -> None:
        super().__init__(**kwargs)
        self.eps1, self.eps2 = eps1, eps2
        self.min_round, self.min_cluster_size = min_round, min_cluster_size
        self.linkage, self.weighted = linkage, weighted
        self.clusters: list[list[int]] = [list(range(self.num_clients))]
        self.models: list[Weights] = [list(self.global_weights)]

    def cluster_of(self, cid: int) -> int:
        """Index of the cluster holding client ``cid``."""
        return next(k for k, members in enumerate(self.clusters) if cid in members)

    def download(self, cid: int, server_round: int) -> tuple[Weights, dict[str, int | float | str]]:  # noqa: D102
        return self.models[self.cluster_of(cid)], {"cluster": self.cluster_of(cid)}

    def aggregate(self, server_round: int, uploads: dict[int, Upload]) -> None:  # noqa: D102
        new_clusters, new_models = [], []
        for members, model in zip(self.clusters, self.models):
            present = [c for c in members if c in uploads]
            if not present:
                new_clusters.append(members)
                new_models.append(model)
                continue
            updates = np.stack([flatten([u - m for u, m in zip(uploads[c].weights, model)]) for c in present])
            sizes = np.array([uploads[c].num_examples for c in present], dtype=np.float64)
            split, mean_norm, max_norm = should_split(updates, self.eps1, self.eps2)
            log.info("round %d | cluster of %d | mean update norm %.3f | max update norm %.3f", server_round,
                     len(members), mean_norm, max_norm)
            if split and server_round >= self.min_round and len(present) >= self.min_cluster_size:
                a, b = bipartition(cosine_similarities(updates), self.linkage)
                groups = [[present[i] for i in a], [present[i] for i in b]]
                absent = [c for c in members if c not in uploads]
                groups[0] += absent  # absent clients stay with the first group until they report again
                log.info("round %d | split %s -> %s | %s", server_round, members, sorted(groups[0]), sorted(groups[1]))
                for group in groups:
                    idx = [present.index(c) for c in group if c in present]
                    new_clusters.append(sorted(group))
                    new_models.append(self._step(model, updates[idx], sizes[idx]))
            else:
                new_clusters.append(members)
                new_models.append(self._step(model, updates, sizes))
        self.clusters, self.models = new_clusters, new_models

    def _step(self, model: Weights, updates: np.ndarray, sizes: np.ndarray) -> Weights:
        """The cluster model moved by the (weighted) mean of its clients' updates."""
        weights = sizes / sizes.sum() if self.weighted else np.full(len(sizes), 1.0 / len(sizes))
        step = weights @ updates
        out, k = [], 0
        for a in model:
            n = a.size
            out.append((a.astype(np.float64) + step[k:k + n].reshape(a.shape)).astype(a.dtype))
            k += n
        return out

    def after_round(self, server_round: int) -> None:  # noqa: D102
        self.recorder.log_clusters(server_round, self.clusters)

    def checkpoint_state(self) -> tuple[dict[str, np.ndarray], dict]:  # noqa: D102
        arrays, meta = super().checkpoint_state()
        for k, model in enumerate(self.models):
            arrays.update(pack(f"cluster/{k}", model))
        return arrays, {**meta, "clusters": self.clusters}

    def restore_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:  # noqa: D102
        super().restore_state(arrays, meta)
        self.clusters = [list(map(int, c)) for c in meta["clusters"]]
        self.models = [unpack(arrays, f"cluster/{k}") for k in range(len(self.clusters))]


def validate(cfg: DictConfig) -> None:
    """eps1 >= 0, eps2 > eps1, min_round >= 1, min_cluster_size >= 2, a known linkage, weighted a boolean."""
    eps1 = check_float("method.eps1", require(cfg, "method.eps1"), 0.0, float("inf"))
    eps2 = check_float("method.eps2", require(cfg, "method.eps2"), 0.0, float("inf"))
    if eps2 <= eps1:
        raise ConfigError(f"method.eps2={eps2} must be larger than method.eps1={eps1}; allowed: eps2 > eps1")
    check_int("method.min_round", require(cfg, "method.min_round"), 1)
    check_int("method.min_cluster_size", require(cfg, "method.min_cluster_size"), 2)
    check_choice("method.linkage", require(cfg, "method.linkage"), LINKAGES)
    check_bool("method.weighted", require(cfg, "method.weighted"))


def strategy_options(cfg: DictConfig) -> dict:
    """The split rule's settings."""
    m = cfg.method
    return {"eps1": float(m.eps1), "eps2": float(m.eps2), "min_round": int(m.min_round),
            "min_cluster_size": int(m.min_cluster_size), "linkage": str(m.linkage), "weighted": bool(m.weighted)}


METHOD = Method(name="cfl", client=FedAvgClient, strategy=CFLStrategy, validate=validate,
                strategy_options=strategy_options,
                reference="Sattler et al., IEEE TNNLS 2020; felisat/clustered-federated-learning")
