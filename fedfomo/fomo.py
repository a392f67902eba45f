"""The FedFomo math (Zhang et al., ICLR 2021), as pure numpy functions.

Notation follows the paper: client i with baseline theta_i^(t-1) evaluates candidates theta_n
on its validation split; Eq. 3 gives raw weights w_n, Eq. 13 the update, and the server's
affinity matrix P accumulates the raw weights.

Where the authors' code (NVlabs/FedFomo) differs, its way is here too, off by default: the P
update normalised by ``|sum w|`` (:func:`affinity_increments`, ``method.affinity_norm``) and the
sub-federation / global averages downloaded as extra candidates (:func:`subfederation_labels`,
:func:`server_averages`, ``method.extra_candidates``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

DISTANCES = ("l1", "l2")
DENOMINATOR_GUARD = 1e-12

Weights = list[np.ndarray]


def epsilon_at(epsilon: float, decay: float, server_round: int) -> float:
    """Exploration probability of round ``server_round`` (1-based).

    ``max(0, epsilon - (server_round - 1) * decay)``: linear decay as in the authors' code,
    whose round counter starts at 0.
    """
    return max(0.0, epsilon - (server_round - 1) * decay)


def select_candidates(
    p_row: np.ndarray,
    own: int,
    available: Sequence[int],
    num_models: int,
    epsilon: float,
    rng: np.random.Generator,
) -> list[int]:
    """Choose which uploaded models a client downloads.

    The client's own latest upload comes first when it exists; the other slots (``num_models``
    in all) are filled from ``available`` in decreasing order of affinity ``p_row``, each slot
    being replaced with probability ``epsilon`` by a uniformly random not-yet-chosen model.
    Ties in ``p_row`` are broken at random.

    Parameters
    ----------
    p_row : np.ndarray
        Row ``own`` of the affinity matrix P.
    own : int
        The client's id.
    available : sequence of int
        Ids of clients that have uploaded a model.
    num_models : int
        M, the number of models downloaded, own model included.
    epsilon : float
        Exploration probability of this round.
    rng : np.random.Generator
        Source of randomness.

    Returns
    -------
    list of int
        Chosen ids, own first if available, at most ``num_models`` of them.

    """
    chosen = [own] if own in available else []
    pool = [int(j) for j in available if j != own]
    while len(chosen) < num_models and pool:
        if rng.random() < epsilon:
            pick = pool[int(rng.integers(len(pool)))]
        else:
            scores = np.array([p_row[j] for j in pool])
            best = np.flatnonzero(scores == scores.max())
            pick = pool[int(best[int(rng.integers(len(best)))])]
        chosen.append(pick)
        pool.remove(pick)
    return chosen


def parameter_distance(a: Weights, b: Weights, kind: str = "l1") -> float:
    """L1 or L2 norm of the difference of two models, all arrays flattened together."""
    if kind not in DISTANCES:
        raise ValueError(f"fomo.distance={kind!r} is not supported; allowed: {', '.join(DISTANCES)}")
    if kind == "l1":
        return float(sum(np.abs(x - y).sum(dtype=np.float64) for x, y in zip(a, b, strict=True)))
    sq = sum(np.square(x - y, dtype=np.float64).sum() for x, y in zip(a, b, strict=True))
    return float(np.sqrt(sq))


def fomo_weights(
    baseline_loss: float, candidate_losses: Sequence[float], distances: Sequence[float]
) -> np.ndarray:
    """Eq. 3: ``w_n = (L(theta_i^(t-1)) - L(theta_n)) / ||theta_n - theta_i^(t-1)||``.

    A zero distance (a candidate identical to the baseline) is replaced by
    :data:`DENOMINATOR_GUARD`; such a candidate's loss delta is 0, so its weight is 0. A
    candidate whose validation loss is not finite (a diverged model) gets weight 0, so it is
    neither merged nor credited in P; so does any weight that is not finite.
    """
    losses = np.asarray(candidate_losses, dtype=np.float64)
    dist = np.maximum(np.asarray(distances, dtype=np.float64), DENOMINATOR_GUARD)
    with np.errstate(invalid="ignore", over="ignore"):
        raw = (baseline_loss - losses) / dist
    return np.where(np.isfinite(losses) & np.isfinite(raw), raw, 0.0)


def normalized_weights(raw: np.ndarray) -> np.ndarray | None:
    """Eq. 13's ``max(w, 0) / sum(max(w, 0))``, or None when no weight is positive."""
    pos = np.maximum(np.asarray(raw, dtype=np.float64), 0.0)
    total = pos.sum()
    if not total > 0:
        return None
    return pos / total


def fomo_merge(baseline: Weights, candidates: Sequence[Weights], raw: np.ndarray) -> tuple[Weights, bool]:
    """Eq. 13: ``theta_i = theta_base + sum_n w*_n (theta_n - theta_base)``.

    Parameters
    ----------
    baseline : list of np.ndarray
        theta_i^(t-1).
    candidates : sequence of list of np.ndarray
        The downloaded models theta_n.
    raw : np.ndarray
        Raw Eq. 3 weights, one per candidate.

    Returns
    -------
    merged : list of np.ndarray
        The new personalized model.
    reverted : bool
        True when no weight was positive and the baseline was kept (the paper's early stop).

    """
    w = normalized_weights(raw)
    if w is None:
        return [b.copy() for b in baseline], True
    merged = []
    for k, base in enumerate(baseline):
        delta = sum(wn * (cand[k].astype(np.float64) - base) for wn, cand in zip(w, candidates, strict=True)
                    if wn > 0)
        merged.append((base + delta).astype(base.dtype))
    return merged, False


def update_affinity(p: np.ndarray, client: int, ids: Sequence[int], raw: np.ndarray,
                    norm: str = "none") -> np.ndarray:
    """Return a copy of P with ``p[client, ids] += affinity_increments(raw, norm)``.

    With ``norm="none"`` (the default) the raw, signed weights are added, as in the paper.
    Negative ids are server-made averages (:func:`server_averages`): their weights count in
    the ``abs_sum`` normaliser but add nothing to P, as in the authors' code (whose FedFomo adds
    ``0 *`` their weight to every member's entry).
    """
    ids_arr = np.asarray(ids, dtype=np.int64)
    inc = affinity_increments(raw, norm)
    keep = ids_arr >= 0
    out = p.copy()
    np.add.at(out[client], ids_arr[keep], inc[keep])
    return out


# -- the authors' code (NVlabs/FedFomo), as options; EXTENDED_README.md "Differences from the authors' code" --

#: ``method.affinity_norm``: how the raw weights are scaled before they are added to P.
AFFINITY_NORMS = ("none", "abs_sum")
#: the authors' guard: a normaliser below this gets it added (``federation.py``, ``update_client_weights``)
AUTHORS_NORM_FLOOR = 1e-9
#: ``method.extra_candidates``: server-made averages downloaded besides the M chosen models.
EXTRA_CANDIDATES = ("none", "global", "subfed", "both")
#: candidate id of the global average; sub-federation k has id ``SUBFED_ID - k`` (client ids are >= 0)
GLOBAL_ID = -1
SUBFED_ID = -2


def affinity_increments(raw: np.ndarray, norm: str = "none") -> np.ndarray:
    """What is added to P for a client's raw weights.

    Parameters
    ----------
    raw : np.ndarray
        Raw Eq. 3 (or Eq. 14) weights of every candidate the client evaluated, server-made
        averages included.
    norm : str
        ``none``: the raw weights, as the paper says. ``abs_sum``: the authors' code, raw weights
        divided by the absolute value of their sum, ``|sum_n w_n|`` (not ``sum_n |w_n|``), where a
        value below :data:`AUTHORS_NORM_FLOOR` gets that floor added. With mixed signs the sum can
        be near 0 and the increments very large; that is what their code does.

    Returns
    -------
    np.ndarray
        float64 increments, one per candidate.

    Raises
    ------
    ValueError
        One line naming ``method.affinity_norm`` and the allowed values.

    """
    if norm not in AFFINITY_NORMS:
        raise ValueError(f"method.affinity_norm={norm!r} is not supported; allowed: {', '.join(AFFINITY_NORMS)}")
    w = np.asarray(raw, dtype=np.float64)
    if norm == "none":
        return w.copy()
    total = abs(float(w.sum()))
    if total < AUTHORS_NORM_FLOOR:
        total += AUTHORS_NORM_FLOOR
    return w / total


#: how P becomes the sub-federations' clustering affinity (:func:`subfederation_labels`)
SUBFED_KERNELS = ("softmax", "rbf")


def subfederation_labels(p: np.ndarray, num_groups: int, seed: int, kernel: str = "softmax") -> np.ndarray:
    """The authors' sub-federations: spectral clustering of the clients on P.

    As ``server.py`` (``update_server_models``, ``get_adjacency_matrix``) of NVlabs/FedFomo: the
    affinity between clients i and j is, with ``kernel="softmax"`` (their published commands pass
    ``--softmax_client_weights``), row i of P through a softmax, ``exp(P_ij) / sum_k exp(P_ik)``;
    with ``kernel="rbf"`` (their code without that flag) ``exp(-(1 - P_ij)^2 / 2)``. It is
    symmetrised as ``(A + A^T) / 2`` and clustered by scikit-learn's ``SpectralClustering`` into
    ``num_groups`` groups (precomputed affinity, 10 inits, ``assign_labels="discretize"``, seeded).

    Parameters
    ----------
    p : np.ndarray
        The affinity matrix P, (N, N).
    num_groups : int
        Number of sub-federations, 1..N (the authors: ``-nf``, the number of latent distributions D).
    seed : int
        Seed of the clustering.
    kernel : str
        ``softmax`` or ``rbf``, see above.

    Returns
    -------
    np.ndarray
        int64 group of every client, (N,).

    """
    n = len(p)
    if not 1 <= num_groups <= n:
        raise ValueError(f"method.num_subfederations={num_groups} is out of range; allowed: 1..{n}")
    if kernel not in SUBFED_KERNELS:
        raise ValueError(f"kernel={kernel!r} is not supported; allowed: {', '.join(SUBFED_KERNELS)}")
    if num_groups == 1:
        return np.zeros(n, dtype=np.int64)
    import warnings

    from sklearn.cluster import SpectralClustering

    x = np.asarray(p, dtype=np.float64)
    if kernel == "softmax":
        e = np.exp(x - x.max(axis=1, keepdims=True))  # the same softmax, without overflow
        a = e / e.sum(axis=1, keepdims=True)
    else:
        a = np.exp(-np.square(1.0 - x) / 2.0)
    a = (a + a.T) / 2.0
    with warnings.catch_warnings():  # "graph is not fully connected" when P has grown large: still a clustering
        warnings.simplefilter("ignore", UserWarning)
        labels = SpectralClustering(n_clusters=num_groups, affinity="precomputed", n_init=10, random_state=seed,
                                    assign_labels="discretize").fit_predict(a)
    return np.asarray(labels, dtype=np.int64)


def average_models(models: Sequence[Weights], weights: Sequence[float] | None = None) -> Weights:
    """``sum_k a_k theta_k`` with ``a`` = ``weights`` normalised to sum 1 (None: the simple mean), in float64."""
    a = np.full(len(models), 1.0) if weights is None else np.asarray(weights, dtype=np.float64)
    a = a / a.sum()
    return [sum(ak * m[k].astype(np.float64) for ak, m in zip(a, models, strict=True)).astype(models[0][k].dtype)
            for k in range(len(models[0]))]


def server_averages(
    labels: np.ndarray,
    store: Mapping[int, Weights],
    store_round: Mapping[int, int],
    sizes: dict[int, int],
    which: str,
) -> tuple[list[int], list[Weights]]:
    """The authors' extra candidates: each sub-federation's average and the global average.

    As NVlabs/FedFomo (``federation.py``, ``Federation.__init__``; ``server.py``,
    ``update_server_models``): a sub-federation's model is the average of its members'
    latest uploads weighted by their training-set sizes, over the members whose latest upload
    is the most recent one of the group (the last active ones); the global model is the simple
    mean of the sub-federation models. Every client receives all of them.

    Parameters
    ----------
    labels : np.ndarray
        Sub-federation of every client (:func:`subfederation_labels`).
    store : mapping of int to list of np.ndarray
        Every client's latest upload (clients that never uploaded are absent).
    store_round : mapping of int to int
        Round of each stored upload.
    sizes : dict of int to int
        Training-set size of each client (a missing one counts 1).
    which : str
        One of :data:`EXTRA_CANDIDATES`: ``global``, ``subfed`` or ``both`` (``none``: nothing).

    Returns
    -------
    ids : list of int
        ``SUBFED_ID - k`` for sub-federation k (groups without an upload are skipped), then
        :data:`GLOBAL_ID`.
    models : list of list of np.ndarray
        The averages, in the order of ``ids``.

    """
    if which not in EXTRA_CANDIDATES:
        raise ValueError(f"method.extra_candidates={which!r} is not supported; allowed: {', '.join(EXTRA_CANDIDATES)}")
    if which == "none" or not store:
        return [], []
    groups: list[tuple[int, Weights]] = []
    for k in np.unique(labels):
        members = [int(c) for c in np.flatnonzero(labels == k) if int(c) in store]
        if not members:
            continue
        last = max(store_round[c] for c in members)
        active = [c for c in members if store_round[c] == last]
        groups.append((SUBFED_ID - int(k), average_models([store[c] for c in active],
                                                          [sizes.get(c, 1) for c in active])))
    ids = [i for i, _ in groups] if which in ("subfed", "both") else []
    models = [m for _, m in groups] if which in ("subfed", "both") else []
    if which in ("global", "both"):
        ids.append(GLOBAL_ID)
        models.append(average_models([m for _, m in groups]))
    return ids, models
