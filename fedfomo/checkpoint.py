"""Checkpoints of a run, written after every round, loaded by ``resume=RUN_DIR``; no pickle anywhere.

Server side (``checkpoint/server.npz`` + ``checkpoint/server.json``, named by
``checkpoint/latest.json``): the strategy's state (:meth:`~fedfomo.strategy.PersonalizedStrategy.checkpoint_state`:
model store, P, clusters, hypernetwork and its optimizer, ...) and the round. Everything random in
a round is drawn from generators seeded by (seed, round[, client]), so the round number is the
whole RNG state; the learning rate is a function of the round too. The result files
(``rounds.csv``, ``clients.csv``, ``clusters.json``) are cut back to that round on resume.

Client side (``checkpoint/clients/CID/round_NNNN.npys`` + ``.json``): the client's Flower state
(:class:`flwr.app.RecordDict`: FedFomo's baseline, kept layers, pFedMe's personal model, the
DP accountant's history, ...) after each round it trained in. A client keeps its newest file
from a round the server has checkpointed and anything newer, so that whatever instant a kill
comes, the state that matches the server's checkpoint is on disk.

Arrays are ``.npz`` (the server's, once per round) or ``.npys`` (what is written per client and
round: :func:`fedfomo.runs.atomic_save_arrays`, ~6x cheaper to write), everything else JSON; no
pickle. Checkpoints of older versions (``.npz`` throughout) still load.

Blobs (``checkpoint/blobs/NAME.npys``) double as the simulation's shared store
(``sim.shared_store``): a simulated client reads the candidates it is told about straight from
them (:func:`read_blob`) instead of receiving them in its message.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedfomo.runs import atomic_save_arrays, atomic_save_npz, atomic_write_text, load_arrays

FOLDER = "checkpoint"
_ROUND_FILE = re.compile(r"round_(\d{4,})\.(npys|npz)$")


def pack(prefix: str, weights: list[np.ndarray]) -> dict[str, np.ndarray]:
    """A list of arrays as ``{prefix/0: ..., prefix/1: ...}``."""
    return {f"{prefix}/{i}": np.asarray(w) for i, w in enumerate(weights)}


def unpack(arrays: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    """Inverse of :func:`pack`."""
    n = sum(1 for k in arrays if k.startswith(prefix + "/") and k[len(prefix) + 1:].isdigit())
    return [np.array(arrays[f"{prefix}/{i}"]) for i in range(n)]


# -- blobs ----------------------------------------------------------------------------------------
def blob_path(run_dir: str | Path, key: str) -> Path:
    """Where blob ``key`` of the run in ``run_dir`` is kept.

    Parameters
    ----------
    run_dir : str or Path
        The run folder.
    key : str
        The blob's name (e.g. ``store_17_r0005``).

    Returns
    -------
    Path
        ``run_dir/checkpoint/blobs/KEY.npys``; ``KEY.npz`` where only that exists (a run
        checkpointed by a version before 2026-11-26).

    """
    path = Path(run_dir) / FOLDER / "blobs" / f"{key}.npys"
    legacy = path.with_suffix(".npz")
    return legacy if not path.exists() and legacy.exists() else path


def write_blob(run_dir: str | Path, key: str, weights: list[np.ndarray]) -> Path:
    """Write blob ``key`` once: an existing file is kept (a blob's content never changes under its name).

    Parameters
    ----------
    run_dir : str or Path
        The run folder.
    key : str
        The blob's name, naming its content version.
    weights : list of np.ndarray
        Its arrays, saved as ``w/0``, ``w/1``, ... (:func:`fedfomo.runs.atomic_save_arrays`).

    Returns
    -------
    Path
        The blob's file.

    """
    path = blob_path(run_dir, key)
    if not path.exists():
        atomic_save_arrays(path, pack("w", weights))
    return path


def _load(path: Path) -> dict[str, np.ndarray]:
    """The named arrays of a ``.npys`` file, or of a ``.npz`` one (checkpoints of older versions)."""
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    return load_arrays(path)


def read_blob(path: str | Path) -> list[np.ndarray]:
    """The arrays ``w/0``, ``w/1``, ... of a blob written by :func:`write_blob`.

    Each array is read from the file straight into its own memory (the file is usually in the page
    cache): about 1 ms for a 6.6 MB model here. A ``.npz`` blob of an older version is read too.

    Parameters
    ----------
    path : str or Path
        The blob's file (:func:`blob_path`).

    Returns
    -------
    list of np.ndarray
        The blob's arrays, equal bit for bit to those saved.

    """
    return unpack(_load(Path(path)), "w")


# -- server ---------------------------------------------------------------------------------------
def save_server(run_dir: str | Path, server_round: int, arrays: dict[str, np.ndarray], meta: dict,
                blobs: dict[str, list[np.ndarray]] | None = None) -> None:
    """Write the server's checkpoint after ``server_round`` (blobs, arrays, JSON, then the pointer).

    ``blobs`` are large, immutable pieces of state named by content version (e.g. FedFomo's
    ``store_17_r0005``: client 17's upload of round 5): each is written once, to
    ``checkpoint/blobs/NAME.npz``, and kept while a checkpoint names it, so a round costs only
    what changed in it, whatever the population.
    """
    folder = Path(run_dir) / FOLDER
    blobs = blobs or {}
    for key, weights in blobs.items():
        write_blob(run_dir, key, weights)
    name = f"server_round_{server_round:04d}"
    atomic_save_npz(folder / f"{name}.npz", arrays)
    atomic_write_text(folder / f"{name}.json", json.dumps({"round": server_round, "meta": meta,
                                                           "blobs": sorted(blobs)}))
    atomic_write_text(folder / "latest.json", json.dumps({"round": server_round, "name": name}))
    for old in folder.glob("server_round_*"):
        if not old.name.startswith(name):
            old.unlink(missing_ok=True)
    if (folder / "blobs").is_dir():
        for old in (folder / "blobs").glob("*.np[yz]*"):
            if old.stem not in blobs:
                old.unlink(missing_ok=True)


def load_server(run_dir: str | Path) -> tuple[int, dict[str, np.ndarray], dict] | None:
    """``(round, arrays, meta)`` of the latest server checkpoint, or None when there is none.

    Its blobs are in ``arrays`` too, blob ``NAME``'s weights under ``blob/NAME/0``, ``blob/NAME/1``, ...
    """
    folder = Path(run_dir) / FOLDER
    try:
        latest = json.loads((folder / "latest.json").read_text())
    except (OSError, ValueError):
        return None
    with np.load(folder / f"{latest['name']}.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    saved = json.loads((folder / f"{latest['name']}.json").read_text())
    for key in saved.get("blobs", []):
        arrays.update(pack(f"blob/{key}", read_blob(blob_path(run_dir, key))))
    return int(latest["round"]), arrays, saved["meta"]


# -- clients --------------------------------------------------------------------------------------
def state_to_files(state: RecordDict) -> tuple[dict[str, np.ndarray], dict]:
    """A client's Flower state as (arrays, JSON): ArrayRecords become arrays, ConfigRecords JSON."""
    arrays: dict[str, np.ndarray] = {}
    configs: dict[str, dict] = {}
    for key, record in state.items():
        if isinstance(record, ArrayRecord):
            arrays.update(pack(f"array/{key}", record.to_numpy_ndarrays()))
        elif isinstance(record, ConfigRecord):
            configs[key] = {k: (list(v) if isinstance(v, list) else v) for k, v in record.items()}
    return arrays, {"arrays": sorted(k for k, r in state.items() if isinstance(r, ArrayRecord)), "configs": configs}


def files_to_state(arrays: dict[str, np.ndarray], meta: dict, state: RecordDict) -> None:
    """Replace the content of ``state`` by what :func:`state_to_files` saved."""
    for key in list(state.keys()):
        del state[key]
    for key in meta["arrays"]:
        state[key] = ArrayRecord([np.ascontiguousarray(a) for a in unpack(arrays, f"array/{key}")])
    for key, values in meta["configs"].items():
        state[key] = ConfigRecord(values)


def client_folder(run_dir: str | Path, cid: int) -> Path:
    """Where client ``cid`` keeps its state files."""
    return Path(run_dir) / FOLDER / "clients" / f"{cid:05d}"


def _rounds(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _ROUND_FILE.match(p.name)))


def save_client(run_dir: str | Path, cid: int, server_round: int, state: RecordDict, checkpointed: int) -> None:
    """Save client ``cid``'s state after ``server_round``; drop files no resume can need.

    ``checkpointed`` is the last round the server has checkpointed (the round before this one):
    the newest file at or before it is kept, older ones are removed.
    """
    folder = client_folder(run_dir, cid)
    arrays, meta = state_to_files(state)
    name = f"round_{server_round:04d}"
    atomic_write_text(folder / f"{name}.json", json.dumps(meta))
    atomic_save_arrays(folder / f"{name}.npys", arrays)  # the arrays' file marks the pair complete
    rounds = _rounds(folder)
    keep_from = max([r for r in rounds if r <= checkpointed], default=0)
    for r in rounds:
        if r < keep_from:
            for suffix in (".npys", ".npz", ".json"):
                (folder / f"round_{r:04d}{suffix}").unlink(missing_ok=True)


def restore_client(run_dir: str | Path, cid: int, upto: int, state: RecordDict) -> int:
    """Load client ``cid``'s newest saved state from a round <= ``upto`` into ``state``.

    Returns the round it came from (0: none, ``state`` is emptied: the client had not trained yet).
    """
    folder = client_folder(run_dir, cid)
    rounds = [r for r in _rounds(folder) if r <= upto]
    if not rounds:
        files_to_state({}, {"arrays": [], "configs": {}}, state)
        return 0
    name = f"round_{rounds[-1]:04d}"
    arrays_file = folder / f"{name}.npys"
    arrays = _load(arrays_file if arrays_file.exists() else folder / f"{name}.npz")
    files_to_state(arrays, json.loads((folder / f"{name}.json").read_text()), state)
    return rounds[-1]
