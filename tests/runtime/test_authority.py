"""The agent actor is the authority: an offer built on the dispatcher's stale view is refused,
and the item goes back to its queue without losing its place."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
from runtime_harness import Running, connect

from acwd.core.agent import AgentMachine
from acwd.core.events import Outcome
from acwd.core.views import Status
from acwd.runtime.actor import Actor, Call, Reply

pytestmark = pytest.mark.anyio


def post(actor: Actor[Any], fn: Callable[[Any, float], Outcome]) -> Reply:
    """Put a call in an actor's mailbox without yielding, so the test fixes the message order."""
    reply = Reply()
    assert actor.send_nowait(Call(fn, reply))
    return reply


def go_away(m: AgentMachine) -> None:
    m.status, m.reason = Status.AWAY, "unplugged"


def lose_skill(m: AgentMachine) -> None:
    m.skills = {}


def leave_queue(m: AgentMachine) -> None:
    m.queues = ("other",)


def shrink(m: AgentMachine) -> None:
    m.capacity = 0


# Each change is made to the agent's own machine behind the dispatcher's back, so the router still
# believes the agent can take the item.
STALE = {
    "away": (go_away, "status is away"),
    "skill": (lose_skill, "lacks skill spanish at level 2"),
    "queue": (leave_queue, "not a member of queue default"),
    "capacity": (shrink, "not enough free capacity"),
}


@pytest.mark.parametrize("config", [{"queues": {"default": {}, "other": {}}}])
@pytest.mark.parametrize("change", list(STALE.values()), ids=list(STALE))
async def test_an_offer_on_a_stale_view_is_refused_and_the_item_keeps_its_place(
    running: Running, change: tuple[Callable[[AgentMachine], None], str]
) -> None:
    node = running.node
    mutate, reason = change
    await node.login("a", None, skills={"spanish": 3})
    first = await node.submit("w1", "default", skills={"spanish": 2})
    await running.settle()
    await node.decline("w1", None)  # w1 now waits (a backs off from it), enqueued first
    await running.settle()

    mutate(node.actors["a"].state)
    await node.submit("w2", "default", skills={"spanish": 2})
    await running.settle()
    (refused,) = running.of("work.refused")
    assert (refused.work_id, refused.agent_id, refused.reason) == ("w2", "a", reason)
    assert not running.of("work.offered", work_id="w2")
    assert node.actors["a"].state.legs == {}
    # The refusal corrected the router's view of the agent.
    assert node.router.agents["a"] == node.actors["a"].state.routing_view()
    view = node.work_view("w2")
    assert view.state == "queued" and view.agent_id is None

    # Another agent takes the items in their original order: w1, then w2.
    await node.login("b", None, capacity=2, skills={"spanish": 2})
    await running.settle()
    assert node.work_view("w1").agent_id == "b"
    assert node.work_view("w2").agent_id == "b"
    offers = [e.work_id for e in running.of("work.offered", agent_id="b")]
    assert offers == ["w1", "w2"]
    assert node.work_view("w1").enqueued_at == first.enqueued_at


async def test_away_racing_a_submit_is_refused_by_the_agent(running: Running) -> None:
    node = running.node
    await node.login("a", None)
    await node.submit("w0", "default")
    await running.settle()
    await node.decline("w0", None)  # an older item that waits while a backs off
    await running.settle()
    older = node.work_view("w0")

    # The status change is in a's mailbox before the dispatcher hears of it, and the submit is in
    # the dispatcher's mailbox before a's new view: the router offers on the old view.
    away = post(node.actors["a"], lambda m, now: m.set_status(now, "away", "lunch"))
    submitted = post(node.dispatcher, lambda r, now: r.submit(now, "w1", "default"))
    await away.wait()
    await submitted.wait()
    await running.settle()

    (refused,) = running.of("work.refused")
    assert (refused.work_id, refused.agent_id) == ("w1", "a")
    assert node.agent_view("a").state == "away"
    assert node.work_view("w1").state == "queued"
    # No backoff after a refusal: once back, a is offered the oldest item first.
    await running.sleep(10)
    await node.set_status("a", "available", None)
    await running.settle()
    assert node.work_view("w0").agent_id == "a"
    assert node.work_view("w0").enqueued_at == older.enqueued_at
    assert node.work_view("w1").state == "queued"


async def test_an_offer_racing_the_start_of_acw_is_refused(running: Running) -> None:
    node = running.node
    await node.login("a", None, capacity=2)
    await connect(running, "a", "w1")
    assert node.router.agents["a"].routable  # one slot still free

    ended = post(node.actors["a"], lambda m, now: m.end(now, "w1"))
    submitted = post(node.dispatcher, lambda r, now: r.submit(now, "w2", "default"))
    leg = await ended.wait()
    await submitted.wait()
    await running.settle()

    (refused,) = running.of("work.refused")
    assert (refused.work_id, refused.reason) == ("w2", "the agent is in ACW")
    assert node.work_view("w2").state == "queued"
    await running.sleep_until(leg.acw.deadline)
    assert node.work_view("w2").agent_id == "a"
    offered = running.of("work.offered", work_id="w2")[-1]
    assert offered.at >= leg.acw.deadline


async def test_concurrent_status_changes_and_submits_never_reach_an_away_agent(
    running: Running,
) -> None:
    node = running.node
    for i in range(20):
        await node.login(f"a{i}", None)
    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(node.set_status, f"a{i}", "away", "break")
            tg.start_soon(node.submit, f"w{i}", "default")
    await running.settle()
    # Replay the published events: every offer found its agent available at that moment.
    status = {f"a{i}": "available" for i in range(20)}
    for event in running.events:
        if event.type == "agent.state_changed":
            status[event.agent_id] = event.status
        elif event.type == "work.offered":
            assert status[event.agent_id] == "available", event
    for i in range(20):
        assert node.agent_view(f"a{i}").status == "away"
        view = node.work_view(f"w{i}")
        assert view.state in ("queued", "offered")
        if view.state == "offered":  # offered before the change: the agent holds it
            assert f"w{i}" in node.actors[view.agent_id].state.legs
