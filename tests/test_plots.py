"""Figures of a run, on a synthetic run directory written into tmp_path."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedfomo.messages import encode_floats, encode_ids
from fedfomo.plots import (
    client_groups,
    client_weight_series,
    default_rounds,
    main,
    plot_affinity,
    plot_client_weights,
    plot_run,
    plot_time_split,
)
from fedfomo.results import CLIENT_FIELDS, ROUND_FIELDS

REPO = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
K, R = 6, 3


def _is_png(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG


def _write_run(d: Path, *, latent: bool = True, fomo: bool = True) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    clusters = [2, 0, 1, 0, 2, 1]
    pairs = [(3, 7), (0, 1), (3, 7), (0, 1), (5, 6), (2, 4)]
    clients = []
    for cid in range(K):
        counts = [0] * 10
        for c in pairs[cid]:
            counts[c] = 8
        entry = {"cid": cid, "train": counts, "val": [v // 4 for v in counts], "test": counts}
        if latent:
            entry |= {"cluster": clusters[cid], "target_cluster": clusters[(cid + 1) % K]}
        clients.append(entry)
    (d / "partition.json").write_text(json.dumps({"clients": clients, "emd": 1.0}))
    rounds, rows = [], []
    for r in range(1, R + 1):
        rounds.append({"round": r, "num_clients": K, "mean_acc": 0.5, "std_acc": 0.1, "mean_train_loss": 1.0,
                       "eval_candidates_s": 0.0 if r == 1 else 1.5, "merge_s": 0.01, "train_s": 4.0, "test_s": 0.3,
                       "comm_overhead_s": 0.5, "wall_s": 3.0, "download_mb": 1.0, "upload_mb": 1.0})
        for cid in range(K):
            ids = [cid, *rng.choice([j for j in range(K) if j != cid], size=3, replace=False)] if fomo and r > 1 else []
            rows.append({"round": r, "cid": cid, "test_acc": 0.5, "test_loss": 1.0, "train_loss": 1.0, "eval_s": 0.1,
                         "merge_s": 0.0, "train_s": 1.0, "test_s": 0.1, "reverted": 0,
                         "candidate_ids": encode_ids(ids), "weights": encode_floats(rng.normal(size=len(ids)))})
        if fomo:
            (d / "affinity").mkdir(exist_ok=True)
            np.save(d / "affinity" / f"round_{r:03d}.npy", np.eye(K) + rng.normal(scale=0.05, size=(K, K)))
    for name, fields, data in (("rounds.csv", ROUND_FIELDS, rounds), ("clients.csv", CLIENT_FIELDS, rows)):
        with (d / name).open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(data)
    return d


def test_client_groups_latent_by_cluster_pathological_by_class_pair(tmp_path):
    latent = json.loads((_write_run(tmp_path / "a") / "partition.json").read_text())
    order, group, names = client_groups(latent)
    assert order.tolist() == [1, 3, 2, 5, 0, 4] and group.tolist() == [2, 0, 1, 0, 2, 1]
    assert names == ["dist 0", "dist 1", "dist 2"]
    patho = json.loads((_write_run(tmp_path / "b", latent=False) / "partition.json").read_text())
    order, group, names = client_groups(patho)
    assert names == ["classes 0,1", "classes 2,4", "classes 3,7", "classes 5,6"]
    assert order.tolist() == [1, 3, 5, 0, 2, 4]


def test_default_rounds():
    assert default_rounds([]) == []
    assert default_rounds([1]) == [1]
    assert default_rounds(list(range(1, 21))) == [1, 10, 20]


def test_affinity_heatmap_png(tmp_path):
    run = _write_run(tmp_path / "run")
    assert _is_png(plot_affinity(run, [1, 3], tmp_path / "out" / "p.png"))
    assert _is_png(plot_affinity(run, [2], tmp_path / "out" / "p_diag.png", show_diagonal=True))
    with pytest.raises(ValueError, match="available: \\[1, 2, 3\\]"):
        plot_affinity(run, [7], tmp_path / "x.png")


def test_client_weights_png_and_series(tmp_path):
    run = _write_run(tmp_path / "run")
    series = client_weight_series(run, 0)
    assert series and 0 not in series and all(set(rs) <= {2, 3} for rs, _ in series.values())
    assert _is_png(plot_client_weights(run, 0, tmp_path / "w0.png"))
    with pytest.raises(ValueError, match="does not exist"):
        plot_client_weights(run, 9, tmp_path / "w9.png")


def test_time_split_png(tmp_path):
    assert _is_png(plot_time_split(_write_run(tmp_path / "run"), tmp_path / "t.png"))


def test_plot_run_skips_what_a_non_fomo_run_lacks(tmp_path):
    run = _write_run(tmp_path / "run", latent=False, fomo=False)
    written, skipped = plot_run(run, clients=[1])
    assert [p.name for p in written] == ["time_split.png"] and all(_is_png(p) for p in written)
    assert len(skipped) == 2 and "affinity" in skipped[0] and "client 1" in skipped[1]


def test_cli_regenerates_every_figure(tmp_path):
    run = _write_run(tmp_path / "run")
    assert main([str(run), "--rounds", "1", "3", "--client", "0", "4", "--out", str(tmp_path / "figs")]) == 0
    names = sorted(p.name for p in (tmp_path / "figs").glob("*.png"))
    assert names == ["affinity.png", "time_split.png", "weights_client_00.png", "weights_client_04.png"]
    assert all(_is_png(tmp_path / "figs" / n) for n in names)
    assert main([str(tmp_path / "nothing")]) == 2


def test_cli_as_module_defaults_to_run_figures(tmp_path):
    run = _write_run(tmp_path / "run")
    proc = subprocess.run([sys.executable, "-m", "fedfomo.plots", str(run)], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert len(list((run / "figures").glob("*.png"))) == 3
