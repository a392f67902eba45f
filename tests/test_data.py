"""Loading the real datasets from ../shared/data, and the missing-data error."""

from __future__ import annotations

import pytest
import torch

from fedfomo.data import DataNotFoundError, load_dataset

pytestmark = pytest.mark.realdata


def test_mnist(data_root):
    ds = load_dataset("mnist", str(data_root))
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert torch.bincount(ds.train_y).tolist()[:3] == [5923, 6742, 5958]


def test_cifar10(data_root):
    ds = load_dataset("cifar10", str(data_root))
    assert ds.train_x.shape == (50000, 3, 32, 32) and ds.test_x.shape == (10000, 3, 32, 32)
    assert torch.bincount(ds.train_y).tolist() == [5000] * 10
    assert ds.train_y[:5].tolist() == [6, 9, 9, 4, 1]  # official order
    mean = ds.train_x.float().mean(dim=(0, 2, 3)) / 255
    torch.testing.assert_close(mean, torch.tensor(ds.mean), atol=1e-3, rtol=0)


def test_missing_data_message(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("cifar10", str(tmp_path))
    msg = str(err.value)
    assert str(tmp_path) in msg and "dataset.download=true" in msg and "FEDFOMO_DATA" in msg
