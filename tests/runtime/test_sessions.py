"""Connections and agents: own events to the logging-in connection, disconnect and grace."""

from __future__ import annotations

from typing import Any

import pytest
from runtime_harness import MS, Running, connect

from acwd.core.errors import DomainError, ErrorCode

pytestmark = pytest.mark.anyio

# One queue per agent, so each test agent can be given its own waiting item.
MANY_QUEUES = {"queues": {f"q{i}": {} for i in range(30)}}


def sink(conn_id: int, run: Running) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    run.node.bus.attach(conn_id, received.append)
    return received


async def test_the_agents_connection_receives_its_own_events(running: Running) -> None:
    node = running.node
    mine, other = sink(7, running), sink(8, running)
    await node.login("a", conn_id=7)
    await node.login("b", conn_id=8)
    await node.submit("w1", "default")
    await running.settle()
    holder = node.work_view("w1").agent_id
    received = mine if holder == "a" else other
    offered = [m for m in received if m["type"] == "work.offered"]
    assert [m["work_id"] for m in offered] == ["w1"]
    assert offered[0]["agent_id"] == holder
    # The other agent's connection saw nothing about w1.
    unrelated = other if holder == "a" else mine
    assert not [m for m in unrelated if m.get("work_id") == "w1"]


async def test_disconnect_requeues_the_offer_at_once_and_logs_out_after_grace(
    running: Running,
) -> None:
    node = running.node
    received = sink(7, running)
    await node.login("a", conn_id=7)
    await node.submit("w1", "default")
    await running.settle()
    first = node.work_view("w1")
    assert first.agent_id == "a"

    await node.connection_closed(7)
    closed_at = running.now()
    await running.settle()
    view = node.work_view("w1")
    assert (view.state, view.enqueued_at) == ("queued", first.enqueued_at)
    a = node.agent_view("a")
    assert (a.status, a.connected, a.routable, a.legs) == ("available", False, False, ())
    assert not running.of("work.declined") and not running.of("work.offer_expired")
    seen = len(received)

    await running.sleep_until(closed_at + 30 - MS)
    assert node.agent_view("a").status == "available"
    assert node.work_view("w1").state == "queued"  # never re-offered to a gone connection
    await running.sleep_until(closed_at + 30 + MS)
    a = node.agent_view("a")
    assert (a.state, a.status, a.reason) == ("offline", "offline", "disconnected")
    assert len(received) == seen  # the closed connection gets nothing more

    # A later agent gets the item with its original place.
    await node.login("b", None)
    await running.settle()
    assert node.work_view("w1").agent_id == "b"


async def test_login_again_within_grace_keeps_the_agent(running: Running) -> None:
    node = running.node
    await node.login("a", conn_id=7)
    await node.submit("w1", "default")
    await node.connection_closed(7)
    closed_at = running.now()
    await running.sleep(20)
    await node.login("a", conn_id=8)
    await running.settle()
    assert node.work_view("w1").agent_id == "a"  # the returned offer comes back to her

    await running.sleep_until(closed_at + 30 + MS)
    a = node.agent_view("a")
    assert (a.status, a.connected) == ("available", True)
    await node.accept("w1", "a")
    # Closing the old connection again is a no-op: the agent is bound to the new one.
    await node.connection_closed(7)
    await running.sleep(60)
    assert node.agent_view("a").connected


# Regression: the login itself may make the agent routable, so the connection must be bound
# before it, or the offer it triggers never reaches the agent.


@pytest.mark.parametrize("config", [MANY_QUEUES])
@pytest.mark.parametrize("relogin", [False, True], ids=["first_login", "login_within_grace"])
async def test_an_offer_made_by_the_login_itself_reaches_the_new_connection(
    running: Running, relogin: bool
) -> None:
    # Whether the offer overtakes the bind depends on task scheduling (trio randomizes it), so
    # the scenario runs for many agents; every one of them must hear of its offer.
    node = running.node
    agents = [f"a{i}" for i in range(30)]
    for i, agent in enumerate(agents):
        if relogin:
            await node.login(agent, conn_id=i, queues=[f"q{i}"])
        await node.submit(f"w{i}", f"q{i}")
        await running.settle()
        if relogin:
            await node.connection_closed(i)
    await running.sleep(10)
    missed = []
    for i, agent in enumerate(agents):
        received = sink(100 + i, running)
        await node.login(agent, conn_id=100 + i, queues=[f"q{i}"])
        await running.settle()
        assert node.work_view(f"w{i}").agent_id == agent
        if [m["type"] for m in received if m.get("work_id") == f"w{i}"] != ["work.offered"]:
            missed.append(agent)
    assert missed == []


async def test_active_work_and_acw_survive_a_disconnect(running: Running) -> None:
    node = running.node
    await node.login("a", conn_id=7)
    await connect(running, "a", "w1")
    await node.connection_closed(7)
    await running.sleep(31)
    # Past the grace the agent is due offline but still holds the leg; the change waits.
    a = node.agent_view("a")
    assert (a.state, a.pending_status, a.legs[0].state) == ("busy", "offline", "active")
    leg = await node.end("w1")
    assert node.agent_view("a").state == "acw"
    await running.sleep_until(leg.acw.deadline - MS)
    assert node.agent_view("a").state == "acw"
    await running.sleep_until(leg.acw.deadline + MS)
    a = node.agent_view("a")
    assert (a.state, a.reason) == ("offline", "disconnected")
    (record,) = await node.journal.wrapups_of("w1")
    assert record.reason == "timeout"


async def test_logout_with_active_work_is_refused_unless_forced(running: Running) -> None:
    node = running.node
    await node.login("a", None)
    await connect(running, "a", "w1")
    with pytest.raises(DomainError) as refused:
        await node.logout("a")
    assert refused.value.code is ErrorCode.HAS_ACTIVE_WORK
    assert node.agent_view("a").state == "busy"
    view = await node.logout("a", force=True)
    assert view.state == "offline"
    await running.settle()
    (record,) = await node.journal.wrapups_of("w1")
    assert record.reason == "logout"
    assert node.work_view("w1").state == "completed"


async def test_login_into_away_gets_no_offer(running: Running) -> None:
    node = running.node
    await node.submit("w1", "default")
    await node.login("a", None, status="away", reason="meeting")
    await running.sleep(60)
    assert node.work_view("w1").state == "queued"
    assert not running.of("work.offered") and not running.of("work.refused")
    await node.set_status("a", "available", None)
    await running.settle()
    assert node.work_view("w1").agent_id == "a"
