"""One experiment as a local simulation: ``flwr run`` of the fedfomo app on a SuperLink started for it."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from omegaconf import DictConfig

from fedfomo.config import validate_config
from fedfomo.experiment import build_experiment
from fedfomo.launch import flwr_run, new_federation, simulation_config, start_superlink, temporary_workdir, write_app
from fedfomo.runconfig import config_yaml, run_config_for

log = logging.getLogger("fedfomo")


class RunFailedError(RuntimeError):
    """The federation ended without writing ``summary.json``."""


def simulate(cfg: DictConfig, overrides: list[str], out_dir: str | Path) -> dict:
    """Validate ``cfg``, check its data and partition, then run it through ``flwr run`` in simulation.

    Parameters
    ----------
    cfg : DictConfig
        The composed configuration.
    overrides : list of str
        The Hydra overrides ``cfg`` was composed with (the ServerApp and ClientApps compose
        the same configuration from them).
    out_dir : str or Path
        The run folder.

    Returns
    -------
    dict
        The content of summary.json.

    Raises
    ------
    ConfigError, DataNotFoundError
        Before any Flower process starts.
    RunFailedError
        When the run ended without a summary.

    """
    validate_config(cfg)
    cfg = cfg.copy()
    cfg.dataset.root = str(Path(cfg.dataset.root).expanduser().resolve())  # every process finds the same data
    build_experiment(cfg)  # data and partition problems surface here, before Flower starts
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(config_yaml(cfg))
    work = temporary_workdir()
    fed = new_federation(work)
    try:
        start_superlink(fed, simulation=True)
        code = flwr_run(fed, write_app(work / "app"), run_config_for(cfg, overrides, out), simulation_config(cfg))
    finally:
        fed.stop()
    summary = out / "summary.json"
    if not summary.exists():
        tail = (fed.logs / "superlink.log").read_text(errors="replace").splitlines()[-20:]
        shutil.rmtree(work, ignore_errors=True)
        raise RunFailedError(f"the run ended (flwr run exit code {code}) without {summary}; "
                             f"see {out / 'server.log'}; SuperLink log tail:\n" + "\n".join(tail))
    shutil.rmtree(work, ignore_errors=True)
    return json.loads(summary.read_text())
