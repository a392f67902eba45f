"""Logging of the ServerApp process: one format, to the console (streamed by ``flwr run``) and the run folder."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


def setup_logging(log_file: Path | None = None, level: int = logging.INFO) -> None:
    """Send the ``fedfomo`` logger to stdout (once) and, if given, to ``log_file`` (appended)."""
    logger = logging.getLogger("fedfomo")
    logger.setLevel(level)
    logger.propagate = False
    fmt = logging.Formatter(FORMAT)
    if not any(getattr(h, "_fedfomo", None) == "console" for h in logger.handlers):
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(fmt)
        console._fedfomo = "console"  # type: ignore[attr-defined]
        logger.addHandler(console)
    if log_file is not None:
        key = str(Path(log_file).resolve())
        if not any(getattr(h, "_fedfomo", None) == key for h in logger.handlers):
            Path(log_file).parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(log_file)
            handler.setFormatter(fmt)
            handler._fedfomo = key  # type: ignore[attr-defined]
            logger.addHandler(handler)
