"""What is specific to the comparison methods: small pure functions, and their settings.

Everything else (data, partitions, the shared training loop, evaluation, result files) is the
code every method shares. The functions here are the method-specific math:

- FedProx (Li et al., MLSys 2020): :func:`proximal_term`;
- LG-FedAvg (Liang et al., 2020) and FedPer (Arivazhagan et al., 2019): :func:`layer_mask`,
  :func:`split_by_mask`, :func:`merge_by_mask` (which layers are shared, which are kept);
- Per-FedAvg (Fallah et al., NeurIPS 2020): :func:`gradient_step`, :func:`perfedavg_fo_step`;
- pFedMe (T. Dinh et al., NeurIPS 2020): :func:`pfedme_inner_solve`, :func:`pfedme_local_update`,
  :func:`pfedme_server_update`.

Per-FedAvg and pFedMe work on a list of parameter tensors and a gradient oracle
(:data:`GradFn`, built for a model by :func:`make_grad_fn`), so that their math is testable on
tiny problems with hand-computed gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn import functional as F

from fedfomo.data import normalize

Params = list[torch.Tensor]
GradFn = Callable[[Params, Any], tuple[Params, float]]
"""``grad_fn(params, batch) -> (gradients, loss)``: the gradient of a loss at ``params`` on ``batch``."""

PARTIAL_METHODS = ("lg_fedavg", "fedper")
"""Methods that share only some layers (the split is ``<method>.shared_layers``)."""


# -- FedProx ---------------------------------------------------------------------------------
def proximal_term(params: Iterable[tuple[str, torch.Tensor]], anchor: Mapping[str, torch.Tensor],
                  mu: float) -> torch.Tensor:
    """FedProx's proximal term ``mu / 2 * ||w - w_global||^2`` (Li et al., 2020, Eq. 2).

    Parameters
    ----------
    params : iterable of (str, torch.Tensor)
        Named parameters w of the model being trained (``model.named_parameters()``).
    anchor : mapping of str to torch.Tensor
        The global model w^t the round started from, by parameter name (constant).
    mu : float
        Proximal coefficient.

    Returns
    -------
    torch.Tensor
        A scalar; its gradient with respect to each parameter is ``mu * (w - w_global)``.

    """
    total = torch.zeros(())
    for name, p in params:
        total = total + ((p - anchor[name]) ** 2).sum()
    return 0.5 * mu * total


# -- LG-FedAvg / FedPer: partial sharing -------------------------------------------------------
def layer_mask(names: Sequence[str], prefixes: Sequence[str]) -> list[bool]:
    """Which state_dict entries are shared: those whose name starts with one of ``prefixes``.

    Parameters
    ----------
    names : sequence of str
        state_dict keys, in order (e.g. ``conv1.weight``, ..., ``fc2.bias``).
    prefixes : sequence of str
        Name prefixes of the shared layers (e.g. ``["conv", "fc1"]``).

    Returns
    -------
    list of bool
        ``True`` for a shared (averaged) entry, ``False`` for one kept on the client.

    """
    return [any(n.startswith(p) for p in prefixes) for n in names]


def split_by_mask(weights: Sequence[np.ndarray], mask: Sequence[bool]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Split a model into (shared entries, kept entries), each in state_dict order."""
    if len(weights) != len(mask):
        raise ValueError(f"expected {len(mask)} arrays, got {len(weights)}")
    return ([w for w, s in zip(weights, mask) if s], [w for w, s in zip(weights, mask) if not s])


def merge_by_mask(shared: Sequence[np.ndarray], kept: Sequence[np.ndarray], mask: Sequence[bool]) -> list[np.ndarray]:
    """Inverse of :func:`split_by_mask`: the full model from its shared and kept entries."""
    if len(shared) != sum(mask) or len(kept) != len(mask) - sum(mask):
        raise ValueError(f"mask wants {sum(mask)} shared and {len(mask) - sum(mask)} kept arrays, "
                         f"got {len(shared)} and {len(kept)}")
    it_s, it_k = iter(shared), iter(kept)
    return [next(it_s) if s else next(it_k) for s in mask]


# -- gradient oracle ---------------------------------------------------------------------------
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


# -- Per-FedAvg ----------------------------------------------------------------------------------
def perfedavg_fo_step(params: Params, grad_fn: GradFn, inner_batch: Any, outer_batch: Any, *,
                      alpha: float, beta: float) -> tuple[Params, float]:
    """One local step of Per-FedAvg (FO) (Fallah et al., 2020, Algorithm 1 with the first-order estimate).

    ``temp = w - alpha * grad f(w; D)``, then ``w <- w - beta * grad f(temp; D')``: the
    meta-gradient ``(I - alpha * Hessian) grad f(temp)`` with the Hessian term dropped.

    Parameters
    ----------
    params : list of torch.Tensor
        The local model w.
    grad_fn : GradFn
        Gradient oracle of the client's loss.
    inner_batch, outer_batch : any
        The two independent batches D and D'.
    alpha, beta : float
        Inner (personalization) and outer (meta) step sizes.

    Returns
    -------
    tuple of (list of torch.Tensor, float)
        The updated w and the loss of the adapted model ``temp`` on D'.

    """
    temp, _ = gradient_step(params, grad_fn, inner_batch, alpha)
    grads, loss = grad_fn(temp, outer_batch)
    return [p.detach() - beta * g for p, g in zip(params, grads)], loss


# -- pFedMe --------------------------------------------------------------------------------------
def pfedme_inner_solve(theta: Params, anchor: Params, grad_fn: GradFn, batch: Any, *, lam: float, lr: float,
                       steps: int) -> tuple[Params, float]:
    """Approximately solve pFedMe's inner problem (T. Dinh et al., 2020, Eq. 7) on one batch.

    ``theta(w) = argmin_theta f(theta; batch) + lam / 2 * ||theta - w||^2`` by ``steps`` (K)
    gradient steps of size ``lr`` (the personal learning rate), started from ``theta``.

    Parameters
    ----------
    theta : list of torch.Tensor
        Starting point (pFedMe warm-starts from the previous personalized model).
    anchor : list of torch.Tensor
        The local model w (constant during the solve).
    grad_fn : GradFn
        Gradient oracle of f.
    batch : any
        The batch f is evaluated on.
    lam : float
        lambda, the strength of the Moreau-envelope regularizer.
    lr : float
        Personal learning rate.
    steps : int
        K, number of gradient steps.

    Returns
    -------
    tuple of (list of torch.Tensor, float)
        The approximate solution and f at the last step's starting point.

    """
    loss = float("nan")
    theta = [t.detach() for t in theta]
    for _ in range(steps):
        grads, loss = grad_fn(theta, batch)
        theta = [t - lr * (g + lam * (t - a)) for t, g, a in zip(theta, grads, anchor)]
    return theta, loss


def pfedme_local_update(w: Params, theta: Params, *, lam: float, lr: float) -> Params:
    """Local model update of pFedMe (Algorithm 1): ``w <- w - lr * lam * (w - theta)``."""
    return [wi - lr * lam * (wi - ti) for wi, ti in zip(w, theta)]


def pfedme_server_update(previous: Sequence[np.ndarray], average: Sequence[np.ndarray],
                         beta: float) -> list[np.ndarray]:
    """Global update of pFedMe: ``w <- (1 - beta) * w + beta * mean of the clients' local models``.

    ``beta = 1`` is plain averaging (FedAvg's aggregation).
    """
    return [((1.0 - beta) * p.astype(np.float64) + beta * a.astype(np.float64)).astype(a.dtype)
            for p, a in zip(previous, average)]


# -- settings --------------------------------------------------------------------------------------
def method_params(cfg: DictConfig) -> dict:
    """The selected method's own settings: the top-level block named after it, as plain values.

    ``method=fedprox`` -> ``{"mu": 0.01}``; methods without a block (fedavg, local, fedfomo,
    whose settings live under ``fomo``) -> ``{}``.
    """
    block = cfg.get(cfg.method.name)
    if block is None:
        return {}
    return OmegaConf.to_container(block, resolve=True)  # type: ignore[return-value]


def strategy_options(cfg: DictConfig) -> dict:
    """Extra keyword arguments of the selected method's strategy (besides the common ones)."""
    from fedfomo.models import state_keys

    name = cfg.method.name
    if name in PARTIAL_METHODS:
        return {"shared_mask": layer_mask(state_keys(cfg.model), list(cfg[name].shared_layers))}
    if name == "pfedme":
        return {"beta": float(cfg.pfedme.beta)}
    return {}
