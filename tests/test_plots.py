"""Figures of a run, on a synthetic run directory written into tmp_path."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedfomo.messages import decode_floats, decode_ids, encode_floats, encode_ids
from fedfomo.plots import (
    TIME_LABELS,
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


@pytest.fixture
def drawn(monkeypatch):
    """Figures the plot functions draw, captured instead of only their PNG bytes."""
    from fedfomo import plots

    figures = []
    save = plots._save

    def capture(fig, path):
        figures.append(fig)
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", capture)
    return figures


def test_affinity_heatmap_shows_p_reordered_with_the_diagonal_hidden(tmp_path, drawn):
    run = _write_run(tmp_path / "run")
    plot_affinity(run, [1, 3], tmp_path / "p.png")
    (fig,) = drawn
    heat = [ax for ax in fig.axes if ax.get_images()]
    assert [ax.get_title() for ax in heat] == ["P after round 1", "P after round 3"]
    order = [1, 3, 2, 5, 0, 4]  # clusters 0, 0, 1, 1, 2, 2
    for ax, r in zip(heat, (1, 3), strict=True):
        p = np.load(run / "affinity" / f"round_{r:03d}.npy")
        shown = ax.get_images()[0].get_array()
        assert shown.mask.diagonal().all() and not shown.mask[~np.eye(K, dtype=bool)].any()
        off = ~np.eye(K, dtype=bool)
        np.testing.assert_allclose(shown.data[off], p[np.ix_(order, order)][off])
        assert [t.get_text() for t in ax.get_xticklabels()] == [str(c) for c in order]
        assert ax.get_xlabel() and ax.get_ylabel()
        # two cluster boundaries, each drawn as one horizontal and one vertical line
        assert sorted(line.get_ydata()[0] for line in ax.get_lines() if line.get_ydata()[0] == line.get_ydata()[1]
                      and line.get_xdata()[0] != line.get_xdata()[1]) == [1.5, 3.5]
    assert "latent distribution" in fig._suptitle.get_text()


def test_client_weight_lines_are_the_logged_weights(tmp_path, drawn):
    run = _write_run(tmp_path / "run")
    with (run / "clients.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["cid"] == "2" and r["candidate_ids"]]
    expected: dict[int, list[tuple[int, float]]] = {}
    for row in rows:
        for n, w in zip(decode_ids(row["candidate_ids"]), decode_floats(row["weights"]), strict=True):
            if n != 2:
                expected.setdefault(int(n), []).append((int(row["round"]), float(w)))
    plot_client_weights(run, 2, tmp_path / "w.png")
    (fig,) = drawn
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert set(lines) == {f"client {n} ({name})" for n, name in
                          ((n, f"dist {[2, 0, 1, 0, 2, 1][n]}") for n in expected)}
    for n, points in expected.items():
        line = lines[f"client {n} (dist {[2, 0, 1, 0, 2, 1][n]})"]
        assert list(zip(line.get_xdata(), line.get_ydata(), strict=True)) == points
    assert ax.get_title().startswith("Client 2 (dist 1, val/test from dist 0)")
    assert ax.get_xlabel() == "round" and ax.get_ylabel() == "raw weight w_(2,n)"
    assert any(gl.get_visible() for gl in ax.get_xgridlines())


def test_time_split_bars_stack_the_logged_phases(tmp_path, drawn):
    run = _write_run(tmp_path / "run")
    plot_time_split(run, tmp_path / "t.png")
    (fig,) = drawn
    ax = fig.axes[0]
    stacks = ax.containers
    assert len(stacks) == 5
    # rounds.csv: eval 0 / 1.5 / 1.5, merge 0.01, train 4.0, test 0.3, communication 0.5
    tops = np.array([[b.get_y() + b.get_height() for b in bars] for bars in stacks])
    np.testing.assert_allclose(tops[:, 0], [0.0, 0.01, 4.01, 4.31, 4.81])
    np.testing.assert_allclose(tops[:, 2], [1.5, 1.51, 5.51, 5.81, 6.31])
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(legend) == sorted([*TIME_LABELS, "round wall time"])
    (wall,) = ax.get_lines()
    assert list(wall.get_xdata()) == [1, 2, 3] and list(wall.get_ydata()) == [3.0, 3.0, 3.0]
    assert ax.get_title() == "Time per round by phase" and ax.get_xlabel() == "round"
