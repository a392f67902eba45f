"""Flower NumPyClients: one shared round skeleton, method-specific federated updates.

Every round a participating client (1) performs its method's federated update to obtain the
model it starts the round with (its personalized model), (2) evaluates that model on its own
test set (as the authors' code does), (3) trains it for E local epochs and (4) uploads. Only
step (1) and what is uploaded differ between methods.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from flwr.client import NumPyClient
from flwr.common import ArrayRecord, RecordDict

from fedfomo import fomo
from fedfomo.messages import decode_ids, encode_floats, encode_ids, split_models
from fedfomo.models import build_model, get_weights, set_weights
from fedfomo.training import OptimConfig, evaluate, round_lr, train

Weights = list[np.ndarray]


@dataclass(frozen=True)
class ClientData:
    """One client's tensors: uint8 images and int64 labels of its train, val and test sets."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


@dataclass(frozen=True)
class ClientSettings:
    """Everything a client needs besides its data (plain values, picklable).

    Attributes
    ----------
    model, image_shape, num_classes, seed
        What :func:`fedfomo.models.build_model` needs; ``seed`` also seeds batch orders.
    mean, std
        Normalization constants.
    local_epochs : int
        E.
    lr, lr_decay, momentum, weight_decay, batch_size
        SGD settings; the lr of round t is ``lr * lr_decay ** (t - 1)``.
    eval_batch_size : int
        Batch size of evaluation passes.
    distance : str
        FedFomo's parameter distance, ``l1`` or ``l2``.

    """

    model: str
    image_shape: tuple[int, int, int]
    num_classes: int
    seed: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    local_epochs: int
    lr: float
    lr_decay: float
    momentum: float
    weight_decay: float
    batch_size: int
    eval_batch_size: int = 1000
    distance: str = "l1"


class BaseClient(NumPyClient):
    """The round skeleton shared by all methods.

    Subclasses implement :meth:`personalize` (the federated update) and may override
    :meth:`after_training` (what is kept and what is uploaded).
    """

    def __init__(self, cid: int, data: ClientData, settings: ClientSettings, state: RecordDict) -> None:
        self.cid = cid
        self.data = data
        self.s = settings
        self.state = state
        self.model = build_model(settings.model, settings.image_shape, settings.num_classes, settings.seed)
        self.num_arrays = len(self.model.state_dict())

    # -- helpers -----------------------------------------------------------------------------
    def initial_weights(self) -> Weights:
        """The common initial model (same seed as the server's)."""
        return get_weights(build_model(self.s.model, self.s.image_shape, self.s.num_classes, self.s.seed))

    def load_state(self, key: str) -> Weights | None:
        """Weights kept in Flower's per-client state under ``key``, or None."""
        if key in self.state:
            return self.state[key].to_numpy_ndarrays()  # type: ignore[union-attr]
        return None

    def save_state(self, key: str, weights: Weights) -> None:
        """Keep ``weights`` in Flower's per-client state under ``key``."""
        self.state[key] = ArrayRecord([np.ascontiguousarray(w) for w in weights])

    def loss_on(self, weights: Weights, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """(mean cross-entropy, accuracy) of ``weights`` on (x, y)."""
        set_weights(self.model, weights)
        return evaluate(self.model, x, y, mean=self.s.mean, std=self.s.std, batch_size=self.s.eval_batch_size)

    def generator(self, server_round: int) -> torch.Generator:
        """Seeded batch-order generator for (seed, client, round)."""
        seq = np.random.SeedSequence([self.s.seed, self.cid, server_round])
        return torch.Generator().manual_seed(int(seq.generate_state(1, dtype=np.uint64)[0] >> 1))

    # -- method hooks ------------------------------------------------------------------------
    def personalize(
        self, parameters: Weights, config: dict, commit: bool
    ) -> tuple[Weights, dict[str, float | int | str]]:
        """The federated update: return the model this client starts the round with.

        ``commit`` is False for the final evaluation, which must not change client state.
        The dict holds method-specific metrics (and timings ``eval_s`` / ``merge_s``).
        """
        raise NotImplementedError

    def after_training(self, trained: Weights) -> Weights:
        """Keep what the method keeps and return what to upload (default: the trained model)."""
        return trained

    def extra_loss(self, start: Weights):
        """Optional term added to every training batch's loss (None: plain cross-entropy)."""
        return None

    # -- Flower API ----------------------------------------------------------------------------
    def fit(self, parameters: Weights, config: dict) -> tuple[Weights, int, dict]:
        """Federated update, test evaluation of the personalized model, E epochs, upload."""
        rnd = int(config["server_round"])
        start, metrics = self.personalize(parameters, config, commit=True)
        t0 = time.perf_counter()
        test_loss, test_acc = self.loss_on(start, self.data.test_x, self.data.test_y)
        t1 = time.perf_counter()
        set_weights(self.model, start)
        optim = OptimConfig(lr=round_lr(self.s.lr, self.s.lr_decay, rnd), momentum=self.s.momentum,
                            weight_decay=self.s.weight_decay, batch_size=self.s.batch_size)
        train_loss = train(self.model, self.data.train_x, self.data.train_y, epochs=self.s.local_epochs,
                           optim=optim, mean=self.s.mean, std=self.s.std, generator=self.generator(rnd),
                           extra_loss=self.extra_loss(start))
        t2 = time.perf_counter()
        upload = self.after_training(get_weights(self.model))
        metrics.update(cid=self.cid, test_acc=test_acc, test_loss=test_loss, train_loss=train_loss,
                       test_s=t1 - t0, train_s=t2 - t1)
        metrics.setdefault("eval_s", 0.0)
        metrics.setdefault("merge_s", 0.0)
        return upload, len(self.data.train_y), metrics

    def evaluate(self, parameters: Weights, config: dict) -> tuple[float, int, dict]:
        """Final evaluation: the federated update this client would perform now, on its test set."""
        model, _ = self.personalize(parameters, config, commit=False)
        loss, acc = self.loss_on(model, self.data.test_x, self.data.test_y)
        return loss, len(self.data.test_y), {"cid": self.cid, "test_acc": acc}


class FedAvgClient(BaseClient):
    """FedAvg (McMahan et al., 2017): start every round from the server's global model."""

    def personalize(self, parameters, config, commit):  # noqa: D102
        return list(parameters), {}


class LocalClient(BaseClient):
    """Local training only: the model never leaves the client; it is kept in client state."""

    def personalize(self, parameters, config, commit):  # noqa: D102
        own = self.load_state("local_model")
        return (own if own is not None else self.initial_weights()), {}

    def after_training(self, trained: Weights) -> Weights:  # noqa: D102
        self.save_state("local_model", trained)
        return []


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
        base_loss, _ = self.loss_on(baseline, self.data.val_x, self.data.val_y)
        cand_losses = [self.loss_on(c, self.data.val_x, self.data.val_y)[0] for c in candidates]
        t1 = time.perf_counter()
        dists = [fomo.parameter_distance(c, baseline, self.s.distance) for c in candidates]
        raw = fomo.fomo_weights(base_loss, cand_losses, dists)
        merged, reverted = fomo.fomo_merge(baseline, candidates, raw)
        t2 = time.perf_counter()
        if commit:
            self.save_state("baseline", merged)
        return merged, {"candidate_ids": encode_ids(ids), "weights": encode_floats(raw),
                        "reverted": int(reverted), "eval_s": t1 - t0, "merge_s": t2 - t1}


CLIENTS: dict[str, type[BaseClient]] = {
    "fedavg": FedAvgClient,
    "local": LocalClient,
    "fedfomo": FedFomoClient,
}
