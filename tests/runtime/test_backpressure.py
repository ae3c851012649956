"""The dispatcher never waits on an agent: a stalled agent's full mailbox costs it its offers."""

from __future__ import annotations

import anyio
import pytest
from runtime_harness import LogRecorder, Running, connect

from acwd.core.agent import AgentMachine
from acwd.core.views import Wrapup
from acwd.runtime.agent_actor import AGENT_MAILBOX, AgentActor

pytestmark = pytest.mark.anyio


async def stalled_agent(run: Running, agent_id: str) -> AgentActor:
    """A logged-in, routable agent whose actor never runs and whose mailbox is full."""
    node = run.node
    actor = AgentActor(AgentMachine(agent_id, node.settings), node.clock, node)
    filled = 0
    while actor.send_nowait(("filler", filled)):
        filled += 1
    assert filled == AGENT_MAILBOX
    node.actors[agent_id] = actor
    out = actor.state.login(run.now())
    for effect in out.effects:  # the router learns of it as if its actor had delivered them
        await node.dispatcher.send(effect)
    await run.settle()
    assert node.router.agents[agent_id].routable
    return actor


async def test_items_go_around_a_stalled_agent(running: Running) -> None:
    node = running.node
    recorder = LogRecorder()
    node.log = recorder
    await stalled_agent(running, "stalled")  # idle the longest: first choice for every item
    await running.sleep(1)
    await node.login("bob", None)
    await running.sleep(1)
    await node.login("carol", None)

    with anyio.fail_after(5):  # virtual seconds: a blocked dispatcher would trip this
        await node.submit("w1", "default")
        await running.settle()
        assert node.work_view("w1").agent_id == "bob"
        await node.accept("w1", "bob")
        await node.submit("w2", "default")
        await running.settle()
        assert node.work_view("w2").agent_id == "carol"
        await node.accept("w2", "carol")

    warnings = [r for r in recorder.records if r[1] == "offer not delivered"]
    assert [r[2]["agent_id"] for r in warnings] == ["stalled", "stalled"]
    # The undelivered offers were not counted against the stalled agent.
    view = node.router.agents["stalled"]
    assert (view.routable, view.used) == (True, 0)

    # With every working agent busy, the next item waits rather than sit in a dead mailbox.
    await node.submit("w3", "default")
    await running.sleep(30)
    assert node.work_view("w3").state == "queued"
    retries = len([r for r in recorder.records if r[1] == "offer not delivered"]) - 2
    assert 1 <= retries <= 31  # at most one attempt per virtual second
    with anyio.fail_after(5):
        await node.end("w1")
        await node.acw_complete("w1", Wrapup())
        await running.settle()
    assert node.work_view("w3").agent_id == "bob"
    assert all(item.agent_id != "stalled" for item in node.router.items.values())


async def test_a_stalled_agent_does_not_hold_up_other_agents_timers(running: Running) -> None:
    node = running.node
    node.log = LogRecorder()
    await stalled_agent(running, "stalled")
    await node.login("bob", None)
    await connect(running, "bob", "w1")
    leg = await node.end("w1")
    await node.submit("w2", "default")
    await running.sleep_until(leg.acw.deadline)
    assert node.work_view("w2").agent_id == "bob"
    (ended,) = running.of("acw.ended", agent_id="bob")
    assert ended.reason == "timeout"
