"""``dataset.test_split=holdout``: training images held out as the test set (CIFAR-100 has no test file here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from fedfomo.config import ConfigError, validate_config
from fedfomo.data import (
    DataNotFoundError,
    ImageDataset,
    _read_cifar,
    apply_holdout,
    configured_test_split,
    holdout_indices,
    load_configured,
    load_dataset,
)
from fedfomo.embeddings import data_fingerprint
from fedfomo.experiment import run_facts
from fedfomo.report import markdown_table
from fedfomo.runconfig import compose


def _fake(num_classes: int = 5, per_class: int = 40, seed: int = 0) -> ImageDataset:
    """A small dataset whose pixel values encode the image's position (to check disjointness)."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat(np.arange(num_classes), per_class))
    n = len(y)
    x = (np.arange(n)[:, None, None, None] % 251 * np.ones((1, 1, 4, 4))).astype(np.uint8)
    x[:, 0, 0, 0] = np.arange(n) // 251  # with the rest: a unique image per index
    return ImageDataset(name="cifar100", train_x=torch.from_numpy(x), train_y=torch.from_numpy(y.astype(np.int64)),
                        test_x=torch.zeros((3, 1, 4, 4), dtype=torch.uint8), test_y=torch.zeros(3, dtype=torch.int64),
                        num_classes=num_classes, mean=(0.5,), std=(0.25,))


def _ids(x: torch.Tensor) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in zip(x[:, 0, 0, 0], x[:, 0, 1, 1])}


def test_holdout_sizes_balance_and_disjointness():
    ds = _fake()
    out = apply_holdout(ds, 50, 0)
    assert len(out.test_y) == 50 and len(out.train_y) == len(ds.train_y) - 50
    assert torch.bincount(out.test_y, minlength=5).tolist() == [10] * 5
    assert torch.bincount(out.train_y, minlength=5).tolist() == [30] * 5
    assert not _ids(out.train_x) & _ids(out.test_x)
    assert _ids(out.train_x) | _ids(out.test_x) == _ids(ds.train_x)
    assert out.test_split == "CIFAR-100 held-out test (50 train images, seed 0)"
    assert out.mean == ds.mean and out.num_classes == ds.num_classes
    # the official test set is gone, not mixed in
    assert len(out.test_x) == 50 and not torch.equal(out.test_x[:3], ds.test_x)


def test_holdout_indices_are_seeded_and_labels_follow_images():
    y = _fake().train_y.numpy()
    train, test = holdout_indices(y, 5, 50, seed=3)
    again_train, again_test = holdout_indices(y, 5, 50, seed=3)
    np.testing.assert_array_equal(test, again_test)
    np.testing.assert_array_equal(train, again_train)
    _, other = holdout_indices(y, 5, 50, seed=4)
    assert not np.array_equal(test, other)
    assert np.all(np.diff(test) > 0) and np.all(np.diff(train) > 0)  # file order kept
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == len(y)
    ds = _fake()
    out = apply_holdout(ds, 50, 3)
    torch.testing.assert_close(out.test_y, ds.train_y[torch.from_numpy(test)])
    torch.testing.assert_close(out.test_x, ds.train_x[torch.from_numpy(test)])


@pytest.mark.parametrize("size", [0, -5, 7, 200])
def test_holdout_bad_sizes_are_one_line(size):
    with pytest.raises(ValueError, match=r"dataset\.holdout_size") as err:
        holdout_indices(_fake().train_y.numpy(), 5, size, 0)
    assert "\n" not in str(err.value) and "allowed" in str(err.value)


def _cfg(*overrides: str):
    return compose(["dataset=cifar100", *overrides])


@pytest.mark.parametrize(("override", "key"), [
    ("dataset.test_split=heldout", "dataset.test_split='heldout' is not supported; allowed: official, holdout"),
    ("dataset.holdout_size=150", "dataset.holdout_size=150 is not supported for dataset=cifar100"),
    ("dataset.holdout_size=50000", "dataset.holdout_size=50000 is not supported for dataset=cifar100"),
    ("dataset.holdout_size=0", "dataset.holdout_size=0 is out of range"),
    ("dataset.holdout_seed=-1", "dataset.holdout_seed=-1 is out of range"),
])
def test_config_refuses_bad_values_in_one_line(override, key):
    cfg = _cfg("dataset.test_split=holdout", override)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert str(err.value).startswith(key) and "\n" not in str(err.value)


def test_config_accepts_holdout_and_records_it():
    cfg = _cfg("dataset.test_split=holdout", "dataset.holdout_size=49900")
    validate_config(cfg)
    for name in ("mnist", "cifar10", "cifar100"):  # every dataset yaml has the keys (unknown-key check passes)
        c = compose([f"dataset={name}"])
        assert (c.dataset.test_split, c.dataset.holdout_size, c.dataset.holdout_seed) == ("official", 10000, 0)
        validate_config(c)
    cfg = _cfg("dataset.test_split=holdout")
    assert configured_test_split(cfg.dataset) == "CIFAR-100 held-out test (10000 train images, seed 0)"
    assert run_facts(cfg, 0.0)["test_split"] == "CIFAR-100 held-out test (10000 train images, seed 0)"
    assert run_facts(_cfg(), 0.0)["test_split"] == "official"
    old = OmegaConf.create({"name": "cifar100", "root": ".", "download": False})  # saved before the key existed
    assert configured_test_split(old) == "official"


def test_report_keeps_held_out_runs_apart():
    base = {"dataset": "cifar100", "partition": "latent", "num_distributions": 5, "num_clients": 15,
            "num_rounds": 20, "local_epochs": 5, "method": "fedfomo", "num_models": 5, "final_mean_acc": 0.5,
            "final_std_acc": 0.1, "wall_time_s": 60.0, "emd": 1.0}
    held = {**base, "test_split": "CIFAR-100 held-out test (10000 train images, seed 0)", "final_mean_acc": 0.4}
    table = markdown_table([base, held])
    rows = [line for line in table.splitlines() if line.startswith("| cifar100")]
    assert len(rows) == 2
    assert any("CIFAR-100 held-out test (10000 train images, seed 0)" in r and "40.00" in r for r in rows)


def test_latent_cache_key_tells_the_splits_apart():
    """The embeddings and cluster caches are keyed by data_fingerprint: a holdout (or another seed) is another key."""
    ds = _fake()
    keys = {data_fingerprint(d) for d in (ds, apply_holdout(ds, 50, 0), apply_holdout(ds, 50, 1),
                                          apply_holdout(ds, 100, 0))}
    assert len(keys) == 4
    assert data_fingerprint(apply_holdout(ds, 50, 0)) == data_fingerprint(apply_holdout(ds, 50, 0))


def test_missing_test_file_names_the_holdout(tmp_path):
    """The official split without the test file: the one-line error names dataset.test_split=holdout."""
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "train").write_bytes(b"")  # only existence is checked before the error
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("cifar100", str(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg and str(folder / "test") in msg and "dataset.test_split=holdout" in msg
    assert "CIFAR-100 held-out test" in msg
    # the train file missing too: holdout is no way out, so it is not offered
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("cifar100", str(tmp_path / "nothing"))
    assert "test_split" not in str(err.value)
    # with holdout, a missing train file is still an error, and the test file is never asked for
    with pytest.raises(DataNotFoundError, match=r"looked for .*cifar-100-python/train"):
        load_dataset("cifar100", str(tmp_path / "nothing"), test_split="holdout")


@pytest.fixture(scope="module")
def cifar100_root(data_root):
    if not (data_root / "cifar-100-python" / "train").exists():
        pytest.skip(f"real data unavailable: {data_root} holds no cifar-100-python/train "
                    f"(restore ../shared/data with its restore.py)")
    return data_root


@pytest.mark.realdata
def test_cifar100_holdout_real(cifar100_root, tmp_path):
    """CIFAR-100 without its test file: 100 held-out images per class, 400 per class left to train on."""
    root = tmp_path / "root"
    (root / "cifar-100-python").mkdir(parents=True)
    for f in ("train", "meta"):
        (root / "cifar-100-python" / f).symlink_to(cifar100_root / "cifar-100-python" / f)
    with pytest.raises(DataNotFoundError) as err:  # the official split needs the (absent) test file
        load_dataset("cifar100", str(root))
    assert "dataset.test_split=holdout" in str(err.value) and "\n" not in str(err.value)
    cfg = OmegaConf.create({"name": "cifar100", "root": str(root), "download": False, "test_split": "holdout",
                            "holdout_size": 10000, "holdout_seed": 0})
    ds = load_configured(cfg)
    assert ds.train_x.shape == (40000, 3, 32, 32) and ds.test_x.shape == (10000, 3, 32, 32)
    assert torch.bincount(ds.test_y, minlength=100).tolist() == [100] * 100
    assert torch.bincount(ds.train_y, minlength=100).tolist() == [400] * 100
    assert ds.test_split == "CIFAR-100 held-out test (10000 train images, seed 0)"
    # exactly the seeded class-balanced subset of the train file, and the rest in file order
    raw_x, raw_y = _read_cifar([root / "cifar-100-python" / "train"], b"fine_labels")
    train, test = holdout_indices(raw_y, 100, 10000, 0)
    assert len(np.intersect1d(train, test)) == 0
    assert np.array_equal(ds.test_x.numpy(), raw_x[test]) and np.array_equal(ds.train_x.numpy(), raw_x[train])
    assert np.array_equal(ds.test_y.numpy(), raw_y[test]) and np.array_equal(ds.train_y.numpy(), raw_y[train])
    assert load_configured(cfg) is ds  # cached per process
