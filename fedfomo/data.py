"""Dataset loading: MNIST, CIFAR-10 and CIFAR-100 as in-memory uint8 tensors.

The files are read directly in their torchvision layout (``MNIST/raw/*-ubyte``,
``cifar-10-batches-py/``, ``cifar-100-python/``) so that no per-sample PIL decoding happens
and no md5 check rejects re-packed but pixel-identical copies. ``download=True`` fetches a
missing dataset through torchvision first. Normalization happens per batch on the tensors
(:func:`normalize`).
"""

from __future__ import annotations

import functools
import gzip
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DATASETS = ("mnist", "cifar10", "cifar100")
DATA_ENV_VAR = "FEDFOMO_DATA"

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

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]


def resolve_root(root: str | os.PathLike | None) -> Path:
    """Return the dataset root: ``root`` if given, else ``$FEDFOMO_DATA``, else ``./data``."""
    if root is None or str(root) == "":
        root = os.environ.get(DATA_ENV_VAR, "./data")
    return Path(root).expanduser().resolve()


def _missing_files(name: str, root: Path) -> list[Path]:
    folder, files = _FOLDERS[name]
    missing = []
    for f in files:
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


@functools.lru_cache(maxsize=2)
def load_dataset(name: str, root: str | None = None, download: bool = False) -> ImageDataset:
    """Load a dataset into memory as uint8 tensors.

    Parameters
    ----------
    name : str
        ``mnist``, ``cifar10`` or ``cifar100``.
    root : str, optional
        Folder holding the torchvision layout; defaults to ``$FEDFOMO_DATA`` or ``./data``.
    download : bool
        Download missing files through torchvision.

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
    path = resolve_root(root)
    missing = _missing_files(name, path)
    if missing and download:
        _download(name, path)
        missing = _missing_files(name, path)
    if missing:
        raise DataNotFoundError(
            f"dataset {name!r} not found: looked for {missing[0]} under dataset.root={path}. "
            f"Fix: add dataset.download=true to download it with torchvision, or set "
            f"dataset.root=DIR (or ${DATA_ENV_VAR}=DIR) to a folder holding {_FOLDERS[name][0]}/"
        )
    folder = path / _FOLDERS[name][0]
    if name == "mnist":
        tr_x = _read_idx(folder / "train-images-idx3-ubyte")[:, None]
        tr_y = _read_idx(folder / "train-labels-idx1-ubyte").astype(np.int64)
        te_x = _read_idx(folder / "t10k-images-idx3-ubyte")[:, None]
        te_y = _read_idx(folder / "t10k-labels-idx1-ubyte").astype(np.int64)
        num_classes = 10
    elif name == "cifar10":
        tr_x, tr_y = _read_cifar([folder / f"data_batch_{i}" for i in range(1, 6)], b"labels")
        te_x, te_y = _read_cifar([folder / "test_batch"], b"labels")
        num_classes = 10
    else:
        tr_x, tr_y = _read_cifar([folder / "train"], b"fine_labels")
        te_x, te_y = _read_cifar([folder / "test"], b"fine_labels")
        num_classes = 100
    mean, std = _STATS[name]
    return ImageDataset(
        name=name,
        train_x=torch.from_numpy(np.ascontiguousarray(tr_x)),
        train_y=torch.from_numpy(np.ascontiguousarray(tr_y)),
        test_x=torch.from_numpy(np.ascontiguousarray(te_x)),
        test_y=torch.from_numpy(np.ascontiguousarray(te_y)),
        num_classes=num_classes,
        mean=mean,
        std=std,
    )


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Turn a uint8 batch (N, C, H, W) into a normalized float32 batch in channels_last layout."""
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1) * 255.0
    out = (x.float() - m * 255.0) / s
    return out.contiguous(memory_format=torch.channels_last)
