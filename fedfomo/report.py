"""Tables of saved results: ``python -m fedfomo.report results/table1_mnist [more dirs]``.

Reads every ``summary.json`` below the given folders and prints a markdown table with the final
personalized accuracy (mean +- std over clients, in %), the paper's number where it has one,
and the wall time, so that README tables come straight from saved runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

# Paper, Table 1 (pathological non-IID; FedFomo with 5 models downloaded), in %:
# (dataset, clients) -> method -> mean accuracy, copied from the paper's table.
_T1_METHODS = ("local", "fedavg", "fedavg_data", "fedprox", "lg_fedavg", "mocha", "cfl", "perfedavg", "pfedme",
               "fedfomo")
PAPER_TABLE1 = {
    ("mnist", 15): dict(zip(_T1_METHODS, (99.62, 91.97, 91.99, 90.94, 99.79, 94.74, 95.00, 92.39, 97.70, 99.62))),
    ("mnist", 100): dict(zip(_T1_METHODS, (94.25, 78.83, 78.85, 79.06, 84.17, 84.58, 92.26, 85.32, 88.40, 98.81))),
    ("cifar10", 15): dict(zip(_T1_METHODS, (92.73, 57.12, 58.5, 54.60, 92.36, 93.85, 85.07, 81.96, 83.85, 93.01))),
    ("cifar10", 100): dict(zip(_T1_METHODS, (85.42, 53.08, 56.62, 52.92, 84.17, 76.09, 77.75, 72.40, 71.75, 92.10))),
}


def load_summaries(folders: list[Path]) -> list[dict]:
    """Every summary.json below ``folders`` (with its run directory under ``run_dir``)."""
    out = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("summary.json")):
            s = json.loads(path.read_text())
            s["run_dir"] = str(path.parent)
            out.append(s)
    return out


def scale_note(s: dict) -> str:
    """How a run differs from the paper's full scale (empty when it does not)."""
    notes = []
    if s.get("samples_per_client"):
        notes.append(f"{s['samples_per_client']} samples/client")
    full_rounds = 100 if s.get("num_clients", 15) >= 100 else 20
    if s.get("num_rounds") != full_rounds:
        notes.append(f"{s['num_rounds']} rounds")
    if s.get("local_epochs", 5) != 5:
        notes.append(f"E={s['local_epochs']}")
    return "scaled down: " + ", ".join(notes) if notes else "full scale"


def paper_value(s: dict) -> float | None:
    """The paper's Table 1 number for this run's setting, if it has one."""
    if s.get("partition") != "pathological":
        return None
    return PAPER_TABLE1.get((s["dataset"], s["num_clients"]), {}).get(s["method"])


def markdown_table(summaries: list[dict]) -> str:
    """Group runs by (dataset, partition, clients, method, M, scale); mean over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for s in summaries:
        key = (s["dataset"], s["partition"], s["num_clients"], s.get("participation", 1.0), s["method"],
               s.get("num_models"), scale_note(s))
        groups.setdefault(key, []).append(s)
    lines = [
        "| dataset | partition | clients | part. | method | M | final acc % (mean ± std over clients) "
        "| paper % | seeds | wall time | scale |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(groups, key=lambda k: tuple(str(x) for x in k)):
        runs = groups[key]
        ds, part, n, frac, method, m, scale = key
        means = np.array([r["final_mean_acc"] for r in runs]) * 100
        stds = np.array([r["final_std_acc"] for r in runs]) * 100
        acc = f"{means.mean():.2f} ± {stds.mean():.2f}"
        if len(runs) > 1:
            acc += f" (± {means.std():.2f} over seeds)"
        paper = paper_value(runs[0])
        wall = np.mean([r["wall_time_s"] for r in runs])
        lines.append(f"| {ds} | {part} | {n} | {frac:g} | {method} | {m if m else '-'} | {acc} | "
                     f"{paper if paper is not None else '-'} | {len(runs)} | {wall / 60:.1f} min | {scale} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Print the markdown table of the runs below the given folders."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args(argv)
    summaries = load_summaries(args.folders)
    if not summaries:
        parser.error(f"no summary.json below {', '.join(map(str, args.folders))}")
    print(markdown_table(summaries))
    hw = {s.get("hardware") for s in summaries if s.get("hardware")}
    commits = {s.get("git_commit") for s in summaries if s.get("git_commit")}
    print(f"\nhardware: {'; '.join(sorted(hw))}\ncommits: {', '.join(sorted(commits))}")


if __name__ == "__main__":
    main()
