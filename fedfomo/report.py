"""Tables of saved results: ``python -m fedfomo.report [FOLDER...] [--readme README.md] [--flat]``.

By default every paper table (:mod:`fedfomo.tables`) from the runs below ``results/``: each cell
ours (mean +- std over seeds) beside the paper's, marked where ours lies outside the paper's
spread; ``--readme`` writes them into the README between markers. ``--flat``: the table below.

Reads every ``summary.json`` below the given folders and prints a markdown table with the final
personalized accuracy (mean +- std over clients, in %), the partition's EMD twice (ours, the 1-D
Wasserstein distance over class indices to the pooled federation, ``emd``; and the FedFomo
authors' measure, the one the paper reports, ``emd_authors``: see :mod:`fedfomo.emd`), the paper's
number where it has one (Tables 1-3, FedFomo with 5 models) and the wall time, so that README
tables come straight from saved runs.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from fedfomo import paper
from fedfomo.emd import TRAIN_LABEL_COUNTS, authors_emd_counts
from fedfomo.tables import paper_row


def load_summaries(folders: list[Path]) -> list[dict]:
    """Every summary.json below ``folders`` (with its run directory under ``run_dir``)."""
    out = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("summary.json")):
            s = json.loads(path.read_text())
            s["run_dir"] = str(path.parent)
            status = path.parent / "status.json"
            if "ended" not in s and status.is_file():  # when the run finished (orders reruns of one seed)
                s["ended"] = json.loads(status.read_text()).get("ended")
            out.append(s)
    return out


def wall_time_of(s: dict) -> float:
    """The run's wall time over all its attempts, in seconds.

    Summaries written since ``wall_time_attempt_s`` exists count every attempt in
    ``wall_time_s``. Older ones counted only the last attempt; for a resumed one of those, the
    sum of its rounds' ``wall_s`` (``rounds.csv`` keeps every finished round of every attempt)
    plus its final evaluation is used when larger.
    """
    wall = float(s.get("wall_time_s") or 0.0)
    if "wall_time_attempt_s" in s or int(s.get("attempts") or 1) <= 1:
        return wall
    path = Path(s.get("run_dir", "")) / "rounds.csv"
    if not s.get("run_dir") or not path.is_file():
        return wall
    with path.open() as f:
        rounds = sum(float(r.get("wall_s") or 0.0) for r in csv.DictReader(f))
    return max(wall, rounds + float(s.get("final_evaluation_s") or 0.0))


def authors_emd_of(s: dict) -> float | None:
    """The run's ``emd_authors``; for older summaries without it, recomputed from its partition.json.

    partition.json holds every client's train and val label counts; the reference is the
    dataset's full training split (:data:`fedfomo.emd.TRAIN_LABEL_COUNTS`). None when neither is
    available, and for a run with ``shuffle_targets``: its partition.json holds the val set it was
    given after the shuffle, while the authors measure the local data before it.
    """
    if s.get("emd_authors") is not None:
        return float(s["emd_authors"])
    if s.get("shuffle_targets"):
        return None
    ref = TRAIN_LABEL_COUNTS.get(s.get("dataset"))
    path = Path(s.get("run_dir", "")) / "partition.json"
    if ref is None or not s.get("run_dir") or not path.is_file():
        return None
    try:
        clients = json.loads(path.read_text())["clients"]
        local = [np.add(c["train"], c["val"]) for c in clients]
        if not local or any(len(c) != len(ref) for c in local):
            return None
        return float(np.mean([authors_emd_counts(c, ref) for c in local]))
    except (ValueError, KeyError, TypeError):
        return None


def scale_note(s: dict) -> str:
    """How a run differs from the paper's full scale, e.g. ``scaled down: 500 samples/client``."""
    from fedfomo.tables import scale_of

    note = scale_of(s, "{} samples/client")
    return note if note == "full scale" else f"scaled down: {note}"


def paper_value(s: dict) -> float | None:
    """The paper's mean (Tables 1-3) for this run's setting, if it has one.

    Looked up in :mod:`fedfomo.paper`, the one place the paper's numbers are typed in. FedFomo's
    row depends on M: Table 1 has M = 5 and 10, Tables 2 and 3 only M = 5.
    """
    cell = None
    if s.get("partition") == "pathological":
        cell = paper.TABLE1.get((s["dataset"], s["num_clients"]), {}).get(paper_row(s))
    elif s.get("partition") == "latent" and s.get("num_clients") == 15 and s.get("num_models") in (None, 5):
        if s.get("shuffle_targets"):
            if s.get("num_distributions") == 5:
                cell = paper.TABLE3.get(s["dataset"], {}).get(s["method"])
        elif s["dataset"] == "cifar10":
            cell = paper.TABLE2.get(s.get("num_distributions"), {}).get(s["method"])
    return None if cell is None else cell[0]


def dataset_label(s: dict) -> str:
    """The dataset, a held-out test split by name and training augmentation.

    E.g. ``cifar100, CIFAR-100 held-out test (10000 train images, seed 0)``. Such runs never share
    a row (or a mean) with runs on the official test set (likewise ``augment=crop_flip`` runs).
    """
    split = s.get("test_split")
    label = str(s["dataset"]) if split in (None, "official") else f"{s['dataset']}, {split}"
    return label if s.get("augment", "none") == "none" else f"{label}, augment={s['augment']}"


def partition_label(s: dict) -> str:
    """The partition with what tells its variants apart, e.g. ``latent D=5, shuffled``."""
    label = str(s["partition"])
    if s["partition"] == "latent" and s.get("num_distributions") is not None:
        label += f" D={s['num_distributions']}"
        if s.get("embedder") not in (None, "vgg11"):
            label += f" ({s['embedder']})"
        if s.get("cluster_by") == "label":
            label += " (label clusters)"
        if s.get("shuffle_targets"):
            label += ", shuffled"
    return label


def method_label(s: dict) -> str:
    """The method, with the authors' options it ran with, e.g. ``fedfomo (affinity_norm=abs_sum)``."""
    from fedfomo.tables import sampling_label

    extra = ", ".join(v for v in (s.get("authors_options"), sampling_label(s)) if v)
    return f"{s['method']} ({extra})" if extra else str(s["method"])


def markdown_table(summaries: list[dict]) -> str:
    """Group runs by (dataset and test split, partition, clients, method, M, scale); mean over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for s in summaries:
        key = (dataset_label(s), partition_label(s), s["num_clients"], s.get("participation", 1.0), method_label(s),
               s.get("num_models"), scale_note(s))
        groups.setdefault(key, []).append(s)
    lines = [
        "| dataset | partition | EMD (W1, ours) | EMD (authors) | clients | part. | method | M "
        "| final acc % (mean ± std over clients) | paper % | seeds | wall time | scale |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(groups, key=lambda k: tuple(str(x) for x in k)):
        runs = groups[key]
        ds, part, n, frac, method, m, scale = key
        means = np.array([r["final_mean_acc"] for r in runs]) * 100
        stds = np.array([r["final_std_acc"] for r in runs]) * 100
        acc = f"{means.mean():.2f} ± {stds.mean():.2f}"
        if len(runs) > 1:
            acc += f" (± {means.std():.2f} over seeds)"
        paper_mean = paper_value(runs[0])
        paper_cell = "-" if paper_mean is None else paper_mean
        wall = np.mean([wall_time_of(r) for r in runs])
        emds = [r["emd"] for r in runs if r.get("emd") is not None]
        emd = f"{np.mean(emds):.2f}" if emds else "-"
        authors = [a for a in map(authors_emd_of, runs) if a is not None]
        emd_authors = f"{np.mean(authors):.2f}" if authors else "-"
        lines.append(f"| {ds} | {part} | {emd} | {emd_authors} | {n} | {frac:g} | {method} | {m if m else '-'} "
                     f"| {acc} | {paper_cell} | {len(runs)} | {wall / 60:.1f} min | {scale} |")
    return "\n".join(lines)


# The folders of results/ that feed the README's paper tables: every `table*` experiment, and any
# folder named here. Left out on purpose: diagnostics and variants (divergence, checkpoint overhead,
# Flower path timing, a rerun after a refactor, pFedMe from the global model, MOCHA's lambda sweep),
# which would otherwise share cells with the runs they were compared to, and the first seed-0 runs
# of the comparison methods on MNIST (`methods_mnist_spc500*`, several older commits), replaced by
# the one-commit runs of `table1_mnist_spc500`.
README_RESULTS: tuple[str, ...] = ()


def readme_results(root: Path = Path("results")) -> list[Path]:
    """``results/table*`` and :data:`README_RESULTS`, those that exist."""
    return sorted(p for p in root.glob("table*") if p.is_dir()) + [root / n for n in README_RESULTS
                                                                    if (root / n).is_dir()]


def enriched(summaries: list[dict]) -> list[dict]:
    """Each summary with what :mod:`fedfomo.tables` reads from its run's config.yaml."""
    from omegaconf import OmegaConf

    from fedfomo.tables import enrich

    out = []
    for s in summaries:
        path = Path(s.get("run_dir", "")) / "config.yaml"
        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False) if path.is_file() else {}
        row = enrich(s, cfg)  # type: ignore[arg-type]
        row["emd_authors"] = authors_emd_of(s)  # recomputed from partition.json for older runs
        row["wall_time_s"] = wall_time_of(s)  # every attempt, also for older resumed runs
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> None:
    """Print the paper's tables (or ``--flat``: one row per setting) from the runs below the folders."""
    from fedfomo.tables import build_tables, render, write_into

    parser = argparse.ArgumentParser(prog="python -m fedfomo.report", description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path,
                        help="folders searched for summary.json (default: the paper experiments in results/, "
                             "see README_RESULTS)")
    parser.add_argument("--flat", action="store_true", help="one row per setting instead of the paper's tables")
    parser.add_argument("--readme", type=Path, help="write each table into this file between "
                        "<!-- report:NAME --> and <!-- /report:NAME --> markers")
    args = parser.parse_args(argv)
    summaries = load_summaries(args.folders or readme_results())
    if not summaries:
        parser.error(f"no summary.json below {', '.join(map(str, args.folders))}")
    hw = {s.get("hardware") for s in summaries if s.get("hardware")}
    commits = {s.get("git_commit") for s in summaries if s.get("git_commit")}
    footer = (f"hardware: {'; '.join(sorted(hw))}\n{len(summaries)} runs from {len(commits)} commits "
              f"(each run's commit is in its summary.json)")
    if args.flat:
        print(markdown_table(summaries))
        print("\n" + footer)
        return
    tables = render(build_tables(enriched(summaries)))
    if args.readme:
        text, missing = write_into(args.readme.read_text(), tables)
        args.readme.write_text(text)
        print(f"{args.readme}: {len(tables) - len(missing)} table(s) written"
              + (f"; no markers for: {', '.join(missing)}" if missing else ""))
        return
    for name, md in tables.items():
        print(f"<!-- report:{name} -->\n{md}\n<!-- /report:{name} -->\n")
    print(footer)


if __name__ == "__main__":
    main()
