"""The dispatcher's timers in virtual time: overflow, max wait, aging, and their lateness."""

from __future__ import annotations

import pytest
from runtime_harness import EPS, MS, Running

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "config",
    [{"queues": {"sales": {"overflow_after_s": 60, "overflow_queue": "help"}, "help": {}}}],
)
async def test_overflow_moves_the_item_at_its_boundary_keeping_its_place(
    running: Running,
) -> None:
    node = running.node
    await node.login("b", None, queues=["help"], status="away")
    first = await node.submit("w1", "sales")
    await running.sleep(30)
    await node.submit("w2", "help")  # waits in help, but arrived after w1

    await running.sleep_until(first.enqueued_at + 60 - MS)
    assert node.work_view("w1").queue == "sales"
    await running.sleep_until(first.enqueued_at + 60 + MS)
    view = node.work_view("w1")
    assert (view.queue, view.state, view.enqueued_at) == ("help", "queued", first.enqueued_at)
    (moved,) = running.of("work.overflowed")
    assert (moved.from_queue, moved.to_queue) == ("sales", "help")
    assert moved.at == pytest.approx(first.enqueued_at + 60, abs=EPS)

    await node.set_status("b", "available", None)
    await running.settle()
    assert node.work_view("w1").agent_id == "b"  # ahead of w2: it kept its enqueue time
    assert node.work_view("w2").state == "queued"
    assert all(s < EPS for _, s in running.lateness)


@pytest.mark.parametrize("config", [{"queues": {"default": {"max_wait_s": 600}}}])
async def test_max_wait_cancels_at_its_boundary(running: Running) -> None:
    node = running.node
    first = await node.submit("w1", "default")
    await running.sleep_until(first.enqueued_at + 600 - MS)
    assert node.work_view("w1").state == "queued"
    await running.sleep_until(first.enqueued_at + 600 + MS)
    view = node.work_view("w1")
    assert (view.state, view.cancel_reason) == ("cancelled", "max_wait")
    (cancelled,) = running.of("work.cancelled")
    assert cancelled.at == pytest.approx(first.enqueued_at + 600, abs=EPS)
    await node.login("a", None)
    await running.settle()
    assert not running.of("work.offered")


@pytest.mark.parametrize(
    "config", [{"queues": {"low": {"aging_step_s": 10}, "high": {"priority": 2}}}]
)
async def test_aging_lifts_a_long_waiting_item_above_a_higher_priority_queue(
    running: Running,
) -> None:
    node = running.node
    await node.submit("l1", "low")
    await running.sleep(25)
    await node.submit("h1", "high")
    await running.sleep(10)  # l1 has waited 35 s: 0 + 3 steps > 2
    await node.login("a", None)
    await running.settle()
    assert node.work_view("l1").agent_id == "a"

    await node.submit("l2", "low")
    await running.sleep(5)  # l2: 0 + 0 steps < 2
    await node.login("b", None)
    await running.settle()
    assert node.work_view("h1").agent_id == "b"
    assert node.work_view("l2").state == "queued"


@pytest.mark.parametrize(
    "config",
    [
        {
            "queues": {
                "sales": {"overflow_after_s": 60, "overflow_queue": "help", "offer_timeout_s": 90},
                "help": {},
            }
        }
    ],
)
async def test_an_overdue_timer_re_armed_on_requeue_is_not_reported_late(
    running: Running,
) -> None:
    node = running.node
    await node.login("a", None, queues=["sales"])
    await node.submit("w1", "sales")
    await running.sleep(70)  # offered past its overflow time: the timer skips it
    assert node.work_view("w1").agent_id == "a"
    await node.decline("w1", None)
    await running.settle()
    assert node.work_view("w1").queue == "help"  # it overflows as soon as it is back: right
    assert max(s for _, s in running.lateness) < EPS  # but the dispatcher was never late
