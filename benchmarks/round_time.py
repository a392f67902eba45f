r"""Time a round through the real entry point against a bare-PyTorch floor doing the same passes.

For every setting asked for (the product of ``--clients`` and ``--num-models``), runs
``python -m fedfomo.main`` for two rounds (round 2 is the first with downloaded candidates) and
takes round 2's time (its wall time in ``rounds.csv`` plus the server's checkpoint after it);
then runs the floor (:mod:`floor`) on the same clients with the same passes, in the same session;
prints both, their ratio and the framework's cost per sampled client, appends a CSV row and,
``--plot`` draws time per round against clients and against M from two such CSV files.

    python benchmarks/round_time.py --clients 15 --num-models 5 --csv benchmarks/results/round_time.csv
    python benchmarks/round_time.py --clients 100 --participation 0.1 --num-models 1 5 10 20 \
        --csv benchmarks/results/round_time.csv --plot _static/round_time.png

Any method and any other setting of the harness can be timed: ``--method fedavg``, and
``--set KEY=VALUE`` (repeatable) passes a Hydra override (the floor then does the passes of the
method's family: M + 1 validation passes for FedFomo, none for the others).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from floor import floor_round, parser, require_bf16

FIELDS = ("date", "host_cpu", "dataset", "model", "method", "clients", "participation", "sampled", "num_models",
          "epochs", "samples_per_client", "workers", "harness_round_s", "floor_round_s", "ratio",
          "framework_ms_per_client", "peak_used_gib", "extra")
FOMO = ("fedfomo", "fedfomo_ma")


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class PeakMemory:
    """Peak of the machine's used memory (MemTotal - MemAvailable) above its level at entry, sampled every 0.5 s.

    Counts every process of the run (launcher, SuperLink, simulation, Ray workers), which a
    per-process maximum would not; the machine should be otherwise idle.
    """

    def __enter__(self) -> PeakMemory:
        self.base = self.used()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_gib(self) -> float:
        """Peak used memory above the level at entry, GiB."""
        return (self.peak - self.base) / 2**30

    @staticmethod
    def used() -> int:
        """Bytes in use now (0 where ``/proc/meminfo`` is missing)."""
        try:
            info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
            return (int(info["MemTotal"].split()[0]) - int(info["MemAvailable"].split()[0])) * 1024
        except (OSError, KeyError, ValueError):
            return 0

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, self.used())


def harness_round(args, clients: int, num_models: int) -> tuple[float, float]:
    """(seconds of round 2 of a two-round run of the harness, peak resident GiB of the whole run)."""
    out = Path(tempfile.mkdtemp(prefix="fedfomo-bench-")) / "run"
    cmd = [sys.executable, "-m", "fedfomo.main", f"dataset={args.dataset}",
           f"model={args.model}", f"method={args.method}", f"num_clients={clients}",
           f"participation={args.participation}", f"local_epochs={args.epochs}", f"optim.batch_size={args.batch}",
           f"optim.lr={args.lr}", "num_rounds=2", "sim.progress=false", f"sim.num_cpus={args.workers}",
           f"hydra.run.dir={out}", *args.set]
    if args.method in FOMO:
        cmd.append(f"method.num_models={num_models}")
    if args.samples_per_client:
        cmd.append(f"samples_per_client={args.samples_per_client}")
    if args.data_root:
        cmd.append(f"dataset.root={args.data_root}")
    with PeakMemory() as mem:
        done = subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-2:]
        raise SystemExit(f"error: the harness run failed ({out}): {' | '.join(tail)}")
    with (out / "rounds.csv").open() as f:
        wall = float(list(csv.DictReader(f))[-1]["wall_s"])
    summary = json.loads((out / "summary.json").read_text())
    shutil.rmtree(out.parent, ignore_errors=True)  # the run's checkpoint is GBs; a failed run's folder is kept
    return wall + float(summary.get("server_checkpoint_s_mean") or 0.0), mem.peak_gib


def check(args) -> None:
    """Settings that cannot run end here with one line."""
    for n in args.clients:
        for m in args.num_models:
            if args.method in FOMO and not 1 <= m <= n:
                raise SystemExit(f"error: --num-models={m} is more than --clients={n} can offer; allowed: 1..{n}")
    require_bf16(args.floor_bf16 or any("sim.bf16=true" in s for s in args.set))


def plot(clients_rows: list[dict], m_rows: list[dict], path: Path) -> None:
    """Time per round, harness and floor: against clients (left, ``clients_rows``) and M (right, ``m_rows``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, unsorted, key in ((axes[0], clients_rows, "clients"), (axes[1], m_rows, "num_models")):
        rows = sorted(unsorted, key=lambda r: int(r[key]))
        xs = [int(r[key]) for r in rows]
        ax.plot(xs, [float(r["harness_round_s"]) for r in rows], "o-", label="harness (python -m fedfomo.main)")
        ax.plot(xs, [float(r["floor_round_s"]) for r in rows], "s--", label="bare-PyTorch floor, same passes")
        for x, r in zip(xs, rows):
            ax.annotate(f"{float(r['ratio']):.2f}x", (x, float(r["harness_round_s"])), textcoords="offset points",
                        xytext=(0, 6), ha="center", fontsize=7)
        ax.set_ylabel("seconds per round (round 2)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    r0, r1 = clients_rows[0], m_rows[0]
    axes[0].set_xscale("log")
    axes[0].set_xlabel("clients (15: all take part; 100, 1000: 10% per round)")
    axes[0].set_title(f"vs clients (M={r0['num_models']}, full MNIST)")
    axes[1].set_xlabel("M (models downloaded per client)")
    axes[1].set_title(f"vs M ({r1['clients']} clients, all take part, samples_per_client={r1['samples_per_client']})")
    fig.suptitle(f"FedFomo round, MNIST, McMahan CNN, E=5: harness vs floor ({r0['host_cpu']}, {r0['workers']} "
                 f"one-thread workers; label = harness/floor)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    """Harness round, floor round, ratio for every setting; CSV rows; the plot."""
    p = parser(multi=True)
    p.add_argument("--method", default="fedfomo")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra Hydra override")
    p.add_argument("--label", default="", help="free text for the CSV's extra column (e.g. which code ran)")
    p.add_argument("--csv", default=None, help="append the results to this CSV file")
    p.add_argument("--plot", nargs=3, default=None, metavar=("CLIENTS_CSV", "M_CSV", "PNG"),
                   help="draw a clients sweep and an M sweep (CSV files of earlier runs) into PNG, and stop")
    args = p.parse_args()
    if args.plot:
        clients_csv, m_csv, png = args.plot
        plot(list(csv.DictReader(open(clients_csv))), list(csv.DictReader(open(m_csv))), Path(png))
        return
    check(args)
    rows = []
    for clients in args.clients:
        for m in args.num_models:
            harness, rss = harness_round(args, clients, m)
            fargs = argparse.Namespace(**{**vars(args), "clients": clients,
                                          "num_models": m if args.method in FOMO else 0})
            floor, _, sampled = floor_round(fargs)
            row = {"date": time.strftime("%Y-%m-%d %H:%M"), "host_cpu": cpu_name(), "dataset": args.dataset,
                   "model": args.model, "method": args.method, "clients": clients,
                   "participation": args.participation, "sampled": sampled, "num_models": m,
                   "epochs": args.epochs, "samples_per_client": args.samples_per_client or "",
                   "workers": args.workers, "harness_round_s": round(harness, 3), "floor_round_s": round(floor, 3),
                   "ratio": round(harness / floor, 3),
                   "framework_ms_per_client": round(1000 * (harness - floor) / sampled, 1),
                   "peak_used_gib": round(rss, 2), "extra": " ".join([args.label, *args.set,
                                                 *(["floor bf16"] if args.floor_bf16 else [])]).strip()}
            rows.append(row)
            print(f"clients {clients} M {m}: harness {harness:.2f} s | floor {floor:.2f} s | ratio "
                  f"{harness / floor:.3f} | framework {row['framework_ms_per_client']} ms per sampled client | "
                  f"peak memory used {rss:.2f} GiB", flush=True)
            if args.csv:
                path = Path(args.csv)
                path.parent.mkdir(parents=True, exist_ok=True)
                new = not path.exists()
                with path.open("a", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=FIELDS)
                    if new:
                        w.writeheader()
                    w.writerow(row)


if __name__ == "__main__":
    main()
