"""Result tables: labels, the paper's numbers per setting, EMD and grouping over seeds."""

from __future__ import annotations

import json

import pytest

from fedfomo import report


def _summary(**kw) -> dict:
    base = {"method": "fedfomo", "dataset": "cifar10", "partition": "pathological", "num_clients": 15,
            "num_rounds": 20, "participation": 1.0, "local_epochs": 5, "seed": 0, "samples_per_client": None,
            "num_models": 5, "emd": 2.0, "wall_time_s": 120.0, "final_mean_acc": 0.9, "final_std_acc": 0.05}
    return {**base, **kw}


def test_paper_values_per_table():
    assert report.paper_value(_summary()) == 93.01
    assert report.paper_value(_summary(dataset="mnist", num_clients=100, method="local")) == 94.25
    assert report.paper_value(_summary(num_models=10)) == 92.73  # Table 1's "Ours (n=10)" row
    assert report.paper_value(_summary(num_models=3)) is None  # an ablation, no Table 1 row
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
    assert cells[:4] == ["cifar10", "pathological", "2.00", "-"]  # no emd_authors, no partition.json
    assert cells[8] == "85.00 ± 5.00 (± 5.00 over seeds)" and cells[9] == "93.01" and cells[10] == "2"
    assert cells[12] == "scaled down: 500 samples/client"


def _row(table: str) -> list[str]:
    return [c.strip() for c in table.splitlines()[2].strip("|").split("|")]


def test_authors_emd_column_from_summary_or_partition_json(tmp_path):
    new = tmp_path / "new"
    new.mkdir()
    (new / "summary.json").write_text(json.dumps(_summary(emd_authors=2.7)))
    assert _row(report.markdown_table(report.load_summaries([new])))[2:4] == ["2.00", "2.70"]
    # an older run: recomputed from partition.json (train + val counts vs CIFAR-10's balanced train split)
    old = tmp_path / "old"
    old.mkdir()
    (old / "summary.json").write_text(json.dumps(_summary()))
    one_class = [0] * 10
    one_class[3] = 90
    val = [0] * 10
    val[3] = 10
    clients = [{"cid": 0, "train": one_class, "val": val, "test": val},
               {"cid": 1, "train": [9] * 10, "val": [1] * 10, "test": [1] * 10}]
    (old / "partition.json").write_text(json.dumps({"clients": clients, "emd": 2.0}))
    (s,) = report.load_summaries([old])
    assert report.authors_emd_of(s) == pytest.approx((2.7 + 0.0) / 2)
    assert _row(report.markdown_table([s]))[3] == "1.35"
    # shuffled targets: partition.json has the val set after the shuffle, not the local data measured
    assert report.authors_emd_of({**s, "shuffle_targets": True}) is None
    assert report.authors_emd_of({**s, "shuffle_targets": True, "emd_authors": 2.5}) == 2.5
    # unknown dataset or unreadable counts: "-"
    assert report.authors_emd_of({**s, "dataset": "svhn"}) is None
    (old / "partition.json").write_text(json.dumps({"clients": [{"cid": 0, "train": [1, 2], "val": [0, 0]}]}))
    assert report.authors_emd_of(s) is None


def test_label_clusters_are_labelled():
    s = _summary(partition="latent", num_distributions=10, embedder="vgg11", cluster_by="label")
    assert report.partition_label(s) == "latent D=10 (label clusters)"
    assert report.partition_label({**s, "cluster_by": "kmeans"}) == "latent D=10"
    assert report.paper_value({**s, "method": "local"}) == 92.64


def test_wall_time_counts_every_attempt_also_for_older_resumed_runs(tmp_path):
    new = {"wall_time_s": 300.0, "wall_time_attempt_s": 100.0, "attempts": 2}
    assert report.wall_time_of(new) == 300.0  # newer summaries already count every attempt
    (tmp_path / "rounds.csv").write_text("round,mean_acc,wall_s\n1,0.1,60\n2,0.2,70\n3,0.3,80\n")
    old = {"wall_time_s": 90.0, "attempts": 2, "final_evaluation_s": 5.0, "run_dir": str(tmp_path)}
    assert report.wall_time_of(old) == 60 + 70 + 80 + 5  # last attempt only: the rounds' sum is larger
    assert report.wall_time_of({**old, "attempts": 1}) == 90.0  # never resumed: its own wall time
    assert report.wall_time_of({**old, "run_dir": str(tmp_path / "gone")}) == 90.0
