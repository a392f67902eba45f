r"""CPU seconds per round of each kind of process of one run through ``python -m fedfomo.main``.

Runs the harness with the given Hydra overrides, samples the CPU time (user + system, from
``/proc``) of every process of its tree twice a second, and prints, for every round after the
first, the CPU seconds each group spent in it: the Ray workers that run the clients
(``ClientAppActor``), the simulation process (the ServerApp's round loop and Flower's engine:
``flwr-simulation``), Ray's own processes (raylet, GCS, dashboard, ...) and Flower's SuperLink.
On a machine with as many cores as workers, whatever is not the workers' is taken from them::

    python benchmarks/cpu_by_process.py --csv benchmarks/results/cpu_by_process.csv -- \
        dataset=mnist model=cnn_mcmahan num_clients=1000 participation=0.1 num_rounds=4 sim.num_cpus=2

Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

GROUPS = ("ClientAppActor", "raylet", "gcs_server", "flwr-simulation", "flower-superlink", "fedfomo.main", "ray")
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def group_of(cmdline: str) -> str:
    """The group a process's command line belongs to (:data:`GROUPS`, else ``other``)."""
    return next((g for g in GROUPS if g in cmdline), "other")


def _stat(pid: str) -> tuple[int, float] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def sample_tree(root: int) -> dict[int, tuple[str, float]]:
    """``{pid: (group, cpu seconds so far)}`` of ``root`` and all its descendants."""
    stats = {int(p): s for p in os.listdir("/proc") if p.isdigit() and (s := _stat(p)) is not None}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if pid in stats:
            out[pid] = (group_of(cmd), stats[pid][1])
    return out


def round_ends(server_log: Path) -> list[tuple[int, float]]:
    """(round, unix time its line was logged) from a run's ``server.log``."""
    ends = []
    for line in server_log.read_text().splitlines():
        m = re.match(r"\[(\S+ \S+)\]\[fedfomo\]\[INFO\] - round\s+(\d+) ", line)
        if m:
            t = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").astimezone().timestamp()
            ends.append((int(m.group(2)), t))
    return ends


def per_round(samples: list[tuple[float, dict]], ends: list[tuple[int, float]]) -> list[dict]:
    """CPU seconds of each group between consecutive round ends (so rounds 2, 3, ...)."""
    def at(t: float) -> dict:
        return min(samples, key=lambda s: abs(s[0] - t))[1]
    rows = []
    for (_, t0), (rnd, t1) in pairwise(ends):
        a, b = at(t0), at(t1)
        cpu: Counter[str] = Counter()
        for pid, (grp, sec) in b.items():
            cpu[grp] += sec - a.get(pid, (grp, 0.0))[1]
        rows.append({"round": rnd, "wall_s": round(t1 - t0, 2), **{g: round(cpu[g], 2) for g in (*GROUPS, "other")}})
    return rows


def main() -> None:
    """Run, sample, print one line per round; ``--csv`` appends the rows."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv", default=None, help="append the rows to this CSV file")
    p.add_argument("--label", default="", help="free text for the CSV (e.g. which code ran)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the run (after --)")
    args = p.parse_args()
    out = Path(tempfile.mkdtemp(prefix="fedfomo-cpu-")) / "run"
    cmd = [sys.executable, "-m", "fedfomo.main", "sim.progress=false", f"hydra.run.dir={out}", *args.overrides]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples = []
    while proc.poll() is None:
        samples.append((time.time(), sample_tree(proc.pid)))
        time.sleep(0.5)
    if proc.returncode != 0:
        raise SystemExit(f"error: the run failed ({out}): {(proc.stderr.read() if proc.stderr else '')[-300:]}")
    rows = per_round(samples, round_ends(out / "server.log"))
    shutil.rmtree(out.parent, ignore_errors=True)  # the run's checkpoint is GBs; a failed run's folder is kept
    for r in rows:
        busy = ", ".join(f"{g} {r[g]:.2f}" for g in (*GROUPS, "other") if r[g] > 0.005)
        print(f"round {r['round']}: {r['wall_s']:.1f} s wall; CPU s: {busy}")
    if args.csv and rows:
        path = Path(args.csv)
        new = not path.exists()
        with path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["date", "label", "overrides", *rows[0]])
            if new:
                w.writeheader()
            for r in rows:
                w.writerow({"date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "label": args.label,
                            "overrides": " ".join(args.overrides), **r})


if __name__ == "__main__":
    main()
