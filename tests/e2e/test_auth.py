"""Tokens and roles against a daemon configured with ``[[auth.tokens]]`` (still on loopback)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import msgpack
import pytest
from e2e_support import Daemon, raw, sha256, wait_event

from acwd.client import Client, RpcError

TOKENS = {
    "agent": "t-alice-0f3c",
    "integration": "t-crm-77a1",
    "supervisor": "t-sup-19bd",
    "admin": "t-root-c402",
}
CONFIG = {
    "defaults": {"acw_seconds": 60.0},
    "queues": {"support": {"channel": "chat"}},
    "auth": {
        "tokens": [
            {"sha256": sha256(TOKENS["agent"]), "role": "agent", "agent_id": "alice"},
            {"sha256": sha256(TOKENS["integration"]), "role": "integration"},
            {"sha256": sha256(TOKENS["supervisor"]), "role": "supervisor"},
            {"sha256": sha256(TOKENS["admin"]), "role": "admin"},
        ]
    },
}

Connect = Callable[[str], Awaitable[Client]]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    running = Daemon(CONFIG, Path(tmp_path_factory.mktemp("acwd-auth")))
    yield running
    assert running.stop() == 0
    assert running.problems() == []


@pytest.fixture
async def as_role(secured: Daemon) -> AsyncIterator[Connect]:
    async with AsyncExitStack() as stack:

        async def open_client(role: str) -> Client:
            client = await Client.connect("127.0.0.1", secured.port, token=TOKENS[role])
            return await stack.enter_async_context(client)

        yield open_client


def test_calls_before_hello_are_unauthenticated(secured: Daemon) -> None:
    with raw(secured.address) as conn:
        reply = conn.call(1, "queue.list")
        assert reply[2]["code"] == "unauthenticated"
        reply = conn.call(2, "hello", token="not-a-token")
        assert reply[2]["code"] == "unauthenticated"
        reply = conn.call(3, "hello")  # no token at all
        assert reply[2]["code"] == "unauthenticated"
        reply = conn.call(4, "hello", token=TOKENS["integration"])
        assert reply[2] is None and reply[3]["role"] == "integration"
        assert conn.call(5, "queue.list")[2] is None


def test_binary_token_is_a_protocol_error(secured: Daemon) -> None:
    with raw(secured.address) as conn:
        conn.send(msgpack.packb([0, 1, "hello", [{"token": b"t-root-c402"}]], use_bin_type=True))
        message = conn.receive()
        assert message[1] == 1 and message[2]["code"] == "protocol"
        assert conn.closed_by_server()


@pytest.mark.anyio
async def test_bad_token_refuses_the_connection(secured: Daemon) -> None:
    with pytest.raises(RpcError) as refused:
        await Client.connect("127.0.0.1", secured.port, token="wrong")
    assert refused.value.code == "unauthenticated"


@pytest.mark.anyio
async def test_roles(as_role: Connect) -> None:
    agent = await as_role("agent")
    integration = await as_role("integration")
    supervisor = await as_role("supervisor")
    admin = await as_role("admin")
    assert agent.server_info["role"] == "agent" and agent.server_info["principal"] == "alice"

    async def forbidden(call: Awaitable[object]) -> RpcError:
        with pytest.raises(RpcError) as error:
            await call
        assert error.value.code == "forbidden", error.value
        return error.value

    # An agent token acts as its own agent only.
    await forbidden(agent.agent_login("bob"))
    await forbidden(agent.work_submit("support"))
    await forbidden(agent.agent_list())
    await forbidden(agent.config_reload())
    view = await agent.agent_login("alice", queues=["support"])
    assert view["agent_id"] == "alice"

    # Integration submits and reads; it does not act as an agent or end ACW.
    await forbidden(integration.agent_login("carol"))
    await forbidden(integration.acw_force_end("anything"))
    submitted = await integration.work_submit("support", work_id="a1")
    assert submitted["work_id"] == "a1"
    await wait_event(agent, "work.offered", work_id="a1")
    await forbidden(integration.work_accept("a1"))
    await agent.work_accept("a1")
    await agent.work_end("a1")

    # Supervisor reads everything and forces the end of ACW; it does not submit or reload.
    await forbidden(supervisor.work_submit("support"))
    await forbidden(supervisor.config_reload())
    assert (await supervisor.agent_get("alice"))["state"] == "acw"
    record = await supervisor.acw_force_end("a1")
    assert record["reason"] == "forced"

    # Another agent's work is not this agent's to touch.
    await integration.work_submit("support", work_id="a2")
    await wait_event(agent, "work.offered", work_id="a2")
    await agent.agent_set_status("alice", "away")
    assert (await supervisor.agent_get("alice"))["status"] == "away"

    reloaded = await admin.config_reload()
    assert reloaded["reloaded"] is True
