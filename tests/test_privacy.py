"""DP-SGD with Opacus: clipping bound, accounting across rounds, validation of settings and models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedfomo.config import ConfigError, validate_config
from fedfomo.models import build_model, get_weights
from fedfomo.privacy import DPConfig, epsilon_of, model_problems, train_dp
from fedfomo.training import OptimConfig
from fedfomo.vgg import build_vgg11
from tests.test_methods import _cfg


def _data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    return x, torch.randint(0, 10, (n,), generator=g)


def _step_norm(clip: float) -> float:
    """||w_after - w_before|| of one noiseless DP-SGD step with lr 1 over the whole (Poisson rate 1) batch."""
    x, y = _data()
    model = build_model("cnn_authors", (1, 28, 28), 10, 0)
    before = np.concatenate([w.ravel() for w in get_weights(model)])
    train_dp(model, x, y, epochs=1, optim=OptimConfig(lr=1.0, momentum=0.0, weight_decay=0.0, batch_size=len(y)),
             mean=(0.5,), std=(0.5,), generator=torch.Generator().manual_seed(0),
             dp=DPConfig(noise_multiplier=0.0, max_grad_norm=clip, delta=1e-5), history=[])
    after = np.concatenate([w.ravel() for w in get_weights(model)])
    return float(np.linalg.norm(after - before))


def test_per_sample_clipping_bounds_the_step():
    # without noise the step is lr x the mean of per-sample gradients clipped to C: its norm is at most C
    small = _step_norm(1e-3)
    assert 0.0 < small <= 1e-3 * (1 + 1e-4)
    assert _step_norm(1e-2) > 5 * small  # a larger C lets larger gradients through


def test_epsilon_grows_with_rounds_and_falls_with_noise():
    one_round = [(1.0, 0.25, 40)]
    two_rounds = [(1.0, 0.25, 80)]
    assert 0 < epsilon_of(one_round, 1e-5) < epsilon_of(two_rounds, 1e-5)
    assert epsilon_of([(2.0, 0.25, 80)], 1e-5) < epsilon_of(two_rounds, 1e-5)
    assert epsilon_of([], 1e-5) == 0.0


def test_history_carries_over_rounds():
    x, y = _data(100)
    model = build_model("cnn_authors", (1, 28, 28), 10, 0)
    kw = dict(epochs=1, optim=OptimConfig(0.05, 0.0, 0.0, 25), mean=(0.5,), std=(0.5,),
              dp=DPConfig(1.0, 1.0, 1e-5))
    _, h1 = train_dp(model, x, y, generator=torch.Generator().manual_seed(1), history=[], **kw)
    _, h2 = train_dp(model, x, y, generator=torch.Generator().manual_seed(2), history=h1, **kw)
    assert h1 == [(1.0, 0.25, 4)] and h2 == [(1.0, 0.25, 8)]
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())


def test_models_are_opacus_valid_and_batchnorm_is_not():
    for name in ("cnn_authors", "cnn_mcmahan"):
        assert model_problems(build_model(name, (3, 32, 32), 10, 0)) == []
    problems = model_problems(build_vgg11(3, 10))
    assert problems and "BatchNorm" in problems[0] and "\n" not in problems[0]


@pytest.mark.parametrize(("overrides", "message"), [
    (["dp.noise_multiplier=-1"], "dp.noise_multiplier=-1 is out of range; allowed: [0.0, inf]"),
    (["dp.delta=1"], "dp.delta=1 is out of range; allowed: (0.0, 1.0)"),
    (["dp.delta=0"], "dp.delta=0 is out of range; allowed: (0.0, 1.0)"),
    (["dp.max_grad_norm=0"], "dp.max_grad_norm=0 is out of range; allowed: (0.0, inf]"),
    (["dp.enabled=true", "method=pfedme"], "dp.enabled=true with method=pfedme"),
    (["dp.enabled=true", "method=fedprox"], "allowed methods: cfl, fedavg, fedavg_data, fedfomo, fedfomo_ma"),
])
def test_bad_dp_settings_are_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        validate_config(_cfg(*overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_dp_defaults_validate():
    cfg = _cfg("dp.enabled=true")
    validate_config(cfg)
    # the documented defaults (conf/config.yaml): sigma 1, clipping norm 1, delta 1e-5
    assert (cfg.dp.noise_multiplier, cfg.dp.max_grad_norm, cfg.dp.delta) == (1.0, 1.0, 1e-5)
    validate_config(_cfg("dp.enabled=true", "method=fedavg", "dp.noise_multiplier=2"))


@pytest.mark.realdata
def test_dp_run_records_epsilon_per_round_and_the_federation_max(tmp_path, data_root, server_identity):
    import csv
    import json

    from tests.inprocess import run_in_process

    out = tmp_path / "dp"
    run_in_process(out, {"dataset": "mnist", "num-clients": 3, "num-server-rounds": 2, "local-epochs": 1,
                         "samples-per-client": 100, "data-root": str(data_root),
                         "overrides": "method.num_models=2 dp.enabled=true dp.noise_multiplier=1.0"}, 3)
    rows = list(csv.DictReader((out / "clients.csv").open()))
    eps = {(int(r["round"]), int(r["cid"])): float(r["dp_epsilon"]) for r in rows}
    assert all(eps[(1, c)] > 0 and eps[(2, c)] > eps[(1, c)] for c in range(3))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dp_epsilon_max"] == pytest.approx(max(eps[(2, c)] for c in range(3)))
    assert summary["dp"] == {"noise_multiplier": 1.0, "max_grad_norm": 1.0, "delta": 1e-5}
