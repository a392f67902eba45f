"""What travels between the ServerApp and the ClientApps, and its encoding into Flower Messages.

A request (server -> client) carries the weights the client downloads (``ArrayRecord``
``"arrays"``) and a config (``ConfigRecord`` ``"config"``: scalars and strings, e.g. FedFomo's
candidate ids). A reply carries the upload, the number of training examples and the client's
metrics (``ConfigRecord`` ``"metrics"``, since FedFomo's ids and weights are strings). Lists of
ids and floats travel as comma-separated strings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

Weights = list[np.ndarray]


@dataclass(frozen=True)
class Upload:
    """One client's reply: what it uploads, its number of training examples and its metrics."""

    cid: int
    weights: Weights
    num_examples: int
    metrics: dict
    blob: str | None = None  # the file holding the weights when the client left them there (``weights`` is empty)
    blob_nbytes: int = 0  # the size of the model in that file

    @property
    def nbytes(self) -> int:
        """Bytes of the uploaded model, in the message or in its blob."""
        return self.blob_nbytes if self.blob else sum(w.nbytes for w in self.weights)


def request(node_id: int, kind: str, server_round: int, weights: Weights, config: dict) -> Message:
    """A ``train``/``evaluate`` message to ``node_id`` carrying ``weights`` and ``config``."""
    content = RecordDict({"arrays": ArrayRecord([np.ascontiguousarray(w) for w in weights]),
                          "config": ConfigRecord(config)})
    return Message(content=content, dst_node_id=node_id, message_type=kind, group_id=str(server_round))


def unpack_request(msg: Message) -> tuple[Weights, dict]:
    """``(weights, config)`` of a request."""
    return msg.content["arrays"].to_numpy_ndarrays(), dict(msg.content["config"])


def reply_to(msg: Message, weights: Weights, num_examples: int, metrics: dict) -> Message:
    """The reply to ``msg``: an upload, the number of training examples and scalar/string metrics."""
    content = RecordDict({"arrays": ArrayRecord([np.ascontiguousarray(w) for w in weights]),
                          "metrics": ConfigRecord({**metrics, "num_examples": int(num_examples)})})
    return Message(content=content, reply_to=msg)


def unpack_reply(reply: Message, where: str) -> Upload:
    """The :class:`Upload` of a client's reply; a reply with an error raises ``RuntimeError`` naming ``where``."""
    if reply.has_error():
        raise RuntimeError(f"{where}: node {reply.metadata.src_node_id} failed: {reply.error.reason}")
    metrics = dict(reply.content["metrics"])
    return Upload(cid=int(metrics["cid"]), weights=reply.content["arrays"].to_numpy_ndarrays(),
                  num_examples=int(metrics.pop("num_examples")), metrics=metrics)


def encode_ids(ids: list[int]) -> str:
    """``[3, 5, 7]`` -> ``"3,5,7"``."""
    return ",".join(str(int(i)) for i in ids)


def decode_ids(text: str) -> list[int]:
    """``"3,5,7"`` -> ``[3, 5, 7]``; empty string -> ``[]``."""
    return [int(v) for v in text.split(",")] if text else []


def encode_floats(values: np.ndarray) -> str:
    """Floats as a comma-separated string; ``repr`` round-trips every float64 exactly."""
    return ",".join(repr(float(v)) for v in values)


def decode_floats(text: str) -> np.ndarray:
    """Inverse of :func:`encode_floats`."""
    return np.array([float(v) for v in text.split(",")] if text else [], dtype=np.float64)


def concat_models(models: list[Weights]) -> Weights:
    """Several models' arrays in one flat list (one Flower ``Parameters``)."""
    return [w for m in models for w in m]


def split_models(flat: Weights, num_arrays: int) -> list[Weights]:
    """Cut a concatenation of models (each ``num_arrays`` arrays) back into a list of models."""
    if num_arrays <= 0 or len(flat) % num_arrays:
        raise ValueError(f"cannot split {len(flat)} arrays into models of {num_arrays}")
    return [list(flat[k:k + num_arrays]) for k in range(0, len(flat), num_arrays)]
