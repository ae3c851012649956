"""The front door's parts in isolation (virtual time), and fault isolation inside the server."""

from __future__ import annotations

import hashlib
import ssl
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import trio.testing
from structlog.testing import capture_logs

from acwd import server as server_module
from acwd.client import Client, ConnectionLost, RpcError
from acwd.core.config import Role, ServerConfig, Settings
from acwd.protocol.framing import encode_request
from acwd.runtime.node import Node
from acwd.security import (
    HelloThrottle,
    RequestBucket,
    address_key,
    is_disconnect,
    new_token,
    tls_context,
)
from acwd.server import Server

virtual_time = pytest.mark.parametrize(
    "anyio_backend", [("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})]
)


# --- HelloThrottle ------------------------------------------------------------------------------


@pytest.mark.anyio
@virtual_time
async def test_an_address_that_never_failed_is_not_delayed() -> None:
    throttle = HelloThrottle()
    started = anyio.current_time()
    for _ in range(100):
        await throttle.admit("192.0.2.1")
    assert anyio.current_time() == started
    assert len(throttle) == 0


@pytest.mark.anyio
@virtual_time
async def test_each_failure_doubles_the_wait_up_to_the_maximum() -> None:
    throttle = HelloThrottle(base_s=0.1, max_delay_s=1.0, max_wait_s=10.0)
    start = anyio.current_time()
    admitted = []
    throttle.failed("192.0.2.1")
    for _ in range(7):
        await throttle.admit("192.0.2.1")
        admitted.append(round(anyio.current_time() - start, 6))
        throttle.failed("192.0.2.1")
    gaps = [round(b - a, 6) for a, b in zip([0.0, *admitted], admitted, strict=False)]
    assert gaps == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert throttle.failures("192.0.2.1") == 8
    # Another address is not affected.
    before = anyio.current_time()
    await throttle.admit("192.0.2.2")
    assert anyio.current_time() == before


@pytest.mark.anyio
@virtual_time
async def test_parallel_hellos_from_one_address_are_checked_one_at_a_time() -> None:
    throttle = HelloThrottle(base_s=0.1, max_wait_s=0.45)
    throttle.failed("192.0.2.1")
    start = anyio.current_time()
    admitted: list[float] = []
    refused: list[Any] = []

    async def hello() -> None:
        try:
            await throttle.admit("192.0.2.1")
            admitted.append(round(anyio.current_time() - start, 6))
        except Exception as exc:
            refused.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(hello)
    # Spaced 0.1 s apart; past 0.45 s of waiting the answer is "overloaded" at once.
    assert admitted == [0.1, 0.2, 0.3, 0.4]
    assert len(refused) == 4
    assert refused[0].code == "overloaded"
    assert 0 < refused[0].data["retry_after_s"] <= 1.0


@pytest.mark.anyio
@virtual_time
async def test_failures_are_forgotten_and_memory_is_bounded() -> None:
    throttle = HelloThrottle(forget_s=60.0, max_addresses=100)
    throttle.failed("192.0.2.1")
    await anyio.sleep(61)
    assert throttle.failures("192.0.2.1") == 0
    for i in range(10_000):
        throttle.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(throttle) == 100
    assert throttle.failures("10.0.39.15") == 1  # the newest are kept
    assert throttle.failures("10.0.0.1") == 0


def test_addresses_are_grouped_as_an_attacker_would_hold_them() -> None:
    assert address_key("2001:db8:1:2::5") == address_key("2001:db8:1:2:ffff::1")
    assert address_key("2001:db8:1:2::5") != address_key("2001:db8:1:3::5")
    assert address_key("::ffff:192.0.2.9") == "192.0.2.9"
    assert address_key("192.0.2.9") == "192.0.2.9"
    assert address_key("not-an-address") == "not-an-address"


# --- RequestBucket ------------------------------------------------------------------------------


@pytest.mark.anyio
@virtual_time
async def test_the_request_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = RequestBucket(10)
    assert sum(bucket.take() for _ in range(50)) == 10
    await anyio.sleep(0.5)
    assert sum(bucket.take() for _ in range(50)) == 5
    await anyio.sleep(100)
    assert sum(bucket.take() for _ in range(50)) == 10  # never more than a second's worth
    slow = RequestBucket(0.5)
    assert [slow.take(), slow.take()] == [True, False]
    await anyio.sleep(2)
    assert slow.take()


# --- the rest -----------------------------------------------------------------------------------


def test_what_counts_as_a_disconnect() -> None:
    assert is_disconnect(anyio.BrokenResourceError())
    assert is_disconnect(ConnectionResetError())
    assert is_disconnect(ExceptionGroup("x", [anyio.EndOfStream(), TimeoutError()]))
    assert is_disconnect(ExceptionGroup("x", [ExceptionGroup("y", [BrokenPipeError()])]))
    assert not is_disconnect(ValueError())
    assert not is_disconnect(ExceptionGroup("x", [ConnectionResetError(), KeyError()]))


def test_tls_context_from_the_server_config(tmp_path: Any) -> None:
    assert tls_context(ServerConfig()) is None
    with pytest.raises(ValueError, match="need tls_cert"):
        tls_context(ServerConfig(tls_key="k.pem"))
    with pytest.raises(OSError):
        tls_context(ServerConfig(tls_cert=str(tmp_path / "no.pem"), tls_key="no.key"))
    garbage = tmp_path / "bad.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ssl.SSLError):
        tls_context(ServerConfig(tls_cert=str(garbage), tls_key=str(garbage)))


def test_new_tokens_are_random_and_only_their_hash_is_configured() -> None:
    made = [new_token(Role.INTEGRATION) for _ in range(50)]
    assert len({t.token for t in made}) == 50
    for t in made:
        assert len(t.token) >= 43  # 256 bits, url-safe base64
        assert t.sha256 == hashlib.sha256(t.token.encode()).hexdigest()
        assert t.token not in t.toml
        settings = Settings.from_dict(tomllib.loads(t.toml))
        assert settings.auth_tokens[0].role is Role.INTEGRATION
    agent = new_token(Role.AGENT, "a.b-c@d")
    assert 'agent_id = "a.b-c@d"' in agent.toml
    for role, agent_id in ((Role.AGENT, None), (Role.ADMIN, "x"), (Role.AGENT, 'x"\n[y]')):
        with pytest.raises(ValueError):
            new_token(role, agent_id)


# --- fault isolation inside a running server (in-process) ---------------------------------------


@asynccontextmanager
async def serving(**settings: Any) -> AsyncIterator[Server]:
    config = Settings.from_dict(
        {"journal": {"path": ":memory:", "commit_interval_ms": 0}, "metrics": {"port": 0}}
        | settings
    )
    node = Node(config)
    server = Server(node, config)
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        await tg.start(server.serve, "127.0.0.1", 0)
        yield server
        server.stop()
        with anyio.move_on_after(5):
            await server.stopped.wait()
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_an_exception_in_a_request_is_answered_internal_and_contained(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(conn: Any, args: Any) -> Any:
        raise RuntimeError("a bug in queue.stats")

    monkeypatch.setitem(server_module.HANDLERS, "queue.stats", broken)
    with capture_logs() as logs:
        async with serving() as server:
            one = await Client.connect("127.0.0.1", server.port)
            other = await Client.connect("127.0.0.1", server.port)
            with pytest.raises(RpcError) as info:
                await one.call("queue.stats", queue="default")
            assert info.value.code == "internal"
            assert "bug" not in info.value.message  # the details go to the log, not the client
            assert await one.call("ping")  # the same connection carries on
            assert await other.call("ping")
            await one.aclose()
            await other.aclose()
    failed = [entry for entry in logs if entry["event"] == "request failed"]
    assert len(failed) == 1
    assert failed[0]["method"] == "queue.stats" and failed[0]["log_level"] == "error"
    assert isinstance(failed[0]["exc_info"], RuntimeError)


@pytest.mark.anyio
async def test_a_bug_in_one_connections_handling_drops_only_that_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refused = server_module.Connection._refused

    def buggy(self: Any, request: Any) -> bool:
        if request.method == "boom":
            raise ValueError("a bug while reading")
        return refused(self, request)

    monkeypatch.setattr(server_module.Connection, "_refused", buggy)
    with capture_logs() as logs:
        async with serving() as server:
            victim = await Client.connect("127.0.0.1", server.port)
            bystander = await Client.connect("127.0.0.1", server.port)
            with pytest.raises(ConnectionLost):
                await victim.call("boom")
            assert await bystander.call("ping")
            again = await Client.connect("127.0.0.1", server.port)
            assert await again.call("ping")
            for client in (victim, bystander, again):
                await client.aclose()
    failed = [entry for entry in logs if entry["event"] == "connection failed"]
    assert len(failed) == 1 and failed[0]["log_level"] == "error"


@pytest.mark.anyio
async def test_a_peer_that_resets_is_not_an_error() -> None:
    with capture_logs() as logs:
        async with serving() as server:
            for _ in range(5):
                stream = await anyio.connect_tcp("127.0.0.1", server.port)
                payload = b"".join(encode_request(i, "queue.list", []) for i in range(500))
                await stream.send(payload)
                await anyio.sleep(0.01)
                await stream.aclose()  # asyncio aborts: a reset while the server writes
            async with await Client.connect("127.0.0.1", server.port) as client:
                assert await client.call("ping")
    assert [entry for entry in logs if entry["log_level"] == "error"] == []
