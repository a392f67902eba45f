"""Figures of a finished run, from its saved files only (matplotlib, Agg backend).

``python -m fedfomo.plots RUN_DIR [--rounds 1 5 20] [--client 0 12] [--out DIR] [--show-diagonal]`` writes, into
``DIR`` (default ``RUN_DIR/figures``):

- ``affinity.png``: FedFomo's affinity matrix P after the chosen rounds (paper Fig. 2), from
  ``affinity/round_NNN.npy``; default rounds: first, middle and last saved; the diagonal is
  hidden unless ``--show-diagonal``;
- ``weights_client_XX.png``: client XX's raw weights w_(XX,n) to every other client n over
  rounds (paper Fig. 4 bottom, 6, 7), from ``clients.csv`` (``candidate_ids``, ``weights``),
  one series per other client, coloured by that client's local data distribution;
- ``time_split.png``: the per-round time split from ``rounds.csv`` (stacked bars).

Clients are ordered and coloured by their true distribution read from ``partition.json``:
the latent split's ``cluster`` (the cluster of the client's training data) when present,
otherwise the set of classes in the client's local (train + val) data, e.g. the class pair of
the pathological split. The partition is never recomputed.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fedfomo.messages import decode_floats, decode_ids

TIME_COLUMNS = ("eval_candidates_s", "merge_s", "train_s", "test_s", "comm_overhead_s")
TIME_LABELS = ("evaluate candidates", "merge", "local training", "test", "communication / overhead")


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def load_partition(run_dir: str | Path) -> dict:
    """``partition.json`` of a run."""
    return json.loads((Path(run_dir) / "partition.json").read_text())


def client_groups(partition: dict) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Order clients by their true distribution.

    Parameters
    ----------
    partition : dict
        Content of ``partition.json`` (``clients``: per-client ``cid``, ``train``, ``val`` label
        counts and, for the latent split, ``cluster``).

    Returns
    -------
    (np.ndarray, np.ndarray, list of str)
        ``order``: client ids sorted by group (then id); ``group``: group index of every client
        (indexed by cid); ``names``: a label per group (``dist 2`` or ``classes 3,7``).

    """
    clients = sorted(partition["clients"], key=lambda c: int(c["cid"]))
    cids = [int(c["cid"]) for c in clients]
    if cids != list(range(len(cids))):
        raise ValueError(f"partition.json: client ids must be 0..{len(cids) - 1}")
    if clients and all(c.get("cluster") is not None for c in clients):
        keys: list = [int(c["cluster"]) for c in clients]
        uniq = sorted(set(keys))
        names = [f"dist {k}" for k in uniq]
    else:
        keys = [tuple(int(k) for k in np.flatnonzero(np.add(c["train"], c["val"]))) for c in clients]
        uniq = sorted(set(keys))
        names = ["classes " + ",".join(map(str, k)) if len(k) <= 4 else f"{len(k)} classes" for k in uniq]
    group = np.array([uniq.index(k) for k in keys], dtype=np.int64)
    order = np.lexsort((np.arange(len(group)), group))
    return order, group, names


def target_groups(partition: dict) -> dict[int, int] | None:
    """``cid -> target_cluster`` (latent split), or None when the partition has none."""
    clients = partition["clients"]
    if not clients or any(c.get("target_cluster") is None for c in clients):
        return None
    return {int(c["cid"]): int(c["target_cluster"]) for c in clients}


def affinity_rounds(run_dir: str | Path) -> list[int]:
    """Rounds whose P is saved under ``affinity/``."""
    folder = Path(run_dir) / "affinity"
    return sorted(int(p.stem.split("_")[1]) for p in folder.glob("round_*.npy")) if folder.is_dir() else []


def default_rounds(available: Sequence[int]) -> list[int]:
    """First, middle and last of the available rounds (without repeats)."""
    if not available:
        return []
    picks = [available[0], available[(len(available) - 1) // 2], available[-1]]
    return sorted(set(picks))


def _boundaries(ax, group_sorted: np.ndarray) -> None:
    for k in np.flatnonzero(np.diff(group_sorted)) + 1:
        ax.axhline(k - 0.5, color="red", linewidth=1.2)
        ax.axvline(k - 0.5, color="red", linewidth=1.2)


def plot_affinity(run_dir: str | Path, rounds: Sequence[int], out_path: str | Path,
                  show_diagonal: bool = False) -> Path:
    """Heatmaps of P after ``rounds``, clients ordered by distribution, boundaries in red.

    Parameters
    ----------
    run_dir : str or Path
        Run directory with ``affinity/round_NNN.npy`` and ``partition.json``.
    rounds : sequence of int
        Rounds to show (each must be saved).
    out_path : str or Path
        PNG to write.
    show_diagonal : bool
        Colour the diagonal too; by default it is hidden (grey), since p_(i,i) (1 plus the
        client's weights to its own model) dwarfs the off-diagonal entries.

    Returns
    -------
    Path
        ``out_path``.

    """
    import matplotlib as mpl

    run_dir = Path(run_dir)
    available = affinity_rounds(run_dir)
    missing = [r for r in rounds if r not in available]
    if not rounds or missing:
        raise ValueError(f"rounds {list(missing or rounds)} have no saved P in {run_dir / 'affinity'}; "
                         f"available: {available or 'none (not a FedFomo run?)'}")
    order, group, names = client_groups(load_partition(run_dir))
    fig = _new_figure(4.6 * len(rounds) + 0.6, 4.6)
    axes = fig.subplots(1, len(rounds), squeeze=False)[0]
    ticks = np.arange(len(order))
    for ax, r in zip(axes, rounds, strict=True):
        p = np.load(run_dir / "affinity" / f"round_{r:03d}.npy")
        if p.shape != (len(order), len(order)):
            raise ValueError(f"P of round {r} has shape {p.shape}; partition.json has {len(order)} clients")
        shown = p[np.ix_(order, order)].astype(np.float64)
        if not show_diagonal:
            np.fill_diagonal(shown, np.nan)
        cmap = mpl.colormaps["viridis"].with_extremes(bad="lightgrey")
        im = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, interpolation="nearest")
        _boundaries(ax, group[order])
        ax.set_xticks(ticks, [str(c) for c in order], fontsize=7)
        ax.set_yticks(ticks, [str(c) for c in order], fontsize=7)
        ax.set_xlabel("client n (other client)")
        ax.set_ylabel("client i (row of P)")
        ax.set_title(f"P after round {r}")
        fig.colorbar(im, ax=ax, shrink=0.8, label="p_(i,n)")
    kind = "latent distribution" if names and names[0].startswith("dist") else "local classes"
    diag = "" if show_diagonal else "; diagonal hidden"
    fig.suptitle(f"Affinity matrix P, clients grouped by {kind} ({len(names)} groups; lighter = higher{diag})")
    return _save(fig, Path(out_path))


def client_weight_series(run_dir: str | Path, client: int) -> dict[int, tuple[list[int], list[float]]]:
    """Client ``client``'s raw weights to each other client: ``n -> (rounds, weights)`` from clients.csv.

    Server-made averages (negative ids, ``method.extra_candidates``) are left out.
    """
    series: dict[int, tuple[list[int], list[float]]] = {}
    with (Path(run_dir) / "clients.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            if int(row["cid"]) != client:
                continue
            ids = decode_ids(row.get("candidate_ids") or "")
            weights = decode_floats(row.get("weights") or "")
            if len(ids) != len(weights):
                raise ValueError(f"clients.csv round {row['round']} client {client}: "
                                 f"{len(ids)} candidate ids but {len(weights)} weights")
            for n, w in zip(ids, weights, strict=True):
                if n != client and n >= 0:
                    rs, ws = series.setdefault(int(n), ([], []))
                    rs.append(int(row["round"]))
                    ws.append(float(w))
    return dict(sorted(series.items()))


def plot_client_weights(run_dir: str | Path, client: int, out_path: str | Path) -> Path:
    """One client's raw weights to every other client over rounds, coloured by their distribution.

    Parameters
    ----------
    run_dir : str or Path
        Run directory with ``clients.csv`` and ``partition.json``.
    client : int
        The client whose weights are shown.
    out_path : str or Path
        PNG to write.

    Returns
    -------
    Path
        ``out_path``.

    """
    import matplotlib as mpl

    partition = load_partition(run_dir)
    _, group, names = client_groups(partition)
    if not 0 <= client < len(group):
        raise ValueError(f"client {client} does not exist; allowed: 0..{len(group) - 1}")
    series = client_weight_series(run_dir, client)
    if not series:
        raise ValueError(f"clients.csv has no FedFomo weights of client {client} (not a FedFomo run, or "
                         f"it never evaluated other clients)")
    cmap = mpl.colormaps["tab10" if len(names) <= 10 else "tab20"]
    color = Normalize(0, max(1, cmap.N - 1))
    fig = _new_figure(8.5, 4.8)
    ax = fig.subplots()
    markers = "os^Dv<>phX*"
    seen: dict[int, int] = {}
    for n, (rs, ws) in series.items():
        g = int(group[n])
        k = seen.get(g, 0)
        seen[g] = k + 1
        ax.plot(rs, ws, marker=markers[k % len(markers)], markersize=4, linewidth=1.0,
                color=cmap(color(g % cmap.N)), label=f"client {n} ({names[g]})")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel(f"raw weight w_({client},n)")
    ax.grid(True, alpha=0.3)
    targets = target_groups(partition)
    own = names[int(group[client])]
    target = ""
    if targets is not None and targets[client] != partition_cluster(partition, client):
        target = f", val/test from dist {targets[client]}"
    ax.set_title(f"Client {client} ({own}{target}): weights given to other clients")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, title="other client (local data)")
    return _save(fig, Path(out_path))


def partition_cluster(partition: dict, client: int) -> int | None:
    """The latent cluster of a client's training data, or None outside the latent split."""
    for c in partition["clients"]:
        if int(c["cid"]) == client:
            return None if c.get("cluster") is None else int(c["cluster"])
    return None


def read_rounds(run_dir: str | Path) -> list[dict]:
    """Rows of ``rounds.csv``."""
    with (Path(run_dir) / "rounds.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def plot_time_split(run_dir: str | Path, out_path: str | Path) -> Path:
    """Stacked bars of each round's time split (rounds.csv), with the round's wall time.

    The client phases (evaluating candidates, merging, training, testing) are summed over the
    round's clients; communication / overhead is wall time not covered by client work.

    Returns
    -------
    Path
        ``out_path``.

    """
    rows = read_rounds(run_dir)
    if not rows:
        raise ValueError(f"{Path(run_dir) / 'rounds.csv'} has no rounds")
    rounds = np.array([int(r["round"]) for r in rows])
    fig = _new_figure(max(6.0, 0.35 * len(rounds) + 3), 4.2)
    ax = fig.subplots()
    bottom = np.zeros(len(rows))
    for col, label in zip(TIME_COLUMNS, TIME_LABELS, strict=True):
        vals = np.array([float(r.get(col) or 0.0) for r in rows])
        ax.bar(rounds, vals, bottom=bottom, label=label, width=0.8)
        bottom += vals
    if all(r.get("wall_s") for r in rows):
        ax.plot(rounds, [float(r["wall_s"]) for r in rows], "k.--", linewidth=0.8, label="round wall time")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("seconds (client phases summed over clients)")
    ax.set_title("Time per round by phase")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, Path(out_path))


def plot_run(run_dir: str | Path, rounds: Sequence[int] | None = None, clients: Sequence[int] = (0,),
             out_dir: str | Path | None = None, show_diagonal: bool = False) -> tuple[list[Path], list[str]]:
    """Every figure of a run; returns the PNGs written and a note per figure skipped."""
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "figures"
    written, skipped = [], []
    jobs = [("affinity", lambda: plot_affinity(run_dir, list(rounds or default_rounds(affinity_rounds(run_dir))),
                                               out / "affinity.png", show_diagonal))]
    jobs += [(f"weights of client {c}",
              lambda c=c: plot_client_weights(run_dir, c, out / f"weights_client_{c:02d}.png")) for c in clients]
    jobs.append(("time split", lambda: plot_time_split(run_dir, out / "time_split.png")))
    for name, job in jobs:
        try:
            written.append(job())
        except (ValueError, FileNotFoundError) as err:
            skipped.append(f"{name}: {err}")
    return written, skipped


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fedfomo.plots RUN_DIR [--rounds ...] [--client ...] [--out DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m fedfomo.plots", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run directory (with partition.json, rounds.csv, ...)")
    parser.add_argument("--rounds", type=int, nargs="+", help="rounds of the P heatmaps (default: first, middle, last)")
    parser.add_argument("--client", type=int, nargs="+", default=[0], help="clients whose weights to plot (default 0)")
    parser.add_argument("--out", type=Path, help="output folder (default RUN_DIR/figures)")
    parser.add_argument("--show-diagonal", action="store_true", help="colour P's diagonal too (hidden by default)")
    args = parser.parse_args(argv)
    if not (args.run_dir / "partition.json").exists():
        print(f"error: {args.run_dir} is not a run directory (no partition.json)", file=sys.stderr)
        return 2
    written, skipped = plot_run(args.run_dir, args.rounds, args.client, args.out, args.show_diagonal)
    for p in written:
        print(p)
    for s in skipped:
        print(f"skipped {s}", file=sys.stderr)
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
