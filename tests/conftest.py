"""Shared fixtures: locating (or restoring) the real datasets; the ServerApp identity outside Flower."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CACHE = REPO / ".cache" / "data"
NEEDED = ("MNIST/raw/train-images-idx3-ubyte", "cifar-10-batches-py/test_batch")


def _complete(root: Path) -> bool:
    return all((root / f).exists() for f in NEEDED)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """A folder with MNIST and CIFAR-10 in torchvision layout, or skip with the reason.

    Uses $FEDFOMO_DATA when it holds the files; otherwise restores ../shared/data (next to the
    repository) into .cache/data once.
    """
    env = os.environ.get("FEDFOMO_DATA")
    if env and _complete(Path(env)):
        return Path(env).resolve()
    if _complete(CACHE):
        return CACHE
    restore = SHARED_DATA / "restore.py"
    if not restore.exists():
        pytest.skip(f"real data unavailable: neither $FEDFOMO_DATA nor {SHARED_DATA} holds MNIST and CIFAR-10")
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(restore), str(CACHE)], check=True, capture_output=True)
    assert _complete(CACHE), f"restoring {SHARED_DATA} into {CACHE} did not produce {NEEDED}"
    return CACHE


@pytest.fixture
def server_identity() -> None:
    """Messages are stamped with the run and node of the ServerApp process; fake both outside Flower."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 1, 1
