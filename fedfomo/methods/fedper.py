"""FedPer (Arivazhagan et al., "Federated Learning with Personalization Layers", 2019).

Base layers (conv*, fc1) are averaged, the personalization head (fc2) stays on each client:
:mod:`fedfomo.methods.partial_sharing` with ``method.shared_layers = [conv, fc1]``.
"""

from __future__ import annotations

from fedfomo.methods import Method
from fedfomo.methods.partial_sharing import PartialSharingClient, PartialSharingStrategy, strategy_options, validate

METHOD = Method(name="fedper", client=PartialSharingClient, strategy=PartialSharingStrategy, validate=validate,
                strategy_options=strategy_options, reference="Arivazhagan et al., 2019")
