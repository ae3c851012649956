"""Supervision: an unexpected exception in one actor is logged with its traceback, the caller gets
``internal``, the actor goes on from its state before that message, and nothing else is hurt."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from runtime_harness import EPS, LogRecorder, Running, connect

import acwd.runtime.actor
from acwd.core.agent import AgentMachine
from acwd.core.errors import DomainError, ErrorCode
from acwd.core.events import LegChanged
from acwd.core.invariants import check_invariants
from acwd.core.routing import Router
from acwd.core.views import Wrapup

pytestmark = pytest.mark.anyio


@pytest.fixture
def actor_log(monkeypatch: pytest.MonkeyPatch) -> LogRecorder:
    recorder = LogRecorder()
    monkeypatch.setattr(acwd.runtime.actor, "log", recorder)
    return recorder


def crash_once(
    monkeypatch: pytest.MonkeyPatch,
    cls: type,
    name: str,
    when: Callable[..., bool],
    after: bool,
) -> list[Any]:
    """Patch ``cls.name`` to raise RuntimeError the first time ``when(self, *args)`` holds:
    before doing anything (``after=False``) or after the real method changed the state."""
    original = getattr(cls, name)
    fired: list[Any] = []

    def patched(self: Any, *args: Any, **kwargs: Any) -> Any:
        if fired or not when(self, *args):
            return original(self, *args, **kwargs)
        fired.append(args)
        if after:
            original(self, *args, **kwargs)
        raise RuntimeError(f"injected fault in {name}")

    monkeypatch.setattr(cls, name, patched)
    return fired


def crash_logged(recorder: LogRecorder, actor: str) -> dict[str, Any]:
    (record,) = [r for r in recorder.records if r[0] == "error"]
    _, _, fields = record
    assert fields["actor"] == actor
    assert isinstance(fields["exc_info"], RuntimeError)  # structlog renders its traceback
    return fields


def assert_consistent(run: Running) -> None:
    machines = [actor.state for actor in run.node.actors.values()]
    assert check_invariants(run.node.router, machines) == []


async def test_an_agent_actor_crash_rolls_back_that_message_only(
    running: Running, monkeypatch: pytest.MonkeyPatch, actor_log: LogRecorder
) -> None:
    node = running.node
    await node.login("a", None)
    await node.login("b", None)
    await connect(running, "a", "w1")
    await connect(running, "b", "w2")
    fired = crash_once(
        monkeypatch, AgentMachine, "end", lambda m, *_: m.agent_id == "a", after=True
    )

    with pytest.raises(DomainError) as crashed:
        await node.end("w1")
    assert crashed.value.code is ErrorCode.INTERNAL
    assert fired
    fields = crash_logged(actor_log, "agent:a")
    assert fields["kind"] == "agent"
    assert node.actors["a"].crashes == 1
    await running.settle()
    # The half-done end was rolled back: the leg is active, no ACW began, the router agrees.
    a = node.agent_view("a")
    assert (a.state, a.legs[0].state, a.legs[0].acw) == ("busy", "active", None)
    assert not running.of("acw.started", agent_id="a")
    assert node.work_view("w1").state == "active"
    assert_consistent(running)

    # Another agent is untouched and keeps working.
    assert node.agent_view("b").legs[0].state == "active"
    leg_b = await node.end("w2")
    assert leg_b.state == "wrapping"

    # The crashed actor still serves its agent, from the state it had before the message.
    leg = await node.end("w1")
    assert leg.state == "wrapping"
    assert leg.acw.deadline == pytest.approx(leg.ended_at + 90, abs=EPS)
    record = await node.acw_complete("w1", Wrapup(disposition="ok"))
    assert record.reason == "completed"
    await running.settle()
    assert node.work_view("w1").state == "completed"
    assert [r.work_id for r in await node.journal.wrapup_list()] == ["w1"]
    assert_consistent(running)


async def test_a_crash_in_an_agent_timer_is_retried_and_the_acw_ends_once(
    running: Running, monkeypatch: pytest.MonkeyPatch, actor_log: LogRecorder
) -> None:
    node = running.node
    await node.login("a", None)
    await node.login("b", None)
    await connect(running, "a", "w1")
    await connect(running, "b", "w2")
    leg = await node.end("w1")
    leg_b = await node.end("w2")
    crash_once(monkeypatch, AgentMachine, "tick", lambda m, *_: m.agent_id == "a", after=True)

    await running.sleep_until(leg.acw.deadline + 0.5)
    crash_logged(actor_log, "agent:a")
    assert node.agent_view("a").state == "acw"  # rolled back; tried again a second later
    assert node.agent_view("b").state == "available"  # b's timer fired on time

    await running.sleep_until(leg.acw.deadline + 1.5)
    assert node.agent_view("a").state == "available"
    (ended,) = running.of("acw.ended", agent_id="a")
    assert ended.at >= leg.acw.deadline
    assert [r.work_id for r in await node.journal.wrapups_of("w1")] == ["w1"]
    assert running.of("acw.ended", agent_id="b")[0].at == pytest.approx(leg_b.acw.deadline, abs=EPS)
    assert_consistent(running)


async def test_the_lateness_of_a_retried_timer_is_reported(
    running: Running, monkeypatch: pytest.MonkeyPatch, actor_log: LogRecorder
) -> None:
    node = running.node
    await node.login("a", None)
    await connect(running, "a", "w1")
    leg = await node.end("w1")
    crash_once(monkeypatch, AgentMachine, "tick", lambda m, *_: True, after=False)
    await running.sleep_until(leg.acw.deadline + 2)
    (ended,) = running.of("acw.ended", agent_id="a")
    late = ended.at - leg.acw.deadline
    assert late >= 1.0 - EPS
    assert max(s for _, s in running.lateness) >= late - EPS


async def test_a_dispatcher_crash_leaves_routing_working(
    running: Running, monkeypatch: pytest.MonkeyPatch, actor_log: LogRecorder
) -> None:
    node = running.node
    await node.login("a", None)
    await node.login("b", None)
    await connect(running, "a", "w0")
    crash_once(monkeypatch, Router, "submit", lambda r, now, work_id, *_: work_id == "w1", False)

    with pytest.raises(DomainError) as crashed:
        await node.submit("w1", "default")
    assert crashed.value.code is ErrorCode.INTERNAL
    fields = crash_logged(actor_log, "dispatcher")
    assert fields["kind"] == "dispatcher"
    assert node.dispatcher.crashes == 1
    assert "w1" not in node.router.items

    # Agents and the dispatcher go on: the same submit now works and is routed.
    await node.submit("w1", "default")
    await running.settle()
    assert node.work_view("w1").agent_id == "b"
    await node.end("w0", "a")
    assert node.agent_view("a").state == "acw"
    await node.submit("w2", "default")
    await running.settle()
    assert node.work_view("w2").state == "queued"  # a is in ACW, b is busy
    assert_consistent(running)


async def test_a_dispatcher_crash_after_a_change_rolls_the_change_back(
    running: Running, monkeypatch: pytest.MonkeyPatch, actor_log: LogRecorder
) -> None:
    node = running.node
    crash_once(monkeypatch, Router, "submit", lambda r, now, work_id, *_: work_id == "w1", True)
    with pytest.raises(DomainError) as crashed:
        await node.submit("w1", "default")
    assert crashed.value.code is ErrorCode.INTERNAL
    assert "w1" not in node.router.items
    await node.submit("w1", "default")


async def test_a_dispatcher_crash_on_an_agent_effect_does_not_strand_the_item(
    running: Running, monkeypatch: pytest.MonkeyPatch, actor_log: LogRecorder
) -> None:
    node = running.node
    await node.login("a", None)
    await node.submit("w1", "default")
    await running.settle()

    def accepted(router: Router, now: float, effect: Any) -> bool:
        return isinstance(effect, LegChanged) and effect.leg.state == "active"

    crash_once(monkeypatch, Router, "apply", accepted, after=False)
    await node.accept("w1", "a")
    await running.settle()
    crash_logged(actor_log, "dispatcher")
    await node.end("w1", "a")  # named: the router would not find an active leg to route to
    await node.acw_complete("w1", Wrapup(), "a")
    await running.settle()
    assert node.work_view("w1").state == "completed"
    assert_consistent(running)
