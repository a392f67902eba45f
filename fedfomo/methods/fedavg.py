"""FedAvg (McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data", 2017).

Every round each sampled client starts from the global model, trains E local epochs and uploads;
the server averages the uploads weighted by train size. Several methods build on these two classes.
"""

from __future__ import annotations

from fedfomo.client import BaseClient
from fedfomo.methods import Method
from fedfomo.strategy import PersonalizedStrategy, weighted_average


class FedAvgClient(BaseClient):
    """FedAvg (McMahan et al., 2017): start every round from the server's global model."""

    def personalize(self, parameters, config, commit):  # noqa: D102
        return list(parameters), {}


class FedAvgStrategy(PersonalizedStrategy):
    """FedAvg: everyone gets the global model; uploads are averaged weighted by train size."""

    def download(self, cid, server_round):  # noqa: D102
        return self.global_weights, {}

    def aggregate(self, server_round, uploads):  # noqa: D102
        return weighted_average([(u.weights, u.num_examples) for u in uploads.values()])


METHOD = Method(name="fedavg", client=FedAvgClient, strategy=FedAvgStrategy,
                reference="McMahan et al., AISTATS 2017")
