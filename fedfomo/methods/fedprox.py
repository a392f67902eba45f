"""FedProx (Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020).

FedAvg whose local objective adds ``mu / 2 * ||w - w^t||^2`` to every batch loss (``method.mu``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np
import torch
from omegaconf import DictConfig

from fedfomo.client import Weights
from fedfomo.config import check_float, require
from fedfomo.methods import Method
from fedfomo.methods.fedavg import FedAvgClient, FedAvgStrategy


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


class FedProxClient(FedAvgClient):
    """FedProx (Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020).

    FedAvg whose local objective adds the proximal term ``mu / 2 * ||w - w^t||^2`` to every
    batch loss, w^t the global model the round started from (``method_params["mu"]``).
    """

    def extra_loss(self, start: Weights) -> Callable[[torch.nn.Module], torch.Tensor] | None:  # noqa: D102
        mu = float(self.hp["mu"])
        if mu == 0.0:
            return None
        keys = list(self.model.state_dict())
        names = {n for n, _ in self.model.named_parameters()}
        anchor = {k: torch.from_numpy(np.asarray(w)).to(self.device) for k, w in zip(keys, start) if k in names}
        return lambda model: proximal_term(model.named_parameters(), anchor, mu)


def validate(cfg: DictConfig) -> None:
    """Mu >= 0 (0 is FedAvg)."""
    check_float("method.mu", require(cfg, "method.mu"), 0.0, float("inf"))


METHOD = Method(name="fedprox", client=FedProxClient, strategy=FedAvgStrategy, validate=validate,
                reference="Li et al., MLSys 2020", supports_dp=False)
