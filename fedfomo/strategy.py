"""The server skeleton every method's Flower strategy shares (the methods are in :mod:`fedfomo.methods`).

Every strategy is a :class:`flwr.serverapp.strategy.Strategy` (Flower's Message API). The
skeleton samples clients (seeded), builds one train message per sampled client addressed to
the SuperNode that serves its partition, collects each client's metrics into a
:class:`~fedfomo.results.RunRecorder` row per round, and after the last round asks every client
for a final evaluation of the model it would keep. The round loop that drives it over a Flower
``Grid`` is :func:`fedfomo.server.run_federation`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedfomo.messages import Upload, request, unpack_reply
from fedfomo.results import RunRecorder

log = logging.getLogger(__name__)
Weights = list[np.ndarray]


#: ``sampling`` values: a new seeded draw every round (the paper's partial participation), or one
#: draw reused in every round (what the authors' code does: ``main.py`` reseeds NumPy with the
#: run's seed right before each round's ``np.random.choice``, NVlabs/FedFomo ``main.py:269-271``)
SAMPLING = ("fresh", "fixed")


def sample_clients(num_clients: int, participation: float, server_round: int, seed: int,
                   sampling: str = "fresh") -> list[int]:
    """Ids of the clients taking part in a round: ``max(1, round(participation * N))`` of them.

    Parameters
    ----------
    num_clients : int
        Size of the federation.
    participation : float
        Fraction of clients per round.
    server_round : int
        The round (1, 2, ...).
    seed : int
        The run's seed.
    sampling : {"fresh", "fixed"}
        ``fresh``: a new draw every round (seeded by seed and round); ``fixed``: the same draw in
        every round (seeded by the seed alone), as the authors' code ends up doing.

    Returns
    -------
    list of int
        Sorted client ids.

    """
    if sampling not in SAMPLING:
        raise ValueError(f"sampling={sampling!r}: allowed values are {', '.join(SAMPLING)}")
    k = max(1, int(round(participation * num_clients)))
    if k >= num_clients:
        return list(range(num_clients))
    rng = np.random.default_rng([seed, 1] if sampling == "fixed" else [seed, 1, server_round])
    return sorted(int(c) for c in rng.choice(num_clients, size=k, replace=False))


class PersonalizedStrategy(Strategy):
    """Shared skeleton of every method's strategy.

    Parameters
    ----------
    num_clients : int
        Size of the federation.
    num_rounds : int
        Number of rounds (the final evaluation runs after the last one).
    participation : float
        Fraction of clients per round.
    seed : int
        Seed of client sampling and of any server-side randomness.
    sampling : {"fresh", "fixed"}
        Which clients a round takes when ``participation < 1`` (:func:`sample_clients`); default fresh.
    initial_weights : list of np.ndarray
        The common initial model; the first global model.
    recorder : RunRecorder
        Receives one row per round and the final evaluation.

    Attributes
    ----------
    nodes : dict of int to int
        Partition id (client id) -> node id of the SuperNode serving it; set by the round loop
        from what the clients report (:func:`fedfomo.server.discover_partitions`).
    work : dict of int to int
        Client id -> its number of training examples; messages are sent largest first.
    warmup_round : bool
        When True, the round loop runs a round 0 before round 1, in which every client takes
        part whatever ``participation`` is (FedFomo's ``method.warmup_epochs``); default False.
    shared_store : bool
        ``sim.shared_store``, set by the round loop: the clients run on this machine and may read
        models the server keeps in the run folder (checkpoint blobs), so :meth:`outgoing` may
        leave them out of the messages; default False.

    """

    warmup_round = False
    shared_store = False

    def __init__(self, *, num_clients: int, num_rounds: int, participation: float, seed: int,
                 initial_weights: Weights, recorder: RunRecorder, sampling: str = "fresh") -> None:
        self.num_clients = num_clients
        self.num_rounds = num_rounds
        self.participation = participation
        self.sampling = sampling
        self.seed = seed
        self.global_weights: Weights = list(initial_weights)
        self.recorder = recorder
        self.nodes: dict[int, int] = {}
        self.run_info: dict[str, int | str] = {}  # sent with every message (resume attempt, run folder)
        self.work: dict[int, int] = {}  # client id -> local training examples (dispatch order, longest first)
        self._round_start = 0.0
        self._download_bytes = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_clients={self.num_clients})"

    # -- method hooks ------------------------------------------------------------------------
    def download(self, cid: int, server_round: int) -> tuple[Weights, dict[str, int | float | str]]:
        """What client ``cid`` receives this round: weights and extra config."""
        raise NotImplementedError

    def aggregate(self, server_round: int, uploads: dict[int, Upload]) -> Weights | None:
        """Digest the uploads ``{cid: Upload}``; return new global weights or None."""
        raise NotImplementedError

    def sampled_clients(self, server_round: int) -> list[int]:
        """The round's draw of ``participation * N`` clients (:func:`sample_clients`)."""
        return sample_clients(self.num_clients, self.participation, server_round, self.seed, self.sampling)

    def train_clients(self, server_round: int) -> list[int]:
        """The clients sent a train message in ``server_round``: the sampled ones.

        Round 0, a method's warm-up round (:attr:`warmup_round`), takes every client; a method
        may train more clients than it aggregates (pFedMe's ``method.train_all_clients``).
        """
        return list(range(self.num_clients)) if server_round == 0 else self.sampled_clients(server_round)

    def final_download(self, cid: int) -> tuple[Weights, dict[str, int | float | str]]:
        """What client ``cid`` receives for the final evaluation (default: as in a round)."""
        return self.download(cid, self.num_rounds + 1)

    def download_nbytes(self, weights: Weights, extra: dict) -> int:
        """Bytes of the models a download gives its client (default: its weights).

        FedFomo adds the stored models its client reads from the run folder (``sim.shared_store``).
        """
        return sum(w.nbytes for w in weights)

    def incoming(self, up: Upload, server_round: int) -> Upload:
        """A reply's upload as the method sees it (default: as it travelled in the message).

        Called for every reply of a round before its weights are checked; a method whose clients
        leave their upload in the run folder (FedFomo with ``sim.shared_store``) names that file
        here (:attr:`Upload.blob`; its weights were checked by the client that wrote them).
        """
        return up

    def outgoing(self, weights: Weights, extra: dict) -> tuple[Weights, dict]:
        """What of a planned download travels in the message; the rest the client reads from the run folder.

        Called when the message is encoded (after :meth:`download`, whose weights count as
        downloaded either way). Default: everything travels.

        Parameters
        ----------
        weights : list of np.ndarray
            The download's weights (:meth:`download`).
        extra : dict
            The download's config.

        Returns
        -------
        tuple
            ``(weights, config)`` of the message.

        """
        return weights, extra

    def after_round(self, server_round: int) -> None:
        """Hook for per-round artefacts (e.g. FedFomo's P)."""

    def checkpoint_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Everything the strategy carries from one round to the next: (arrays, JSON-able values).

        Default: the global model. A method with more state extends both this and
        :meth:`restore_state` (:mod:`fedfomo.checkpoint` saves them without pickle).
        """
        from fedfomo.checkpoint import pack

        return pack("global", self.global_weights), {}

    def checkpoint_blobs(self) -> Mapping[str, Weights]:
        """Large state saved apart, once per version (see :func:`fedfomo.checkpoint.save_server`); default none."""
        return {}

    def restore_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Inverse of :meth:`checkpoint_state` (blobs are in ``arrays`` under ``blob/NAME``)."""
        from fedfomo.checkpoint import unpack

        self.global_weights = unpack(arrays, "global")

    # -- messages ------------------------------------------------------------------------------
    def _message(self, cid: int, kind: str, server_round: int, weights: Weights, extra: dict) -> Message:
        if cid not in self.nodes:
            raise RuntimeError(f"no SuperNode serves partition {cid}; known partitions: {sorted(self.nodes)}")
        return request(self.nodes[cid], kind, server_round, weights,
                       {"server_round": server_round, **self.run_info, **extra})

    def dispatch_order(self, cids: list[int]) -> list[int]:
        """``cids`` in the order their messages are sent: most local work first (:attr:`work`), ties by id.

        Downloads are computed in client-id order whatever this order is (a method may draw from
        one random stream per round), so the dispatch order changes no result; sending the
        longest jobs first keeps workers from idling at the end of a round.
        """
        return sorted(cids, key=lambda c: (-self.work.get(c, 0), c))

    def train_messages(self, server_round: int) -> Iterator[Message]:
        """Sample this round's clients, compute each its own download, and yield their messages.

        Downloads are computed (in client-id order) before the first message is yielded; each
        message is encoded only when it is taken, so a caller that sends a few at a time
        (:func:`fedfomo.server.send_windowed`) holds only those few encoded at once.
        """
        self._round_start = time.perf_counter()
        self._download_bytes = 0
        planned = {}
        for cid in self.train_clients(server_round):
            planned[cid] = self.download(cid, server_round)
            self._download_bytes += self.download_nbytes(*planned[cid])
        return self._encode(planned, "train", server_round)

    def evaluate_messages(self, cids: Iterable[int]) -> Iterator[Message]:
        """Final-evaluation messages for ``cids`` (each gets what it would download now), encoded lazily."""
        planned = {cid: self.final_download(cid) for cid in cids}
        return self._encode(planned, "evaluate", self.num_rounds + 1)

    def _encode(self, planned: dict[int, tuple[Weights, dict]], kind: str, server_round: int) -> Iterator[Message]:
        for cid in self.dispatch_order(list(planned)):
            weights, extra = self.outgoing(*planned.pop(cid))
            yield self._message(cid, kind, server_round, weights, extra)

    # -- Flower Strategy API -------------------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """One message per sampled client with its own download.

        ``arrays`` and ``config`` are unused: the strategy keeps the models it sends.
        """
        return self.train_messages(server_round)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the method's way and record the round.

        A client whose fit raised is recorded as failed and left out; an upload with non-finite
        weights (or flagged ``diverged`` by its client) is rejected: the method never sees it, so
        whatever it kept of that client (its previous upload, its P row) stays as it was. Only a
        round in which every client failed ends the run (``RuntimeError`` with the first error).
        """
        uploads: dict[int, Upload] = {}
        rows, failed, errors = [], [], []
        cid_of = {node: cid for cid, node in self.nodes.items()}
        replies = list(replies)
        for reply in replies:
            if reply.has_error():
                cid = cid_of.get(int(reply.metadata.src_node_id), -1)
                failed.append(cid)
                errors.append(f"client {cid}: {reply.error.reason}")
                log.warning("round %d | client %d failed: %s", server_round, cid, reply.error.reason)
                continue
            up = self.incoming(unpack_reply(reply, f"round {server_round}"), server_round)
            # an upload left in the run folder (up.blob) was checked by the client that wrote it
            if int(up.metrics.get("diverged", 0)) or not all(np.isfinite(w).all() for w in up.weights):
                up.metrics["diverged"] = 1
                log.warning("round %d | client %d diverged: upload rejected", server_round, up.cid)
            else:
                up.metrics["diverged"] = 0
                uploads[up.cid] = up
            rows.append(up.metrics)
        if replies and len(failed) == len(replies):
            raise RuntimeError(f"round {server_round}: every client failed; first: {errors[0]}")
        if uploads:
            new = self.aggregate(server_round, uploads)
            if new is not None:
                self.global_weights = new
        wall = time.perf_counter() - self._round_start
        upload_bytes = sum(u.nbytes for u in uploads.values())
        row = self.recorder.log_round(server_round, rows, wall_s=wall, download_mb=self._download_bytes / 2**20,
                                      upload_mb=upload_bytes / 2**20, failed=failed)
        self.after_round(server_round)
        return None, MetricRecord({"mean_acc": row["mean_acc"], "wall_s": wall})

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Only after the last round: every client evaluates the model it would keep."""
        if server_round != self.num_rounds:
            return []
        return list(self.evaluate_messages(range(self.num_clients)))

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Record these clients' final personalized test accuracies."""
        acc = {}
        for reply in replies:
            if reply.has_error():  # recorded as nan; the summary counts them
                cid = {node: c for c, node in self.nodes.items()}.get(int(reply.metadata.src_node_id), -1)
                log.warning("final evaluation | client %d failed: %s", cid, reply.error.reason)
                acc[cid] = float("nan")
                continue
            up = unpack_reply(reply, "final evaluation")
            acc[up.cid] = float(up.metrics["test_acc"])
        self.recorder.log_final(acc)
        return MetricRecord({"num_evaluated": len(acc)})

    def summary(self) -> None:
        """Log what this strategy does."""
        log.info("%s: %d clients, %d rounds, participation %.2f, seed %d", type(self).__name__, self.num_clients,
                 self.num_rounds, self.participation, self.seed)


def weighted_average(models: list[tuple[Weights, int]]) -> Weights:
    """Average models weighted by their number of examples (FedAvg's aggregation)."""
    total = float(sum(n for _, n in models))
    return [
        sum(w[k].astype(np.float64) * (n / total) for w, n in models).astype(models[0][0][k].dtype)
        for k in range(len(models[0][0]))
    ]
