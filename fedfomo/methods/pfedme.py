"""pFedMe (T. Dinh et al., "Personalized Federated Learning with Moreau Envelopes", NeurIPS 2020).

Authors' code: CharlieDinh/pFedMe. Settings: ``method.lambda``, ``method.inner_steps`` (K),
``method.personal_lr``, ``method.lr``, ``method.beta``, ``method.personal_model``,
``method.train_all_clients``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig

from fedfomo.config import check_bool, check_choice, check_float, check_int, require
from fedfomo.methods import Method
from fedfomo.methods.fedavg import FedAvgStrategy
from fedfomo.methods.functional_loop import FunctionalLoopClient, GradFn, Params
from fedfomo.models import get_weights
from fedfomo.strategy import Weights, weighted_average
from fedfomo.training import round_lr

if TYPE_CHECKING:
    from fedfomo.messages import Upload

PERSONAL_MODELS = ("last_theta", "from_global")


def pfedme_inner_solve(theta: Params, anchor: Params, grad_fn: GradFn, batch: Any, *, lam: float, lr: float,
                       steps: int) -> tuple[Params, float]:
    """Approximately solve pFedMe's inner problem (T. Dinh et al., 2020, Eq. 7) on one batch.

    ``theta(w) = argmin_theta f(theta; batch) + lam / 2 * ||theta - w||^2`` by ``steps`` (K)
    gradient steps of size ``lr`` (the personal learning rate), started from ``theta``.

    Parameters
    ----------
    theta : list of torch.Tensor
        Starting point (pFedMe warm-starts from the previous personalized model).
    anchor : list of torch.Tensor
        The local model w (constant during the solve).
    grad_fn : GradFn
        Gradient oracle of f.
    batch : any
        The batch f is evaluated on.
    lam : float
        lambda, the strength of the Moreau-envelope regularizer.
    lr : float
        Personal learning rate.
    steps : int
        K, number of gradient steps.

    Returns
    -------
    tuple of (list of torch.Tensor, float)
        The approximate solution and f at the last step's starting point.

    """
    loss = float("nan")
    theta = [t.detach() for t in theta]
    for _ in range(steps):
        grads, loss = grad_fn(theta, batch)
        theta = [t - lr * (g + lam * (t - a)) for t, g, a in zip(theta, grads, anchor)]
    return theta, loss


def pfedme_local_update(w: Params, theta: Params, *, lam: float, lr: float) -> Params:
    """Local model update of pFedMe (Algorithm 1): ``w <- w - lr * lam * (w - theta)``."""
    return [wi - lr * lam * (wi - ti) for wi, ti in zip(w, theta)]


def pfedme_server_update(previous: Sequence[np.ndarray], average: Sequence[np.ndarray],
                         beta: float) -> list[np.ndarray]:
    """Global update of pFedMe: ``w <- (1 - beta) * w + beta * mean of the clients' local models``.

    ``beta = 1`` is plain averaging (FedAvg's aggregation).
    """
    return [((1.0 - beta) * p.astype(np.float64) + beta * a.astype(np.float64)).astype(a.dtype)
            for p, a in zip(previous, average)]


class PFedMeClient(FunctionalLoopClient):
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
        return pfedme_inner_solve(theta, anchor, grad_fn, batch, lam=float(self.hp["lambda"]),
                                            lr=float(self.hp["personal_lr"]), steps=int(self.hp["inner_steps"]))

    def _keeps_theta(self) -> bool:
        return str(self.hp.get("personal_model", "last_theta")) == "last_theta"

    def personalize(  # noqa: D102
        self, parameters: Weights, config: dict, commit: bool
    ) -> tuple[Weights, dict[str, float | int | str]]:
        if len(self.data.train_y) == 0:
            return list(parameters), {}
        kept = self.load_state(self.STATE_KEY) if self._keeps_theta() else None
        if kept is not None:
            return kept, {}
        w = self.params_of(list(parameters))
        theta, _ = self._solve(w, w, self.train_batch(int(config.get("server_round", 0))), self.grad_fn())
        return self.weights_of(theta, list(parameters)), {}

    def local_training(self, server_round: int, start: Weights) -> float:  # noqa: D102
        lam = float(self.hp["lambda"])
        eta = round_lr(float(self.hp["lr"]), self.s.lr_decay, server_round)
        base = get_weights(self.model)
        w = self.params_of(base)
        theta, grad_fn, losses = list(w), self.grad_fn(), []
        for batch in self.epoch_batches(server_round):
            theta, loss = self._solve(theta, w, batch, grad_fn)
            w = pfedme_local_update(w, theta, lam=lam, lr=eta)
            losses.append(loss)
        self.load_params(w)
        if self._keeps_theta() and losses:
            self.save_state(self.STATE_KEY, self.weights_of(theta, base))
        return float(np.mean(losses)) if losses else float("nan")


class PFedMeStrategy(FedAvgStrategy):
    """pFedMe's server (T. Dinh et al., NeurIPS 2020, Algorithm 1): ``w <- (1 - beta) w + beta * mean(w_i)``.

    The mean is over the round's sampled clients, weighted by train size (as FedAvg's);
    ``beta = 1`` is plain averaging.

    Parameters
    ----------
    beta : float
        Server step.
    train_all_clients : bool
        False (default): only the sampled clients train, as in every method here. True: every
        client trains every round and only the sampled ones are averaged, as the authors' server
        does (``serverpFedMe.py``, ``train``); with ``participation < 1`` that is ``1 /
        participation`` times the training, and every client's personalized model is fresh.
    **kwargs
        See :class:`PersonalizedStrategy`.

    """

    def __init__(self, *, beta: float, train_all_clients: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.beta = beta
        self.train_all_clients = train_all_clients

    def train_clients(self, server_round: int) -> list[int]:  # noqa: D102
        if self.train_all_clients:
            return list(range(self.num_clients))
        return super().train_clients(server_round)

    def aggregate(self, server_round: int, uploads: dict[int, Upload]) -> Weights | None:  # noqa: D102
        if self.train_all_clients:
            sampled = set(self.sampled_clients(server_round))
            uploads = {cid: up for cid, up in uploads.items() if cid in sampled}
            if not uploads:  # every sampled client failed or diverged: keep the global model
                return None
        average = weighted_average([(u.weights, u.num_examples) for u in uploads.values()])
        self.global_weights = pfedme_server_update(self.global_weights, average, self.beta)
        return self.global_weights


def validate(cfg: DictConfig) -> None:
    """Check pFedMe's settings: lambda > 0, K >= 1, personal_lr * lambda < 2, lr * lambda <= 1, beta in (0, 2].

    Also a known ``personal_model`` and a boolean ``train_all_clients``.
    """
    lam = check_float("method.lambda", require(cfg, "method.lambda"), 0.0, float("inf"), low_open=True)
    check_int("method.inner_steps", require(cfg, "method.inner_steps"), 1)
    # the inner steps contract towards w only if personal_lr * lambda < 2
    check_float("method.personal_lr", require(cfg, "method.personal_lr"), 0.0, 2.0 / lam, low_open=True,
                high_open=True)
    # w <- w - lr * lambda * (w - theta) must not overshoot theta: lr * lambda <= 1
    check_float("method.lr", require(cfg, "method.lr"), 0.0, 1.0 / lam, low_open=True)
    check_float("method.beta", require(cfg, "method.beta"), 0.0, 2.0, low_open=True)
    check_choice("method.personal_model", require(cfg, "method.personal_model"), PERSONAL_MODELS)
    check_bool("method.train_all_clients", require(cfg, "method.train_all_clients"))


def facts(cfg: DictConfig) -> dict:
    """``authors_options`` in summary.json when every client trains every round (its runs get cells of their own)."""
    return {"authors_options": "train_all_clients=true"} if bool(cfg.method.train_all_clients) else {}


METHOD = Method(name="pfedme", client=PFedMeClient, strategy=PFedMeStrategy, validate=validate,
                strategy_options=lambda cfg: {"beta": float(cfg.method.beta),
                                              "train_all_clients": bool(cfg.method.train_all_clients)},
                facts=facts,
                reference="T. Dinh et al., NeurIPS 2020; CharlieDinh/pFedMe", supports_dp=False)
