"""Comparison methods: each method's specific math against hand-computed values, configs, and e2e runs."""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import RecordDict
from hydra import compose, initialize_config_dir
from torch import nn
from torch.nn import functional as F

from fedfomo import methods
from fedfomo.client import BaseClient, ClientData, ClientSettings
from fedfomo.config import ConfigError, validate_config
from fedfomo.data import normalize
from fedfomo.messages import Upload
from fedfomo.methods import fedprox, functional_loop, partial_sharing, perfedavg, pfedme
from fedfomo.methods.fedavg_data import draw_shared_indices, shared_train_indices
from fedfomo.methods.fedprox import FedProxClient
from fedfomo.methods.partial_sharing import PartialSharingClient, PartialSharingStrategy
from fedfomo.methods.perfedavg import PerFedAvgClient
from fedfomo.methods.pfedme import PFedMeClient, PFedMeStrategy
from fedfomo.models import build_model, get_weights, set_weights, state_keys
from fedfomo.partition import ClientSplit, with_shared_train
from fedfomo.results import RunRecorder
from fedfomo.strategy import PersonalizedStrategy, weighted_average
from fedfomo.training import round_lr
from tests.inprocess import run_in_process

REPO = Path(__file__).resolve().parents[1]
CONF = str(REPO / "conf")
NEW_METHODS = ("fedprox", "fedavg_data", "lg_fedavg", "fedper", "perfedavg", "pfedme", "fedfomo_ma", "cfl", "mocha",
               "pfedhn")


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return compose(config_name="config", overrides=list(overrides))


def _settings(**params) -> ClientSettings:
    return ClientSettings(model="cnn_authors", image_shape=(1, 28, 28), num_classes=10, seed=0, mean=(0.5,),
                          std=(0.5,), local_epochs=1, lr=0.05, lr_decay=0.99, momentum=0.0, weight_decay=0.0,
                          batch_size=8, method_params=params)


def _data(seed=0, n_train=16):
    g = torch.Generator().manual_seed(seed)

    def part(n):
        x = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
        return x, torch.randint(0, 10, (n,), generator=g)

    (a, b), (c, d), (e, f) = part(n_train), part(8), part(8)
    return ClientData(a, b, c, d, e, f)


def _init():
    return get_weights(build_model("cnn_authors", (1, 28, 28), 10, 0))


def _quadratic_grad_fn(params, batch):
    """f(w; b) = 1/2 ||w - b||^2, so grad f = w - b."""
    grads = [p - b for p, b in zip(params, batch)]
    loss = 0.5 * float(sum(((p - b) ** 2).sum() for p, b in zip(params, batch)))
    return grads, loss


# -- registration and configs ---------------------------------------------------------------------
def test_every_method_is_registered_and_its_defaults_are_valid():
    assert set(methods.names()) == {p.stem for p in (REPO / "conf" / "method").glob("*.yaml")}
    for name in methods.names():
        m = methods.get(name)
        assert m.name == name and issubclass(m.client, BaseClient) and issubclass(m.strategy, PersonalizedStrategy)
    for name in NEW_METHODS:
        for ds in ("cifar10", "mnist"):
            cfg = _cfg(f"method={name}", f"dataset={ds}")
            assert cfg.method.name == name
            validate_config(cfg)
    assert _cfg("method=fedprox").method.mu == 0.01
    assert _cfg("method=fedprox", "method.mu=0.1").method.mu == 0.1
    assert _cfg("method=fedavg_data").method.shared_fraction == 0.05
    assert list(_cfg("method=fedper").method.shared_layers) == ["conv", "fc1"]
    assert list(_cfg("method=lg_fedavg").method.shared_layers) == ["fc2"]
    p = _cfg("method=pfedme").method
    assert (p["lambda"], p.inner_steps, p.personal_lr, p.lr, p.beta) == (15, 5, 0.03, 0.005, 1.0)
    assert _cfg("method=pfedme", "method.lambda=10").method["lambda"] == 10
    pa = _cfg("method=perfedavg", "dataset=mnist").method
    assert (pa.alpha, pa.beta) == (0.01, 0.01)  # follow optim.lr by default
    assert _cfg("method=perfedavg", "method.alpha=0.003").method.alpha == 0.003
    cfg = _cfg("method=fedfomo", "method.num_models=10")
    assert cfg.method.name == "fedfomo" and cfg.method.num_models == 10
    assert methods.method_params(cfg) == {"num_models": 10, "epsilon": 0.3, "epsilon_decay": 0.05, "distance": "l1",
                                          "warmup_epochs": 0, "affinity_norm": "none", "extra_candidates": "none",
                                          "num_subfederations": None, "candidate_pool": "stored"}
    assert methods.method_params(_cfg("method=fedavg")) == {}
    assert methods.method_params(_cfg("method=fedprox")) == {"mu": 0.01}


@pytest.mark.parametrize(
    ("overrides", "key", "allowed"),
    [
        (["method=fedprox", "method.mu=-0.1"], "method.mu", "[0.0, inf]"),
        (["method=fedavg_data", "method.shared_fraction=0"], "method.shared_fraction", "(0.0, 1.0]"),
        (["method=fedavg_data", "method.shared_fraction=1.5"], "method.shared_fraction", "(0.0, 1.0]"),
        (["method=fedper", "method.shared_layers=[fc9]"], "method.shared_layers", "conv1, conv2, conv3, fc1, fc2"),
        (["method=fedper", "method.shared_layers=[]"], "method.shared_layers", "non-empty list"),
        (["method=lg_fedavg", "method.shared_layers=[conv,fc]"], "method.shared_layers",
         "at least one layer on the client"),
        (["method=lg_fedavg", "model=cnn_mcmahan", "method.shared_layers=[conv3]"], "method.shared_layers",
         "conv1, conv2, fc1, fc2"),
        (["method=perfedavg", "method.alpha=0"], "method.alpha", "(0.0, inf]"),
        (["method=perfedavg", "method.beta=-1"], "method.beta", "(0.0, inf]"),
        (["method=pfedme", "method.lambda=0"], "method.lambda", "(0.0, inf]"),
        (["method=pfedme", "method.inner_steps=0"], "method.inner_steps", ">= 1"),
        (["method=pfedme", "method.personal_lr=0.2"], "method.personal_lr", "(0.0, 0.1333"),
        (["method=pfedme", "method.lr=0.1"], "method.lr", "(0.0, 0.0666"),
        (["method=pfedme", "method.beta=3"], "method.beta", "(0.0, 2.0]"),
        (["method=pfedme", "method.personal_model=best"], "method.personal_model", "last_theta, from_global"),
        (["method=pfedme", "method.train_all_clients=sometimes"], "method.train_all_clients", "true, false"),
        (["method.name=fedprox"], "method.mu", "method=fedprox"),
    ],
)
def test_bad_method_settings_name_key_and_allowed(overrides, key, allowed):
    with pytest.raises(ConfigError) as err:
        validate_config(_cfg(*overrides))
    msg = str(err.value)
    assert "\n" not in msg and key in msg and allowed in msg


def test_cli_rejects_bad_method_setting_before_any_work(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fedfomo.main", "method=fedprox", "method.mu=-1", f"hydra.run.dir={tmp_path}/run",
         f"dataset.root={tmp_path}/nodata"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert proc.returncode == 2
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [
        "error: method.mu=-1 is out of range; allowed: [0.0, inf]"]


# -- FedProx ---------------------------------------------------------------------------------------
def test_proximal_term_gradient_is_mu_times_difference():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    anchor = {n: p.detach() + torch.randn_like(p) for n, p in model.named_parameters()}
    mu = 0.3
    term = fedprox.proximal_term(model.named_parameters(), anchor, mu)
    diff = {n: p.detach() - anchor[n] for n, p in model.named_parameters()}
    assert float(term.detach()) == pytest.approx(0.5 * mu * sum(float((d ** 2).sum()) for d in diff.values()), rel=1e-6)
    term.backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, mu * diff[n])


def test_fedprox_client_adds_the_term_around_the_global_model():
    client = FedProxClient(0, _data(), _settings(mu=0.5), RecordDict())
    start = _init()
    loss_fn = client.extra_loss(start)
    rng = np.random.default_rng(0)
    moved = [w + 0.1 * rng.normal(size=w.shape).astype(w.dtype) for w in start]
    set_weights(client.model, moved)
    loss = loss_fn(client.model)
    loss.backward()
    for (name, p), w, w0 in zip(client.model.named_parameters(), moved, start):
        np.testing.assert_allclose(p.grad.numpy(), 0.5 * (w - w0), rtol=1e-5, atol=1e-7, err_msg=name)
    assert FedProxClient(0, _data(), _settings(mu=0.0), RecordDict()).extra_loss(start) is None  # FedAvg


# -- LG-FedAvg / FedPer ---------------------------------------------------------------------------
def test_layer_mask_split_and_merge():
    keys = state_keys("cnn_authors")
    assert keys == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "conv3.weight", "conv3.bias",
                    "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    fedper = partial_sharing.layer_mask(keys, ["conv", "fc1"])
    lg = partial_sharing.layer_mask(keys, ["fc2"])
    assert fedper == [True] * 8 + [False] * 2
    assert lg == [not s for s in fedper]
    weights = [np.full(2, float(k)) for k in range(10)]
    shared, kept = partial_sharing.split_by_mask(weights, lg)
    assert [float(w[0]) for w in shared] == [8.0, 9.0] and len(kept) == 8
    assert all(a is b for a, b in zip(partial_sharing.merge_by_mask(shared, kept, lg), weights))
    with pytest.raises(ValueError):
        partial_sharing.merge_by_mask(kept, shared, lg)


@pytest.mark.parametrize(("prefixes", "shared_keys"), [(["fc2"], {"fc2.weight", "fc2.bias"}),
                                                       (["conv", "fc1"], {"conv1.weight", "conv1.bias",
                                                                          "conv2.weight", "conv2.bias",
                                                                          "conv3.weight", "conv3.bias",
                                                                          "fc1.weight", "fc1.bias"})])
def test_partial_sharing_averages_shared_layers_and_keeps_the_rest(tmp_path, prefixes, shared_keys):
    keys = state_keys("cnn_authors")
    mask = partial_sharing.layer_mask(keys, prefixes)
    init = _init()
    strategy = PartialSharingStrategy(shared_mask=mask, num_clients=2, num_rounds=3, participation=1.0, seed=0,
                                      initial_weights=init, recorder=RunRecorder(tmp_path, 3, 1, progress=False))
    # the server only holds (and sends) the shared layers of the initial model
    assert len(strategy.global_weights) == len(shared_keys)
    global1 = list(strategy.global_weights)
    states = [RecordDict(), RecordDict()]
    uploads, trained = {}, {}
    for cid in (0, 1):
        client = PartialSharingClient(cid, _data(seed=cid), _settings(shared_layers=prefixes), states[cid])
        upload, n, _ = client.fit(global1, {"server_round": 1})
        trained[cid] = get_weights(client.model)
        assert len(upload) == len(shared_keys)
        uploads[cid] = Upload(cid, upload, n + 10 * cid, {})  # unequal sizes: a weighted average
    new_global = strategy.aggregate(1, uploads)
    expect = weighted_average([(uploads[c].weights, uploads[c].num_examples) for c in (0, 1)])
    for a, b in zip(new_global, expect):
        np.testing.assert_allclose(a, b)
    # next round: shared layers = the average, kept layers = this client's own trained ones
    for cid in (0, 1):
        client = PartialSharingClient(cid, _data(seed=cid), _settings(shared_layers=prefixes), states[cid])
        start, _ = client.personalize(new_global, {"server_round": 2}, commit=False)
        shared_it = iter(new_global)
        for key, w, own in zip(keys, start, trained[cid]):
            np.testing.assert_array_equal(w, next(shared_it) if key in shared_keys else own, err_msg=key)
    # the two clients' kept layers differ (each trained its own)
    kept0 = states[0]["kept_layers"].to_numpy_ndarrays()
    kept1 = states[1]["kept_layers"].to_numpy_ndarrays()
    assert any(not np.array_equal(a, b) for a, b in zip(kept0, kept1))


def test_partial_sharing_first_round_uses_initial_kept_layers():
    client = PartialSharingClient(3, _data(), _settings(shared_layers=["fc2"]), RecordDict())
    init = _init()
    shared = [np.full_like(w, 7.0) for w in init[8:]]
    start, _ = client.personalize(shared, {"server_round": 1}, commit=True)
    for a, b in zip(start[:8], init[:8]):
        np.testing.assert_array_equal(a, b)
    assert all((w == 7.0).all() for w in start[8:])


# -- FedAvg with shared data -------------------------------------------------------------------------
def _toy_partition():
    labels = np.repeat(np.arange(4), 50)  # 4 classes x 50 images
    train = [np.array([0, 1, 2, 50, 51, 52, 100, 101]), np.array([150, 151, 152, 153, 3, 4])]
    val = [np.array([5, 55]), np.array([105, 155])]
    return labels, train, val


def test_shared_data_is_class_balanced_seeded_and_disjoint_from_client_data():
    labels, train, val = _toy_partition()
    g = draw_shared_indices(labels, train, val, fraction=0.5, seed=0)  # round(0.5 * 14) = 7 images
    assert len(g) == 7 and len(np.unique(g)) == 7
    counts = np.bincount(labels[g], minlength=4)
    assert sorted(counts.tolist()) == [1, 2, 2, 2]
    used = np.concatenate(train + val)
    assert not np.isin(g, used).any()  # enough unused images: disjoint from every client's data
    np.testing.assert_array_equal(g, draw_shared_indices(labels, train, val, fraction=0.5, seed=0))
    assert not np.array_equal(g, draw_shared_indices(labels, train, val, fraction=0.5, seed=1))


def test_shared_data_never_comes_from_val_and_falls_back_to_train_images():
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 1])  # every image belongs to a client
    train = [np.array([0, 3, 4, 5]), np.array([1, 6, 7, 8])]
    val = [np.array([2]), np.array([9])]
    g = draw_shared_indices(labels, train, val, fraction=0.5, seed=0)  # 4 images, 2 per class
    assert len(g) == 4 and np.bincount(labels[g]).tolist() == [2, 2]
    assert np.isin(g, np.concatenate(train)).all() and not np.isin(g, [2, 9]).any()
    with pytest.raises(ValueError, match="shared_fraction"):
        draw_shared_indices(labels, train, val, fraction=1.0, seed=0)  # 4 of class 0 needed, 2 outside val


def test_shared_data_goes_to_train_only():
    split = ClientSplit(train=np.array([1, 5, 9]), val=np.array([2, 3]), test=np.array([0, 4]))
    shared = np.array([5, 20, 30])
    out = with_shared_train(split, shared)
    np.testing.assert_array_equal(out.train, [1, 5, 9, 20, 30])  # union: the shared indices, once each
    np.testing.assert_array_equal(out.val, split.val)
    np.testing.assert_array_equal(out.test, split.test)
    assert with_shared_train(split, None) is split


def test_shared_data_only_for_methods_that_ask_for_it():
    labels, train, val = _toy_partition()
    splits = [ClientSplit(train=t, val=v, test=np.zeros(1, dtype=int)) for t, v in zip(train, val)]
    assert [n for n in methods.names() if methods.get(n).shared_train is not None] == ["fedavg_data"]
    g = shared_train_indices(_cfg("method=fedavg_data", "method.shared_fraction=0.5"), labels, splits)
    np.testing.assert_array_equal(g, draw_shared_indices(labels, train, val, 0.5, 0))


@pytest.mark.realdata
def test_experiment_adds_shared_train_data_to_every_client(data_root):
    from fedfomo.experiment import build_client, build_experiment

    cfg = _cfg("method=fedavg_data", "dataset=mnist", "num_clients=3", "samples_per_client=50",
               f"dataset.root={data_root}")
    exp = build_experiment(cfg)
    ds, splits, shared = exp.dataset, exp.splits, exp.shared_train
    assert len(shared) == round(0.05 * sum(len(s.train) for s in splits))
    data = build_client(exp, 1, RecordDict()).data
    train_idx = np.union1d(splits[1].train, shared)
    torch.testing.assert_close(data.train_y, ds.train_y[train_idx])
    torch.testing.assert_close(data.val_y, ds.train_y[splits[1].val])
    torch.testing.assert_close(data.test_y, ds.test_y[splits[1].test])


# -- Per-FedAvg ----------------------------------------------------------------------------------------
def test_perfedavg_first_order_step_on_a_quadratic():
    w = [torch.tensor([1.0, 0.0])]
    inner, outer = [torch.tensor([3.0, 1.0])], [torch.tensor([-1.0, 2.0])]
    new, loss = perfedavg.perfedavg_fo_step(w, _quadratic_grad_fn, inner, outer, alpha=0.1, beta=0.5)
    # temp = w - 0.1 (w - inner) = [1.2, 0.1]; grad at temp on outer = [2.2, -1.9]
    torch.testing.assert_close(new[0], torch.tensor([1.0 - 0.5 * 2.2, 0.0 + 0.5 * 1.9]))
    assert loss == pytest.approx(0.5 * (2.2 ** 2 + 1.9 ** 2))
    step, loss0 = functional_loop.gradient_step(w, _quadratic_grad_fn, inner, lr=0.1)
    torch.testing.assert_close(step[0], torch.tensor([1.2, 0.1]))
    assert loss0 == pytest.approx(0.5 * (4.0 + 1.0))


def test_grad_fn_matches_autograd_with_weight_decay():
    model = build_model("cnn_authors", (1, 28, 28), 10, 0)
    data = _data()
    x, y = data.train_x[:4], data.train_y[:4]
    params = [p.detach().clone() for p in model.parameters()]
    grads, loss = functional_loop.make_grad_fn(model, (0.5,), (0.5,), weight_decay=0.1)(params, (x, y))
    ref = F.cross_entropy(model(normalize(x, (0.5,), (0.5,))), y)
    ref.backward()
    assert loss == pytest.approx(float(ref.detach()), rel=1e-6)
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad + 0.1 * p.detach())


def test_perfedavg_client_personalizes_with_one_step_and_trains_from_the_global_model():
    state = RecordDict()
    client = PerFedAvgClient(0, _data(n_train=20), _settings(alpha=0.05, beta=0.02), state)
    glob = _init()
    theta, _ = client.personalize(glob, {"server_round": 4}, commit=False)
    batch = client.train_batch(4)
    assert len(batch[1]) == 8
    expect, _ = functional_loop.gradient_step(client.params_of(glob), client.grad_fn(), batch, 0.05)
    for a, b in zip(theta, client.weights_of(expect, glob)):
        np.testing.assert_allclose(a, b)
    assert client.training_start(glob, theta) == glob
    # 20 samples, batch 8 -> 3 batches: pairs (b0, b1) and (b2, b2)
    set_weights(client.model, glob)
    loss = client.local_training(1, theta)
    batches = client.epoch_batches(1)
    params = client.params_of(glob)
    for inner, outer in [(batches[0], batches[1]), (batches[2], batches[2])]:
        params, _ = perfedavg.perfedavg_fo_step(params, client.grad_fn(), inner, outer, alpha=0.05, beta=0.02)
    for a, b in zip(get_weights(client.model), client.weights_of(params, glob)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert np.isfinite(loss) and len(state) == 0


# -- pFedMe ----------------------------------------------------------------------------------------------
def test_pfedme_inner_solution_minimizes_the_moreau_objective():
    rng = np.random.default_rng(0)
    a = torch.tensor(rng.normal(size=(6, 3)), dtype=torch.float64)
    b = torch.tensor(rng.normal(size=6), dtype=torch.float64)
    w = [torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)]
    lam = 2.0

    def grad_fn(params, batch):  # f(theta) = 1/2 ||A theta - b||^2
        r = a @ params[0] - b
        return [a.T @ r], 0.5 * float(r @ r)

    def objective(theta):
        r = a @ theta - b
        return float(0.5 * r @ r + lam / 2 * ((theta - w[0]) ** 2).sum())

    exact = torch.linalg.solve(a.T @ a + lam * torch.eye(3, dtype=torch.float64), a.T @ b + lam * w[0])
    theta5, _ = pfedme.pfedme_inner_solve(w, w, grad_fn, None, lam=lam, lr=0.05, steps=5)
    assert objective(exact) < objective(theta5[0]) < objective(w[0])  # K = 5 steps: approximately
    theta, _ = pfedme.pfedme_inner_solve(w, w, grad_fn, None, lam=lam, lr=0.05, steps=2000)
    torch.testing.assert_close(theta[0], exact)
    # the first step by hand: theta1 = w - lr * (grad f(w) + lam * (w - w)) = w - lr * grad f(w)
    one, _ = pfedme.pfedme_inner_solve(w, w, grad_fn, None, lam=lam, lr=0.05, steps=1)
    torch.testing.assert_close(one[0], w[0] - 0.05 * (a.T @ (a @ w[0] - b)))


def test_pfedme_local_and_server_updates():
    w, theta = [torch.tensor([1.0, 2.0])], [torch.tensor([0.0, 4.0])]
    out = pfedme.pfedme_local_update(w, theta, lam=15.0, lr=0.01)
    torch.testing.assert_close(out[0], torch.tensor([1.0 - 0.15 * 1.0, 2.0 - 0.15 * (-2.0)]))
    prev, avg = [np.array([1.0, 1.0], dtype=np.float32)], [np.array([3.0, 0.0], dtype=np.float32)]
    np.testing.assert_allclose(pfedme.pfedme_server_update(prev, avg, 1.0)[0], [3.0, 0.0])
    np.testing.assert_allclose(pfedme.pfedme_server_update(prev, avg, 2.0)[0], [5.0, -1.0])
    assert pfedme.pfedme_server_update(prev, avg, 2.0)[0].dtype == np.float32


def test_pfedme_strategy_applies_beta_to_the_average(tmp_path):
    init = [np.zeros(2, dtype=np.float32)]
    st = PFedMeStrategy(beta=0.5, num_clients=2, num_rounds=2, participation=1.0, seed=0, initial_weights=init,
                        recorder=RunRecorder(tmp_path, 2, 1, progress=False))
    out = st.aggregate(1, {0: Upload(0, [np.array([2.0, 0.0], dtype=np.float32)], 1, {}),
                           1: Upload(1, [np.array([4.0, 4.0], dtype=np.float32)], 3, {})})
    np.testing.assert_allclose(out[0], 0.5 * np.array([3.5, 3.0]))  # average [3.5, 3.0], half a step from 0
    out = st.aggregate(2, {0: Upload(0, [np.array([0.0, 0.0], dtype=np.float32)], 1, {})})
    np.testing.assert_allclose(out[0], 0.5 * np.array([1.75, 1.5]))


def _pfedme_strategy(tmp_path, n, train_all):
    return PFedMeStrategy(beta=1.0, train_all_clients=train_all, num_clients=n, num_rounds=3, participation=0.2,
                          seed=0, initial_weights=[np.zeros(1, dtype=np.float32)],
                          recorder=RunRecorder(tmp_path, 3, 1, progress=False))


def test_pfedme_train_all_clients_trains_everyone_and_averages_the_sampled(tmp_path):
    default, every = _pfedme_strategy(tmp_path / "a", 10, False), _pfedme_strategy(tmp_path / "b", 10, True)
    sampled = default.sampled_clients(2)
    assert len(sampled) == 2 and default.train_clients(2) == sampled  # the default trains the draw only
    assert every.train_clients(2) == list(range(10)) and every.sampled_clients(2) == sampled
    # client c uploads [c] with c + 1 examples: the average is over the two sampled clients only
    uploads = {c: Upload(c, [np.array([float(c)], dtype=np.float32)], c + 1, {}) for c in range(10)}
    a, b = sampled
    expected = (a * (a + 1) + b * (b + 1)) / (a + 1 + b + 1)
    np.testing.assert_allclose(every.aggregate(2, uploads)[0], [expected], rtol=1e-6)
    # the sampled clients failed: the global model is kept
    assert every.aggregate(2, {c: u for c, u in uploads.items() if c not in sampled}) is None


def test_pfedme_train_all_clients_is_recorded_and_validated():
    assert methods.get("pfedme").facts(_cfg("method=pfedme")) == {}
    cfg = _cfg("method=pfedme", "method.train_all_clients=true")
    validate_config(cfg)
    assert methods.get("pfedme").facts(cfg) == {"authors_options": "train_all_clients=true"}
    assert methods.get("pfedme").strategy_options(cfg) == {"beta": 1.0, "train_all_clients": True}


PFEDME = {"lambda": 15.0, "inner_steps": 5, "personal_lr": 0.05, "lr": 0.02}


def _pfedme_client(cid, personal_model):
    state = RecordDict()
    client = PFedMeClient(cid, _data(n_train=16), _settings(**PFEDME, personal_model=personal_model), state)
    return client, state, _init()


def _assert_theta_from_global(client, glob, rnd, theta):
    w = client.params_of(glob)
    expect, _ = pfedme.pfedme_inner_solve(w, w, client.grad_fn(), client.train_batch(rnd), lam=15.0, lr=0.05,
                                             steps=5)
    for a, b in zip(theta, client.weights_of(expect, glob)):
        np.testing.assert_allclose(a, b)


def _pfedme_training_by_hand(client, glob, rnd):
    """Two batches of 8, theta warm-started, w <- w - lr * lambda * (w - theta): (last theta, w)."""
    w_loc = client.params_of(glob)
    th = list(w_loc)
    for batch in client.epoch_batches(rnd):
        th, _ = pfedme.pfedme_inner_solve(th, w_loc, client.grad_fn(), batch, lam=15.0, lr=0.05, steps=5)
        w_loc = pfedme.pfedme_local_update(w_loc, th, lam=15.0, lr=round_lr(0.02, 0.99, rnd))
    return th, w_loc


def test_pfedme_client_evaluates_theta_and_uploads_the_local_model():
    client, state, glob = _pfedme_client(2, "from_global")
    theta, _ = client.personalize(glob, {"server_round": 2}, commit=True)
    _assert_theta_from_global(client, glob, 2, theta)
    upload, n, metrics = client.fit(glob, {"server_round": 2})
    _, w_loc = _pfedme_training_by_hand(client, glob, 2)
    for a, b in zip(upload, client.weights_of(w_loc, glob)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert n == 16 and 0.0 <= metrics["test_acc"] <= 1.0 and len(state) == 0


def test_pfedme_last_theta_is_kept_and_evaluated_next_round():
    client, state, glob = _pfedme_client(1, "last_theta")
    # before any training: theta solved from the global model, as in from_global
    first, _ = client.personalize(glob, {"server_round": 1}, commit=True)
    _assert_theta_from_global(client, glob, 1, first)
    client.fit(glob, {"server_round": 1})
    th, _ = _pfedme_training_by_hand(client, glob, 1)  # the theta of the last inner solve of that training
    other_global = [g + 1.0 for g in glob]  # the kept theta does not depend on what the server sends
    nxt, _ = client.personalize(other_global, {"server_round": 2}, commit=False)
    for a, b in zip(nxt, client.weights_of(th, glob)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert list(state.keys()) == [PFedMeClient.STATE_KEY]


# -- end to end: the real round loop and ClientApp, messages serialised as by Flower ------------------
# (tests/inprocess.py; fedavg, local and fedfomo also run through `flwr run` in tests/test_e2e.py)
@pytest.mark.realdata
@pytest.mark.parametrize("method", NEW_METHODS)
def test_method_runs_end_to_end(tmp_path, data_root, method, server_identity, caplog):
    run_config = {"dataset": "mnist", "method": method, "num-clients": 4, "num-server-rounds": 2, "local-epochs": 1,
                  "samples-per-client": 100, "data-root": str(data_root), "overrides": "optim.lr=0.05"}
    out = tmp_path / method
    with caplog.at_level(logging.INFO, logger="fedfomo"):
        s = run_in_process(out, run_config, 4)
    assert s["method"] == method and s["rounds_completed"] == 2
    assert len(s["per_client_final_acc"]) == 4 and all(0.0 <= a <= 1.0 for a in s["per_client_final_acc"])
    assert json.loads((out / "status.json").read_text())["status"] == "completed"
    assert f"name: {method}" in (out / "config.yaml").read_text()
    rows = (out / "rounds.csv").read_text().splitlines()
    assert len(rows) == 3
    upload_mb = float(rows[-1].split(",")[rows[0].split(",").index("upload_mb")])
    model = build_model("cnn_authors", (1, 28, 28), 10, 0)
    sizes = {k: v.numel() * 4 for k, v in model.state_dict().items()}
    full = 4 * sum(sizes.values()) / 2**20
    if method in ("lg_fedavg", "mocha"):  # only fc2 travels
        assert upload_mb == pytest.approx(4 * (sizes["fc2.weight"] + sizes["fc2.bias"]) / 2**20)
    elif method == "fedper":  # everything but fc2 travels
        assert upload_mb == pytest.approx(full - 4 * (sizes["fc2.weight"] + sizes["fc2.bias"]) / 2**20)
    else:
        assert upload_mb == pytest.approx(full)
    if method == "fedavg_data":  # 5% of the 4 x 80 training images: 16 shared images each
        assert "shared data: 16 training images" in caplog.text


@pytest.mark.realdata
@pytest.mark.parametrize("method", ["lg_fedavg", "fedper", "pfedme", "fedfomo_ma", "cfl", "mocha", "pfedhn"])
def test_stateful_method_runs_with_partial_participation(tmp_path, data_root, method, server_identity):
    """Methods with per-client state (on the client or the server) at 50% participation (Table 1, 100 clients)."""
    run_config = {"dataset": "mnist", "method": method, "num-clients": 4, "num-server-rounds": 3, "local-epochs": 1,
                  "samples-per-client": 100, "participation": 0.5, "data-root": str(data_root),
                  "overrides": "optim.lr=0.05"}
    out = tmp_path / method
    s = run_in_process(out, run_config, 4)
    assert s["rounds_completed"] == 3
    with (out / "rounds.csv").open() as f:
        assert [int(r["num_clients"]) for r in csv.DictReader(f)] == [2, 2, 2]
    # the final evaluation covers every client, sampled in the last round or not
    assert len(s["per_client_final_acc"]) == 4 and all(0.0 <= a <= 1.0 for a in s["per_client_final_acc"])


def test_cli_names_the_new_key_of_a_moved_setting(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fedfomo.main", "fomo.num_models=3", f"hydra.run.dir={tmp_path}/run"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "fomo.num_models moved to method.num_models" in lines[0]
    assert not (tmp_path / "run").exists()
