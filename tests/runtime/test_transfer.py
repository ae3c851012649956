"""work.transfer in the running daemon: ACW for the transferring agent, a second leg elsewhere."""

from __future__ import annotations

import pytest
from runtime_harness import EPS, MS, Running, connect

from acwd.core.views import Wrapup

pytestmark = pytest.mark.anyio

QUEUES = {"sales": {"acw_seconds": 45}, "help": {"acw_seconds": 20}}


@pytest.mark.parametrize("config", [{"queues": QUEUES}])
async def test_transfer_starts_acw_in_the_old_queue_and_a_new_leg_in_the_new(
    running: Running,
) -> None:
    node = running.node
    await node.login("a", None, queues=["sales"])
    await node.login("b", None, queues=["help"])
    await connect(running, "a", "w1", "sales")
    first = node.work_view("w1")
    await running.sleep(60)
    view = await node.transfer("w1", "help")
    await running.settle()
    a = node.agent_view("a")
    assert a.state == "acw"
    assert a.legs[0].acw.deadline == pytest.approx(a.legs[0].ended_at + 45, abs=EPS)
    view = node.work_view("w1")
    assert (view.queue, view.agent_id, view.enqueued_at) == ("help", "b", first.enqueued_at)
    (moved,) = running.of("work.transferred")
    assert (moved.from_queue, moved.to_queue) == ("sales", "help")

    await node.accept("w1", "b")
    leg_b = await node.end("w1", "b")
    assert leg_b.acw.deadline == pytest.approx(leg_b.ended_at + 20, abs=EPS)
    await node.acw_complete("w1", Wrapup(disposition="fixed"), "b")
    await running.settle()
    assert node.work_view("w1").state == "completed"
    await running.sleep_until(a.legs[0].acw.deadline + MS)
    records = await node.journal.wrapups_of("w1")
    assert [(r.agent_id, r.queue, r.reason) for r in records] == [
        ("b", "help", "completed"),
        ("a", "sales", "timeout"),
    ]


@pytest.mark.parametrize("config", [{"queues": QUEUES, "defaults": {"acw_scope": "slot"}}])
async def test_the_transferring_agent_does_not_get_the_item_back_while_wrapping_it(
    running: Running,
) -> None:
    node = running.node
    await node.login("a", None, capacity=2)  # serves both queues; slot scope keeps it routable
    await connect(running, "a", "w1", "sales")
    await node.transfer("w1", "help")
    await running.settle()
    a = node.agent_view("a")
    assert a.routable and a.state == "acw"
    deadline = a.legs[0].acw.deadline
    assert node.work_view("w1").state == "queued"
    await node.submit("w2", "help")
    await running.settle()
    assert node.work_view("w2").agent_id == "a"  # other work still reaches her
    await node.accept("w2", "a")
    await node.end("w2", "a")  # now two legs in ACW hold both slots
    await node.acw_complete("w2", Wrapup(), "a")

    await running.sleep_until(deadline - MS)
    assert node.work_view("w1").state == "queued"
    await running.sleep_until(deadline + MS)
    assert node.work_view("w1").agent_id == "a"


@pytest.mark.parametrize(
    "config",
    [{"queues": QUEUES, "defaults": {"acw_scope": scope}} for scope in ("agent", "slot")],
    ids=["agent_scope", "slot_scope"],
)
async def test_a_transfer_is_not_offered_back_to_the_transferring_agent(
    running: Running,
) -> None:
    node = running.node
    await node.login("a", None, capacity=2)
    await connect(running, "a", "w1", "sales")
    await node.transfer("w1", "help")
    await running.settle()
    assert node.work_view("w1").state == "queued"
    assert not running.of("work.refused")
