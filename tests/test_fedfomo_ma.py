"""FedFomo-MA (paper Appendix A.4, Eq. 14) against the hand example of shared/docs/METHOD_NOTES.md."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import RecordDict
from hypothesis import given, settings
from hypothesis import strategies as st

from fedfomo import fomo
from fedfomo.client import ClientSettings
from fedfomo.messages import concat_models, decode_floats, encode_ids
from fedfomo.methods.fedfomo_ma import FedFomoMAClient, leave_one_out_means, ma_weights
from fedfomo.models import build_model, get_weights
from tests.test_methods import _cfg, _data

TARGET = np.array([2.0, 0.0])
MODELS = [[np.array([0.0, 0.0])], [np.array([3.0, 0.0])], [np.array([0.0, 3.0])]]


def _loss(weights):
    return 0.5 * float(((weights[0] - TARGET) ** 2).sum())


def test_hand_example_weights_and_merge():
    mean_all, loo = leave_one_out_means(MODELS)
    np.testing.assert_allclose(mean_all[0], [1.0, 1.0])
    np.testing.assert_allclose([m[0] for m in loo], [[1.5, 1.5], [0.0, 1.5], [1.5, 0.0]])
    raw = ma_weights(_loss(mean_all), [_loss(m) for m in loo])
    np.testing.assert_allclose(raw, [0.25, 2.125, -0.875])
    np.testing.assert_allclose(fomo.normalized_weights(raw), [2 / 19, 17 / 19, 0.0])
    merged, reverted = fomo.fomo_merge([np.array([5.0, -7.0])], MODELS, raw)
    assert not reverted
    np.testing.assert_allclose(merged[0], [51 / 19, 0.0])  # sum w* = 1: independent of the baseline


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.floats(-10, 10), min_size=3, max_size=3), min_size=2, max_size=6))
def test_leave_one_out_means_recombine(rows):
    models = [[np.array(r)] for r in rows]
    n = len(models)
    mean_all, loo = leave_one_out_means(models)
    for k, m in enumerate(models):
        # (N-1) * mean without k + model k = N * mean of all
        np.testing.assert_allclose((n - 1) * loo[k][0] + m[0], n * mean_all[0], atol=1e-9)


def test_leave_one_out_needs_two_models():
    with pytest.raises(ValueError, match="at least 2"):
        leave_one_out_means(MODELS[:1])


def test_client_uses_eq14_and_keeps_its_baseline_without_evidence(monkeypatch):
    s = ClientSettings(model="cnn_authors", image_shape=(1, 28, 28), num_classes=10, seed=0, mean=(0.5,), std=(0.5,),
                       local_epochs=1, lr=0.05, lr_decay=0.99, momentum=0.0, weight_decay=0.0, batch_size=8,
                       method_params={"num_models": None, "epsilon": 0.3, "epsilon_decay": 0.05})
    client = FedFomoMAClient(0, _data(), s, RecordDict())
    init = get_weights(build_model("cnn_authors", (1, 28, 28), 10, 0))
    # three candidates: the initial model shifted by 0, 3 and -3 in its first array; the loss
    # depends on that array's first entry only, so the hand example's structure is checked on a real client
    cands = []
    for shift in (0.0, 3.0, -3.0):
        m = [w.copy() for w in init]
        m[0] = m[0] + np.float32(shift)
        cands.append(m)
    monkeypatch.setattr(client, "val_loss", lambda w: 0.5 * float((w[0].flat[0] - init[0].flat[0] - 2.0) ** 2))
    merged, metrics = client.personalize(concat_models(cands), {"candidate_ids": encode_ids([0, 1, 2])}, commit=True)
    raw = decode_floats(metrics["weights"])
    # the shift averages to 0 over all three; without n it is 0, -1.5, 1.5 -> Eq. 14 on those
    expect = ma_weights(0.5 * 4.0, [0.5 * (0.0 - 2.0) ** 2, 0.5 * (-1.5 - 2.0) ** 2, 0.5 * (1.5 - 2.0) ** 2])
    np.testing.assert_allclose(raw, expect, rtol=1e-5, atol=1e-5)
    w = fomo.normalized_weights(raw)
    np.testing.assert_allclose(merged[0], sum(wi * c[0] for wi, c in zip(w, cands)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(client.load_state("baseline")[0], merged[0])
    # one candidate: no leave-one-out average, weight 0, the baseline stays
    kept, m1 = client.personalize(concat_models(cands[1:2]), {"candidate_ids": encode_ids([1])}, commit=False)
    assert decode_floats(m1["weights"]).tolist() == [0.0] and m1["reverted"] == 1
    np.testing.assert_array_equal(kept[0], merged[0])


def test_defaults_download_every_model_and_validate():
    from fedfomo import methods
    from fedfomo.config import ConfigError, validate_config

    cfg = _cfg("method=fedfomo_ma")
    validate_config(cfg)
    assert methods.get("fedfomo_ma").strategy_options(cfg)["num_models"] == cfg.num_clients == 15
    assert methods.get("fedfomo_ma").facts(_cfg("method=fedfomo_ma", "method.num_models=4")) == {"num_models": 4}
    with pytest.raises(ConfigError, match=r"method.num_models=16 is out of range; allowed: 1..15"):
        validate_config(_cfg("method=fedfomo_ma", "method.num_models=16"))
