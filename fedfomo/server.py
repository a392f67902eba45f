"""The server's side of a run over a Flower ``Grid``: find the clients, run the rounds, write the results.

Used by the ServerApp (:mod:`fedfomo.server_app`) whether the Grid is Flower's simulation
engine or a real SuperLink with SuperNodes. The server knows nodes by their node id only; it
learns which partition each SuperNode serves from the node itself (a ``query`` message answered
from the node's ``partition-id``), so nothing depends on how the nodes were started.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from omegaconf import DictConfig

from fedfomo import checkpoint, engine
from fedfomo.config import fsync_mode, shared_store
from fedfomo.emd import partition_emd_facts
from fedfomo.experiment import (
    Experiment,
    build_strategy,
    git_commit,
    initial_weights,
    partition_report,
    run_facts,
)
from fedfomo.results import RunRecorder
from fedfomo.runconfig import config_yaml
from fedfomo.runs import atomic_write_text, now, read_status, resume_command, write_status

log = logging.getLogger("fedfomo")


def is_simulation(grid: Grid) -> bool:
    """Whether ``grid`` is Flower's simulation engine (every simulated SuperNode exists from the start)."""
    try:
        from flwr.superlink.grid.inmemory_grid import InMemoryGrid
    except ImportError:  # pragma: no cover - layout of another flwr release
        return False
    return isinstance(grid, InMemoryGrid)


def discover_partitions(grid: Grid, num_clients: int, timeout_s: float, poll_s: float = 0.2,
                        simulation: bool = False) -> dict[int, int]:
    """Map every partition id 0..N-1 to the node serving it, from what the nodes report.

    Waits until ``num_clients`` nodes are connected, asks each for its ``partition-id`` and
    ``num-partitions`` (a ``query`` message) and checks that every partition is served exactly once.

    Parameters
    ----------
    grid : Grid
        Flower's grid (simulation or deployment).
    num_clients : int
        Partitions the run needs.
    timeout_s : float
        How long to wait for the nodes to connect and to answer.
    poll_s : float
        Interval between checks for connected nodes.
    simulation : bool
        Simulated nodes all exist from the start: too few is an error at once.

    Returns
    -------
    dict of int to int
        Partition id -> node id.

    Raises
    ------
    RuntimeError
        One line: too few nodes after ``timeout_s``, a node's error (e.g. no ``partition-id``),
        or partitions missing, duplicated or with another ``num-partitions``.

    """
    deadline = time.monotonic() + timeout_s
    nodes = sorted(grid.get_node_ids())
    if simulation and len(nodes) < num_clients:
        raise RuntimeError(f"the simulation has {len(nodes)} SuperNodes but the run needs num_clients={num_clients}: "
                           f'pass --federation-config "num-supernodes={num_clients}" to flwr run')
    while len(nodes) < num_clients and time.monotonic() < deadline:
        time.sleep(poll_s)
        nodes = sorted(grid.get_node_ids())
    if len(nodes) < num_clients:
        raise RuntimeError(f"waited {timeout_s:.0f} s (sim.connect_timeout_s) for {num_clients} SuperNodes, "
                           f"{len(nodes)} connected; start one SuperNode per partition "
                           f'(flower-supernode --node-config "partition-id=I num-partitions={num_clients}")')
    queries = [Message(RecordDict({"config": ConfigRecord({"num-clients": num_clients})}), dst_node_id=n,
                       message_type="query") for n in nodes]
    replies = list(grid.send_and_receive(queries, timeout=max(1.0, deadline - time.monotonic())))
    served: dict[int, list[int]] = {}
    for reply in replies:
        node = int(reply.metadata.src_node_id)
        if reply.has_error():
            raise RuntimeError(f"node {node} cannot take part: {reply.error.reason}")
        served.setdefault(int(reply.content["config"]["partition-id"]), []).append(node)
    if len(replies) < len(nodes):
        raise RuntimeError(f"{len(nodes) - len(replies)} of {len(nodes)} SuperNodes did not answer within "
                           f"{timeout_s:.0f} s (sim.connect_timeout_s)")
    twice = {p: n for p, n in served.items() if len(n) > 1}
    if twice:
        p, n = next(iter(sorted(twice.items())))
        raise RuntimeError(f"partition-id={p} is served by {len(n)} SuperNodes (nodes {n}); give each its own")
    missing = sorted(set(range(num_clients)) - set(served))
    if missing:
        raise RuntimeError(f"no SuperNode serves partition-id {missing[0]} ({len(missing)} missing of {num_clients})")
    return {p: n[0] for p, n in sorted(served.items())}


def send_windowed(grid: Grid, messages: Iterable[Message], window: int, timeout: float, where: str,
                  poll_s: float = 0.05) -> list[Message]:
    """Send ``messages`` keeping at most ``window`` of them in flight; return every reply.

    Flower's ``send_and_receive`` pushes every message at once. Pushing them a few at a time
    keeps only those few encoded in memory (a FedFomo download is M models), and keeps the
    simulation engine fast: it scans every stored message for every node on each poll, a cost
    that grows as nodes x messages in flight.

    Parameters
    ----------
    grid : Grid
        Flower's grid.
    messages : iterable of Message
        Taken (and so encoded) only when a slot in the window is free.
    window : int
        Most messages pushed and not yet answered.
    timeout : float
        Seconds allowed for all of them (``sim.round_timeout_s``).
    where : str
        Names the step in the error (e.g. ``"round 3"``).
    poll_s : float
        Interval between polls for replies.

    Raises
    ------
    RuntimeError
        One line when replies are missing after ``timeout``.

    """
    deadline = time.monotonic() + timeout
    todo = iter(messages)
    pending: set[str] = set()
    replies: list[Message] = []
    sent, exhausted = 0, False
    while True:
        while not exhausted and len(pending) < window:
            msg = next(todo, None)
            if msg is None:
                exhausted = True
                break
            ids = [str(i) for i in grid.push_messages([msg]) if i]
            if not ids:  # the SuperLink did not store it: its reply would never come
                raise RuntimeError(f"{where}: the SuperLink refused the message for node {msg.metadata.dst_node_id}")
            pending.update(ids)
            sent += 1
        if exhausted and not pending:
            return replies
        got = list(grid.pull_messages(list(pending)))
        replies.extend(got)
        pending.difference_update(m.metadata.reply_to_message_id for m in got)
        if not got:
            if time.monotonic() > deadline:
                unsent = sum(1 for _ in todo)
                raise RuntimeError(f"{where}: {len(pending) + unsent} of {sent + unsent} clients did not reply "
                                   f"within {timeout:.0f} s (sim.round_timeout_s)")
            time.sleep(poll_s)


def max_in_flight(cfg: DictConfig) -> int:
    """``sim.max_in_flight``, or when null one message per worker plus two queued.

    Measured with 1000 clients (README, Performance): Flower's simulation engine scans every
    in-flight message for each of the N nodes ten times a second, so a small window keeps its
    cost at a few percent of a core; two queued messages keep every worker busy.
    """
    return int(cfg.sim.max_in_flight or _workers(cfg) + 2)


def _prepare_folder(exp: Experiment, out_dir: Path) -> dict:
    """Write the run's config.yaml (refusing a folder of another configuration) and partition.json.

    Returns the partition's EMD facts (``emd``, ``emd_ground``, ``emd_authors``).
    """
    cfg: DictConfig = exp.cfg
    out_dir.mkdir(parents=True, exist_ok=True)
    text = config_yaml(cfg)
    saved = out_dir / "config.yaml"
    if saved.exists() and saved.read_text() != text:
        raise RuntimeError(f"{saved} holds another configuration than this run's; use another run folder")
    atomic_write_text(saved, text)
    ds, splits = exp.dataset, exp.splits
    emd = partition_emd_facts(ds.train_y.numpy(), splits, ds.num_classes)  # emd, emd_ground, emd_authors
    atomic_write_text(out_dir / "partition.json", json.dumps({"clients": partition_report(ds, splits), **emd}))
    log.info("%s | %s | %s | %d clients | train %d val %d test %d images per client (mean) | results in %s",
             cfg.method.name, cfg.dataset.name, cfg.partition.name, cfg.num_clients,
             np.mean([len(s.train) for s in splits]), np.mean([len(s.val) for s in splits]),
             np.mean([len(s.test) for s in splits]), out_dir)
    return emd


def run_federation(grid: Grid, exp: Experiment, out_dir: Path, *, progress: bool = False) -> dict:
    """Run ``exp`` over ``grid`` and write every result file into ``out_dir``.

    Parameters
    ----------
    grid : Grid
        Flower's grid.
    exp : Experiment
        The experiment (:func:`fedfomo.experiment.build_experiment`).
    out_dir : Path
        The run folder; a ``config.yaml`` already there (written by the Hydra entry point) must
        match this run's configuration.
    progress : bool
        Show a tqdm bar over rounds.

    Returns
    -------
    dict
        The content of summary.json.

    """
    start = time.perf_counter()
    cfg: DictConfig = exp.cfg
    commit = git_commit()  # before the run: the code that produced the results
    emd = _prepare_folder(exp, out_dir)
    splits = exp.splits

    if exp.shared_train is not None:
        log.info("shared data: %d training images added to every client's train set", len(exp.shared_train))
    recorder = RunRecorder(out_dir, cfg.num_rounds, workers=_workers(cfg), progress=progress)
    strategy = build_strategy(cfg, initial_weights(exp), recorder)
    if read_status(out_dir) is None:  # started by `flwr run` directly: nobody has marked the folder yet
        write_status(out_dir, status="running", round=0, num_rounds=int(cfg.num_rounds), started=now(), ended=None,
                     attempt=1, git_commit=commit, reason=None, resume_command=resume_command(out_dir))
    status = read_status(out_dir) or {}
    attempt = int(status.get("attempt", 1))
    # wall time of earlier attempts up to their last finished round (status.json's elapsed_s)
    before = float(status.get("elapsed_s") or 0.0) if attempt > 1 else 0.0
    # -1: nothing done yet and a warm-up round 0 to run first (FedFomo's method.warmup_epochs)
    done = -1 if strategy.warmup_round else 0
    if is_simulation(grid):
        engine.install()  # Flower's engine polls every node ten times a second: skip the idle ones cheaply
    strategy.run_info = {"run_dir": str(out_dir.resolve())}  # where a restored store finds its blobs
    if attempt > 1:  # a resume: continue after the last checkpointed round
        saved = checkpoint.load_server(out_dir, read_blobs=False)  # blobs stay on disk until needed
        if saved is not None:
            done, arrays, meta = saved
            strategy.restore_state(arrays, meta)
        recorder.resume(done)
        log.info("resuming (attempt %d) after round %d of %d", attempt, done, cfg.num_rounds)
    durable = fsync_mode(cfg, simulation=is_simulation(grid)) == "file"
    strategy.run_info = {"attempt": attempt, "resume_round": done, "run_dir": str(out_dir.resolve()),
                         "fsync": "file" if durable else "round"}
    strategy.shared_store = shared_store(cfg, simulation=is_simulation(grid))
    strategy.work = {cid: len(s.train) for cid, s in enumerate(splits)}
    strategy.nodes = discover_partitions(grid, cfg.num_clients, float(cfg.sim.connect_timeout_s),
                                         simulation=is_simulation(grid))
    timeout = float(cfg.sim.round_timeout_s)
    checkpoint_s = []
    window = max_in_flight(cfg)
    for rnd in range(done + 1, cfg.num_rounds + 1):
        replies = send_windowed(grid, strategy.train_messages(rnd), window, timeout, f"round {rnd}")
        strategy.aggregate_train(rnd, replies)
        t0 = time.perf_counter()
        checkpoint.save_server(out_dir, rnd, *strategy.checkpoint_state(), blobs=strategy.checkpoint_blobs(),
                               durable=durable)
        checkpoint_s.append(time.perf_counter() - t0)
        write_status(out_dir, round=rnd, elapsed_s=before + time.perf_counter() - start)
    # final evaluation: every client, a window at a time, recorded as replies come (bounded memory)
    step, t_final = max(100, window), time.perf_counter()
    for first in range(0, cfg.num_clients, step):
        chunk = range(first, min(cfg.num_clients, first + step))
        replies = send_windowed(grid, strategy.evaluate_messages(chunk), window, timeout, "final evaluation")
        strategy.aggregate_evaluate(cfg.num_rounds, replies)
    recorder.log_final_done()
    checkpoint.discard_spares(out_dir)
    this_attempt = time.perf_counter() - start
    facts = {**run_facts(cfg, emd), "wall_time_s": before + this_attempt, "wall_time_attempt_s": this_attempt,
             "git_commit": commit,
             "attempts": attempt, "final_evaluation_s": time.perf_counter() - t_final,
             "server_checkpoint_s_mean": float(np.mean(checkpoint_s)) if checkpoint_s else None}
    summary = recorder.write_summary(facts)
    write_status(out_dir, status="completed", ended=now(), reason=None)
    return summary


def _workers(cfg: DictConfig) -> int:
    import os

    num_cpus = cfg.sim.num_cpus or os.cpu_count() or 1
    return min(cfg.num_clients, max(1, num_cpus // cfg.sim.cpus_per_client))
