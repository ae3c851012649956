"""The wire protocol against a real daemon: session methods, error codes, and bad input.

Bad input is sent over a raw socket. For each, the test checks the precise error, that only the
offending connection is closed where PROTOCOL.md says so, and that another connection still works
and sees the state as it was.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import msgpack
import pytest
from e2e_support import (
    HELLO_TIMEOUT_S,
    MAX_MESSAGE_BYTES,
    QUIET_QUEUE,
    Daemon,
    Raw,
    raw,
    wait_event,
)

from acwd.client import Client, ConnectionLost, RpcError

Connect = Callable[..., Awaitable[Client]]


# -- session methods ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_hello_and_ping(connect: Connect) -> None:
    client = await connect(client="e2e")
    info = await client.hello(client="e2e-again")
    assert info["server"] == "acwd" and info["protocol"] == 1 and info["version"]
    assert info["role"] == "admin" and info["principal"]  # no tokens: loopback admin
    before = time.time()
    pong = await client.ping()
    assert abs(pong["time"] - before) < 5


@pytest.mark.anyio
async def test_subscribe_and_unsubscribe(admin: Client, new_queue: Any, uid: Any) -> None:
    queue, other = new_queue("long"), new_queue("long")
    subscribed = await admin.subscribe(["work", "queue"], queue=queue)
    assert sorted(subscribed["subscribed"]) == ["queue", "work"]
    w1 = uid("w")
    await admin.work_submit(other, work_id=uid("w"))  # another queue: filtered out
    await admin.work_submit(queue, work_id=w1)
    event = await wait_event(admin, "work.queued")
    assert event["work_id"] == w1 and event["queue"] == queue

    left = await admin.unsubscribe(["work", "queue"])
    assert left["subscribed"] == []
    w2 = uid("w")
    await admin.work_submit(queue, work_id=w2)
    await admin.ping()  # answered after the submit's events would have been sent
    with anyio.move_on_after(0.2):
        async for event in admin.events():
            pytest.fail(f"an event arrived after unsubscribe: {event}")
    with pytest.raises(RpcError) as bad:
        await admin.subscribe(["gossip"])
    assert bad.value.code == "invalid_params" and bad.value.data["argument"] == "topics"


@pytest.mark.anyio
async def test_pipelined_calls_over_one_connection(admin: Client, uid: Any) -> None:
    """Many calls in flight at once: every answer reaches its own caller."""
    ids = [uid("nobody") for _ in range(200)]
    answers: dict[str, str] = {}

    async def ask(agent_id: str) -> None:
        try:
            await admin.agent_get(agent_id)
        except RpcError as exc:
            answers[agent_id] = exc.data["agent_id"]

    async with anyio.create_task_group() as tg:
        for agent_id in ids:
            tg.start_soon(ask, agent_id)
    assert answers == {agent_id: agent_id for agent_id in ids}


@pytest.mark.anyio
async def test_lists_queues_and_agents(
    connect: Connect, admin: Client, new_queue: Any, uid: Any
) -> None:
    queue, alice = new_queue("forced"), uid("alice")
    agent = await connect()
    await agent.agent_login(alice, queues=[queue], status="away")
    queues = {q["queue"]: q for q in await admin.queue_list()}
    assert queues[queue]["resolved"]["acw_mode"] == "forced"
    assert queues[queue]["resolved"]["acw_seconds"] == 0.5
    listed = await admin.agent_list(queue=queue)
    assert [a["agent_id"] for a in listed] == [alice]
    assert alice in {a["agent_id"] for a in await admin.agent_list(state="away")}
    assert alice not in {a["agent_id"] for a in await admin.agent_list(state="available")}
    stats = await admin.queue_stats(queue)
    assert stats["queue"] == queue and stats["agents"]["away"] == 1


# -- error codes ----------------------------------------------------------------------------------


async def refused(call: Awaitable[Any]) -> RpcError:
    with pytest.raises(RpcError) as error:
        await call
    assert error.value.message, "every error carries a sentence"
    return error.value


@pytest.mark.anyio
async def test_error_codes(connect: Connect, admin: Client, new_queue: Any, uid: Any) -> None:
    queue, alice, w1 = new_queue("long"), uid("alice"), uid("w")

    error = await refused(admin.call("agent.teleport", agent_id=alice))
    assert error.code == "method_not_found" and error.data["method"] == "agent.teleport"
    error = await refused(admin.call("agent.login", agent_id=alice, colour="red"))
    assert error.code == "invalid_params" and error.data["argument"] == "colour"
    error = await refused(admin.call("agent.login", agent_id=12))
    assert error.code == "invalid_params" and error.data["argument"] == "agent_id"
    error = await refused(admin.call("agent.login", agent_id="bad id!"))
    assert error.code == "invalid_params"
    error = await refused(admin.call("agent.set_status", agent_id=alice, status="asleep"))
    assert error.code == "invalid_params" and error.data["argument"] == "status"
    error = await refused(admin.call("work.submit", queue=queue, priority="high"))
    assert error.code == "invalid_params" and error.data["argument"] == "priority"
    error = await refused(admin.call("work.submit"))
    assert error.code == "invalid_params" and error.data["argument"] == "queue"

    assert (await refused(admin.agent_get(alice))).code == "not_found"
    assert (await refused(admin.work_get(w1))).code == "not_found"
    assert (await refused(admin.queue_stats("no-such-queue"))).code == "not_found"
    assert (await refused(admin.work_submit("no-such-queue"))).code == "not_found"

    agent = await connect()
    await agent.agent_login(alice, queues=[queue])
    await admin.work_submit(queue, work_id=w1, attributes={"first": True})
    error = await refused(admin.work_submit(queue, work_id=w1, attributes={"first": False}))
    assert error.code == "conflict"
    assert (await admin.work_get(w1))["attributes"] == {"first": True}  # the first one stays

    await wait_event(agent, "work.offered", work_id=w1)
    error = await refused(agent.work_end(w1))  # offered, not active
    assert error.code == "invalid_state"
    error = await refused(agent.acw_complete(w1))
    assert error.code == "invalid_state"
    await agent.work_accept(w1)
    error = await refused(agent.work_accept(w1))
    assert error.code == "invalid_state"
    error = await refused(admin.work_cancel(w1))  # only while queued or offered
    assert error.code == "invalid_state"
    await agent.work_end(w1)
    error = await refused(agent.work_end(w1))  # a leg ends once
    assert error.code == "invalid_state" and error.data
    error = await refused(agent.acw_request(w1))  # only while active
    assert error.code == "invalid_state"
    assert (await admin.agent_get(alice))["state"] == "acw"  # the refusals changed nothing


@pytest.mark.anyio
async def test_an_invalid_request_leaves_the_connection_open(admin: Client) -> None:
    for _ in range(3):
        with pytest.raises(RpcError):
            await admin.call("no.such.method")
        assert "time" in await admin.ping()


# -- bad input over a raw socket ------------------------------------------------------------------


@pytest.fixture
def witness(daemon: Daemon, uid: Any) -> Iterator[tuple[Raw, str]]:
    """A second, well-behaved connection with an agent logged in; its state must not change."""
    agent_id = uid("witness")
    with raw(daemon.address) as conn:
        reply = conn.call(1, "agent.login", agent_id=agent_id, queues=[QUIET_QUEUE])
        assert reply[2] is None
        yield conn, agent_id


def assert_untouched(witness: tuple[Raw, str]) -> None:
    conn, agent_id = witness
    reply = conn.call(2, "agent.get", agent_id=agent_id)
    assert reply[2] is None, reply
    view = reply[3]
    assert (view["state"], view["connected"], view["legs"]) == ("available", True, [])


def protocol_error(conn: Raw, msgid: int, fragment: str) -> None:
    """The next message is a ``protocol`` error for ``msgid``, then the server closes."""
    message = conn.receive()
    assert message is not None, "closed without an error response"
    kind, got_msgid, error, result = message
    assert (kind, got_msgid, result) == (1, msgid, None)
    assert error["code"] == "protocol"
    assert fragment in error["message"], error["message"]
    assert conn.closed_by_server()


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


BAD_MESSAGES: dict[str, tuple[bytes, int, str]] = {
    # name: (bytes, the msgid the error must carry, part of its message)
    "never-used byte": (b"\xc1\x00", 0, "not MessagePack"),
    "not an array": (msgpack.packb("hello"), 0, "must be an array"),
    "three items": (msgpack.packb([0, 5, "ping"]), 5, "4 items"),
    "a notification": (msgpack.packb([2, "event", []]), 0, "Notifications"),
    "a response": (msgpack.packb([1, 5, None, None]), 0, "does not send responses"),
    "msgid a string": (msgpack.packb([0, "5", "ping", []]), 0, "msgid"),
    "msgid over uint32": (msgpack.packb([0, 2**32, "ping", []]), 0, "msgid"),
    "method a number": (msgpack.packb([0, 6, 7, []]), 6, "method must be a string"),
    "params a map": (msgpack.packb([0, 7, "ping", {}]), 7, "params must be an array"),
    "params positional": (msgpack.packb([0, 8, "ping", ["a", 1]]), 8, "params must be []"),
    "binary string": (
        msgpack.packb([0, 9, "agent.get", [{"agent_id": b"alice"}]], use_bin_type=True),
        9,
        "Binary",
    ),
    "integer map key": (msgpack.packb([0, 10, "ping", [{1: 2}]]), 10, "Map keys"),
    "extension type": (
        msgpack.packb([0, 11, "ping", [{"x": msgpack.ExtType(1, b"z")}]]),
        11,
        "extension",
    ),
    "too deep": (msgpack.packb([0, 12, "ping", [{"x": nested(40)}]]), 12, "nested deeper"),
    "too many keys": (
        msgpack.packb([0, 13, "ping", [{str(i): i for i in range(1025)}]]),
        13,
        "more than 1024 keys",
    ),
    "too many items": (
        msgpack.packb([0, 14, "ping", [{"x": list(range(10_001))}]]),
        14,
        "more than 10000 items",
    ),
    "over max_message_bytes": (
        msgpack.packb([0, 15, "ping", [{"x": "a" * (MAX_MESSAGE_BYTES + 10)}]]),
        15,
        f"larger than {MAX_MESSAGE_BYTES} bytes",
    ),
    "invalid UTF-8": (b"\x94\x00\x10\xa4pi\xffg\x90", 16, "UTF-8"),
}


@pytest.mark.parametrize("name", BAD_MESSAGES)
def test_bad_message_closes_only_its_connection(
    name: str, daemon: Daemon, witness: tuple[Raw, str]
) -> None:
    data, msgid, fragment = BAD_MESSAGES[name]
    with raw(daemon.address) as conn:
        conn.send(data)
        protocol_error(conn, msgid, fragment)
    assert_untouched(witness)


def test_random_bytes(daemon: Daemon, witness: tuple[Raw, str]) -> None:
    """Whatever garbage comes, the answer is at most one error and a close; never a crash.

    (Random bytes that happen to be the start of a valid message get no answer: the server
    waits for the rest, and closes at our end of stream.)
    """
    rng = random.Random(1)
    for _ in range(25):
        with raw(daemon.address) as conn:
            conn.send(rng.randbytes(rng.randrange(1, 300)))
            conn.sock.shutdown(socket.SHUT_WR)
            message = conn.receive()
            if message is not None:
                assert message[0] == 1 and message[2]["code"] == "protocol", message
                assert conn.closed_by_server()
    with raw(daemon.address) as conn:
        conn.send(os.urandom(4096) + b"\xc1" * 8)
        message = conn.receive()
        assert message is None or message[2]["code"] == "protocol"
    assert_untouched(witness)


def test_truncated_message_then_close(daemon: Daemon, witness: tuple[Raw, str]) -> None:
    _, agent_id = witness
    whole = msgpack.packb([0, 3, "agent.set_status", [{"agent_id": agent_id, "status": "away"}]])
    with raw(daemon.address) as conn:
        conn.send(whole[: len(whole) // 2])
        conn.sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            conn.receive()  # half a message: the server waits for the rest
    assert_untouched(witness)  # the half-sent status change did not happen


def test_request_answered_before_a_protocol_error(daemon: Daemon) -> None:
    with raw(daemon.address) as conn:
        reply = conn.call(41, "ping")
        assert reply[2] is None and "time" in reply[3]
        conn.send(b"\xc1")
        protocol_error(conn, 0, "not MessagePack")


def test_a_connection_without_hello_or_requests_is_closed(daemon: Daemon) -> None:
    with raw(daemon.address) as conn:
        started = time.monotonic()
        assert conn.closed_by_server()
        assert time.monotonic() - started >= HELLO_TIMEOUT_S - 0.1


@pytest.mark.anyio
async def test_client_sees_the_protocol_close_as_connection_lost(daemon: Daemon) -> None:
    client = await Client.connect("127.0.0.1", daemon.port)
    async with client:
        stream = client._stream  # the raw stream: send what the client itself never would
        await stream.send(b"\xc1")
        with pytest.raises(ConnectionLost) as lost:
            await client.ping()
        assert "protocol" in str(lost.value)
        with pytest.raises(ConnectionLost):
            await client.ping()


@pytest.mark.anyio
async def test_config_reload_applies_a_good_file_and_refuses_a_bad_one(tmp_path: Path) -> None:
    config = {"queues": {"sales": {"acw_seconds": 45.0}}}
    own = Daemon(config, tmp_path)
    try:
        async with await Client.connect("127.0.0.1", own.port) as client:
            text = own.config_path.read_text()
            own.config_path.write_text(text.replace("acw_seconds = 45.0", "acw_seconds = 15.0"))
            reloaded = await client.config_reload()
            assert reloaded["reloaded"] is True and reloaded["changes"]
            sales = {q["queue"]: q for q in await client.queue_list()}["sales"]
            assert sales["resolved"]["acw_seconds"] == 15.0

            own.config_path.write_text(text.replace("acw_seconds = 45.0", "acw_secs = 5.0"))
            error = await refused(client.config_reload())
            assert error.code == "invalid_state" and "acw_secs" in error.message
            sales = {q["queue"]: q for q in await client.queue_list()}["sales"]
            assert sales["resolved"]["acw_seconds"] == 15.0  # the bad file changed nothing
    finally:
        assert own.stop() == 0
    assert any(entry["event"] == "configuration reloaded" for entry in own.log())
