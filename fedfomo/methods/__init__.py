"""Every federated method, one module each, found here by the registry.

A method module defines ``METHOD = Method(...)``: its client (a :class:`~fedfomo.client.BaseClient`
subclass), its server strategy (a :class:`~fedfomo.strategy.PersonalizedStrategy` subclass), and
the checks and derivations of its settings, which live under ``method.*`` in
``conf/method/NAME.yaml``. :func:`registry` imports every module of this package and collects
their ``METHOD``: adding a method is one module, one YAML file and its tests; no other file
names it. Modules without ``METHOD`` hold what several methods share (e.g. partial sharing).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from omegaconf import DictConfig, OmegaConf


def _nothing(cfg: DictConfig) -> None:
    return None


def _empty(cfg: DictConfig) -> dict:
    return {}


@dataclass(frozen=True)
class Method:
    """One federated method as the harness sees it.

    Attributes
    ----------
    name : str
        ``method.name`` in the config (and the name of ``conf/method/NAME.yaml``).
    client : type
        Its :class:`~fedfomo.client.BaseClient` subclass.
    strategy : type
        Its :class:`~fedfomo.strategy.PersonalizedStrategy` subclass.
    validate : callable
        ``validate(cfg)`` checks the method's own settings (``cfg.method.*``) and raises
        :class:`~fedfomo.config.ConfigError` with one line naming the key and the allowed values.
    strategy_options : callable
        ``strategy_options(cfg)``: keyword arguments of its strategy besides the common ones.
    facts : callable
        ``facts(cfg)``: what summary.json records about the method (e.g. FedFomo's M).
    shared_train : callable, optional
        ``shared_train(cfg, train_labels, splits)``: indices of training images added to every
        client's train set (FedAvg with shared data), or None.
    reference : str
        The paper and the authors' code it follows.
    supports_dp : bool
        Whether its local training is the shared loop, which DP-SGD (``dp.enabled``) replaces.

    """

    name: str
    client: type
    strategy: type
    validate: Callable[[DictConfig], None] = _nothing
    strategy_options: Callable[[DictConfig], dict] = _empty
    facts: Callable[[DictConfig], dict] = _empty
    shared_train: Callable[[DictConfig, np.ndarray, Sequence], np.ndarray | None] | None = None
    reference: str = field(default="")
    supports_dp: bool = True


@cache
def registry() -> dict[str, Method]:
    """Every method of this package by name (imports each module once)."""
    found: dict[str, Method] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        method = getattr(module, "METHOD", None)
        if method is None:
            continue
        if method.name in found:
            raise RuntimeError(f"method {method.name!r} is defined twice (fedfomo.methods.{info.name})")
        found[method.name] = method
    return found


def names() -> tuple[str, ...]:
    """The method names, sorted."""
    return tuple(sorted(registry()))


def get(name: str) -> Method:
    """The method called ``name``; an unknown name raises ``ConfigError`` listing the allowed ones."""
    from fedfomo.config import ConfigError

    methods = registry()
    if name not in methods:
        raise ConfigError(f"method.name={name!r} is not supported; allowed: {', '.join(names())}")
    return methods[name]


def method_params(cfg: DictConfig) -> dict:
    """The selected method's own settings (``cfg.method`` without ``name``) as plain values."""
    params = OmegaConf.to_container(cfg.method, resolve=True)
    return {k: v for k, v in params.items() if k != "name"}  # type: ignore[union-attr]
