"""MOCHA, federated multi-task learning (Smith et al., "Federated Multi-Task Learning", NeurIPS 2017).

Every client is a task with its own model; the tasks are coupled by the regulariser
``lam / 2 * tr(W Omega W^T)`` over the matrix ``W`` whose column ``i`` is client i's weights of
the regularised layers (``method.layers``, by default the last layer, as LG-FedAvg's MOCHA keeps
the last layers), and the task-relationship matrix ``Omega`` (N x N) is learned by alternating
with the model updates:

- **W step (clients).** Client i trains its own model for E local epochs with the shared loop;
  its batch loss gets the terms of the regulariser that involve its column,
  ``lam * (Omega_ii / 2 * ||w_i||^2 + <w_i, v_i>)`` with ``v_i = sum_{j != i} Omega_ij w_j``
  sent by the server, whose gradient is ``lam * (W Omega)_{:, i}``, that of the full
  regulariser. It keeps its whole model and uploads only ``w_i``.
- **Omega step (server).** After every round, with the latest ``W`` of all clients,
  ``Sigma = (W^T W)^{1/2} / tr((W^T W)^{1/2})`` and ``Omega = Sigma^{-1}`` (the closed form of
  Zhang & Yeung's task-relationship learning that MOCHA uses; eigenvalues of ``Sigma`` are
  floored at ``method.min_eigenvalue`` so that ``Omega`` stays bounded). MOCHA starts from
  ``Sigma = I / N``. ``method.omega_update: fixed`` instead keeps LG-FedAvg's matrix
  ``(I - 11^T / N)`` squared elementwise, never updated (what the FedFomo authors ran).

MOCHA's own solver is a primal-dual method for convex models; for deep networks the authors of
FedFomo (via pliang279/LG-FedAvg, ``main_mtl.py`` and ``LocalUpdateMTL``) and we train the primal
with SGD, as here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
from omegaconf import DictConfig

from fedfomo.client import BaseClient, Weights
from fedfomo.config import check_choice, check_float, require
from fedfomo.messages import Upload
from fedfomo.methods import Method
from fedfomo.methods.partial_sharing import check_layer_prefixes, layer_mask, split_by_mask
from fedfomo.models import state_keys
from fedfomo.strategy import PersonalizedStrategy

log = logging.getLogger("fedfomo")
OMEGA_UPDATES = ("mocha", "fixed")


def omega_from_weights(w: np.ndarray, min_eigenvalue: float) -> np.ndarray:
    """MOCHA's Omega step: ``Sigma = (W^T W)^{1/2} / tr(...)``, ``Omega = Sigma^{-1}``.

    Parameters
    ----------
    w : np.ndarray
        d x N matrix, one column per client (task).
    min_eigenvalue : float
        Floor of the eigenvalues of ``Sigma`` (which sum to 1) before inverting.

    Returns
    -------
    np.ndarray
        The N x N symmetric positive definite ``Omega``.

    """
    gram = w.T.astype(np.float64) @ w.astype(np.float64)
    vals, vecs = np.linalg.eigh((gram + gram.T) / 2)
    root = np.sqrt(np.clip(vals, 0.0, None))
    if root.sum() <= 0:
        raise ValueError("W is zero: Omega is undefined")
    sigma_vals = np.maximum(root / root.sum(), min_eigenvalue)
    return (vecs / sigma_vals) @ vecs.T


def fixed_omega(n: int) -> np.ndarray:
    """LG-FedAvg's MOCHA matrix: the centering matrix ``I - 11^T / n`` squared elementwise."""
    return (np.eye(n) - np.full((n, n), 1.0 / n)) ** 2


def coupling(w: np.ndarray, omega: np.ndarray, i: int) -> np.ndarray:
    """``v_i = sum_{j != i} Omega_ij w_j``: what client i needs of the other columns."""
    row = omega[i].copy()
    row[i] = 0.0
    return w.astype(np.float64) @ row


def regularizer_terms(w_i: torch.Tensor, v_i: torch.Tensor, omega_ii: float, lam: float) -> torch.Tensor:
    """The part of ``lam / 2 * tr(W Omega W^T)`` that involves column i (others held fixed).

    ``lam * (Omega_ii / 2 * ||w_i||^2 + <w_i, v_i>)``; its gradient is ``lam * (W Omega)_{:, i}``.
    """
    return lam * (0.5 * omega_ii * (w_i * w_i).sum() + (w_i * v_i).sum())


class MochaClient(BaseClient):
    """A MOCHA task: its own model, trained with the coupling terms on the regularised layers."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.mask = layer_mask(list(self.model.state_dict()), list(self.hp["layers"]))
        self._coupling: np.ndarray | None = None
        self._omega_ii = 0.0

    def personalize(  # noqa: D102
        self, parameters: Weights, config: dict, commit: bool
    ) -> tuple[Weights, dict[str, float | int | str]]:
        if commit and parameters:
            self._coupling = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in parameters])
            self._omega_ii = float(config["omega_ii"])
        own = self.load_state("own_model")
        return (own if own is not None else self.initial_weights()), {}

    def extra_loss(self, start: Weights) -> Callable[[torch.nn.Module], torch.Tensor] | None:  # noqa: D102
        lam = float(self.hp["lam"])
        if lam == 0.0 or self._coupling is None:
            return None
        keys = list(self.model.state_dict())
        names = [k for k, s in zip(keys, self.mask) if s]
        v = torch.from_numpy(self._coupling.astype(np.float32)).to(self.device)
        omega_ii = self._omega_ii

        def term(model: torch.nn.Module) -> torch.Tensor:
            params = dict(model.named_parameters())
            w_i = torch.cat([params[n].reshape(-1) for n in names])
            return regularizer_terms(w_i, v, omega_ii, lam)

        return term

    def after_training(self, trained: Weights) -> Weights:  # noqa: D102
        self.save_state("own_model", trained)
        return split_by_mask(trained, self.mask)[0]


class MochaStrategy(PersonalizedStrategy):
    """MOCHA's server: the columns W of every client, Omega, and each client's coupling vector.

    Parameters
    ----------
    mask : list of bool
        Which state_dict entries are regularised (uploaded).
    omega_update : str
        ``mocha`` (Omega learned every round) or ``fixed`` (LG-FedAvg's constant matrix).
    min_eigenvalue : float
        Floor of Sigma's eigenvalues in the Omega step.
    initial_weights : list of np.ndarray
        The common initial model; every column of W starts as its regularised layers.
    **kwargs
        See :class:`PersonalizedStrategy`.

    """

    def __init__(self, *, mask: list[bool], omega_update: str, min_eigenvalue: float, initial_weights: Weights,
                 **kwargs) -> None:
        shared, _ = split_by_mask(initial_weights, mask)
        super().__init__(initial_weights=initial_weights, **kwargs)
        self.mask = mask
        self.shapes = [a.shape for a in shared]
        self.omega_update, self.min_eigenvalue = omega_update, min_eigenvalue
        column = np.concatenate([a.astype(np.float64).ravel() for a in shared])
        self.w = np.repeat(column[:, None], self.num_clients, axis=1)
        n = self.num_clients
        self.omega = fixed_omega(n) if omega_update == "fixed" else n * np.eye(n)  # MOCHA: Sigma = I / N

    def _unflatten(self, vec: np.ndarray) -> Weights:
        out, k = [], 0
        for shape in self.shapes:
            size = int(np.prod(shape))
            out.append(vec[k:k + size].reshape(shape).astype(np.float32))
            k += size
        return out

    def download(self, cid: int, server_round: int) -> tuple[Weights, dict[str, int | float | str]]:  # noqa: D102
        return self._unflatten(coupling(self.w, self.omega, cid)), {"omega_ii": float(self.omega[cid, cid])}

    def final_download(self, cid: int) -> tuple[Weights, dict[str, int | float | str]]:  # noqa: D102
        return [], {}

    def aggregate(self, server_round: int, uploads: dict[int, Upload]) -> None:  # noqa: D102
        for cid, up in uploads.items():
            self.w[:, cid] = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in up.weights])
        if self.omega_update == "mocha":
            self.omega = omega_from_weights(self.w, self.min_eigenvalue)

    def after_round(self, server_round: int) -> None:  # noqa: D102
        self.recorder.log_matrix("omega", server_round, self.omega)

    def checkpoint_state(self) -> tuple[dict[str, np.ndarray], dict]:  # noqa: D102
        arrays, meta = super().checkpoint_state()
        return {**arrays, "w": self.w, "omega": self.omega}, meta

    def restore_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:  # noqa: D102
        super().restore_state(arrays, meta)
        self.w, self.omega = np.array(arrays["w"]), np.array(arrays["omega"])


def validate(cfg: DictConfig) -> None:
    """Check ``method.lam`` >= 0, ``omega_update``, ``min_eigenvalue`` in (0, 1] and ``layers``."""
    check_float("method.lam", require(cfg, "method.lam"), 0.0, float("inf"))
    check_choice("method.omega_update", require(cfg, "method.omega_update"), OMEGA_UPDATES)
    check_float("method.min_eigenvalue", require(cfg, "method.min_eigenvalue"), 0.0, 1.0, low_open=True)
    check_layer_prefixes(cfg, "method.layers", allow_all=True)


def strategy_options(cfg: DictConfig) -> dict:
    """The mask of regularised entries and the Omega step's settings."""
    m = cfg.method
    return {"mask": layer_mask(state_keys(cfg.model), list(m.layers)), "omega_update": str(m.omega_update),
            "min_eigenvalue": float(m.min_eigenvalue)}


METHOD = Method(name="mocha", client=MochaClient, strategy=MochaStrategy, validate=validate,
                strategy_options=strategy_options, supports_dp=False,
                reference="Smith et al., NeurIPS 2017; MOCHA in pliang279/LG-FedAvg (main_mtl.py)")
