"""Paper tables from saved runs: cell placement, averaging over seeds, the spread mark, README markers."""

from __future__ import annotations

from fedfomo.tables import MARK, CellKey, build_tables, enrich, paper_cell, render, write_into


def _s(**kw):
    base = {"method": "fedfomo", "dataset": "cifar10", "partition": "latent", "num_clients": 15, "num_rounds": 20,
            "local_epochs": 5, "seed": 0, "samples_per_client": 1000, "num_distributions": 5, "num_models": 5,
            "shuffle_targets": False, "dp": {"enabled": False}, "final_mean_acc": 0.85, "final_std_acc": 0.1,
            "wall_time_s": 60.0}
    return {**base, **kw}


def test_cells():
    assert paper_cell(_s()) == CellKey("table2", 5, "fedfomo", "samples_per_client=1000")
    assert paper_cell(_s(num_models=10)).row == "fedfomo_m10"
    assert paper_cell(_s(shuffle_targets=True)).table == "table3"
    assert paper_cell(_s(dataset="cifar100", test_split="CIFAR-100 held-out test")).table == "table5"
    assert paper_cell(_s(dp={"enabled": True, "noise_multiplier": 2.0})) == CellKey(
        "table4", ("cifar10", 2.0), "fedfomo", "samples_per_client=1000")
    assert paper_cell(_s(method="fedfomo_ma")).table == "table6"
    assert paper_cell(_s(partition="pathological", dataset="mnist", samples_per_client=None)) == CellKey(
        "table1", ("mnist", 15), "fedfomo", "full scale")
    assert paper_cell(_s(num_clients=20)) is None
    assert paper_cell(enrich(_s(), {"val_ratio": 0.4})) is None  # a Fig. 9 run
    assert paper_cell(enrich(_s(), {"optim": {"lr": 5.0}, "dataset": {"lr": 0.1}})) is None


def test_seeds_averaged_and_no_dp_run_fills_table4_sigma0():
    cells = build_tables([_s(seed=0, final_mean_acc=0.80), _s(seed=1, final_mean_acc=0.90),
                          _s(seed=1, final_mean_acc=0.90)])
    cell = cells[CellKey("table2", 5, "fedfomo", "samples_per_client=1000")]
    assert cell.seeds == [0, 1] and abs(cell.mean - 85.0) < 1e-9 and abs(cell.std - 5.0) < 1e-9
    assert cell.reruns == 1
    assert CellKey("table4", ("cifar10", 0.0), "fedfomo", "samples_per_client=1000") in cells


def test_fixed_sampling_runs_form_a_variant_of_their_own():
    path = dict(partition="pathological", dataset="mnist", samples_per_client=None, num_clients=100,
                participation=0.1)
    assert paper_cell(_s(**path)).variant == ""
    assert paper_cell(_s(**path, sampling="fresh")).variant == ""
    assert paper_cell(_s(**path, sampling="fixed")).variant == "sampling=fixed"
    # every client in every round: the draw changes nothing, so the run fills the default cell
    assert paper_cell(_s(**{**path, "num_clients": 15, "participation": 1.0}, sampling="fixed")).variant == ""


def test_a_rerun_of_a_seed_counts_once_the_first_made_wins_whatever_the_order():
    first = _s(final_mean_acc=0.80, ended="2026-01-01T10:00:00+00:00", run_dir="z/cpu")
    later = _s(final_mean_acc=0.90, ended="2026-02-01T10:00:00+00:00", run_dir="a/gpu")
    for order in ([first, later], [later, first]):
        cell = build_tables(order)[CellKey("table2", 5, "fedfomo", "samples_per_client=1000")]
        assert cell.accs == [80.0] and cell.reruns == 1
    md = render(build_tables([first, later]))["table2_samples_per_client1000"]
    assert "80.00 ± 0.00 (1)" in md and "1 further run(s) of a seed already counted left out" in md


def test_render_marks_outside_the_papers_spread_and_writes_between_markers():
    # paper Table 2 D=5 FedFomo: 85.05 +- 0.13
    inside = render(build_tables([_s(final_mean_acc=0.8510)]))
    outside = render(build_tables([_s(final_mean_acc=0.8600)]))
    assert sorted(inside) == ["table2_samples_per_client1000", "table4_samples_per_client1000"]
    name, md = "table2_samples_per_client1000", inside["table2_samples_per_client1000"]
    assert "85.10 ± 0.00 (1) / 85.05 ± 0.13" in md and MARK not in md.split("\n")[-1]
    assert f"86.00 ± 0.00 (1) {MARK} / 85.05 ± 0.13" in outside[name]
    assert "/ 71.56 ± 1.20" in inside["table4_samples_per_client1000"]  # sigma 0 = no DP
    text, missing = write_into(f"a\n<!-- report:{name} -->\nold\n<!-- /report:{name} -->\nb", {name: md})
    assert missing == [] and "old" not in text and md in text and text.startswith("a\n") and text.endswith("\nb")
    assert write_into("nothing", {name: md})[1] == [name]


def test_report_writes_the_tables_into_the_readme(tmp_path, capsys):
    import json

    from fedfomo.report import main

    run = tmp_path / "results" / "x" / "fedfomo_s0"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps(_s(final_mean_acc=0.9)))
    (run / "config.yaml").write_text("val_ratio: 0.2\noptim:\n  lr: 0.1\ndataset:\n  lr: 0.1\n")
    readme = tmp_path / "README.md"
    name = "table2_samples_per_client1000"
    readme.write_text(f"# x\n<!-- report:{name} -->\n<!-- /report:{name} -->\n")
    main([str(tmp_path / "results"), "--readme", str(readme)])
    assert "90.00 ± 0.00 (1) † / 85.05 ± 0.13" in readme.read_text()
    assert "1 table(s) written; no markers for: table4_samples_per_client1000" in capsys.readouterr().out


def test_d10_label_clusters_is_the_papers_column_and_kmeans_d10_is_apart():
    assert paper_cell(_s(num_distributions=10, cluster_by="label")).column == 10
    assert paper_cell(_s(num_distributions=10, cluster_by="kmeans")).column == "10 (K-Means)"
    cells = build_tables([_s(num_distributions=d, cluster_by="label" if d == 10 else "kmeans") for d in (10, 2, 5)])
    md = render(cells)["table2_samples_per_client1000"]
    header = md.split("\n")[2]
    assert header.index("D=2 ") < header.index("D=5 ") < header.index("D=10 (class labels)")


def test_cifar100_d10_kmeans_is_the_papers_column():
    c100 = {"dataset": "cifar100", "test_split": "CIFAR-100 held-out test"}
    assert paper_cell(_s(num_distributions=10, cluster_by="kmeans", **c100)).column == 10
    md = next(iter(render(build_tables([_s(num_distributions=10, cluster_by="kmeans", final_mean_acc=0.24,
                                             **c100)])).values()))
    assert "| D=10 (paper EMD 2.71) |" in md and "24.00 ± 0.00 (1) † / 44.29 ± 1.22" in md


def test_marker_names_of_held_out_tables_are_plain():
    held_out = "CIFAR-100 held-out test (10000 train images, seed 0)"
    names = sorted(render(build_tables([_s(dataset="cifar100", test_split=held_out)])))
    assert names == ["table4_samples_per_client1000_CIFAR-100held-outtest10000trainimages_seed0",
                     "table5_samples_per_client1000_CIFAR-100held-outtest10000trainimages_seed0"]


def test_augmented_runs_get_cells_of_their_own():
    assert paper_cell(_s(augment="crop_flip")).variant == "augment=crop_flip"
    assert paper_cell(_s(augment="none")) == paper_cell(_s())


def test_another_model_or_bf16_gets_cells_of_their_own():
    assert paper_cell(_s(model="cnn_authors")) == paper_cell(_s())
    assert paper_cell(_s(model="cnn_mcmahan")).variant == "model=cnn_mcmahan"
    bf16 = enrich(_s(model="cnn_mcmahan"), {"sim": {"bf16": True}})
    assert paper_cell(bf16).variant == "model=cnn_mcmahan, bf16"
    assert paper_cell(enrich(_s(), {"sim": {"bf16": False}})) == paper_cell(_s())


def test_authors_options_runs_of_every_d_share_one_variant():
    opts = "affinity_norm=abs_sum, extra_candidates=both, num_subfederations={}"
    d2 = paper_cell(_s(num_distributions=2, authors_options=opts.format(2)))
    d3 = paper_cell(_s(num_distributions=3, authors_options=opts.format(3)))
    assert d2.variant == d3.variant == "authors options affinity_norm=abs_sum, extra_candidates=both"
    assert d2.column != d3.column
    other = paper_cell(_s(num_distributions=3, authors_options=opts.format(2)))  # not their setting: kept
    assert other.variant.endswith("num_subfederations=2")


def test_hardware_name_is_the_gpu_or_the_cpu_and_its_cores():
    from fedfomo.tables import hardware_name

    gpu = "Intel(R) Xeon(R), 16 cores, 1 torch thread(s) per client, torch 2.11.0, NVIDIA H200, 0.125 GPU per client"
    assert hardware_name({"hardware": gpu}) == "NVIDIA H200"
    cpu = "AMD EPYC, 2 cores, 1 torch thread(s) per client, torch 2.14.1, CPU"
    assert hardware_name({"hardware": cpu}) == "AMD EPYC, 2 cores"
    assert hardware_name({}) == ""


def test_a_method_unknown_to_the_tables_gets_a_row_after_the_known_ones():
    md = render(build_tables([_s(method="my_method", final_mean_acc=0.5), _s(method="local", final_mean_acc=0.7),
                              _s()]))["table2_samples_per_client1000"]
    rows = [line.split(" | ")[0] for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows == ["| method", "| Local Training", "| FedFomo (M=5)", "| my_method"]
    assert "| my_method | 50.00 ± 0.00 (1) / - |" in md
