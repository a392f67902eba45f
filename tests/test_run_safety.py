"""Run safety: one run per folder, status.json, kill + resume bit for bit, signals, divergence, failures."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedfomo import checkpoint
from fedfomo.launch import processes_with_env
from fedfomo.runs import RunFolderError, atomic_write_text, claim, read_status, write_status
from tests.inprocess import run_in_process

REPO = Path(__file__).resolve().parents[1]
BASE = ["dataset=mnist", "num_clients=4", "local_epochs=1", "samples_per_client=150", "sim.progress=false",
        "optim.lr=0.05"]
ACCURACY_COLUMNS = ("round", "num_clients", "mean_acc", "std_acc", "mean_train_loss", "diverged", "failed")


def _main(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedfomo.main", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def _rounds(path: Path, columns=ACCURACY_COLUMNS) -> list[tuple]:
    with (path / "rounds.csv").open() as f:
        return [tuple(row[c] for c in columns) for row in csv.DictReader(f)]


def _clients(path: Path) -> list[tuple]:
    cols = ("round", "cid", "test_acc", "test_loss", "train_loss", "candidate_ids", "weights", "diverged")
    with (path / "clients.csv").open() as f:
        return [tuple(row[c] for c in cols) for row in csv.DictReader(f)]


# -- the folder --------------------------------------------------------------------------------------
def test_claim_refuses_a_used_folder_and_names_both_ways_out(tmp_path):
    claim(tmp_path / "new", resume=False)  # absent: fine
    (tmp_path / "hydra_only" / ".hydra").mkdir(parents=True)
    claim(tmp_path / "hydra_only", resume=False)  # Hydra's own files are not a run
    used = tmp_path / "used"
    used.mkdir()
    write_status(used, status="completed", round=3, num_rounds=3)
    (used / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(RunFolderError) as err:
        claim(used, resume=False)
    msg = str(err.value)
    assert "\n" not in msg and str(used) in msg and "hydra.run.dir=" in msg and f"resume={used}" in msg
    with pytest.raises(RunFolderError, match="already completed"):
        claim(used, resume=True)
    with pytest.raises(RunFolderError, match="no run to resume"):
        claim(tmp_path / "new", resume=True)


def test_atomic_write_leaves_old_or_new_and_no_temporary_files(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_client_state_round_trip_and_retention(tmp_path):
    state = RecordDict()
    state["baseline"] = ArrayRecord([np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(2)])
    state["dp_history"] = ConfigRecord({"noise": [1.0, 1.0], "steps": [3, 4]})
    for rnd in (1, 2, 3):
        checkpoint.save_client(tmp_path, 7, rnd, state, checkpointed=rnd - 1)
    files = sorted(p.name for p in checkpoint.client_folder(tmp_path, 7).iterdir())
    assert files == ["round_0002.json", "round_0002.npys", "round_0003.json", "round_0003.npys"]
    out = RecordDict()
    out["stale"] = ConfigRecord({"x": 1})
    assert checkpoint.restore_client(tmp_path, 7, 2, out) == 2
    assert set(out.keys()) == {"baseline", "dp_history"}
    np.testing.assert_array_equal(out["baseline"].to_numpy_ndarrays()[0], np.arange(6).reshape(2, 3))
    assert list(out["dp_history"]["steps"]) == [3, 4]
    assert checkpoint.restore_client(tmp_path, 7, 1, out) == 0 and len(out.keys()) == 0


def test_client_state_of_an_older_version_npz_is_restored_and_retired(tmp_path):
    state = RecordDict()
    state["baseline"] = ArrayRecord([np.arange(6, dtype=np.float32).reshape(2, 3)])
    folder = checkpoint.client_folder(tmp_path, 3)
    arrays, meta = checkpoint.state_to_files(state)
    folder.mkdir(parents=True)
    (folder / "round_0001.json").write_text(json.dumps(meta))
    np.savez(folder / "round_0001.npz", **arrays)  # how versions before .npys saved it
    out = RecordDict()
    assert checkpoint.restore_client(tmp_path, 3, 1, out) == 1
    np.testing.assert_array_equal(out["baseline"].to_numpy_ndarrays()[0], np.arange(6).reshape(2, 3))
    checkpoint.save_client(tmp_path, 3, 2, state, checkpointed=2)
    checkpoint.save_client(tmp_path, 3, 3, state, checkpointed=2)  # round 1 no longer needed: both formats go
    assert sorted(p.name for p in folder.iterdir()) == ["round_0002.json", "round_0002.npys",
                                                        "round_0003.json", "round_0003.npys"]


def test_npys_round_trip_keeps_names_order_and_bits_and_refuses_a_damaged_file(tmp_path):
    from fedfomo.runs import atomic_save_arrays, load_arrays

    saved = {"b/0": np.asfortranarray(np.random.default_rng(1).random((3, 2))), "a": np.array(2.5),
             "empty": np.zeros((0, 3), np.float32), "flags": np.array([True, False]), "名": np.int64([7])}
    atomic_save_arrays(tmp_path / "x.npys", saved)
    got = load_arrays(tmp_path / "x.npys")
    assert list(got) == list(saved)
    for k, value in saved.items():
        assert got[k].dtype == value.dtype and got[k].shape == value.shape
        np.testing.assert_array_equal(got[k], value)
    atomic_save_arrays(tmp_path / "none.npys", {})
    assert load_arrays(tmp_path / "none.npys") == {}
    data = (tmp_path / "x.npys").read_bytes()
    (tmp_path / "short.npys").write_bytes(data[:-4])
    (tmp_path / "long.npys").write_bytes(data + b"xx")
    with pytest.raises(ValueError):
        load_arrays(tmp_path / "short.npys")
    with pytest.raises(ValueError, match="bytes after"):
        load_arrays(tmp_path / "long.npys")


def test_a_reused_file_is_overwritten_in_place_and_cut_to_its_new_length(tmp_path):
    from fedfomo.runs import atomic_save_arrays, load_arrays

    old, new = tmp_path / "old.npys", tmp_path / "new.npys"
    atomic_save_arrays(old, {"w": np.ones(1000)})
    inode = old.stat().st_ino
    atomic_save_arrays(new, {"w": np.arange(3.0)}, durable=False, reuse=old)
    assert not old.exists() and new.stat().st_ino == inode  # the same file, renamed and overwritten
    np.testing.assert_array_equal(load_arrays(new)["w"], np.arange(3.0))  # no bytes of the longer old content left
    atomic_write_text(tmp_path / "t.json", "{}", reuse=tmp_path / "gone.json")  # a missing one: a new file
    assert (tmp_path / "t.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.npys", "t.json"]  # no temporary file left


def test_npy_records_are_written_as_they_are_and_anything_else_refused(tmp_path):
    import io

    from fedfomo.runs import atomic_save_arrays, load_arrays

    buf = io.BytesIO()
    np.save(buf, np.arange(6, dtype=np.float32).reshape(2, 3))
    atomic_save_arrays(tmp_path / "x.npys", {"raw": buf.getvalue(), "array": np.array([1, 2])})
    got = load_arrays(tmp_path / "x.npys")
    np.testing.assert_array_equal(got["raw"], np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(got["array"], [1, 2])
    with pytest.raises(ValueError, match=r"\.npy record"):
        atomic_save_arrays(tmp_path / "y.npys", {"raw": b"not an array"})
    assert not (tmp_path / "y.npys").exists()


@pytest.mark.parametrize("durable", [True, False])
def test_client_state_files_are_reused_and_restore_the_same_state(tmp_path, durable):
    state = RecordDict()
    weights = [np.random.default_rng(0).random((40, 30)).astype(np.float32), np.arange(5.0)]
    state["baseline"] = ArrayRecord(weights)
    state["dp_history"] = ConfigRecord({"steps": [3]})
    folder = checkpoint.client_folder(tmp_path, 2)
    checkpoint.save_client(tmp_path, 2, 1, state, checkpointed=0, durable=durable)
    checkpoint.save_client(tmp_path, 2, 2, state, checkpointed=1, durable=durable)
    inodes = {p.suffix: p.stat().st_ino for p in folder.glob("round_0001.*")}
    checkpoint.save_client(tmp_path, 2, 3, state, checkpointed=2, durable=durable)  # round 1's files are reused
    assert sorted(p.name for p in folder.iterdir()) == ["round_0002.json", "round_0002.npys",
                                                        "round_0003.json", "round_0003.npys"]
    assert {p.suffix: p.stat().st_ino for p in folder.glob("round_0003.*")} == inodes
    out = RecordDict()
    assert checkpoint.restore_client(tmp_path, 2, 3, out) == 3
    for got, want in zip(out["baseline"].to_numpy_ndarrays(), weights):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    assert list(out["dp_history"]["steps"]) == [3]


def test_client_state_leaves_the_context_after_each_message_and_comes_back_from_its_file(tmp_path):
    from flwr.app import Context

    from fedfomo.client_app import MARKER, ON_DISK, offload_state, sync_state

    weights = [np.random.default_rng(1).random((30, 20)).astype(np.float32), np.arange(4.0)]
    ctx = Context(run_id=1, node_id=7, node_config={"partition-id": 3}, state=RecordDict(), run_config={})
    config = {"run_dir": str(tmp_path), "attempt": 1}
    assert sync_state(ctx, config, 3) is None and list(ctx.state.keys()) == [MARKER]  # nothing on disk yet
    ctx.state["baseline"] = ArrayRecord(weights)
    ctx.state["dp_history"] = ConfigRecord({"steps": [4, 5]})
    checkpoint.save_client(tmp_path, 3, 2, ctx.state, checkpointed=1)
    offload_state(ctx, 2)
    assert sorted(ctx.state.keys()) == sorted([MARKER, ON_DISK])  # no model travels with the context
    assert sync_state(ctx, config, 3) == 2
    for got, want in zip(ctx.state["baseline"].to_numpy_ndarrays(), weights):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    assert list(ctx.state["dp_history"]["steps"]) == [4, 5] and ON_DISK not in ctx.state
    # without a folder nothing is offloaded or read: the context keeps the state
    assert sync_state(ctx, {"attempt": 1}, 3) is None and "baseline" in ctx.state
    offload_state(ctx, 2)
    for f in checkpoint.client_folder(tmp_path, 3).iterdir():
        f.unlink()
    with pytest.raises(RuntimeError, match="client 3: its state file of round 2 is missing"):
        sync_state(ctx, config, 3)


def test_model_store_keeps_weights_or_a_blob_path_and_reads_the_blob_on_each_access(tmp_path):
    store = checkpoint.ModelStore()
    store[4] = [np.ones(3)]
    path = checkpoint.put_blob(tmp_path, "store_2_r0001", [np.arange(3.0)])
    store.set_path(2, path)
    assert list(store) == [4, 2] and len(store) == 2 and store.in_memory(4) and not store.in_memory(2)
    np.testing.assert_array_equal(store[2][0], np.arange(3.0))
    checkpoint.put_blob(tmp_path, "store_2_r0001", [np.full(3, 7.0)])  # nothing cached: the file as it is now
    np.testing.assert_array_equal(store[2][0], np.full(3, 7.0))
    store[2] = [np.zeros(3)]  # an upload that came in its message replaces the path
    assert store.in_memory(2) and float(store[2][0].sum()) == 0.0
    del store[4]
    assert list(store) == [2]


def test_dropped_blobs_are_reused_by_the_next_ones_and_discarded_at_the_end(tmp_path):
    w = [np.full((50, 20), 1.0, np.float32)]
    checkpoint.save_server(tmp_path, 1, {"p": np.eye(2)}, {}, blobs={"store_0_r0001": w}, durable=False)
    inode = checkpoint.blob_path(tmp_path, "store_0_r0001").stat().st_ino
    checkpoint.save_server(tmp_path, 2, {"p": np.eye(2)}, {}, blobs={"store_0_r0002": [2 * w[0]]}, durable=False)
    spare = tmp_path / "checkpoint" / "blobs" / checkpoint.SPARE
    assert [p.name for p in spare.iterdir()] == ["store_0_r0001.npys"]  # dropped, kept for reuse
    checkpoint.save_server(tmp_path, 3, {"p": np.eye(2)}, {}, blobs={"store_0_r0003": [3 * w[0]]}, durable=False)
    assert checkpoint.blob_path(tmp_path, "store_0_r0003").stat().st_ino == inode  # round 1's file, overwritten
    rnd, arrays, _ = checkpoint.load_server(tmp_path)
    assert rnd == 3
    np.testing.assert_array_equal(arrays["blob/store_0_r0003/0"], 3 * w[0])
    assert not any(k.startswith("blob/") for k in checkpoint.load_server(tmp_path, read_blobs=False)[1])
    assert [p.name for p in spare.iterdir()] == ["store_0_r0002.npys"]
    checkpoint.discard_spares(tmp_path)
    assert not spare.exists()
    assert sorted(p.name for p in (tmp_path / "checkpoint" / "blobs").iterdir()) == ["store_0_r0003.npys"]


# -- end to end ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("ref") / "run"
    proc = _main(*BASE, "num_rounds=5", "method.num_models=3", f"dataset.root={data_root}", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.e2e
@pytest.mark.realdata
def test_status_json_and_reuse_refused(reference, data_root):
    status = read_status(reference)
    assert status["status"] == "completed" and status["round"] == 5 and status["attempt"] == 1
    assert status["started"] and status["ended"] and status["git_commit"]
    proc = _main(*BASE, "num_rounds=5", "method.num_models=3", f"dataset.root={data_root}",
                 f"hydra.run.dir={reference}")
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "already holds a completed run" in err[0] and "resume=" in err[0]
    assert read_status(reference)["status"] == "completed"  # untouched


def _kill_everything(pid: int, run_dir: Path) -> None:
    home = (read_status(run_dir) or {}).get("flower_home")
    pids = [pid, *(processes_with_env("FLWR_HOME", home) if home else [])]
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _kill_in_a_random_round_and_resume(out: Path, data_root: Path, *extra: str) -> int:
    """Run the reference's run (plus ``extra``) in ``out``, SIGKILL it in round 2, 3 or 4, resume; the kill round."""
    kill_after = random.randint(1, 3)  # killed while round kill_after + 1 runs
    proc = subprocess.Popen([sys.executable, "-m", "fedfomo.main", *BASE, "num_rounds=5", "method.num_models=3", *extra,
                             f"dataset.root={data_root}", f"hydra.run.dir={out}"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while (read_status(out) or {}).get("round", 0) < kill_after:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 0.5))
    _kill_everything(proc.pid, out)
    proc.wait()
    status = read_status(out)
    assert status["status"] == "running" and status["round"] < 5, f"killed after round {kill_after}: {status}"
    elapsed = status["elapsed_s"]  # wall time of the killed attempt up to its last finished round
    assert elapsed > 0
    resumed = _main(f"resume={out}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    status = read_status(out)
    assert status["status"] == "completed" and status["attempt"] == 2
    summary = json.loads((out / "summary.json").read_text())  # the run's time counts both attempts
    assert summary["wall_time_s"] == pytest.approx(elapsed + summary["wall_time_attempt_s"])
    return kill_after


def _assert_same_results(out: Path, reference: Path, note: str) -> None:
    a, b = (json.loads((p / "summary.json").read_text()) for p in (reference, out))
    assert b["per_client_final_acc"] == a["per_client_final_acc"], note
    assert _rounds(out) == _rounds(reference), note
    assert _clients(out) == _clients(reference), note
    for r in range(1, 6):
        np.testing.assert_array_equal(np.load(out / "affinity" / f"round_{r:03d}.npy"),
                                      np.load(reference / "affinity" / f"round_{r:03d}.npy"))


@pytest.mark.e2e
@pytest.mark.realdata
def test_sigkill_in_a_random_round_then_resume_gives_the_same_results_bit_for_bit(reference, data_root, tmp_path):
    out = tmp_path / "killed"
    kill_after = _kill_in_a_random_round_and_resume(out, data_root)
    _assert_same_results(out, reference, f"killed after round {kill_after}")


@pytest.mark.e2e
@pytest.mark.realdata
def test_shared_store_and_messages_give_the_same_results_and_resume_bit_for_bit(reference, data_root, tmp_path):
    """The reference reads its candidates from the run's blobs (``sim.shared_store=auto``: on in a simulation)
    and syncs once per round (``sim.fsync=auto``: ``round`` in a simulation); with ``sim.shared_store=false``
    they travel in the messages and with ``sim.fsync=file`` every file is fsync'd: same results, same files,
    resumable."""
    out = tmp_path / "messages"
    proc = _main(*BASE, "num_rounds=5", "method.num_models=3", "sim.shared_store=false", "sim.fsync=file",
                 f"dataset.root={data_root}", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same_results(out, reference, "uninterrupted")

    def files(run: Path) -> list[str]:  # the shared store writes nothing the message path does not
        return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())

    assert files(out) == files(reference)
    killed = tmp_path / "messages_killed"
    kill_after = _kill_in_a_random_round_and_resume(killed, data_root, "sim.shared_store=false", "sim.fsync=file")
    _assert_same_results(killed, reference, f"killed after round {kill_after}")


@pytest.mark.e2e
@pytest.mark.realdata
def test_resume_refuses_a_changed_configuration(reference):
    proc = _main(f"resume={reference}")
    assert proc.returncode == 2 and "already completed" in proc.stderr
    status = read_status(reference)
    write_status(reference, status="interrupted")
    try:
        proc = _main(f"resume={reference}", "num_rounds=7")
        assert proc.returncode == 2
        line = proc.stderr.strip().splitlines()
        assert len(line) == 1 and "num_rounds=7" in line[0] and "saved num_rounds=5" in line[0]
    finally:
        write_status(reference, **status)


@pytest.mark.e2e
@pytest.mark.realdata
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_marks_interrupted_prints_resume_and_leaves_no_process(data_root, tmp_path, sig):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "fedfomo.main", *BASE, "num_rounds=6", "method.num_models=3",
                             f"dataset.root={data_root}", f"hydra.run.dir={out}"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while (read_status(out) or {}).get("round", 0) < 1:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    home = read_status(out)["flower_home"]
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig
    lines = err.strip().splitlines()  # Flower's own INFO lines may come first; ours is one line, no traceback
    assert f"resume with: python -m fedfomo.main resume={out}" in lines[-1] and "Traceback" not in err, err[-2000:]
    status = read_status(out)
    assert status["status"] == "interrupted" and signal.Signals(sig).name in status["reason"]
    time.sleep(1)
    assert processes_with_env("FLWR_HOME", home) == []


@pytest.mark.realdata
@pytest.mark.parametrize("method", ["fedfomo", "local"])
def test_divergence_is_data_not_a_crash(data_root, tmp_path, method, server_identity):
    out = tmp_path / method
    extra = " method.num_models=3" if method == "fedfomo" else ""
    summary = run_in_process(out, {"dataset": "mnist", "method": method, "num-clients": 4, "local-epochs": 1,
                                   "samples-per-client": 150, "num-server-rounds": 3, "data-root": str(data_root),
                                   "overrides": "optim.lr=5" + extra}, 4)
    rows = list(csv.DictReader((out / "clients.csv").open()))
    assert summary["rounds_completed"] == 3 and all(a is not None for a in summary["per_client_final_acc"])
    assert summary["diverged_uploads"] == sum(r["diverged"] == "1" for r in rows)
    if method == "local":  # diverges at lr 5 in round 1 (measured); FedFomo may or may not
        assert summary["diverged_uploads"] > 0
    if method == "fedfomo":  # no diverged model ever entered P or got weight
        for r in range(1, 4):
            assert np.isfinite(np.load(out / "affinity" / f"round_{r:03d}.npy")).all()


@pytest.mark.e2e
@pytest.mark.realdata
def test_injected_failures_are_reported_and_leave_store_and_p_untouched(data_root, tmp_path):
    out = tmp_path / "fail"
    proc = _main(*BASE, "num_rounds=4", "method.num_models=3", "sim.fail_prob=0.3", f"dataset.root={data_root}",
                 f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader((out / "rounds.csv").open()))
    failed = {int(r["round"]): [int(c) for c in r["failed_ids"].split()] for r in rows}
    assert sum(len(v) for v in failed.values()) > 0
    for r in range(2, 5):
        before = np.load(out / "affinity" / f"round_{r - 1:03d}.npy")
        after = np.load(out / "affinity" / f"round_{r:03d}.npy")
        for cid in failed[r]:
            np.testing.assert_array_equal(after[cid], before[cid])  # a failed client's P row stays
    clients = list(csv.DictReader((out / "clients.csv").open()))
    for r, ids in failed.items():
        assert not any(int(c["round"]) == r and int(c["cid"]) in ids for c in clients)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed_client_rounds"] == sum(len(v) for v in failed.values())


# -- bad input ------------------------------------------------------------------------------------------
NUMERIC = ["optim.lr", "optim.lr_decay", "optim.momentum", "optim.weight_decay", "participation", "val_ratio",
           "dp.noise_multiplier", "dp.max_grad_norm", "dp.delta", "sim.gpus_per_client", "sim.connect_timeout_s",
           "sim.round_timeout_s", "sim.fail_prob", "method.epsilon", "method.epsilon_decay"]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "1e9"])
@pytest.mark.parametrize("key", NUMERIC)
def test_non_finite_and_out_of_range_numbers_are_one_line(key, value):
    from fedfomo.config import ConfigError, validate_config
    from tests.test_methods import _cfg

    finite_ok = {"optim.lr", "optim.weight_decay", "dp.noise_multiplier", "dp.max_grad_norm",
                 "sim.connect_timeout_s", "sim.round_timeout_s"}  # no upper bound
    if value == "1e9" and key in finite_ok:
        return
    with pytest.raises(ConfigError) as err:
        validate_config(_cfg(f"{key}={value}"))
    msg = str(err.value)
    assert "\n" not in msg and key in msg


@pytest.mark.parametrize(("override", "named"), [("+method.foo=1", "method.foo"), ("+fomo.num_models=3", "fomo"),
                                                 ("+sim.speed=2", "sim.speed")])
def test_unknown_keys_are_named(override, named):
    from fedfomo.config import ConfigError, validate_config
    from tests.test_methods import _cfg

    with pytest.raises(ConfigError) as err:
        validate_config(_cfg(override))
    assert named in str(err.value) and "allowed" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.realdata
@pytest.mark.parametrize(("args", "says"), [
    (["samples_per_client=100000"], "the largest client holds"),
    (["num_clients=4"], "method.num_models=5 is out of range; allowed: 1..4"),
    (["+method.foo=1"], "method.foo is not a setting"),
    (["optim.lr=nan"], "optim.lr=nan must be a finite number"),
])
def test_cli_bad_input_exits_2_with_one_line_and_leaves_no_folder(data_root, tmp_path, args, says):
    out = tmp_path / "run"
    proc = _main("dataset=mnist", *args, f"dataset.root={data_root}", f"hydra.run.dir={out}", timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], proc.stderr[-2000:]
    assert not out.exists()


@pytest.mark.realdata
def test_corrupt_data_file_is_named(data_root, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(data_root / "MNIST", root / "MNIST")
    bad = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:5000])
    proc = _main("dataset=mnist", f"dataset.root={root}", f"hydra.run.dir={tmp_path / 'run'}", timeout=300)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()
    assert len(line) == 1 and str(bad) in line[0] and "dataset.download=true" in line[0] and "dataset.root=" in line[0]


def test_missing_data_names_the_file_and_both_ways(tmp_path):
    proc = _main("dataset=mnist", f"dataset.root={tmp_path / 'none'}", f"hydra.run.dir={tmp_path / 'run'}",
                 timeout=300)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()
    assert len(line) == 1 and "train-images-idx3-ubyte" in line[0] and "dataset.download=true" in line[0]


# -- the queue -------------------------------------------------------------------------------------------
def test_queue_expands_sweeps_like_hydra_and_names_runs():
    from fedfomo.queue import expand, run_name

    jobs = expand(["dataset=cifar10", "method=fedfomo,fedavg", "seed=0,1", "method.shared_layers=[conv,fc1]"])
    assert len(jobs) == 4 and jobs[0] == {"dataset": "cifar10", "method": "fedfomo", "seed": "0",
                                          "method.shared_layers": "[conv,fc1]"}
    assert [run_name("{method}_s{seed}", j) for j in jobs] == ["fedfomo_s0", "fedfomo_s1", "fedavg_s0", "fedavg_s1"]
    assert run_name("{method_shared_layers}", jobs[0]) == "[conv,fc1]"
    for bad in ("{model}", "{method.shared_layers}", "{0}", "{seed:d}"):  # unset, dotted, positional, bad format
        with pytest.raises(SystemExit, match=r"^error: the name template .*allowed fields: \{dataset\}, \{method\}"):
            run_name(bad, jobs[0])


def test_queue_plans_from_status(tmp_path):
    from fedfomo.queue import plan

    assert plan(tmp_path / "new") == "start"
    for status, action in (("completed", "skip"), ("interrupted", "resume"), ("failed", "resume"),
                           ("running", "resume")):  # running, but no process of it is alive: resume
        write_status(tmp_path / status, status=status, flower_home=str(tmp_path / "gone"))
        assert plan(tmp_path / status) == action


@pytest.mark.e2e
@pytest.mark.realdata
def test_run_experiments_usage_and_a_queue_that_continues(data_root, tmp_path):
    script = ["bash", str(REPO / "run_experiments.sh")]
    none = subprocess.run(script, capture_output=True, text=True, cwd=REPO)
    assert none.returncode == 2 and "usage" in none.stderr
    helped = subprocess.run([*script, "--help"], capture_output=True, text=True, cwd=REPO)
    assert helped.returncode == 0 and "table4_cifar10_latent_dp" in helped.stdout and "CPU" in helped.stdout
    env = {**os.environ, "OUT": str(tmp_path), "SEEDS": "0", "METHODS": "fedavg", "PYTHON": sys.executable,
           "SCALE": f"num_clients=3 num_rounds=2 local_epochs=1 samples_per_client=100 dataset.root={data_root} "
                    f"sim.progress=false"}
    first = subprocess.run([*script, "table1_mnist"], capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    assert read_status(tmp_path / "table1_mnist" / "fedavg_s0")["status"] == "completed"
    again = subprocess.run([*script, "table1_mnist"], capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert again.returncode == 0 and "fedavg_s0: skip" in again.stdout


def test_queue_stops_when_signalled_even_if_the_run_exits_otherwise(tmp_path, monkeypatch, capsys):
    """A SIGTERM to the whole process group reaches the run twice (directly and forwarded); the run may
    then exit with a code other than 143, and the queue must still stop instead of starting the next run."""
    import signal

    from fedfomo import queue

    started = []

    class Run:  # a run that gets the queue's SIGTERM while it works and exits with 1
        def __init__(self, cmd):
            started.append(cmd)

        def poll(self):
            return None

        def send_signal(self, signum):
            pass

        def wait(self):
            signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
            return 1

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(queue.subprocess, "Popen", Run)
    try:
        code = queue.main([str(tmp_path), "{seed}", "seed=0,1,2"])
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
    assert code == 143 and len(started) == 1
    assert "queue interrupted at" in capsys.readouterr().out


def test_a_signal_after_the_run_finished_keeps_it_completed(tmp_path):
    # the ServerApp wrote summary.json and "completed"; SIGTERM reached the launcher while Flower shut down
    from fedfomo.launch import mark_interrupted

    done = tmp_path / "done"
    done.mkdir()
    write_status(done, status="completed", round=20)
    (done / "summary.json").write_text("{}")
    mark_interrupted(done, "SIGTERM")
    assert read_status(done)["status"] == "completed"
    # without a summary (or not completed), the run is interrupted and names the signal
    for name, status in (("no_summary", "completed"), ("running", "running")):
        run = tmp_path / name
        run.mkdir()
        write_status(run, status=status, round=3)
        mark_interrupted(run, "SIGTERM")
        assert read_status(run)["status"] == "interrupted"
        assert read_status(run)["reason"] == "SIGTERM received"


def test_resume_drops_blobs_the_checkpoint_does_not_name(tmp_path):
    w = [np.ones(3, np.float32)]
    checkpoint.save_server(tmp_path, 1, {"p": np.eye(2)}, {}, blobs={"store_0_r0001": w}, durable=False)
    checkpoint.write_blob(tmp_path, "store_0_r0002", [np.full(3, np.nan, np.float32)])  # the stopped attempt's
    rnd, arrays, _ = checkpoint.load_server(tmp_path)
    assert rnd == 1 and "blob/store_0_r0002/0" not in arrays
    assert not checkpoint.blob_path(tmp_path, "store_0_r0002").exists()  # so round 2 writes it again
    checkpoint.save_server(tmp_path, 2, {"p": np.eye(2)}, {}, blobs={"store_0_r0002": [2 * w[0]]}, durable=False)
    np.testing.assert_array_equal(checkpoint.load_server(tmp_path)[1]["blob/store_0_r0002/0"], 2 * w[0])
