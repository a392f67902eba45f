"""Bad input: one line naming the key and what is allowed, non-zero exit, before any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fedfomo.config import ConfigError, validate_config

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return compose(config_name="config", overrides=list(overrides))


def test_default_config_is_valid():
    validate_config(_cfg())
    cfg = _cfg()
    assert (cfg.dataset.name, cfg.partition.name, cfg.method.name) == ("cifar10", "pathological", "fedfomo")
    assert (cfg.num_clients, cfg.num_rounds, cfg.local_epochs, cfg.method.num_models) == (15, 20, 5, 5)
    assert (cfg.optim.lr, cfg.optim.batch_size, cfg.participation) == (0.1, 50, 1.0)
    assert _cfg("dataset=mnist").optim.lr == 0.01


@pytest.mark.parametrize(
    ("overrides", "key", "allowed"),
    [
        (["method.num_models=0"], "method.num_models", "1..15"),
        (["method.num_models=16"], "method.num_models", "1..15"),
        (["method.epsilon=1.5"], "method.epsilon", "[0.0, 1.0]"),
        (["method.epsilon=-0.1"], "method.epsilon", "[0.0, 1.0]"),
        (["method.epsilon_decay=2"], "method.epsilon_decay", "[0.0, 1.0]"),
        (["val_ratio=0"], "val_ratio", "(0.0, 1.0)"),
        (["val_ratio=1"], "val_ratio", "(0.0, 1.0)"),
        (["participation=0"], "participation", "(0.0, 1.0]"),
        (["participation=1.2"], "participation", "(0.0, 1.0]"),
        (["sampling=random"], "sampling", "fresh, fixed"),
        (["partition.classes_per_client=11"], "partition.classes_per_client", "1..10"),
        (["partition.classes_per_client=0"], "partition.classes_per_client", "1..10"),
        (["dataset.name=svhn"], "dataset.name", "mnist, cifar10, cifar100"),
        (["method.name=scaffold"], "method.name", "fedavg, fedavg_data, fedfomo"),
        (["partition.name=dirichlet"], "partition.name", "pathological, iid"),
        (["method.distance=cosine"], "method.distance", "l1, l2"),
        (["model=resnet"], "model", "cnn_authors, cnn_mcmahan"),
        (["sim.shared_store=maybe"], "sim.shared_store", "auto, true, false"),
        (["sim.fsync=never"], "sim.fsync", "auto, file, round"),
        (["dataset.augment=rotate"], "dataset.augment", "none, crop_flip"),
    ],
)
def test_bad_values_name_key_and_allowed(overrides, key, allowed):
    with pytest.raises(ConfigError) as err:
        validate_config(_cfg(*overrides))
    msg = str(err.value)
    assert "\n" not in msg and key in msg and allowed in msg


def test_shared_store_is_refused_outside_a_simulation_in_one_line(tmp_path):
    from fedfomo.config import check_runtime, shared_store
    from fedfomo.deploy import deploy

    assert shared_store(_cfg()) is True and shared_store(_cfg(), simulation=False) is False  # auto
    assert shared_store(_cfg("sim.shared_store=true")) is True
    assert shared_store(_cfg("sim.shared_store=false")) is False
    assert shared_store(OmegaConf.create({"sim": {}})) is False  # a config.yaml from before the key
    check_runtime(_cfg(), simulation=False)  # auto: any runtime
    check_runtime(_cfg("sim.shared_store=false"), simulation=False)
    check_runtime(_cfg("sim.shared_store=true"), simulation=True)
    with pytest.raises(ConfigError) as err:
        check_runtime(_cfg("sim.shared_store=true"), simulation=False)
    msg = str(err.value)
    assert "\n" not in msg and "sim.shared_store=true" in msg and "allowed: sim.shared_store=auto or false" in msg
    with pytest.raises(ConfigError, match=r"sim\.shared_store"):  # before any data is read or process started
        deploy(["dataset=mnist", "num_clients=3", "method.num_models=2", "sim.shared_store=true"], tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_fsync_round_is_refused_outside_a_simulation_in_one_line(tmp_path):
    from fedfomo.config import check_runtime, fsync_mode
    from fedfomo.deploy import deploy

    assert fsync_mode(_cfg()) == "round" and fsync_mode(_cfg(), simulation=False) == "file"  # auto
    assert fsync_mode(_cfg("sim.fsync=file")) == "file" and fsync_mode(_cfg("sim.fsync=round")) == "round"
    assert fsync_mode(OmegaConf.create({"sim": {}})) == "file"  # a config.yaml from before the key
    check_runtime(_cfg("sim.fsync=round"), simulation=True)
    check_runtime(_cfg("sim.fsync=file"), simulation=False)
    with pytest.raises(ConfigError) as err:
        check_runtime(_cfg("sim.fsync=round"), simulation=False)
    msg = str(err.value)
    assert "\n" not in msg and "sim.fsync=round" in msg and "allowed: sim.fsync=auto or file" in msg
    with pytest.raises(ConfigError, match=r"sim\.fsync"):  # before any data is read or process started
        deploy(["dataset=mnist", "num_clients=3", "method.num_models=2", "sim.fsync=round"], tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_cli_exits_nonzero_with_one_line_before_any_work(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fedfomo.main", "method.num_models=99", f"hydra.run.dir={tmp_path}/run",
         f"dataset.root={tmp_path}/nodata"],
        capture_output=True, text=True, timeout=120, cwd=Path(CONF).parent,
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == ["error: method.num_models=99 is out of range; allowed: 1..15"]
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_cli_unknown_group_option_lists_allowed(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fedfomo.main", "method=scaffold", f"hydra.run.dir={tmp_path}/run"],
        capture_output=True, text=True, timeout=120, cwd=Path(CONF).parent,
    )
    assert proc.returncode != 0
    assert "method" in proc.stderr and "fedavg" in proc.stderr and "fedfomo" in proc.stderr


def test_cli_missing_data_says_where_and_how(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fedfomo.main", "dataset=mnist", f"dataset.root={tmp_path}/nodata",
         f"hydra.run.dir={tmp_path}/run"],
        capture_output=True, text=True, timeout=120, cwd=Path(CONF).parent,
    )
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.count("\n") == 0
    assert str(tmp_path / "nodata") in err and "dataset.download=true" in err and "dataset.root" in err


def test_bf16_is_refused_in_one_line_where_the_hardware_lacks_it():
    from fedfomo.config import ConfigError, bf16_supported, check_bf16

    check_bf16(False)  # off: never an error
    if bf16_supported():
        check_bf16(True)
    else:
        with pytest.raises(ConfigError) as err:
            check_bf16(True)
        assert "sim.bf16=true" in str(err.value) and "allowed here: false" in str(err.value)
        assert "\n" not in str(err.value)


def test_embed_entry_point_settings_accepted_there_only():
    """``python -m fedfomo.embed`` adds ``distributions`` and ``package`` to a run's settings (conf/embed.yaml)."""
    from fedfomo.embed import EXTRA_KEYS

    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name="embed", overrides=["distributions=[2,5]", "package=false"])
    validate_config(cfg, extra_keys=EXTRA_KEYS)
    with pytest.raises(ConfigError, match="distributions is not a setting of this run"):
        validate_config(cfg)
    with pytest.raises(ConfigError, match="distribution is not a setting"):
        validate_config(_cfg("+distribution=3"), extra_keys=EXTRA_KEYS)
