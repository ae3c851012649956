"""acwd with the duration of every journal transaction recorded (``ACWD_BENCH_JOURNAL_LOG``).

A request that changed something is answered only after its group commit; while a commit is
slow, every such request waits, the connection's request slots fill up and the server stops
reading that connection, so even requests that need no commit (and the routing they would
trigger) wait behind it. This records the SQLite transactions (in the worker thread) to show it.

    ACWD_BENCH_JOURNAL_LOG=/tmp/j.json python -m benchmarks.load --loops asyncio \\
        --daemon-cmd ".venv/bin/python benchmarks/experiments/journal_commits.py"
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from typing import Any

import acwd.runtime.journal as journal
from acwd.cli import main

_commits: list[tuple[float, float, int]] = []  # (wall time at start, seconds, rows)
_write = journal.Journal._write


def _timed_write(self: Any, *rows: Any) -> None:
    started, wall = time.perf_counter(), time.time()
    try:
        _write(self, *rows)
    finally:
        _commits.append((wall, time.perf_counter() - started, sum(len(r) for r in rows)))


def _dump(path: str) -> None:
    durations = sorted(c[1] for c in _commits)
    n = len(durations)
    with open(path, "w") as f:
        json.dump(
            {
                "commits": n,
                "p50_ms": durations[n // 2] * 1000 if n else None,
                "p99_ms": durations[int(n * 0.99)] * 1000 if n else None,
                "max_ms": durations[-1] * 1000 if n else None,
                "over_50ms": [c for c in _commits if c[1] > 0.05],
            },
            f,
        )


if __name__ == "__main__":
    path = os.environ.get("ACWD_BENCH_JOURNAL_LOG")
    if path:
        journal.Journal._write = _timed_write  # type: ignore[method-assign]
        atexit.register(_dump, path)
    sys.exit(main())
