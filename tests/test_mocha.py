"""MOCHA (Smith et al. 2017): the Omega step, the coupling terms and the server/client split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import RecordDict
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedfomo.config import ConfigError, validate_config
from fedfomo.messages import Upload
from fedfomo.methods.mocha import (
    MochaClient,
    MochaStrategy,
    coupling,
    fixed_omega,
    omega_from_weights,
    regularizer_terms,
)
from fedfomo.models import get_weights, state_keys
from fedfomo.results import RunRecorder
from tests.test_methods import _cfg, _data, _init, _settings


def test_omega_step_hand_examples():
    # orthogonal columns of norms 3 and 4: Sigma = diag(3, 4) / 7, Omega = diag(7/3, 7/4)
    np.testing.assert_allclose(omega_from_weights(np.array([[3.0, 0.0], [0.0, 4.0]]), 1e-6),
                               np.diag([7 / 3, 7 / 4]))
    # w1 = (1, 0), w2 = (1, 1): W^T W = [[1, 1], [1, 2]], whose square root is ([[1, 1], [1, 2]] + I) / sqrt(5)
    # (2x2 rule, det 1, trace 3); trace sqrt(5) -> Sigma = [[2, 1], [1, 3]] / 5 -> Omega = [[3, -1], [-1, 2]]
    np.testing.assert_allclose(omega_from_weights(np.array([[1.0, 1.0], [0.0, 1.0]]), 1e-6),
                               [[3.0, -1.0], [-1.0, 2.0]], atol=1e-12)


def test_omega_floor_bounds_a_rank_deficient_w():
    # identical columns: Sigma's eigenvalues are 1 and 0; the floor 0.01 makes Omega's 1 and 100
    omega = omega_from_weights(np.array([[1.0, 1.0], [2.0, 2.0]]), 0.01)
    np.testing.assert_allclose(np.linalg.eigvalsh(omega), [1.0, 100.0])


@settings(max_examples=30, deadline=None)
@given(arrays(np.float64, (6, 3), elements=st.floats(-3, 3)))
def test_omega_is_the_inverse_of_a_unit_trace_square_root(w):
    gram = w.T @ w
    if np.linalg.eigvalsh(gram)[0] < 1e-3:  # keep away from the floor
        return
    sigma = np.linalg.inv(omega_from_weights(w, 1e-12))
    np.testing.assert_allclose(np.trace(sigma), 1.0, rtol=1e-9)
    np.testing.assert_allclose(sigma, sigma.T, atol=1e-9)
    root = sigma * np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(gram), 0, None)))
    np.testing.assert_allclose(root @ root, gram, atol=1e-8 * max(1.0, np.abs(gram).max()))


def test_fixed_omega_is_lg_fedavgs_squared_centering_matrix():
    np.testing.assert_allclose(fixed_omega(3), [[4 / 9, 1 / 9, 1 / 9], [1 / 9, 4 / 9, 1 / 9], [1 / 9, 1 / 9, 4 / 9]])


def test_coupling_terms_have_the_gradient_of_the_full_trace_regularizer():
    w = torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)  # columns w_0 = (1, 0), w_1 = (1, 1)
    omega = np.array([[3.0, -1.0], [-1.0, 2.0]])
    lam = 2.0
    v0 = coupling(w.numpy(), omega, 0)
    np.testing.assert_allclose(v0, [-1.0, -1.0])  # Omega_01 * w_1
    w0 = w[:, 0].clone().requires_grad_(True)
    regularizer_terms(w0, torch.from_numpy(v0), omega[0, 0], lam).backward()
    # lam * (W Omega)[:, 0] = 2 * (3 * (1, 0) - 1 * (1, 1)) = (4, -2), by hand
    np.testing.assert_allclose(w0.grad.numpy(), [4.0, -2.0])
    full = w.clone().requires_grad_(True)
    (lam / 2 * torch.trace(full @ torch.from_numpy(omega) @ full.T)).backward()
    np.testing.assert_allclose(full.grad[:, 0].numpy(), [4.0, -2.0])


def _strategy(tmp_path, n=3, update="mocha"):
    mask = [k.startswith("fc2") for k in state_keys("cnn_authors")]
    return MochaStrategy(mask=mask, omega_update=update, min_eigenvalue=1e-4, initial_weights=_init(),
                         num_clients=n, num_rounds=2, participation=1.0, seed=0,
                         recorder=RunRecorder(tmp_path, 2, 1, progress=False)), mask


def test_strategy_sends_couplings_and_learns_omega_from_uploads(tmp_path):
    st, mask = _strategy(tmp_path)
    np.testing.assert_allclose(st.omega, 3 * np.eye(3))  # MOCHA starts from Sigma = I / N
    head = [w for w, m in zip(_init(), mask) if m]
    weights, extra = st.download(1, 1)
    assert [w.shape for w in weights] == [h.shape for h in head]
    assert extra == {"omega_ii": 3.0} and all(np.all(w == 0) for w in weights)  # Omega diagonal: no coupling yet
    rng = np.random.default_rng(0)
    ups = {c: Upload(c, [rng.normal(size=h.shape).astype(np.float32) for h in head], 10, {}) for c in range(3)}
    st.aggregate(1, ups)
    w = np.stack([np.concatenate([a.astype(np.float64).ravel() for a in ups[c].weights]) for c in range(3)], axis=1)
    np.testing.assert_allclose(st.omega, omega_from_weights(w, 1e-4))
    weights, extra = st.download(2, 2)
    expected = st.omega[2, 0] * w[:, 0] + st.omega[2, 1] * w[:, 1]
    np.testing.assert_allclose(np.concatenate([a.ravel() for a in weights]), expected, rtol=1e-5, atol=1e-6)
    assert extra["omega_ii"] == pytest.approx(st.omega[2, 2])
    st.after_round(1)
    np.testing.assert_allclose(np.load(tmp_path / "omega" / "round_001.npy"), st.omega)


def test_fixed_omega_is_never_updated(tmp_path):
    st, mask = _strategy(tmp_path, update="fixed")
    head = [w for w, m in zip(_init(), mask) if m]
    st.aggregate(1, {0: Upload(0, [h + 1 for h in head], 10, {})})
    np.testing.assert_allclose(st.omega, fixed_omega(3))


def test_client_trains_its_own_model_with_the_coupling_and_uploads_only_the_head():
    client = MochaClient(0, _data(), _settings(layers=["fc2"], lam=0.5, omega_update="mocha", min_eigenvalue=1e-4),
                         RecordDict())
    keys = list(client.model.state_dict())
    head_keys = [k for k in keys if k.startswith("fc2")]
    v = [np.full(client.model.state_dict()[k].shape, 0.25, dtype=np.float32) for k in head_keys]
    start, _ = client.personalize(v, {"omega_ii": 2.0}, commit=True)
    for a, b in zip(start, _init()):
        np.testing.assert_array_equal(a, b)  # first round: the common initial model
    term = client.extra_loss(start)
    client.model.zero_grad()
    term(client.model).backward()
    params = dict(client.model.named_parameters())
    for k, vk in zip(head_keys, v):  # gradient lam * (omega_ii * w + v)
        np.testing.assert_allclose(params[k].grad.numpy(), 0.5 * (2.0 * params[k].detach().numpy() + vk),
                                   rtol=1e-5, atol=1e-7)
    assert params["conv1.weight"].grad is None
    upload, n, _ = client.fit(v, {"server_round": 1, "omega_ii": 2.0})
    assert n == 16 and len(upload) == len(head_keys)
    kept = get_weights(client.model)
    own, _ = client.personalize([], {}, commit=False)  # the final evaluation uses the kept model
    for a, b in zip(own, kept):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("override", "key", "allowed"), [
    ("method.lam=-1", "method.lam", "[0.0, inf]"),
    ("method.omega_update=learned", "method.omega_update", "mocha, fixed"),
    ("method.min_eigenvalue=0", "method.min_eigenvalue", "(0.0, 1.0]"),
    ("method.layers=[fc9]", "method.layers", "conv1, conv2, conv3, fc1, fc2"),
])
def test_bad_settings_are_one_line(override, key, allowed):
    with pytest.raises(ConfigError) as err:
        validate_config(_cfg("method=mocha", override))
    msg = str(err.value)
    assert "\n" not in msg and key in msg and allowed in msg
