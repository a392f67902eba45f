"""Result tables: labels, the paper's numbers per setting, EMD and grouping over seeds."""

from __future__ import annotations

import json

from fedfomo import report


def _summary(**kw) -> dict:
    base = {"method": "fedfomo", "dataset": "cifar10", "partition": "pathological", "num_clients": 15,
            "num_rounds": 20, "participation": 1.0, "local_epochs": 5, "seed": 0, "samples_per_client": None,
            "num_models": 5, "emd": 2.0, "wall_time_s": 120.0, "final_mean_acc": 0.9, "final_std_acc": 0.05}
    return {**base, **kw}


def test_paper_values_per_table():
    assert report.paper_value(_summary()) == 93.01
    assert report.paper_value(_summary(dataset="mnist", num_clients=100, method="local")) == 94.25
    latent = {"partition": "latent", "num_distributions": 5, "embedder": "vgg11"}
    assert report.paper_value(_summary(**latent)) == 85.050
    assert report.paper_value(_summary(**latent, method="fedavg", shuffle_targets=True)) == 23.11
    assert report.paper_value(_summary(**{**latent, "num_distributions": 2}, method="local")) == 60.03
    assert report.paper_value(_summary(**latent, num_models=10)) is None  # the tables quoted are n=5
    assert report.paper_value(_summary(partition="iid")) is None


def test_partition_label():
    assert report.partition_label(_summary()) == "pathological"
    assert report.partition_label(_summary(partition="latent", num_distributions=5, embedder="vgg11",
                                           shuffle_targets=True)) == "latent D=5, shuffled"
    assert report.partition_label(_summary(partition="latent", num_distributions=3, embedder="pixels",
                                           shuffle_targets=False)) == "latent D=3 (pixels)"


def test_table_groups_seeds_and_prints_emd_and_scale(tmp_path):
    for seed, acc in ((0, 0.8), (1, 0.9)):
        d = tmp_path / f"s{seed}"
        d.mkdir()
        (d / "summary.json").write_text(json.dumps(_summary(seed=seed, final_mean_acc=acc, samples_per_client=500)))
    table = report.markdown_table(report.load_summaries([tmp_path]))
    row = table.splitlines()[2]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:3] == ["cifar10", "pathological", "2.00"]
    assert cells[7] == "85.00 ± 5.00 (± 5.00 over seeds)" and cells[8] == "93.01" and cells[9] == "2"
    assert cells[11] == "scaled down: 500 samples/client"
