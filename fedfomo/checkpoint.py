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

Cost of the model-sized files (``sim.fsync``): a file no checkpoint needs any more is not
deleted but overwritten by the next one (a client's oldest state file by its next; a dropped blob
is moved to ``checkpoint/blobs/.spare/`` for the next upload): on this machine's ext4 a new
6.6 MB file costs 15-35 ms, an overwritten one ~1 ms (+7 ms with fsync). With ``durable=False``
(``sim.fsync=round``, the default in a simulation) they are not fsync'd one by one: the server
calls ``os.sync()`` once per round before it writes ``latest.json``, so the checkpoint a
pointer names is on disk whenever the pointer is, as with one fsync per file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedfomo.runs import atomic_save_arrays, atomic_save_npz, atomic_write_text, load_arrays

FOLDER = "checkpoint"
SPARE = ".spare"  # checkpoint/blobs/.spare/: dropped blobs, overwritten by the next ones written
MAX_SPARE = 1024  # dropped blobs kept for reuse at most (beyond: deleted)
_ROUND_FILE = re.compile(r"round_(\d{4,})\.(npys|npz)$")


def pack(prefix: str, weights: list[np.ndarray]) -> dict[str, np.ndarray]:
    """A list of arrays as ``{prefix/0: ..., prefix/1: ...}``."""
    return {f"{prefix}/{i}": np.asarray(w) for i, w in enumerate(weights)}


def unpack(arrays: dict[str, np.ndarray], prefix: str, copy: bool = True) -> list[np.ndarray]:
    """Inverse of :func:`pack`; ``copy=False`` returns the arrays themselves (``arrays`` is thrown away)."""
    n = sum(1 for k in arrays if k.startswith(prefix + "/") and k[len(prefix) + 1:].isdigit())
    return [np.array(arrays[f"{prefix}/{i}"], copy=copy) for i in range(n)]


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


def write_blob(run_dir: str | Path, key: str, weights: list[np.ndarray], *, durable: bool = True) -> Path:
    """Write blob ``key`` once: an existing file is kept (a blob's content never changes under its name).

    A dropped blob from ``checkpoint/blobs/.spare/`` is overwritten where there is one (cheaper
    than a new file, see the module's docstring).

    Parameters
    ----------
    run_dir : str or Path
        The run folder.
    key : str
        The blob's name, naming its content version.
    weights : list of np.ndarray
        Its arrays, saved as ``w/0``, ``w/1``, ... (:func:`fedfomo.runs.atomic_save_arrays`).
    durable : bool
        fsync it (default); False: the caller syncs before the checkpoint names it.

    Returns
    -------
    Path
        The blob's file.

    """
    path = blob_path(run_dir, key)
    if not path.exists():
        atomic_save_arrays(path, pack("w", weights), durable=durable, reuse=_spare(path.parent / SPARE))
    return path


def put_blob(run_dir: str | Path, key: str, weights: list[np.ndarray], *, durable: bool = True) -> Path:
    """Write blob ``key`` whether it exists or not (a simulated client leaving its upload, ``upload_to``).

    Replaces a file left by an attempt that was killed before the server checkpointed the round
    (the rerun writes the same bits; readers see the old file or the new one, never half).
    Same parameters and return as :func:`write_blob`.
    """
    path = Path(run_dir) / FOLDER / "blobs" / f"{key}.npys"
    atomic_save_arrays(path, pack("w", weights), durable=durable, reuse=_spare(path.parent / SPARE))
    return path


def _spare(folder: Path) -> Path | None:
    """Any file in ``folder`` (None when it is empty or missing)."""
    try:
        with os.scandir(folder) as entries:
            return next((Path(e.path) for e in entries if e.is_file()), None)
    except OSError:
        return None


def _drop_blob(path: Path) -> None:
    """Move a blob no checkpoint names into the spare folder (or delete it when that holds enough)."""
    spare = path.parent / SPARE
    spare.mkdir(exist_ok=True)
    try:
        if sum(1 for _ in os.scandir(spare)) < MAX_SPARE:
            os.replace(path, spare / path.name)
            return
    except OSError:
        pass
    path.unlink(missing_ok=True)


def _drop_unnamed_blobs(folder: Path, named: set[str]) -> None:
    """Drop every blob in ``folder/blobs`` whose name is not in ``named`` (:func:`_drop_blob`)."""
    if (folder / "blobs").is_dir():
        for old in (folder / "blobs").glob("*.np[yz]*"):
            if old.stem not in named:
                _drop_blob(old)


def discard_spares(run_dir: str | Path) -> None:
    """Delete the spare files of a run whose checkpoints will not be written any more."""
    spare = Path(run_dir) / FOLDER / "blobs" / SPARE
    if spare.is_dir():
        for p in spare.iterdir():
            p.unlink(missing_ok=True)
        spare.rmdir()


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
    return unpack(_load(Path(path)), "w", copy=False)


class ModelStore(MutableMapping[int, list[np.ndarray]]):
    """Models by client id, each kept in memory or as the path of a blob, read whenever it is asked for.

    FedFomo's server keeps every client's latest upload. In a simulation the clients leave their
    uploads in the run folder (``sim.shared_store``), where the checkpoint keeps them anyway, so
    the server only notes where each is (:meth:`set_path`) and its memory does not grow with
    population x model size; a model is read from its blob (page cache, ~1 ms for 6.6 MB) only
    when the server itself needs its weights (extra candidates, a deployment's download).
    Iteration order is insertion order, as a dict's.
    """

    def __init__(self) -> None:
        self._items: dict[int, list[np.ndarray] | Path] = {}

    def __getitem__(self, cid: int) -> list[np.ndarray]:
        item = self._items[cid]
        return read_blob(item) if isinstance(item, Path) else item

    def __setitem__(self, cid: int, weights: list[np.ndarray]) -> None:
        self._items[cid] = weights

    def set_path(self, cid: int, path: str | Path) -> None:
        """Keep client ``cid``'s model as the blob at ``path`` (written by :func:`write_blob` or :func:`put_blob`)."""
        self._items[cid] = Path(path)

    def in_memory(self, cid: int) -> bool:
        """Whether ``cid``'s model is held in memory (not only as a blob's path)."""
        return not isinstance(self._items[cid], Path)

    def __delitem__(self, cid: int) -> None:
        del self._items[cid]

    def __iter__(self) -> Iterator[int]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


# -- server ---------------------------------------------------------------------------------------
def save_server(run_dir: str | Path, server_round: int, arrays: dict[str, np.ndarray], meta: dict,
                blobs: Mapping[str, list[np.ndarray]] | None = None, *, durable: bool = True) -> None:
    """Write the server's checkpoint after ``server_round`` (blobs, arrays, JSON, then the pointer).

    ``blobs`` are large, immutable pieces of state named by content version (e.g. FedFomo's
    ``store_17_r0005``: client 17's upload of round 5): each is written once, to
    ``checkpoint/blobs/NAME.npys``, and kept while a checkpoint names it, so a round costs only
    what changed in it, whatever the population. ``durable=False`` (``sim.fsync=round``): nothing
    is fsync'd one by one; one ``os.sync()`` before the pointer makes everything written so far
    durable (the clients' state files of this round too, on this machine), then the pointer is
    written and fsync'd.
    """
    folder = Path(run_dir) / FOLDER
    blobs = blobs or {}
    for key in blobs:
        if not blob_path(run_dir, key).exists():  # a value is only read (maybe from disk) when missing
            write_blob(run_dir, key, blobs[key], durable=durable)
    name = f"server_round_{server_round:04d}"
    atomic_save_npz(folder / f"{name}.npz", arrays, durable=durable)
    atomic_write_text(folder / f"{name}.json", json.dumps({"round": server_round, "meta": meta,
                                                           "blobs": sorted(blobs)}), durable=durable)
    if not durable:
        os.sync()
    atomic_write_text(folder / "latest.json", json.dumps({"round": server_round, "name": name}))
    for old in folder.glob("server_round_*"):
        if not old.name.startswith(name):
            old.unlink(missing_ok=True)
    _drop_unnamed_blobs(folder, set(blobs))


def load_server(run_dir: str | Path, *, read_blobs: bool = True) -> tuple[int, dict[str, np.ndarray], dict] | None:
    """``(round, arrays, meta)`` of the latest server checkpoint, or None when there is none.

    Its blobs are in ``arrays`` too, blob ``NAME``'s weights under ``blob/NAME/0``, ``blob/NAME/1``, ...;
    with ``read_blobs=False`` they are not read (the caller finds them with :func:`blob_path`).
    Blobs it does not name (written after it by the attempt that stopped) are dropped: with
    ``sim.fsync=round`` a crash of the machine may have left one renamed into place but not
    written, and :func:`write_blob` keeps an existing file.
    """
    folder = Path(run_dir) / FOLDER
    try:
        latest = json.loads((folder / "latest.json").read_text())
    except (OSError, ValueError):
        return None
    with np.load(folder / f"{latest['name']}.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    saved = json.loads((folder / f"{latest['name']}.json").read_text())
    named = set(saved.get("blobs", []))
    for key in sorted(named) if read_blobs else ():
        arrays.update(pack(f"blob/{key}", read_blob(blob_path(run_dir, key))))
    _drop_unnamed_blobs(folder, named)  # left by the attempt that stopped: never trusted, written again
    return int(latest["round"]), arrays, saved["meta"]


# -- clients --------------------------------------------------------------------------------------
def state_to_files(state: RecordDict, raw: bool = False) -> tuple[dict[str, np.ndarray | bytes], dict]:
    """A client's Flower state as (arrays, JSON): ArrayRecords become arrays, ConfigRecords JSON.

    ``raw=True`` gives each array as the ``.npy`` record Flower already holds it in (``Array.data``,
    what ``np.save`` wrote), for :func:`fedfomo.runs.atomic_save_arrays` to write as is: no
    decoding and encoding again (~4 ms of a 6.6 MB model).
    """
    arrays: dict[str, np.ndarray | bytes] = {}
    configs: dict[str, dict] = {}
    for key, record in state.items():
        if isinstance(record, ArrayRecord):
            if raw:
                arrays.update({f"array/{key}/{i}": a.data if a.stype == "numpy.ndarray" else a.numpy()
                               for i, a in enumerate(record.values())})
            else:
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


def save_client(run_dir: str | Path, cid: int, server_round: int, state: RecordDict, checkpointed: int,
                *, durable: bool = True) -> None:
    """Save client ``cid``'s state after ``server_round``; drop files no resume can need.

    ``checkpointed`` is the last round the server has checkpointed (the round before this one):
    the newest file at or before it is kept, older ones are removed (the first of them is
    overwritten by this round's file instead). ``durable=False`` (``sim.fsync=round``): no fsync,
    the server's ``os.sync()`` before its next pointer makes the file durable.
    """
    folder = client_folder(run_dir, cid)
    arrays, meta = state_to_files(state, raw=True)
    name = f"round_{server_round:04d}"
    rounds = _rounds(folder)
    keep_from = max([r for r in rounds if r <= checkpointed], default=0)
    stale = [r for r in rounds if r < keep_from]

    def reusable(suffix: str) -> Path | None:
        return next((p for r in stale if (p := folder / f"round_{r:04d}{suffix}").exists()), None)

    atomic_write_text(folder / f"{name}.json", json.dumps(meta), durable=durable, reuse=reusable(".json"))
    # the arrays' file marks the pair complete
    atomic_save_arrays(folder / f"{name}.npys", arrays, durable=durable, reuse=reusable(".npys"))
    for r in stale:
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
