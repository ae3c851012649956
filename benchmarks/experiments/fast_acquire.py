"""acwd with its per-connection request slots taken without yielding (anyio fast_acquire).

``Connection._read`` awaits ``self._slots.acquire()`` for every request; anyio's semaphore
yields to the event loop on every acquire, so each pipelined request is handled, and its answer
written with its own ``send()``, before the next one is even started. With
``fast_acquire=True`` a batch of requests read at once is started at once and the answers leave
together.

    python -m benchmarks.load --loops asyncio \\
        --daemon-cmd ".venv/bin/python benchmarks/experiments/fast_acquire.py"
"""

from __future__ import annotations

import sys
from typing import Any

import anyio

import acwd.server as server
from acwd.cli import main

_init = server.Connection.__init__


def _patched_init(self: Any, *args: Any, **kwargs: Any) -> None:
    _init(self, *args, **kwargs)
    self._slots = anyio.Semaphore(server.MAX_INFLIGHT, fast_acquire=True)


server.Connection.__init__ = _patched_init  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main())
