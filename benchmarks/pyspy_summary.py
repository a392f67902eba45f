"""Summarize a ``py-spy record -f raw`` profile: share of samples in which each frame appears.

Record and summarize::

    py-spy record -p PID -d 20 -r 50 -f raw -o prof.txt --nonblocking
    python benchmarks/pyspy_summary.py prof.txt 40
"""

from __future__ import annotations

import collections
import sys


def summarize(path: str, top: int) -> list[tuple[float, str]]:
    """(percent of samples, frame) of the ``top`` frames seen in most samples (inclusive time)."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, n = line.rsplit(" ", 1)
            total += int(n)
            for frame in set(stack.split(";")):
                counts[frame] += int(n)
    return [(100 * n / max(1, total), frame) for frame, n in counts.most_common(top)]


if __name__ == "__main__":
    for pct, frame in summarize(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 40):
        print(f"{pct:5.1f}% {frame[:140]}")
