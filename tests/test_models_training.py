"""Models, weight I/O, the shared training/evaluation loops, and message encoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedfomo.data import normalize
from fedfomo.messages import concat_models, decode_floats, decode_ids, encode_floats, encode_ids, split_models
from fedfomo.models import build_model, get_weights, set_weights
from fedfomo.training import OptimConfig, evaluate, predicted_class_counts, round_lr, train


def test_mcmahan_cnn_has_the_papers_parameter_count():
    model = build_model("cnn_mcmahan", (1, 28, 28), 10, seed=0)
    assert sum(p.numel() for p in model.parameters()) == 1_663_370


@pytest.mark.parametrize("name", ["cnn_authors", "cnn_mcmahan"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_models_forward_and_seeded_init(name, shape):
    a, b = build_model(name, shape, 10, seed=3), build_model(name, shape, 10, seed=3)
    for wa, wb in zip(get_weights(a), get_weights(b)):
        np.testing.assert_array_equal(wa, wb)
    x = normalize(torch.zeros((4, *shape), dtype=torch.uint8), (0.5,) * shape[0], (0.5,) * shape[0])
    assert a(x).shape == (4, 10)
    with pytest.raises(ValueError, match="model="):
        build_model("resnet", shape, 10, seed=0)


def test_weights_roundtrip():
    m = build_model("cnn_authors", (1, 28, 28), 10, seed=0)
    w = [x + 1.0 for x in get_weights(m)]
    set_weights(m, w)
    for a, b in zip(get_weights(m), w):
        np.testing.assert_array_equal(a, b)


def test_normalize_per_channel():
    x = torch.full((2, 3, 2, 2), 255, dtype=torch.uint8)
    out = normalize(x, (0.5, 0.0, 1.0), (0.5, 1.0, 0.25))
    np.testing.assert_allclose(out[0, :, 0, 0].numpy(), [1.0, 1.0, 0.0], atol=1e-6)


def test_round_lr():
    assert round_lr(0.1, 0.99, 1) == pytest.approx(0.1)
    assert round_lr(0.1, 0.99, 3) == pytest.approx(0.1 * 0.99**2)


def test_training_fits_a_tiny_problem_and_is_deterministic():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 1, 28, 28), generator=gen, dtype=torch.uint8)
    y = torch.arange(64) % 2
    x[y == 1, :, :14] = 255  # class 1 has a bright top half
    results = []
    for _ in range(2):
        m = build_model("cnn_authors", (1, 28, 28), 2, seed=0)
        before, _ = evaluate(m, x, y, mean=(0.5,), std=(0.5,))
        loss = train(m, x, y, epochs=5, optim=OptimConfig(0.05, 0.0, 1e-4, 16), mean=(0.5,), std=(0.5,),
                     generator=torch.Generator().manual_seed(1))
        after, acc = evaluate(m, x, y, mean=(0.5,), std=(0.5,), batch_size=10)
        results.append(get_weights(m))
        assert after < before and acc == 1.0 and np.isfinite(loss)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_messages_roundtrip():
    assert decode_ids(encode_ids([3, 0, 7])) == [3, 0, 7] and decode_ids("") == []
    v = np.array([0.1, -1e-300, 3.0, 1 / 3])
    np.testing.assert_array_equal(decode_floats(encode_floats(v)), v)
    models = [[np.zeros(2), np.ones(3)], [np.full(2, 2.0), np.full(3, 3.0)]]
    back = split_models(concat_models(models), 2)
    assert len(back) == 2 and np.array_equal(back[1][1], models[1][1])
    with pytest.raises(ValueError):
        split_models(concat_models(models), 3)


def test_crop_flip_is_a_shifted_window_of_the_zero_padded_image_or_its_mirror():
    from fedfomo.data import random_crop_flip, training_transform

    assert training_transform("none", torch.Generator()) is None
    with pytest.raises(ValueError, match=r"dataset\.augment='rotate' is not supported; allowed: none, crop_flip"):
        training_transform("rotate", torch.Generator())
    x = torch.arange(1, 3 * 8 * 8 + 1, dtype=torch.uint8).reshape(1, 3, 8, 8).repeat(6, 1, 1, 1)
    out = training_transform("crop_flip", torch.Generator().manual_seed(0))(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    padded = torch.nn.functional.pad(x.float(), (4, 4, 4, 4))  # black border, as RandomCrop(padding=4)
    windows = [padded[0, :, dy:dy + 8, dx:dx + 8] for dy in range(9) for dx in range(9)]
    for img in out:
        assert any(torch.equal(img, w) or torch.equal(img, w.flip(2)) for w in windows)
    assert len({tuple(img.flatten().tolist()) for img in out}) > 1  # the draws differ between images
    again = random_crop_flip(x.float(), torch.Generator().manual_seed(0))
    assert torch.equal(again, out)  # seeded


def test_training_with_augmentation_differs_and_is_deterministic():
    from fedfomo.data import training_transform

    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (32, 3, 32, 32), generator=gen, dtype=torch.uint8)
    y = torch.arange(32) % 2
    weights = []
    for augment in ("none", "crop_flip", "crop_flip"):
        m = build_model("cnn_authors", (3, 32, 32), 2, seed=0)
        train(m, x, y, epochs=1, optim=OptimConfig(0.05, 0.0, 1e-4, 16), mean=(0.5,) * 3, std=(0.5,) * 3,
              generator=torch.Generator().manual_seed(1),
              transform=training_transform(augment, torch.Generator().manual_seed(2)))
        weights.append(get_weights(m))
    assert not all(np.array_equal(a, b) for a, b in zip(weights[0], weights[1]))
    for a, b in zip(weights[1], weights[2]):
        np.testing.assert_array_equal(a, b)


def test_predicted_class_counts_counts_argmax_per_class_across_batches():
    class FirstPixel(torch.nn.Module):
        """Predicts class 2 where the (normalized) first pixel is positive, class 0 elsewhere."""

        def forward(self, x):
            v = x.flatten(1)[:, 0]
            return torch.stack([-v, torch.zeros_like(v), v], dim=1)

    x = torch.tensor([0, 255, 255, 10, 200], dtype=torch.uint8).view(5, 1, 1, 1)
    # mean 0.5: pixels 0 and 10 normalize below zero (class 0), 255, 255 and 200 above (class 2)
    counts = predicted_class_counts(FirstPixel(), x, mean=(0.5,), std=(0.5,), num_classes=4, batch_size=2)
    assert counts == [2, 0, 3, 0]
