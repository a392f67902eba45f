"""Ablation figures (Fig. 3, Fig. 9) from saved runs: grouping by the swept settings, the PNG."""

from __future__ import annotations

import json

import pytest

from fedfomo.ablation import group, load_runs, plot_ablation


def _run(folder, eps, m, seed, acc):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"method:\n  epsilon: {eps}\n  num_models: {m}\nval_ratio: 0.2\nseed: {seed}\n")
    (folder / "summary.json").write_text(json.dumps({"final_mean_acc": acc, "dataset": "cifar10",
                                                     "partition": "latent", "samples_per_client": 1000}))
    (folder / "rounds.csv").write_text("round,mean_acc\n1,0.2\n2,0.4\n")


def test_groups_by_line_and_x_with_one_run_per_seed(tmp_path):
    for eps in (0.0, 0.3):
        for m in (5, 10):
            for seed in (0, 1):
                _run(tmp_path / f"e{eps}_m{m}_s{seed}", eps, m, seed, 0.5 + eps + m / 100 + seed / 1000)
    runs = load_runs([tmp_path])
    g = group(runs, "method.epsilon", "method.num_models")
    assert sorted(g) == [5, 10] and sorted(g[5]) == [0.0, 0.3] and len(g[10][0.3]) == 2
    assert sorted(float(r["summary"]["final_mean_acc"]) for r in g[10][0.3]) == [0.9, 0.901]
    out = plot_ablation("fig3", [tmp_path], tmp_path / "fig3.png")
    assert out.stat().st_size > 10_000


def test_no_runs_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match="no completed run"):
        plot_ablation("fig9", [tmp_path], tmp_path / "x.png")
