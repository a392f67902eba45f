"""The benchmarks' bad-input checks (issue 12): a setting that cannot run says so in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=120)


def test_more_models_than_clients_is_one_line():
    out = _run("round_time.py", "--clients", "3", "--num-models", "5")
    assert out.returncode != 0
    assert out.stderr.strip() == "error: --num-models=5 is more than --clients=3 can offer; allowed: 1..3"


def test_bf16_without_native_support_is_one_line(monkeypatch):
    sys.path.insert(0, str(BENCH))
    try:
        import round_time
    finally:
        sys.path.remove(str(BENCH))
    monkeypatch.setattr("fedfomo.config.bf16_supported", lambda gpu=False: False)
    for argv in (["--set", "sim.bf16=true"], ["--floor-bf16"]):
        args = round_time.parser(multi=True)
        args.add_argument("--method", default="fedfomo")
        args.add_argument("--set", action="append", default=[])
        with pytest.raises(SystemExit) as err:
            round_time.check(args.parse_args(argv))
        msg = str(err.value)
        assert msg.startswith("error: sim.bf16=true needs native bfloat16") and "\n" not in msg
        assert msg.endswith("allowed here: false")
