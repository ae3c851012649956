"""Every ACW mode at its boundary, in the running daemon under a mock clock.

The pattern: an agent ends a leg, a second item arrives during the ACW, and the test stands one
millisecond before the deadline (the item waits, the agent is in ACW) and one millisecond after
it (the item has been offered, at a clock reading >= the deadline).
"""

from __future__ import annotations

from typing import Any

import pytest
from runtime_harness import EPS, MS, Running, connect

from acwd.core.errors import DomainError, ErrorCode
from acwd.core.views import Wrapup

pytestmark = pytest.mark.anyio


def queue(**overrides: Any) -> dict[str, Any]:
    return {"queues": {"default": overrides}}


async def assert_held_until(run: Running, deadline: float, waiting: str, agent: str) -> None:
    """``waiting`` is not offered to ``agent`` before ``deadline``, and is offered right at it."""
    node = run.node
    await run.sleep_until(deadline - MS)
    assert node.work_view(waiting).state == "queued"
    assert node.agent_view(agent).state == "acw"
    assert not run.of("work.offered", work_id=waiting)

    await run.sleep_until(deadline + MS)
    view = node.work_view(waiting)
    assert (view.state, view.agent_id) == ("offered", agent)
    (offered,) = run.of("work.offered", work_id=waiting)
    assert deadline - EPS <= offered.at <= deadline + EPS
    (ended,) = [e for e in run.of("acw.ended", agent_id=agent) if e.reason == "timeout"]
    assert ended.at >= deadline - EPS
    assert ended.deadline == pytest.approx(deadline, abs=EPS)
    # Under the mock clock every timer fires on its instant: the lateness reported is ~0.
    assert run.lateness and all(0 <= s < EPS for _, s in run.lateness)


MODES = {
    "timed": queue(acw_mode="timed", acw_seconds=45),
    "forced": queue(acw_mode="forced", acw_seconds=45),
    "on_request": queue(acw_mode="on_request", acw_seconds=45),
    "manual_with_max": queue(acw_mode="manual", acw_seconds=5, max_acw_seconds=45),
}


@pytest.mark.parametrize("config", list(MODES.values()), ids=list(MODES))
async def test_each_timed_mode_holds_new_work_until_its_deadline(
    running: Running, config: dict[str, Any]
) -> None:
    node = running.node
    mode = config["queues"]["default"]["acw_mode"]
    await node.login("alice", None)
    await connect(running, "alice", "w1")
    if mode == "on_request":
        await node.acw_request("w1")
    await running.sleep(100)  # talk
    leg = await node.end("w1")
    assert leg.acw.mode == mode
    deadline = leg.acw.deadline
    assert deadline == pytest.approx(leg.ended_at + 45, abs=EPS)

    await running.sleep(1)
    await node.submit("w2", "default")
    if mode == "forced":
        # The wrap-up is stored but the agent stays in ACW for the full time.
        kept = await node.acw_complete("w1", Wrapup(disposition="sale", notes="done early"))
        assert kept.state == "wrapping"
        await running.settle()
        assert node.agent_view("alice").state == "acw"

    await assert_held_until(running, deadline, "w2", "alice")
    (record,) = await node.journal.wrapups_of("w1")
    assert record.reason == "timeout"
    assert record.acw_seconds == pytest.approx(45, abs=EPS)
    assert record.disposition == ("sale" if mode == "forced" else "timeout")


async def test_extensions_move_the_deadline(running: Running) -> None:
    node = running.node
    await node.login("alice", None)
    await connect(running, "alice", "w1")
    leg = await node.end("w1")
    first = leg.acw.deadline
    await node.submit("w2", "default")

    await running.sleep(10)
    assert (await node.acw_extend("w1")).acw.deadline == pytest.approx(first + 30, abs=EPS)
    extended = (await node.acw_extend("w1")).acw.deadline
    assert extended == pytest.approx(first + 60, abs=EPS)
    with pytest.raises(DomainError) as refused:
        await node.acw_extend("w1")
    assert refused.value.code is ErrorCode.EXTENSION_LIMIT
    assert [e.extensions for e in running.of("acw.extended")] == [1, 2]

    await running.sleep_until(first + MS)  # the original deadline no longer counts
    assert node.work_view("w2").state == "queued"
    await assert_held_until(running, extended, "w2", "alice")
    (record,) = await node.journal.wrapups_of("w1")
    assert record.extensions == 2
    assert record.acw_seconds == pytest.approx(90 + 60, abs=EPS)


async def test_timed_acw_complete_releases_the_agent_at_once(running: Running) -> None:
    node = running.node
    await node.login("alice", None)
    await connect(running, "alice", "w1")
    await node.end("w1")
    await node.submit("w2", "default")
    await running.sleep(12)
    record = await node.acw_complete("w1", Wrapup(disposition="resolved"))
    assert (record.reason, record.disposition) == ("completed", "resolved")
    assert record.acw_seconds == pytest.approx(12, abs=EPS)
    await running.settle()
    view = node.work_view("w2")
    assert (view.state, view.agent_id) == ("offered", "alice")
    (offered,) = running.of("work.offered", work_id="w2")
    assert offered.at == pytest.approx(record.acw_ended_at, abs=EPS)


@pytest.mark.parametrize("config", [queue(acw_mode="on_request", acw_seconds=45)])
async def test_on_request_without_a_request_is_like_off(running: Running) -> None:
    node = running.node
    await node.login("alice", None)
    await connect(running, "alice", "w1")
    await node.submit("w2", "default")
    leg = await node.end("w1")
    assert leg.acw is None and leg.state == "done"
    await running.settle()
    assert node.work_view("w1").state == "completed"
    assert node.work_view("w2").agent_id == "alice"
    assert not running.of("acw.started")
    assert await node.journal.wrapups_of("w1") == []


@pytest.mark.parametrize("config", [queue(acw_mode="manual")])
async def test_manual_without_a_cap_lasts_until_acw_complete(running: Running) -> None:
    node = running.node
    await node.login("alice", None)
    await connect(running, "alice", "w1")
    leg = await node.end("w1")
    assert leg.acw.deadline is None
    await node.submit("w2", "default")
    await running.sleep(3 * 3600)
    assert node.agent_view("alice").state == "acw"
    assert node.work_view("w2").state == "queued"
    with pytest.raises(DomainError) as refused:
        await node.acw_extend("w1")
    assert refused.value.code is ErrorCode.INVALID_STATE

    record = await node.acw_complete("w1", Wrapup(disposition="callback"))
    assert record.reason == "completed"
    await running.settle()
    assert node.work_view("w2").agent_id == "alice"


@pytest.mark.parametrize("config", [queue(acw_mode="off")])
async def test_off_completes_the_item_at_work_end(running: Running) -> None:
    node = running.node
    await node.login("alice", None)
    await connect(running, "alice", "w1")
    await node.submit("w2", "default")
    await node.end("w1")
    await running.settle()
    assert node.work_view("w1").state == "completed"
    assert node.work_view("w2").agent_id == "alice"
    assert "acw.started" not in running.types()


async def test_away_requested_during_acw_applies_at_the_deadline(running: Running) -> None:
    node = running.node
    await node.login("alice", None)
    await connect(running, "alice", "w1")
    leg = await node.end("w1")
    await node.submit("w2", "default")
    view = await node.set_status("alice", "away", "lunch")
    assert (view.state, view.status, view.pending_status) == ("acw", "available", "away")

    await running.sleep_until(leg.acw.deadline + MS)
    view = node.agent_view("alice")
    assert (view.state, view.status, view.reason) == ("away", "away", "lunch")
    assert node.work_view("w2").state == "queued"
    # The agent never dropped back to available between the ACW and away.
    changes = [(e.from_, e.to) for e in running.of("agent.state_changed", agent_id="alice")]
    assert changes[-1] == ("acw", "away")
    assert ("acw", "available") not in changes


async def test_force_end_by_a_supervisor_releases_the_agent(running: Running) -> None:
    node = running.node
    await node.login("alice", None)
    await connect(running, "alice", "w1")
    await node.end("w1")
    await node.submit("w2", "default")
    await running.sleep(5)
    record = await node.acw_force_end("w1")
    assert (record.reason, record.disposition) == ("forced", "timeout")
    await running.settle()
    assert node.work_view("w2").agent_id == "alice"
