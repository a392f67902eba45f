"""Flower ClientApp of every method: one partition per SuperNode, named by its ``node_config``.

A SuperNode serves the partition ``partition-id`` of ``num-partitions`` (both in
``context.node_config``; Flower's simulation engine sets them for every simulated node). The
client builds the experiment from the run config exactly as the server does (cached per
process), answers the server's ``query`` with its partition id, and runs its method's
:class:`~fedfomo.client.BaseClient` ``fit`` / ``evaluate`` on ``train`` / ``evaluate`` messages.
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedfomo.checkpoint import client_folder, restore_client, save_client
from fedfomo.experiment import Experiment, build_client, build_experiment
from fedfomo.messages import reply_to, unpack_request
from fedfomo.runconfig import config_yaml, experiment_config

if TYPE_CHECKING:
    from omegaconf import DictConfig

app = ClientApp()
MARKER = "fedfomo_attempt"  # client state entry: the run attempt this state belongs to
ON_DISK = "fedfomo_on_disk"  # client state entry: the rest of the state is in this client's file of that round
KINDS = {"train": 0, "evaluate": 1}


def partition_of(node_config: dict, num_clients: int | None = None) -> int:
    """The partition id of a node, checked against ``num-partitions`` and the run's number of clients.

    Raises
    ------
    ValueError
        One line saying what is missing or out of range and how to start the SuperNode.

    """
    how = 'start the SuperNode with --node-config "partition-id=I num-partitions=N"'
    if "partition-id" not in node_config:
        raise ValueError(f"node_config has no partition-id; {how}")
    pid, parts = node_config["partition-id"], node_config.get("num-partitions")
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise ValueError(f"node_config partition-id={pid!r} must be an integer; {how}")
    if parts is not None and (isinstance(parts, bool) or not isinstance(parts, int) or parts < 1):
        raise ValueError(f"node_config num-partitions={parts!r} must be a positive integer; {how}")
    if num_clients is not None and parts is not None and parts != num_clients:
        raise ValueError(f"node_config num-partitions={parts} but the run has num_clients={num_clients}; "
                         f"allowed: num-partitions={num_clients}")
    upper = num_clients if num_clients is not None else parts
    if pid < 0 or (upper is not None and pid >= upper):
        allowed = f"0..{upper - 1}" if upper else ">= 0"
        raise ValueError(f"node_config partition-id={pid} is out of range; allowed: {allowed} ({how})")
    return pid


@lru_cache(maxsize=2)
def _experiment(yaml_text: str) -> Experiment:
    from omegaconf import OmegaConf

    return build_experiment(OmegaConf.create(yaml_text))


@lru_cache(maxsize=2)
def _config_yaml(run_config: tuple) -> str:
    return config_yaml(experiment_config(dict(run_config)))


def _experiment_for(context: Context) -> Experiment:
    return _experiment(_config_yaml(tuple(sorted(context.run_config.items()))))


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Report the partition this node serves (the server maps node ids to partitions from it)."""
    num_clients = int(msg.content["config"]["num-clients"])
    pid = partition_of(dict(context.node_config), num_clients)
    return Message(RecordDict({"config": ConfigRecord({"partition-id": pid})}), reply_to=msg)


def state_dir(context: Context, config: dict) -> Path | None:
    """Where this node keeps its state files: node_config ``state-dir``, else the run folder the server names."""
    given = context.node_config.get("state-dir") or config.get("run_dir")
    return Path(str(given)) if given else None


def sync_state(context: Context, config: dict, cid: int) -> int | None:
    """Load this client's state from its files where Flower's context does not hold it.

    After a resume (``attempt`` > 1): once, as of the server's checkpoint. Otherwise, when an
    earlier call left only the :data:`ON_DISK` entry (:func:`offload_state`): from the file it names.

    Returns
    -------
    int or None
        The newest round at or before the one asked for whose file was read (0: none, the state is
        empty); None when nothing was read (the context holds the state).

    """
    attempt = int(config.get("attempt", 1))
    marker = context.state.get(MARKER)
    folder = state_dir(context, config)
    loaded = None
    if attempt > 1 and (marker is None or int(marker["attempt"]) != attempt):  # type: ignore[index]
        if folder is not None:
            loaded = restore_client(folder, cid, int(config.get("resume_round", 0)), context.state)
    elif ON_DISK in context.state and folder is not None:
        saved = int(context.state[ON_DISK]["round"])  # type: ignore[index]
        loaded = restore_client(folder, cid, saved, context.state)
        if loaded != saved:  # the file this client wrote is gone: never go on from another state
            raise RuntimeError(f"client {cid}: its state file of round {saved} is missing from "
                               f"{client_folder(folder, cid)}")
    context.state[MARKER] = ConfigRecord({"attempt": attempt})
    return loaded


def offload_state(context: Context, saved_round: int) -> None:
    """Leave in Flower's context only a note that the state is in this client's file of ``saved_round``.

    The context travels with every message of a simulated client (Ray pickles it to the worker
    and back, and the engine keeps one per client), so a state of model size costs a copy each
    way and population x model of the engine's memory; the file is written anyway
    (:func:`fedfomo.checkpoint.save_client`) and :func:`sync_state` reads it back at the
    client's next message (about 2 ms here, page cache).
    """
    attempt = context.state.get(MARKER)
    for key in list(context.state.keys()):
        del context.state[key]
    if attempt is not None:
        context.state[MARKER] = attempt
    context.state[ON_DISK] = ConfigRecord({"round": saved_round})


def maybe_fail(cfg: DictConfig, cid: int, server_round: int, kind: str) -> None:
    """Fault injection: raise with probability ``sim.fail_prob``, seeded by (seed, client, round, kind)."""
    p = float(cfg.sim.get("fail_prob", 0.0) or 0.0)
    if p > 0 and np.random.default_rng([int(cfg.seed), 3, cid, server_round, KINDS[kind]]).random() < p:
        raise RuntimeError(f"injected failure (sim.fail_prob={p}) of client {cid} in {kind} round {server_round}")


def _precision(cfg) -> torch.autocast:
    """bfloat16 autocast of every pass when ``sim.bf16`` (checked supported before the run), else a no-op.

    The context spans a whole message (candidate passes, merge, training, test), in which the
    parameters change in place; autocast's cache of the bf16 copies of the weights would keep
    serving the copies made at their first use (training would never see its own updates), so
    it is off: every forward casts the current weights.
    """
    device = "cuda" if float(cfg.sim.gpus_per_client) > 0 and torch.cuda.is_available() else "cpu"
    return torch.autocast(device, dtype=torch.bfloat16, enabled=bool(cfg.sim.get("bf16", False)),
                          cache_enabled=False)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One round of the method: personalize, test, train E epochs, upload; then save the client's state."""
    exp = _experiment_for(context)
    cid = partition_of(dict(context.node_config), int(exp.cfg.num_clients))
    parameters, config = unpack_request(msg)
    rnd = int(config["server_round"])
    maybe_fail(exp.cfg, cid, rnd, "train")
    sync_state(context, config, cid)
    with _precision(exp.cfg):
        upload, n, metrics = build_client(exp, cid, context.state).fit(parameters, config)
    folder = state_dir(context, config)
    if folder is not None:
        t0 = time.perf_counter()
        save_client(folder, cid, rnd, context.state, checkpointed=rnd - 1, durable=config.get("fsync") != "round")
        offload_state(context, rnd)
        metrics["state_save_s"] = time.perf_counter() - t0
    return reply_to(msg, upload, n, metrics)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Final evaluation: the model this client would keep, on its test set."""
    exp = _experiment_for(context)
    cid = partition_of(dict(context.node_config), int(exp.cfg.num_clients))
    parameters, config = unpack_request(msg)
    maybe_fail(exp.cfg, cid, int(config["server_round"]), "evaluate")
    loaded = sync_state(context, config, cid)
    with _precision(exp.cfg):
        _, n, metrics = build_client(exp, cid, context.state).evaluate(parameters, config)
    if loaded is not None:  # evaluation changes no state: leave it in its file again
        offload_state(context, loaded)
    return reply_to(msg, [], n, metrics)
