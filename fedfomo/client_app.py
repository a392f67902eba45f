"""Flower ClientApp of every method: one partition per SuperNode, named by its ``node_config``.

A SuperNode serves the partition ``partition-id`` of ``num-partitions`` (both in
``context.node_config``; Flower's simulation engine sets them for every simulated node). The
client builds the experiment from the run config exactly as the server does (cached per
process), answers the server's ``query`` with its partition id, and runs its method's
:class:`~fedfomo.client.BaseClient` ``fit`` / ``evaluate`` on ``train`` / ``evaluate`` messages.
"""

from __future__ import annotations

from functools import lru_cache

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedfomo.client import BaseClient
from fedfomo.experiment import Experiment, build_client, build_experiment
from fedfomo.messages import reply_to, unpack_request
from fedfomo.runconfig import config_yaml, experiment_config

app = ClientApp()


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


def _client(context: Context) -> BaseClient:
    """The client of the run's method that this node serves, with its state."""
    exp = _experiment_for(context)
    return build_client(exp, partition_of(dict(context.node_config), int(exp.cfg.num_clients)), context.state)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One round of the method: personalize, test, train E epochs, upload."""
    upload, n, metrics = _client(context).fit(*unpack_request(msg))
    return reply_to(msg, upload, n, metrics)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Final evaluation: the model this client would keep, on its test set."""
    _, n, metrics = _client(context).evaluate(*unpack_request(msg))
    return reply_to(msg, [], n, metrics)
