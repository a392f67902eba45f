"""Per-FedAvg (FO): first-order MAML local meta-updates (Fallah et al., NeurIPS 2020).

Paper: "Personalized Federated Learning with Theoretical Guarantees: A Model-Agnostic
Meta-Learning Approach".

Settings: ``method.alpha`` (inner, personalization step) and ``method.beta`` (outer, meta step).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig

from fedfomo.config import check_float, require
from fedfomo.methods import Method
from fedfomo.methods.fedavg import FedAvgStrategy
from fedfomo.methods.functional_loop import FunctionalLoopClient, GradFn, Params, gradient_step
from fedfomo.models import get_weights
from fedfomo.training import round_lr

if TYPE_CHECKING:
    from fedfomo.client import Weights


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


class PerFedAvgClient(FunctionalLoopClient):
    """Per-FedAvg (FO) (Fallah et al., NeurIPS 2020), first-order MAML local meta-updates.

    Paper: "Personalized Federated Learning with Theoretical Guarantees: A Model-Agnostic
    Meta-Learning Approach". Local training: for consecutive pairs (D, D') of the shared loop's batches,
    ``w <- w - beta * grad f(w - alpha * grad f(w; D); D')`` (first-order MAML; a leftover odd
    batch serves as both D and D'). beta follows the shared lr decay; alpha is constant. The
    personalized model evaluated is the global model after one gradient step of size alpha on
    one local training batch (``method_params``: ``alpha``, ``beta``).
    """

    def personalize(  # noqa: D102
        self, parameters: Weights, config: dict, commit: bool
    ) -> tuple[Weights, dict[str, float | int | str]]:
        if len(self.data.train_y) == 0:
            return list(parameters), {}
        batch = self.train_batch(int(config.get("server_round", 0)))
        theta, _ = gradient_step(self.params_of(list(parameters)), self.grad_fn(), batch, float(self.hp["alpha"]))
        return self.weights_of(theta, list(parameters)), {}

    def local_training(self, server_round: int, start: Weights) -> float:  # noqa: D102
        alpha = float(self.hp["alpha"])
        beta = round_lr(float(self.hp["beta"]), self.s.lr_decay, server_round)
        batches = self.epoch_batches(server_round)
        pairs = list(zip(batches[0::2], batches[1::2]))
        if len(batches) % 2:
            pairs.append((batches[-1], batches[-1]))
        params, grad_fn, losses = self.params_of(get_weights(self.model)), self.grad_fn(), []
        for inner, outer in pairs:
            params, loss = perfedavg_fo_step(params, grad_fn, inner, outer, alpha=alpha, beta=beta)
            losses.append(loss)
        self.load_params(params)
        return float(np.mean(losses)) if losses else float("nan")


def validate(cfg: DictConfig) -> None:
    """Alpha > 0 and beta > 0."""
    check_float("method.alpha", require(cfg, "method.alpha"), 0.0, float("inf"), low_open=True)
    check_float("method.beta", require(cfg, "method.beta"), 0.0, float("inf"), low_open=True)


METHOD = Method(name="perfedavg", client=PerFedAvgClient, strategy=FedAvgStrategy, validate=validate,
                reference="Fallah et al., NeurIPS 2020", supports_dp=False)
