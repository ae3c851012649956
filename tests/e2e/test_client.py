"""acwd.client on both anyio backends: shared reading, cancellation, events, connection loss."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import msgpack
import pytest
from e2e_support import QUIET_QUEUE, Daemon

from acwd.client import Client, ConnectionLost

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]

Connect = Callable[..., Awaitable[Client]]


async def test_calls_while_another_task_waits_for_events(
    admin: Client, new_queue: Any, uid: Any
) -> None:
    """The ``agent login --hold`` shape: one task in events(), others calling meanwhile."""
    queue = new_queue("long")
    await admin.subscribe(["work"], queue=queue)
    ids = [uid("w") for _ in range(20)]
    seen: list[str] = []

    async def listen() -> None:
        async for event in admin.events():
            seen.append(event["work_id"])
            if len(seen) == len(ids):
                return

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(listen)
            for work_id in ids:
                view = await admin.work_submit(queue, work_id=work_id)
                assert view["work_id"] == work_id
    assert seen == ids


async def test_a_cancelled_reader_hands_the_reading_over() -> None:
    """The task reading for everybody is cancelled while others wait: one of them reads on."""
    async with fake_server(answer_after=0.2) as port, await Client.connect(port=port) as client:
        answers: list[Any] = []
        async with anyio.create_task_group() as tg:
            reader = anyio.CancelScope()

            async def read_events() -> None:
                with reader:
                    async for _ in client.events():
                        pass

            tg.start_soon(read_events)
            await anyio.sleep(0.02)  # it is now the reader
            with anyio.fail_after(2):
                async with anyio.create_task_group() as callers:
                    for _ in range(5):
                        callers.start_soon(_append, answers, client.ping())
                    await anyio.sleep(0.02)  # all five sent, waiting on the reader
                    reader.cancel()
        assert answers == [{"time": 1.0}] * 5


async def _append(answers: list[Any], call: Awaitable[Any]) -> None:
    answers.append(await call)


async def test_event_buffer_is_bounded(daemon: Daemon, new_queue: Any, uid: Any) -> None:
    queue = new_queue("long")
    async with await Client.connect("127.0.0.1", daemon.port, event_buffer=3) as client:
        await client.subscribe(["work"], queue=queue)
        ids = [uid("w") for _ in range(7)]
        for work_id in ids:
            await client.work_submit(queue, work_id=work_id)
        await client.ping()  # every event before this answer has been read and buffered
        assert client.events_dropped == 4
        kept = []
        with anyio.move_on_after(0.2):
            async for event in client.events():
                kept.append(event["work_id"])
        assert kept == ids[-3:]  # the oldest went first


async def test_events_end_when_the_client_closes(admin: Client) -> None:
    await admin.agent_login("client-closer", queues=[QUIET_QUEUE])
    received = []

    async def listen() -> None:
        async for event in admin.events():
            received.append(event)

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(listen)
            await anyio.sleep(0.05)
            await admin.aclose()  # ends listen() cleanly: no error, the loop just stops
    assert admin.closed
    with pytest.raises(ConnectionLost):
        await admin.ping()


async def test_pending_calls_fail_when_the_server_goes() -> None:
    """A server that says hello, then drops the connection while calls are in flight."""
    async with fake_server(hang_up=True) as port:
        client = await Client.connect("127.0.0.1", port)
        assert client.server_info["server"] == "fake"
        failures: list[BaseException] = []

        async def call() -> None:
            try:
                await client.ping()
            except ConnectionLost as exc:
                failures.append(exc)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as callers:
                for _ in range(10):
                    callers.start_soon(call)
        assert len(failures) == 10  # every caller hears of it, none hangs
        with pytest.raises(ConnectionLost):
            await client.ping()
        await client.aclose()


@asynccontextmanager
async def fake_server(answer_after: float = 0.0, hang_up: bool = False) -> AsyncIterator[int]:
    """A msgpack-RPC server on a free port: answers hello at once, other requests with
    ``{"time": 1.0}`` after ``answer_after`` seconds, or hangs up on them (``hang_up``)."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")

    async def serve(stream: anyio.abc.SocketStream) -> None:
        unpacker = msgpack.Unpacker(raw=False)
        sending = anyio.Lock()
        async with stream, anyio.create_task_group() as tg:

            async def answer(msgid: int, delay: float, result: Any) -> None:
                await anyio.sleep(delay)
                async with sending:
                    await stream.send(msgpack.packb([1, msgid, None, result]))

            while True:
                try:
                    unpacker.feed(await stream.receive())
                except anyio.EndOfStream:
                    return
                for _, msgid, method, _ in unpacker:
                    if method == "hello":
                        tg.start_soon(answer, msgid, 0, {"server": "fake", "protocol": 1})
                    elif hang_up:
                        await anyio.sleep(0.05)  # let more requests pile up, then hang up
                        tg.cancel_scope.cancel()
                        return
                    else:
                        tg.start_soon(answer, msgid, answer_after, {"time": 1.0})

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        yield listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.cancel_scope.cancel()
