"""The real round loop and ClientApp in the test process: a Flower ``Grid`` stand-in without Flower's runtime.

A run through ``flwr run`` spends about a minute starting the SuperLink, Ray and its workers, however
small the federation; the tests that check what a method computes, not how Flower carries it,
use :class:`InProcessGrid` instead (a few seconds). Every message still goes through Flower's
protobuf serialisation both ways, so what could not travel in a real run fails here too.
``tests/test_e2e.py``, ``tests/test_deploy.py`` and ``tests/test_run_safety.py`` keep the real runs.
"""

from __future__ import annotations

import csv
from pathlib import Path

from flwr.app import Context, Message, RecordDict
from flwr.common.serde import message_from_proto, message_to_proto


def _wire(msg: Message) -> Message:
    """``msg`` after a trip through Flower's protobuf serialisation, as between SuperLink and SuperNode."""
    return message_from_proto(message_to_proto(msg))


class InProcessGrid:
    """A Flower ``Grid`` stand-in that answers each message at once by calling the ClientApp's handlers here."""

    def __init__(self, run_config: dict, num_clients: int) -> None:
        self.contexts = {100 + i: Context(run_id=1, node_id=100 + i, state=RecordDict(), run_config=run_config,
                                          node_config={"partition-id": i, "num-partitions": num_clients})
                         for i in range(num_clients)}
        self.replies: dict[str, Message] = {}
        self.count = 0

    def get_node_ids(self):
        return sorted(self.contexts)

    def push_messages(self, messages):
        from fedfomo import client_app

        handlers = {"query": client_app.query, "train": client_app.train, "evaluate": client_app.evaluate}
        ids = []
        for msg in messages:
            mid = f"m{self.count}"
            self.count += 1
            msg.metadata.__dict__["_message_id"] = mid
            received = _wire(msg)
            reply = handlers[received.metadata.message_type](received, self.contexts[received.metadata.dst_node_id])
            self.replies[mid] = _wire(reply)
            ids.append(mid)
        return ids

    def pull_messages(self, ids):
        return [self.replies.pop(i) for i in list(ids) if i in self.replies]

    def send_and_receive(self, messages, timeout=None):
        return self.pull_messages(self.push_messages(messages))


def run_in_process(out: Path, run_config: dict, num_clients: int, grid_type=InProcessGrid) -> dict:
    """Build the experiment of ``run_config`` (``flwr run``'s keys) and run its round loop into ``out``; the summary."""
    from fedfomo.experiment import build_experiment
    from fedfomo.runconfig import experiment_config
    from fedfomo.server import run_federation

    exp = build_experiment(experiment_config({**run_config, "run-dir": str(out)}))
    return run_federation(grid_type(run_config, num_clients), exp, out)


def client_rows(out: Path) -> list[dict]:
    """The rows of a run's ``clients.csv``."""
    with (out / "clients.csv").open() as f:
        return list(csv.DictReader(f))
