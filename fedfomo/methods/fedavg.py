"""FedAvg (McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data", 2017).

Every round each sampled client starts from the global model, trains E local epochs and uploads;
the server averages the uploads weighted by train size. Several methods build on these two classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedfomo.client import BaseClient, Weights
from fedfomo.methods import Method
from fedfomo.strategy import PersonalizedStrategy, weighted_average

if TYPE_CHECKING:
    from fedfomo.messages import Upload


class FedAvgClient(BaseClient):
    """FedAvg (McMahan et al., 2017): start every round from the server's global model."""

    def personalize(  # noqa: D102
        self, parameters: Weights, config: dict, commit: bool
    ) -> tuple[Weights, dict[str, float | int | str]]:
        return list(parameters), {}


class FedAvgStrategy(PersonalizedStrategy):
    """FedAvg: everyone gets the global model; uploads are averaged weighted by train size."""

    def download(self, cid: int, server_round: int) -> tuple[Weights, dict[str, int | float | str]]:  # noqa: D102
        return self.global_weights, {}

    def aggregate(self, server_round: int, uploads: dict[int, Upload]) -> Weights | None:  # noqa: D102
        return weighted_average([(u.weights, u.num_examples) for u in uploads.values()])


METHOD = Method(name="fedavg", client=FedAvgClient, strategy=FedAvgStrategy,
                reference="McMahan et al., AISTATS 2017")
