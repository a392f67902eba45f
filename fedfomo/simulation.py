"""Building and running one federated experiment through Flower's simulation engine."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fedfomo.baselines import method_params, strategy_options
from fedfomo.config import ConfigError, validate_config
from fedfomo.data import ImageDataset, load_dataset
from fedfomo.emd import DEFAULT_GROUND, partition_emd
from fedfomo.models import build_model, get_weights
from fedfomo.partition import ClientSplit, label_counts, make_partition
from fedfomo.results import RunRecorder
from fedfomo.shared_data import shared_train_indices, with_shared_train

log = logging.getLogger("fedfomo")


@dataclass(frozen=True)
class ClientFactory:
    """Picklable ``client_fn``: loads the dataset once per worker process and slices a client's part.

    Attributes
    ----------
    method : str
        Method name (key of :data:`fedfomo.client.CLIENTS`).
    dataset, root : str
        What :func:`fedfomo.data.load_dataset` needs (cached per process).
    splits : list of ClientSplit
        Every client's indices.
    settings : ClientSettings
        Client settings.
    threads : int
        Torch threads per client.
    shared_train : np.ndarray, optional
        Indices (official train split) added to every client's train set, e.g. the shared data
        of ``fedavg_data`` (:mod:`fedfomo.shared_data`); never to val or test.

    """

    method: str
    dataset: str
    root: str
    splits: list[ClientSplit]
    settings: object
    threads: int
    shared_train: np.ndarray | None = None

    def __call__(self, context):
        """Flower's ``client_fn(context)``."""
        from fedfomo.client import CLIENTS, ClientData

        torch.set_num_threads(self.threads)
        cid = int(context.node_config["partition-id"])
        ds = load_dataset(self.dataset, self.root)
        sp = with_shared_train(self.splits[cid], self.shared_train)
        data = ClientData(
            train_x=ds.train_x[sp.train], train_y=ds.train_y[sp.train],
            val_x=ds.train_x[sp.val], val_y=ds.train_y[sp.val],
            test_x=ds.test_x[sp.test], test_y=ds.test_y[sp.test],
        )
        return CLIENTS[self.method](cid, data, self.settings, context.state).to_client()


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
    """The configured partition; impossible settings become a :class:`ConfigError`."""
    try:
        if cfg.partition.name == "latent":
            from fedfomo.embed import latent_splits

            return latent_splits(cfg, ds)
        return make_partition(
            ds.train_y.numpy(), ds.test_y.numpy(), kind=cfg.partition.name, num_clients=cfg.num_clients,
            val_ratio=cfg.val_ratio, seed=cfg.seed,
            classes_per_client=cfg.partition.get("classes_per_client", 2),
            samples_per_client=cfg.samples_per_client,
        )
    except ValueError as err:
        raise ConfigError(str(err)) from err


def build_strategy(cfg: DictConfig, initial: list[np.ndarray], recorder: RunRecorder):
    """The configured method's Flower strategy."""
    from fedfomo.strategy import STRATEGIES

    common = dict(num_clients=cfg.num_clients, num_rounds=cfg.num_rounds, participation=cfg.participation,
                  seed=cfg.seed, initial_weights=initial, recorder=recorder)
    if cfg.method.name == "fedfomo":
        return STRATEGIES["fedfomo"](num_models=cfg.fomo.num_models, epsilon=cfg.fomo.epsilon,
                                     epsilon_decay=cfg.fomo.epsilon_decay, **common)
    return STRATEGIES[cfg.method.name](**strategy_options(cfg), **common)


def _quiet_flower() -> None:
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    for name in ("flwr", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_experiment(cfg: DictConfig, out_dir: str | Path) -> dict:
    """Validate, load data, partition, run the federation, and write every result file.

    Parameters
    ----------
    cfg : DictConfig
        Composed configuration (see ``conf/config.yaml``).
    out_dir : str or Path
        Where results go (the Hydra run directory).

    Returns
    -------
    dict
        The content of summary.json.

    """
    validate_config(cfg)
    _quiet_flower()
    start = time.perf_counter()
    commit = git_commit()  # before the run: the code that produced the results
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    root = str(Path(cfg.dataset.root).expanduser().resolve())
    ds = load_dataset(cfg.dataset.name, root, bool(cfg.dataset.download))
    splits = build_partition(cfg, ds)
    with (out / "partition.json").open("w") as f:
        emd = partition_emd(ds.train_y.numpy(), splits, ds.num_classes)
        json.dump({"clients": partition_report(ds, splits), "emd": emd, "emd_ground": DEFAULT_GROUND}, f)
    log.info("%s | %s | %s | %d clients | train %d val %d test %d images per client (mean)",
             cfg.method.name, cfg.dataset.name, cfg.partition.name, cfg.num_clients,
             np.mean([len(s.train) for s in splits]), np.mean([len(s.val) for s in splits]),
             np.mean([len(s.test) for s in splits]))

    from fedfomo.client import ClientSettings

    settings = ClientSettings(
        model=cfg.model, image_shape=ds.image_shape, num_classes=ds.num_classes, seed=cfg.seed,
        mean=ds.mean, std=ds.std, local_epochs=cfg.local_epochs, lr=cfg.optim.lr,
        lr_decay=cfg.optim.lr_decay, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay,
        batch_size=cfg.optim.batch_size, eval_batch_size=cfg.optim.eval_batch_size, distance=cfg.fomo.distance,
        method_params=method_params(cfg),
    )
    try:
        shared = shared_train_indices(cfg, ds.train_y.numpy(), splits)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if shared is not None:
        log.info("shared data: %d training images added to every client's train set", len(shared))
    initial = get_weights(build_model(cfg.model, ds.image_shape, ds.num_classes, cfg.seed))
    num_cpus = cfg.sim.num_cpus or os.cpu_count() or 1
    workers = max(1, num_cpus // cfg.sim.cpus_per_client)
    recorder = RunRecorder(out, cfg.num_rounds, workers=min(workers, cfg.num_clients), progress=cfg.sim.progress)
    strategy = build_strategy(cfg, initial, recorder)
    factory = ClientFactory(method=cfg.method.name, dataset=cfg.dataset.name, root=root, splits=splits,
                            settings=settings, threads=cfg.sim.cpus_per_client, shared_train=shared)

    from flwr.server import ServerConfig
    from flwr.simulation import start_simulation

    _quiet_flower()  # importing flwr resets its logger's level

    start_simulation(
        client_fn=factory,
        num_clients=cfg.num_clients,
        strategy=strategy,
        config=ServerConfig(num_rounds=cfg.num_rounds),
        client_resources={"num_cpus": cfg.sim.cpus_per_client, "num_gpus": 0.0},
        ray_init_args={"include_dashboard": False, "log_to_driver": False, "logging_level": "error",
                       "num_cpus": num_cpus},
    )
    _cancel_lingering_timers()
    if len(recorder.rounds) != cfg.num_rounds or not recorder.final_acc:
        raise RuntimeError(f"simulation stopped early: {len(recorder.rounds)} of {cfg.num_rounds} rounds "
                           f"finished; see the log above (finished rounds are in {out / 'rounds.csv'})")
    facts = {
        "method": cfg.method.name, "dataset": cfg.dataset.name, "partition": cfg.partition.name,
        "num_clients": cfg.num_clients, "num_rounds": cfg.num_rounds, "participation": cfg.participation,
        "local_epochs": cfg.local_epochs, "seed": cfg.seed, "model": cfg.model,
        "samples_per_client": cfg.samples_per_client,
        **partition_facts(cfg.partition),
        "emd": emd, "emd_ground": DEFAULT_GROUND,
        "num_models": cfg.fomo.num_models if cfg.method.name == "fedfomo" else None,
        "wall_time_s": time.perf_counter() - start,
        "hardware": hardware_description(cfg.sim.cpus_per_client),
        "git_commit": commit,
    }
    return recorder.write_summary(facts)


def partition_facts(partition_cfg: DictConfig) -> dict:
    """The settings that tell partitions of the same name apart (latent: D, embedder, shuffled targets)."""
    if partition_cfg.name == "pathological":
        return {"classes_per_client": int(partition_cfg.classes_per_client)}
    if partition_cfg.name == "latent":
        return {"num_distributions": int(partition_cfg.num_distributions), "embedder": str(partition_cfg.embedder),
                "shuffle_targets": bool(partition_cfg.get("shuffle_targets", False))}
    return {}


def hardware_description(threads: int) -> str:
    """One line describing where the run happened (CPU model, cores, torch threads per client)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {threads} torch thread(s) per client, torch {torch.__version__}, CPU"


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


def _cancel_lingering_timers() -> None:
    """start_simulation leaves a non-daemon Timer that keeps the process alive ~10 s; cancel it."""
    for t in threading.enumerate():
        if isinstance(t, threading.Timer):
            t.cancel()
