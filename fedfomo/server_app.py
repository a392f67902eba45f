"""Flower ServerApp of every method: ``flwr run`` (simulation or deployment) enters here.

The configuration comes from the run config (:mod:`fedfomo.runconfig`); the round loop is
:func:`fedfomo.server.run_federation`.
"""

from __future__ import annotations

import logging
import os
import sys

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedfomo.config import ConfigError, check_runtime
from fedfomo.data import DataNotFoundError
from fedfomo.experiment import build_experiment
from fedfomo.logs import setup_logging
from fedfomo.runconfig import experiment_config, run_dir
from fedfomo.runs import now, write_status
from fedfomo.server import is_simulation, run_federation

os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # Ray's FutureWarning on CPU-only runs
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Compose the configuration, build the experiment and run it; bad settings end the run with one line."""
    setup_logging()
    log = logging.getLogger("fedfomo")
    try:
        cfg = experiment_config(context.run_config)
        out = run_dir(context.run_config, cfg)
        check_runtime(cfg, simulation=is_simulation(grid))
        exp = build_experiment(cfg)
    except (ConfigError, DataNotFoundError) as err:
        log.error("error: %s", err)
        sys.exit(2)
    setup_logging(out / "server.log")
    if exp.dataset.test_split != "official":  # every number of this run is on held-out training images
        log.info("test split: %s; the official test file is not read (%d train, %d test images)",
                 exp.dataset.test_split, len(exp.dataset.train_y), len(exp.dataset.test_y))
    try:
        run_federation(grid, exp, out, progress=bool(cfg.sim.progress))
    except RuntimeError as err:  # missing nodes, every client failing, a timeout: one line, the run ends
        log.error("error: %s", err)
        write_status(out, status="failed", reason=str(err).splitlines()[0], ended=now())
        sys.exit(1)
