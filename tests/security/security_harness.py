"""A real ``acwd serve`` process for the security tests, and a small blocking msgpack-RPC client."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]

from acwd.core.config import Role
from acwd.security import new_token

BASE_CONFIG = """
[server]
host = "127.0.0.1"
port = 0
{server}
[metrics]
port = 0
[journal]
path = "{journal}"
[defaults]
offer_timeout_s = 0.0
acw_mode = "manual"
"""


def tokens_config(*grants: tuple[Role, str | None]) -> tuple[list[str], str]:
    """New tokens for ``(role, agent_id)`` grants, and the ``[[auth.tokens]]`` lines for them."""
    made = [new_token(role, agent_id) for role, agent_id in grants]
    return [t.token for t in made], "\n".join(t.toml for t in made)


class Daemon:
    """``acwd serve`` in a subprocess with the given extra configuration (JSON logs kept)."""

    def __init__(
        self,
        directory: Path,
        extra_config: str = "",
        *,
        args: tuple[str, ...] = (),
        server: str = "",
        journal: str = ":memory:",
        nofile: int | None = None,
    ) -> None:
        """``server``: lines added to ``[server]``; ``extra_config``: more sections."""
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "acwd.toml"
        self.config.write_text(BASE_CONFIG.format(server=server, journal=journal) + extra_config)
        self.lines: list[str] = []
        self._seen = threading.Condition()
        preexec: Callable[[], None] | None = None
        if nofile is not None:
            limit = nofile

            def preexec() -> None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "acwd.cli",
                "serve",
                "--config",
                str(self.config),
                "--log-format",
                "json",
                *args,
            ],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            preexec_fn=preexec,
        )
        threading.Thread(target=self._drain, daemon=True).start()
        listening = self.wait_for("acwd listening", timeout=15)
        self.port = int(listening["rpc"].rsplit(":", 1)[1])
        self.pid = self.proc.pid

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._seen:
                self.lines.append(line)
                self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    def records(self, event: str = "") -> list[dict[str, Any]]:
        """Log records whose event contains ``event``."""
        out = []
        with self._seen:
            lines = list(self.lines)
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and event in str(record.get("event", "")):
                out.append(record)
        return out

    def wait_for(self, event: str, timeout: float = 5.0, count: int = 1) -> dict[str, Any]:
        """The first log record with ``event`` once ``count`` of them are there."""
        deadline = time.monotonic() + timeout
        with self._seen:
            while True:
                found = self.records(event)
                if len(found) >= count:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not found):
                    raise AssertionError(
                        f"no {event!r} in the daemon's log:\n" + "".join(self.lines[-40:])
                    )
                self._seen.wait(min(left, 0.1))

    def errors(self) -> list[dict[str, Any]]:
        """Records logged at level error, and anything that is not a JSON record (tracebacks)."""
        with self._seen:
            lines = list(self.lines)
        bad = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                bad.append({"event": line})
                continue
            if record.get("level") in ("error", "critical"):
                bad.append(record)
        return bad

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def cpu_seconds(self) -> float:
        """User and system CPU time the daemon has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


@contextmanager
def running(directory: Path, extra_config: str = "", **options: Any) -> Iterator[Daemon]:
    daemon = Daemon(directory, extra_config, **options)
    try:
        yield daemon
    finally:
        daemon.stop()


class Rpc:
    """A blocking msgpack-RPC connection: send requests, read their responses by msgid."""

    def __init__(
        self, port: int, *, timeout: float = 5.0, rcvbuf: int | None = None, connect: bool = True
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        if connect:
            self.sock.connect(("127.0.0.1", port))
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        self.msgid = 0
        self.responses: dict[int, tuple[Any, Any]] = {}
        self.events: list[Any] = []
        self.eof = False

    def close(self) -> None:
        self.sock.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, method: str, **args: Any) -> int:
        self.msgid += 1
        self.sock.sendall(msgpack.packb([0, self.msgid, method, [args] if args else []]))
        return self.msgid

    def _pump(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
            raise ConnectionError("closed by the server")
        self.unpacker.feed(data)
        for message in self.unpacker:
            if message[0] == 1:
                self.responses[message[1]] = (message[2], message[3])
            else:
                self.events.append(message)

    def response(self, msgid: int) -> tuple[Any, Any]:
        """(error, result) of the request ``msgid``."""
        while msgid not in self.responses:
            self._pump()
        return self.responses.pop(msgid)

    def call(self, method: str, **args: Any) -> tuple[Any, Any]:
        return self.response(self.send(method, **args))

    def ok(self, method: str, **args: Any) -> Any:
        error, result = self.call(method, **args)
        assert error is None, f"{method}: {error}"
        return result

    def code(self, method: str, **args: Any) -> str:
        """The error code of a call, or "ok"."""
        error, _ = self.call(method, **args)
        return "ok" if error is None else str(error["code"])

    def wait_closed(self, timeout: float) -> float:
        """Read (keeping responses) until the server closes; returns the seconds it took."""
        started = time.monotonic()
        self.sock.settimeout(timeout)
        try:
            while True:
                self._pump()
        except (ConnectionError, OSError):
            pass
        elapsed = time.monotonic() - started
        assert self.eof or elapsed < timeout, f"still open after {elapsed:.1f} s"
        return elapsed
