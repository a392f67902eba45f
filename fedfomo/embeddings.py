"""Image embeddings and K-Means assignments of the latent split, with their on-disk cache.

The VGG-11 embedder itself is :mod:`fedfomo.vgg`; the command line is :mod:`fedfomo.embed`.

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
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from fedfomo.data import ImageDataset, normalize
from fedfomo.latent import (
    EMBEDDERS,
    kmeans_clusters,
    label_clusters,
    latent_partition,
    reduce_dim,
    resolve_cluster_by,
)
from fedfomo.partition import ClientSplit
from fedfomo.vgg import VGG_DEFAULTS, describe_device, pick_device, train_vgg11, vgg_embed

log = logging.getLogger("fedfomo")

CACHE_VERSION = 1


DEFAULT_CACHE_DIR = "./latent_cache"
#: Cluster assignments shipped with the package (read-only; see ``fedfomo/assignments/README.md``).


PACKAGED_DIR = Path(__file__).resolve().parent / "assignments"


class CacheMismatchError(ValueError):
    """A cache file holds results for other settings than the ones asked for."""


# ---------------------------------------------------------------- embedders




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
        return emb, {"embedder_test_acc": acc, "device": describe_device(device)}
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
    """The configured latent split (``partition=latent``) of ``ds``.

    With ``partition.cluster_by`` resolving to ``label`` (:func:`fedfomo.latent.resolve_cluster_by`)
    the clusters are the class labels and nothing is embedded; otherwise the K-Means assignments
    of :func:`clusters_from_config`.
    """
    part = cfg["partition"]
    mode = resolve_cluster_by(str(part.get("cluster_by", "auto")), int(part["num_distributions"]), ds.num_classes)
    if mode == "label":
        train_c, test_c = label_clusters(ds.train_y.numpy(), ds.test_y.numpy())
        log.info("latent: D=%d clusters are the class labels (partition.cluster_by=%s)",
                 int(part["num_distributions"]), part.get("cluster_by", "auto"))
    else:
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
