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
import sys
import time
from pathlib import Path

from fedfomo.config import ConfigError
from fedfomo.launch import run_app
from fedfomo.runconfig import compose


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
    return run_app(compose(overrides), overrides, out_dir, deployment=True, node_configs=node_configs)


def main(argv: list[str] | None = None) -> int:
    """Command line; bad settings exit with code 2 and one line."""
    parser = argparse.ArgumentParser(prog="python -m fedfomo.deploy", description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="results folder (default: outputs/deploy/<dataset>_<partition>_<method>/<time>)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. dataset=mnist num_clients=3")
    args = parser.parse_args(argv)
    from fedfomo.main import guarded

    try:
        cfg = compose(args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.run_dir or Path("outputs") / "deploy" / (
        f"{cfg.dataset.name}_{cfg.partition.name}_{cfg.method.name}") / time.strftime("%Y-%m-%d_%H-%M-%S")
    result: dict = {}
    code = guarded(lambda: result.update(deploy(args.overrides, out)), out)
    if code == 0:
        print(f"final personalized test acc {result['final_mean_acc']:.4f} +- {result['final_std_acc']:.4f}; "
              f"results in {Path(out).resolve()}")
    return code


if __name__ == "__main__":
    sys.exit(main())
