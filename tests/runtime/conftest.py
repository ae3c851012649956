"""Runtime tests run under trio's MockClock, so a 90-second ACW takes no real time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import trio.testing
from runtime_harness import Running

from acwd.core.config import Settings
from acwd.runtime.node import Node

MEMORY = {"path": ":memory:", "commit_interval_ms": 0}


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


def settings(**data: Any) -> Settings:
    return Settings.from_dict(data)


@pytest.fixture
def config() -> dict[str, Any]:
    return {}


@pytest.fixture
async def running(config: dict[str, Any]) -> AsyncIterator[Running]:
    node = Node(Settings.from_dict({"journal": MEMORY, **config}))
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        yield Running(node)
        tg.cancel_scope.cancel()
