"""Entry point: ``python -m fedfomo.main [overrides]`` (Hydra; ``--multirun`` for sweeps).

Composes and validates the configuration, checks the data and the partition, saves
``config.yaml`` in the run folder, and runs the experiment through ``flwr run`` on a SuperLink
of its own (:func:`fedfomo.launch.run_app`), which it stops afterwards.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fedfomo.config import ConfigError
from fedfomo.data import DataNotFoundError
from fedfomo.launch import run_app
from fedfomo.runconfig import check_moved_keys, conf_dir


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    """Run one experiment into the Hydra run directory; bad settings exit with code 2."""
    hc = HydraConfig.get()
    try:
        run_app(cfg, list(hc.overrides.task), hc.runtime.output_dir)
    except (ConfigError, DataNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def entry() -> None:
    """Refuse moved keys with one line before Hydra parses the command line, then run :func:`main`."""
    try:
        check_moved_keys([a for a in sys.argv[1:] if "=" in a and not a.startswith("-")])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    main()


if __name__ == "__main__":
    entry()
