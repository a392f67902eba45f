"""What LG-FedAvg and FedPer share: only some layers are federated, the rest stay on each client.

The split is ``method.shared_layers``: name prefixes of the state_dict entries that are
averaged (FedAvg over those layers only); every other entry is kept in client state.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from omegaconf import DictConfig, ListConfig

from fedfomo.client import BaseClient, Weights
from fedfomo.config import ConfigError, require
from fedfomo.methods.fedavg import FedAvgStrategy
from fedfomo.models import state_keys


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


class PartialSharingClient(BaseClient):
    """Partial sharing: the layers named by ``method_params["shared_layers"]`` are federated, the rest stay.

    One mechanism, two methods, differing only in the split (name prefixes of state_dict keys):

    - LG-FedAvg (Liang et al., "Think Locally, Act Globally: Federated Learning with Local and
      Global Representations", 2020): local representation layers (conv, fc1) stay on the
      client, the global head (fc2) is averaged;
    - FedPer (Arivazhagan et al., "Federated Learning with Personalization Layers", 2019): base
      layers (conv, fc1) are averaged, the personalization head (fc2) stays on the client.

    The personalized model is the downloaded shared layers plus this client's kept layers (the
    common initial ones before its first round). The whole model is trained locally; the kept
    layers are saved in client state and only the shared ones are uploaded.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.mask = layer_mask(list(self.model.state_dict()), list(self.hp["shared_layers"]))

    def personalize(  # noqa: D102
        self, parameters: Weights, config: dict, commit: bool
    ) -> tuple[Weights, dict[str, float | int | str]]:
        kept = self.load_state("kept_layers")
        if kept is None:
            _, kept = split_by_mask(self.initial_weights(), self.mask)
        return merge_by_mask(list(parameters), kept, self.mask), {}

    def after_training(self, trained: Weights) -> Weights:  # noqa: D102
        shared, kept = split_by_mask(trained, self.mask)
        self.save_state("kept_layers", kept)
        return shared


class PartialSharingStrategy(FedAvgStrategy):
    """LG-FedAvg / FedPer server: FedAvg over the shared layers only.

    Only the shared state_dict entries travel: clients download the averaged shared layers and
    upload their trained shared layers, which are averaged weighted by train size; every other
    layer stays on its client (see :class:`PartialSharingClient`).

    Parameters
    ----------
    shared_mask : list of bool
        For each state_dict entry, whether it is shared (:func:`fedfomo.layer_mask`).
    initial_weights : list of np.ndarray
        The full common initial model; its shared entries are the first global model.
    **kwargs
        See :class:`PersonalizedStrategy`.

    """

    def __init__(self, *, shared_mask: list[bool], initial_weights: Weights, **kwargs) -> None:
        shared, _ = split_by_mask(initial_weights, shared_mask)
        super().__init__(initial_weights=shared, **kwargs)


def check_layer_prefixes(cfg: DictConfig, key: str, *, allow_all: bool = False) -> list[str]:
    """``key``: a non-empty list of name prefixes of the model's layers; returns it.

    Unless ``allow_all``, the prefixes must leave at least one layer out (on the client).
    """
    value, model = require(cfg, key), cfg.model
    keys = state_keys(model)
    layers = sorted({k.split(".")[0] for k in keys})
    allowed = f"a non-empty list of name prefixes of {model}'s layers ({', '.join(layers)})"
    if not allow_all:
        allowed += " that leaves at least one layer on the client"
    if not isinstance(value, (list, tuple, ListConfig)) or not value:
        raise ConfigError(f"{key}={value!r} is not supported; allowed: {allowed}")
    prefixes = list(value)
    if not all(isinstance(p, str) and p and any(k.startswith(p) for k in keys) for p in prefixes):
        raise ConfigError(f"{key}={prefixes!r} is not supported; allowed: {allowed}")
    if not allow_all and all(any(k.startswith(p) for p in prefixes) for k in keys):
        raise ConfigError(f"{key}={prefixes!r} shares every layer; allowed: {allowed}")
    return prefixes


def validate(cfg: DictConfig) -> None:
    """``method.shared_layers``: a non-empty list of layer-name prefixes that leaves a layer on the client."""
    check_layer_prefixes(cfg, "method.shared_layers")


def strategy_options(cfg: DictConfig) -> dict:
    """The mask of shared state_dict entries."""
    return {"shared_mask": layer_mask(state_keys(cfg.model), list(cfg.method.shared_layers))}
