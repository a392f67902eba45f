"""Entry point: ``python -m fedfomo.main [overrides]`` (Hydra; ``--multirun`` for sweeps)."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fedfomo.config import ConfigError
from fedfomo.data import DataNotFoundError
from fedfomo.simulation import run_experiment


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    """Run one experiment into the Hydra run directory; bad settings exit with code 2."""
    try:
        run_experiment(cfg, HydraConfig.get().runtime.output_dir)
    except (ConfigError, DataNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
