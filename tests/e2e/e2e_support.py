"""What the end-to-end tests share: a real daemon process, a raw msgpack socket, event waits."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import msgpack

from acwd.client import Client

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 15.0

# -- the shared daemon's configuration (conftest.py starts it) ---------------------------------

QUEUES_PER_MODE = 40
QUIET_QUEUE = "quiet"  # nothing is ever submitted here: agents that must stay idle serve it
# Each mode is a family of identical queues; a test takes one it alone uses.
MODES: dict[str, dict[str, Any]] = {
    "timed": {"acw_mode": "timed", "acw_seconds": 0.5},
    "long": {"acw_mode": "timed", "acw_seconds": 60.0},
    "forced": {"acw_mode": "forced", "acw_seconds": 0.5},
    "manual": {"acw_mode": "manual"},
    "onreq": {"acw_mode": "on_request", "acw_seconds": 60.0},
    "off": {"acw_mode": "off"},
    "disp": {
        "acw_seconds": 60.0,
        "require_disposition": True,
        "dispositions": ["resolved", "escalated"],
    },
    "offer": {"acw_seconds": 60.0, "offer_timeout_s": 0.4, "reoffer_backoff_s": 0.3},
    "auto": {"acw_seconds": 60.0, "offer_timeout_s": 0.0},
}
MAX_MESSAGE_BYTES = 65_536
DISCONNECT_GRACE_S = 1.0
HELLO_TIMEOUT_S = 1.0

MAIN_CONFIG: dict[str, Any] = {
    "server": {"max_message_bytes": MAX_MESSAGE_BYTES, "hello_timeout_s": HELLO_TIMEOUT_S},
    "defaults": {
        "extension_seconds": 30.0,
        "max_extensions": 2,
        "disconnect_grace_s": DISCONNECT_GRACE_S,
    },
    "queues": {
        QUIET_QUEUE: {},
        **{f"{mode}{n}": cfg for mode, cfg in MODES.items() for n in range(QUEUES_PER_MODE)},
    },
}


def toml(config: Mapping[str, Any]) -> str:
    """A nested dict as TOML; enough for the scalars, lists and tables our configs use."""
    lines: list[str] = []

    def emit(table: Mapping[str, Any], prefix: str) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, Mapping | list)}
        scalars |= {k: v for k, v in table.items() if isinstance(v, list) and not _tables(v)}
        if prefix and (scalars or not table):
            lines.append(f"[{prefix}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in scalars.items())
        for key, value in table.items():
            name = f"{prefix}.{key}" if prefix else key
            if isinstance(value, Mapping):
                emit(value, name)
            elif isinstance(value, list) and _tables(value):
                for entry in value:
                    lines.append(f"[[{name}]]")
                    lines.extend(f"{k} = {json.dumps(v)}" for k, v in entry.items())

    emit(config, "")
    return "\n".join(lines) + "\n"


def _tables(value: list[Any]) -> bool:
    return bool(value) and all(isinstance(v, Mapping) for v in value)


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Daemon:
    """``acwd serve --config FILE --port 0``, run as a user runs it; its log lines are kept."""

    def __init__(
        self, config: Mapping[str, Any], workdir: Path, args: tuple[str, ...] = ()
    ) -> None:
        self.workdir = workdir
        self.config_path = workdir / "acwd.toml"
        # Never the default journal (./var) or metrics port (9400): tests must not share state.
        base = {"journal": {"path": ":memory:"}, "metrics": {"port": 0}}
        self.config_path.write_text(toml({**base, **config}))
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [str(BIN / "acwd"), "serve", "--config", str(self.config_path), "--port", "0", *args],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.port = self._wait_listening()
        threading.Thread(target=self._drain, daemon=True).start()

    def _wait_listening(self) -> int:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        for line in self.proc.stderr:
            self.lines.append(line)
            if '"acwd listening"' in line:
                return int(json.loads(line)["rpc"].rsplit(":", 1)[1])
            if time.monotonic() > deadline:
                break
        self.proc.kill()
        raise AssertionError("acwd did not start:\n" + "".join(self.lines))

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def log(self) -> list[dict[str, Any]]:
        """The JSON log lines so far (a line that is not JSON, e.g. a traceback, fails)."""
        return [json.loads(line) for line in list(self.lines) if line.strip()]

    def problems(self) -> list[str]:
        """Log lines at error level or that are not JSON: what a healthy run never has."""
        bad = []
        for line in list(self.lines):
            try:
                entry = json.loads(line)
            except ValueError:
                bad.append(line)
                continue
            if entry.get("level") in ("error", "critical"):
                bad.append(line)
        return bad

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("acwd did not stop within 15 s of SIGTERM") from None


class Raw:
    """A plain blocking socket speaking msgpack by hand, for bytes no client library would send."""

    def __init__(self, address: tuple[str, int], timeout: float = 3.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, msgid: int, method: str, params: list[Any] | None = None) -> None:
        self.send(msgpack.packb([0, msgid, method, [] if params is None else params]))

    def receive(self) -> Any:
        """The next message; None when the server closed the connection."""
        while True:
            for message in self.unpacker:
                return message
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not data:
                return None
            self.unpacker.feed(data)

    def call(self, msgid: int, method: str, **args: Any) -> Any:
        """Send a request and return its response, skipping notifications."""
        self.request(msgid, method, [args] if args else [])
        while True:
            message = self.receive()
            assert message is not None, f"connection closed while waiting for {method}"
            if message[0] == 1 and message[1] == msgid:
                return message

    def closed_by_server(self) -> bool:
        """True when the server closes the connection (EOF) within the socket timeout."""
        while True:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return False
            except ConnectionResetError:
                return True
            if not data:
                return True

    def close(self) -> None:
        self.sock.close()


# -- acwctl as a subprocess ----------------------------------------------------------------------


def run_ctl(
    port: int, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "acwctl"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "ACWD_PORT": str(port), **(env or {})},
    )


def start_ctl(port: int, *args: str) -> subprocess.Popen[str]:
    """A long-running acwctl (watch, login --hold); stderr's first line says it is ready."""
    proc = subprocess.Popen(
        [str(BIN / "acwctl"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ACWD_PORT": str(port)},
    )
    assert proc.stderr is not None
    ready = proc.stderr.readline()
    assert ready, f"acwctl {' '.join(args)} exited: {proc.wait()}"
    return proc


def interrupt(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """Ctrl-C, as a person stops it; its exit status and everything it printed."""
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=10)
    return proc.returncode, out


@contextlib.contextmanager
def raw(address: tuple[str, int]) -> Iterator[Raw]:
    conn = Raw(address)
    try:
        yield conn
    finally:
        conn.close()


async def wait_event(
    client: Client, kind: str, timeout: float = 2.0, **match: Any
) -> dict[str, Any]:
    """The next event of type ``kind`` whose fields equal ``match``; other events are skipped."""
    with anyio.fail_after(timeout):
        async with contextlib.aclosing(client.events()) as events:
            async for event in events:
                if event["type"] == kind and all(event.get(k) == v for k, v in match.items()):
                    return event
    raise AssertionError(f"the connection closed before a {kind} event")


async def eventually(check: Callable[[], Any], timeout: float = 2.0, interval: float = 0.02) -> Any:
    """Await ``check()`` until it returns something truthy; its last value on timeout fails."""
    with anyio.move_on_after(timeout):
        while True:
            value = await check()
            if value:
                return value
            await anyio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last: {value!r})")
