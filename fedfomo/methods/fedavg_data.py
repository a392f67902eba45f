"""FedAvg with globally shared data (Zhao et al., "Federated Learning with Non-IID Data", 2018).

A small, class-balanced set G of training images is shared with every client, which trains on
its own data plus G; otherwise FedAvg. ``method.shared_fraction`` is the size of G (the paper's
beta; 5% is its headline setting).

How G is drawn (seeded, :func:`draw_shared_indices`):

- its size is ``max(1, round(shared_fraction * T))``, T the number of training images held by
  all clients together (Zhao et al.'s beta, the size of G relative to the clients' data);
- it is balanced over classes (``size // C`` per class, the remainder to random classes);
- it is taken from official training images that belong to no client whenever there are enough
  of them (scaled-down runs), so then it is disjoint from every client's data; otherwise the
  rest of a class's quota comes from other clients' training images. It never contains an image
  of any client's validation set, and test sets come from the official test split, so neither
  val nor test ever overlaps G;
- G is added to each client's train split only (union, no duplicates), never to val or test.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from omegaconf import DictConfig

from fedfomo.config import check_float, require
from fedfomo.methods import Method
from fedfomo.methods.fedavg import FedAvgClient, FedAvgStrategy


def draw_shared_indices(train_labels: np.ndarray, train_parts: Sequence[np.ndarray], val_parts: Sequence[np.ndarray],
                        fraction: float, seed: int) -> np.ndarray:
    """Draw the shared set G: sorted indices into the official training split.

    Parameters
    ----------
    train_labels : np.ndarray
        Labels of the official training split.
    train_parts, val_parts : sequence of np.ndarray
        Every client's train and val indices.
    fraction : float
        Size of G relative to the clients' training images together, in (0, 1].
    seed : int
        Run seed (G uses its own stream, ``default_rng([seed, 3])``).

    Returns
    -------
    np.ndarray
        Sorted int64 indices of G.

    Raises
    ------
    ValueError
        When a class has too few images outside every client's val set.

    """
    total = int(sum(len(p) for p in train_parts))
    size = max(1, int(round(fraction * total)))
    rng = np.random.default_rng([seed, 3])
    n = len(train_labels)
    in_train = np.zeros(n, dtype=bool)
    in_val = np.zeros(n, dtype=bool)
    for p in train_parts:
        in_train[p] = True
    for p in val_parts:
        in_val[p] = True
    classes = np.unique(train_labels)
    quota = np.full(len(classes), size // len(classes))
    quota[rng.permutation(len(classes))[: size % len(classes)]] += 1
    parts = []
    for c, q in zip(classes, quota):
        is_c = train_labels == c
        unused = rng.permutation(np.flatnonzero(is_c & ~in_train & ~in_val))
        other = rng.permutation(np.flatnonzero(is_c & in_train & ~in_val))
        take = np.concatenate([unused[:q], other[: max(0, q - len(unused))]])
        if len(take) < q:
            raise ValueError(f"shared_fraction={fraction} needs {q} images of class {c}, "
                             f"only {len(take)} are outside the clients' val sets")
        parts.append(take)
    return np.sort(np.concatenate(parts)).astype(np.int64)


def shared_train_indices(cfg: DictConfig, train_labels: np.ndarray, splits: Sequence) -> np.ndarray:
    """G for this run (the ``shared_train`` hook of :class:`~fedfomo.methods.Method`)."""
    return draw_shared_indices(train_labels, [s.train for s in splits], [s.val for s in splits],
                               float(cfg.method.shared_fraction), int(cfg.seed))


def validate(cfg: DictConfig) -> None:
    """shared_fraction in (0, 1]."""
    check_float("method.shared_fraction", require(cfg, "method.shared_fraction"), 0.0, 1.0, low_open=True)


METHOD = Method(name="fedavg_data", client=FedAvgClient, strategy=FedAvgStrategy, validate=validate,
                shared_train=shared_train_indices, reference="Zhao et al., 2018")
