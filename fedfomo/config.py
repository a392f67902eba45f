"""Checking a run's configuration before any work starts.

:func:`validate_config` raises :class:`ConfigError` whose message is one line naming the key
and what is allowed.
"""

from __future__ import annotations

from omegaconf import DictConfig, ListConfig, OmegaConf

from fedfomo.data import DATASETS
from fedfomo.embed import PRECISIONS
from fedfomo.fomo import DISTANCES
from fedfomo.latent import EMBEDDERS
from fedfomo.models import MODELS, state_keys
from fedfomo.partition import PARTITIONS

PFEDME_PERSONAL_MODELS = ("last_theta", "from_global")
METHODS = ("fedfomo", "fedavg", "local", "fedprox", "fedavg_data", "lg_fedavg", "fedper", "perfedavg", "pfedme")
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
    _validate_partition(cfg, n)
    _float("optim.lr", cfg.optim.lr, 0.0, float("inf"), low_open=True)
    _float("optim.lr_decay", cfg.optim.lr_decay, 0.0, 1.0, low_open=True)
    _float("optim.momentum", cfg.optim.momentum, 0.0, 1.0, high_open=True)
    _float("optim.weight_decay", cfg.optim.weight_decay, 0.0, float("inf"))
    _int("optim.batch_size", cfg.optim.batch_size, 1)
    _int("optim.eval_batch_size", cfg.optim.eval_batch_size, 1)
    _int("fomo.num_models", cfg.fomo.num_models, 1, n if cfg.method.name == "fedfomo" else None)
    _float("fomo.epsilon", cfg.fomo.epsilon, 0.0, 1.0)
    _float("fomo.epsilon_decay", cfg.fomo.epsilon_decay, 0.0, 1.0)
    _choice("fomo.distance", cfg.fomo.distance, DISTANCES)
    _int("sim.cpus_per_client", cfg.sim.cpus_per_client, 1)
    _float("sim.gpus_per_client", cfg.sim.gpus_per_client, 0.0, 1.0)
    _float("sim.connect_timeout_s", cfg.sim.connect_timeout_s, 0.0, float("inf"), low_open=True)
    _float("sim.round_timeout_s", cfg.sim.round_timeout_s, 0.0, float("inf"), low_open=True)
    _int("sim.eval_chunk", cfg.sim.eval_chunk, 1)
    if cfg.sim.num_cpus is not None:
        _int("sim.num_cpus", cfg.sim.num_cpus, 1)
    _validate_method(cfg)


def _get(cfg: DictConfig, key: str) -> object:
    """``cfg[key]`` (dotted); a missing method block says how to select the method."""
    value = OmegaConf.select(cfg, key, default=None)
    if value is None:
        name = key.split(".", maxsplit=1)[0]
        raise ConfigError(f"{key} is missing; select the method with method={name} (conf/method/{name}.yaml)")
    return value


def _layers(key: str, value: object, model: str) -> None:
    keys = state_keys(model)
    layers = sorted({k.split(".")[0] for k in keys})
    allowed = (f"a non-empty list of name prefixes of {model}'s layers ({', '.join(layers)}) "
               f"that leaves at least one layer on the client")
    if not isinstance(value, (list, tuple, ListConfig)) or not value:
        raise ConfigError(f"{key}={value!r} is not supported; allowed: {allowed}")
    prefixes = list(value)
    if not all(isinstance(p, str) and p and any(k.startswith(p) for k in keys) for p in prefixes):
        raise ConfigError(f"{key}={prefixes!r} is not supported; allowed: {allowed}")
    if all(any(k.startswith(p) for p in prefixes) for k in keys):
        raise ConfigError(f"{key}={prefixes!r} shares every layer; allowed: {allowed}")


def _validate_method(cfg: DictConfig) -> None:
    """The selected comparison method's own settings (its top-level block)."""
    name = cfg.method.name
    inf = float("inf")
    if name == "fedprox":
        _float("fedprox.mu", _get(cfg, "fedprox.mu"), 0.0, inf)
    elif name == "fedavg_data":
        _float("fedavg_data.shared_fraction", _get(cfg, "fedavg_data.shared_fraction"), 0.0, 1.0, low_open=True)
    elif name in ("lg_fedavg", "fedper"):
        _layers(f"{name}.shared_layers", _get(cfg, f"{name}.shared_layers"), cfg.model)
    elif name == "perfedavg":
        _float("perfedavg.alpha", _get(cfg, "perfedavg.alpha"), 0.0, inf, low_open=True)
        _float("perfedavg.beta", _get(cfg, "perfedavg.beta"), 0.0, inf, low_open=True)
    elif name == "pfedme":
        lam = _float("pfedme.lambda", _get(cfg, "pfedme.lambda"), 0.0, inf, low_open=True)
        _int("pfedme.inner_steps", _get(cfg, "pfedme.inner_steps"), 1)
        # the inner steps contract towards w only if personal_lr * lambda < 2
        _float("pfedme.personal_lr", _get(cfg, "pfedme.personal_lr"), 0.0, 2.0 / lam, low_open=True,
               high_open=True)
        # w <- w - lr * lambda * (w - theta) must not overshoot theta: lr * lambda <= 1
        _float("pfedme.lr", _get(cfg, "pfedme.lr"), 0.0, 1.0 / lam, low_open=True)
        _float("pfedme.beta", _get(cfg, "pfedme.beta"), 0.0, 2.0, low_open=True)
        _choice("pfedme.personal_model", _get(cfg, "pfedme.personal_model"), PFEDME_PERSONAL_MODELS)


def _bool(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} is not supported; allowed: true, false")
    return value


def _validate_partition(cfg: DictConfig, num_clients: int) -> None:
    """The latent split's settings; ``shuffle_targets`` only with ``partition=latent``."""
    part = cfg.partition
    shuffle = _bool("partition.shuffle_targets", part.get("shuffle_targets", False))
    if part.name != "latent":
        if shuffle:
            raise ConfigError(f"partition.shuffle_targets=true needs partition=latent (got partition={part.name}); "
                              f"allowed with partition={part.name}: false")
        return
    _int("partition.num_distributions", part.get("num_distributions"), 1, num_clients)
    _choice("partition.embedder", part.get("embedder"), EMBEDDERS)
    _int("partition.pca_dim", part.get("pca_dim"), 1)
    _int("partition.embed_seed", part.get("embed_seed", 0), 0)
    _choice("partition.device", part.get("device", "auto"), ("auto", "cpu", "cuda"))
    cache = part.get("cache_dir")
    if cache is not None and (not isinstance(cache, str) or not cache.strip()):
        raise ConfigError(f"partition.cache_dir={cache!r} is not supported; allowed: a folder path or null")
    if part.embedder == "vgg11":
        vgg = part.get("vgg") or {}
        _int("partition.vgg.epochs", vgg.get("epochs"), 1)
        _float("partition.vgg.lr", vgg.get("lr"), 0.0, float("inf"), low_open=True)
        _float("partition.vgg.momentum", vgg.get("momentum"), 0.0, 1.0, high_open=True)
        _float("partition.vgg.weight_decay", vgg.get("weight_decay"), 0.0, float("inf"))
        _int("partition.vgg.batch_size", vgg.get("batch_size"), 1)
        _choice("partition.vgg.precision", vgg.get("precision", "fp32"), PRECISIONS)
