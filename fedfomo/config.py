"""Checking a run's configuration before any work starts.

:func:`validate_config` raises :class:`ConfigError` whose message is one line naming the key
and what is allowed.
"""

from __future__ import annotations

import math

from omegaconf import DictConfig, OmegaConf

from fedfomo.data import AUGMENTS, DATASETS, DEFAULT_HOLDOUT_SIZE, TEST_SPLITS
from fedfomo.latent import CLUSTER_BY, EMBEDDERS, resolve_cluster_by
from fedfomo.models import MODELS
from fedfomo.partition import PARTITIONS
from fedfomo.strategy import SAMPLING
from fedfomo.vgg import PRECISIONS

NUM_CLASSES = {"mnist": 10, "cifar10": 10, "cifar100": 100}
#: Training images of each dataset's smallest class: a class-balanced holdout leaves at least one of them.
MIN_CLASS_TRAIN = {"mnist": 5421, "cifar10": 5000, "cifar100": 500}


class ConfigError(ValueError):
    """A configuration value is not allowed; the message is one line."""


def check_choice(key: str, value: object, allowed: tuple[str, ...]) -> None:
    """``value`` must be one of ``allowed``."""
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not supported; allowed: {', '.join(allowed)}")


def check_int(key: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` must be an integer in ``low..high`` (``high`` None: no upper bound); returns it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}={value!r} must be an integer")
    if value < low or (high is not None and value > high):
        rng = f"{low}..{high}" if high is not None else f">= {low}"
        raise ConfigError(f"{key}={value} is out of range; allowed: {rng}")
    return value


def check_float(key: str, value: object, low: float, high: float, *, low_open: bool = False,
                high_open: bool = False) -> float:
    """``value`` must be a number in the interval (open ends as flagged); returns it as float.

    NaN and infinities are refused (no setting takes them).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}={value!r} must be a number")
    if not math.isfinite(value):
        raise ConfigError(f"{key}={value} must be a finite number")
    bad = value < low or value > high or (low_open and value == low) or (high_open and value == high)
    if bad:
        lb, hb = "(" if low_open else "[", ")" if high_open else "]"
        raise ConfigError(f"{key}={value} is out of range; allowed: {lb}{low}, {high}{hb}")
    return float(value)


def validate_config(cfg: DictConfig, extra_keys: tuple[str, ...] = ()) -> None:
    """Check every setting of a run; raise :class:`ConfigError` on the first bad one.

    Parameters
    ----------
    cfg : DictConfig
        The composed Hydra configuration.
    extra_keys : tuple of str
        Top-level keys an entry point adds to a run's settings (e.g. ``python -m fedfomo.embed``'s
        ``distributions``), accepted beside the run's own.

    """
    check_choice("dataset.name", cfg.dataset.name, DATASETS)
    _validate_test_split(cfg.dataset)
    check_choice("dataset.augment", cfg.dataset.get("augment", "none"), AUGMENTS)
    check_choice("partition.name", cfg.partition.name, PARTITIONS)
    from fedfomo import methods

    method = methods.get(cfg.method.name)
    check_choice("model", cfg.model, MODELS)
    n = check_int("num_clients", cfg.num_clients, 1)
    check_int("num_rounds", cfg.num_rounds, 1)
    check_int("local_epochs", cfg.local_epochs, 0)
    check_int("seed", cfg.seed, 0)
    check_float("participation", cfg.participation, 0.0, 1.0, low_open=True)
    check_choice("sampling", cfg.get("sampling", "fresh"), SAMPLING)
    check_float("val_ratio", cfg.val_ratio, 0.0, 1.0, low_open=True, high_open=True)
    if cfg.samples_per_client is not None:
        check_int("samples_per_client", cfg.samples_per_client, 2)
    if cfg.partition.name == "pathological":
        check_int("partition.classes_per_client", cfg.partition.classes_per_client, 1, NUM_CLASSES[cfg.dataset.name])
    _validate_partition(cfg, n)
    check_float("optim.lr", cfg.optim.lr, 0.0, float("inf"), low_open=True)
    check_float("optim.lr_decay", cfg.optim.lr_decay, 0.0, 1.0, low_open=True)
    check_float("optim.momentum", cfg.optim.momentum, 0.0, 1.0, high_open=True)
    check_float("optim.weight_decay", cfg.optim.weight_decay, 0.0, float("inf"))
    check_int("optim.batch_size", cfg.optim.batch_size, 1)
    check_int("optim.eval_batch_size", cfg.optim.eval_batch_size, 1)
    check_int("sim.cpus_per_client", cfg.sim.cpus_per_client, 1)
    check_float("sim.gpus_per_client", cfg.sim.gpus_per_client, 0.0, 1.0)
    check_float("sim.connect_timeout_s", cfg.sim.connect_timeout_s, 0.0, float("inf"), low_open=True)
    check_float("sim.round_timeout_s", cfg.sim.round_timeout_s, 0.0, float("inf"), low_open=True)
    check_bf16(bool(cfg.sim.get("bf16", False)), float(cfg.sim.gpus_per_client))
    if cfg.sim.max_in_flight is not None:
        check_int("sim.max_in_flight", cfg.sim.max_in_flight, 1)
    check_float("sim.fail_prob", cfg.sim.get("fail_prob", 0.0), 0.0, 1.0)
    if cfg.sim.get("shared_store", False) != "auto":
        check_bool("sim.shared_store", cfg.sim.get("shared_store", False), allowed="auto, true, false")
    check_choice("sim.fsync", cfg.sim.get("fsync", "file"), FSYNC_MODES)
    if cfg.sim.num_cpus is not None:
        check_int("sim.num_cpus", cfg.sim.num_cpus, 1)
    method.validate(cfg)
    _validate_dp(cfg, method)
    _check_unknown_keys(cfg, extra_keys)


def shared_store(cfg: DictConfig, simulation: bool = True) -> bool:
    """``sim.shared_store``: simulated clients read stored candidates from the run folder.

    Parameters
    ----------
    cfg : DictConfig
        The run's configuration (a ``config.yaml`` written before the key existed means false).
    simulation : bool
        Whether every client runs on this machine; ``auto`` means this.

    Returns
    -------
    bool
        Whether the server may send references to its checkpoint blobs instead of the models.

    """
    value = cfg.sim.get("shared_store", False)
    return simulation if value == "auto" else bool(value)


FSYNC_MODES = ("auto", "file", "round")


def fsync_mode(cfg: DictConfig, simulation: bool = True) -> str:
    """``sim.fsync``: how the per-client checkpoint files are made durable, ``file`` or ``round``.

    Parameters
    ----------
    cfg : DictConfig
        The run's configuration (a ``config.yaml`` written before the key existed means ``file``).
    simulation : bool
        Whether every client runs on this machine; ``auto`` means ``round`` there, ``file`` in a
        deployment.

    Returns
    -------
    str
        ``file``: every checkpoint file is fsync'd before it is renamed into place; ``round``: the
        clients' state files and the stored uploads are not, and the server calls ``os.sync()``
        once per round before its checkpoint pointer (which covers the clients' files only when
        they are on this machine). A killed process loses nothing either way; after a crash of
        the machine both resume from the last pointer on disk.

    """
    value = str(cfg.sim.get("fsync", "file"))
    return ("round" if simulation else "file") if value == "auto" else value


def check_runtime(cfg: DictConfig, simulation: bool) -> None:
    """Refuse settings the runtime cannot honour: ``sim.shared_store=true`` or ``sim.fsync=round`` outside a simulation.

    Parameters
    ----------
    cfg : DictConfig
        The run's configuration.
    simulation : bool
        Whether every client runs on this machine (Flower's simulation runtime).

    Raises
    ------
    ConfigError
        One line naming the key and the allowed value: a deployment's clients, possibly on other
        machines, cannot read the server's run folder.

    """
    if cfg.sim.get("shared_store", False) is True and not simulation:
        raise ConfigError("sim.shared_store=true needs the simulation runtime (clients read the candidates from the "
                          "server's run folder); a deployment's clients may be on other machines; "
                          "allowed: sim.shared_store=auto or false")
    if cfg.sim.get("fsync", "file") == "round" and not simulation:
        raise ConfigError("sim.fsync=round needs the simulation runtime (the server's os.sync() covers only files on "
                          "its own machine); allowed: sim.fsync=auto or file")


def bf16_supported(gpu: bool = False) -> bool:
    """Whether this machine runs bfloat16 natively: a CUDA GPU with it, or a CPU with avx512_bf16/AMX."""
    import torch

    if gpu and torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def check_bf16(enabled: bool, gpus_per_client: float = 0.0) -> None:
    """``sim.bf16=true`` on hardware without native bfloat16 is a one-line :class:`ConfigError`."""
    if enabled and not bf16_supported(gpus_per_client > 0):
        import torch

        raise ConfigError(f"sim.bf16=true needs native bfloat16 (a CPU with avx512_bf16 or AMX, or a CUDA GPU); "
                          f"this {torch.backends.cpu.get_cpu_capability()} CPU has none; allowed here: false")


def require(cfg: DictConfig, key: str) -> object:
    """``cfg[key]`` (dotted); a missing method setting says how to select the method."""
    value = OmegaConf.select(cfg, key, default=None)
    if value is None:
        name = cfg.method.name
        raise ConfigError(f"{key} is missing; select the method with method={name} (conf/method/{name}.yaml)")
    return value


def check_bool(key: str, value: object, allowed: str = "true, false") -> bool:
    """``value`` must be ``true`` or ``false`` (``allowed``: the values the error names)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} is not supported; allowed: {allowed}")
    return value


def _validate_test_split(ds: DictConfig) -> None:
    """``dataset.test_split`` and the holdout's size (a multiple of the classes, below the train set) and seed."""
    check_choice("dataset.test_split", ds.get("test_split", "official"), TEST_SPLITS)
    size = check_int("dataset.holdout_size", ds.get("holdout_size", DEFAULT_HOLDOUT_SIZE), 1)
    check_int("dataset.holdout_seed", ds.get("holdout_seed", 0), 0)
    classes = NUM_CLASSES[ds.name]
    most = classes * (MIN_CLASS_TRAIN[ds.name] - 1)
    if size % classes or size > most:
        raise ConfigError(f"dataset.holdout_size={size} is not supported for dataset={ds.name}; allowed: a multiple "
                          f"of its {classes} classes in {classes}..{most} (the same number of training images from "
                          f"every class, at least one left in each)")


def _validate_partition(cfg: DictConfig, num_clients: int) -> None:
    """The latent split's settings; ``shuffle_targets`` only with ``partition=latent``."""
    part = cfg.partition
    shuffle = check_bool("partition.shuffle_targets", part.get("shuffle_targets", False))
    if part.name != "latent":
        if shuffle:
            raise ConfigError(f"partition.shuffle_targets=true needs partition=latent (got partition={part.name}); "
                              f"allowed with partition={part.name}: false")
        return
    d = check_int("partition.num_distributions", part.get("num_distributions"), 1, num_clients)
    check_choice("partition.cluster_by", part.get("cluster_by", "auto"), CLUSTER_BY)
    try:
        resolve_cluster_by(part.get("cluster_by", "auto"), d, NUM_CLASSES[cfg.dataset.name])
    except ValueError as err:
        raise ConfigError(str(err)) from err
    check_choice("partition.embedder", part.get("embedder"), EMBEDDERS)
    check_int("partition.pca_dim", part.get("pca_dim"), 1)
    check_int("partition.embed_seed", part.get("embed_seed", 0), 0)
    check_choice("partition.device", part.get("device", "auto"), ("auto", "cpu", "cuda"))
    cache = part.get("cache_dir")
    if cache is not None and (not isinstance(cache, str) or not cache.strip()):
        raise ConfigError(f"partition.cache_dir={cache!r} is not supported; allowed: a folder path or null")
    if part.embedder == "vgg11":
        vgg = part.get("vgg") or {}
        check_int("partition.vgg.epochs", vgg.get("epochs"), 1)
        check_float("partition.vgg.lr", vgg.get("lr"), 0.0, float("inf"), low_open=True)
        check_float("partition.vgg.momentum", vgg.get("momentum"), 0.0, 1.0, high_open=True)
        check_float("partition.vgg.weight_decay", vgg.get("weight_decay"), 0.0, float("inf"))
        check_int("partition.vgg.batch_size", vgg.get("batch_size"), 1)
        check_choice("partition.vgg.precision", vgg.get("precision", "fp32"), PRECISIONS)


def _validate_dp(cfg: DictConfig, method) -> None:
    """The ``dp`` block; with ``dp.enabled`` also the method (shared loop) and the model (Opacus-valid)."""
    dp = cfg.get("dp")
    if dp is None:
        return
    enabled = check_bool("dp.enabled", dp.get("enabled"))
    check_float("dp.noise_multiplier", dp.get("noise_multiplier"), 0.0, float("inf"))
    check_float("dp.max_grad_norm", dp.get("max_grad_norm"), 0.0, float("inf"), low_open=True)
    check_float("dp.delta", dp.get("delta"), 0.0, 1.0, low_open=True, high_open=True)
    if not enabled:
        return
    if not method.supports_dp:
        from fedfomo import methods

        ok = ", ".join(n for n in methods.names() if methods.get(n).supports_dp)
        raise ConfigError(f"dp.enabled=true with method={method.name}: its local training is not the shared loop "
                          f"that DP-SGD replaces; allowed methods: {ok}")
    from fedfomo.models import build_model
    from fedfomo.privacy import model_problems

    shape = (1, 28, 28) if cfg.dataset.name == "mnist" else (3, 32, 32)
    problems = model_problems(build_model(cfg.model, shape, NUM_CLASSES[cfg.dataset.name], 0))
    if problems:
        raise ConfigError(f"dp.enabled=true but Opacus rejects model={cfg.model}: {problems[0]}; "
                          f"allowed: models without BatchNorm ({', '.join(MODELS)})")


def _flat_keys(node: object, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        return [k for key, value in node.items() for k in _flat_keys(value, f"{prefix}{key}.")]
    return [prefix[:-1]]


def _check_unknown_keys(cfg: DictConfig, extra_keys: tuple[str, ...] = ()) -> None:
    """Every key must exist in ``conf/`` (config.yaml and the selected dataset/partition/method files).

    Hydra's ``+key=value`` adds keys that nothing reads; such a key is refused with its name.
    """
    from fedfomo.runconfig import conf_dir

    root = conf_dir()
    reference = OmegaConf.load(root / "config.yaml")
    reference.pop("defaults", None)
    for group in ("dataset", "partition", "method"):
        path = root / group / f"{cfg[group].name}.yaml"
        if path.exists():
            reference[group] = OmegaConf.load(path)
    known = set(_flat_keys(OmegaConf.to_container(reference, resolve=False))) | set(extra_keys)
    given = _flat_keys(OmegaConf.to_container(cfg, resolve=False))
    prefixes = {k.rsplit(".", 1)[0] for k in known if "." in k}
    for key in given:
        if key in known:
            continue
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        if parent in prefixes:
            allowed = sorted(k.rsplit(".", 1)[-1] for k in known if k.rsplit(".", 1)[0] == parent)
            raise ConfigError(f"{key} is not a setting of this run; allowed keys under {parent}: {', '.join(allowed)}")
        top = sorted({k.split(".", 1)[0] for k in known})
        raise ConfigError(f"{key} is not a setting of this run; allowed top-level keys: {', '.join(top)}")
