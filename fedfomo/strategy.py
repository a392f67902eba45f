"""Flower strategies: one personalized-FL skeleton, method-specific download and aggregation.

The skeleton samples clients (seeded), builds one ``FitIns`` per client, collects each
client's metrics into a :class:`~fedfomo.results.RunRecorder` row per round, and after the
last round asks every client for a final evaluation of the model it would keep.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy

from fedfomo import baselines, fomo
from fedfomo.messages import concat_models, decode_floats, decode_ids, encode_ids
from fedfomo.results import RunRecorder

log = logging.getLogger(__name__)
Weights = list[np.ndarray]


def sample_clients(num_clients: int, participation: float, server_round: int, seed: int) -> list[int]:
    """Ids of the clients taking part in a round: ``max(1, round(participation * N))`` of them."""
    k = max(1, int(round(participation * num_clients)))
    if k >= num_clients:
        return list(range(num_clients))
    rng = np.random.default_rng([seed, 1, server_round])
    return sorted(int(c) for c in rng.choice(num_clients, size=k, replace=False))


def partition_id(proxy: ClientProxy) -> int:
    """The stable client id (partition id) of a simulation client proxy."""
    return int(proxy.partition_id)  # type: ignore[attr-defined]


class PersonalizedStrategy(Strategy):
    """Shared skeleton of every method's strategy.

    Parameters
    ----------
    num_clients : int
        Size of the federation.
    num_rounds : int
        Number of rounds (the final evaluation runs after the last one).
    participation : float
        Fraction of clients per round.
    seed : int
        Seed of client sampling and of any server-side randomness.
    initial_weights : list of np.ndarray
        The common initial model.
    recorder : RunRecorder
        Receives one row per round and the final evaluation.

    """

    name = "base"

    def __init__(self, *, num_clients: int, num_rounds: int, participation: float, seed: int,
                 initial_weights: Weights, recorder: RunRecorder) -> None:
        super().__init__()
        self.num_clients = num_clients
        self.num_rounds = num_rounds
        self.participation = participation
        self.seed = seed
        self.initial_weights = initial_weights
        self.recorder = recorder
        self._round_start = 0.0
        self._download_bytes = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_clients={self.num_clients})"

    # -- method hooks ------------------------------------------------------------------------
    def download(self, cid: int, server_round: int, parameters: Parameters) -> tuple[Weights, dict[str, Scalar]]:
        """What client ``cid`` receives this round: weights and extra config."""
        raise NotImplementedError

    def aggregate(self, server_round: int, uploads: dict[int, tuple[Weights, int, dict]]) -> Weights | None:
        """Digest the uploads ``{cid: (weights, num_examples, metrics)}``; return new global weights or None."""
        raise NotImplementedError

    def final_download(self, cid: int, parameters: Parameters) -> tuple[Weights, dict[str, Scalar]]:
        """What client ``cid`` receives for the final evaluation (default: as in a round)."""
        return self.download(cid, self.num_rounds + 1, parameters)

    # -- Flower API ----------------------------------------------------------------------------
    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:  # noqa: D102
        return ndarrays_to_parameters(self.initial_weights)

    def _proxies(self, client_manager: ClientManager) -> dict[int, ClientProxy]:
        client_manager.wait_for(self.num_clients)
        return {partition_id(p): p for p in client_manager.all().values()}

    def configure_fit(self, server_round: int, parameters: Parameters,
                      client_manager: ClientManager) -> list[tuple[ClientProxy, FitIns]]:
        """Sample clients and give each its own download."""
        self._round_start = time.perf_counter()
        proxies = self._proxies(client_manager)
        out = []
        self._download_bytes = 0
        for cid in sample_clients(self.num_clients, self.participation, server_round, self.seed):
            weights, extra = self.download(cid, server_round, parameters)
            self._download_bytes += sum(w.nbytes for w in weights)
            config: dict[str, Scalar] = {"server_round": server_round, **extra}
            out.append((proxies[cid], FitIns(ndarrays_to_parameters(weights), config)))
        return out

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Aggregate the method's way and record the round."""
        if failures:
            raise RuntimeError(f"round {server_round}: {len(failures)} client(s) failed: {failures[0]!r}")
        uploads = {}
        for _, res in results:
            m = dict(res.metrics)
            uploads[int(m["cid"])] = (parameters_to_ndarrays(res.parameters), res.num_examples, m)
        new = self.aggregate(server_round, uploads)
        wall = time.perf_counter() - self._round_start
        upload_bytes = sum(sum(w.nbytes for w in u[0]) for u in uploads.values())
        self.recorder.log_round(server_round, [u[2] for u in uploads.values()], wall_s=wall,
                                download_mb=self._download_bytes / 2**20, upload_mb=upload_bytes / 2**20)
        self.after_round(server_round)
        return (ndarrays_to_parameters(new) if new is not None else None), {}

    def after_round(self, server_round: int) -> None:
        """Hook for per-round artefacts (e.g. FedFomo's P)."""

    def configure_evaluate(self, server_round: int, parameters: Parameters,
                           client_manager: ClientManager) -> list[tuple[ClientProxy, EvaluateIns]]:
        """Only after the last round: every client evaluates the model it would keep."""
        if server_round != self.num_rounds:
            return []
        proxies = self._proxies(client_manager)
        out = []
        for cid in range(self.num_clients):
            weights, extra = self.final_download(cid, parameters)
            config: dict[str, Scalar] = {"server_round": server_round + 1, **extra}
            out.append((proxies[cid], EvaluateIns(ndarrays_to_parameters(weights), config)))
        return out

    def aggregate_evaluate(self, server_round: int, results: list[tuple[ClientProxy, EvaluateRes]],
                           failures: list) -> tuple[float | None, dict[str, Scalar]]:
        """Record every client's final personalized test accuracy."""
        if failures:
            raise RuntimeError(f"final evaluation: {len(failures)} client(s) failed: {failures[0]!r}")
        acc = {int(r.metrics["cid"]): float(r.metrics["test_acc"]) for _, r in results}
        self.recorder.log_final(acc)
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        """No centralized evaluation: personalized FL is evaluated on each client's test set."""
        return None


class FedAvgStrategy(PersonalizedStrategy):
    """FedAvg: everyone gets the global model; uploads are averaged weighted by train size."""

    name = "fedavg"

    def download(self, cid, server_round, parameters):  # noqa: D102
        return parameters_to_ndarrays(parameters), {}

    def aggregate(self, server_round, uploads):  # noqa: D102
        return weighted_average([(w, n) for w, n, _ in uploads.values()])


def weighted_average(models: list[tuple[Weights, int]]) -> Weights:
    """Average models weighted by their number of examples (FedAvg's aggregation)."""
    total = float(sum(n for _, n in models))
    return [
        sum(w[k].astype(np.float64) * (n / total) for w, n in models).astype(models[0][0][k].dtype)
        for k in range(len(models[0][0]))
    ]


class LocalStrategy(PersonalizedStrategy):
    """Local training: nothing is exchanged (clients keep their own model in client state)."""

    name = "local"

    def download(self, cid, server_round, parameters):  # noqa: D102
        return [], {}

    def aggregate(self, server_round, uploads):  # noqa: D102
        return None


class FedFomoStrategy(PersonalizedStrategy):
    """FedFomo's server: a store of every client's latest upload and the affinity matrix P.

    Parameters
    ----------
    num_models : int
        M, models downloaded per client, own included.
    epsilon, epsilon_decay : float
        Exploration schedule, see :func:`fedfomo.fomo.epsilon_at`.
    **kwargs
        See :class:`PersonalizedStrategy`.

    """

    name = "fedfomo"

    def __init__(self, *, num_models: int, epsilon: float, epsilon_decay: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_models = num_models
        self.epsilon = epsilon
        self.epsilon_decay = epsilon_decay
        self.store: dict[int, Weights] = {}
        self.affinity = np.eye(self.num_clients)
        self._rng_round = -1
        self._rng = np.random.default_rng(self.seed)

    def _rng_for(self, server_round: int) -> np.random.Generator:
        if server_round != self._rng_round:
            self._rng_round = server_round
            self._rng = np.random.default_rng([self.seed, 2, server_round])
        return self._rng

    def download(self, cid, server_round, parameters):  # noqa: D102
        if not self.store:
            return parameters_to_ndarrays(parameters), {"candidate_ids": ""}
        eps = fomo.epsilon_at(self.epsilon, self.epsilon_decay, server_round)
        ids = fomo.select_candidates(self.affinity[cid], cid, sorted(self.store), self.num_models, eps,
                                     self._rng_for(server_round))
        return concat_models([self.store[j] for j in ids]), {"candidate_ids": encode_ids(ids)}

    def aggregate(self, server_round, uploads):  # noqa: D102
        for cid in sorted(uploads):
            _, _, metrics = uploads[cid]
            ids = decode_ids(str(metrics.get("candidate_ids", "")))
            if ids:
                self.affinity = fomo.update_affinity(self.affinity, cid, ids, decode_floats(str(metrics["weights"])))
        for cid, (weights, _, _) in uploads.items():
            self.store[cid] = weights

    def after_round(self, server_round: int) -> None:  # noqa: D102
        self.recorder.log_affinity(server_round, self.affinity)


class PartialSharingStrategy(FedAvgStrategy):
    """LG-FedAvg / FedPer server: FedAvg over the shared layers only.

    Only the shared state_dict entries travel: clients download the averaged shared layers and
    upload their trained shared layers, which are averaged weighted by train size; every other
    layer stays on its client (see :class:`fedfomo.client.PartialSharingClient`).

    Parameters
    ----------
    shared_mask : list of bool
        For each state_dict entry, whether it is shared (:func:`fedfomo.baselines.layer_mask`).
    initial_weights : list of np.ndarray
        The full common initial model; its shared entries are the first global model.
    **kwargs
        See :class:`PersonalizedStrategy`.

    """

    name = "partial"

    def __init__(self, *, shared_mask: list[bool], initial_weights: Weights, **kwargs) -> None:
        shared, _ = baselines.split_by_mask(initial_weights, shared_mask)
        super().__init__(initial_weights=shared, **kwargs)
        self.shared_mask = list(shared_mask)


class PFedMeStrategy(FedAvgStrategy):
    """pFedMe's server (T. Dinh et al., NeurIPS 2020, Algorithm 1): ``w <- (1 - beta) w + beta * mean(w_i)``.

    The mean is over the round's clients, weighted by train size (as FedAvg's); ``beta = 1``
    is plain averaging.

    Parameters
    ----------
    beta : float
        Server step.
    **kwargs
        See :class:`PersonalizedStrategy`.

    """

    name = "pfedme"

    def __init__(self, *, beta: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.beta = beta
        self.global_weights: Weights = list(self.initial_weights)

    def aggregate(self, server_round, uploads):  # noqa: D102
        average = weighted_average([(w, n) for w, n, _ in uploads.values()])
        self.global_weights = baselines.pfedme_server_update(self.global_weights, average, self.beta)
        return self.global_weights


STRATEGIES: dict[str, type[PersonalizedStrategy]] = {
    "fedavg": FedAvgStrategy,
    "local": LocalStrategy,
    "fedfomo": FedFomoStrategy,
    "fedprox": FedAvgStrategy,      # FedProx changes local training only
    "fedavg_data": FedAvgStrategy,  # FedAvg; the shared data is added by the client factory
    "lg_fedavg": PartialSharingStrategy,
    "fedper": PartialSharingStrategy,
    "perfedavg": FedAvgStrategy,    # Per-FedAvg averages the meta-trained models
    "pfedme": PFedMeStrategy,
}
