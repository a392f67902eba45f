"""The one builder of an experiment from its configuration, shared by the ServerApp and the ClientApp.

The server and every client build the same :class:`Experiment` from the same configuration
(deterministically: the partition is seeded), so nothing but models and scalars has to travel
between them. Also here: the facts every run records (hardware, git commit, partition settings).
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from flwr.app import RecordDict
from omegaconf import DictConfig

from fedfomo import methods
from fedfomo.client import BaseClient, ClientData, ClientSettings
from fedfomo.config import NUM_CLASSES, ConfigError
from fedfomo.data import ImageDataset, configured_test_split, load_configured
from fedfomo.emd import DEFAULT_GROUND
from fedfomo.latent import resolve_cluster_by
from fedfomo.models import build_model, get_weights
from fedfomo.partition import ClientSplit, label_counts, make_partition, with_shared_train
from fedfomo.privacy import DPConfig
from fedfomo.results import RunRecorder

if TYPE_CHECKING:
    from fedfomo.strategy import PersonalizedStrategy

log = logging.getLogger("fedfomo")


@dataclass(frozen=True)
class Experiment:
    """Everything a run's server and clients need, built once per process from the configuration.

    Attributes
    ----------
    cfg : DictConfig
        The composed, validated configuration.
    dataset : ImageDataset
        The whole dataset (uint8 tensors in memory).
    splits : list of ClientSplit
        Every client's train/val/test indices.
    settings : ClientSettings
        What every client needs besides its data.
    shared_train : np.ndarray, optional
        Indices (official train split) added to every client's train set, e.g. the shared data
        of ``fedavg_data`` (:mod:`fedfomo.methods.fedavg_data`); never to val or test.

    """

    cfg: DictConfig
    dataset: ImageDataset
    splits: list[ClientSplit]
    settings: ClientSettings
    shared_train: np.ndarray | None = None


def build_experiment(cfg: DictConfig) -> Experiment:
    """Load the data, partition it and derive the client settings; impossible settings raise :class:`ConfigError`.

    Parameters
    ----------
    cfg : DictConfig
        A validated configuration (:func:`fedfomo.config.validate_config`).

    """
    ds = load_configured(cfg.dataset)  # dataset.test_split=holdout: test images held out of the train split
    splits = build_partition(cfg, ds)
    settings = ClientSettings(
        model=cfg.model, image_shape=ds.image_shape, num_classes=ds.num_classes, seed=cfg.seed,
        mean=ds.mean, std=ds.std, local_epochs=cfg.local_epochs, lr=cfg.optim.lr,
        lr_decay=cfg.optim.lr_decay, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay,
        batch_size=cfg.optim.batch_size, eval_batch_size=cfg.optim.eval_batch_size,
        method_params=methods.method_params(cfg),
        dp=dp_config(cfg), augment=str(cfg.dataset.get("augment", "none")),
    )
    method = methods.get(cfg.method.name)
    shared = None
    if method.shared_train is not None:
        try:
            shared = method.shared_train(cfg, ds.train_y.numpy(), splits)
        except ValueError as err:
            raise ConfigError(str(err)) from err
    return Experiment(cfg=cfg, dataset=ds, splits=splits, settings=settings, shared_train=shared)


def dp_config(cfg: DictConfig) -> DPConfig | None:
    """The DP-SGD settings when ``dp.enabled``, else None."""
    dp = cfg.get("dp")
    if dp is None or not dp.enabled:
        return None
    return DPConfig(noise_multiplier=float(dp.noise_multiplier), max_grad_norm=float(dp.max_grad_norm),
                    delta=float(dp.delta))


def client_data(exp: Experiment, cid: int) -> ClientData:
    """Client ``cid``'s tensors (its shared training data included)."""
    ds = exp.dataset
    sp = with_shared_train(exp.splits[cid], exp.shared_train)
    return ClientData(
        train_x=ds.train_x[sp.train], train_y=ds.train_y[sp.train],
        val_x=ds.train_x[sp.val], val_y=ds.train_y[sp.val],
        test_x=ds.test_x[sp.test], test_y=ds.test_y[sp.test],
    )


def client_device(gpus_per_client: float) -> str:
    """``cuda`` when the client was given a GPU share and CUDA is available, else ``cpu``."""
    return "cuda" if gpus_per_client > 0 and torch.cuda.is_available() else "cpu"


def build_client(exp: Experiment, cid: int, state: RecordDict) -> BaseClient:
    """The configured method's client for partition ``cid``, keeping its state in ``state``."""
    torch.set_num_threads(int(exp.cfg.sim.cpus_per_client))
    settings = replace(exp.settings, device=client_device(float(exp.cfg.sim.gpus_per_client)))
    return methods.get(exp.cfg.method.name).client(cid, client_data(exp, cid), settings, state)


def initial_weights(exp: Experiment) -> list[np.ndarray]:
    """The common initial model (seeded; every client can rebuild it)."""
    ds = exp.dataset
    return get_weights(build_model(exp.cfg.model, ds.image_shape, ds.num_classes, exp.cfg.seed))


def partition_report(ds: ImageDataset, splits: list[ClientSplit]) -> list[dict]:
    """Each client's label counts in its train, val and test sets (partition.json)."""
    ytr, yte = ds.train_y.numpy(), ds.test_y.numpy()
    return [
        {
            "cid": cid,
            "train": label_counts(ytr, sp.train, ds.num_classes),
            "val": label_counts(ytr, sp.val, ds.num_classes),
            "test": label_counts(yte, sp.test, ds.num_classes),
            # latent split: the cluster of the client's training data and of its val/test sets
            **({"cluster": sp.cluster, "target_cluster": sp.target_cluster} if sp.cluster is not None else {}),
        }
        for cid, sp in enumerate(splits)
    ]


def build_partition(cfg: DictConfig, ds: ImageDataset) -> list[ClientSplit]:
    """The configured partition; impossible settings become a :class:`ConfigError`.

    A ``samples_per_client`` that caps no client (above every client's local data) is refused:
    the run would be full scale while labelled scaled down.
    """
    splits = _partition(cfg, ds)
    cap = cfg.samples_per_client
    if cap is not None:
        largest = max(len(s.train) + len(s.val) for s in splits)
        if largest < cap:
            raise ConfigError(f"samples_per_client={cap} is above what the split gives: the largest client holds "
                              f"{largest} images; allowed: 2..{largest}, or null for the full data")
    return splits


def _partition(cfg: DictConfig, ds: ImageDataset) -> list[ClientSplit]:
    try:
        if cfg.partition.name == "latent":
            from fedfomo.embeddings import latent_splits

            return latent_splits(cfg, ds)
        return make_partition(
            ds.train_y.numpy(), ds.test_y.numpy(), kind=cfg.partition.name, num_clients=cfg.num_clients,
            val_ratio=cfg.val_ratio, seed=cfg.seed,
            classes_per_client=cfg.partition.get("classes_per_client", 2),
            samples_per_client=cfg.samples_per_client,
        )
    except ValueError as err:
        raise ConfigError(str(err)) from err


def build_strategy(cfg: DictConfig, initial: list[np.ndarray], recorder: RunRecorder) -> PersonalizedStrategy:
    """The configured method's Flower strategy, starting from the common ``initial`` model."""
    method = methods.get(cfg.method.name)
    return method.strategy(num_clients=cfg.num_clients, num_rounds=cfg.num_rounds, participation=cfg.participation,
                           seed=cfg.seed, sampling=str(cfg.get("sampling", "fresh")), initial_weights=initial,
                           recorder=recorder, **method.strategy_options(cfg))


def run_facts(cfg: DictConfig, emd: float | Mapping) -> dict:
    """The settings summary.json records next to the accuracies.

    ``emd`` is :func:`fedfomo.emd.partition_emd_facts` (``emd``, ``emd_ground`` and the authors'
    ``emd_authors``) or, as before, our EMD alone (then ``emd_authors`` is None).
    """
    emds = dict(emd) if isinstance(emd, Mapping) else {"emd": emd, "emd_ground": DEFAULT_GROUND, "emd_authors": None}
    return {
        "method": cfg.method.name, "dataset": cfg.dataset.name, "test_split": configured_test_split(cfg.dataset),
        "augment": str(cfg.dataset.get("augment", "none")), "partition": cfg.partition.name,
        "num_clients": cfg.num_clients, "num_rounds": cfg.num_rounds, "participation": cfg.participation,
        "sampling": str(cfg.get("sampling", "fresh")), "local_epochs": cfg.local_epochs, "seed": cfg.seed,
        "model": cfg.model,
        "samples_per_client": cfg.samples_per_client,
        **partition_facts(cfg.partition, NUM_CLASSES.get(cfg.dataset.name)),
        "emd": emds["emd"], "emd_ground": emds.get("emd_ground", DEFAULT_GROUND),
        "emd_authors": emds.get("emd_authors"),
        "num_models": None,
        "dp": ({k: cfg.dp[k] for k in ("noise_multiplier", "max_grad_norm", "delta")}
               if cfg.get("dp") is not None and cfg.dp.enabled else None),
        **methods.get(cfg.method.name).facts(cfg),
        "hardware": hardware_description(cfg.sim.cpus_per_client, float(cfg.sim.gpus_per_client)),
    }


def partition_facts(partition_cfg: DictConfig, num_classes: int | None = None) -> dict:
    """The settings that tell partitions of the same name apart.

    Latent: D, embedder, shuffled targets and, given ``num_classes``, ``cluster_by`` as resolved
    (``kmeans`` or ``label``, :func:`fedfomo.latent.resolve_cluster_by`).
    """
    if partition_cfg.name == "pathological":
        return {"classes_per_client": int(partition_cfg.classes_per_client)}
    if partition_cfg.name == "latent":
        d = int(partition_cfg.num_distributions)
        facts = {"num_distributions": d, "embedder": str(partition_cfg.embedder),
                 "shuffle_targets": bool(partition_cfg.get("shuffle_targets", False))}
        if num_classes is not None:
            facts["cluster_by"] = resolve_cluster_by(str(partition_cfg.get("cluster_by", "auto")), d, num_classes)
        return facts
    return {}


def hardware_description(threads: int, gpus_per_client: float = 0.0) -> str:
    """One line describing where the run happened (CPU model, cores, torch threads and GPU share per client)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = "CPU"
    if client_device(gpus_per_client) == "cuda":
        device = f"{torch.cuda.get_device_name(0)}, {gpus_per_client:g} GPU per client"
    return f"{cpu}, {os.cpu_count()} cores, {threads} torch thread(s) per client, torch {torch.__version__}, {device}"


def git_commit() -> str | None:
    """The code's git commit, or None outside git.

    ``-dirty`` is appended when tracked files under ``fedfomo/`` or ``conf/`` (the code and
    configs that determine results) have uncommitted changes; result folders do not count.
    """
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/fedfomo", ":/conf"],
                               cwd=here,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")
