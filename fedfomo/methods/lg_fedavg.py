"""LG-FedAvg: local representations, a global head (Liang et al., 2020).

Paper: "Think Locally, Act Globally: Federated Learning with Local and Global Representations".

Authors' code: pliang279/LG-FedAvg. Local representation layers (conv*, fc1) stay on each
client, the global head (fc2) is averaged: :mod:`fedfomo.methods.partial_sharing` with
``method.shared_layers = [fc2]``.
"""

from __future__ import annotations

from fedfomo.methods import Method
from fedfomo.methods.partial_sharing import PartialSharingClient, PartialSharingStrategy, strategy_options, validate

METHOD = Method(name="lg_fedavg", client=PartialSharingClient, strategy=PartialSharingStrategy, validate=validate,
                strategy_options=strategy_options, reference="Liang et al., 2020; pliang279/LG-FedAvg")
