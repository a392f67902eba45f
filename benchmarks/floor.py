"""A bare-PyTorch floor for one FedFomo round: the same passes, no framework.

For every client: M + 1 validation passes (its baseline and M downloaded candidates), the
weighted merge, one test pass of the merged model and E epochs of mini-batch SGD, with the data
normalized once (float32, channels_last), on ``--workers`` one-thread processes with the clients
dealt out for perfect balance. The round's wall time is what a framework-free implementation
would need; :mod:`benchmarks.round_time` compares the harness with it. ``--floor-bf16`` runs the
passes under bfloat16 autocast (as ``sim.bf16=true`` does), to measure the framework's overhead
of a bf16 harness; issue 12's goal compares every harness with the fp32 floor.

    python benchmarks/floor.py --dataset mnist --model cnn_mcmahan --clients 15 --num-models 5
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np
import torch
from torch.nn import functional as F

from fedfomo.data import load_dataset, normalize
from fedfomo.models import build_model
from fedfomo.partition import make_partition
from fedfomo.strategy import sample_clients


def _client(job: dict) -> float:
    """One client's passes; returns its seconds."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    bf16 = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(job.get("bf16")), cache_enabled=False)
    make = lambda s: build_model(job["model"], job["shape"], job["classes"], s).to(memory_format=torch.channels_last)  # noqa: E731
    baseline, candidates = make(0), [make(k + 1) for k in range(job["num_models"])]
    losses = []
    with torch.no_grad(), bf16:
        for m in ([baseline, *candidates] if candidates else []):
            m.eval()
            total = 0.0
            for k in range(0, len(job["val_y"]), 1000):
                total += float(F.cross_entropy(m(job["val_x"][k:k + 1000]), job["val_y"][k:k + 1000], reduction="sum"))
            losses.append(total / len(job["val_y"]))
        w = np.maximum(losses[0] - np.array(losses[1:]), 0.0) if losses else np.zeros(0)
        w = w / w.sum() if w.sum() > 0 else np.zeros_like(w)
        for p, *cs in zip(baseline.parameters(), *(c.parameters() for c in candidates)):
            p.add_(sum(float(wk) * (c - p) for wk, c in zip(w, cs)))
        for k in range(0, len(job["test_y"]), 1000):
            baseline(job["test_x"][k:k + 1000])
    baseline.train()
    opt = torch.optim.SGD(baseline.parameters(), lr=job["lr"], weight_decay=1e-4)
    g = torch.Generator().manual_seed(job["cid"])
    n = len(job["train_y"])
    for _ in range(job["epochs"]):
        order = torch.randperm(n, generator=g)
        for k in range(0, n, job["batch"]):
            idx = order[k:k + job["batch"]]
            with bf16:
                loss = F.cross_entropy(baseline(job["train_x"][idx]), job["train_y"][idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - t0


def jobs_for(args: argparse.Namespace) -> list[dict]:
    """Every client's tensors, normalized once, and its settings."""
    ds = load_dataset(args.dataset, args.data_root)
    chosen = sample_clients(args.clients, getattr(args, "participation", 1.0), 2, 0)  # round 2's clients
    splits = make_partition(ds.train_y.numpy(), ds.test_y.numpy(), kind="pathological", num_clients=args.clients,
                            val_ratio=0.2, seed=0, classes_per_client=2, samples_per_client=args.samples_per_client)
    jobs = []
    for cid, s in enumerate(splits):
        if cid not in chosen:
            continue

        def part(x, idx):
            return normalize(x[torch.as_tensor(idx)], ds.mean, ds.std)
        jobs.append({"cid": cid, "bf16": getattr(args, "floor_bf16", False),
                     "model": args.model, "shape": ds.image_shape, "classes": ds.num_classes,
                     "num_models": args.num_models, "epochs": args.epochs, "batch": args.batch, "lr": args.lr,
                     "train_x": part(ds.train_x, s.train), "train_y": ds.train_y[torch.as_tensor(s.train)],
                     "val_x": part(ds.train_x, s.val), "val_y": ds.train_y[torch.as_tensor(s.val)],
                     "test_x": part(ds.test_x, s.test), "test_y": ds.test_y[torch.as_tensor(s.test)]})
    return jobs


def floor_round(args: argparse.Namespace) -> tuple[float, float, int]:
    """(wall seconds of one round on ``args.workers`` processes, summed client seconds, clients in it)."""
    jobs = jobs_for(args)
    jobs.sort(key=lambda j: -len(j["train_y"]))  # longest first: the pool's greedy dealing balances them
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # import what SGD imports (torch._dynamo) once,
    _client({**jobs[-1], "epochs": 1})  # and warm the kernels, before forking: the harness is warm in round 2
    ctx = mp.get_context("fork")
    with ctx.Pool(args.workers) as pool:
        t0 = time.perf_counter()
        times = pool.map(_client, jobs, chunksize=1)
        wall = time.perf_counter() - t0
    return wall, float(sum(times)), len(jobs)


def require_bf16(enabled: bool) -> None:
    """A bf16 setting on hardware without native bfloat16 ends the benchmark with one line."""
    from fedfomo.config import ConfigError, check_bf16

    try:
        check_bf16(enabled)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None


def parser(multi: bool = False) -> argparse.ArgumentParser:
    """The floor's settings (those of the harness's defaults for the issue's benchmark).

    ``multi``: ``--clients`` and ``--num-models`` take several values (a sweep, :mod:`round_time`).
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-root", default=None)
    p.add_argument("--model", default="cnn_mcmahan")
    p.add_argument("--clients", type=int, nargs="+" if multi else None, default=[15] if multi else 15)
    p.add_argument("--num-models", type=int, nargs="+" if multi else None, default=[5] if multi else 5)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--samples-per-client", type=int, default=None)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--participation", type=float, default=1.0)
    p.add_argument("--floor-bf16", action="store_true",
                   help="the floor's passes under bfloat16 autocast (needs native bf16), for a sim.bf16=true harness")
    return p


if __name__ == "__main__":
    a = parser().parse_args()
    require_bf16(a.floor_bf16)
    if a.num_models > a.clients:
        raise SystemExit(f"error: --num-models={a.num_models} is larger than --clients={a.clients}; "
                         f"allowed: 1..{a.clients}")
    wall, busy, _ = floor_round(a)
    print(f"floor round ({'bf16 autocast' if a.floor_bf16 else 'fp32'}): {wall:.2f} s wall, {busy:.2f} s of client "
          f"work, {a.workers} workers")
