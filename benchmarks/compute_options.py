"""Measure the compute options of issue 12 on one thread: what a training or evaluation pass costs.

For the McMahan CNN on MNIST-shaped input (or ``--model``/``--shape``), times per image:
training steps (batch 50, SGD) and evaluation passes (batch 1000) in eager fp32 with the
default channels_last layout and with contiguous NCHW, with ``torch.compile``; the validation
passes of M + 1 candidates one by one against all at once with ``torch.func`` (stacked
parameters + ``vmap``); and bfloat16 autocast where the CPU runs it natively. Best of
``--repeats``; writes one CSV row per option.

    python benchmarks/compute_options.py --csv benchmarks/results/compute_options.csv
"""

from __future__ import annotations

import argparse
import copy
import csv
import time
from pathlib import Path

import torch
from torch.func import functional_call, stack_module_state
from torch.nn import functional as F

from fedfomo.config import bf16_supported
from fedfomo.models import build_model


def best_of(fn, repeats: int) -> float:
    """Fastest of ``repeats`` timed calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def train_ms_per_image(model, x, y, steps: int, repeats: int, autocast: bool = False) -> float:
    """Milliseconds per image of ``steps`` SGD steps on (x, y)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, weight_decay=1e-4)

    def run():
        for _ in range(steps):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return 1000 * best_of(run, repeats) / (steps * len(y))


@torch.no_grad()
def eval_ms_per_image(model, x, repeats: int, autocast: bool = False) -> float:
    """Milliseconds per image of one forward pass over x."""
    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            model(x)

    return 1000 * best_of(run, repeats) / len(x)


def candidate_passes(args: argparse.Namespace, shape: tuple, g: torch.Generator, add) -> None:
    """The M + 1 validation passes of a FedFomo client: one by one against stacked with ``vmap``."""
    cl = torch.channels_last
    cands = [build_model(args.model, shape, 10, s).eval() for s in range(args.num_models + 1)]
    xv = torch.randn(args.val_size, *shape, generator=g).contiguous(memory_format=cl)

    @torch.no_grad()
    def one_by_one():
        for m in cands:
            m(xv)

    params, buffers = stack_module_state(cands)
    skeleton = copy.deepcopy(cands[0]).to("meta")

    @torch.no_grad()
    def stacked():
        torch.vmap(lambda p, b, x: functional_call(skeleton, (p, b), (x,)), in_dims=(0, 0, None))(params, buffers, xv)

    n = (args.num_models + 1) * args.val_size
    add(f"M+1={args.num_models + 1} candidates one by one", "eval", 1000 * best_of(one_by_one, args.repeats) / n)
    add(f"M+1={args.num_models + 1} candidates vmap", "eval", 1000 * best_of(stacked, args.repeats) / n)


def main() -> None:
    """Every option, one CSV row each."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cnn_mcmahan")
    p.add_argument("--shape", type=int, nargs=3, default=[1, 28, 28])
    p.add_argument("--num-models", type=int, default=5, help="M: candidates evaluated besides the own model")
    p.add_argument("--val-size", type=int, default=800)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--csv", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    shape = tuple(args.shape)
    g = torch.Generator().manual_seed(0)
    xb, yb = torch.randn(50, *shape, generator=g), torch.randint(0, 10, (50,), generator=g)
    xe = torch.randn(1000, *shape, generator=g)
    cl = torch.channels_last
    rows = []

    def add(option, kind, ms, note=""):
        rows.append({"option": option, "pass": kind, "ms_per_image": round(ms, 4), "note": note})
        print(f"{option:34s} {kind:6s} {ms:8.4f} ms/image {note}", flush=True)

    model = build_model(args.model, shape, 10, 0)
    add("eager fp32 channels_last (default)", "train", train_ms_per_image(model, xb.contiguous(memory_format=cl), yb,
                                                                          20, args.repeats))
    add("eager fp32 channels_last (default)", "eval", eval_ms_per_image(model.eval(), xe.contiguous(memory_format=cl),
                                                                        args.repeats))
    plain = copy.deepcopy(model).to(memory_format=torch.contiguous_format).train()
    add("eager fp32 contiguous NCHW", "train", train_ms_per_image(plain, xb, yb, 20, args.repeats))
    add("eager fp32 contiguous NCHW", "eval", eval_ms_per_image(plain.eval(), xe, args.repeats))
    t0 = time.perf_counter()
    compiled = torch.compile(copy.deepcopy(model).train())
    ms = train_ms_per_image(compiled, xb.contiguous(memory_format=cl), yb, 20, args.repeats)
    add("torch.compile (inductor)", "train", ms, f"compile+measure {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    compiled_eval = torch.compile(copy.deepcopy(model).eval())
    ms = eval_ms_per_image(compiled_eval, xe.contiguous(memory_format=cl), args.repeats)
    add("torch.compile (inductor)", "eval", ms, f"compile+measure {time.perf_counter() - t0:.0f} s")

    candidate_passes(args, shape, g, add)

    if bf16_supported():
        add("bf16 autocast", "train", train_ms_per_image(copy.deepcopy(model).train(),
                                                         xb.contiguous(memory_format=cl), yb, 20, args.repeats, True))
        add("bf16 autocast", "eval", eval_ms_per_image(model.eval(), xe.contiguous(memory_format=cl), args.repeats,
                                                       True))
    else:
        add("bf16 autocast", "-", float("nan"), f"not run: {torch.backends.cpu.get_cpu_capability()} CPU "
                                                "without native bfloat16 (sim.bf16=true is refused here)")
    if args.csv:
        path = Path(args.csv)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
