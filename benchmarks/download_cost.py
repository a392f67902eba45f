r"""Framework cost of one FedFomo download per sampled client: through the message, or from the shared store.

Times, with the real code, the steps between the server's store and the client's list of
candidate models, for M candidates of the configured model (McMahan CNN on MNIST: 1.66 M
parameters, 6.6 MB):

- ``message`` (``sim.shared_store=false``): the server encodes the M models into the message
  (:func:`fedfomo.messages.request`), the simulation engine's Ray transport pickles it to the
  worker and back out (``pickle`` protocol 5, as Ray does for the task's arguments), the client
  decodes it (:func:`fedfomo.messages.unpack_request`) and cuts it into models;
- ``shared`` (``sim.shared_store=true``): the same message without the models (their ids and
  rounds only), then the client reads the M checkpoint blobs the server wrote after their round
  (:func:`fedfomo.methods.fedfomo.shared_candidates`; the files are in the page cache, as
  they are in a run).

The blob written once per upload by the server's checkpoint is the same in both modes and is not
counted there; the last lines time what every sampled client costs in writes whatever the mode
(run safety: a kill loses no finished round): the client's state file (its baseline model,
:func:`fedfomo.checkpoint.save_client`) and the server's blob of its upload
(:func:`fedfomo.checkpoint.write_blob`), each one model, written atomically, in steady state
(overwriting files no checkpoint needs any more), each ``sim.fsync`` mode: ``file`` (each
fsync'd) and ``round`` (one ``os.sync()`` per round, shared by the round's clients).
Prints the median over ``--repeat`` tries of each step, in ms per sampled client::

    python benchmarks/download_cost.py --num-models 1 5 10 20
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedfomo.checkpoint import write_blob
from fedfomo.messages import concat_models, encode_ids, request, split_models, unpack_request
from fedfomo.methods.fedfomo import shared_candidates, store_key
from fedfomo.models import build_model, get_weights

Weights = list[np.ndarray]


def median_ms(step: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``step()`` over ``repeat`` calls after one warm-up call, in milliseconds."""
    step()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def message_steps(models: list[Weights], config: dict, num_arrays: int) -> dict[str, Callable[[], object]]:
    """The steps of a download that carries ``models`` in its message: encode, transport, decode.

    Parameters
    ----------
    models : list of list of np.ndarray
        What travels in the message (none in the shared mode).
    config : dict
        The message's config (candidate ids, and rounds in the shared mode).
    num_arrays : int
        Arrays per model.

    Returns
    -------
    dict of str to callable
        Step name -> a call doing it once.

    """
    msg = request(1, "train", 2, concat_models(models), config)
    data = pickle.dumps(msg, protocol=5)
    received = pickle.loads(data)
    return {"encode (server)": lambda: request(1, "train", 2, concat_models(models), config),
            "transport (pickle out + in)": lambda: pickle.loads(pickle.dumps(msg, protocol=5)),
            "decode (client)": lambda: split_models(unpack_request(received)[0], num_arrays)}


def download_cost(num_models: int, model: str, image_shape: tuple[int, int, int], repeat: int,
                  folder: Path) -> dict[str, dict[str, float]]:
    """Milliseconds per sampled client of each step of an M-candidate download, both ways.

    Parameters
    ----------
    num_models : int
        M.
    model : str
        ``model`` setting (:func:`fedfomo.models.build_model`).
    image_shape : tuple of int
        Input shape (C, H, W).
    repeat : int
        Timed calls per step.
    folder : Path
        A scratch run folder for the blobs.

    Returns
    -------
    dict
        ``{"message": {step: ms}, "shared": {step: ms}}``, each with a ``total``.

    """
    base = get_weights(build_model(model, image_shape, 10, 0))
    models = [[(w + k).astype(w.dtype) for w in base] for k in range(num_models)]
    ids, rounds = list(range(num_models)), [1] * num_models
    for cid, m in zip(ids, models):
        write_blob(folder, store_key(cid, 1), m)
    plain = {"server_round": 2, "candidate_ids": encode_ids(ids), "run_dir": str(folder)}
    shared = {**plain, "candidate_rounds": encode_ids(rounds)}
    steps = {"message": message_steps(models, plain, len(base)),
             "shared": {**message_steps([], shared, len(base)),
                        "read blobs (client)": lambda: shared_candidates(str(folder), ids, rounds)}}
    out = {}
    for mode, named in steps.items():
        out[mode] = {name: median_ms(step, repeat) for name, step in named.items()}
        out[mode]["total"] = sum(out[mode].values())
    return out


def persist_cost(model: str, image_shape: tuple[int, int, int], repeat: int, folder: Path, fsync: str,
                 clients: int = 10) -> dict[str, float]:
    """Milliseconds of the model-sized writes each sampled client costs per round, in steady state.

    Emulates ``repeat`` rounds in which the same ``clients`` clients train (full participation),
    with the real code: each saves its state file (:func:`fedfomo.checkpoint.save_client`, told
    the server checkpointed the round before, so its oldest file is overwritten), the server
    writes the blob of its upload (:func:`fedfomo.checkpoint.write_blob`) and drops the one of the
    round before into the spare folder (as :func:`fedfomo.checkpoint.save_server` does after its
    pointer); with ``fsync="round"`` the round ends with the server's one ``os.sync()``.

    Parameters
    ----------
    model : str
        ``model`` setting (:func:`fedfomo.models.build_model`).
    image_shape : tuple of int
        Input shape (C, H, W).
    repeat : int
        Timed rounds (after two untimed ones that fill the folders).
    folder : Path
        A scratch run folder.
    fsync : str
        ``file`` or ``round`` (``sim.fsync``).
    clients : int
        Sampled clients per round.

    Returns
    -------
    dict
        ``{"client state file": ms, "server blob": ms, "os.sync per round": ms}``, each per sampled client
        (median over the rounds).

    """
    from flwr.app import ArrayRecord, RecordDict

    from fedfomo.checkpoint import _drop_blob, blob_path, save_client

    folder = Path(tempfile.mkdtemp(dir=folder))
    durable = fsync == "file"
    weights = get_weights(build_model(model, image_shape, 10, 0))
    state = RecordDict({"baseline": ArrayRecord([np.ascontiguousarray(w) for w in weights])})
    times: dict[str, list[float]] = {"client state file": [], "server blob": [], "os.sync per round": []}
    for rnd in range(1, repeat + 3):
        spent = dict.fromkeys(times, 0.0)
        for cid in range(clients):
            t0 = time.perf_counter()
            save_client(folder, cid, rnd, state, checkpointed=rnd - 1, durable=durable)
            t1 = time.perf_counter()
            write_blob(folder, store_key(cid, rnd), weights, durable=durable)
            spent["client state file"] += t1 - t0
            spent["server blob"] += time.perf_counter() - t1
        t0 = time.perf_counter()
        if not durable:
            os.sync()
        spent["os.sync per round"] = time.perf_counter() - t0
        for cid in range(clients):
            if rnd > 1:
                _drop_blob(blob_path(folder, store_key(cid, rnd - 1)))
        if rnd > 2:
            for key, value in spent.items():
                times[key].append(value / clients)
    return {key: 1000 * statistics.median(values) for key, values in times.items()}


def main() -> None:
    """Both ways for every M asked for; one line per step."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-models", type=int, nargs="+", default=[5, 10])
    p.add_argument("--model", default="cnn_mcmahan")
    p.add_argument("--image-shape", type=int, nargs=3, default=[1, 28, 28], metavar=("C", "H", "W"))
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--fsync", nargs="+", default=["file", "round"], choices=["file", "round"],
                   help="sim.fsync modes whose writes to time")
    args = p.parse_args()
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1  # a Message needs them outside Flower
    with tempfile.TemporaryDirectory(prefix="fedfomo-download-") as tmp:
        for m in args.num_models:
            cost = download_cost(m, args.model, tuple(args.image_shape), args.repeat, Path(tmp))
            for mode, steps in cost.items():
                parts = " | ".join(f"{k} {v:.1f}" for k, v in steps.items() if k != "total")
                print(f"M={m} {mode:7s}: {steps['total']:6.1f} ms per sampled client ({parts})", flush=True)
        for fsync in args.fsync:
            writes = persist_cost(args.model, tuple(args.image_shape), args.repeat, Path(tmp), fsync)
            print(f"writes, any M, sim.fsync={fsync}: {sum(writes.values()):6.1f} ms per sampled client ("
                  + " | ".join(f"{k} {v:.1f}" for k, v in writes.items()) + ")", flush=True)


if __name__ == "__main__":
    main()
