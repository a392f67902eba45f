"""A real deployment on this machine's loopback: ``python -m fedfomo.deploy [--run-dir DIR] [OVERRIDES...]``.

Starts ``flower-superlink --insecure`` (deployment runtime, no simulation), one
``flower-supernode --insecure --node-config "partition-id=i num-partitions=N"`` per client, runs
the fedfomo app on them with ``flwr run`` (``--stream``), and stops every process afterwards, also
on Ctrl-C. The run writes the same result files as a simulation run. The overrides are the Hydra
entry point's (``dataset=mnist num_clients=3 ...``); each SuperNode runs every ClientApp message
in a fresh process (Flower's ``subprocess`` isolation), so a round costs a few seconds more than
in simulation.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from fedfomo.config import ConfigError, validate_config
from fedfomo.data import DataNotFoundError
from fedfomo.experiment import build_experiment
from fedfomo.launch import flwr_run, new_federation, start_superlink, start_supernodes, temporary_workdir, write_app
from fedfomo.runconfig import compose, config_yaml, run_config_for


def deploy(overrides: list[str], out_dir: Path, node_configs: list[str] | None = None) -> dict:
    """Run the experiment of ``overrides`` on a loopback SuperLink with one SuperNode per client.

    Parameters
    ----------
    overrides : list of str
        Hydra overrides of ``conf/config.yaml``.
    out_dir : Path
        The run folder.
    node_configs : list of str, optional
        Each SuperNode's ``--node-config`` (default: ``partition-id=i num-partitions=N``).

    Returns
    -------
    dict
        The content of summary.json.

    """
    cfg = compose(overrides)
    validate_config(cfg)
    cfg.dataset.root = str(Path(cfg.dataset.root).expanduser().resolve())
    build_experiment(cfg)  # data and partition problems surface before any process starts
    out = out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(config_yaml(cfg))
    work = temporary_workdir()
    fed = new_federation(work)
    try:
        start_superlink(fed, simulation=False)
        start_supernodes(fed, int(cfg.num_clients), node_configs)
        code = flwr_run(fed, write_app(work / "app"), run_config_for(cfg, overrides, out))
    finally:
        fed.stop()
    summary = out / "summary.json"
    if not summary.exists():
        raise RuntimeError(f"the deployment ended (flwr run exit code {code}) without {summary}; "
                           f"see {out / 'server.log'} and the process logs in {fed.logs}")
    shutil.rmtree(work, ignore_errors=True)
    return json.loads(summary.read_text())


def main(argv: list[str] | None = None) -> int:
    """Command line; bad settings exit with code 2 and one line."""
    parser = argparse.ArgumentParser(prog="python -m fedfomo.deploy", description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="results folder (default: outputs/deploy/<dataset>_<partition>_<method>/<time>)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. dataset=mnist num_clients=3")
    args = parser.parse_args(argv)
    try:
        cfg = compose(args.overrides)
        out = args.run_dir or Path("outputs") / "deploy" / (
            f"{cfg.dataset.name}_{cfg.partition.name}_{cfg.method.name}") / time.strftime("%Y-%m-%d_%H-%M-%S")
        summary = deploy(args.overrides, out)
    except (ConfigError, DataNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: every Flower process of this deployment was stopped", file=sys.stderr)
        return 130
    print(f"final personalized test acc {summary['final_mean_acc']:.4f} +- {summary['final_std_acc']:.4f}; "
          f"results in {out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
