"""The one training loop and the one evaluation loop that every method shares."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from fedfomo.data import normalize


@dataclass(frozen=True)
class OptimConfig:
    """SGD settings of local training.

    Attributes
    ----------
    lr : float
        Learning rate of this round (decay already applied).
    momentum, weight_decay : float
        SGD momentum and L2 weight decay.
    batch_size : int
        Mini-batch size.

    """

    lr: float
    momentum: float
    weight_decay: float
    batch_size: int


def round_lr(base_lr: float, decay: float, server_round: int) -> float:
    """Learning rate of round ``server_round`` (1-based): ``base_lr * decay ** (round - 1)``."""
    return base_lr * decay ** (server_round - 1)


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    optim: OptimConfig,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    generator: torch.Generator,
    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> float:
    """Train ``model`` in place with mini-batch SGD.

    Parameters
    ----------
    model : nn.Module
        Model to train.
    x, y : torch.Tensor
        uint8 images (N, C, H, W) and int64 labels; normalized per batch.
    epochs : int
        Passes over the data.
    optim : OptimConfig
        SGD settings.
    mean, std : tuple of float
        Normalization constants.
    generator : torch.Generator
        Seeded source of the batch order.
    extra_loss : callable, optional
        Added to every batch loss (e.g. a proximal term); receives the model.
    transform : callable, optional
        Applied to every uint8 batch before normalization (``dataset.augment``,
        :func:`fedfomo.data.training_transform`).

    Returns
    -------
    float
        Mean training loss over all batches (nan when there is no data or ``epochs`` is 0).

    """
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=optim.lr, momentum=optim.momentum,
                          weight_decay=optim.weight_decay)
    total, batches = 0.0, 0
    for idx in batch_indices(len(y), optim.batch_size, epochs, generator):
        xb = x[idx] if transform is None else transform(x[idx])
        out = model(normalize(xb, mean, std))
        loss = F.cross_entropy(out, y[idx])
        if extra_loss is not None:
            loss = loss + extra_loss(model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach())
        batches += 1
    return total / batches if batches else float("nan")


def batch_indices(n: int, batch_size: int, epochs: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """The mini-batches of :func:`train`: per epoch a seeded permutation of ``range(n)`` cut into batches.

    Methods with their own local loop (Per-FedAvg, pFedMe) use it to see the same batches.
    """
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            yield order[start:start + batch_size]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    batch_size: int = 1000,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (a fraction in [0, 1]) of ``model`` on (x, y)."""
    model.eval()
    n = len(y)
    if n == 0:
        return float("nan"), float("nan")
    loss_sum, correct = 0.0, 0
    for start in range(0, n, batch_size):
        xb = normalize(x[start:start + batch_size], mean, std)
        yb = y[start:start + batch_size]
        out = model(xb)
        loss_sum += float(F.cross_entropy(out, yb, reduction="sum"))
        correct += int((out.argmax(1) == yb).sum())
    return loss_sum / n, correct / n


@torch.no_grad()
def predicted_class_counts(
    model: nn.Module,
    x: torch.Tensor,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    num_classes: int,
    batch_size: int = 1000,
) -> list[int]:
    """How many of the uint8 images ``x`` ``model`` assigns to each class (argmax of its output).

    Parameters
    ----------
    model : torch.nn.Module
        The classifier (put in eval mode).
    x : torch.Tensor
        uint8 images, normalized per batch with ``mean`` and ``std``.
    mean, std : tuple of float
        Per-channel normalization (as for :func:`evaluate`).
    num_classes : int
        Length of the result (classes never predicted count 0).
    batch_size : int
        Images per forward pass.

    Returns
    -------
    list of int
        ``counts[c]`` = number of images predicted as class ``c``; sums to ``len(x)``.

    """
    model.eval()
    counts = torch.zeros(num_classes, dtype=torch.long)
    for start in range(0, len(x), batch_size):
        pred = model(normalize(x[start:start + batch_size], mean, std)).argmax(1)
        counts += torch.bincount(pred, minlength=num_classes)
    return counts.tolist()
