"""End-to-end fixtures: one real ``acwd serve`` process per session, driven over loopback TCP.

Tests share the daemon, so each takes fresh queues (``new_queue(mode)``) and fresh agent and work
ids (``uid``) and logs its agents in to its own queues only: nothing one test leaves behind can be
offered to another's agents. Timers are real here, so the ACW and offer timers under test are
short (0.3-1 s).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
from e2e_support import MAIN_CONFIG, MODES, QUEUES_PER_MODE, Daemon

from acwd.client import Client


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The shared daemon; at the end it must stop cleanly on SIGTERM and have logged no error."""
    running = Daemon(MAIN_CONFIG, tmp_path_factory.mktemp("acwd"))
    yield running
    status = running.stop()
    assert status == 0, f"acwd exited with status {status}:\n" + "".join(running.lines[-30:])
    assert running.problems() == []


@pytest.fixture(autouse=True)
def _daemon_survives(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever a test sent, the shared daemon must still be running after it."""
    yield
    if "daemon" in request.fixturenames:
        running: Daemon = request.getfixturevalue("daemon")
        assert running.proc.poll() is None, "acwd died:\n" + "".join(running.lines[-40:])


_queue_numbers = {mode: itertools.count() for mode in MODES}
_uids = itertools.count(1)


@pytest.fixture
def new_queue() -> Callable[[str], str]:
    """A queue of the given mode that no other test uses."""

    def take(mode: str) -> str:
        n = next(_queue_numbers[mode])
        assert n < QUEUES_PER_MODE, f"raise QUEUES_PER_MODE: more than {n} tests use {mode}"
        return f"{mode}{n}"

    return take


@pytest.fixture
def uid() -> Callable[[str], str]:
    """An id unique in the session: ``uid("alice")`` -> ``alice-17``."""
    return lambda name: f"{name}-{next(_uids)}"


@pytest.fixture
async def connect(daemon: Daemon) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """Open clients to the shared daemon; all are closed when the test ends."""
    async with AsyncExitStack() as stack:

        async def open_client(**kwargs: Any) -> Client:
            return await stack.enter_async_context(
                await Client.connect("127.0.0.1", daemon.port, **kwargs)
            )

        yield open_client


@pytest.fixture
async def admin(connect: Callable[..., Awaitable[Client]]) -> Client:
    """A connection with no agent bound (the admin role: no tokens configured)."""
    return await connect()
