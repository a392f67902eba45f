"""A resumable queue of runs: ``python -m fedfomo.queue DIR NAME_TEMPLATE [overrides...]``.

The overrides are Hydra's (``method=fedfomo,fedavg seed=0,1,2``): their comma lists are
expanded into the grid of runs, as ``--multirun`` does. Each run goes into ``DIR/NAME``, where
``NAME`` is ``NAME_TEMPLATE`` formatted with the run's values (keys with ``.`` written as ``_``,
e.g. ``{method}_sigma{dp_noise_multiplier}_s{seed}``). Re-running the same queue continues it:
a run whose ``status.json`` says ``completed`` is skipped, one that was interrupted or failed is
resumed from its checkpoint (``resume=``), one still running in another process is left alone,
and the rest start. ``run_experiments.sh`` is built on this.

Exit code: 0 when every run is completed, 1 when one failed (the others still ran), 130 / 143
when the queue was interrupted (the run in progress is marked interrupted and resumes next time).
"""

from __future__ import annotations

import argparse
import itertools
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from fedfomo.launch import processes_with_env
from fedfomo.runs import read_status


def expand(overrides: list[str]) -> list[dict[str, str]]:
    """The grid of runs: one ``{key: value}`` per combination of the overrides' sweep values (Hydra's parser)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    axes = []
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [
            override.get_value_element_as_str()]
        axes.append([(key, v) for v in values])
    return [dict(combo) for combo in itertools.product(*axes)]


def run_name(template: str, values: dict[str, str]) -> str:
    """``template`` formatted with ``values`` (dots in keys become underscores, a leading ``+`` is dropped)."""
    fields = {k.lstrip("+").replace(".", "_"): v for k, v in values.items()}
    try:
        return template.format(**fields)
    except (KeyError, AttributeError, IndexError, ValueError) as err:
        raise SystemExit(f"error: the name template {template!r} cannot be filled ({err}); "
                         f"allowed fields: {', '.join('{' + k + '}' for k in fields)}") from err


def plan(folder: Path) -> str:
    """What to do with a run folder: ``start``, ``resume``, ``skip`` (completed) or ``busy``."""
    status = read_status(folder)
    if status is None:
        return "start"
    if status.get("status") == "completed":
        return "skip"
    home = status.get("flower_home")
    if status.get("status") == "running" and home and processes_with_env("FLWR_HOME", home):
        return "busy"
    return "resume"


def main(argv: list[str] | None = None) -> int:
    """Run (or continue) the queue; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m fedfomo.queue", description=__doc__.splitlines()[0])
    parser.add_argument("dir", help="folder of the queue's runs")
    parser.add_argument("name", help="run folder name template, e.g. '{method}_s{seed}'")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides; comma lists are swept")
    parser.add_argument("--dry-run", action="store_true", help="print every run and what would be done; run nothing")
    args = parser.parse_args(argv)
    jobs = expand(args.overrides)
    base = Path(args.dir)
    failed = []
    child: subprocess.Popen | None = None

    stopped: list[int] = []  # signals the queue got: once one came, no further run starts

    # the run in progress marks itself interrupted; then the queue stops
    def forward(signum: int, frame: FrameType | None) -> None:
        stopped.append(signum)
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    # Ctrl-C reaches the run in progress directly (same process group); the queue waits for it to stop
    signal.signal(signal.SIGINT, lambda signum, frame: stopped.append(signum))
    for k, values in enumerate(jobs, 1):
        folder = base / run_name(args.name, values)
        action = plan(folder)
        print(f"[{k}/{len(jobs)}] {folder}: {action}", flush=True)
        if args.dry_run:
            print("    " + " ".join(f"{key}={value}" for key, value in values.items()), flush=True)
            continue
        if action in ("skip", "busy"):
            continue
        cmd = [sys.executable, "-m", "fedfomo.main"]
        cmd += [f"resume={folder.resolve()}"] if action == "resume" else [
            *(f"{key}={value}" for key, value in values.items()), f"hydra.run.dir={folder}"]
        child = subprocess.Popen(cmd)
        code = child.wait()
        if code in (130, 143) or stopped:  # a run signalled twice may exit with another code: stop all the same
            print(f"queue interrupted at {folder}; run the same command again to continue", flush=True)
            return code if code in (130, 143) else 128 + stopped[0]
        if code:
            failed.append(str(folder))
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)} (status.json says why); "
              f"run the same command again to resume them", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
