"""One configuration for every way in: flwr run's flat keys <-> the Hydra config, and node configs."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fedfomo.client_app import partition_of
from fedfomo.config import ConfigError
from fedfomo.runconfig import (
    CONTROL_KEYS,
    FLAT_KEYS,
    compose,
    conf_dir,
    config_yaml,
    experiment_config,
    overrides_from_run_config,
    run_config_for,
)

REPO = Path(__file__).resolve().parents[1]


def _app_config() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]


def test_conf_dir_is_the_top_level_conf():
    assert conf_dir() == REPO / "conf"


def test_pyproject_declares_exactly_the_flat_keys():
    assert set(_app_config()) == set(FLAT_KEYS) | set(CONTROL_KEYS)


def test_flwr_run_defaults_compose_the_hydra_defaults():
    # `flwr run .` with no --run-config runs what `python -m fedfomo.main` runs
    assert config_yaml(experiment_config(_app_config())) == config_yaml(compose([]))


def test_flat_keys_map_onto_hydra_overrides():
    got = overrides_from_run_config({"dataset": "mnist", "num-server-rounds": 3, "num-models": 4,
                                     "samples-per-client": 0, "lr": 0.0, "data-root": "", "overrides": ""})
    assert got == ["dataset=mnist", "num_rounds=3", "method.num_models=4"]
    cfg = compose(got)
    assert cfg.num_rounds == 3 and cfg.method.num_models == 4 and cfg.samples_per_client is None
    assert cfg.optim.lr == 0.01  # the dataset's default, not the sentinel


def test_overrides_string_wins_over_flat_keys():
    got = overrides_from_run_config({"num-server-rounds": 3, "overrides": "num_rounds=7 'optim.momentum=0.5'"})
    assert got == ["num_rounds=7", "optim.momentum=0.5"]
    assert compose(got).num_rounds == 7


@pytest.mark.parametrize("overrides", [
    [],
    ["dataset=mnist", "method=fedavg", "num_clients=4", "samples_per_client=100"],
    ["dataset=mnist", "num_clients=4", "method.num_models=3", "method.epsilon=0.0"],
    ["dataset=mnist", "num_clients=4", "method=fedfomo_ma"],
    ["dataset=mnist", "num_clients=4", "method=fedfomo_ma", "method.num_models=2"],
    ["method=lg_fedavg", "method.shared_layers=[fc2]", "optim.lr=0.05", "partition=iid"],
    ["partition=latent", "partition.num_distributions=3", "dataset.root=/somewhere/else", "seed=2"],
    ["method=pfedme", "method.lambda=10", "optim.momentum=0.9", "num_rounds=2"],
])
def test_hydra_entry_point_run_config_composes_the_same_config(tmp_path, overrides):
    cfg = compose(overrides)
    cfg.dataset.root = str(Path(cfg.dataset.root).resolve())
    run_config = run_config_for(cfg, overrides, tmp_path)
    fedfomo_only = {"num-models", "epsilon", "epsilon-decay"}
    expected = set(FLAT_KEYS) | set(CONTROL_KEYS)
    assert expected - fedfomo_only <= set(run_config) <= expected
    assert config_yaml(experiment_config(run_config)) == config_yaml(cfg)


def test_fedfomo_flat_keys_only_apply_to_fedfomo():
    got = overrides_from_run_config({"method": "fedavg", "num-models": 5, "epsilon": 0.3})
    assert got == ["method=fedavg"]
    assert overrides_from_run_config({"num-models": 3, "overrides": "method=local"}) == ["method=local"]
    assert overrides_from_run_config({"num-models": 3}) == ["method.num_models=3"]  # the default method: fedfomo


def test_moved_keys_name_the_new_key():
    for old, new in [("fomo.num_models=3", "method.num_models=3"), ("fedprox.mu=0.1", "method.mu=0.1"),
                     ("+pfedme.lambda=3", "method.lambda=3")]:
        with pytest.raises(ConfigError, match=f"moved to method.*write {new}") as err:
            compose([old])
        assert "\n" not in str(err.value)


def test_unknown_run_config_key_is_one_line():
    with pytest.raises(ConfigError, match=r"run-config key 'rounds' does not exist; allowed: dataset, "):
        overrides_from_run_config({"rounds": 3})


def test_bad_overrides_are_one_line():
    with pytest.raises(ConfigError, match="not key=value"):
        overrides_from_run_config({"overrides": "num_rounds"})
    with pytest.raises(ConfigError, match="rejected") as err:
        compose(["optim.no_such_key=1"])
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"num_rounds=0 is out of range"):
        experiment_config({"num-server-rounds": 0})


def test_partition_of_node_config():
    assert partition_of({"partition-id": 2, "num-partitions": 3}, 3) == 2
    assert partition_of({"partition-id": 0}, 5) == 0
    with pytest.raises(ValueError, match=r"no partition-id; start the SuperNode with --node-config"):
        partition_of({}, 3)
    with pytest.raises(ValueError, match=r"partition-id=3 is out of range; allowed: 0..2 \(start the SuperNode"):
        partition_of({"partition-id": 3, "num-partitions": 3}, 3)
    with pytest.raises(ValueError, match=r"partition-id=-1 is out of range"):
        partition_of({"partition-id": -1}, 3)
    with pytest.raises(ValueError, match=r"num-partitions=4 but the run has num_clients=3"):
        partition_of({"partition-id": 0, "num-partitions": 4}, 3)
    with pytest.raises(ValueError, match=r"must be an integer"):
        partition_of({"partition-id": "a"}, 3)


def test_saved_config_is_plain_yaml():
    cfg = OmegaConf.create(config_yaml(compose(["dataset=mnist"])))
    assert cfg.dataset.name == "mnist" and "${" not in config_yaml(cfg)


def _saved_run(folder: Path, overrides: list[str], edit) -> Path:
    """A run folder as an older version of the code saved it: ``edit`` changes its config.yaml."""
    from fedfomo.runs import write_status

    saved = OmegaConf.create(config_yaml(compose(overrides)))
    edit(saved)
    folder.mkdir()
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(saved))
    write_status(folder, status="interrupted", overrides=overrides)
    return folder


def test_a_run_saved_before_settings_were_added_resumes_when_they_keep_the_old_behaviour(tmp_path):
    from fedfomo.runconfig import ADDED_SETTINGS, changed_settings, resumed_config

    overrides = ["dataset=mnist", "num_clients=4"]

    def older(cfg):  # saved before sim.bf16, sim.max_in_flight, sim.shared_store existed
        for key in ("bf16", "max_in_flight", "shared_store"):
            del cfg.sim[key]
    cfg, _ = resumed_config(_saved_run(tmp_path / "old", overrides, older), [])
    assert cfg.sim.shared_store == ADDED_SETTINGS["sim.shared_store"] and cfg.num_clients == 4

    def changed_default(cfg):  # saved when the default learning rate was another
        cfg.optim.lr = 0.5
    with pytest.raises(ConfigError, match=r"defaults changed: optim\.lr: 0\.5 -> 0\.01") as err:
        resumed_config(_saved_run(tmp_path / "lr", overrides, changed_default), [])
    assert "\n" not in str(err.value)

    def unknown_then(cfg):  # a setting that did not exist then and whose value now is not the old behaviour
        del cfg.sim.shared_store
    now = compose([*overrides, "sim.shared_store=false"])
    saved = OmegaConf.create(config_yaml(now))
    unknown_then(saved)
    assert changed_settings(saved, now) == ["sim.shared_store (new, False)"]
    assert changed_settings(OmegaConf.create(config_yaml(now)), now) == []
