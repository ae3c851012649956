"""max_connections and the per-connection request rate, against a real daemon."""

from __future__ import annotations

import time
from collections.abc import Iterator

import msgpack  # type: ignore[import-untyped]
import pytest
from security_harness import Daemon, Rpc, running

from acwd.client import Client, ConnectionLost

MAX_CONNECTIONS = 20
RATE = 50


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    limits = f"\n[limits]\nrequests_per_s = {RATE}\n"
    server = f"max_connections = {MAX_CONNECTIONS}"
    with running(tmp_path_factory.mktemp("limits"), limits, server=server) as d:
        yield d
        assert d.alive()
        assert d.errors() == []


def refused(rpc: Rpc) -> bool:
    """True when the server answered ``overloaded`` with msgid 0 and closed the connection."""
    try:
        error, result = rpc.response(0)
    except OSError:
        return False
    rpc.wait_closed(2)
    return error["code"] == "overloaded" and result is None


def accepted(port: int) -> Rpc:
    """A connection that got in (the server may still be releasing closed ones)."""
    deadline = time.monotonic() + 3
    while True:
        rpc = Rpc(port)
        try:
            assert rpc.code("hello") == "ok"
            return rpc
        except ConnectionError:  # refused: the closes are not processed yet
            rpc.close()
            assert time.monotonic() < deadline, "closed connections were not released"
            time.sleep(0.05)


def test_a_connection_flood_up_to_and_past_max_connections(daemon: Daemon) -> None:
    held = [accepted(daemon.port) for _ in range(MAX_CONNECTIONS)]
    try:
        # Past the limit: every new connection is told why and closed, in a burst too.
        burst = [Rpc(daemon.port) for _ in range(200)]
        for rpc in burst:
            rpc.send("hello")  # a client that talks first must still read the answer
        answers = [refused(rpc) for rpc in burst]
        for rpc in burst:
            rpc.close()
        assert all(answers)
        record = daemon.wait_for("max_connections reached")
        assert record["max_connections"] == MAX_CONNECTIONS
        # The held connections never noticed.
        for rpc in held:
            assert rpc.code("ping") == "ok"
        # Room again once some leave.
        for rpc in held[:5]:
            rpc.close()
        held[:5] = [accepted(daemon.port) for _ in range(5)]
        assert refused(Rpc(daemon.port))
    finally:
        for rpc in held:
            rpc.close()


@pytest.mark.anyio
async def test_the_client_library_sees_the_refusal(daemon: Daemon) -> None:
    held = [accepted(daemon.port) for _ in range(MAX_CONNECTIONS)]
    try:
        with pytest.raises(ConnectionLost):
            await Client.connect("127.0.0.1", daemon.port)
    finally:
        for rpc in held:
            rpc.close()


def test_over_the_request_rate_requests_are_refused_and_the_connection_stays(
    daemon: Daemon,
) -> None:
    rpc, other = accepted(daemon.port), accepted(daemon.port)
    try:
        ids = range(1001, 1201)
        rpc.send_raw(b"".join(msgpack.packb([0, i, "ping", []]) for i in ids))
        codes = [rpc.response(i)[0] for i in ids]
        ok = sum(error is None for error in codes)
        over = [error for error in codes if error is not None]
        assert RATE - 1 <= ok <= RATE + 10  # the burst (less the hello), plus what refilled
        assert len(over) == 200 - ok
        assert {error["code"] for error in over} == {"overloaded"}
        assert over[0]["data"] == {"requests_per_s": RATE}
        assert other.code("ping") == "ok"  # every connection has its own allowance
        time.sleep(0.2)  # ~10 more
        assert rpc.code("ping") == "ok"
        assert len(daemon.records("request rate limit reached")) >= 1
    finally:
        rpc.close()
        other.close()
