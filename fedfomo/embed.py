"""Image embeddings and K-Means assignments of the latent split, with their on-disk cache.

Embedders (``partition.embedder``):

- ``vgg11``: the paper's (Appendix A.5). VGG-11 (configuration A, with batch norm, the layers
  of torchvision's ``vgg11_bn``) adapted to 32x32 inputs: MNIST is zero-padded to 32x32 and
  the first convolution takes its one channel; the 1x1x512 output of the convolutions feeds
  FC(512, 4096) - FC(4096, 4096) - FC(4096, classes). It is trained from scratch on the
  official train split (SGD with momentum, one-cycle cosine learning rate, random crops and, on
  CIFAR, horizontal flips; settings in ``partition.vgg``) and its test accuracy is logged and
  stored (the paper asks for >= 85%).
  The embedding is the 4096-d activation (after ReLU) of the second FC layer.
- ``pixels``: the normalized raw pixels, flattened (fast; for tests and smoke runs).

Then PCA of train and test embeddings together to ``partition.pca_dim`` and K-Means into
``partition.num_distributions`` clusters (:mod:`fedfomo.latent`), all seeded by
``partition.embed_seed``: the clusters are a property of the dataset, shared by every run seed;
the run seed only drives how clients sample from them.

Training runs in channels_last and, by default (``partition.vgg.precision=bf16``), under
bfloat16 autocast, about 2x faster on a CPU with AVX-512 BF16 than fp32.

Cache layout, under ``partition.cache_dir`` (default ``./latent_cache``); cluster assignments
not found there are looked up, by the same key, among those shipped in ``fedfomo/assignments/``
(:data:`PACKAGED_DIR`, written with ``package=true``)::

    features/{dataset}_{embedder}_pca{pca_dim}_{hash}.npz   PCA-reduced embeddings (train rows, then test)
    clusters/{dataset}_{embedder}_D{D}_{hash}.npz           cluster id of every train and test image

``hash`` is the first 16 hex digits of the SHA-256 of the cache key, a JSON object holding
everything that determines the file: cache format version, dataset name, a fingerprint of the
data (shapes, all labels and every 97th image), embedder, the embedder's training settings
(VGG-11 only), pca_dim, embed_seed and, for clusters, D. Each file stores its key; a file whose
stored key differs from the expected one is never used: loading it raises
:class:`CacheMismatchError` (delete the file or choose another ``partition.cache_dir``).
Files also store metadata (VGG-11 test accuracy, device, cluster sizes, time taken).

Command (trains the embedder once, caches the embeddings, clusters for every D)::

    python -m fedfomo.embed dataset=cifar10 partition.embedder=vgg11 'distributions=[2,3,4,5,10]'
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedfomo.data import ImageDataset, normalize
from fedfomo.latent import EMBEDDERS, kmeans_clusters, latent_partition, reduce_dim
from fedfomo.partition import ClientSplit

log = logging.getLogger("fedfomo")

CACHE_VERSION = 1
DEFAULT_CACHE_DIR = "./latent_cache"
#: Cluster assignments shipped with the package (read-only; see ``fedfomo/assignments/README.md``).
PACKAGED_DIR = Path(__file__).resolve().parent / "assignments"
VGG_DEFAULTS = {"epochs": 15, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128,
                "precision": "bf16"}
PRECISIONS = ("bf16", "fp32")


class CacheMismatchError(ValueError):
    """A cache file holds results for other settings than the ones asked for."""


# ---------------------------------------------------------------- embedders


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


def augment(x: torch.Tensor, generator: torch.Generator, flip: bool, pad: int = 4) -> torch.Tensor:
    """Random crops (zero padding ``pad``) and, if ``flip``, random horizontal flips of a float batch."""
    n, c, h, w = x.shape
    padded = nn.functional.pad(x, (pad, pad, pad, pad))
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


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """Mixed-precision context: bfloat16 autocast for ``precision="bf16"``, a no-op for ``fp32``."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def pick_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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
            x = augment(vgg_inputs(ds.train_x[idx], ds.mean, ds.std).to(device), gen, flip)
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
def vgg_embed(model: nn.Module, x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
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


def pixel_embed(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """Normalized raw pixels, flattened: float32 (N, C*H*W)."""
    return normalize(x, mean, std).contiguous().reshape(len(x), -1).numpy().astype(np.float32)


def embed_dataset(ds: ImageDataset, embedder: str, settings: Mapping, seed: int,
                  device: torch.device) -> tuple[np.ndarray, dict]:
    """Embeddings of every train image, then every test image; and metadata."""
    if embedder == "pixels":
        return np.concatenate([pixel_embed(ds.train_x, ds.mean, ds.std), pixel_embed(ds.test_x, ds.mean, ds.std)]), {}
    if embedder == "vgg11":
        model, acc = train_vgg11(ds, settings, seed, device)
        prec = str(settings.get("precision", "fp32"))
        emb = np.concatenate([vgg_embed(model, ds.train_x, ds.mean, ds.std, device, precision=prec),
                              vgg_embed(model, ds.test_x, ds.mean, ds.std, device, precision=prec)])
        return emb, {"embedder_test_acc": acc, "device": str(device)}
    raise ValueError(f"partition.embedder={embedder!r} is not supported; allowed: {', '.join(EMBEDDERS)}")


# ---------------------------------------------------------------- cache


def data_fingerprint(ds: ImageDataset) -> str:
    """SHA-256 (16 hex digits) of the dataset's name, shapes, all labels and every 97th image."""
    h = hashlib.sha256(ds.name.encode())
    for t in (ds.train_x, ds.test_x, ds.train_y, ds.test_y):
        h.update(repr(tuple(t.shape)).encode())
    for t in (ds.train_y, ds.test_y, ds.train_x[::97], ds.test_x[::97]):
        h.update(np.ascontiguousarray(t.numpy()).tobytes())
    return h.hexdigest()[:16]


def embedder_settings(embedder: str, vgg: Mapping | None = None) -> dict:
    """The settings that determine an embedder's output (none for ``pixels``)."""
    if embedder != "vgg11":
        return {}
    vgg = {**VGG_DEFAULTS, **dict(vgg or {})}
    return {"epochs": int(vgg["epochs"]), "lr": float(vgg["lr"]), "momentum": float(vgg["momentum"]),
            "weight_decay": float(vgg["weight_decay"]), "batch_size": int(vgg["batch_size"]),
            "precision": str(vgg["precision"])}


def features_key(ds: ImageDataset, embedder: str, settings: Mapping, pca_dim: int, seed: int) -> dict:
    """Cache key of the PCA-reduced embeddings."""
    key = {"kind": "features", "version": CACHE_VERSION, "dataset": ds.name, "data": data_fingerprint(ds),
           "embedder": embedder, "embedder_settings": dict(settings), "pca_dim": int(pca_dim), "embed_seed": int(seed)}
    return json.loads(json.dumps(key, sort_keys=True))


def clusters_key(feat_key: Mapping, num_distributions: int) -> dict:
    """Cache key of the K-Means assignments (the features' key plus D)."""
    key = {"kind": "clusters", "version": CACHE_VERSION, "features": dict(feat_key),
           "num_distributions": int(num_distributions)}
    return json.loads(json.dumps(key, sort_keys=True))


def key_hash(key: Mapping) -> str:
    """First 16 hex digits of the SHA-256 of the key's canonical JSON."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def features_path(cache_dir: str | Path, key: Mapping) -> Path:
    """Where the embeddings of ``key`` live."""
    return Path(cache_dir) / "features" / f"{key['dataset']}_{key['embedder']}_pca{key['pca_dim']}_{key_hash(key)}.npz"


def clusters_path(cache_dir: str | Path, key: Mapping) -> Path:
    """Where the assignments of ``key`` live."""
    f = key["features"]
    name = f"{f['dataset']}_{f['embedder']}_D{key['num_distributions']}_{key_hash(key)}.npz"
    return Path(cache_dir) / "clusters" / name


def _diff(a: Mapping, b: Mapping, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k} ({va!r} stored, {vb!r} wanted)")
    return out


def load_cached(path: Path, key: Mapping) -> dict | None:
    """The arrays and metadata stored at ``path``, None if there is no file.

    Raises
    ------
    CacheMismatchError
        If the file's stored key is not ``key`` (it was written for other settings).

    """
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as f:
        stored = json.loads(str(f["key"])) if "key" in f.files else None
        if stored != dict(key):
            what = ", ".join(_diff(stored or {}, key)) or "unreadable key"
            raise CacheMismatchError(f"partition.cache_dir: {path} was written for other settings ({what}); "
                                     f"delete it or set partition.cache_dir to another folder")
        out = {k: f[k] for k in f.files if k not in ("key", "meta")}
        out["meta"] = json.loads(str(f["meta"])) if "meta" in f.files else {}
    return out


def save_cached(path: Path, key: Mapping, meta: Mapping, **arrays: np.ndarray) -> None:
    """Write arrays, the key and metadata to ``path`` atomically (compressed npz)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, key=np.array(json.dumps(dict(key), sort_keys=True)),
                        meta=np.array(json.dumps(dict(meta), sort_keys=True)), **arrays)
    os.replace(tmp, path)


def latent_features(ds: ImageDataset, *, embedder: str, settings: Mapping, pca_dim: int, seed: int,
                    cache_dir: str | Path, device: str = "auto") -> tuple[np.ndarray, dict, dict]:
    """PCA-reduced embeddings of every train then test image, from the cache or computed (and cached).

    Returns
    -------
    (np.ndarray, dict, dict)
        Features (N_train + N_test, k), their cache key and metadata.

    """
    key = features_key(ds, embedder, settings, pca_dim, seed)
    path = features_path(cache_dir, key)
    hit = load_cached(path, key)
    if hit is not None:
        log.info("latent: embeddings from %s", path)
        return hit["features"], key, hit["meta"]
    start = time.perf_counter()
    log.info("latent: embedding %d images with %s", len(ds.train_y) + len(ds.test_y), embedder)
    emb, meta = embed_dataset(ds, embedder, settings, seed, pick_device(device))
    feats = reduce_dim(emb, pca_dim, seed)
    meta = {**meta, "seconds": time.perf_counter() - start, "num_train": len(ds.train_y), "num_test": len(ds.test_y)}
    save_cached(path, key, meta, features=feats)
    log.info("latent: embeddings cached in %s", path)
    return feats, key, meta


def latent_clusters(ds: ImageDataset, *, embedder: str, settings: Mapping, pca_dim: int, seed: int,
                    num_distributions: int, cache_dir: str | Path, device: str = "auto",
                    packaged_dir: str | Path | None = PACKAGED_DIR) -> tuple[np.ndarray, np.ndarray, dict]:
    """Cluster id of every train and test image: from the cache, the package, or computed (and cached).

    Looked up first in ``cache_dir``, then among the assignments shipped in ``packaged_dir``
    (None: not there); only a file whose stored key equals this call's key is used.

    Returns
    -------
    (np.ndarray, np.ndarray, dict)
        Train cluster ids, test cluster ids (int64, 0..D-1, cluster 0 the largest) and metadata.

    """
    # the assignments' key needs only the features' key, so a cached assignment needs no embedding
    fkey = features_key(ds, embedder, settings, pca_dim, seed)
    key = clusters_key(fkey, num_distributions)
    path = clusters_path(cache_dir, key)
    hit = load_cached(path, key)
    if hit is None and packaged_dir is not None:
        # the file name holds the key's hash: a shipped file is found only for the very same settings
        # (and load_cached checks the whole stored key again)
        shipped = clusters_path(packaged_dir, key)
        hit = load_cached(shipped, key)
        if hit is not None:
            path = shipped
    if hit is None:
        feats, _, fmeta = latent_features(ds, embedder=embedder, settings=settings, pca_dim=pca_dim, seed=seed,
                                          cache_dir=cache_dir, device=device)
        labels = kmeans_clusters(feats, num_distributions, seed)
        n_tr = len(ds.train_y)
        sizes = np.bincount(labels, minlength=num_distributions)
        meta = {**fmeta, "cluster_sizes": sizes.tolist(),
                "train_cluster_sizes": np.bincount(labels[:n_tr], minlength=num_distributions).tolist()}
        save_cached(path, key, meta, train=labels[:n_tr].astype(np.int16), test=labels[n_tr:].astype(np.int16))
        log.info("latent: D=%d cluster sizes %s, cached in %s", num_distributions, sizes.tolist(), path)
        return labels[:n_tr], labels[n_tr:], meta
    log.info("latent: D=%d assignments from %s", num_distributions, path)
    return hit["train"].astype(np.int64), hit["test"].astype(np.int64), hit["meta"]


def cache_dir_of(partition_cfg: Mapping) -> Path:
    """``partition.cache_dir`` resolved (default ``./latent_cache``)."""
    return Path(str(partition_cfg.get("cache_dir") or DEFAULT_CACHE_DIR)).expanduser().resolve()


def clusters_from_config(partition_cfg: Mapping, ds: ImageDataset, num_distributions: int | None = None
                         ) -> tuple[np.ndarray, np.ndarray, dict]:
    """:func:`latent_clusters` with the settings of the ``partition`` config block."""
    embedder = str(partition_cfg["embedder"])
    return latent_clusters(
        ds, embedder=embedder, settings=embedder_settings(embedder, partition_cfg.get("vgg")),
        pca_dim=int(partition_cfg["pca_dim"]), seed=int(partition_cfg.get("embed_seed", 0)),
        num_distributions=int(num_distributions or partition_cfg["num_distributions"]),
        cache_dir=cache_dir_of(partition_cfg), device=str(partition_cfg.get("device", "auto")),
    )


def latent_splits(cfg: Mapping, ds: ImageDataset) -> list[ClientSplit]:
    """The configured latent split (``partition=latent``) of ``ds``."""
    part = cfg["partition"]
    train_c, test_c, _ = clusters_from_config(part, ds)
    return latent_partition(
        ds.train_y.numpy(), ds.test_y.numpy(), train_c, test_c, num_clients=int(cfg["num_clients"]),
        num_distributions=int(part["num_distributions"]), val_ratio=float(cfg["val_ratio"]), seed=int(cfg["seed"]),
        samples_per_client=cfg["samples_per_client"], shuffle=bool(part.get("shuffle_targets", False)),
    )


# ---------------------------------------------------------------- shipping assignments with the package


def package_clusters(cache_dir: str | Path, key: Mapping, command: str, packaged_dir: str | Path = PACKAGED_DIR
                     ) -> Path:
    """Copy the cached assignments of ``key`` into ``packaged_dir`` and record them in its ``index.json``.

    The index lists, per file: dataset, embedder, D, the embedder's settings and test accuracy,
    cluster sizes, the seconds the embedding took and the command that produced it.

    Returns
    -------
    Path
        The packaged file.

    """
    src = clusters_path(cache_dir, key)
    hit = load_cached(src, key)
    if hit is None:
        raise FileNotFoundError(f"no cached assignments at {src}")
    dst = clusters_path(packaged_dir, key)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.resolve() != dst.resolve():
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        tmp.write_bytes(src.read_bytes())
        os.replace(tmp, dst)
    index_path = Path(packaged_dir) / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    f, meta = key["features"], hit["meta"]
    index[dst.name] = {
        "dataset": f["dataset"], "embedder": f["embedder"], "num_distributions": key["num_distributions"],
        "embedder_settings": f["embedder_settings"], "pca_dim": f["pca_dim"], "embed_seed": f["embed_seed"],
        "embedder_test_acc": meta.get("embedder_test_acc"), "device": meta.get("device"),
        "embedding_seconds": meta.get("seconds"), "cluster_sizes": meta.get("cluster_sizes"),
        "command": command,
    }
    index_path.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    return dst


# ---------------------------------------------------------------- command


def describe_clusters(train_labels: np.ndarray, train_c: np.ndarray, test_c: np.ndarray, num_classes: int,
                      num_distributions: int) -> list[str]:
    """One line per cluster: train/test sizes and its three most frequent classes."""
    lines = []
    for c in range(num_distributions):
        counts = np.bincount(train_labels[train_c == c], minlength=num_classes)
        top = np.argsort(-counts, kind="stable")[:3]
        share = ", ".join(f"{int(k)}:{counts[k] / max(1, counts.sum()):.2f}" for k in top)
        n_tr, n_te = int((train_c == c).sum()), int((test_c == c).sum())
        lines.append(f"cluster {c}: {n_tr} train, {n_te} test; top classes {share}")
    return lines


def main() -> None:
    """``python -m fedfomo.embed [overrides]``: train the embedder, cache embeddings and assignments."""
    import hydra
    from omegaconf import DictConfig, ListConfig

    from fedfomo.config import ConfigError, validate_config
    from fedfomo.data import DataNotFoundError, load_dataset

    @hydra.main(config_path="../conf", config_name="embed", version_base=None)
    def _run(cfg: DictConfig) -> None:
        try:
            validate_config(cfg)
            ds_list = cfg.distributions if cfg.get("distributions") is not None else [cfg.partition.num_distributions]
            if not isinstance(ds_list, (list, ListConfig)) or not all(
                    isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in ds_list):
                raise ConfigError(f"distributions={ds_list!r} is not supported; allowed: a list of integers >= 1")
            ds = load_dataset(cfg.dataset.name, str(Path(cfg.dataset.root).expanduser().resolve()),
                              bool(cfg.dataset.download))
            part = cfg.partition
            for d in ds_list:
                train_c, test_c, meta = clusters_from_config(part, ds, int(d))
                print(f"{cfg.dataset.name} {part.embedder} D={d}: "
                      f"embedder test acc {meta.get('embedder_test_acc', 'n/a')}")
                for line in describe_clusters(ds.train_y.numpy(), train_c, test_c, ds.num_classes, int(d)):
                    print("  " + line)
                if cfg.get("package"):
                    fkey = features_key(ds, str(part.embedder), embedder_settings(str(part.embedder), part.get("vgg")),
                                        int(part.pca_dim), int(part.get("embed_seed", 0)))
                    command = "python -m fedfomo.embed " + " ".join(
                        a for a in sys.argv[1:] if not a.startswith("package="))
                    print(f"  packaged: {package_clusters(cache_dir_of(part), clusters_key(fkey, int(d)), command)}")
            print(f"cache: {cache_dir_of(part)}")
        except (ConfigError, DataNotFoundError, CacheMismatchError) as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    _run()


if __name__ == "__main__":
    main()
