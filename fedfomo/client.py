"""The round skeleton every method's Flower NumPyClient shares (the methods are in :mod:`fedfomo.methods`).

Every round a participating client (1) performs its method's federated update to obtain the
model it starts the round with (its personalized model), (2) evaluates that model on its own
test set (as the authors' code does), (3) trains it for E local epochs and (4) uploads. Only
step (1) and what is uploaded differ between methods.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from flwr.client import NumPyClient
from flwr.common import ArrayRecord, ConfigRecord, RecordDict

from fedfomo.data import training_transform
from fedfomo.models import build_model, get_weights, set_weights
from fedfomo.privacy import DPConfig
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
    method_params : dict, optional
        The method's own settings (its config block, e.g. ``{"mu": 0.01}`` for FedProx).
    device : str
        Where the client's model and data live (``cpu`` or ``cuda``).
    dp : DPConfig, optional
        DP-SGD settings when local training is differentially private (:mod:`fedfomo.privacy`).
    augment : str
        ``dataset.augment`` of every training batch (:func:`fedfomo.data.training_transform`).

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
    method_params: dict | None = None
    device: str = "cpu"
    dp: DPConfig | None = None
    augment: str = "none"


class BaseClient(NumPyClient):
    """The round skeleton shared by all methods.

    Subclasses implement :meth:`personalize` (the federated update) and may override
    :meth:`after_training` (what is kept and what is uploaded), :meth:`extra_loss` (a term added
    to the shared loop's loss), and, for methods with their own local loop,
    :meth:`training_start` and :meth:`local_training`.
    """

    def __init__(self, cid: int, data: ClientData, settings: ClientSettings, state: RecordDict) -> None:
        self.cid = cid
        self.s = settings
        self.device = torch.device(settings.device)
        self.data = data if self.device.type == "cpu" else ClientData(
            *(t.to(self.device) for t in (data.train_x, data.train_y, data.val_x, data.val_y, data.test_x,
                                          data.test_y)))
        self.state = state
        self.model = build_model(settings.model, settings.image_shape, settings.num_classes,
                                 settings.seed).to(self.device)
        self.num_arrays = len(self.model.state_dict())
        self.hp = dict(settings.method_params or {})
        self.round_metrics: dict[str, float] = {}

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

    def generator(self, server_round: int, stream: int = 0) -> torch.Generator:
        """Seeded batch-order generator for (seed, client, round); ``stream`` > 0 gives independent ones."""
        seq = np.random.SeedSequence([self.s.seed, self.cid, server_round] + ([stream] if stream else []))
        return torch.Generator().manual_seed(int(seq.generate_state(1, dtype=np.uint64)[0] >> 1))

    def batch_transform(self, server_round: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The round's training-batch transform (``dataset.augment``; its own seeded stream), or None."""
        return training_transform(self.s.augment, self.generator(server_round, stream=3))

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

    def extra_loss(self, start: Weights) -> Callable[[torch.nn.Module], torch.Tensor] | None:
        """Optional term added to every training batch's loss (None: plain cross-entropy)."""
        return None

    def training_start(self, parameters: Weights, personalized: Weights) -> Weights:
        """The model local training starts from (default: the personalized model just evaluated)."""
        return personalized

    def local_training(self, server_round: int, start: Weights) -> float:
        """Train ``self.model`` in place for the round; return the mean training loss.

        Default: E epochs of the shared :func:`fedfomo.training.train` loop, with
        :meth:`extra_loss` built from ``start`` (the personalized model).
        """
        # a warm-up round 0 (FedFomo's method.warmup_epochs) trains at round 1's learning rate
        optim = OptimConfig(lr=round_lr(self.s.lr, self.s.lr_decay, max(1, server_round)), momentum=self.s.momentum,
                            weight_decay=self.s.weight_decay, batch_size=self.s.batch_size)
        if self.s.dp is not None:
            return self.dp_training(server_round, optim)
        return train(self.model, self.data.train_x, self.data.train_y, epochs=self.s.local_epochs,
                     optim=optim, mean=self.s.mean, std=self.s.std, generator=self.generator(server_round),
                     extra_loss=self.extra_loss(start), transform=self.batch_transform(server_round))

    def dp_training(self, server_round: int, optim: OptimConfig) -> float:
        """E epochs of DP-SGD (:func:`fedfomo.privacy.train_dp`); the epsilon so far goes into the round's metrics."""
        from fedfomo.privacy import epsilon_of, train_dp

        saved = self.state["dp_history"] if "dp_history" in self.state else None
        history = [] if saved is None else list(zip(saved["noise"], saved["rate"], saved["steps"]))  # type: ignore[index]
        loss, history = train_dp(self.model, self.data.train_x, self.data.train_y, epochs=self.s.local_epochs,
                                 optim=optim, mean=self.s.mean, std=self.s.std,
                                 generator=self.generator(server_round, stream=2), dp=self.s.dp, history=history,
                                 transform=self.batch_transform(server_round))
        self.state["dp_history"] = ConfigRecord({"noise": [float(h[0]) for h in history],
                                                 "rate": [float(h[1]) for h in history],
                                                 "steps": [int(h[2]) for h in history]})
        self.round_metrics["dp_epsilon"] = epsilon_of(history, self.s.dp.delta)
        return loss

    # -- Flower API ----------------------------------------------------------------------------
    def fit(self, parameters: Weights, config: dict) -> tuple[Weights, int, dict]:
        """Federated update, test evaluation of the personalized model, E epochs, upload."""
        rnd = int(config["server_round"])
        start, metrics = self.personalize(parameters, config, commit=True)
        t0 = time.perf_counter()
        test_loss, test_acc = self.loss_on(start, self.data.test_x, self.data.test_y)
        t1 = time.perf_counter()
        begin = self.training_start(parameters, start)
        set_weights(self.model, begin)
        train_loss = self.local_training(rnd, start)
        t2 = time.perf_counter()
        trained = get_weights(self.model)
        diverged = not all(np.isfinite(w).all() for w in trained)
        # a diverged round is discarded: the client keeps what it had, the server rejects the upload
        upload = self.after_training(begin if diverged else trained)
        metrics.update(cid=self.cid, test_acc=test_acc, test_loss=test_loss, train_loss=train_loss,
                       test_s=t1 - t0, train_s=t2 - t1, diverged=int(diverged), **self.round_metrics)
        metrics.setdefault("eval_s", 0.0)
        metrics.setdefault("merge_s", 0.0)
        return upload, len(self.data.train_y), metrics

    def evaluate(self, parameters: Weights, config: dict) -> tuple[float, int, dict]:
        """Final evaluation: the federated update this client would perform now, on its test set."""
        model, _ = self.personalize(parameters, config, commit=False)
        loss, acc = self.loss_on(model, self.data.test_x, self.data.test_y)
        return loss, len(self.data.test_y), {"cid": self.cid, "test_acc": acc}
