"""FedFomo with model averages (FedFomo-MA; Zhang et al., ICLR 2021, Appendix A.4, Eq. 14; Table 6).

A privacy-motivated variant: instead of comparing each downloaded model theta_n with its own
previous model, client i compares the simple average of its candidates *without* theta_n with
the simple average of all of them,

    w_n = L_i(mean_{j != n} theta_j) - L_i(mean_j theta_j)      (Eq. 14, no distance term)

(positive when theta_n helps), then merges as FedFomo does (Eq. 13: w*_n = max(w_n, 0) /
sum max(w, 0); theta_i = theta_base + sum_n w*_n (theta_n - theta_base); no positive weight:
keep theta_base) and adds the raw signed w to row i of P. The candidates are chosen as in
FedFomo; ``method.num_models: null`` (the default) downloads every uploaded model, as the
paper's "all the uploaded models".

Where the authors' code (NVlabs/FedFomo) differs (``shared/docs/METHOD_NOTES.md``): it averages
all of the round's clients weighted by train size for the "all" model, divides each loss
difference by the L1 distance between the leave-one-out average and that model, normalises the
P update by ``|sum w|``, and falls back to the federation average when no weight is positive.
We follow the paper. Of the authors' choices, two that FedFomo-MA shares with FedFomo are
options (defaults off): ``method.warmup_epochs`` (a round 0 of local training) and
``method.affinity_norm=abs_sum`` (the P update divided by ``|sum w|``); see
:mod:`fedfomo.methods.fedfomo`. The authors' sub-federation / global extra candidates do not
exist for their MA variant (their ``model_avg`` baseline leaves them out), so they are not
offered here.
"""

from __future__ import annotations

import time

import numpy as np
from omegaconf import DictConfig

from fedfomo.config import check_float, check_int, require
from fedfomo.methods import Method
from fedfomo.methods.fedfomo import (
    FedFomoClient,
    FedFomoStrategy,
    authors_facts,
    authors_options,
    validate_authors_options,
)
from fedfomo.strategy import Weights


def leave_one_out_means(models: list[Weights]) -> tuple[Weights, list[Weights]]:
    """The simple average of ``models`` and, for each n, the average of all models but the n-th.

    Parameters
    ----------
    models : list of list of np.ndarray
        N >= 2 models with the same arrays.

    Returns
    -------
    tuple
        ``(mean of all, [mean without model n for n in 0..N-1])``, each in the models' dtypes
        (computed in float64).

    """
    n = len(models)
    if n < 2:
        raise ValueError(f"leave-one-out averages need at least 2 models, got {n}")
    totals = [sum(m[k].astype(np.float64) for m in models) for k in range(len(models[0]))]
    dtypes = [a.dtype for a in models[0]]
    mean_all = [(t / n).astype(d) for t, d in zip(totals, dtypes)]
    loo = [[((t - m[k].astype(np.float64)) / (n - 1)).astype(d) for k, (t, d) in enumerate(zip(totals, dtypes))]
           for m in models]
    return mean_all, loo


def ma_weights(loss_all: float, losses_without: list[float]) -> np.ndarray:
    """Eq. 14: ``w_n = L(mean without n) - L(mean of all)`` (raw, signed)."""
    return np.asarray(losses_without, dtype=np.float64) - float(loss_all)


class FedFomoMAClient(FedFomoClient):
    """FedFomo-MA's client: Eq. 14 weights from leave-one-out averages of the candidates, Eq. 13 merge."""

    def candidate_weights(self, baseline: Weights, candidates: list[Weights]) -> tuple[np.ndarray, float]:  # noqa: D102
        t0 = time.perf_counter()
        if len(candidates) < 2:  # no average without the only candidate: no evidence, keep the baseline
            return np.zeros(len(candidates)), time.perf_counter() - t0
        mean_all, loo = leave_one_out_means(candidates)
        raw = ma_weights(self.val_loss(mean_all), [self.val_loss(m) for m in loo])
        return raw, time.perf_counter() - t0


def _num_models(cfg: DictConfig) -> int:
    m = cfg.method.get("num_models")
    return int(cfg.num_clients) if m is None else int(m)


def validate(cfg: DictConfig) -> None:
    """M null (every uploaded model) or in 1..num_clients; epsilon and its decay in [0, 1]; warm-up, P normaliser."""
    if cfg.method.get("num_models") is not None:
        check_int("method.num_models", cfg.method.num_models, 1, int(cfg.num_clients))
    check_float("method.epsilon", require(cfg, "method.epsilon"), 0.0, 1.0)
    check_float("method.epsilon_decay", require(cfg, "method.epsilon_decay"), 0.0, 1.0)
    validate_authors_options(cfg, extras=False)


METHOD = Method(
    name="fedfomo_ma", client=FedFomoMAClient, strategy=FedFomoStrategy, validate=validate,
    strategy_options=lambda cfg: {"num_models": _num_models(cfg), "epsilon": float(cfg.method.epsilon),
                                  "epsilon_decay": float(cfg.method.epsilon_decay),
                                  **authors_options(cfg, extras=False)},
    facts=lambda cfg: {"num_models": _num_models(cfg), **authors_facts(cfg, extras=False)},
    reference="Zhang et al., ICLR 2021, Appendix A.4 (Eq. 14)",
)
