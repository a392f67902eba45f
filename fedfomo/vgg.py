"""The paper's embedder for the latent split: VGG-11 adapted to 32x32 inputs, its training and its features.

VGG-11 (configuration A, with batch norm, the layers of torchvision's ``vgg11_bn``) adapted to
32x32 inputs: MNIST is zero-padded to 32x32 and the first convolution takes its one channel; the
1x1x512 output of the convolutions feeds FC(512, 4096) - FC(4096, 4096) - FC(4096, classes). It
is trained from scratch on the official train split (SGD with momentum, one-cycle cosine
learning rate, random crops and, on CIFAR, horizontal flips; settings in ``partition.vgg``) and
its test accuracy is logged and stored (the paper asks for >= 85%). The embedding is the 4096-d
activation (after ReLU) of the second FC layer.

Training runs in channels_last and, by default (``partition.vgg.precision=bf16``), under
bfloat16 autocast, about 2x faster on a CPU with AVX-512 BF16 than fp32.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from fedfomo.data import ImageDataset, normalize, random_crop_flip

log = logging.getLogger("fedfomo")

VGG_DEFAULTS = {"epochs": 15, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128,
                "precision": "bf16"}


PRECISIONS = ("bf16", "fp32")

VGG11_LAYERS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")  # configuration A


class VGG11(nn.Module):
    """VGG-11 (configuration A, batch norm, as torchvision's ``vgg11_bn``) for 32x32 inputs.

    The 1x1x512 output of the convolutions feeds FC(512, 4096) - FC(4096, 4096) - FC(4096, classes)
    (torchvision's head, which expects 7x7x512 from 224x224 inputs, starts at 25088 instead).
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_channels
        for v in VGG11_LAYERS:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(ch, int(v), 3, padding=1), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
                ch = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(
            nn.Linear(512, 4096), nn.ReLU(True), nn.Dropout(0.5),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(0.5),
            nn.Linear(4096, num_classes),
        )
        for m in self.modules():  # torchvision's initialization
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def build_vgg11(in_channels: int, num_classes: int) -> nn.Module:
    """A fresh :class:`VGG11`."""
    return VGG11(in_channels, num_classes)


def vgg_inputs(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (N, C, H, W) -> normalized float batch, zero-padded (before normalizing) to at least 32x32."""
    h, w = x.shape[-2:]
    if h < 32 or w < 32:
        ph, pw = max(0, 32 - h), max(0, 32 - w)
        x = nn.functional.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    return normalize(x, mean, std)


def vgg_batch(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """:func:`vgg_inputs` of a uint8 batch, on ``device``, in channels_last (the layout VGG-11 runs in)."""
    return vgg_inputs(x, mean, std).to(device).contiguous(memory_format=torch.channels_last)


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """Mixed-precision context: bfloat16 autocast for ``precision="bf16"``, a no-op for ``fp32``."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def pick_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def describe_device(device: torch.device) -> str:
    """``device`` with the accelerator's name and the torch version, for the record."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return f"{device}{f' ({name})' if name else ''}, torch {torch.__version__}"


def train_vgg11(ds: ImageDataset, settings: Mapping, seed: int, device: torch.device,
                eval_every: int = 3) -> tuple[nn.Module, float]:
    """Train VGG-11 on ``ds``'s train split; return it (eval mode) and its test accuracy.

    Parameters
    ----------
    ds : ImageDataset
        The dataset.
    settings : mapping
        ``epochs``, ``lr``, ``momentum``, ``weight_decay``, ``batch_size``, ``precision``
        (see :data:`VGG_DEFAULTS`).
    seed : int
        Seed of the initialization, batch order and augmentation.
    device : torch.device
        Where to train.
    eval_every : int
        Log the test accuracy every this many epochs (and after the last); 0 = only after the last.

    Returns
    -------
    (nn.Module, float)

    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_vgg11(ds.image_shape[0], ds.num_classes).to(device, memory_format=torch.channels_last)
    epochs, bs = int(settings["epochs"]), int(settings["batch_size"])
    precision = str(settings.get("precision", "fp32"))
    opt = torch.optim.SGD(model.parameters(), lr=float(settings["lr"]), momentum=float(settings["momentum"]),
                          weight_decay=float(settings["weight_decay"]), nesterov=float(settings["momentum"]) > 0)
    n = len(ds.train_y)
    steps = max(1, epochs * ((n + bs - 1) // bs))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=float(settings["lr"]), total_steps=steps,
                                                pct_start=0.15, anneal_strategy="cos")
    flip = ds.name != "mnist"
    loss_fn = nn.CrossEntropyLoss()
    acc = float("nan")
    for epoch in range(epochs):
        model.train()
        start = time.perf_counter()
        total, correct, loss_sum = 0, 0, 0.0
        for idx in torch.randperm(n, generator=gen).split(bs):
            x = random_crop_flip(vgg_inputs(ds.train_x[idx], ds.mean, ds.std).to(device), gen, flip)
            x = x.contiguous(memory_format=torch.channels_last)
            y = ds.train_y[idx].to(device)
            with autocast(device, precision):
                out = model(x)
                loss = loss_fn(out.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += len(y)
            correct += int((out.argmax(1) == y).sum())
            loss_sum += float(loss.detach()) * len(y)
        msg = (f"vgg11 epoch {epoch + 1}/{epochs} | train loss {loss_sum / total:.4f} acc {correct / total:.4f}"
               f" | {time.perf_counter() - start:.0f} s")
        if epoch + 1 == epochs or (eval_every and (epoch + 1) % eval_every == 0):
            acc = vgg_accuracy(model, ds, device, precision=precision)
            msg += f" | test acc {acc:.4f}"
        log.info(msg)
    model.eval()
    log.info("vgg11 test accuracy %.4f", acc)
    return model, acc


@torch.no_grad()


def vgg_accuracy(model: nn.Module, ds: ImageDataset, device: torch.device, batch_size: int = 1000,
                 precision: str = "fp32") -> float:
    """Accuracy of ``model`` on ``ds``'s test split."""
    model.eval()
    correct = 0
    for idx in torch.arange(len(ds.test_y)).split(batch_size):
        with autocast(device, precision):
            out = model(vgg_batch(ds.test_x[idx], ds.mean, ds.std, device))
        correct += int((out.argmax(1).cpu() == ds.test_y[idx]).sum())
    return correct / max(1, len(ds.test_y))


@torch.no_grad()


def vgg_embed(model: VGG11, x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
              device: torch.device, batch_size: int = 1000, precision: str = "fp32") -> np.ndarray:
    """The 4096-d activation (after ReLU) of VGG-11's second FC layer for every image of ``x``."""
    model.eval()
    head = model.classifier[:5]  # FC - ReLU - Dropout - FC - ReLU
    parts = []
    for idx in torch.arange(len(x)).split(batch_size):
        with autocast(device, precision):
            h = head(torch.flatten(model.avgpool(model.features(vgg_batch(x[idx], mean, std, device))), 1))
        parts.append(h.float().cpu().numpy())
    return np.concatenate(parts) if parts else np.zeros((0, 4096), dtype=np.float32)
