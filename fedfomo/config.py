"""Checking a run's configuration before any work starts.

:func:`validate_config` raises :class:`ConfigError` whose message is one line naming the key
and what is allowed.
"""

from __future__ import annotations

from omegaconf import DictConfig

from fedfomo.data import DATASETS
from fedfomo.fomo import DISTANCES
from fedfomo.models import MODELS
from fedfomo.partition import PARTITIONS

METHODS = ("fedfomo", "fedavg", "local")
NUM_CLASSES = {"mnist": 10, "cifar10": 10, "cifar100": 100}


class ConfigError(ValueError):
    """A configuration value is not allowed; the message is one line."""


def _choice(key: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not supported; allowed: {', '.join(allowed)}")


def _int(key: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}={value!r} must be an integer")
    if value < low or (high is not None and value > high):
        rng = f"{low}..{high}" if high is not None else f">= {low}"
        raise ConfigError(f"{key}={value} is out of range; allowed: {rng}")
    return value


def _float(key: str, value: object, low: float, high: float, *, low_open: bool = False,
           high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}={value!r} must be a number")
    bad = value < low or value > high or (low_open and value == low) or (high_open and value == high)
    if bad:
        lb, hb = "(" if low_open else "[", ")" if high_open else "]"
        raise ConfigError(f"{key}={value} is out of range; allowed: {lb}{low}, {high}{hb}")
    return float(value)


def validate_config(cfg: DictConfig) -> None:
    """Check every setting of a run; raise :class:`ConfigError` on the first bad one.

    Parameters
    ----------
    cfg : DictConfig
        The composed Hydra configuration.

    """
    _choice("dataset.name", cfg.dataset.name, DATASETS)
    _choice("partition.name", cfg.partition.name, PARTITIONS)
    _choice("method.name", cfg.method.name, METHODS)
    _choice("model", cfg.model, MODELS)
    n = _int("num_clients", cfg.num_clients, 1)
    _int("num_rounds", cfg.num_rounds, 1)
    _int("local_epochs", cfg.local_epochs, 0)
    _int("seed", cfg.seed, 0)
    _float("participation", cfg.participation, 0.0, 1.0, low_open=True)
    _float("val_ratio", cfg.val_ratio, 0.0, 1.0, low_open=True, high_open=True)
    if cfg.samples_per_client is not None:
        _int("samples_per_client", cfg.samples_per_client, 2)
    if cfg.partition.name == "pathological":
        _int("partition.classes_per_client", cfg.partition.classes_per_client, 1, NUM_CLASSES[cfg.dataset.name])
    _float("optim.lr", cfg.optim.lr, 0.0, float("inf"), low_open=True)
    _float("optim.lr_decay", cfg.optim.lr_decay, 0.0, 1.0, low_open=True)
    _float("optim.momentum", cfg.optim.momentum, 0.0, 1.0, high_open=True)
    _float("optim.weight_decay", cfg.optim.weight_decay, 0.0, float("inf"))
    _int("optim.batch_size", cfg.optim.batch_size, 1)
    _int("optim.eval_batch_size", cfg.optim.eval_batch_size, 1)
    _int("fomo.num_models", cfg.fomo.num_models, 1, n)
    _float("fomo.epsilon", cfg.fomo.epsilon, 0.0, 1.0)
    _float("fomo.epsilon_decay", cfg.fomo.epsilon_decay, 0.0, 1.0)
    _choice("fomo.distance", cfg.fomo.distance, DISTANCES)
    _int("sim.cpus_per_client", cfg.sim.cpus_per_client, 1)
    if cfg.sim.num_cpus is not None:
        _int("sim.num_cpus", cfg.sim.num_cpus, 1)
