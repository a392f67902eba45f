"""pFedHN (Shamsian et al., "Personalized Federated Learning using Hypernetworks", ICML 2021).

Authors' code: AvivSham/pFedHN (``experiments/pfedhn``); Flower baseline ``pFedHN``.

The server holds a hypernetwork ``h(v_i; phi)``: a learned embedding ``v_i`` per client
(``method.embed_dim``, by default ``1 + N / 4`` as in the authors' code), an MLP of
``method.n_hidden`` hidden layers of width ``method.hidden_dim`` with ReLU, and one linear head
per tensor of the target model (here the harness's CNN, whatever ``model`` is). Every round each
sampled client receives ``theta_i = h(v_i; phi)``, trains it for E local epochs with the shared
loop and returns the trained ``theta~_i``. For every reply the server takes one optimizer step on
``phi`` and the embeddings with the gradient ``(d theta_i / d phi)^T (theta_i - theta~_i)``
(the authors' ``torch.autograd.grad(theta, phi, grad_outputs=delta)``), clipped to norm 50; SGD
with weight decay 1e-3 at ``method.lr`` 1e-2 (the authors' defaults). The authors take one step
per sampled client; with several clients per round we do the same, one step per reply in
client-id order, each at the hypernetwork's current parameters (Jacobian at the current
``phi``, the client's delta from the weights it was sent). All replies of a round come from
the same hypernetwork, so the later steps of a round are stale; with the authors' momentum 0.9
this diverged on MNIST (mean test loss of the generated models 2.36 -> 7.0 -> 52.8 -> NaN
within 6 rounds), so ``method.momentum`` defaults to 0. A client's personalized model is
``h(v_i; phi)``.

Differences from the authors' setting, kept so that pFedHN runs on the same harness as every
other method: the target network is the harness's CNN (theirs: a LeNet-style CNN), local
training is E epochs of the shared SGD loop (theirs: 50 steps of SGD with momentum 0.9,
lr 5e-3), one round visits every sampled client (theirs: one client per step, 5000 steps, about
100 per client; 20 rounds of 15 clients give 20 per client), and momentum 0 (above).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from fedfomo.config import check_float, check_int, require
from fedfomo.messages import Upload
from fedfomo.methods import Method
from fedfomo.methods.fedavg import FedAvgClient
from fedfomo.strategy import PersonalizedStrategy, Weights

GRAD_CLIP = 50.0  # the authors' clip of the hypernetwork gradient norm


class HyperNetwork(nn.Module):
    """Client embedding -> MLP -> one linear head per target tensor (the authors' ``CNNHyper``, generic).

    Parameters
    ----------
    num_clients : int
        Number of client embeddings.
    shapes : sequence of tuple of int
        Shapes of the target model's tensors, in state_dict order.
    embed_dim, hidden_dim, n_hidden : int
        Embedding size, MLP width and number of hidden layers (after the first linear layer).

    """

    def __init__(self, num_clients: int, shapes: Sequence[tuple[int, ...]], embed_dim: int, hidden_dim: int,
                 n_hidden: int) -> None:
        super().__init__()
        self.shapes = [tuple(s) for s in shapes]
        self.embeddings = nn.Embedding(num_clients, embed_dim)
        layers: list[nn.Module] = [nn.Linear(embed_dim, hidden_dim)]
        for _ in range(n_hidden):
            layers += [nn.ReLU(), nn.Linear(hidden_dim, hidden_dim)]
        self.mlp = nn.Sequential(*layers)
        self.heads = nn.ModuleList(nn.Linear(hidden_dim, math.prod(s)) for s in self.shapes)

    def forward(self, cid: int) -> list[torch.Tensor]:
        """The target model's tensors for client ``cid``."""
        features = self.mlp(self.embeddings(torch.tensor([cid]))).squeeze(0)
        return [head(features).view(shape) for head, shape in zip(self.heads, self.shapes)]


def hypernetwork_gradients(hnet: HyperNetwork, cid: int, delta: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``(d theta_cid / d phi)^T delta`` for every hypernetwork parameter phi (embeddings included).

    With ``delta = theta - theta~`` after local training this is pFedHN's update direction; if
    ``delta = eta * grad L(theta)`` (one SGD step of size eta) it equals ``eta * grad_phi L(h(v; phi))``.
    """
    weights = hnet(cid)
    return list(torch.autograd.grad(weights, list(hnet.parameters()), grad_outputs=list(delta),
                                    allow_unused=True))


class PFedHNStrategy(PersonalizedStrategy):
    """pFedHN's server: the hypernetwork generates each client's model and learns from its delta.

    Parameters
    ----------
    embed_dim, hidden_dim, n_hidden : int
        Hypernetwork shape (see :class:`HyperNetwork`).
    hn_lr, embed_lr, hn_momentum, hn_weight_decay : float
        SGD on the hypernetwork (``embed_lr`` for the embeddings).
    initial_weights : list of np.ndarray
        Only their shapes and dtypes are used (the hypernetwork generates every model).
    **kwargs
        See :class:`PersonalizedStrategy`.

    """

    def __init__(self, *, embed_dim: int, hidden_dim: int, n_hidden: int, hn_lr: float, embed_lr: float,
                 hn_momentum: float, hn_weight_decay: float, initial_weights: Weights, **kwargs) -> None:
        super().__init__(initial_weights=initial_weights, **kwargs)
        self.dtypes = [a.dtype for a in initial_weights]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.hnet = HyperNetwork(self.num_clients, [a.shape for a in initial_weights], embed_dim, hidden_dim,
                                     n_hidden)
        embed = [p for n, p in self.hnet.named_parameters() if n.startswith("embeddings")]
        rest = [p for n, p in self.hnet.named_parameters() if not n.startswith("embeddings")]
        self.optimizer = torch.optim.SGD([{"params": rest}, {"params": embed, "lr": embed_lr}], lr=hn_lr,
                                         momentum=hn_momentum, weight_decay=hn_weight_decay)
        self.sent: dict[int, Weights] = {}

    def generate(self, cid: int) -> Weights:
        """The model the hypernetwork gives client ``cid`` now."""
        with torch.no_grad():
            return [t.numpy().astype(d) for t, d in zip(self.hnet(cid), self.dtypes)]

    def download(self, cid: int, server_round: int) -> tuple[Weights, dict[str, int | float | str]]:  # noqa: D102
        self.sent[cid] = self.generate(cid)
        return self.sent[cid], {}

    def final_download(self, cid: int) -> tuple[Weights, dict[str, int | float | str]]:  # noqa: D102
        return self.generate(cid), {}

    def aggregate(self, server_round: int, uploads: dict[int, Upload]) -> None:  # noqa: D102
        for cid in sorted(uploads):
            delta = [torch.from_numpy(np.asarray(s, dtype=np.float32) - np.asarray(t, dtype=np.float32))
                     for s, t in zip(self.sent.pop(cid), uploads[cid].weights)]
            grads = hypernetwork_gradients(self.hnet, cid, delta)
            self.optimizer.zero_grad(set_to_none=True)
            for p, g in zip(self.hnet.parameters(), grads):
                p.grad = g
            nn.utils.clip_grad_norm_(self.hnet.parameters(), GRAD_CLIP)
            self.optimizer.step()
        self.sent.clear()

    def checkpoint_state(self) -> tuple[dict[str, np.ndarray], dict]:  # noqa: D102
        arrays, meta = super().checkpoint_state()
        for name, tensor in self.hnet.state_dict().items():
            arrays[f"hnet/{name}"] = tensor.numpy()
        buffers = []
        for i, p in enumerate(self.hnet.parameters()):
            buf = self.optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                arrays[f"momentum/{i}"] = buf.numpy()
                buffers.append(i)
        return arrays, {**meta, "momentum": buffers}

    def restore_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:  # noqa: D102
        super().restore_state(arrays, meta)
        self.hnet.load_state_dict({n: torch.from_numpy(np.array(arrays[f"hnet/{n}"]))
                                   for n in self.hnet.state_dict()})
        params = list(self.hnet.parameters())
        for i in meta["momentum"]:
            self.optimizer.state[params[i]]["momentum_buffer"] = torch.from_numpy(np.array(arrays[f"momentum/{i}"]))


def embed_dim_of(cfg: DictConfig) -> int:
    """``method.embed_dim``, or the authors' ``1 + N / 4`` when it is null."""
    value = cfg.method.get("embed_dim")
    return int(1 + int(cfg.num_clients) / 4) if value is None else int(value)


def validate(cfg: DictConfig) -> None:
    """Embedding size (null or >= 1), hidden width >= 1, hidden layers >= 0, learning rates > 0."""
    if cfg.method.get("embed_dim") is not None:
        check_int("method.embed_dim", cfg.method.embed_dim, 1)
    check_int("method.hidden_dim", require(cfg, "method.hidden_dim"), 1)
    check_int("method.n_hidden", require(cfg, "method.n_hidden"), 0)
    check_float("method.lr", require(cfg, "method.lr"), 0.0, float("inf"), low_open=True)
    if cfg.method.get("embed_lr") is not None:
        check_float("method.embed_lr", cfg.method.embed_lr, 0.0, float("inf"), low_open=True)
    check_float("method.momentum", require(cfg, "method.momentum"), 0.0, 1.0, high_open=True)
    check_float("method.weight_decay", require(cfg, "method.weight_decay"), 0.0, float("inf"))


def strategy_options(cfg: DictConfig) -> dict:
    """The hypernetwork's shape and optimizer."""
    m = cfg.method
    return {"embed_dim": embed_dim_of(cfg), "hidden_dim": int(m.hidden_dim), "n_hidden": int(m.n_hidden),
            "hn_lr": float(m.lr), "embed_lr": float(m.get("embed_lr") or m.lr),
            "hn_momentum": float(m.momentum), "hn_weight_decay": float(m.weight_decay)}


def facts(cfg: DictConfig) -> dict:
    """The embedding size actually used (null in the config means the authors' 1 + N/4)."""
    return {"pfedhn_embed_dim": embed_dim_of(cfg)}


METHOD = Method(name="pfedhn", client=FedAvgClient, strategy=PFedHNStrategy, validate=validate,
                strategy_options=strategy_options, facts=facts,
                reference="Shamsian et al., ICML 2021; AvivSham/pFedHN")
