"""What Per-FedAvg and pFedMe share: a gradient oracle and a client base with its own local loop.

Their math works on a list of parameter tensors and a gradient oracle (:data:`GradFn`, built
for a model by :func:`make_grad_fn`), so that it is testable on tiny problems with
hand-computed gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fedfomo.client import BaseClient, Weights
from fedfomo.data import normalize
from fedfomo.models import get_weights, set_weights
from fedfomo.training import batch_indices

Params = list[torch.Tensor]
GradFn = Callable[[Params, Any], tuple[Params, float]]
"""``grad_fn(params, batch) -> (gradients, loss)``: the gradient of a loss at ``params`` on ``batch``."""


def make_grad_fn(model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...],
                 weight_decay: float = 0.0) -> GradFn:
    """A :data:`GradFn` for ``model``: cross-entropy (plus L2 ``weight_decay``) on a uint8 batch.

    Parameters
    ----------
    model : nn.Module
        Architecture; its own parameters are not touched (``torch.func.functional_call``).
    mean, std : tuple of float
        Normalization constants (as the shared training loop uses them).
    weight_decay : float
        Adds ``weight_decay * w`` to each gradient, like SGD's ``weight_decay``.

    Returns
    -------
    GradFn
        ``grad_fn(params, (x, y))`` with ``params`` in ``model.named_parameters()`` order.

    """
    names = [n for n, _ in model.named_parameters()]
    buffers = dict(model.named_buffers())

    def grad_fn(params: Params, batch: Any) -> tuple[Params, float]:
        x, y = batch
        leaves = [p.detach().requires_grad_(True) for p in params]
        out = torch.func.functional_call(model, {**buffers, **dict(zip(names, leaves))},
                                         (normalize(x, mean, std),))
        loss = F.cross_entropy(out, y)
        grads = torch.autograd.grad(loss, leaves)
        return [g + weight_decay * p.detach() for g, p in zip(grads, leaves)], float(loss.detach())

    return grad_fn


def gradient_step(params: Params, grad_fn: GradFn, batch: Any, lr: float) -> tuple[Params, float]:
    """One gradient-descent step ``w - lr * grad f(w; batch)``; returns (new params, loss at w)."""
    grads, loss = grad_fn(params, batch)
    return [p.detach() - lr * g for p, g in zip(params, grads)], loss


class FunctionalLoopClient(BaseClient):
    """Helpers of methods with their own local loop over the shared batches (Per-FedAvg, pFedMe)."""

    def training_start(self, parameters: Weights, personalized: Weights) -> Weights:
        """Local training starts from the received global model, not from the personalized one."""
        return list(parameters)

    def params_of(self, weights: Weights) -> list[torch.Tensor]:
        """The parameter tensors of ``weights`` (state_dict order) in ``named_parameters`` order."""
        by_key = dict(zip(self.model.state_dict(), weights))
        return [torch.from_numpy(np.array(by_key[n], dtype=np.float32)).to(self.device)
                for n, _ in self.model.named_parameters()]

    def weights_of(self, params: list[torch.Tensor], base: Weights) -> Weights:
        """``base`` (state_dict order) with its parameters replaced by ``params``."""
        new = {n: p.detach().cpu().numpy() for (n, _), p in zip(self.model.named_parameters(), params)}
        return [np.ascontiguousarray(new.get(k, w)) for k, w in zip(self.model.state_dict(), base)]

    def grad_fn(self) -> GradFn:
        """Cross-entropy gradient oracle on this client's model (with the shared weight decay)."""
        return make_grad_fn(self.model, self.s.mean, self.s.std, self.s.weight_decay)

    def train_batch(self, server_round: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One seeded batch of local training data for the round's personalization step."""
        n = len(self.data.train_y)
        idx = torch.randperm(n, generator=self.generator(server_round, stream=1))[: self.s.batch_size]
        transform = self.batch_transform(server_round)
        x = self.data.train_x[idx]
        return (x if transform is None else transform(x)), self.data.train_y[idx]

    def epoch_batches(self, server_round: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The round's E epochs of batches, in the shared loop's seeded order."""
        g, transform = self.generator(server_round), self.batch_transform(server_round)
        return [(self.data.train_x[i] if transform is None else transform(self.data.train_x[i]), self.data.train_y[i])
                for i in batch_indices(len(self.data.train_y), self.s.batch_size, self.s.local_epochs, g)]

    def load_params(self, params: list[torch.Tensor]) -> None:
        """Write ``params`` into ``self.model`` (what :meth:`fit` uploads)."""
        set_weights(self.model, self.weights_of(params, get_weights(self.model)))
