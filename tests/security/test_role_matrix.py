"""Authentication and roles against a real daemon with one token per role.

The role matrix is written out here from PROTOCOL.md ("Roles" and the method list), not read
from the server's own table, so a change to either shows up as a failure.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from security_harness import Daemon, Rpc, running, tokens_config

from acwd.core.config import Role
from acwd.protocol.messages import METHODS

Y, N = True, False
ROLE_NAMES = ("agent", "integration", "supervisor", "admin")
# fmt: off
MATRIX: tuple[tuple[str, bool, bool, bool, bool], ...] = (
    # method             agent integration supervisor admin
    ("hello",            Y,    Y,          Y,         Y),
    ("ping",             Y,    Y,          Y,         Y),
    ("subscribe",        Y,    Y,          Y,         Y),
    ("unsubscribe",      Y,    Y,          Y,         Y),
    ("agent.login",      Y,    N,          N,         Y),
    ("agent.logout",     Y,    N,          Y,         Y),
    ("agent.set_status", Y,    N,          Y,         Y),
    ("agent.get",        Y,    Y,          Y,         Y),
    ("agent.list",       N,    Y,          Y,         Y),
    ("work.submit",      N,    Y,          N,         Y),
    ("work.accept",      Y,    N,          N,         Y),
    ("work.decline",     Y,    N,          N,         Y),
    ("work.end",         Y,    N,          N,         Y),
    ("work.transfer",    Y,    Y,          N,         Y),
    ("work.cancel",      N,    Y,          N,         Y),
    ("work.get",         Y,    Y,          Y,         Y),
    ("acw.request",      Y,    N,          N,         Y),
    ("acw.extend",       Y,    N,          N,         Y),
    ("acw.complete",     Y,    N,          N,         Y),
    ("acw.force_end",    N,    N,          Y,         Y),
    ("wrapup.get",       Y,    Y,          Y,         Y),
    ("wrapup.list",      N,    Y,          Y,         Y),
    ("queue.list",       Y,    Y,          Y,         Y),
    ("queue.stats",      N,    Y,          Y,         Y),
    ("config.reload",    N,    N,          N,         Y),
)
# fmt: on
CASES = [
    (method, role, allowed)
    for method, *flags in MATRIX
    for role, allowed in zip(ROLE_NAMES, flags, strict=True)
]
# Valid arguments for every method; the agent token is alice's, so they name alice.
ARGS: dict[str, dict[str, Any]] = {
    "hello": {},  # the caller's own token is added
    "ping": {},
    "subscribe": {"topics": ["agent", "work"]},
    "unsubscribe": {"topics": ["agent"]},
    "agent.login": {"agent_id": "alice", "queues": ["default"]},
    "agent.logout": {"agent_id": "alice", "force": True},
    "agent.set_status": {"agent_id": "alice", "status": "away"},
    "agent.get": {"agent_id": "alice"},
    "agent.list": {},
    "work.submit": {"queue": "default"},
    "work.accept": {"work_id": "w-none"},
    "work.decline": {"work_id": "w-none"},
    "work.end": {"work_id": "w-none"},
    "work.transfer": {"work_id": "w-none", "queue": "default"},
    "work.cancel": {"work_id": "w-none"},
    "work.get": {"work_id": "w-none"},
    "acw.request": {"work_id": "w-none"},
    "acw.extend": {"work_id": "w-none"},
    "acw.complete": {"work_id": "w-none", "disposition": "done"},
    "acw.force_end": {"work_id": "w-none"},
    "wrapup.get": {"work_id": "w-none"},
    "wrapup.list": {},
    "queue.list": {},
    "queue.stats": {"queue": "default"},
    "config.reload": {},
}
# What an allowed call may still answer: the request was authorized, then refused on its merits.
NOT_AUTHORIZATION = {"ok", "not_found", "invalid_state", "conflict", "has_active_work"}
GRANTS = (
    (Role.AGENT, "alice"),
    (Role.INTEGRATION, None),
    (Role.SUPERVISOR, None),
    (Role.ADMIN, None),
)
EXTRA = """
[queues.default]
channel = "chat"
[queues.bobq]
channel = "chat"
"""


class Site:
    def __init__(self, daemon: Daemon, tokens: dict[str, str]) -> None:
        self.daemon = daemon
        self.tokens = tokens
        self.conns: dict[str, Rpc] = {}
        for role, token in tokens.items():
            rpc = Rpc(daemon.port)
            assert rpc.ok("hello", token=token)["role"] == role
            self.conns[role] = rpc


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tokens, toml = tokens_config(*GRANTS)
    with running(tmp_path_factory.mktemp("roles"), EXTRA + toml) as daemon:
        yield Site(daemon, dict(zip(ROLE_NAMES, tokens, strict=True)))
        assert daemon.alive()
        assert daemon.errors() == []


def test_the_matrix_covers_every_method_of_the_protocol() -> None:
    assert [method for method, *_ in MATRIX] == list(METHODS)
    assert set(ARGS) == set(METHODS)


@pytest.mark.parametrize(("method", "role", "allowed"), CASES)
def test_role_matrix(site: Site, method: str, role: str, allowed: bool) -> None:
    args = dict(ARGS[method])
    if method == "hello":
        args["token"] = site.tokens[role]
    error, _ = site.conns[role].call(method, **args)
    code = "ok" if error is None else error["code"]
    if allowed:
        assert code in NOT_AUTHORIZATION, (method, role, error)
    else:
        assert code == "forbidden", (method, role, error)
        assert role in error["message"]


def test_an_agent_token_acts_only_as_its_own_agent(site: Site) -> None:
    admin, integration, alice = (site.conns[r] for r in ("admin", "integration", "agent"))
    admin.ok("agent.login", agent_id="bob", queues=["bobq"])
    integration.ok("work.submit", queue="bobq", work_id="w-bob")
    assert admin.ok("work.get", work_id="w-bob")["agent_id"] == "bob"  # auto-accepted
    for method, args in (
        ("agent.login", {"agent_id": "bob"}),
        ("agent.logout", {"agent_id": "bob"}),
        ("agent.set_status", {"agent_id": "bob", "status": "away"}),
        ("agent.get", {"agent_id": "bob"}),
        ("subscribe", {"topics": ["agent"], "agent_id": "bob"}),
        ("work.accept", {"work_id": "w-bob"}),
        ("work.decline", {"work_id": "w-bob"}),
        ("work.end", {"work_id": "w-bob"}),
        ("work.transfer", {"work_id": "w-bob", "queue": "default"}),
        ("work.get", {"work_id": "w-bob"}),
        ("acw.request", {"work_id": "w-bob"}),
        ("acw.extend", {"work_id": "w-bob"}),
        ("acw.complete", {"work_id": "w-bob", "disposition": "x"}),
        ("wrapup.get", {"work_id": "w-bob"}),
    ):
        assert alice.code(method, **args) == "forbidden", method
    # Nothing happened to bob's work.
    assert admin.ok("work.get", work_id="w-bob")["legs"][0]["state"] == "active"
    assert alice.ok("agent.get", agent_id="alice")["agent_id"] == "alice"


def test_before_hello_every_call_is_unauthenticated(site: Site) -> None:
    rpc = Rpc(site.daemon.port)
    try:
        for method in METHODS:
            if method != "hello":
                assert rpc.code(method, **ARGS[method]) == "unauthenticated", method
        # Also calls that would otherwise be method_not_found or invalid_params.
        assert rpc.code("no.such.method") == "unauthenticated"
        assert rpc.code("work.get", work_id=["not", "an", "id"]) == "unauthenticated"
        assert rpc.code("hello") == "unauthenticated"  # no token
        assert rpc.code("ping") == "unauthenticated"
        assert rpc.ok("hello", token=site.tokens["supervisor"])["role"] == "supervisor"
        assert rpc.code("ping") == "ok"
    finally:
        rpc.close()


def test_failed_hellos_are_logged_answered_and_slowed_down(tmp_path: Path) -> None:
    tokens, toml = tokens_config((Role.INTEGRATION, None))
    with running(tmp_path, toml) as daemon:
        rpc = Rpc(daemon.port)
        took = []
        for attempt in range(4):
            started = time.monotonic()
            error, _ = rpc.call("hello", token=f"guess-{attempt}")
            took.append(time.monotonic() - started)
            assert error["code"] == "unauthenticated"
        # The connection stays open and stays unauthenticated.
        assert rpc.code("ping") == "unauthenticated"
        refused = daemon.records("hello refused")
        assert [r["failures"] for r in refused] == [1, 2, 3, 4]  # later only 8, 16, 32...
        # Each failure from this address doubles the wait before the next answer.
        assert took[0] < 0.1
        assert took[1] >= 0.08 and took[2] >= 0.18 and took[3] >= 0.38, took
        # The right token still works from the same address, after its turn.
        other = Rpc(daemon.port)
        assert other.ok("hello", token=tokens[0])["role"] == "integration"
        assert other.code("work.submit", queue="default") == "ok"
        assert daemon.errors() == []
