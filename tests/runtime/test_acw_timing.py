"""ACW deadlines in the running daemon, under a mock clock: never early, lateness measured."""

from __future__ import annotations

import anyio
import pytest
from runtime_harness import Running

from acwd.core.views import ItemState

pytestmark = pytest.mark.anyio


async def test_waiting_item_is_offered_exactly_at_the_acw_deadline(running: Running) -> None:
    node = running.node
    late: list[float] = []
    node.lateness_observers.append(lambda kind, s: late.append(s))
    await node.login("alice", None)
    await node.submit("w1", "default")
    await running.settle()
    await node.accept("w1")
    await node.submit("w2", "default")
    leg = await node.end("w1")
    deadline = leg.acw.deadline
    assert deadline == pytest.approx(leg.ended_at + 90.0)

    await anyio.sleep(deadline - node.clock.now() - 0.001)
    await running.settle()
    assert node.work_view("w2").state == ItemState.QUEUED.value
    assert node.agent_view("alice").state == "acw"

    await anyio.sleep(0.002)
    await running.settle()
    assert node.work_view("w2").state == ItemState.OFFERED.value
    ended = [e for e in running.events if e.type == "acw.ended"]
    assert ended and ended[0].at >= deadline
    assert all(0 <= s < 1e-6 for s in late)
