"""Encoding of FedFomo's per-client messages into Flower's scalar-only config and metrics."""

from __future__ import annotations

import numpy as np

Weights = list[np.ndarray]


def encode_ids(ids: list[int]) -> str:
    """``[3, 5, 7]`` -> ``"3,5,7"``."""
    return ",".join(str(int(i)) for i in ids)


def decode_ids(text: str) -> list[int]:
    """``"3,5,7"`` -> ``[3, 5, 7]``; empty string -> ``[]``."""
    return [int(v) for v in text.split(",")] if text else []


def encode_floats(values: np.ndarray) -> str:
    """Floats as a comma-separated string; ``repr`` round-trips every float64 exactly."""
    return ",".join(repr(float(v)) for v in values)


def decode_floats(text: str) -> np.ndarray:
    """Inverse of :func:`encode_floats`."""
    return np.array([float(v) for v in text.split(",")] if text else [], dtype=np.float64)


def concat_models(models: list[Weights]) -> Weights:
    """Several models' arrays in one flat list (one Flower ``Parameters``)."""
    return [w for m in models for w in m]


def split_models(flat: Weights, num_arrays: int) -> list[Weights]:
    """Cut a concatenation of models (each ``num_arrays`` arrays) back into a list of models."""
    if num_arrays <= 0 or len(flat) % num_arrays:
        raise ValueError(f"cannot split {len(flat)} arrays into models of {num_arrays}")
    return [list(flat[k:k + num_arrays]) for k in range(0, len(flat), num_arrays)]
