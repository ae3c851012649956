"""Runtime tests run under trio's MockClock, so a 90-second ACW takes no real time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio.testing
from runtime_harness import Running, start_node

from acwd.core.config import Settings


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


def settings(**data: Any) -> Settings:
    return Settings.from_dict(data)


@pytest.fixture
def config() -> dict[str, Any]:
    """The node's configuration; override it in a module or parametrize it in a test."""
    return {}


@pytest.fixture
async def running(config: dict[str, Any]) -> AsyncIterator[Running]:
    async with start_node(config) as run:
        yield run
