"""The FedFomo math (Zhang et al., ICLR 2021), as pure numpy functions.

Notation follows the paper: client i with baseline theta_i^(t-1) evaluates candidates theta_n
on its validation split; Eq. 3 gives raw weights w_n, Eq. 13 the update, and the server's
affinity matrix P accumulates the raw weights.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def update_affinity(p: np.ndarray, client: int, ids: Sequence[int], raw: np.ndarray) -> np.ndarray:
    """Return a copy of P with ``p[client, ids] += raw`` (raw, signed weights, as in the paper)."""
    out = p.copy()
    np.add.at(out[client], np.asarray(ids, dtype=np.int64), np.asarray(raw, dtype=np.float64))
    return out
