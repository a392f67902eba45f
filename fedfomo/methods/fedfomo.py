"""FedFomo (Zhang et al., "Personalized Federated Learning with First Order Model Optimization", ICLR 2021).

Authors' code: NVlabs/FedFomo. The math (Eq. 3 weights, Eq. 13 merge, selection, epsilon
schedule, P update) is :mod:`fedfomo.fomo`; here are its client (evaluate the downloaded
candidates on the validation split, weight, merge) and its server (a store of every client's
latest upload and the affinity matrix P). Settings: ``method.num_models`` (M, own model
included), ``method.epsilon``, ``method.epsilon_decay``, ``method.distance``.
"""

from __future__ import annotations

import time

import numpy as np
from omegaconf import DictConfig

from fedfomo import fomo
from fedfomo.checkpoint import unpack
from fedfomo.client import BaseClient
from fedfomo.config import check_choice, check_float, check_int, require
from fedfomo.messages import concat_models, decode_floats, decode_ids, encode_floats, encode_ids, split_models
from fedfomo.methods import Method
from fedfomo.strategy import PersonalizedStrategy, Weights


class FedFomoClient(BaseClient):
    """FedFomo (Zhang et al., ICLR 2021): evaluate downloaded models, weight them (Eq. 3), merge (Eq. 13).

    The server sends the candidates' weights concatenated, with their ids in
    ``config["candidate_ids"]``. The baseline theta_i^(t-1) is the personalized model from the
    start of this client's previous round (before local training), kept in client state; before
    the first federated update it is the common initial model.
    """

    def personalize(self, parameters, config, commit):  # noqa: D102
        ids = decode_ids(str(config.get("candidate_ids", "")))
        if not ids:  # nothing uploaded yet: start from the server's initial model
            return list(parameters), {"candidate_ids": "", "weights": "", "reverted": 0}
        candidates = split_models(list(parameters), self.num_arrays)
        baseline = self.load_state("baseline")
        if baseline is None:
            baseline = self.initial_weights()
        t0 = time.perf_counter()
        raw, eval_s = self.candidate_weights(baseline, candidates)
        merged, reverted = fomo.fomo_merge(baseline, candidates, raw)
        t2 = time.perf_counter()
        if commit:
            self.save_state("baseline", merged)
        return merged, {"candidate_ids": encode_ids(ids), "weights": encode_floats(raw),
                        "reverted": int(reverted), "eval_s": eval_s, "merge_s": t2 - t0 - eval_s}

    def val_loss(self, weights: Weights) -> float:
        """Mean cross-entropy of ``weights`` on this client's validation split."""
        return self.loss_on(weights, self.data.val_x, self.data.val_y)[0]

    def candidate_weights(self, baseline: Weights, candidates: list[Weights]) -> tuple[np.ndarray, float]:
        """Raw Eq. 3 weights of the candidates, and the seconds spent in validation passes."""
        t0 = time.perf_counter()
        base_loss = self.val_loss(baseline)
        cand_losses = [self.val_loss(c) for c in candidates]
        eval_s = time.perf_counter() - t0
        dists = [fomo.parameter_distance(c, baseline, str(self.hp["distance"])) for c in candidates]
        return fomo.fomo_weights(base_loss, cand_losses, dists), eval_s


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

    def __init__(self, *, num_models: int, epsilon: float, epsilon_decay: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_models = num_models
        self.epsilon = epsilon
        self.epsilon_decay = epsilon_decay
        self.store: dict[int, Weights] = {}
        self.store_round: dict[int, int] = {}  # round of each stored upload (names its checkpoint blob)
        self.affinity = np.eye(self.num_clients)
        self._rng_round = -1
        self._rng = np.random.default_rng(self.seed)

    def _rng_for(self, server_round: int) -> np.random.Generator:
        if server_round != self._rng_round:
            self._rng_round = server_round
            self._rng = np.random.default_rng([self.seed, 2, server_round])
        return self._rng

    def download(self, cid, server_round):  # noqa: D102
        if not self.store:
            return self.global_weights, {"candidate_ids": ""}
        eps = fomo.epsilon_at(self.epsilon, self.epsilon_decay, server_round)
        ids = fomo.select_candidates(self.affinity[cid], cid, sorted(self.store), self.num_models, eps,
                                     self._rng_for(server_round))
        return concat_models([self.store[j] for j in ids]), {"candidate_ids": encode_ids(ids)}

    def aggregate(self, server_round, uploads):  # noqa: D102
        for cid in sorted(uploads):
            metrics = uploads[cid].metrics
            ids = decode_ids(str(metrics.get("candidate_ids", "")))
            if ids:
                self.affinity = fomo.update_affinity(self.affinity, cid, ids, decode_floats(str(metrics["weights"])))
        for cid, up in uploads.items():
            self.store[cid] = up.weights
            self.store_round[cid] = server_round

    def after_round(self, server_round: int) -> None:  # noqa: D102
        self.recorder.log_affinity(server_round, self.affinity)

    def checkpoint_state(self):  # noqa: D102
        arrays, meta = super().checkpoint_state()
        arrays["affinity"] = self.affinity
        return arrays, {**meta, "store_round": {str(c): r for c, r in sorted(self.store_round.items())}}

    def checkpoint_blobs(self):  # noqa: D102
        return {f"store_{c}_r{r:04d}": self.store[c] for c, r in self.store_round.items()}

    def restore_state(self, arrays, meta):  # noqa: D102
        super().restore_state(arrays, meta)
        self.affinity = np.array(arrays["affinity"])
        if "store" in meta:  # checkpoints written before the store moved to blobs
            self.store = {int(cid): unpack(arrays, f"store/{cid}") for cid in meta["store"]}
            self.store_round = dict.fromkeys(self.store, 0)
            return
        self.store_round = {int(c): int(r) for c, r in meta["store_round"].items()}
        self.store = {c: unpack(arrays, f"blob/store_{c}_r{r:04d}") for c, r in self.store_round.items()}


def validate(cfg: DictConfig) -> None:
    """M in 1..num_clients, epsilon and its decay in [0, 1], a known distance."""
    check_int("method.num_models", require(cfg, "method.num_models"), 1, int(cfg.num_clients))
    check_float("method.epsilon", require(cfg, "method.epsilon"), 0.0, 1.0)
    check_float("method.epsilon_decay", require(cfg, "method.epsilon_decay"), 0.0, 1.0)
    check_choice("method.distance", require(cfg, "method.distance"), fomo.DISTANCES)


def strategy_options(cfg: DictConfig) -> dict:
    """M and the exploration schedule."""
    return {"num_models": int(cfg.method.num_models), "epsilon": float(cfg.method.epsilon),
            "epsilon_decay": float(cfg.method.epsilon_decay)}


METHOD = Method(name="fedfomo", client=FedFomoClient, strategy=FedFomoStrategy, validate=validate,
                strategy_options=strategy_options, facts=lambda cfg: {"num_models": int(cfg.method.num_models)},
                reference="Zhang et al., ICLR 2021; NVlabs/FedFomo")
