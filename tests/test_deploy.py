"""The real deployment on loopback (SuperLink + SuperNodes + ``flwr run``) and ``flwr run`` in simulation.

Both must give the same accuracies as ``python -m fedfomo.main`` for the same seed, and bad node
configurations must end the run with one line instead of hanging.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMALL = ["dataset=mnist", "method=fedfomo", "num_clients=3", "num_rounds=2", "local_epochs=1",
         "samples_per_client=100", "method.num_models=2"]

pytestmark = [pytest.mark.e2e, pytest.mark.realdata]


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def simulated(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("sim") / "run"
    proc = subprocess.run([sys.executable, "-m", "fedfomo.main", *SMALL, f"dataset.root={data_root}",
                           "sim.progress=false", f"hydra.run.dir={out}"], capture_output=True, text=True,
                          timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_loopback_deployment_matches_the_simulation(tmp_path, data_root, simulated):
    out = tmp_path / "deployed"
    proc = subprocess.run([sys.executable, "-m", "fedfomo.deploy", "--run-dir", str(out), *SMALL,
                           f"dataset.root={data_root}"], capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("config.yaml", "partition.json", "rounds.csv", "clients.csv", "summary.json", "server.log",
                 "affinity/round_002.npy"):
        assert (out / name).exists(), name
    dep, sim = _summary(out), _summary(simulated)
    assert dep["per_client_final_acc"] == sim["per_client_final_acc"]
    assert (out / "rounds.csv").read_text().splitlines()[1].split(",")[:5] == \
        (simulated / "rounds.csv").read_text().splitlines()[1].split(",")[:5]


def test_flwr_run_in_simulation_matches_the_hydra_entry_point(tmp_path, data_root, simulated):
    home = tmp_path / "flwr-home"
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           "FEDFOMO_DATA": str(data_root), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    from fedfomo.launch import free_port

    port = free_port()
    link = subprocess.Popen([str(Path(sys.executable).parent / "flower-superlink"), "--insecure", "--simulation",
                             "--host", "127.0.0.1", "--port", str(port), "--disable-runtime-dependency-installation"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    home.mkdir()
    (home / "config.toml").write_text(f'[superlink]\ndefault = "sim"\n[superlink.sim]\n'
                                      f'address = "127.0.0.1:{port}"\ninsecure = true\n')
    out = tmp_path / "flwr"
    run_config = ("dataset='mnist' method='fedfomo' num-clients=3 num-server-rounds=2 local-epochs=1 "
                  f"samples-per-client=100 num-models=2 run-dir='{out}'")
    try:
        import time

        time.sleep(4)  # the SuperLink starts
        proc = subprocess.run([str(Path(sys.executable).parent / "flwr"), "run", str(REPO), "sim", "--stream",
                               "--run-config", run_config, "--federation-config", "num-supernodes=3"],
                              capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    finally:
        os.killpg(link.pid, 15)
        link.wait(timeout=30)
    assert (out / "summary.json").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _summary(out)["per_client_final_acc"] == _summary(simulated)["per_client_final_acc"]


def test_supernode_without_partition_id_ends_the_run_with_one_line(tmp_path, data_root):
    from fedfomo.deploy import deploy

    with pytest.raises(RuntimeError, match="without"):
        deploy([*SMALL, f"dataset.root={data_root}", "sim.connect_timeout_s=60"], tmp_path / "bad",
               node_configs=["partition-id=0 num-partitions=3", "", "partition-id=7 num-partitions=3"])
    log = (tmp_path / "bad" / "server.log").read_text()
    errors = [line for line in log.splitlines() if "ERROR" in line]
    assert len(errors) == 1, log
    # whichever bad node answers first is named, with how to start it
    assert "partition-id" in errors[0] and "--node-config" in errors[0], errors[0]
