"""The runtime is backend-neutral: one short lifecycle, in real time on asyncio and in virtual
time on trio's MockClock."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import trio.testing
from runtime_harness import EPS, Running

from acwd.core.views import Wrapup

pytestmark = pytest.mark.anyio

ACW_S = 0.05  # short enough to wait for in real time on asyncio


@pytest.mark.parametrize("config", [{"queues": {"default": {"acw_seconds": ACW_S}}}])
@pytest.mark.parametrize(
    "anyio_backend",
    [
        pytest.param("asyncio", id="asyncio"),
        pytest.param(
            ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), id="trio-mockclock"
        ),
    ],
)
async def test_a_full_lifecycle(running: Running, anyio_backend: Any) -> None:
    node = running.node
    await node.login("alice", None)
    await node.submit("w1", "default")
    await running.settle()
    assert node.work_view("w1").agent_id == "alice"
    assert (await node.accept("w1")).state == "active"
    leg = await node.end("w1")
    deadline = leg.acw.deadline
    await node.submit("w2", "default")
    await running.settle()
    assert node.work_view("w2").state == "queued"
    assert node.agent_view("alice").state == "acw"

    with anyio.fail_after(5):
        while node.work_view("w2").state == "queued":
            await anyio.sleep(0.005)
    assert node.work_view("w2").agent_id == "alice"
    (ended,) = running.of("acw.ended", work_id="w1")
    assert ended.reason == "timeout" and ended.at >= deadline - EPS
    assert running.of("work.offered", work_id="w2")[0].at >= deadline - EPS
    assert running.lateness and max(s for _, s in running.lateness) < 0.5

    await node.accept("w2")
    await node.end("w2")
    record = await node.acw_complete("w2", Wrapup(disposition="done"))
    assert record.reason == "completed"
    await running.settle()
    assert [node.work_view(w).state for w in ("w1", "w2")] == ["completed", "completed"]
    assert node.agent_view("alice").state == "available"
    assert (await node.logout("alice")).state == "offline"
    assert [r.work_id for r in await node.journal.wrapup_list()] == ["w1", "w2"]
