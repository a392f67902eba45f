"""Ablation figures over saved runs: the paper's Fig. 3 (epsilon and M) and Fig. 9 (validation split).

Reads every completed run (``summary.json`` + ``config.yaml``) below the folders given, groups
them by the swept settings and draws, per setting, the mean +- std over seeds of the final
personalized test accuracy (left) and the mean accuracy per round (right)::

    python -m fedfomo.ablation fig3 runs/fig3_cifar10_eps_m --out _static/fig3_eps_m.png
    python -m fedfomo.ablation fig9 runs/fig9_cifar10_val_split --out _static/fig9_val_split.png
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from fedfomo.tables import hardware_name

# figure -> (x key, line key or None, x label, title)
FIGURES = {
    "fig3": ("method.epsilon", "method.num_models", "epsilon (exploration)",
             "Fig. 3: FedFomo over epsilon and M (models downloaded)"),
    "fig9": ("val_ratio", None, "validation split fraction", "Fig. 9: FedFomo over the validation split fraction"),
}


# Where configs written before commit b90776e (2026-11-25) keep FedFomo's settings: under ``fomo``,
# which the code of that time read them from (``cfg.fomo.epsilon`` in its ``simulation.py``).
LEGACY_KEYS = {"method.epsilon": "fomo.epsilon", "method.num_models": "fomo.num_models"}

# settings every run of one figure must share (the swept keys, the seed and the hardware may differ)
SHARED = ("dataset", "partition", "num_distributions", "samples_per_client", "num_rounds", "local_epochs")


def load_runs(folders: Sequence[str | Path], method: str = "fedfomo") -> list[dict]:
    """Every completed run of ``method`` below ``folders``: its config, summary and per-round mean accuracy.

    Runs of other methods (a table's folder holds FedAvg and Local runs beside FedFomo's) are skipped.
    """
    runs = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("summary.json")):
            cfg = OmegaConf.load(path.parent / "config.yaml")
            if OmegaConf.select(cfg, "method.name") != method:
                continue
            with (path.parent / "rounds.csv").open() as f:
                curve = [float(r["mean_acc"]) for r in csv.DictReader(f)]
            runs.append({"cfg": cfg, "summary": json.loads(path.read_text()), "curve": curve, "dir": str(path.parent)})
    return runs


def check_comparable(runs: list[dict]) -> None:
    """Refuse, in one line, runs that differ in a setting other than the swept ones (``SHARED``)."""
    for key in SHARED:
        values = {str(r["summary"].get(key)) for r in runs}
        if len(values) > 1:
            raise SystemExit(f"error: the runs differ in {key} ({', '.join(sorted(values))}); "
                             "one figure compares runs of one setting")


def hardware(summary: dict) -> str:
    """Short name of the hardware a run used: its GPU's name, else ``CPU``."""
    name = hardware_name(summary)
    return name if "GPU per client" in str(summary.get("hardware", "")) else "CPU"


def setting(cfg: DictConfig, key: str) -> object:
    """The value of ``key`` in a run's saved config, read from its pre-b90776e place (``LEGACY_KEYS``) if absent."""
    value = OmegaConf.select(cfg, key)
    if value is None and key in LEGACY_KEYS:
        value = OmegaConf.select(cfg, LEGACY_KEYS[key])
    return value


def group(runs: list[dict], x_key: str, line_key: str | None) -> dict[object, dict[float, list[dict]]]:
    """``{line value: {x value: [runs (one per seed)]}}``."""
    out: dict[object, dict[float, list[dict]]] = {}
    for r in runs:
        line = setting(r["cfg"], line_key) if line_key else "FedFomo"
        x = setting(r["cfg"], x_key)
        if x is None or line is None:  # config.yaml written before the key was saved in full: value unknown
            print(f"skipped {r['dir']}: its config.yaml does not record {x_key if x is None else line_key}",
                  file=sys.stderr)
            continue
        out.setdefault(line, {}).setdefault(float(x), []).append(r)
    return out


def _order(value: object) -> tuple[int, float, str]:
    """Sort key: numbers in numeric order (M=3 before M=10), then anything else by its text."""
    try:
        return (0, float(value), "")  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def _seed_count(accs: list[list[float]]) -> str:
    """``"1 seed"``, ``"3 seeds"`` or ``"1-3 seeds"``: the number of runs behind each point of a line."""
    lo, hi = min(len(a) for a in accs), max(len(a) for a in accs)
    n = str(lo) if lo == hi else f"{lo}-{hi}"
    return f"{n} seed{'s' if hi > 1 else ''}"


def plot_ablation(figure: str, folders: Sequence[str | Path], out: str | Path) -> Path:
    """Draw ``figure`` (``fig3`` or ``fig9``) from the runs below ``folders`` into ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key, line_key, x_label, title = FIGURES[figure]
    runs = load_runs(folders)
    if not runs:
        raise SystemExit(f"error: no completed FedFomo run (summary.json) below {', '.join(map(str, folders))}")
    check_comparable(runs)
    groups = group(runs, x_key, line_key)
    fig, (ax_final, ax_curve) = plt.subplots(1, 2, figsize=(11, 4))
    for line, by_x in sorted(groups.items(), key=lambda kv: _order(kv[0])):
        xs = sorted(by_x)
        accs = [[100 * float(r["summary"]["final_mean_acc"]) for r in by_x[x]] for x in xs]
        label = f"M={line}" if line_key else str(line)
        ax_final.errorbar(xs, [np.mean(a) for a in accs], yerr=[np.std(a) for a in accs], marker="o", capsize=3,
                          label=f"{label} ({_seed_count(accs)} per point)")
        for x in xs:
            curves = [r["curve"] for r in by_x[x]]
            n = min(len(c) for c in curves)
            mean = 100 * np.mean([c[:n] for c in curves], axis=0)
            ax_curve.plot(range(1, n + 1), mean, label=f"{label}, {x_key.split('.')[-1]}={x:g}", linewidth=1)
    ax_final.set_xlabel(x_label)
    ax_final.set_ylabel("final personalized test accuracy (%)\nmean +- std over seeds")
    ax_final.set_title("final accuracy")
    ax_curve.set_xlabel("round")
    ax_curve.set_ylabel("mean test accuracy over clients (%)")
    ax_curve.set_title("accuracy per round (mean over seeds)")
    for ax in (ax_final, ax_curve):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    scale = {str(r["summary"].get("samples_per_client")) for r in runs}
    hw = Counter(hardware(r["summary"]) for r in runs)
    fig.suptitle(f"{title} ({runs[0]['summary']['dataset']}, {runs[0]['summary']['partition']}, "
                 f"samples_per_client={'/'.join(sorted(scale))}, {len(runs)} runs: "
                 f"{', '.join(f'{n} on {h}' for h, n in sorted(hw.items()))})", fontsize=9)
    fig.tight_layout()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m fedfomo.ablation {fig3,fig9} FOLDER... --out PNG``."""
    p = argparse.ArgumentParser(prog="python -m fedfomo.ablation", description=__doc__.splitlines()[0])
    p.add_argument("figure", choices=sorted(FIGURES))
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    print(plot_ablation(args.figure, args.folders, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
