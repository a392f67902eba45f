"""Models: the CNN of McMahan et al. (2017) and the FedFomo authors' CNN, plus weight I/O."""

from __future__ import annotations

import copy
import functools

import numpy as np
import torch
from torch import nn

MODELS = ("cnn_authors", "cnn_mcmahan")


class McMahanCNN(nn.Module):
    """CNN of McMahan et al., "Communication-Efficient Learning of Deep Networks" (2017).

    Two 5x5 convolutions (32 and 64 channels, 'same' padding) each followed by 2x2 max pooling,
    a 512-unit fully connected layer with ReLU and a linear output layer. On MNIST it has the
    paper's 1,663,370 parameters; on 32x32 colour images the same layers are used.
    """

    def __init__(self, in_channels: int, image_size: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.pool = nn.MaxPool2d(2)
        side = image_size // 4
        self.fc1 = nn.Linear(64 * side * side, 512)
        self.fc2 = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        return self.fc2(torch.relu(self.fc1(x)))


class AuthorsCNN(nn.Module):
    """The CNN of the FedFomo authors' code (the TensorFlow-tutorial CNN).

    conv3x3(32) - maxpool2 - conv3x3(64) - maxpool2 - conv3x3(64) - fc(64) - fc(classes),
    'valid' padding and ReLU activations.
    """

    def __init__(self, in_channels: int, image_size: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.conv3 = nn.Conv2d(64, 64, 3)
        self.pool = nn.MaxPool2d(2)
        side = ((image_size - 2) // 2 - 2) // 2 - 2
        self.fc1 = nn.Linear(64 * side * side, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.relu(self.conv3(x))
        x = torch.flatten(x, 1)
        return self.fc2(torch.relu(self.fc1(x)))


def build_model(name: str, image_shape: tuple[int, int, int], num_classes: int, seed: int) -> nn.Module:
    """Create a model with seeded initial weights, in channels_last layout.

    Parameters
    ----------
    name : str
        ``cnn_authors`` or ``cnn_mcmahan``.
    image_shape : tuple of int
        (C, H, W) of the inputs (H == W).
    num_classes : int
        Output size.
    seed : int
        Seed of the initial weights: the same seed gives the same model everywhere.

    """
    return copy.deepcopy(_initial_model(name, tuple(image_shape), num_classes, seed))


@functools.lru_cache(maxsize=4)
def _initial_model(name: str, image_shape: tuple[int, int, int], num_classes: int, seed: int) -> nn.Module:
    """The seeded initial model, built once per process (:func:`build_model` hands out copies).

    A copy costs a memory copy; building draws every initial weight again (the McMahan CNN's
    1.66 M, ~15 ms), which every simulated client would pay every round.
    """
    classes = {"cnn_authors": AuthorsCNN, "cnn_mcmahan": McMahanCNN}
    if name not in classes:
        raise ValueError(f"model={name!r} is not supported; allowed: {', '.join(MODELS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = classes[name](image_shape[0], image_shape[1], num_classes)
    return model.to(memory_format=torch.channels_last)


def state_keys(name: str) -> list[str]:
    """The state_dict keys of model ``name``, in order (they do not depend on image size or classes)."""
    classes = {"cnn_authors": AuthorsCNN, "cnn_mcmahan": McMahanCNN}
    if name not in classes:
        raise ValueError(f"model={name!r} is not supported; allowed: {', '.join(MODELS)}")
    return list(classes[name](1, 32, 2).state_dict().keys())


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """The model's state (parameters and buffers) as a list of numpy arrays, in state_dict order."""
    return [v.detach().cpu().numpy().copy() for v in model.state_dict().values()]


def set_weights(model: nn.Module, weights: list[np.ndarray]) -> None:
    """Load a list of numpy arrays (state_dict order) into ``model`` in place."""
    keys = list(model.state_dict().keys())
    if len(keys) != len(weights):
        raise ValueError(f"expected {len(keys)} arrays, got {len(weights)}")
    state = {k: torch.from_numpy(np.asarray(w)) for k, w in zip(keys, weights, strict=True)}
    model.load_state_dict(state, strict=True)
