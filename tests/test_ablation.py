"""Ablation figures (Fig. 3, Fig. 9) from saved runs: grouping by the swept settings, the PNG."""

from __future__ import annotations

import json

import pytest

from fedfomo.ablation import group, hardware, load_runs, plot_ablation


def _run(folder, eps, m, seed, acc, method="fedfomo", spc=1000, hw="AMD EPYC, 2 cores"):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"method:\n  name: {method}\n  epsilon: {eps}\n  num_models: {m}\n"
                                        f"val_ratio: 0.2\nseed: {seed}\n")
    (folder / "summary.json").write_text(json.dumps({"final_mean_acc": acc, "dataset": "cifar10", "hardware": hw,
                                                     "partition": "latent", "samples_per_client": spc}))
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
    with pytest.raises(SystemExit, match="no completed FedFomo run"):
        plot_ablation("fig9", [tmp_path], tmp_path / "x.png")


def test_other_methods_are_skipped_and_hardware_named(tmp_path):
    _run(tmp_path / "fomo", 0.3, 5, 0, 0.8, hw="Xeon, 16 cores, torch 2.11, NVIDIA H200, 0.125 GPU per client")
    _run(tmp_path / "avg", 0.3, 5, 0, 0.4, method="fedavg")
    runs = load_runs([tmp_path])
    assert [r["summary"]["final_mean_acc"] for r in runs] == [0.8]
    assert hardware(runs[0]["summary"]) == "NVIDIA H200"
    assert hardware({"hardware": "AMD EPYC 7B13, 2 cores, 1 torch thread(s) per client, torch 2.14.1"}) == "CPU"


def test_runs_of_different_settings_are_refused_in_one_line(tmp_path):
    _run(tmp_path / "a", 0.3, 5, 0, 0.8)
    _run(tmp_path / "b", 0.3, 5, 1, 0.8, spc=500)
    with pytest.raises(SystemExit, match="differ in samples_per_client"):
        plot_ablation("fig3", [tmp_path], tmp_path / "x.png")


def test_a_run_whose_config_lacks_the_swept_key_is_skipped(tmp_path, capsys):
    _run(tmp_path / "a", 0.3, 5, 0, 0.8)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.yaml").write_text("method:\n  name: fedfomo\nseed: 0\n")
    (tmp_path / "old" / "summary.json").write_text(json.dumps({"final_mean_acc": 0.1}))
    (tmp_path / "old" / "rounds.csv").write_text("round,mean_acc\n1,0.1\n")
    g = group(load_runs([tmp_path]), "method.epsilon", "method.num_models")
    assert list(g) == [5] and [r["summary"]["final_mean_acc"] for r in g[5][0.3]] == [0.8]
    assert "does not record method.epsilon" in capsys.readouterr().err


def test_a_config_of_the_old_layout_is_read_from_its_fomo_keys(tmp_path):
    _run(tmp_path / "a", 0.3, 5, 1, 0.8)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.yaml").write_text("method:\n  name: fedfomo\nseed: 0\n"
                                                  "fomo:\n  num_models: 5\n  epsilon: 0.3\n")
    (tmp_path / "old" / "summary.json").write_text(json.dumps({"final_mean_acc": 0.6}))
    (tmp_path / "old" / "rounds.csv").write_text("round,mean_acc\n1,0.1\n")
    g = group(load_runs([tmp_path]), "method.epsilon", "method.num_models")
    assert sorted(r["summary"]["final_mean_acc"] for r in g[5][0.3]) == [0.6, 0.8]


def test_line_order_is_numeric_and_seed_count_label():
    from fedfomo.ablation import _order, _seed_count

    assert sorted([10, 3, 5, None], key=_order) == [3, 5, 10, None]
    assert _seed_count([[1.0]]) == "1 seed"
    assert _seed_count([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]) == "3 seeds"
    assert _seed_count([[1.0], [1.0, 2.0]]) == "1-2 seeds"
