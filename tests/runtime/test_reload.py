"""config.reload on a running node: a good file applies atomically, a bad one changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from runtime_harness import EPS, MEMORY, Running, connect

from acwd.core.config import Settings
from acwd.core.errors import DomainError, ErrorCode
from acwd.core.views import Wrapup

pytestmark = pytest.mark.anyio

BEFORE = {"queues": {"default": {"acw_seconds": 90}, "billing": {"acw_seconds": 60}}}


@pytest.fixture
def config() -> dict[str, Any]:
    return BEFORE


def settings(data: dict[str, Any]) -> Settings:
    return Settings.from_dict({"journal": MEMORY, **data})


def in_use(run: Running) -> set[int]:
    """Which Settings objects the node, the router and the agents hold."""
    node = run.node
    held = [node.settings, node.router.settings] + [a.state.settings for a in node.actors.values()]
    return {id(s) for s in held}


async def test_a_good_reload_applies_to_the_next_leg(running: Running) -> None:
    node = running.node
    await node.login("a", None, queues=["default"])
    await connect(running, "a", "w1")  # offered under the old settings

    new = settings(
        {"queues": {"default": {"acw_seconds": 30}, "billing": {"acw_seconds": 60}, "vip": {}}}
    )
    changes = await node.reload(new)
    assert any("acw_seconds" in change for change in changes)
    assert in_use(running) == {id(new)}

    # The leg in progress keeps the settings it was offered with; the next leg gets the new ones.
    leg = await node.end("w1")
    assert leg.acw.deadline == pytest.approx(leg.ended_at + 90, abs=EPS)
    await node.acw_complete("w1", Wrapup())
    await connect(running, "a", "w2")
    leg = await node.end("w2")
    assert leg.acw.deadline == pytest.approx(leg.ended_at + 30, abs=EPS)

    # The new queue is live.
    await node.login("b", None, queues=["vip"])
    await node.submit("v1", "vip")
    await running.settle()
    assert node.work_view("v1").agent_id == "b"


async def test_removing_a_queue_that_holds_work_is_refused_and_changes_nothing(
    running: Running,
) -> None:
    node = running.node
    old = node.settings
    await node.login("a", None, queues=["default"])
    await node.submit("b1", "billing")
    await running.settle()
    waiting = node.work_view("b1")
    assert waiting.state == "queued"

    # Also changes default's ACW: a refused reload must not apply that part either.
    with pytest.raises(DomainError) as refused:
        await node.reload(settings({"queues": {"default": {"acw_seconds": 30}}}))
    assert refused.value.code is ErrorCode.INVALID_STATE
    assert refused.value.data == {"queues": ["billing"]}
    assert in_use(running) == {id(old)}
    assert set(node.router.queues) == {"default", "billing"}

    await connect(running, "a", "w1")
    leg = await node.end("w1")
    assert leg.acw.deadline == pytest.approx(leg.ended_at + 90, abs=EPS)

    # The billing item is still waiting in its place and is routed when someone serves it.
    assert node.work_view("b1") == waiting
    await node.login("b", None, queues=["billing"])
    await running.settle()
    assert node.work_view("b1").agent_id == "b"


async def test_removing_an_empty_queue_is_accepted(running: Running) -> None:
    node = running.node
    await node.login("a", None)  # serves every queue
    await connect(running, "a", "w1")
    new = settings({"queues": {"default": {"acw_seconds": 90}}})
    await node.reload(new)
    assert set(node.router.queues) == {"default"}
    with pytest.raises(DomainError) as gone:
        await node.submit("b1", "billing")
    assert gone.value.code is ErrorCode.NOT_FOUND
    # Work in progress carries on.
    await node.end("w1")
    await node.acw_complete("w1", Wrapup())
    await running.settle()
    assert node.work_view("w1").state == "completed"
