"""The daemon as a process: each event loop, SIGHUP reload, graceful SIGTERM with work in flight."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import msgpack
import pytest
from e2e_support import Daemon, Raw, toml

LOOPS = ["asyncio", "uvloop", "trio"]
CONFIG = {"queues": {"support": {"acw_seconds": 45.0}}}


def wait_for_log(daemon: Daemon, event: str, timeout: float = 5.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in daemon.log():
            if entry.get("event") == event:
                return entry
        time.sleep(0.02)
    raise AssertionError(f"no {event!r} in the log:\n" + "".join(daemon.lines))


def acw_seconds(conn: Raw, msgid: int) -> float:
    [queue] = conn.call(msgid, "queue.list")[3]
    return float(queue["resolved"]["acw_seconds"])


@pytest.mark.parametrize("loop", LOOPS)
def test_lifecycle_reload_and_stop_on_each_loop(loop: str, tmp_path: Path) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop", reason="uvloop is an optional extra")
    daemon = Daemon(CONFIG, tmp_path, ("--loop", loop))
    conn = Raw(daemon.address)
    assert conn.call(1, "agent.login", agent_id="alice")[2] is None
    assert conn.call(2, "work.submit", queue="support", work_id="w1")[2] is None
    assert conn.call(3, "work.accept", work_id="w1")[3]["state"] == "active"
    assert conn.call(4, "work.end", work_id="w1")[3]["acw"]["mode"] == "timed"
    assert acw_seconds(conn, 5) == 45.0

    # A good file is applied on SIGHUP ...
    daemon.config_path.write_text(
        toml({"journal": {"path": ":memory:"}, "metrics": {"port": 0}, "queues": {"support": {}}})
    )
    daemon.proc.send_signal(signal.SIGHUP)
    assert wait_for_log(daemon, "configuration reloaded")["changes"]
    assert acw_seconds(conn, 6) == 90.0
    # ... and a bad one is refused with the reason, changing nothing.
    daemon.config_path.write_text('[queues.support]\npolicy = "fastest"\n')
    daemon.proc.send_signal(signal.SIGHUP)
    refused = wait_for_log(daemon, "reload refused")
    assert "queues.support.policy" in str(refused["reason"])
    assert acw_seconds(conn, 7) == 90.0
    assert conn.call(8, "agent.get", agent_id="alice")[3]["state"] == "acw"
    assert daemon.stop() == 0


def test_sigterm_answers_every_request_already_read(tmp_path: Path) -> None:
    daemon = Daemon(CONFIG, tmp_path)
    conn = Raw(daemon.address, timeout=10)
    conn.call(1, "agent.login", agent_id="alice")
    batch = b"".join(
        msgpack.packb([0, 100 + i, "work.submit", [{"queue": "support", "work_id": f"w{i}"}]])
        for i in range(200)
    )
    conn.send(batch)
    first = conn.receive()
    assert first is not None  # the batch is being read
    daemon.proc.send_signal(signal.SIGTERM)
    answered = {first[1]} if first[0] == 1 else set()
    while (message := conn.receive()) is not None:
        if message[0] == 1:
            assert message[2] is None, message
            answered.add(message[1])
    assert answered == {100 + i for i in range(200)}
    assert daemon.proc.wait(15) == 0
    assert daemon.problems() == []
