"""The paper's tables rebuilt from saved runs: every run placed in its cell, seeds averaged, the paper beside it.

:func:`paper_cell` says which table, column and row a run's ``summary.json`` belongs to (Tables
1-6 of Zhang et al.); :func:`build_tables` groups runs into cells (mean +- std over seeds of the
final personalized accuracy; runs at another scale or on another test split never share a
cell) and :func:`render` writes one markdown table per (paper table, scale) with the paper's
mean +- std beside ours and a mark where ours lies outside the paper's reported spread.
``python -m fedfomo.report --paper`` prints them; ``--readme README.md`` writes them into the
README between ``<!-- report:NAME -->`` and ``<!-- /report:NAME -->`` markers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from fedfomo import paper

MARK = "†"  # ours outside the paper's reported mean +- std
METHOD_ORDER = ("local", "fedavg", "fedavg_data", "fedprox", "lg_fedavg", "mocha", "cfl", "perfedavg", "pfedme",
                "fedper", "pfedhn", "fedfomo_ma", "fedfomo", "fedfomo_m10")
NAMES = {"local": "Local Training", "fedavg": "FedAvg", "fedavg_data": "FedAvg + Data", "fedprox": "FedProx",
         "lg_fedavg": "LG-FedAvg", "mocha": "MOCHA", "cfl": "Clustered FL", "perfedavg": "Per-FedAvg",
         "pfedme": "pFedMe", "fedper": "FedPer (not in the paper)", "pfedhn": "pFedHN (not in the paper)",
         "fedfomo_ma": "FedFomo-MA", "fedfomo": "FedFomo (M=5)", "fedfomo_m10": "FedFomo (M=10)"}


@dataclass(frozen=True)
class CellKey:
    """Where a run belongs: paper table, column, row, and what must match for runs to be averaged."""

    table: str  # "table1", ..., "table6"
    column: object  # e.g. ("mnist", 15), 5, "cifar10", ("cifar10", sigma)
    row: str  # method (fedfomo with M=10: fedfomo_m10)
    scale: str  # "full scale" or what was scaled down
    variant: str = ""  # e.g. "CIFAR-100 held-out test", "label clusters"


@dataclass
class Cell:
    """Runs of one cell (one per seed) and their aggregate."""

    key: CellKey
    accs: list[float] = field(default_factory=list)  # per-seed final mean accuracy, %
    client_stds: list[float] = field(default_factory=list)  # per-seed std over clients, %
    seeds: list[int] = field(default_factory=list)
    eps: list[float] = field(default_factory=list)  # DP epsilon per seed
    wall_s: list[float] = field(default_factory=list)
    emd_authors: list[float] = field(default_factory=list)  # the paper's measure (fedfomo.emd)
    emd_ours: list[float] = field(default_factory=list)  # our 1-D Wasserstein over class indices
    hardware: list[str] = field(default_factory=list)  # short name per seed (hardware_name)
    reruns: int = 0  # further runs of a seed already counted (e.g. the same setting on other hardware)

    @property
    def mean(self) -> float:
        """Mean over seeds, %."""
        return float(np.mean(self.accs))

    @property
    def std(self) -> float:
        """Std over seeds, % (0 for one seed)."""
        return float(np.std(self.accs))


def hardware_name(summary: dict) -> str:
    """Short name of the hardware a run used (its summary's ``hardware``).

    The GPU's name where clients had one (the part before ``N GPU per client``), else the CPU's
    name and core count (the first two parts), e.g. ``AMD EPYC, 2 cores``.
    """
    parts = [p.strip() for p in str(summary.get("hardware") or "").split(",") if p.strip()]
    for i, part in enumerate(parts):
        if part.endswith("GPU per client") and i > 0:
            return parts[i - 1]
    return ", ".join(parts[:2])


def scale_of(s: dict, samples_format: str = "samples_per_client={}") -> str:
    """How a run differs from the paper's full scale ("full scale" when it does not).

    ``samples_format`` writes the cap on local data (the report's flat table: ``"{} samples/client"``).
    """
    notes = []
    if s.get("samples_per_client"):
        notes.append(samples_format.format(s["samples_per_client"]))
    full_rounds = 100 if s.get("num_clients", 15) >= 100 else 20
    if s.get("num_rounds") != full_rounds:
        notes.append(f"{s.get('num_rounds')} rounds")
    if s.get("local_epochs", 5) != 5:
        notes.append(f"E={s.get('local_epochs')}")
    return ", ".join(notes) if notes else "full scale"


def _row_order(row: str) -> tuple[int, str]:
    """Sort key of a table row: ``METHOD_ORDER`` first, then any other method by name."""
    return (METHOD_ORDER.index(row), "") if row in METHOD_ORDER else (len(METHOD_ORDER), row)


def paper_row(s: dict) -> str | None:
    """The paper's row of a run: its method, FedFomo by M (``fedfomo`` for M=5, ``fedfomo_m10``; None otherwise)."""
    method = s.get("method")
    if method == "fedfomo":
        m = s.get("num_models")
        return {None: "fedfomo", 5: "fedfomo", 10: "fedfomo_m10"}.get(m)
    return method or None


def _dp_sigma(s: dict) -> float | None:
    dp = s.get("dp")  # summary.json: the DP settings when DP-SGD ran, else null
    if isinstance(dp, dict) and dp.get("enabled", True):
        return float(dp.get("noise_multiplier", 0.0))
    return None


def sampling_label(s: dict) -> str:
    """``sampling=fixed`` for a run with the authors' fixed client draw, ``""`` for the default fresh draw.

    With full participation every round takes every client, so the draw changes nothing: ``""``.
    """
    if s.get("sampling", "fresh") == "fresh" or float(s.get("participation") or 1.0) >= 1.0:
        return ""
    return f"sampling={s['sampling']}"


def paper_cell(s: dict) -> CellKey | None:
    """The paper cell of a run's summary, or None when the paper has no such setting.

    Runs off the paper's evaluation settings (another ``val_ratio`` or ``epsilon``, or another
    learning rate: ``off_paper`` set by :func:`enrich`) are ablations, not table cells.
    """
    row = paper_row(s)
    if row is None or s.get("off_paper"):
        return None
    split = s.get("test_split")
    variant = "" if split in (None, "official") else str(split)
    if s.get("augment", "none") != "none":  # the authors' augmentation: never in a default run's cell
        variant = ", ".join(v for v in (variant, f"augment={s['augment']}") if v)
    # the authors' fixed client draw: never in a default run's cell
    variant = ", ".join(v for v in (variant, sampling_label(s)) if v)
    if s.get("model", "cnn_authors") != "cnn_authors":  # the authors' code trains cnn_authors (our default)
        variant = ", ".join(v for v in (variant, f"model={s['model']}") if v)
    if s.get("bf16"):  # sim.bf16=true: bfloat16 autocast, not the default fp32
        variant = ", ".join(v for v in (variant, "bf16") if v)
    if s.get("authors_options"):  # FedFomo with options of the authors' code: never in a default run's cell
        # num_subfederations = the latent partition's D is their setting at every D: one variant for all columns
        opts = [o for o in str(s["authors_options"]).split(", ")
                if o != f"num_subfederations={s.get('num_distributions')}"]
        variant = ", ".join(v for v in (variant, f"authors options {', '.join(opts)}") if v)
    ds, part, n = s.get("dataset"), s.get("partition"), s.get("num_clients")
    if part == "pathological" and ds in ("mnist", "cifar10") and n in (15, 100):
        return CellKey("table1", (ds, n), row, scale_of(s), variant)
    if part == "latent" and n == 15:
        return _latent_cell(s, row, scale_of(s), variant)
    return None


# How the paper's D=10 column was split, by dataset (NVlabs/FedFomo): CIFAR-10 by class label
# (``dist_labels`` in ``federated_datasets/cifar10.py`` when D=10), CIFAR-100 by K-Means like every
# other D (its ``cifar100.py`` uses ``dist_labels`` only for the pathological split).
PAPER_D10_CLUSTER_BY = {"cifar10": "label", "cifar100": "kmeans"}


def _latent_cell(s: dict, row: str, scale: str, variant: str) -> CellKey | None:
    ds, d, shuffled, sigma = s.get("dataset"), s.get("num_distributions"), bool(s.get("shuffle_targets")), _dp_sigma(s)
    if sigma is not None or (row == "fedfomo_ma" and not shuffled):  # Tables 4 and 6 (D=5; sigma 0 = no DP)
        table = "table6" if row == "fedfomo_ma" else "table4"
        return CellKey(table, (ds, sigma or 0.0), row, scale, variant) if d == 5 and not shuffled else None
    if shuffled:
        return CellKey("table3", ds, row, scale, variant) if d == 5 else None
    table = {"cifar10": "table2", "cifar100": "table5"}.get(str(ds))
    if d == 10 and s.get("cluster_by") != PAPER_D10_CLUSTER_BY.get(str(ds)):
        d = f"10 ({'K-Means' if s.get('cluster_by') != 'label' else 'class labels'})"
    return CellKey(table, d, row, scale, variant) if table else None


def enrich(summary: dict, cfg: dict) -> dict:
    """Add to a summary what the table needs from the run's config.yaml.

    ``cluster_by``, ``bf16`` (``sim.bf16``) and ``off_paper`` (a learning rate other than the dataset's, or FedFomo's
    ``val_ratio``/``epsilon`` off the paper's 0.2/0.3: the run is an ablation, not a table cell).
    """
    out = dict(summary)
    part = cfg.get("partition") or {}
    out.setdefault("cluster_by", part.get("cluster_by"))
    out.setdefault("bf16", bool((cfg.get("sim") or {}).get("bf16", False)))
    lr, ds_lr = (cfg.get("optim") or {}).get("lr"), (cfg.get("dataset") or {}).get("lr")
    method = cfg.get("method") or {}
    off = (lr is not None and ds_lr is not None and float(lr) != float(ds_lr)) \
        or float(cfg.get("val_ratio", 0.2)) != 0.2 \
        or (method.get("epsilon") is not None and float(method["epsilon"]) != 0.3)
    out["off_paper"] = bool(off)
    return out


def build_tables(summaries: list[dict]) -> dict[CellKey, Cell]:
    """Every run in its cell (a no-DP FedAvg/FedFomo run at D=5 also fills Table 4's sigma=0 row).

    A seed counts once per cell: where several runs of one seed fall in a cell (the same setting
    rerun, e.g. on other hardware), the first one made counts (earliest ``ended``, the run's
    status.json time, then folder) and the others are counted in ``Cell.reruns``.
    """
    cells: dict[CellKey, Cell] = {}
    for s in sorted(summaries, key=lambda s: (str(s.get("ended") or ""), str(s.get("run_dir") or ""))):
        key = paper_cell(s)
        if key is None or s.get("final_mean_acc") is None:
            continue
        keys = [key]
        if key.table in ("table2", "table5") and key.column == 5 and key.row in ("fedavg", "fedfomo"):
            ds = "cifar10" if key.table == "table2" else "cifar100"
            keys.append(CellKey("table4", (ds, 0.0), key.row, key.scale, key.variant))
        for k in keys:
            cell = cells.setdefault(k, Cell(k))
            seed = int(s.get("seed", 0))
            if seed in cell.seeds:
                cell.reruns += 1
                continue
            cell.seeds.append(seed)
            cell.accs.append(100 * float(s["final_mean_acc"]))
            cell.client_stds.append(100 * float(s.get("final_std_acc") or 0.0))
            if s.get("dp_epsilon_max") is not None:
                cell.eps.append(float(s["dp_epsilon_max"]))
            cell.wall_s.append(float(s.get("wall_time_s") or 0.0))
            cell.hardware.append(hardware_name(s))
            if s.get("emd_authors") is not None:
                cell.emd_authors.append(float(s["emd_authors"]))
            if s.get("emd") is not None:
                cell.emd_ours.append(float(s["emd"]))
    return cells


def paper_of(key: CellKey) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """(paper accuracy (mean, std), paper epsilon (mean, std) or None) of a cell."""
    table, col, row = key.table, key.column, key.row
    if table == "table1":
        return paper.TABLE1.get(col, {}).get(row), None
    if table == "table2":
        return paper.TABLE2.get(col, {}).get(row), None
    if table == "table3":
        return paper.TABLE3.get(col, {}).get(row), None
    if table == "table5":
        return paper.TABLE5.get(col, {}).get(row), None
    ds, sigma = col
    entry = paper.DP.get((row, int(sigma)) if float(sigma).is_integer() else None, {}).get(ds)
    return (entry[1], entry[0]) if entry else (None, None)


def _fmt(mean_std: tuple[float, float] | None) -> str:
    return "-" if mean_std is None else f"{mean_std[0]:.2f} ± {mean_std[1]:.2f}"


def cell_text(cell: Cell) -> str:
    """Ours: ``mean ± std (n)``; the mark when outside the paper's spread."""
    acc, _ = paper_of(cell.key)
    mark = f" {MARK}" if acc is not None and paper.outside_spread(cell.mean, acc) else ""
    return f"{cell.mean:.2f} ± {cell.std:.2f} ({len(cell.accs)}){mark}"


def _column_order(col: object) -> tuple:
    """Numbers first (D=2 < D=10), then labels such as "10 (K-Means)", then (dataset, ...) tuples."""
    if isinstance(col, int):
        return (0, col, "")
    return (1, 0, str(col)) if isinstance(col, str) else (2, 0, str(col))


def _column_label(table: str, col: object) -> str:
    if table == "table1":
        return f"{col[0]} {col[1]} clients"
    if table in ("table2", "table5"):
        emd = (paper.TABLE2_EMD if table == "table2" else paper.TABLE5_EMD).get(col)
        ds = "cifar10" if table == "table2" else "cifar100"
        label = f"D={col}" + (" (class labels)" if col == 10 and PAPER_D10_CLUSTER_BY[ds] == "label" else "")
        return label + (f" (paper EMD {emd:.2f})" if emd is not None else "")
    if table == "table3":
        return str(col)
    return f"{col[0]} sigma={col[1]:g}"


TITLES = {
    "table1": "Table 1: pathological non-IID",
    "table2": "Table 2: CIFAR-10 latent non-IID, 15 clients",
    "table3": "Table 3: out-of-local-distribution targets, latent D=5, 15 clients",
    "table4": "Table 4: DP-SGD (delta 1e-5), latent D=5, 15 clients",
    "table5": "Table 5: CIFAR-100 latent non-IID, 15 clients",
    "table6": "Table 6: FedFomo-MA (model-average weighting), latent D=5, 15 clients",
}


def render(cells: dict[CellKey, Cell]) -> dict[str, str]:
    """One markdown table per (paper table, scale, variant): ``{name: markdown}``.

    Rows are methods (paper order), columns the table's settings; each cell "ours (seeds) / paper",
    ours being the mean ± std over seeds of the final personalized test accuracy (%), with
    :data:`MARK` where ours lies outside the paper's mean ± std. DP tables add epsilon.
    """
    groups: dict[tuple[str, str, str], list[Cell]] = {}
    for key, cell in cells.items():
        groups.setdefault((key.table, key.scale, key.variant), []).append(cell)
    out = {}
    for (table, scale, variant), group in sorted(groups.items(), key=lambda kv: kv[0]):
        cols = sorted({c.key.column for c in group}, key=_column_order)
        rows = sorted({c.key.row for c in group}, key=_row_order)
        by = {(c.key.row, c.key.column): c for c in group}
        head = f"**{TITLES[table]}** ({scale}{', ' + variant if variant else ''}): ours = mean ± std over seeds " \
               f"(number of seeds) / paper = mean ± std over its three runs; {MARK} = ours outside the paper's spread."
        lines = [head, "", "| method | " + " | ".join(_column_label(table, c) for c in cols) + " |",
                 "|---|" + "---|" * len(cols)]
        for r in rows:
            texts = []
            for col in cols:
                cell = by.get((r, col))
                acc, eps = paper_of(CellKey(table, col, r, scale, variant))
                ours = cell_text(cell) if cell else "not run"
                if cell and cell.eps:
                    ours += f", eps {np.mean(cell.eps):.2f}"
                theirs = _fmt(acc) + (f", eps {_fmt(eps)}" if eps else "")
                texts.append(f"{ours} / {theirs}")
            lines.append(f"| {NAMES.get(r, r)} | " + " | ".join(texts) + " |")
        lines.append("")
        lines.append(_footer(table, cols, group))
        name = re.sub(r"[^A-Za-z0-9_-]", "",
                      f"{table}_{scale}_{variant}".replace(" ", "").replace(",", "_").replace("=", "").strip("_"))
        out[name] = "\n".join(lines)
    return out


def _footer(table: str, cols: list, group: list[Cell]) -> str:
    """EMD of each column (the authors' measure and ours) and the wall time of one run."""
    parts = []
    for col in cols:
        cells = [c for c in group if c.key.column == col]
        authors = [v for c in cells for v in c.emd_authors]
        ours = [v for c in cells for v in c.emd_ours]
        emd = (f"EMD {np.mean(authors):.2f} (authors') / {np.mean(ours):.2f} (ours, W1)" if authors and ours
               else f"EMD {np.mean(ours):.2f} (ours, W1)" if ours else "EMD -")
        parts.append(f"{_column_label(table, col)}: {emd}")
    walls = [w / 60 for c in group for w in c.wall_s if w]
    wall = f"; one run took {min(walls):.1f}-{max(walls):.1f} min" if walls else ""
    hw = " / ".join(sorted({h for c in group for h in c.hardware})) or "hardware not recorded"
    reruns = sum(c.reruns for c in group)
    extra = (f"; {reruns} further run(s) of a seed already counted left out (the first run made of each seed "
             "counts)") if reruns else ""
    return "Per column: " + "; ".join(parts) + wall + f" ({hw}; see each run's summary.json){extra}."


def write_into(readme: str, tables: dict[str, str]) -> tuple[str, list[str]]:
    """Replace each ``<!-- report:NAME -->...<!-- /report:NAME -->`` block; return (text, names not found)."""
    missing = []
    for name, md in tables.items():
        start, end = f"<!-- report:{name} -->", f"<!-- /report:{name} -->"
        i, j = readme.find(start), readme.find(end)
        if i < 0 or j < i:
            missing.append(name)
            continue
        readme = readme[:i + len(start)] + "\n" + md + "\n" + readme[j:]
    return readme, missing
