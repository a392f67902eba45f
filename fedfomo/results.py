"""Result files of a run, written as the run goes so that a crash loses nothing finished.

Files in the run directory:

- ``rounds.csv``: one row per round (accuracy mean/std over the round's clients, mean train
  loss, time split, traffic);
- ``clients.csv``: one row per (round, client) with the client's metrics, FedFomo's candidate
  ids and raw weights included;
- ``affinity/round_NNN.npy``: FedFomo's P after each round;
- ``clusters.json``: a clustering method's (CFL's) clusters after each round;
- ``summary.json``: final personalized accuracy and run facts (written at the end);
- ``config.yaml`` and ``partition.json`` are written by :mod:`fedfomo.server`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fedfomo.runs import atomic_save_npy, atomic_write_text

log = logging.getLogger("fedfomo")

ROUND_FIELDS = ("round", "num_clients", "mean_acc", "std_acc", "mean_train_loss", "eval_candidates_s",
                "merge_s", "train_s", "test_s", "comm_overhead_s", "wall_s", "download_mb", "upload_mb",
                "diverged", "failed", "failed_ids")
CLIENT_FIELDS = ("round", "cid", "test_acc", "test_loss", "train_loss", "eval_s", "merge_s", "train_s",
                 "test_s", "reverted", "candidate_ids", "weights", "dp_epsilon", "diverged", "state_save_s")


def _append_csv(path: Path, fields: tuple[str, ...], rows: list[dict]) -> None:
    """Append ``rows`` by rewriting the whole file atomically (a kill leaves the old or the new file)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    old = path.read_text() if path.exists() else ""
    if not old:
        writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, old + buf.getvalue())


def _truncate_csv(path: Path, upto: int) -> list[dict]:
    """Keep the rows of rounds <= ``upto`` (byte for byte); return them as dicts."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines(keepends=True)
    if not lines:
        return []
    kept = [line for line in lines[1:] if int(line.split(",", 1)[0]) <= upto]
    atomic_write_text(path, lines[0] + "".join(kept))
    return list(csv.DictReader(io.StringIO(lines[0] + "".join(kept))))


class RunRecorder:
    """Collects per-round metrics and writes the run's result files.

    Parameters
    ----------
    out_dir : str or Path
        The run directory.
    num_rounds : int
        Rounds planned (for the progress bar).
    workers : int
        Clients computed in parallel; used to estimate the time not spent in client work.
    progress : bool
        Show a tqdm progress bar over rounds.

    """

    def __init__(self, out_dir: str | Path, num_rounds: int, workers: int, progress: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.workers = max(1, workers)
        self.rounds: list[dict] = []
        self.final_acc: dict[int, float] = {}
        self.dp_epsilon: dict[int, float] = {}
        self.diverged = 0  # uploads rejected as non-finite, over the run
        self.failed = 0  # client failures (fit raised), over the run
        self.bar = tqdm(total=num_rounds, desc="rounds", unit="round", disable=not progress, leave=False)

    def log_round(self, server_round: int, client_metrics: list[dict], *, wall_s: float,
                  download_mb: float, upload_mb: float, failed: list[int] | tuple[int, ...] = ()) -> dict:
        """Record one round: a rounds.csv row, clients.csv rows, a log line; returns the row.

        ``client_metrics`` are the replies' metrics (a ``diverged`` flag among them); ``failed``
        the ids of clients whose fit raised (no metrics).
        """
        ms = sorted(client_metrics, key=lambda m: int(m["cid"]))
        acc = np.array([float(m["test_acc"]) for m in ms]) if ms else np.array([np.nan])
        diverged = sum(int(m.get("diverged", 0)) for m in ms)
        self.diverged += diverged
        self.failed += len(failed)
        times = {k: float(sum(float(m.get(k, 0.0)) for m in ms)) for k in ("eval_s", "merge_s", "train_s", "test_s")}
        busy = sum(times.values()) / min(self.workers, max(1, len(ms)))
        row = {
            "round": server_round,
            "num_clients": len(ms),
            "mean_acc": float(acc.mean()),
            "std_acc": float(acc.std()),
            "mean_train_loss": float(np.mean([float(m["train_loss"]) for m in ms])) if ms else float("nan"),
            "eval_candidates_s": times["eval_s"],
            "merge_s": times["merge_s"],
            "train_s": times["train_s"],
            "test_s": times["test_s"],
            "comm_overhead_s": max(0.0, wall_s - busy),
            "wall_s": wall_s,
            "download_mb": download_mb,
            "upload_mb": upload_mb,
            "diverged": diverged,
            "failed": len(failed),
            "failed_ids": " ".join(str(c) for c in sorted(failed)),
        }
        self.rounds.append(row)
        self.dp_epsilon.update({int(m["cid"]): float(m["dp_epsilon"]) for m in ms if "dp_epsilon" in m})
        _append_csv(self.out_dir / "rounds.csv", ROUND_FIELDS, [row])
        _append_csv(self.out_dir / "clients.csv", CLIENT_FIELDS, [{"round": server_round, **m} for m in ms])
        self.bar.update(1)
        extra = (f" | {diverged} diverged" if diverged else "") + (f" | {len(failed)} failed" if failed else "")
        log.info("round %3d | acc %.4f +- %.4f | train loss %.4f | %.1f s%s", server_round, row["mean_acc"],
                 row["std_acc"], row["mean_train_loss"], wall_s, extra)
        return row

    def log_matrix(self, name: str, server_round: int, matrix: np.ndarray) -> None:
        """Save a method's matrix after ``server_round`` as ``NAME/round_NNN.npy`` (e.g. MOCHA's Omega)."""
        atomic_save_npy(self.out_dir / name / f"round_{server_round:03d}.npy", matrix)

    def resume(self, upto: int) -> None:
        """Continue a run whose rounds 1..``upto`` are done: cut the result files back to them.

        ``upto`` is 0 or -1 when nothing is done (-1: a warm-up round 0 was planned and its rows go too).
        """
        kept = _truncate_csv(self.out_dir / "rounds.csv", upto)
        self.rounds = [{k: (float(v) if k not in ("round", "num_clients", "failed_ids") and v not in ("", None)
                            else v) for k, v in row.items()} for row in kept]
        for row in _truncate_csv(self.out_dir / "clients.csv", upto):
            if row.get("dp_epsilon") not in ("", None):
                self.dp_epsilon[int(row["cid"])] = float(row["dp_epsilon"])
            self.diverged += int(float(row.get("diverged") or 0))
        self.failed = sum(int(float(r.get("failed") or 0)) for r in self.rounds)
        path = self.out_dir / "clusters.json"
        if path.exists():
            history = {k: v for k, v in json.loads(path.read_text()).items() if int(k) <= upto}
            atomic_write_text(path, json.dumps(history))
        self.bar.update(max(upto, 0))

    def log_affinity(self, server_round: int, affinity: np.ndarray) -> None:
        """Save FedFomo's P after ``server_round`` as ``affinity/round_NNN.npy``."""
        self.log_matrix("affinity", server_round, affinity)

    def log_clusters(self, server_round: int, clusters: list[list[int]]) -> None:
        """Record a clustering method's clusters after ``server_round`` in ``clusters.json`` (rewritten atomically)."""
        path = self.out_dir / "clusters.json"
        history = json.loads(path.read_text()) if path.exists() else {}
        history[str(server_round)] = [sorted(int(c) for c in members) for members in clusters]
        atomic_write_text(path, json.dumps(history))

    def log_final(self, accuracies: dict[int, float]) -> None:
        """Record final personalized test accuracies of some clients (the evaluation may come in chunks)."""
        self.final_acc = dict(sorted({**self.final_acc, **accuracies}.items()))

    def log_final_done(self) -> None:
        """Log the final evaluation over every client recorded so far."""
        acc = np.array(list(self.final_acc.values()), dtype=float)
        acc = acc[np.isfinite(acc)]
        log.info("final | personalized test acc %.4f +- %.4f over %d clients", acc.mean(), acc.std(), len(acc))

    def write_summary(self, facts: dict) -> dict:
        """Write summary.json: ``facts`` plus the final and last-round accuracies."""
        self.bar.close()
        acc = np.array(list(self.final_acc.values()), dtype=float)
        ok = acc[np.isfinite(acc)]
        summary = {
            **facts,
            "final_mean_acc": float(ok.mean()) if len(ok) else None,
            "final_std_acc": float(ok.std()) if len(ok) else None,
            "per_client_final_acc": [float(a) if np.isfinite(a) else None for a in acc],
            "failed_final_evaluations": int(len(acc) - len(ok)),
            "last_round_mean_acc": self.rounds[-1]["mean_acc"] if self.rounds else None,
            "last_round_std_acc": self.rounds[-1]["std_acc"] if self.rounds else None,
            "rounds_completed": len(self.rounds),
            # DP-SGD: the largest epsilon any client reached (at dp.delta), over its whole training
            "dp_epsilon_max": max(self.dp_epsilon.values()) if self.dp_epsilon else None,
            # uploads rejected as non-finite (the client's previous upload stayed) and client failures
            "diverged_uploads": self.diverged,
            "failed_client_rounds": self.failed,
        }
        atomic_write_text(self.out_dir / "summary.json", json.dumps(summary, indent=2))
        return summary
