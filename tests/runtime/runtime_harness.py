"""What runtime tests share: a running node, the events it published, and virtual-time helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from acwd.core.config import Settings
from acwd.core.events import Event
from acwd.runtime.node import Node

EPS = 1e-6  # float slack for clock readings (the node's clock is Unix seconds: ~2e-7 resolution)
MS = 0.001  # "one millisecond before / after a deadline"
MEMORY = {"path": ":memory:", "commit_interval_ms": 0}  # an in-memory journal, written inline


class Running:
    """A node under test with every event it published."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.events: list[Event] = []
        self.lateness: list[tuple[str, float]] = []
        node.observers.append(self.events.append)
        node.lateness_observers.append(lambda kind, s: self.lateness.append((kind, s)))

    def types(self) -> list[str]:
        return [e.type for e in self.events]

    def of(self, type_: str, **match: Any) -> list[Any]:
        """Published events of one type whose attributes equal ``match``."""
        return [
            e
            for e in self.events
            if e.type == type_ and all(getattr(e, k) == v for k, v in match.items())
        ]

    def now(self) -> float:
        return self.node.clock.now()

    async def settle(self) -> None:
        """Let every actor finish what is in its mailbox (virtual time does not move)."""
        for _ in range(20):
            await anyio.sleep(0)

    async def sleep_until(self, at: float) -> None:
        """Advance virtual time to the clock reading ``at``, then settle."""
        delay = at - self.now()
        if delay > 0:
            await anyio.sleep(delay)
        await self.settle()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)
        await self.settle()


@asynccontextmanager
async def start_node(config: dict[str, Any]) -> AsyncIterator[Running]:
    """Run a node over ``Settings.from_dict(config)`` (with an in-memory journal unless the
    config names one) for the duration of the block."""
    node = Node(Settings.from_dict({"journal": MEMORY, **config}))
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        try:
            yield Running(node)
        finally:
            tg.cancel_scope.cancel()


class LogRecorder:
    """Stands in for a structlog logger: keeps ``(level, event, fields)`` for every call.

    Tests patch it over a module's logger rather than relying on ``structlog.testing``, which
    cannot see loggers that were cached after ``structlog.configure(cache_logger_on_first_use)``.
    """

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def _log(self, level: str) -> Any:
        def log(event: str, **fields: Any) -> None:
            self.records.append((level, event, fields))

        return log

    def __getattr__(self, level: str) -> Any:
        if level.startswith("_"):
            raise AttributeError(level)
        return self._log(level)

    def bind(self, **_: Any) -> LogRecorder:
        return self


async def connect(run: Running, agent_id: str, work_id: str, queue: str = "default") -> None:
    """Submit ``work_id``, check that it went to ``agent_id``, and accept it."""
    await run.node.submit(work_id, queue)
    await run.settle()
    view = run.node.work_view(work_id)
    assert (view.state, view.agent_id) == ("offered", agent_id), view
    await run.node.accept(work_id, agent_id)
