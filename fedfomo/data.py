"""Dataset loading: MNIST, CIFAR-10 and CIFAR-100 as in-memory uint8 tensors.

The files are read directly in their torchvision layout (``MNIST/raw/*-ubyte``,
``cifar-10-batches-py/``, ``cifar-100-python/``) so that no per-sample PIL decoding happens
and no md5 check rejects re-packed but pixel-identical copies. ``download=True`` fetches a
missing dataset through torchvision first. Normalization happens per batch on the tensors
(:func:`normalize`).

Test split (``dataset.test_split``): ``official`` reads the official test file; ``holdout`` does not
read it at all and instead holds out ``dataset.holdout_size`` training images (the same number
from every class, drawn with ``dataset.holdout_seed``) as the test set and removes them from
the training set, for machines without the test file (CIFAR-100 here). Every number of such a
run is marked with :func:`test_split_label`, e.g. "CIFAR-100 held-out test".
"""

from __future__ import annotations

import functools
import gzip
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from omegaconf import DictConfig

DATASETS = ("mnist", "cifar10", "cifar100")
DATA_ENV_VAR = "FEDFOMO_DATA"
#: ``dataset.test_split``: the official test file, or training images held out as the test set
TEST_SPLITS = ("official", "holdout")
#: ``dataset.augment``: none (the paper says nothing of augmentation) | crop_flip (the authors' code
#: for CIFAR: ``RandomCrop(32, padding=4)`` and ``RandomHorizontalFlip()`` of every training image)
AUGMENTS = ("none", "crop_flip")
DEFAULT_HOLDOUT_SIZE = 10000
#: How the datasets are named in labels ("CIFAR-100 held-out test").
DISPLAY_NAMES = {"mnist": "MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}

# Per-channel mean and std of the training split, on the [0, 1] scale.
_STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_FOLDERS = {
    "mnist": ("MNIST/raw", ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                            "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")),
    "cifar10": ("cifar-10-batches-py",
                (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")),
    "cifar100": ("cifar-100-python", ("train", "test")),
}
#: The files of the official test split (not needed with ``dataset.test_split=holdout``).
_TEST_FILES = {"mnist": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"), "cifar10": ("test_batch",),
               "cifar100": ("test",)}


class DataNotFoundError(FileNotFoundError):
    """Raised when a dataset's files are missing and downloading was not requested."""


@dataclass(frozen=True)
class ImageDataset:
    """A labelled image dataset held in memory.

    Attributes
    ----------
    name : str
        One of :data:`DATASETS`.
    train_x, test_x : torch.Tensor
        uint8 images, shape (N, C, H, W).
    train_y, test_y : torch.Tensor
        int64 labels, shape (N,).
    num_classes : int
        Number of classes.
    mean, std : tuple of float
        Per-channel normalization constants on the [0, 1] scale.

    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    test_split: str = "official"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]


def resolve_root(root: str | os.PathLike | None) -> Path:
    """Return the dataset root: ``root`` if given, else ``$FEDFOMO_DATA``, else ``./data``."""
    if root is None or str(root) == "":
        root = os.environ.get(DATA_ENV_VAR, "./data")
    return Path(root).expanduser().resolve()


def _missing_files(name: str, root: Path, train_only: bool = False) -> list[Path]:
    folder, files = _FOLDERS[name]
    missing = []
    for f in files:
        if train_only and f in _TEST_FILES[name]:
            continue
        p = root / folder / f
        if not p.exists() and not Path(str(p) + ".gz").exists():
            missing.append(p)
    return missing


def _download(name: str, root: Path) -> None:
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "cifar10": torchvision.datasets.CIFAR10,
           "cifar100": torchvision.datasets.CIFAR100}[name]
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as err:  # urllib, socket, checksum and extraction errors alike: one line
        raise DataNotFoundError(
            f"dataset {name!r}: dataset.download=true could not download it into {root} "
            f"({type(err).__name__}: {str(err).splitlines()[0][:100] if str(err) else ''}). Fix: download on a machine "
            f"with internet access and set dataset.root=DIR (or ${DATA_ENV_VAR}=DIR) to the folder holding it, "
            f"or restore it from a local copy") from err


def _corrupt(path: Path, err: Exception) -> DataNotFoundError:
    return DataNotFoundError(
        f"{path} is corrupt or truncated ({type(err).__name__}: {str(err)[:80]}). Fix: delete it and add "
        f"dataset.download=true to download it with torchvision, or set dataset.root=DIR (or ${DATA_ENV_VAR}=DIR) "
        f"to a folder holding an intact copy")


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if not path.exists() else open
    real = path if path.exists() else Path(str(path) + ".gz")
    try:
        with opener(real, "rb") as f:
            data = f.read()
        if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
            raise ValueError("not an IDX file of unsigned bytes")
        ndim = data[3]
        shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()
    except (OSError, EOFError, ValueError, IndexError) as err:
        raise _corrupt(real, err) from err


def _read_cifar(paths: list[Path], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for p in paths:
        try:
            with open(p, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[label_key], dtype=np.int64))
        except (OSError, EOFError, ValueError, KeyError, TypeError, pickle.UnpicklingError) as err:
            raise _corrupt(p, err) from err
    return np.concatenate(xs), np.concatenate(ys)


def test_split_label(name: str, test_split: str = "official", holdout_size: int = DEFAULT_HOLDOUT_SIZE,
                     holdout_seed: int = 0) -> str:
    """How results mark the test split.

    ``official``, or for ``holdout`` e.g. ``CIFAR-100 held-out test (10000 train images, seed 0)``.
    """
    if test_split == "official":
        return "official"
    return f"{DISPLAY_NAMES.get(name, name)} held-out test ({int(holdout_size)} train images, seed {int(holdout_seed)})"


def holdout_indices(labels: np.ndarray, num_classes: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split training indices into (kept, held out): ``size / num_classes`` images of every class held out.

    Seeded by ``seed`` alone (not the run seed), so that every run of a setting tests on the same
    images. Both index arrays are sorted (the images keep their file order).

    Raises
    ------
    ValueError
        One line naming ``dataset.holdout_size``, if ``size`` is not a positive multiple of
        ``num_classes`` or leaves some class without a training image.

    """
    labels = np.asarray(labels)
    if size <= 0 or size % num_classes:
        raise ValueError(f"dataset.holdout_size={size} is not supported; allowed: a positive multiple of the "
                         f"{num_classes} classes (the same number of images from every class)")
    per_class = size // num_classes
    rng = np.random.default_rng(seed)
    held = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) <= per_class:
            raise ValueError(f"dataset.holdout_size={size} is not supported: class {c} has {len(idx)} training "
                             f"images, {per_class} held out would leave none; allowed: at most "
                             f"{(len(idx) - 1) * num_classes}")
        held.append(rng.choice(idx, per_class, replace=False))
    test = np.sort(np.concatenate(held))
    keep = np.ones(len(labels), dtype=bool)
    keep[test] = False
    return np.flatnonzero(keep), test


def apply_holdout(ds: ImageDataset, size: int = DEFAULT_HOLDOUT_SIZE, seed: int = 0) -> ImageDataset:
    """``ds`` with ``size`` class-balanced, seeded training images as its test set, removed from its training set.

    ``ds``'s own test set is dropped (it may be empty).
    """
    train, test = holdout_indices(ds.train_y.numpy(), ds.num_classes, int(size), int(seed))
    tr, te = torch.from_numpy(train), torch.from_numpy(test)
    return replace(ds, train_x=ds.train_x[tr].contiguous(), train_y=ds.train_y[tr].contiguous(),
                   test_x=ds.train_x[te].contiguous(), test_y=ds.train_y[te].contiguous(),
                   test_split=test_split_label(ds.name, "holdout", size, seed))


@functools.lru_cache(maxsize=2)
def load_dataset(name: str, root: str | None = None, download: bool = False, test_split: str = "official",
                 holdout_size: int = DEFAULT_HOLDOUT_SIZE, holdout_seed: int = 0) -> ImageDataset:
    """Load a dataset into memory as uint8 tensors.

    Parameters
    ----------
    name : str
        ``mnist``, ``cifar10`` or ``cifar100``.
    root : str, optional
        Folder holding the torchvision layout; defaults to ``$FEDFOMO_DATA`` or ``./data``.
    download : bool
        Download missing files through torchvision.
    test_split : str
        ``official`` (the official test file) or ``holdout`` (:func:`apply_holdout`; the test
        file is not read, so it may be missing).
    holdout_size, holdout_seed : int
        With ``holdout``: how many training images become the test set, and their seed.

    Returns
    -------
    ImageDataset

    Raises
    ------
    DataNotFoundError
        If files are missing and ``download`` is false; the message says where it looked and how
        to fix it.

    """
    if name not in DATASETS:
        raise ValueError(f"dataset.name={name!r} is not supported; allowed: {', '.join(DATASETS)}")
    if test_split not in TEST_SPLITS:
        raise ValueError(f"dataset.test_split={test_split!r} is not supported; allowed: {', '.join(TEST_SPLITS)}")
    holdout = test_split == "holdout"
    path = resolve_root(root)
    missing = _missing_files(name, path, train_only=holdout)
    if missing and download:
        _download(name, path)
        missing = _missing_files(name, path, train_only=holdout)
    if missing:
        only_test = not _missing_files(name, path, train_only=True)
        way_out = (f", or add dataset.test_split=holdout to test on {holdout_size} held-out training images "
                   f"instead (results marked '{DISPLAY_NAMES[name]} held-out test')") if only_test else ""
        raise DataNotFoundError(
            f"dataset {name!r} not found: looked for {missing[0]} under dataset.root={path}. "
            f"Fix: add dataset.download=true to download it with torchvision, or set "
            f"dataset.root=DIR (or ${DATA_ENV_VAR}=DIR) to a folder holding {_FOLDERS[name][0]}/{way_out}"
        )
    folder = path / _FOLDERS[name][0]
    te_x = te_y = None
    if name == "mnist":
        tr_x = _read_idx(folder / "train-images-idx3-ubyte")[:, None]
        tr_y = _read_idx(folder / "train-labels-idx1-ubyte").astype(np.int64)
        if not holdout:
            te_x = _read_idx(folder / "t10k-images-idx3-ubyte")[:, None]
            te_y = _read_idx(folder / "t10k-labels-idx1-ubyte").astype(np.int64)
        num_classes = 10
    elif name == "cifar10":
        tr_x, tr_y = _read_cifar([folder / f"data_batch_{i}" for i in range(1, 6)], b"labels")
        if not holdout:
            te_x, te_y = _read_cifar([folder / "test_batch"], b"labels")
        num_classes = 10
    else:
        tr_x, tr_y = _read_cifar([folder / "train"], b"fine_labels")
        if not holdout:
            te_x, te_y = _read_cifar([folder / "test"], b"fine_labels")
        num_classes = 100
    if holdout:  # the official test set is not read: empty until apply_holdout fills it
        te_x, te_y = tr_x[:0], tr_y[:0]
    mean, std = _STATS[name]
    ds = ImageDataset(
        name=name,
        train_x=torch.from_numpy(np.ascontiguousarray(tr_x)),
        train_y=torch.from_numpy(np.ascontiguousarray(tr_y)),
        test_x=torch.from_numpy(np.ascontiguousarray(te_x)),
        test_y=torch.from_numpy(np.ascontiguousarray(te_y)),
        num_classes=num_classes,
        mean=mean,
        std=std,
    )
    return apply_holdout(ds, holdout_size, holdout_seed) if holdout else ds


def configured_test_split(dataset_cfg: DictConfig) -> str:
    """:func:`test_split_label` of the ``dataset`` group of a configuration (summary.json's ``test_split``)."""
    return test_split_label(str(dataset_cfg.name), str(dataset_cfg.get("test_split", "official")),
                            int(dataset_cfg.get("holdout_size", DEFAULT_HOLDOUT_SIZE)),
                            int(dataset_cfg.get("holdout_seed", 0)))


def load_configured(dataset_cfg: DictConfig) -> ImageDataset:
    """:func:`load_dataset` with the ``dataset`` group of a configuration (``root`` made absolute).

    A configuration saved before ``dataset.test_split`` existed reads as ``official``. A holdout size
    the class counts do not allow is a one-line :class:`fedfomo.config.ConfigError`.
    """
    from fedfomo.config import ConfigError

    try:
        return load_dataset(str(dataset_cfg.name), str(Path(dataset_cfg.root).expanduser().resolve()),
                            bool(dataset_cfg.download), str(dataset_cfg.get("test_split", "official")),
                            int(dataset_cfg.get("holdout_size", DEFAULT_HOLDOUT_SIZE)),
                            int(dataset_cfg.get("holdout_seed", 0)))
    except ValueError as err:
        raise ConfigError(str(err)) from err


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Turn a uint8 batch (N, C, H, W) into a normalized float32 batch in channels_last layout."""
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1) * 255.0
    out = (x.float() - m * 255.0) / s
    return out.contiguous(memory_format=torch.channels_last)


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, flip: bool = True, pad: int = 4) -> torch.Tensor:
    """Random crops of the zero-padded batch and, if ``flip``, random horizontal flips (as tensor ops).

    Parameters
    ----------
    x : torch.Tensor
        A float batch (N, C, H, W): pixels (0..255, zero padding = black, as torchvision's
        ``RandomCrop(padding=4)``) or already normalized values.
    generator : torch.Generator
        Seeded source of the offsets and flips.
    flip : bool
        Also flip each image left-right with probability 1/2.
    pad : int
        Padding on every side; the crop keeps the image size.

    Returns
    -------
    torch.Tensor
        The augmented batch, same shape and dtype.

    """
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    out = padded[batch, chans, rows, cols]
    if flip:
        mask = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        out = torch.where(mask[:, None, None, None], out.flip(3), out)
    return out


def training_transform(augment: str, generator: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The per-batch transform of training images for ``dataset.augment``: None for ``none``.

    Parameters
    ----------
    augment : str
        One of :data:`AUGMENTS`.
    generator : torch.Generator
        Seeded source of the augmentation (its own stream: the batch order does not change).

    Returns
    -------
    callable or None
        ``uint8 batch -> float pixel batch`` (:func:`random_crop_flip`), before :func:`normalize`.

    """
    if augment == "none":
        return None
    if augment == "crop_flip":
        return lambda xb: random_crop_flip(xb.float(), generator)
    raise ValueError(f"dataset.augment={augment!r} is not supported; allowed: {', '.join(AUGMENTS)}")
