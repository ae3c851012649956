"""kill -9 at random moments under load: nothing acknowledged is lost, timers are kept exactly.

A real daemon process with a journal file, driven over TCP; after each kill it restarts on the
same file and every acknowledged submit and wrap-up must be there as it was acknowledged.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

ROUNDS = int(os.environ.get("ACWD_CRASH_ROUNDS", "20"))
CONFIG = """
[server]
port = 0
[metrics]
port = 0
[journal]
path = "{db}"
commit_interval_ms = 2
[defaults]
acw_mode = "timed"
acw_seconds = 600.0
offer_timeout_s = 0.0
"""
AGENTS = ("a1", "a2", "a3")


class Daemon:
    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "acwd.cli", "serve", "--config", str(config)],
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if '"acwd listening"' in line:
                self.port = int(json.loads(line)["rpc"].rsplit(":", 1)[1])
                break
        else:
            raise AssertionError("daemon did not start:\n" + "".join(self.lines))
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


class Rpc:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.unpacker = msgpack.Unpacker(raw=False)
        self.msgid = 0

    def __call__(self, method: str, **args: Any) -> Any:
        self.msgid += 1
        self.sock.sendall(msgpack.packb([0, self.msgid, method, [args]]))
        while True:
            for message in self.unpacker:
                if message[0] == 1 and message[1] == self.msgid:
                    if message[2] is not None:
                        raise RuntimeError(message[2]["code"])
                    return message[3]
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.unpacker.feed(data)


def drive(rpc: Rpc, round_no: int, acked: dict[str, Any], stop: threading.Event) -> None:
    """Submit, end and wrap up as fast as the daemon answers, recording every acknowledgement."""
    n = 0
    while not stop.is_set():
        n += 1
        work_id = f"r{round_no}-w{n}"
        view = rpc("work.submit", queue="default", work_id=work_id, priority=n % 3)
        acked["submits"][work_id] = (view["enqueued_at"], view["priority"])
        for agent in rpc("agent.list"):
            for leg in agent["legs"]:
                if leg["state"] == "active":
                    ended = rpc("work.end", work_id=leg["work_id"])
                    acked["deadlines"][leg["work_id"]] = ended["acw"]["deadline"]
                elif leg["state"] == "wrapping" and random.random() < 0.7:
                    rpc("acw.complete", work_id=leg["work_id"], disposition="done", notes=work_id)
                    acked["wrapups"].add(leg["work_id"])


def drive_until_killed(rpc: Rpc, round_no: int, acked: dict[str, Any], stop: Any) -> None:
    # The daemon is killed under us; what was acknowledged until then is recorded.
    with contextlib.suppress(ConnectionError, OSError, RuntimeError):
        drive(rpc, round_no, acked, stop)


@pytest.mark.slow
def test_kill_9_loses_nothing_acknowledged(tmp_path: Path) -> None:
    config = tmp_path / "acwd.toml"
    config.write_text(CONFIG.format(db=tmp_path / "acwd.db"))
    acked: dict[str, Any] = {"submits": {}, "wrapups": set(), "deadlines": {}}
    rng = random.Random(7)
    for round_no in range(ROUNDS):
        daemon = Daemon(config)
        rpc = Rpc(daemon.port)
        check(rpc, acked, daemon)
        for agent in AGENTS:
            rpc("agent.login", agent_id=agent)
        stop = threading.Event()
        worker = threading.Thread(target=drive_until_killed, args=(rpc, round_no, acked, stop))
        worker.start()
        time.sleep(rng.uniform(0.05, 0.4))
        daemon.kill()
        stop.set()
        worker.join(10)
    daemon = Daemon(config)
    check(Rpc(daemon.port), acked, daemon)
    daemon.kill()
    print(
        f"\n{ROUNDS} kill -9 rounds: {len(acked['submits'])} acknowledged submits, "
        f"{len(acked['wrapups'])} wrap-ups, {len(acked['deadlines'])} ACW deadlines, all kept"
    )
    assert len(acked["submits"]) > ROUNDS * 3, "the load was too light to mean anything"
    assert acked["wrapups"], "no wrap-up was acknowledged"


def check(rpc: Rpc, acked: dict[str, Any], daemon: Daemon) -> None:
    for work_id, (enqueued_at, priority) in acked["submits"].items():
        view = rpc("work.get", work_id=work_id)
        assert (view["enqueued_at"], view["priority"]) == (enqueued_at, priority), work_id
    for work_id in acked["wrapups"]:
        records = rpc("wrapup.get", work_id=work_id)
        assert [r["reason"] for r in records] == ["completed"], work_id
        assert records[0]["disposition"] == "done"
    holders: dict[str, str] = {}
    for agent in rpc("agent.list"):
        assert agent["used"] <= agent["capacity"]
        for leg in agent["legs"]:
            assert leg["state"] in ("active", "wrapping"), leg
            if leg["state"] == "active":
                assert holders.setdefault(leg["work_id"], agent["agent_id"]) == agent["agent_id"]
                assert rpc("work.get", work_id=leg["work_id"])["state"] == "active"
            else:
                deadline = acked["deadlines"].get(leg["work_id"])
                if deadline is not None:
                    assert leg["acw"]["deadline"] == pytest.approx(deadline, abs=1e-3)
    recovered = [json.loads(x) for x in daemon.lines if "recovered from journal" in x]
    assert all(r["invariant_problems"] == 0 for r in recovered)
