"""Summarise a py-spy profile of the daemon (``--format raw``: collapsed stacks) by component.

Only the event-loop thread is counted (worker threads, such as the journal's SQLite writer, run
beside it and are listed apart), and samples where the loop was waiting for IO are left out, so
the shares are of the time the daemon was busy. A sample goes to the first component in
``COMPONENTS`` whose file appears anywhere in its stack: the JSON encoding of an event for the
journal counts as journal, not as core.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

COMPONENTS: list[tuple[str, tuple[str, ...]]] = [
    ("journal: rows and JSON on the loop", ("runtime/journal.py",)),
    ("event log (structlog lines)", ("acwd/eventlog.py", "structlog/")),
    ("metrics", ("acwd/metrics.py", "prometheus_client/")),
    ("event bus → connections", ("runtime/bus.py",)),
    ("protocol: decode, validate, encode", ("protocol/framing.py", "protocol/messages.py")),
    ("server: socket writes", ("Connection._writer",)),
    ("server: request tasks", ("acwd/server.py",)),
    ("core: agent machines, router", ("acwd/core/",)),
    ("runtime: actors, mailboxes", ("acwd/runtime/",)),
]
IDLE_LEAVES = ("select (selectors.py", "poll (", "Condition.wait", "run_forever", "_worker (")


def _frames(line: str) -> tuple[list[str], int]:
    stack, _, count = line.rstrip().rpartition(" ")
    return stack.split(";"), int(count)


def summarise(path: Path, top: int = 15) -> dict[str, Any]:
    components: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    busy = idle = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        frames, count = _frames(line)
        if any("_bootstrap (threading.py" in f for f in frames):
            threads[frames[-1].split(" (")[0]] += count
            continue
        if any(mark in frames[-1] for mark in IDLE_LEAVES):
            idle += count
            continue
        busy += count
        stack = ";".join(frames)
        for name, marks in COMPONENTS:
            if any(mark in stack for mark in marks):
                components[name] += count
                break
        else:
            components["event loop, anyio, asyncio"] += count
        leaves[frames[-1]] += count
    share = {k: v / busy for k, v in components.most_common()} if busy else {}
    return {
        "samples_busy": busy,
        "samples_idle": idle,
        "components": share,
        "top_self": [[k, v / busy] for k, v in leaves.most_common(top)] if busy else [],
        "worker_threads_samples": sum(threads.values()),
    }


def render(summary: dict[str, Any]) -> str:
    lines = [f"busy samples: {summary['samples_busy']} (idle {summary['samples_idle']})"]
    lines += [f"  {v:6.1%}  {k}" for k, v in summary["components"].items()]
    lines.append("  top functions (self time):")
    lines += [f"  {v:6.1%}  {k}" for k, v in summary["top_self"]]
    return "\n".join(lines)


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(name)
        print(render(summarise(Path(name))))
