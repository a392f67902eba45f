"""The FedFomo client's federated update, checked against the pure math on a tiny model."""

from __future__ import annotations

import numpy as np
import torch
from flwr.common import RecordDict

from fedfomo import fomo
from fedfomo.client import ClientData, ClientSettings
from fedfomo.messages import concat_models, decode_floats, encode_ids
from fedfomo.methods.fedfomo import FedFomoClient
from fedfomo.methods.local import LocalClient
from fedfomo.models import build_model, get_weights

SETTINGS = ClientSettings(model="cnn_authors", image_shape=(1, 28, 28), num_classes=10, seed=0, mean=(0.5,),
                          std=(0.5,), local_epochs=1, lr=0.05, lr_decay=0.99, momentum=0.0, weight_decay=0.0,
                          batch_size=8, method_params={"distance": "l1"})


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)

    def part(n):
        x = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
        return x, torch.randint(0, 10, (n,), generator=g)

    (a, b), (c, d), (e, f) = part(16), part(8), part(8)
    return ClientData(a, b, c, d, e, f)


def _perturbed(seed, scale):
    rng = np.random.default_rng(seed)
    return [w + scale * rng.normal(size=w.shape).astype(w.dtype) for w in get_weights(build_model(
        "cnn_authors", (1, 28, 28), 10, 0))]


def test_fedfomo_update_matches_math_and_keeps_baseline():
    state = RecordDict()
    client = FedFomoClient(1, _data(), SETTINGS, state)
    cands = [_perturbed(1, 0.01), _perturbed(2, 0.05), _perturbed(3, 0.2)]
    config = {"server_round": 2, "candidate_ids": encode_ids([1, 4, 2])}
    merged, metrics = client.personalize(concat_models(cands), config, commit=True)
    # recompute by hand with the pure functions
    base = client.initial_weights()
    bl = client.loss_on(base, client.data.val_x, client.data.val_y)[0]
    losses = [client.loss_on(c, client.data.val_x, client.data.val_y)[0] for c in cands]
    raw = fomo.fomo_weights(bl, losses, [fomo.parameter_distance(c, base, "l1") for c in cands])
    np.testing.assert_allclose(decode_floats(metrics["weights"]), raw)
    expect, reverted = fomo.fomo_merge(base, cands, raw)
    assert metrics["reverted"] == int(reverted) and metrics["candidate_ids"] == "1,4,2"
    for a, b in zip(merged, expect):
        np.testing.assert_allclose(a, b)
    # the merged model is the new baseline; a final evaluation (commit=False) leaves it alone
    for a, b in zip(state["baseline"].to_numpy_ndarrays(), merged):
        np.testing.assert_array_equal(a, b)
    client.personalize(concat_models([_perturbed(9, 0.3)]), {"candidate_ids": "5"}, commit=False)
    for a, b in zip(state["baseline"].to_numpy_ndarrays(), merged):
        np.testing.assert_array_equal(a, b)


def test_fedfomo_first_round_starts_from_server_model_and_uploads_trained():
    client = FedFomoClient(0, _data(), SETTINGS, RecordDict())
    init = client.initial_weights()
    upload, n, metrics = client.fit(init, {"server_round": 1, "candidate_ids": ""})
    assert n == 16 and 0.0 <= metrics["test_acc"] <= 1.0
    assert any(not np.array_equal(a, b) for a, b in zip(upload, init))


def test_local_client_keeps_its_model_across_rounds():
    state = RecordDict()
    c1 = LocalClient(0, _data(), SETTINGS, state)
    assert c1.fit([], {"server_round": 1})[0] == []
    kept = state["local_model"].to_numpy_ndarrays()
    c2 = LocalClient(0, _data(), SETTINGS, state)  # a new object, as Flower makes each round
    start, _ = c2.personalize([], {}, commit=True)
    for a, b in zip(start, kept):
        np.testing.assert_array_equal(a, b)


def test_fedfomo_fit_weights_from_hand_set_losses_and_keeps_the_merge_as_baseline(monkeypatch):
    state = RecordDict()
    client = FedFomoClient(1, _data(), SETTINGS, state)
    base = client.initial_weights()
    n = sum(w.size for w in base)
    c1 = [w + np.float32(1.0) for w in base]  # L1 distance n from the baseline
    c2 = [w - np.float32(2.0) for w in base]  # L1 distance 2n
    by_offset = {0.0: 2.0, 1.0: 1.0, -2.0: 1.5}  # validation losses: baseline 2.0, c1 1.0, c2 1.5
    monkeypatch.setattr(client, "val_loss", lambda w: by_offset[round(float(w[0].flat[0] - base[0].flat[0]), 3)])
    upload, _, metrics = client.fit(concat_models([c1, c2]), {"server_round": 2, "candidate_ids": encode_ids([3, 5])})
    # Eq. 3: (2.0 - 1.0) / n and (2.0 - 1.5) / (2n); Eq. 13: 0.8 and 0.2, so baseline + 0.8 - 0.4
    np.testing.assert_allclose(decode_floats(metrics["weights"]), [1.0 / n, 0.25 / n], rtol=1e-5)
    assert metrics["reverted"] == 0
    kept = state["baseline"].to_numpy_ndarrays()
    for k, b in zip(kept, base):
        np.testing.assert_allclose(k, b + 0.4, atol=1e-5)
    # the stored baseline is the merged model before local training, not the trained upload
    assert any(not np.allclose(u, k) for u, k in zip(upload, kept))
