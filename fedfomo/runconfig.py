"""One configuration for every way in: Hydra's ``conf/``, ``flwr run``'s flat keys, and their mapping.

The Hydra configs in ``conf/`` are the single source of settings. ``flwr run`` passes a flat
``run_config`` (``[tool.flwr.app.config]`` in ``pyproject.toml`` plus ``--run-config``); this
module turns it into Hydra overrides and composes the same configuration that
``python -m fedfomo.main`` would, so that the ServerApp and every ClientApp (in simulation or on
SuperNodes) build the identical experiment from it.

Flat keys (see :data:`FLAT_KEYS`) map onto Hydra overrides; a few use a sentinel for "the
config's default" because TOML has no null (``samples-per-client = 0``, ``lr = 0.0``,
``data-root = ""``). ``overrides`` holds any further Hydra overrides (space separated, shell
quoting) and wins over the flat keys. ``run-dir`` is where the ServerApp writes the results.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fedfomo.config import ConfigError, validate_config

#: flat ``flwr run`` key -> (Hydra override key, sentinel meaning "leave the config's default").
FLAT_KEYS: dict[str, tuple[str, object]] = {
    "dataset": ("dataset", None),
    "partition": ("partition", None),
    "method": ("method", None),
    "model": ("model", None),
    "num-clients": ("num_clients", None),
    "num-server-rounds": ("num_rounds", None),
    "participation": ("participation", None),
    "sampling": ("sampling", None),
    "local-epochs": ("local_epochs", None),
    "seed": ("seed", None),
    "num-models": ("method.num_models", 0),
    "epsilon": ("method.epsilon", None),
    "epsilon-decay": ("method.epsilon_decay", None),
    "samples-per-client": ("samples_per_client", 0),
    "lr": ("optim.lr", 0.0),
    "data-root": ("dataset.root", ""),
}
#: spellings of settings that moved under ``method.`` (prefix -> what it was)
LEGACY_PREFIXES = ("fomo", "fedprox", "fedavg_data", "lg_fedavg", "fedper", "perfedavg", "pfedme")
#: flat keys that select a config group (their value is the group option's name)
GROUPS = ("dataset", "partition", "method")
#: keys that are not settings of the experiment
CONTROL_KEYS = ("overrides", "run-dir")


def conf_dir() -> Path:
    """The folder holding ``config.yaml`` and the config groups.

    ``conf/`` at the top of the source tree; in an installed wheel it is shipped as
    ``fedfomo/conf`` (see ``pyproject.toml``).
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise ConfigError(f"the Hydra configs are missing: neither {here / 'conf'} nor {here.parent / 'conf'} exists")


def check_moved_keys(overrides: list[str]) -> None:
    """Refuse the spellings of method settings from before they moved under ``method.``, naming the new key.

    Raises
    ------
    ConfigError
        ``fomo.num_models=3`` -> "fomo.num_models moved to method.num_models ...".

    """
    for item in overrides:
        key = _override_key(item)
        head, _, rest = key.partition(".")
        if head in LEGACY_PREFIXES and rest:
            raise ConfigError(f"{key} moved to method.{rest}: every method's settings are under method.* "
                              f"(conf/method/NAME.yaml); write method.{rest}={item.partition('=')[2]}")


def method_keys(name: str) -> set[str]:
    """The settings of method ``name`` (the keys of ``conf/method/NAME.yaml``); empty for an unknown name."""
    path = conf_dir() / "method" / f"{name}.yaml"
    return set(OmegaConf.load(path)) if path.is_file() else set()


def compose(overrides: list[str]) -> DictConfig:
    """Compose ``conf/config.yaml`` with Hydra ``overrides`` (no run directory, no logging setup).

    Parameters
    ----------
    overrides : list of str
        Hydra overrides, e.g. ``["dataset=mnist", "fomo.num_models=3"]``.

    Returns
    -------
    DictConfig
        The composed configuration (interpolations unresolved).

    Raises
    ------
    ConfigError
        When Hydra rejects an override (unknown key or group option); one line.

    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    check_moved_keys(list(overrides))
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            return hydra_compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"overrides {' '.join(overrides)!r} rejected: {first}") from err
    finally:
        GlobalHydra.instance().clear()


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def overrides_from_run_config(run_config: Mapping[str, object]) -> list[str]:
    """The Hydra overrides that a flat ``flwr run`` configuration stands for.

    Parameters
    ----------
    run_config : mapping
        ``context.run_config``: the flat keys of :data:`FLAT_KEYS` and :data:`CONTROL_KEYS`.

    Returns
    -------
    list of str
        One override per flat key that is not at its sentinel, then the ``overrides`` string's
        entries, which replace flat keys of the same name.

    Raises
    ------
    ConfigError
        For a key that is neither a flat setting nor a control key.

    """
    unknown = sorted(set(run_config) - set(FLAT_KEYS) - set(CONTROL_KEYS))
    if unknown:
        allowed = ", ".join([*FLAT_KEYS, *CONTROL_KEYS])
        raise ConfigError(f"run-config key {unknown[0]!r} does not exist; allowed: {allowed}")
    try:
        extra = shlex.split(str(run_config.get("overrides", "") or ""))
    except ValueError as err:
        raise ConfigError(f"run-config overrides={run_config.get('overrides')!r} is not valid: {err}") from err
    for item in extra:
        if "=" not in item:
            raise ConfigError(f"run-config overrides entry {item!r} is not key=value; "
                              f"allowed: Hydra overrides such as optim.momentum=0.9")
    method = str(run_config.get("method", "fedfomo"))
    for item in extra:
        if _override_key(item) == "method":
            method = item.partition("=")[2]
    own = method_keys(method)
    flat: dict[str, str] = {}
    for name, (key, sentinel) in FLAT_KEYS.items():
        if name not in run_config:
            continue
        if key.startswith("method.") and key.split(".", 1)[1] not in own:
            continue  # another method's setting (e.g. num-models with method=fedavg): not this run's
        value = run_config[name]
        if sentinel is not None and value == sentinel and type(value) is type(sentinel):
            continue
        flat[key] = f"{key}={_hydra_value(value)}"
    for item in extra:
        flat.pop(_override_key(item), None)
    return [*flat.values(), *extra]


def _hydra_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value and all(c.isalnum() or c in "_-./:" for c in value) else repr(value)
    return str(value)


def run_config_for(cfg: DictConfig, overrides: list[str], out_dir: str | Path) -> dict[str, object]:
    """The ``--run-config`` under which ``flwr run`` composes exactly ``cfg`` (the Hydra entry point's).

    Every flat key is stated with ``cfg``'s value, so that ``pyproject.toml``'s defaults never
    apply, and the user's ``overrides`` travel verbatim; ``dataset.root`` travels as an absolute path.

    Parameters
    ----------
    cfg : DictConfig
        The composed, validated configuration.
    overrides : list of str
        The Hydra overrides ``cfg`` was composed with.
    out_dir : str or Path
        The run folder.

    """
    config: dict[str, object] = {}
    for name, (key, sentinel) in FLAT_KEYS.items():
        value = OmegaConf.select(cfg, key + ".name" if key in GROUPS else key)
        if value is None and sentinel is None:
            continue  # a setting this run's method does not have: the app's default stays unused
        config[name] = sentinel if value is None else value
    config["data-root"] = str(Path(cfg.dataset.root).expanduser().resolve())
    kept = [o for o in overrides if _override_key(o) != "dataset.root"]
    return {**config, "overrides": shlex.join(kept), "run-dir": str(Path(out_dir).resolve())}


def experiment_config(run_config: Mapping[str, object]) -> DictConfig:
    """Compose and validate the configuration of a ``flwr run`` (ServerApp and ClientApp alike)."""
    cfg = compose(overrides_from_run_config(run_config))
    validate_config(cfg)
    return cfg


def run_dir(run_config: Mapping[str, object], cfg: DictConfig) -> Path:
    """Where the ServerApp writes the results.

    ``run-dir``, else ``outputs/flwr/<dataset>_<partition>_<method>/<time>`` under the working folder.
    """
    given = str(run_config.get("run-dir", "") or "")
    if given:
        return Path(given).expanduser().resolve()
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    return (Path("outputs") / "flwr" / f"{cfg.dataset.name}_{cfg.partition.name}_{cfg.method.name}" / stamp).resolve()


def config_yaml(cfg: DictConfig) -> str:
    """The resolved configuration as saved in a run folder's ``config.yaml``."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def _flat(cfg: DictConfig) -> dict[str, object]:
    out: dict[str, object] = {}

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return out


#: Settings added after runs were first saved, each with the value under which the code does what it did
#: before the setting existed: a run saved without one of them resumes when it gets that value.
ADDED_SETTINGS: dict[str, object] = {
    "sim.bf16": False, "sim.max_in_flight": None, "sim.shared_store": "auto", "sim.fsync": "auto",
    "method.warmup_epochs": 0, "method.affinity_norm": "none", "method.extra_candidates": "none",
    "method.num_subfederations": None, "method.candidate_pool": "stored",
    "dataset.test_split": "official", "dataset.holdout_size": 10000, "dataset.holdout_seed": 0,
    "dataset.augment": "none",
}


def changed_settings(saved: DictConfig, composed: DictConfig) -> list[str]:
    """Settings whose composed value differs from the saved one, except those :data:`ADDED_SETTINGS` excuses.

    Parameters
    ----------
    saved : DictConfig
        A run folder's ``config.yaml``.
    composed : DictConfig
        Its saved overrides composed with today's defaults (resolved as ``config.yaml`` is).

    Returns
    -------
    list of str
        ``key`` (added or removed) or ``key: saved -> now``, sorted; empty when the run may resume.

    """
    before = _flat(saved)
    now = _flat(OmegaConf.create(OmegaConf.to_container(composed, resolve=True)))
    out = []
    for key in sorted(set(before) | set(now)):
        if key in before and key in now:
            if before[key] != now[key]:
                out.append(f"{key}: {before[key]!r} -> {now[key]!r}")
        elif key in before:
            out.append(f"{key} (no longer a setting)")
        elif key not in ADDED_SETTINGS or now[key] != ADDED_SETTINGS[key]:
            out.append(f"{key} (new, {now[key]!r})")
    return out


def resumed_config(run_dir: str | Path, extra: list[str]) -> tuple[DictConfig, list[str]]:
    """The configuration and overrides of the run saved in ``run_dir``, for ``resume=RUN_DIR``.

    ``extra`` overrides given beside ``resume=`` may repeat saved values but not change them.

    Raises
    ------
    RunFolderError
        No resumable run there (one line).
    ConfigError
        An ``extra`` override changes the saved configuration (names the key, both values).

    """
    from fedfomo.runs import RunFolderError, read_status

    folder = Path(run_dir).expanduser().resolve()
    status = read_status(folder)
    saved = folder / "config.yaml"
    if status is None or "overrides" not in status or not saved.exists():
        raise RunFolderError(f"resume={folder}: no run to resume there (status.json with its overrides and "
                             f"config.yaml are needed); start a new run with hydra.run.dir={folder}")
    overrides = [o for o in status["overrides"] if _override_key(o) != "dataset.root"]
    root = OmegaConf.create(saved.read_text()).dataset.root
    overrides.append(f"dataset.root={root}")
    cfg = compose(overrides)
    if config_yaml(cfg) != saved.read_text():
        changed = changed_settings(OmegaConf.create(saved.read_text()), cfg)
        if changed:
            raise ConfigError(f"resume={folder}: the saved overrides no longer compose the saved config.yaml "
                              f"(the code's defaults changed: {', '.join(changed)}); start a new run instead")
    extra = [o for o in extra if not o.startswith("hydra.")]
    if extra:
        changed = _flat(compose(overrides + extra))
        before = _flat(cfg)
        for key in sorted(set(before) | set(changed)):
            if before.get(key) != changed.get(key):
                raise ConfigError(f"resume={folder} keeps the run's saved configuration: {key}={changed.get(key)!r} "
                                  f"differs from the saved {key}={before.get(key)!r}; allowed: the saved value")
    return cfg, overrides
