"""``acwctl`` run as a person or a script runs it: a subprocess against a real daemon."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import Daemon, interrupt, run_ctl, start_ctl

ROOT = Path(__file__).resolve().parents[2]
WALKTHROUGH = ROOT / "README.md"

Ctl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def ctl(daemon: Daemon) -> Ctl:
    return lambda *args, **kw: run_ctl(daemon.port, *args, **kw)


def refused(result: subprocess.CompletedProcess[str], code: str) -> None:
    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {code}: "), result.stderr


def test_tables(ctl: Ctl, daemon: Daemon, new_queue: Any, uid: Any) -> None:
    queue, alice, w1 = new_queue("long"), uid("alice"), uid("w")
    holder = start_ctl(daemon.port, "agent", "login", alice, "--hold", "--queue", queue)
    try:
        submitted = ctl("work", "submit", queue, "--id", w1, "--priority", "4", "--attr", "c=9")
        assert submitted.returncode == 0, submitted.stderr
        assert re.search(r"^state\s+offered$", submitted.stdout, re.M)
        assert re.search(r"^priority\s+4$", submitted.stdout, re.M)
        listed = ctl("agents", "--queue", queue)
        header, row = listed.stdout.splitlines()
        assert header.split() == ["AGENT", "STATE", "STATUS", "LOAD", "QUEUES", "WORK"]
        assert row.split()[:5] == [alice, "busy", "available", "1/1", queue]
        assert f"{w1} offered" in row
        assert ctl("work", "accept", w1).returncode == 0
        ended = ctl("work", "end", w1)
        assert re.search(r"^acw\s+timed$", ended.stdout, re.M), ended.stdout
        extended = ctl("acw", "extend", w1)
        assert re.search(r"^extensions\s+1$", extended.stdout, re.M), extended.stdout
        done = ctl("acw", "complete", w1, "--disposition", "resolved", "--notes", "all good")
        assert re.search(r"^disposition\s+resolved$", done.stdout, re.M), done.stdout
        wrapups = ctl("wrapups", "--queue", queue).stdout.splitlines()
        assert wrapups[0].split()[:4] == ["WORK", "AGENT", "QUEUE", "DISPOSITION"]
        assert wrapups[1].split()[:5] == [w1, alice, queue, "resolved", "completed"]
        stats = ctl("stats", queue).stdout
        assert re.search(r"^handled\s+1$", stats, re.M), stats
        queues = ctl("queues").stdout
        assert re.search(rf"^{queue}\s+chat\s+longest_idle\s+0\s+timed 60s\s+20s$", queues, re.M)
    finally:
        status, events = interrupt(holder)
    assert status == 0
    assert f"{alice}: available -> busy" in events and f"{alice}: busy -> acw" in events
    assert f"{alice}: acw -> available" in events


def test_json_output(ctl: Ctl, daemon: Daemon, new_queue: Any, uid: Any) -> None:
    queue, alice, bob, w1 = new_queue("long"), uid("alice"), uid("bob"), uid("w")
    once = json.loads(ctl("--json", "agent", "login", bob, "--queue", new_queue("long")).stdout)
    assert (once["agent_id"], once["state"]) == (bob, "available")
    profile = ["--status", "away", "--queue", queue, "--capacity", "2"]
    profile += ["--skill", "english=4", "french=1", "--skill", "german=2"]
    holder = start_ctl(daemon.port, "--json", "agent", "login", alice, "--hold", *profile)
    try:
        assert holder.stdout is not None
        view = json.loads(holder.stdout.readline())
        assert (view["agent_id"], view["state"], view["capacity"]) == (alice, "away", 2)
        assert view["skills"] == {"english": 4, "french": 1, "german": 2}
        submit = ["work", "submit", queue, "--id", w1, "--skill", "english=2", "--attr", "k=v"]
        submitted = json.loads(ctl(*submit, "--json").stdout)
        assert submitted["skills"] == {"english": 2} and submitted["attributes"] == {"k": "v"}
        assert json.loads(ctl("work", "get", w1, "--json").stdout)["state"] == "queued"
        agents = json.loads(ctl("agents", "--state", "away", "--json").stdout)
        assert alice in [a["agent_id"] for a in agents]
        cancelled = json.loads(ctl("work", "cancel", w1, "--reason", "test", "--json").stdout)
        assert cancelled["state"] == "cancelled"
    finally:
        status, _ = interrupt(holder)
    assert status == 0
    assert isinstance(json.loads(ctl("queues", "--json").stdout), list)
    assert json.loads(ctl("ping", "--json").stdout)["server"] == "acwd"


def test_watch_prints_json_lines(daemon: Daemon, ctl: Ctl, new_queue: Any, uid: Any) -> None:
    queue, w1, w2 = new_queue("long"), uid("w"), uid("w")
    watcher = start_ctl(daemon.port, "watch", "--json", "--queue", queue, "--topic", "work")
    try:
        assert ctl("work", "submit", queue, "--id", w1).returncode == 0
        assert ctl("work", "cancel", w1).returncode == 0
        assert ctl("work", "submit", new_queue("long"), "--id", w2).returncode == 0  # filtered
        assert watcher.stdout is not None
        first, second = json.loads(watcher.stdout.readline()), json.loads(watcher.stdout.readline())
    finally:
        status, rest = interrupt(watcher)
    assert status == 0
    assert (first["type"], first["work_id"]) == ("work.queued", w1)
    assert (second["type"], second["work_id"]) == ("work.cancelled", w1)
    assert w2 not in rest


def test_exit_code_1_when_the_server_refuses(ctl: Ctl, new_queue: Any, uid: Any) -> None:
    w1 = uid("w")
    refused(ctl("work", "get", w1), "not_found")
    refused(ctl("stats", "no-such-queue"), "not_found")
    assert ctl("work", "submit", new_queue("long"), "--id", w1).returncode == 0
    refused(ctl("work", "end", w1), "invalid_state")
    refused(ctl("work", "submit", new_queue("long"), "--id", w1), "conflict")
    refused(ctl("agent", "logout", uid("nobody")), "not_found")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed again: nothing listens there


def test_exit_code_3_when_it_cannot_connect() -> None:
    result = run_ctl(free_port(), "agents")
    assert result.returncode == 3
    assert result.stderr.startswith("error: cannot connect to acwd at 127.0.0.1:")
    assert result.stdout == ""


def test_exit_code_2_for_usage_errors(ctl: Ctl, daemon: Daemon) -> None:
    assert ctl().returncode == 2
    assert ctl("work", "submit").returncode == 2
    assert ctl("agent", "login", "alice", "--skill", "english").returncode == 2
    assert ctl("agent", "status", "alice", "asleep").returncode == 2
    bad_env = ctl("agents", env={"ACWD_PORT": "seventy"})
    assert bad_env.returncode == 2 and "ACWD_PORT" in bad_env.stderr


def test_port_option_beats_the_environment(daemon: Daemon) -> None:
    result = run_ctl(free_port(), "--port", str(daemon.port), "ping")
    assert result.returncode == 0 and "acwd" in result.stdout


# -- the README walkthrough, exactly as written ---------------------------------------------------


def walkthrough_commands() -> list[list[str]]:
    """The ``$ acwctl ...`` lines of the README walkthrough, in order."""
    lines = re.findall(r"^\$ acwctl (.+)$", WALKTHROUGH.read_text(), re.M)
    return [line.split() for line in lines]


@pytest.fixture
def default_daemon(tmp_path: Path) -> Iterator[Daemon]:
    """The daemon on its embedded defaults, as ``make run`` runs it (but its own journal)."""
    running = Daemon({}, tmp_path)
    yield running
    assert running.stop() == 0
    assert running.problems() == []


def test_walkthrough_works_as_written(default_daemon: Daemon) -> None:
    commands = walkthrough_commands()
    assert commands[0] == ["agent", "login", "alice", "--hold"]
    assert len(commands) >= 5
    holder = start_ctl(default_daemon.port, *commands[0])
    outputs = {}
    try:
        for command in commands[1:]:
            result = run_ctl(default_daemon.port, *command)
            assert result.returncode == 0, (command, result.stderr)
            outputs[" ".join(command)] = result.stdout
        # Held back during ACW, offered the moment the ACW ends.
        assert re.search(r"^state\s+queued$", outputs["work get w2"], re.M)
        assert re.search(r"^alice\s+acw\s", outputs["agents"], re.M)
        after = json.loads(run_ctl(default_daemon.port, "work", "get", "w2", "--json").stdout)
        assert (after["state"], after["agent_id"]) == ("offered", "alice")
    finally:
        status, events = interrupt(holder)
    assert status == 0
    transitions = re.findall(r"alice: (\w+) -> (\w+)", events)
    if transitions[:1] == [("offline", "available")]:
        transitions = transitions[1:]  # the login itself, when it reaches the new connection
    assert transitions == [
        ("available", "busy"),
        ("busy", "acw"),
        ("acw", "available"),
        ("available", "busy"),
    ]
