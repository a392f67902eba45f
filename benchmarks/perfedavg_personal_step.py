r"""Diagnose a Per-FedAvg run: what its global model predicts, before and after the personal step.

Per-FedAvg's personalized model is the global model after one gradient step of size alpha on one
local training batch. For a run's saved global model this prints, on every client's test split,
the accuracy of the personalized model for several alpha (alpha 0 is the global model itself)
and the classes it predicts, and the global model's predicted classes on the first 1000 test
images. Used for the CIFAR-10 Table 1 Per-FedAvg cell (README); not part of the tests.

    python benchmarks/perfedavg_personal_step.py results/table1_cifar10_spc1000/perfedavg_s0 \
        results/perfedavg_steps_cifar10_spc1000/diagnosis/perfedavg_s0_global_round_0020.npz
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from flwr.common import RecordDict
from omegaconf import OmegaConf

from fedfomo import methods
from fedfomo.data import resolve_root
from fedfomo.experiment import build_experiment, client_data
from fedfomo.models import set_weights
from fedfomo.training import predicted_class_counts


def main() -> None:
    """Print the diagnosis of one run (its config.yaml) and one saved global model (a server checkpoint npz)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the run's folder (its config.yaml is read)")
    parser.add_argument("weights", type=Path, help="npz with the global model as global/0, global/1, ...")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.001, 0.01, 0.03, 0.1, 0.3])
    parser.add_argument("--data", default=None, help="dataset root (default: $FEDFOMO_DATA or ./data)")
    args = parser.parse_args()
    cfg = OmegaConf.load(args.run / "config.yaml")
    cfg.dataset.root = str(resolve_root(args.data))
    torch.set_num_threads(1)
    exp = build_experiment(cfg)
    ds = exp.dataset
    counts_of = partial(predicted_class_counts, mean=ds.mean, std=ds.std, num_classes=ds.num_classes)
    saved = np.load(args.weights)
    glob = [saved[f"global/{i}"] for i in range(len(saved.files))]
    method = methods.get(cfg.method.name)
    probe = method.client(0, client_data(exp, 0), exp.settings, RecordDict())
    set_weights(probe.model, glob)
    print("global model, first 1000 test images, predicted per class:",
          counts_of(probe.model, ds.test_x[:1000]))
    for alpha in args.alphas:
        settings = replace(exp.settings, method_params={**exp.settings.method_params, "alpha": alpha})
        accs, one_class = [], 0
        for cid in range(int(cfg.num_clients)):
            client = method.client(cid, client_data(exp, cid), settings, RecordDict())
            weights = client.personalize(glob, {"server_round": int(cfg.num_rounds) + 1}, False)[0] if alpha else glob
            accs.append(client.loss_on(weights, client.data.test_x, client.data.test_y)[1])
            counts = np.array(counts_of(client.model, client.data.test_x))
            one_class += int((counts > 0).sum() == 1)
        print(f"alpha {alpha:g}: test acc {np.mean(accs) * 100:.2f} +- {np.std(accs) * 100:.2f} "
              f"(by client: {' '.join(f'{a * 100:.0f}' for a in accs)}); "
              f"{one_class} of {len(accs)} clients predict a single class for every test image")


if __name__ == "__main__":
    main()
