"""acwd with its garbage-collector pauses recorded, and optionally frozen out.

- ``ACWD_BENCH_GC_LOG=PATH``: at exit, write every collection longer than 5 ms (generation,
  seconds, wall time) and totals per generation to PATH as JSON.
- ``ACWD_BENCH_GC_FREEZE_EVERY=S``: every S seconds, ``gc.freeze()``: objects alive then (agents,
  actors, settled items) move to the permanent generation and full collections stop scanning
  them again and again.

    ACWD_BENCH_GC_LOG=/tmp/gc.json ACWD_BENCH_GC_FREEZE_EVERY=2 python -m benchmarks.load \\
        --loops asyncio --daemon-cmd ".venv/bin/python benchmarks/experiments/gc_pauses.py"
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import sys
import threading
import time
from typing import Any

from acwd.cli import main

_pauses: list[tuple[int, float, float]] = []
_started = [0.0]


def _watch(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        _pauses.append((info["generation"], time.perf_counter() - _started[0], time.time()))


def _dump(path: str) -> None:
    totals: dict[int, dict[str, float]] = {}
    for generation, seconds, _ in _pauses:
        t = totals.setdefault(generation, {"count": 0, "seconds": 0.0, "max_s": 0.0})
        t["count"] += 1
        t["seconds"] += seconds
        t["max_s"] = max(t["max_s"], seconds)
    long = [p for p in _pauses if p[1] > 0.005]
    with open(path, "w") as f:
        json.dump({"by_generation": totals, "over_5ms": long}, f)


def _freeze_every(seconds: float) -> None:
    while True:
        time.sleep(seconds)
        gc.freeze()


if __name__ == "__main__":
    log = os.environ.get("ACWD_BENCH_GC_LOG")
    if log:
        gc.callbacks.append(_watch)
        atexit.register(_dump, log)
    every = float(os.environ.get("ACWD_BENCH_GC_FREEZE_EVERY", "0") or 0)
    if every > 0:
        threading.Thread(target=_freeze_every, args=(every,), daemon=True).start()
    sys.exit(main())
