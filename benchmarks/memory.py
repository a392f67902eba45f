r"""Peak memory and time per round of one run through the real entry point.

Runs ``python -m fedfomo.main`` with the overrides given, samples the machine's used memory
every 0.5 s (every process of the run counted) and the resident size of the largest process, and
writes ``memory.json`` into the run folder: peak used GiB above the level at start, the largest
process's peak RSS, mean round time, the final evaluation's time.

    python benchmarks/memory.py hydra.run.dir=results/scale/mnist_1000 dataset=mnist model=cnn_mcmahan \\
        num_clients=1000 participation=0.1 num_rounds=58
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from round_time import PeakMemory, cpu_name


def largest_rss() -> tuple[int, str]:
    """(resident bytes, command) of the process with the largest resident set right now."""
    best = (0, "")
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
            rss = next((int(line.split()[1]) * 1024 for line in text.splitlines() if line.startswith("VmRSS:")), 0)
            if rss > best[0]:
                cmd = (status.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
                best = (rss, cmd)
        except (OSError, ValueError, IndexError):
            continue
    return best


def main() -> None:
    """Run, watch, write memory.json."""
    overrides = sys.argv[1:]
    run_dir = next((Path(o.split("=", 1)[1]) for o in overrides if o.startswith("hydra.run.dir=")), None)
    if run_dir is None:
        raise SystemExit("error: give hydra.run.dir=FOLDER (memory.json is written there)")
    peak_proc = [0, ""]
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(1.0):
            rss, cmd = largest_rss()
            if rss > peak_proc[0]:
                peak_proc[:] = [rss, cmd]

    t0 = time.time()
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    with PeakMemory() as mem:
        done = subprocess.run([sys.executable, "-m", "fedfomo.main", *overrides], check=False)
    stop.set()
    thread.join()
    if not run_dir.is_dir():
        raise SystemExit(f"error: the run did not start (exit {done.returncode}); see its message above")
    wall = time.time() - t0
    rounds = list(csv.DictReader((run_dir / "rounds.csv").open())) if (run_dir / "rounds.csv").exists() else []
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    walls = [float(r["wall_s"]) for r in rounds]
    out = {"command": "python benchmarks/memory.py " + " ".join(overrides), "exit_code": done.returncode,
           "cpu": cpu_name(), "wall_s": round(wall, 1), "peak_used_gib": round(mem.peak_gib, 2),
           "largest_process_peak_rss_gib": round(peak_proc[0] / 2**30, 2), "largest_process": peak_proc[1],
           "rounds": len(rounds), "mean_round_s": round(sum(walls) / len(walls), 2) if walls else None,
           "mean_round_s_after_1": round(sum(walls[1:]) / len(walls[1:]), 2) if len(walls) > 1 else None,
           "server_checkpoint_s_mean": summary.get("server_checkpoint_s_mean"),
           "final_evaluation_s": summary.get("final_evaluation_s"), "run_wall_time_s": summary.get("wall_time_s")}
    (run_dir / "memory.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
