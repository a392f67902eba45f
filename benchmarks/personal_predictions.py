r"""Diagnose a finished run from its checkpoint: which classes each client's personalized model predicts.

For methods whose final personalized model is built from the global model and the client's own
saved state (pFedMe's kept theta, Per-FedAvg's one step), this restores the run's last server
checkpoint and every client's last saved state, rebuilds each client's personalized model the way
the final evaluation does, and prints per client its test accuracy (which must match the run's
``summary.json``), the classes it predicts on its test split and whether it predicts a single
class for every test image (and for at least 90% of them); and the global model's predictions on
the first 1000 test images. Used for the CIFAR-10 Table 1 pFedMe cell (README); not part of the
tests. Needs the run's ``checkpoint/`` folder (queue runs keep it; the committed copies under
``results/`` drop it).

    python benchmarks/personal_predictions.py /path/to/queue/pfedme_s1
    python benchmarks/personal_predictions.py /path/to/queue/pfedme_s1 --method-param personal_model=from_global
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from flwr.common import RecordDict
from omegaconf import OmegaConf

from fedfomo import methods
from fedfomo.checkpoint import load_server, restore_client, unpack
from fedfomo.data import resolve_root
from fedfomo.experiment import build_experiment, client_data
from fedfomo.models import set_weights
from fedfomo.training import predicted_class_counts


def main() -> None:
    """Print the per-client diagnosis of one run folder (config.yaml, summary.json, checkpoint/)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the run's folder, with its checkpoint/")
    parser.add_argument("--method-param", action="append", default=[], metavar="KEY=VALUE",
                        help="override one method setting for the rebuild (e.g. personal_model=from_global)")
    parser.add_argument("--data", default=None, help="dataset root (default: $FEDFOMO_DATA or ./data)")
    args = parser.parse_args()
    cfg = OmegaConf.load(args.run / "config.yaml")
    cfg.dataset.root = str(resolve_root(args.data))
    torch.set_num_threads(1)
    saved = load_server(args.run)
    if saved is None:
        raise SystemExit(f"{args.run}: no server checkpoint (checkpoint/ missing?)")
    last_round, arrays, _ = saved
    glob = unpack(arrays, "global")
    exp = build_experiment(cfg)
    overrides = dict(item.split("=", 1) for item in args.method_param)
    settings = replace(exp.settings, method_params={**exp.settings.method_params, **overrides})
    ds = exp.dataset
    counts_of = partial(predicted_class_counts, mean=ds.mean, std=ds.std, num_classes=ds.num_classes)
    method = methods.get(cfg.method.name)
    reported = json.loads((args.run / "summary.json").read_text())["per_client_final_acc"]
    probe = method.client(0, client_data(exp, 0), exp.settings, RecordDict())
    set_weights(probe.model, glob)
    label = f"{args.run.name}, round {last_round}" + (f", method params {overrides}" if overrides else "")
    print(f"{label}: global model, first 1000 test images, predicted per class:",
          counts_of(probe.model, ds.test_x[:1000]))
    accs, one_class, mostly_one = [], 0, 0
    for cid in range(int(cfg.num_clients)):
        state = RecordDict()
        restore_client(args.run, cid, last_round, state)
        client = method.client(cid, client_data(exp, cid), settings, state)
        weights = client.personalize(glob, {"server_round": last_round + 1}, False)[0]
        acc = client.loss_on(weights, client.data.test_x, client.data.test_y)[1]
        counts = np.array(counts_of(client.model, client.data.test_x))
        classes = sorted(np.unique(client.data.test_y.numpy()).tolist())
        single = int((counts > 0).sum() == 1)
        one_class += single
        mostly_one += int(counts.max() >= 0.9 * counts.sum())
        accs.append(acc)
        print(f"client {cid:2d} classes {classes}: test acc {acc * 100:5.1f} (run: {reported[cid] * 100:5.1f}), "
              f"predicted {dict((int(c), int(n)) for c, n in enumerate(counts) if n)}"
              f"{'  <- one class' if single else ''}")
    print(f"mean test acc {np.mean(accs) * 100:.2f} (run: {np.mean(reported) * 100:.2f}); "
          f"{one_class} of {len(accs)} clients predict a single class for every test image, "
          f"{mostly_one} one class for at least 90% of them")


if __name__ == "__main__":
    main()
