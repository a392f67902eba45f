"""Latent-distribution split: clusters, spreading, sampling, shuffling, cache, config, embedders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from fedfomo import embeddings as embed
from fedfomo import vgg
from fedfomo.config import ConfigError, validate_config
from fedfomo.data import ImageDataset, random_crop_flip
from fedfomo.embeddings import CacheMismatchError, clusters_from_config, embed_dataset, latent_clusters
from fedfomo.latent import (
    kmeans_clusters,
    label_clusters,
    latent_partition,
    reduce_dim,
    relabel_by_size,
    resolve_cluster_by,
    sample_latent_clients,
    shuffle_targets,
    spread_clients,
)
from fedfomo.vgg import build_vgg11, vgg_embed

CONF = str(Path(__file__).resolve().parents[1] / "conf")

# ---------------------------------------------------------------- spreading and clustering


@pytest.mark.parametrize(("k", "d", "expected"), [
    (15, 5, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]),
    (7, 3, [0, 0, 0, 1, 1, 2, 2]),
    (5, 5, [0, 1, 2, 3, 4]),
    (4, 1, [0, 0, 0, 0]),
    (11, 4, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3]),
])
def test_spread_clients_even_blocks_first_clusters_get_remainder(k, d, expected):
    assert spread_clients(k, d).tolist() == expected


@pytest.mark.parametrize(("k", "d"), [(5, 0), (5, 6)])
def test_spread_clients_rejects_bad_d(k, d):
    with pytest.raises(ValueError, match="num_distributions"):
        spread_clients(k, d)


def test_relabel_by_size_largest_first_ties_by_old_id():
    labels = np.array([2, 2, 2, 0, 1, 1, 0, 3])
    # sizes: 0->2, 1->2, 2->3, 3->1  => new ids: 2->0, 0->1, 1->2, 3->3
    assert relabel_by_size(labels, 4).tolist() == [0, 0, 0, 1, 2, 2, 1, 3]


def _blobs(sizes, dim=5, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=20.0, size=(len(sizes), dim))
    x = np.concatenate([c + rng.normal(size=(n, dim)) for c, n in zip(centers, sizes)])
    truth = np.repeat(np.arange(len(sizes)), sizes)
    return x, truth


def test_kmeans_recovers_separated_blobs_and_is_deterministic():
    x, truth = _blobs([30, 80, 50])
    a = kmeans_clusters(x, 3, seed=0)
    assert (a == kmeans_clusters(x, 3, seed=0)).all()
    # same grouping as the truth, renumbered by size: the 80-blob is 0, the 50-blob 1, the 30-blob 2
    assert a.tolist() == np.array([2, 0, 1])[truth].tolist()
    with pytest.raises(ValueError):
        kmeans_clusters(x[:2], 3, seed=0)


def test_reduce_dim_shapes():
    x = np.random.default_rng(0).normal(size=(40, 30))
    assert reduce_dim(x, 8, seed=0).shape == (40, 8)
    assert reduce_dim(x, 256, seed=0).shape == (40, 30)  # capped at min(N, d)
    assert reduce_dim(x[:10], 256, seed=0).shape == (10, 10)


# ---------------------------------------------------------------- sampling


def _synthetic(n_train=600, n_test=120, d=3, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    ytr, yte = rng.integers(0, classes, n_train), rng.integers(0, classes, n_test)
    ctr, cte = rng.integers(0, d, n_train), rng.integers(0, d, n_test)
    return ytr, yte, ctr, cte


def test_latent_partition_draws_each_client_from_its_cluster():
    ytr, yte, ctr, cte = _synthetic()
    splits = latent_partition(ytr, yte, ctr, cte, num_clients=7, num_distributions=3, val_ratio=0.2, seed=1)
    assert [s.cluster for s in splits] == spread_clients(7, 3).tolist()
    locals_ = [np.concatenate([s.train, s.val]) for s in splits]
    allidx = np.concatenate(locals_)
    assert len(allidx) == len(np.unique(allidx)) == len(ytr)  # disjoint, every train image used
    ratio = len(yte) / len(ytr)
    for s, loc in zip(splits, locals_):
        assert s.target_cluster == s.cluster
        assert (ctr[loc] == s.cluster).all() and (cte[s.test] == s.cluster).all()
        assert len(np.intersect1d(s.train, s.val)) == 0
        assert len(s.val) == pytest.approx(0.2 * len(loc), abs=len(np.unique(ytr[loc])))
        pool = int((cte == s.cluster).sum())
        assert len(s.test) == min(pool, max(1, round(len(loc) * ratio)))
        assert len(np.unique(s.test)) == len(s.test)  # without replacement
    # clients of one cluster share it out evenly
    sizes = [len(loc) for loc, s in zip(locals_, splits) if s.cluster == 0]
    assert max(sizes) - min(sizes) <= 1


def test_latent_partition_cap_deterministic_and_seeded():
    ytr, yte, ctr, cte = _synthetic()
    kw = dict(num_clients=6, num_distributions=3, val_ratio=0.25, samples_per_client=40)
    a = latent_partition(ytr, yte, ctr, cte, seed=3, **kw)
    b = latent_partition(ytr, yte, ctr, cte, seed=3, **kw)
    c = latent_partition(ytr, yte, ctr, cte, seed=4, **kw)
    for x, y in zip(a, b):
        assert np.array_equal(x.train, y.train) and np.array_equal(x.val, y.val) and np.array_equal(x.test, y.test)
    assert any(not np.array_equal(x.train, y.train) for x, y in zip(a, c))
    assert all(len(s.train) + len(s.val) == 40 for s in a)
    assert all(len(s.test) == round(40 * len(yte) / len(ytr)) for s in a)


def test_shuffle_targets_permutes_val_test_pairs_keeps_training_data():
    ytr, yte, ctr, cte = _synthetic(d=5)
    kw = dict(num_clients=15, num_distributions=5, val_ratio=0.2, seed=5)
    plain = latent_partition(ytr, yte, ctr, cte, **kw)
    shuffled = latent_partition(ytr, yte, ctr, cte, shuffle=True, **kw)
    pairs = {(tuple(s.val), tuple(s.test)) for s in plain}
    assert {(tuple(s.val), tuple(s.test)) for s in shuffled} == pairs  # the same pairs, permuted
    for p, s in zip(plain, shuffled):
        assert np.array_equal(p.train, s.train) and s.cluster == p.cluster
        owner = next(q for q in plain if np.array_equal(q.test, s.test))
        assert s.target_cluster == owner.cluster and (cte[s.test] == s.target_cluster).all()
    assert any(s.target_cluster != s.cluster for s in shuffled)


def test_shuffle_targets_returns_the_permutation():
    ytr, yte, ctr, cte = _synthetic()
    splits = latent_partition(ytr, yte, ctr, cte, num_clients=6, num_distributions=3, val_ratio=0.2, seed=0)
    out, perm = shuffle_targets(splits, np.random.default_rng(0))
    assert sorted(perm.tolist()) == list(range(6))
    for i, j in enumerate(perm):
        assert np.array_equal(out[i].val, splits[j].val) and np.array_equal(out[i].test, splits[j].test)
        assert np.array_equal(out[i].own_val, splits[i].val)  # its own val before the shuffle
    assert all(s.own_val is None for s in splits)


def test_authors_emd_of_a_shuffled_split_is_the_unshuffled_ones():
    # the FedFomo authors measure the local data before shuffling targets
    from fedfomo.emd import partition_emd_authors

    ytr, yte, ctr, cte = _synthetic(d=5)
    kw = dict(num_clients=15, num_distributions=5, val_ratio=0.2, seed=5)
    plain = latent_partition(ytr, yte, ctr, cte, **kw)
    shuffled = latent_partition(ytr, yte, ctr, cte, shuffle=True, **kw)
    assert partition_emd_authors(ytr, shuffled) == pytest.approx(partition_emd_authors(ytr, plain), abs=1e-12)
    given_val = [s.__class__(train=s.train, val=s.val, test=s.test) for s in shuffled]  # without own_val
    assert partition_emd_authors(ytr, given_val) != pytest.approx(partition_emd_authors(ytr, plain), abs=1e-6)


def test_sampling_errors():
    ytr, yte = np.zeros(10, int), np.zeros(4, int)
    ctr = np.array([0] * 9 + [1])
    with pytest.raises(ValueError, match="cluster 1 has 1 training images for 2 clients"):
        sample_latent_clients(ytr, yte, ctr, np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1]), val_ratio=0.2,
                              rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="no test images"):
        sample_latent_clients(ytr, yte, np.array([0] * 5 + [1] * 5), np.zeros(4, int), np.array([0, 1]),
                              val_ratio=0.2, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="cover"):
        latent_partition(ytr, yte, ctr[:5], np.zeros(4, int), num_clients=2, num_distributions=2, val_ratio=0.2,
                         seed=0)


# ---------------------------------------------------------------- embedders and cache


def _tiny_ds(n_train=120, n_test=30, shape=(1, 8, 8), seed=0, name="mnist") -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    # three visual groups (dark, mid, bright images) so that clusters are non-trivial
    def images(n):
        level = torch.randint(0, 3, (n,), generator=g)
        x = (level.view(-1, 1, 1, 1) * 100 + torch.randint(0, 40, (n, *shape), generator=g)).to(torch.uint8)
        return x, level
    trx, try_ = images(n_train)
    tex, tey = images(n_test)
    return ImageDataset(name=name, train_x=trx, train_y=try_, test_x=tex, test_y=tey, num_classes=3,
                        mean=(0.5,) * shape[0], std=(0.25,) * shape[0])


def _clusters(ds, cache, **kw):
    args = dict(embedder="pixels", settings={}, pca_dim=4, seed=0, num_distributions=3, cache_dir=cache)
    return latent_clusters(ds, **{**args, **kw})


def test_cache_written_reused_and_keyed(tmp_path, monkeypatch):
    ds = _tiny_ds()
    tr, te, meta = _clusters(ds, tmp_path)
    assert tr.shape == (120,) and te.shape == (30,) and set(np.unique(np.concatenate([tr, te]))) == {0, 1, 2}
    assert sum(meta["cluster_sizes"]) == 150
    # three brightness groups -> three clusters matching them
    assert len({(int(a), int(b)) for a, b in zip(tr, ds.train_y)}) == 3
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.npz"))
    assert len(files) == 2 and files[0].startswith("clusters/mnist_pixels_D3_") and files[1].startswith(
        "features/mnist_pixels_pca4_")

    def boom(*a, **k):
        raise AssertionError("recomputed despite a valid cache")
    monkeypatch.setattr(embed, "embed_dataset", boom)
    monkeypatch.setattr(embed, "kmeans_clusters", boom)
    tr2, te2, _ = _clusters(ds, tmp_path)
    assert np.array_equal(tr, tr2) and np.array_equal(te, te2)
    monkeypatch.undo()
    # another D reuses the embeddings but clusters anew; another pca_dim or dataset gets new files
    monkeypatch.setattr(embed, "embed_dataset", boom)
    _clusters(ds, tmp_path, num_distributions=2)
    monkeypatch.undo()
    _clusters(ds, tmp_path, pca_dim=3)
    _clusters(_tiny_ds(seed=1), tmp_path)
    assert len(list((tmp_path / "clusters").glob("*.npz"))) == 4
    assert len(list((tmp_path / "features").glob("*.npz"))) == 3


def test_cache_from_other_settings_is_never_reused(tmp_path):
    ds = _tiny_ds()
    _clusters(ds, tmp_path)
    (old,) = (tmp_path / "clusters").glob("*.npz")
    # put the D=3 file where the D=2 file of the same settings is expected
    key2 = embed.clusters_key(embed.features_key(ds, "pixels", {}, 4, 0), 2)
    target = embed.clusters_path(tmp_path, key2)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(old, target)
    with pytest.raises(CacheMismatchError) as err:
        _clusters(ds, tmp_path, num_distributions=2)
    msg = str(err.value)
    assert "\n" not in msg and "num_distributions (3 stored, 2 wanted)" in msg and "partition.cache_dir" in msg
    # same for the embeddings: other data under the expected name
    (feat,) = (tmp_path / "features").glob("*.npz")
    other = _tiny_ds(seed=7)
    fkey = embed.features_key(other, "pixels", {}, 4, 0)
    shutil.copy(feat, embed.features_path(tmp_path, fkey))
    with pytest.raises(CacheMismatchError, match="data"):
        embed.latent_features(other, embedder="pixels", settings={}, pca_dim=4, seed=0, cache_dir=tmp_path)


def test_packaged_assignments_used_only_for_the_same_settings(tmp_path, monkeypatch):
    ds = _tiny_ds()
    shipped, cache = tmp_path / "shipped", tmp_path / "cache"
    tr, te, _ = _clusters(ds, shipped)
    for f in (shipped / "features").glob("*.npz"):
        f.unlink()  # the package ships assignments only

    def boom(*a, **k):
        raise AssertionError("recomputed although the package ships these assignments")
    monkeypatch.setattr(embed, "embed_dataset", boom)
    tr2, te2, _ = _clusters(ds, cache, packaged_dir=shipped)
    assert np.array_equal(tr, tr2) and np.array_equal(te, te2)
    assert not cache.exists()  # nothing written: the shipped file is read in place
    monkeypatch.undo()
    # other settings (D, pca_dim, data) never pick up the shipped file: computed into the cache
    _clusters(ds, cache, packaged_dir=shipped, num_distributions=2)
    _clusters(_tiny_ds(seed=3), cache, packaged_dir=shipped)
    assert len(list((cache / "clusters").glob("*.npz"))) == 2
    # a shipped file whose stored key differs from its name's is refused, not used
    (f,) = (shipped / "clusters").glob("*.npz")
    key4 = embed.clusters_key(embed.features_key(ds, "pixels", {}, 4, 0), 4)
    shutil.copy(f, embed.clusters_path(shipped, key4))
    with pytest.raises(CacheMismatchError):
        _clusters(ds, tmp_path / "empty", packaged_dir=shipped, num_distributions=4)


def test_package_clusters_copies_and_indexes(tmp_path):
    ds = _tiny_ds()
    cache, shipped = tmp_path / "cache", tmp_path / "shipped"
    tr, te, meta = _clusters(ds, cache)
    key = embed.clusters_key(embed.features_key(ds, "pixels", {}, 4, 0), 3)
    dst = embed.package_clusters(cache, key, "python -m fedfomo.embed x=1", packaged_dir=shipped)
    assert dst.parent == shipped / "clusters" and dst.name == embed.clusters_path(cache, key).name
    index = json.loads((shipped / "index.json").read_text())
    assert index[dst.name]["num_distributions"] == 3 and index[dst.name]["command"] == "python -m fedfomo.embed x=1"
    assert index[dst.name]["cluster_sizes"] == meta["cluster_sizes"]
    tr2, te2, _ = _clusters(ds, tmp_path / "fresh", packaged_dir=shipped)
    assert np.array_equal(tr, tr2) and np.array_equal(te, te2)
    with pytest.raises(FileNotFoundError):
        embed.package_clusters(tmp_path / "nothing", key, "cmd", packaged_dir=shipped)


def test_vgg_settings_are_part_of_the_key():
    ds = _tiny_ds()
    a = embed.features_key(ds, "vgg11", embed.embedder_settings("vgg11", {"epochs": 30}), 256, 0)
    b = embed.features_key(ds, "vgg11", embed.embedder_settings("vgg11", {"epochs": 31}), 256, 0)
    c = embed.features_key(ds, "vgg11", embed.embedder_settings("vgg11", {"epochs": 30}), 256, 1)
    d = embed.features_key(ds, "vgg11", embed.embedder_settings("vgg11", {"epochs": 30, "precision": "fp32"}), 256, 0)
    assert len({embed.key_hash(k) for k in (a, b, c, d)}) == 4
    assert embed.embedder_settings("pixels", {"epochs": 5}) == {}
    assert json.loads(json.dumps(a)) == a


def test_vgg11_shapes_mnist_and_cifar():
    torch.manual_seed(0)
    for shape, name in (((1, 28, 28), "mnist"), ((3, 32, 32), "cifar10")):
        model = build_vgg11(shape[0], 10)
        x = torch.randint(0, 256, (3, *shape), dtype=torch.uint8)
        emb = vgg_embed(model, x, (0.5,) * shape[0], (0.25,) * shape[0], torch.device("cpu"))
        assert emb.shape == (3, 4096) and emb.dtype == np.float32 and (emb >= 0).all(), name
        out = model(vgg.vgg_inputs(x, (0.5,) * shape[0], (0.25,) * shape[0]))
        assert out.shape == (3, 10)


def test_augment_keeps_shape_and_content_range():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 32, 32)
    y = random_crop_flip(x, g, flip=True)
    assert y.shape == x.shape and float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    # no padding -> only flips: every image is itself or its mirror
    z = random_crop_flip(x, g, flip=True, pad=0)
    assert all(torch.equal(z[i], x[i]) or torch.equal(z[i], x[i].flip(2)) for i in range(5))


def test_vgg11_embedder_code_path_tiny(monkeypatch):
    torch.set_num_threads(1)
    ds = _tiny_ds(n_train=32, n_test=8, shape=(3, 32, 32), name="cifar10")
    settings = embed.embedder_settings("vgg11", {"epochs": 1, "batch_size": 16, "lr": 0.01})
    emb, meta = embed_dataset(ds, "vgg11", settings, seed=0, device=torch.device("cpu"))
    assert emb.shape == (40, 4096) and 0.0 <= meta["embedder_test_acc"] <= 1.0
    assert meta["device"] == f"cpu, torch {torch.__version__}"


# ---------------------------------------------------------------- configuration


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return compose(config_name="config", overrides=list(overrides))


def test_latent_defaults_are_valid():
    cfg = _cfg("partition=latent")
    validate_config(cfg)
    p = cfg.partition
    assert (p.num_distributions, p.embedder, p.pca_dim, p.shuffle_targets, p.embed_seed) == (5, "vgg11", 256, False, 0)
    validate_config(_cfg("partition=latent", "partition.shuffle_targets=true", "partition.num_distributions=15"))


@pytest.mark.parametrize(("overrides", "key", "allowed"), [
    (["partition=latent", "partition.num_distributions=0"], "partition.num_distributions", "1..15"),
    (["partition=latent", "partition.num_distributions=16"], "partition.num_distributions", "1..15"),
    (["partition=latent", "num_clients=4", "method.num_models=4"], "partition.num_distributions", "1..4"),
    (["partition=latent", "partition.embedder=resnet"], "partition.embedder", "vgg11, pixels"),
    (["partition=latent", "partition.pca_dim=0"], "partition.pca_dim", ">= 1"),
    (["partition=latent", "partition.vgg.epochs=0"], "partition.vgg.epochs", ">= 1"),
    (["partition=latent", "partition.vgg.precision=fp16"], "partition.vgg.precision", "bf16, fp32"),
    (["partition=latent", "partition.shuffle_targets=maybe"], "partition.shuffle_targets", "true, false"),
    (["partition.shuffle_targets=true"], "partition.shuffle_targets", "partition=latent"),
    (["partition=iid", "partition.shuffle_targets=true"], "partition.shuffle_targets", "partition=latent"),
])
def test_bad_latent_settings_name_key_and_allowed(overrides, key, allowed):
    with pytest.raises(ConfigError) as err:
        validate_config(_cfg(*overrides))
    msg = str(err.value)
    assert "\n" not in msg and key in msg and allowed in msg


def test_build_partition_turns_cache_mismatch_into_config_error(tmp_path):
    from fedfomo.experiment import build_partition, partition_report

    ds = _tiny_ds()
    # the tiny dataset has 3 classes: D=3 would take the labels as clusters (cluster_by=auto)
    cfg = _cfg("partition=latent", "partition.embedder=pixels", "partition.pca_dim=4", "partition.num_distributions=3",
               "partition.cluster_by=kmeans", "num_clients=6", "method.num_models=3", f"partition.cache_dir={tmp_path}")
    splits = build_partition(cfg, ds)
    assert [s.cluster for s in splits] == [0, 0, 1, 1, 2, 2]
    report = partition_report(ds, splits)
    assert [r["cluster"] for r in report] == [0, 0, 1, 1, 2, 2] and "target_cluster" in report[0]
    assert "cluster" not in partition_report(ds, [s.__class__(train=s.train, val=s.val, test=s.test)
                                                  for s in splits])[0]
    (f,) = (tmp_path / "clusters").glob("*.npz")
    key = embed.clusters_key(embed.features_key(ds, "pixels", {}, 4, 0), 4)
    shutil.copy(f, embed.clusters_path(tmp_path, key))
    with pytest.raises(ConfigError, match="written for other settings"):
        build_partition(_cfg("partition=latent", "partition.embedder=pixels", "partition.pca_dim=4",
                             "partition.num_distributions=4", "num_clients=6", "method.num_models=3",
                             f"partition.cache_dir={tmp_path}"), ds)


# ---------------------------------------------------------------- partition.cluster_by (the authors' D=10)


def test_label_clusters_are_the_labels():
    tr, te = label_clusters(np.array([2, 0, 1, 2]), np.array([1, 1, 0]))
    assert tr.tolist() == [2, 0, 1, 2] and te.tolist() == [1, 1, 0] and tr.dtype == np.int64


@pytest.mark.parametrize(("cluster_by", "d", "classes", "expected"), [
    ("auto", 10, 10, "label"), ("auto", 5, 10, "kmeans"), ("auto", 10, 100, "kmeans"), ("auto", 3, 3, "label"),
    ("kmeans", 10, 10, "kmeans"), ("label", 10, 10, "label"), ("label", 100, 100, "label"),
])
def test_resolve_cluster_by(cluster_by, d, classes, expected):
    assert resolve_cluster_by(cluster_by, d, classes) == expected


def test_resolve_cluster_by_errors_are_one_line():
    for args, allowed in ((("kmean", 10, 10), "auto, kmeans, label"), (("label", 5, 10), "auto, kmeans")):
        with pytest.raises(ValueError) as err:
            resolve_cluster_by(*args)
        assert "\n" not in str(err.value) and "partition.cluster_by" in str(err.value) and allowed in str(err.value)


def test_label_split_needs_no_embedding_and_follows_the_labels(monkeypatch):
    from fedfomo.embeddings import latent_splits
    from fedfomo.experiment import partition_facts

    def boom(*a, **k):
        raise AssertionError("embedded or clustered although the clusters are the labels")
    monkeypatch.setattr(embed, "clusters_from_config", boom)
    monkeypatch.setattr(embed, "embed_dataset", boom)
    ds = _tiny_ds()  # 3 classes
    y, yt = ds.train_y.numpy(), ds.test_y.numpy()
    for cluster_by in ("auto", "label"):
        cfg = _cfg("partition=latent", "partition.num_distributions=3", f"partition.cluster_by={cluster_by}",
                   "num_clients=5", "method.num_models=3")
        splits = latent_splits(cfg, ds)
        assert [s.cluster for s in splits] == [0, 0, 1, 1, 2]  # spread as with K-Means clusters
        for s in splits:
            assert set(y[np.concatenate([s.train, s.val])]) == {s.cluster} and set(yt[s.test]) == {s.cluster}
        # the same split as latent_partition with the labels as cluster ids
        same = latent_partition(y, yt, y, yt, num_clients=5, num_distributions=3, val_ratio=0.2, seed=0)
        assert all(np.array_equal(a.train, b.train) and np.array_equal(a.test, b.test) for a, b in zip(splits, same))
        assert partition_facts(cfg.partition, 3)["cluster_by"] == "label"
    # kmeans (and auto when D is not the number of classes) goes through the K-Means assignments
    cfg = _cfg("partition=latent", "partition.num_distributions=3", "partition.cluster_by=kmeans", "num_clients=5",
               "method.num_models=3")
    with pytest.raises(AssertionError, match="embedded or clustered"):
        latent_splits(cfg, ds)
    assert partition_facts(cfg.partition, 3)["cluster_by"] == "kmeans"
    assert partition_facts(_cfg("partition=latent").partition, 10)["cluster_by"] == "kmeans"  # D=5


def test_cluster_by_config():
    assert _cfg("partition=latent").partition.cluster_by == "auto"
    validate_config(_cfg("partition=latent", "partition.num_distributions=10"))  # auto -> label on CIFAR-10
    validate_config(_cfg("partition=latent", "partition.num_distributions=10", "partition.cluster_by=label"))
    validate_config(_cfg("partition=latent", "partition.num_distributions=10", "partition.cluster_by=kmeans"))
    validate_config(_cfg("partition=latent", "partition.num_distributions=3", "partition.cluster_by=kmeans"))
    for overrides, allowed in (
        (["partition.cluster_by=labels"], "auto, kmeans, label"),
        (["partition.num_distributions=5", "partition.cluster_by=label"], "num_distributions=10"),
        (["dataset=cifar100", "partition.num_distributions=10", "partition.cluster_by=label"], "num_distributions=100"),
    ):
        with pytest.raises(ConfigError) as err:
            validate_config(_cfg("partition=latent", *overrides))
        msg = str(err.value)
        assert "\n" not in msg and "partition.cluster_by" in msg and allowed in msg


# ---------------------------------------------------------------- real data (small subsets)


# dataset: (the D values shipped, extra overrides, the embedder's least test accuracy). CIFAR-100: the
# held-out test split (its test file is not available); a VGG-11 trained from scratch does not reach
# the paper's 85% test accuracy on CIFAR-100 (ours: 64.7% held-out, 89.0% train; README).
SHIPPED = {"cifar10": ((2, 3, 4, 5, 10), (), 0.85), "mnist": ((2, 3, 4, 5, 10), (), 0.85),
           "cifar100": ((2, 3, 4, 5, 10), ("dataset.test_split=holdout",), 0.60)}


@pytest.mark.realdata
@pytest.mark.parametrize("dataset", sorted(SHIPPED))
def test_shipped_vgg11_assignments_serve_the_default_latent_settings(data_root, tmp_path, monkeypatch, dataset):
    from fedfomo.data import load_configured

    ds_values, extra, least_acc = SHIPPED[dataset]
    cfg = _cfg(f"dataset={dataset}", f"dataset.root={data_root}", *extra, "partition=latent",
               f"partition.cache_dir={tmp_path}")
    ds = load_configured(cfg.dataset)

    def boom(*a, **k):
        raise AssertionError("VGG-11 trained although the package ships its assignments")
    monkeypatch.setattr(embed, "embed_dataset", boom)
    for d in ds_values:
        tr, te, meta = clusters_from_config(cfg.partition, ds, d)
        assert tr.shape == (len(ds.train_y),) and te.shape == (len(ds.test_y),)
        assert set(np.unique(tr)) == set(range(d)) and set(np.unique(te)) == set(range(d))
        assert meta["embedder_test_acc"] >= least_acc
    assert not (tmp_path / "features").exists()


@pytest.mark.realdata
def test_pixels_latent_split_on_mnist_subset(data_root, tmp_path):
    import dataclasses

    from fedfomo.data import load_dataset
    from fedfomo.emd import partition_emd

    full = load_dataset("mnist", str(data_root))
    ds = dataclasses.replace(full, train_x=full.train_x[:1500], train_y=full.train_y[:1500],
                             test_x=full.test_x[:300], test_y=full.test_y[:300])
    cfg = _cfg("dataset=mnist", "partition=latent", "partition.embedder=pixels", "partition.pca_dim=32",
               "partition.num_distributions=3", f"partition.cache_dir={tmp_path}").partition
    tr, te, meta = clusters_from_config(cfg, ds)
    assert len(tr) == 1500 and len(te) == 300 and sorted(meta["cluster_sizes"], reverse=True) == meta["cluster_sizes"]
    splits = latent_partition(ds.train_y.numpy(), ds.test_y.numpy(), tr, te, num_clients=6, num_distributions=3,
                              val_ratio=0.2, seed=0, samples_per_client=100)
    assert all(len(s.train) + len(s.val) == 100 for s in splits)
    # pixel clusters of digits are label-skewed: clearly more non-IID than the pooled data
    assert partition_emd(ds.train_y.numpy(), splits, 10) > 0.3


@pytest.mark.realdata
def test_latent_shuffled_run_end_to_end_and_figures(data_root, tmp_path, server_identity):
    import subprocess
    import sys

    from tests.inprocess import run_in_process

    repo = Path(CONF).parent
    out = tmp_path / "run"
    run_in_process(out, {"dataset": "mnist", "num-clients": 6, "num-server-rounds": 2, "local-epochs": 1,
                         "samples-per-client": 200, "data-root": str(data_root),
                         "overrides": "partition=latent partition.embedder=pixels partition.pca_dim=16 "
                                      "partition.num_distributions=3 partition.shuffle_targets=true "
                                      f"partition.cache_dir={tmp_path / 'cache'} method.num_models=3"}, 6)
    summary = json.loads((out / "summary.json").read_text())
    part = json.loads((out / "partition.json").read_text())
    assert summary["partition"] == "latent" and summary["emd"] == pytest.approx(part["emd"]) and summary["emd"] > 0
    assert [c["cluster"] for c in part["clients"]] == [0, 0, 1, 1, 2, 2]
    assert sorted(c["target_cluster"] for c in part["clients"]) == [0, 0, 1, 1, 2, 2]
    assert len(list((tmp_path / "cache" / "clusters").glob("mnist_pixels_D3_*.npz"))) == 1
    plots = subprocess.run([sys.executable, "-m", "fedfomo.plots", str(out), "--client", "0"], capture_output=True,
                           text=True, timeout=120, cwd=repo)
    assert plots.returncode == 0, plots.stderr
    assert len(list((out / "figures").glob("*.png"))) == 3
