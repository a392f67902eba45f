"""Time one FedFomo round through the real entry point against the bare-PyTorch floor (benchmarks/floor.py).

Runs ``python -m fedfomo.main`` for two rounds (round 2 is the first with M downloaded
candidates) and reads round 2's wall time from its ``rounds.csv``; runs the floor with the same
passes in the same session; prints both and their ratio and appends a row to ``--csv``.

    python benchmarks/round_time.py --clients 15 --num-models 5 --csv benchmarks/results.csv
"""

from __future__ import annotations

import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from floor import floor_round, parser

FIELDS = ("date", "dataset", "model", "clients", "num_models", "epochs", "samples_per_client", "workers",
          "harness_round_s", "floor_round_s", "ratio")


def harness_round(args) -> float:
    """Wall seconds of round 2 of a two-round run of the harness with the floor's settings."""
    out = Path(tempfile.mkdtemp(prefix="fedfomo-bench-")) / "run"
    cmd = [sys.executable, "-m", "fedfomo.main", f"dataset={args.dataset}", f"model={args.model}",
           f"num_clients={args.clients}", f"method.num_models={args.num_models}", f"local_epochs={args.epochs}",
           f"optim.batch_size={args.batch}", f"optim.lr={args.lr}", "num_rounds=2", "sim.progress=false",
           f"sim.num_cpus={args.workers}", f"hydra.run.dir={out}"]
    if args.samples_per_client:
        cmd.append(f"samples_per_client={args.samples_per_client}")
    if args.data_root:
        cmd.append(f"dataset.root={args.data_root}")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with (out / "rounds.csv").open() as f:
        return float(list(csv.DictReader(f))[-1]["wall_s"])


def main() -> None:
    """Harness round, floor round, ratio; one CSV row."""
    p = parser()
    p.add_argument("--csv", default=None, help="append the result to this CSV file")
    args = p.parse_args()
    if args.num_models > args.clients:
        raise SystemExit(f"error: --num-models={args.num_models} is larger than --clients={args.clients}; "
                         f"allowed: 1..{args.clients}")
    harness = harness_round(args)
    floor, _ = floor_round(args)
    row = {"date": time.strftime("%Y-%m-%d %H:%M"), "dataset": args.dataset, "model": args.model,
           "clients": args.clients, "num_models": args.num_models, "epochs": args.epochs,
           "samples_per_client": args.samples_per_client or "", "workers": args.workers,
           "harness_round_s": round(harness, 3), "floor_round_s": round(floor, 3), "ratio": round(harness / floor, 3)}
    print(f"harness {harness:.2f} s | floor {floor:.2f} s | ratio {harness / floor:.3f}")
    if args.csv:
        path = Path(args.csv)
        new = not path.exists()
        with path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            if new:
                w.writeheader()
            w.writerow(row)


if __name__ == "__main__":
    main()
