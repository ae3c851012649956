"""Slow and silent clients: the hello timeout and the idle timeout close them, others stay."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgpack  # type: ignore[import-untyped]
from security_harness import Daemon, Rpc, running

HELLO_TIMEOUT = 1.0
IDLE_TIMEOUT = 1.2


def trickle(port: int, data: bytes, greet: bool) -> float:
    """Send ``data`` one byte a second; seconds until the server closes (after the hello)."""
    rpc = Rpc(port)
    if greet:
        rpc.ok("hello")
    started = time.monotonic()
    rpc.sock.settimeout(1.0)
    try:
        for byte in data:
            rpc.sock.send(bytes([byte]))
            try:
                if not rpc.sock.recv(4096):
                    break
            except TimeoutError:
                continue
        else:
            raise AssertionError("the whole message went through")
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        rpc.close()
    return time.monotonic() - started


def silent_after_hello(port: int) -> float:
    rpc = Rpc(port)
    rpc.ok("hello")
    return rpc.wait_closed(IDLE_TIMEOUT + 2)


def pinging(port: int) -> float:
    """A client that says something every half second is never idle."""
    rpc = Rpc(port)
    started = time.monotonic()
    while time.monotonic() - started < IDLE_TIMEOUT * 1.8:
        assert rpc.code("ping") == "ok"
        time.sleep(0.5)
    rpc.close()
    return -1.0


def test_one_byte_a_second_and_silence_are_closed_by_the_timeouts(tmp_path: Path) -> None:
    server = f"hello_timeout_s = {HELLO_TIMEOUT}\nidle_timeout_s = {IDLE_TIMEOUT}"
    with running(tmp_path, server=server) as daemon:
        # Neither message is finished before the timeouts.
        hello = msgpack.packb([0, 1, "hello", [{"client": "slow" * 10}]])
        ping = msgpack.packb([0, 2, "ping", [{"pad": "x" * 100}]])
        scenarios: dict[str, Callable[[], float]] = {
            "before hello": lambda: trickle(daemon.port, hello, greet=False),
            "after hello": lambda: trickle(daemon.port, ping, greet=True),
            "silent": lambda: silent_after_hello(daemon.port),
            "pinging": lambda: pinging(daemon.port),
        }
        took: dict[str, float] = {}

        def run(name: str) -> None:
            took[name] = scenarios[name]()

        threads = [threading.Thread(target=run, args=(name,)) for name in scenarios]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert set(took) == set(scenarios), "a scenario failed"
        assert HELLO_TIMEOUT - 0.2 < took["before hello"] < HELLO_TIMEOUT + 1.2, took
        assert IDLE_TIMEOUT - 0.2 < took["after hello"] < IDLE_TIMEOUT + 1.2, took
        assert IDLE_TIMEOUT - 0.2 < took["silent"] < IDLE_TIMEOUT + 1.2, took
        assert len(daemon.records("no hello in time")) == 1
        assert len(daemon.records("closing connection: idle")) == 2
        assert Rpc(daemon.port).code("ping") == "ok"
        assert_clean(daemon)


def assert_clean(daemon: Daemon) -> None:
    assert daemon.alive()
    assert daemon.errors() == []


def test_without_an_idle_timeout_a_greeted_connection_may_stay_quiet(tmp_path: Path) -> None:
    with running(tmp_path, server="hello_timeout_s = 0.3") as daemon:
        rpc = Rpc(daemon.port)
        rpc.ok("hello")
        time.sleep(0.8)
        assert rpc.code("ping") == "ok"
        silent = socket.create_connection(("127.0.0.1", daemon.port))
        silent.settimeout(2)
        assert silent.recv(10) == b""  # but no hello at all: closed
        assert_clean(daemon)
