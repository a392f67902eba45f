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

from fedfomo import baselines, fomo
from fedfomo.messages import decode_ids, encode_floats, encode_ids, split_models
from fedfomo.models import build_model, get_weights, set_weights
from fedfomo.training import OptimConfig, batch_indices, evaluate, round_lr, train

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
    method_params : dict, optional
        The method's own settings (its config block, e.g. ``{"mu": 0.01}`` for FedProx).
    device : str
        Where the client's model and data live (``cpu`` or ``cuda``).

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
    method_params: dict | None = None
    device: str = "cpu"


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

    def training_start(self, parameters: Weights, personalized: Weights) -> Weights:
        """The model local training starts from (default: the personalized model just evaluated)."""
        return personalized

    def local_training(self, server_round: int, start: Weights) -> float:
        """Train ``self.model`` in place for the round; return the mean training loss.

        Default: E epochs of the shared :func:`fedfomo.training.train` loop, with
        :meth:`extra_loss` built from ``start`` (the personalized model).
        """
        optim = OptimConfig(lr=round_lr(self.s.lr, self.s.lr_decay, server_round), momentum=self.s.momentum,
                            weight_decay=self.s.weight_decay, batch_size=self.s.batch_size)
        return train(self.model, self.data.train_x, self.data.train_y, epochs=self.s.local_epochs,
                     optim=optim, mean=self.s.mean, std=self.s.std, generator=self.generator(server_round),
                     extra_loss=self.extra_loss(start))

    # -- Flower API ----------------------------------------------------------------------------
    def fit(self, parameters: Weights, config: dict) -> tuple[Weights, int, dict]:
        """Federated update, test evaluation of the personalized model, E epochs, upload."""
        rnd = int(config["server_round"])
        start, metrics = self.personalize(parameters, config, commit=True)
        t0 = time.perf_counter()
        test_loss, test_acc = self.loss_on(start, self.data.test_x, self.data.test_y)
        t1 = time.perf_counter()
        set_weights(self.model, self.training_start(parameters, start))
        train_loss = self.local_training(rnd, start)
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


class FedProxClient(FedAvgClient):
    """FedProx (Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020).

    FedAvg whose local objective adds the proximal term ``mu / 2 * ||w - w^t||^2`` to every
    batch loss, w^t the global model the round started from (``method_params["mu"]``).
    """

    def extra_loss(self, start: Weights):  # noqa: D102
        mu = float(self.hp["mu"])
        if mu == 0.0:
            return None
        keys = list(self.model.state_dict())
        names = {n for n, _ in self.model.named_parameters()}
        anchor = {k: torch.from_numpy(np.asarray(w)).to(self.device) for k, w in zip(keys, start) if k in names}
        return lambda model: baselines.proximal_term(model.named_parameters(), anchor, mu)


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
        self.mask = baselines.layer_mask(list(self.model.state_dict()), list(self.hp["shared_layers"]))

    def personalize(self, parameters, config, commit):  # noqa: D102
        kept = self.load_state("kept_layers")
        if kept is None:
            _, kept = baselines.split_by_mask(self.initial_weights(), self.mask)
        return baselines.merge_by_mask(list(parameters), kept, self.mask), {}

    def after_training(self, trained: Weights) -> Weights:  # noqa: D102
        shared, kept = baselines.split_by_mask(trained, self.mask)
        self.save_state("kept_layers", kept)
        return shared


class _FunctionalLoopClient(BaseClient):
    """Helpers of methods with their own local loop over the shared batches (Per-FedAvg, pFedMe)."""

    def params_of(self, weights: Weights) -> list[torch.Tensor]:
        """The parameter tensors of ``weights`` (state_dict order) in ``named_parameters`` order."""
        by_key = dict(zip(self.model.state_dict(), weights))
        return [torch.from_numpy(np.array(by_key[n], dtype=np.float32)).to(self.device)
                for n, _ in self.model.named_parameters()]

    def weights_of(self, params: list[torch.Tensor], base: Weights) -> Weights:
        """``base`` (state_dict order) with its parameters replaced by ``params``."""
        new = {n: p.detach().cpu().numpy() for (n, _), p in zip(self.model.named_parameters(), params)}
        return [np.ascontiguousarray(new.get(k, w)) for k, w in zip(self.model.state_dict(), base)]

    def grad_fn(self) -> baselines.GradFn:
        """Cross-entropy gradient oracle on this client's model (with the shared weight decay)."""
        return baselines.make_grad_fn(self.model, self.s.mean, self.s.std, self.s.weight_decay)

    def train_batch(self, server_round: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One seeded batch of local training data for the round's personalization step."""
        n = len(self.data.train_y)
        idx = torch.randperm(n, generator=self.generator(server_round, stream=1))[: self.s.batch_size]
        return self.data.train_x[idx], self.data.train_y[idx]

    def epoch_batches(self, server_round: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The round's E epochs of batches, in the shared loop's seeded order."""
        g = self.generator(server_round)
        return [(self.data.train_x[i], self.data.train_y[i])
                for i in batch_indices(len(self.data.train_y), self.s.batch_size, self.s.local_epochs, g)]

    def load_params(self, params: list[torch.Tensor]) -> None:
        """Write ``params`` into ``self.model`` (what :meth:`fit` uploads)."""
        set_weights(self.model, self.weights_of(params, get_weights(self.model)))


class PerFedAvgClient(_FunctionalLoopClient):
    """Per-FedAvg (FO) (Fallah et al., NeurIPS 2020), first-order MAML local meta-updates.

    Paper: "Personalized Federated Learning with Theoretical Guarantees: A Model-Agnostic
    Meta-Learning Approach". Local training: for consecutive pairs (D, D') of the shared loop's batches,
    ``w <- w - beta * grad f(w - alpha * grad f(w; D); D')`` (first-order MAML; a leftover odd
    batch serves as both D and D'). beta follows the shared lr decay; alpha is constant. The
    personalized model evaluated is the global model after one gradient step of size alpha on
    one local training batch (``method_params``: ``alpha``, ``beta``).
    """

    def personalize(self, parameters, config, commit):  # noqa: D102
        if len(self.data.train_y) == 0:
            return list(parameters), {}
        batch = self.train_batch(int(config.get("server_round", 0)))
        theta, _ = baselines.gradient_step(self.params_of(list(parameters)), self.grad_fn(), batch,
                                           float(self.hp["alpha"]))
        return self.weights_of(theta, list(parameters)), {}

    def training_start(self, parameters, personalized):  # noqa: D102
        return list(parameters)

    def local_training(self, server_round, start):  # noqa: D102
        alpha = float(self.hp["alpha"])
        beta = round_lr(float(self.hp["beta"]), self.s.lr_decay, server_round)
        batches = self.epoch_batches(server_round)
        pairs = list(zip(batches[0::2], batches[1::2]))
        if len(batches) % 2:
            pairs.append((batches[-1], batches[-1]))
        params, grad_fn, losses = self.params_of(get_weights(self.model)), self.grad_fn(), []
        for inner, outer in pairs:
            params, loss = baselines.perfedavg_fo_step(params, grad_fn, inner, outer, alpha=alpha, beta=beta)
            losses.append(loss)
        self.load_params(params)
        return float(np.mean(losses)) if losses else float("nan")


class PFedMeClient(_FunctionalLoopClient):
    """pFedMe (T. Dinh et al., "Personalized Federated Learning with Moreau Envelopes", NeurIPS 2020).

    The personalized model is ``theta(w) = argmin f(theta) + lambda / 2 ||theta - w||^2``,
    solved approximately by K gradient steps (personal lr) on one local batch. Local training:
    for each of the shared loop's batches, update theta by K steps on that batch (warm-started
    from the previous theta) and move the local model ``w <- w - lr * lambda * (w - theta)``; w is
    uploaded (lr follows the shared lr decay).

    Which theta is the client's personalized model (``personal_model``):

    - ``last_theta`` (default, the pFedMe authors' code): the theta of the last inner solve of the
      client's latest local training, kept in client state; before a client's first training,
      theta solved from the global model as below.
    - ``from_global``: theta solved from the received global model w on one local batch.

    ``method_params``: ``lambda``, ``inner_steps`` (K), ``personal_lr``, ``lr``, ``personal_model``.
    """

    STATE_KEY = "pfedme_theta"

    def _solve(self, theta, anchor, batch, grad_fn):
        return baselines.pfedme_inner_solve(theta, anchor, grad_fn, batch, lam=float(self.hp["lambda"]),
                                            lr=float(self.hp["personal_lr"]), steps=int(self.hp["inner_steps"]))

    def _keeps_theta(self) -> bool:
        return str(self.hp.get("personal_model", "last_theta")) == "last_theta"

    def personalize(self, parameters, config, commit):  # noqa: D102
        if len(self.data.train_y) == 0:
            return list(parameters), {}
        kept = self.load_state(self.STATE_KEY) if self._keeps_theta() else None
        if kept is not None:
            return kept, {}
        w = self.params_of(list(parameters))
        theta, _ = self._solve(w, w, self.train_batch(int(config.get("server_round", 0))), self.grad_fn())
        return self.weights_of(theta, list(parameters)), {}

    def training_start(self, parameters, personalized):  # noqa: D102
        return list(parameters)

    def local_training(self, server_round, start):  # noqa: D102
        lam = float(self.hp["lambda"])
        eta = round_lr(float(self.hp["lr"]), self.s.lr_decay, server_round)
        base = get_weights(self.model)
        w = self.params_of(base)
        theta, grad_fn, losses = list(w), self.grad_fn(), []
        for batch in self.epoch_batches(server_round):
            theta, loss = self._solve(theta, w, batch, grad_fn)
            w = baselines.pfedme_local_update(w, theta, lam=lam, lr=eta)
            losses.append(loss)
        self.load_params(w)
        if self._keeps_theta() and losses:
            self.save_state(self.STATE_KEY, self.weights_of(theta, base))
        return float(np.mean(losses)) if losses else float("nan")


CLIENTS: dict[str, type[BaseClient]] = {
    "fedavg": FedAvgClient,
    "local": LocalClient,
    "fedfomo": FedFomoClient,
    "fedprox": FedProxClient,
    "fedavg_data": FedAvgClient,  # Zhao et al. 2018: FedAvg; the shared data G is in its train set
    "lg_fedavg": PartialSharingClient,
    "fedper": PartialSharingClient,
    "perfedavg": PerFedAvgClient,
    "pfedme": PFedMeClient,
}
