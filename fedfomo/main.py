"""Entry point: ``python -m fedfomo.main [overrides]`` (Hydra; ``--multirun`` for sweeps).

Composes and validates the configuration, checks the data and the partition, claims the run
folder, saves ``config.yaml`` and ``status.json``, and runs the experiment through ``flwr run``
on a SuperLink of its own (:func:`fedfomo.launch.run_app`), which it stops afterwards.
``python -m fedfomo.main resume=RUN_DIR`` continues an interrupted or failed run from its last
checkpoint with its saved configuration.

Exit codes: 0 done, 1 the run failed, 2 bad input (one line, before any work), 130 / 143
interrupted by SIGINT / SIGTERM (one line with the resume command).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fedfomo.config import ConfigError
from fedfomo.data import DataNotFoundError
from fedfomo.launch import Interrupted, RunFailedError, run_app
from fedfomo.runconfig import check_moved_keys, conf_dir
from fedfomo.runs import RunFolderError, discard_if_empty, read_status, resume_command


def guarded(run: Callable[[], object], out: str | Path) -> int:
    """Run ``run``; map bad input, failures and signals to one line on stderr and an exit code."""
    try:
        run()
    except (ConfigError, DataNotFoundError, RunFolderError) as err:
        print(f"error: {err}", file=sys.stderr)
        discard_if_empty(out)
        return 2
    except Interrupted as stop:
        status = read_status(out) or {}
        print(f"interrupted by {stop} after round {status.get('round', 0)} of {status.get('num_rounds', '?')}; "
              f"resume with: {resume_command(out)}", file=sys.stderr)
        return 128 + stop.signum
    except RunFailedError as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    """Run one experiment into the Hydra run directory (exit codes: see the module docstring)."""
    hc = HydraConfig.get()
    out = hc.runtime.output_dir
    code = guarded(lambda: run_app(cfg, list(hc.overrides.task), out), out)
    if code:
        sys.exit(code)


def resume(run_dir: str, extra: list[str]) -> int:
    """Continue the run in ``run_dir`` with its saved configuration; ``extra`` overrides must not change it."""
    from fedfomo.runconfig import resumed_config

    def go() -> None:
        cfg, overrides = resumed_config(run_dir, extra)
        run_app(cfg, overrides, run_dir, resume=True)

    return guarded(go, run_dir)


def entry() -> None:
    """Refuse moved keys with one line before Hydra parses the command line; ``resume=DIR`` bypasses Hydra."""
    args = sys.argv[1:]
    try:
        check_moved_keys([a for a in args if "=" in a and not a.startswith("-")])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    given = [a for a in args if a.startswith("resume=")]
    if given:
        sys.exit(resume(given[-1].split("=", 1)[1], [a for a in args if not a.startswith("resume=")]))
    main()


if __name__ == "__main__":
    entry()
