"""DP-SGD local training with Opacus (its privacy engine and RDP accountant), for the paper's Tables 4 and 6.

With ``dp.enabled=true`` every client trains with DP-SGD (Abadi et al., 2016) as implemented by
Opacus: Poisson-sampled batches of expected size ``optim.batch_size``, per-sample gradients
clipped to L2 norm ``dp.max_grad_norm``, Gaussian noise of standard deviation
``dp.noise_multiplier * dp.max_grad_norm`` added to their sum. Opacus's RDP accountant tracks
the privacy loss; its history (noise multiplier, sample rate, steps) is kept in the client's
state across rounds, so the epsilon reported at ``dp.delta`` after round t covers every DP step
the client has taken up to then. The models must be Opacus-valid (no BatchNorm; checked with
``opacus.validators.ModuleValidator`` before any work). Opacus runs without its ``secure_mode``
(a cryptographically secure RNG), as for experiments; batch sampling and noise are seeded from
the run seed, client and round, so runs are reproducible.

Methods with their own local loop or an extra loss term (FedProx's proximal term, Per-FedAvg,
pFedMe) are refused: Opacus's per-sample gradients would silently leave out what those loops add.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from fedfomo.data import normalize
from fedfomo.training import OptimConfig


@dataclass(frozen=True)
class DPConfig:
    """DP-SGD settings (the ``dp`` block)."""

    noise_multiplier: float
    max_grad_norm: float
    delta: float


History = list[tuple[float, float, int]]
"""Opacus RDP accountant history: ``(noise_multiplier, sample_rate, steps)`` entries."""


def model_problems(model: nn.Module) -> list[str]:
    """Why Opacus cannot train ``model`` (empty when it can), one short text per problem."""
    from opacus.validators import ModuleValidator

    return sorted({str(e).split(". ")[0].splitlines()[0] for e in ModuleValidator.validate(model, strict=False)})


def epsilon_of(history: Sequence[tuple[float, float, int]], delta: float) -> float:
    """The RDP accountant's epsilon at ``delta`` after the DP steps in ``history`` (0 for none)."""
    from opacus.accountants import RDPAccountant

    if not history:
        return 0.0
    acc = RDPAccountant()
    acc.history = [(float(s), float(q), int(n)) for s, q, n in history]
    return float(acc.get_epsilon(delta))


def train_dp(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, optim: OptimConfig,
             mean: tuple[float, ...], std: tuple[float, ...], generator: torch.Generator, dp: DPConfig,
             history: History, transform: Callable[[torch.Tensor], torch.Tensor] | None = None
             ) -> tuple[float, History]:
    """Train ``model`` in place for ``epochs`` epochs of DP-SGD.

    Parameters
    ----------
    model : nn.Module
        The client's model (its weights are updated in place).
    x, y : torch.Tensor
        uint8 images and int64 labels of the client's training set.
    epochs : int
        Passes over the data (``epochs * N / batch_size`` DP steps).
    optim : OptimConfig
        SGD settings; ``batch_size`` is the expected Poisson batch size.
    mean, std : tuple of float
        Normalization constants.
    generator : torch.Generator
        Seeds batch sampling and the DP noise.
    dp : DPConfig
        Noise multiplier, clipping norm, delta.
    history : list
        The client's accountant history before this training.
    transform : callable, optional
        Applied to every uint8 batch before normalization (``dataset.augment``).

    Returns
    -------
    tuple of (float, list)
        Mean training loss over the batches and the accountant history after this training.

    """
    from opacus import PrivacyEngine

    n = len(y)
    if n == 0 or epochs == 0:
        return float("nan"), list(history)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=optim.batch_size,
                                         generator=torch.Generator().manual_seed(seed))
    with warnings.catch_warnings():  # not secure_mode (experiments); see the module docstring
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant="rdp")
    engine.accountant.history = list(history)
    model.train()  # Opacus wraps only a model in training mode
    opt = torch.optim.SGD(model.parameters(), lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    dp_model, dp_opt, dp_loader = engine.make_private(
        module=model, optimizer=opt, data_loader=loader, noise_multiplier=dp.noise_multiplier,
        max_grad_norm=dp.max_grad_norm, poisson_sampling=True,
        noise_generator=torch.Generator().manual_seed(seed + 1))
    dp_model.train()
    total, batches = 0.0, 0
    try:
        for _ in range(epochs):
            for xb, yb in dp_loader:
                if len(yb) == 0:  # an empty Poisson batch (probability (1 - B/N)^N): nothing to learn from
                    continue
                inputs = xb if transform is None else transform(xb)
                loss = F.cross_entropy(dp_model(normalize(inputs, mean, std)), yb)
                dp_opt.zero_grad(set_to_none=True)
                with warnings.catch_warnings():  # the input needs no gradient: Opacus's hooks still fire
                    warnings.filterwarnings("ignore", message="Full backward hook is firing")
                    loss.backward()
                dp_opt.step()
                total += float(loss.detach())
                batches += 1
    finally:
        dp_model.remove_hooks()
        for param in model.parameters():  # leave a plain model behind
            for attr in ("grad_sample", "_forward_counter"):
                if hasattr(param, attr):
                    delattr(param, attr)
    return (total / batches if batches else float("nan")), [tuple(h) for h in engine.accountant.history]
