"""Offers in virtual time: timeout, decline and the re-offer backoff, cancel of an offer."""

from __future__ import annotations

import pytest
from runtime_harness import EPS, MS, Running

from acwd.core.errors import DomainError, ErrorCode

pytestmark = pytest.mark.anyio


async def test_offer_timeout_sends_the_agent_away_and_keeps_the_items_place(
    running: Running,
) -> None:
    node = running.node
    await node.login("alice", None)
    await node.submit("w1", "default")
    await running.settle()
    first = node.work_view("w1")
    assert first.state == "offered" and first.agent_id == "alice"
    expires = first.offer_expires_at
    assert expires == pytest.approx(first.enqueued_at + 20, abs=EPS)
    await running.sleep(5)
    await node.submit("w2", "default")  # waits behind w1: alice has capacity 1

    await running.sleep_until(expires - MS)
    assert node.work_view("w1").agent_id == "alice"
    assert node.agent_view("alice").status == "available"

    await running.sleep_until(expires + MS)
    view = node.work_view("w1")
    assert (view.state, view.enqueued_at) == ("queued", first.enqueued_at)
    alice = node.agent_view("alice")
    assert (alice.state, alice.status, alice.reason) == ("away", "away", "no_answer")
    assert alice.no_answer_count == 1
    (expired,) = running.of("work.offer_expired", work_id="w1")
    assert expired.at == pytest.approx(expires, abs=EPS)
    assert running.of("agent.state_changed", agent_id="alice")[-1].reason == "no_answer"
    requeued = running.of("work.queued", work_id="w1")[-1]
    assert requeued.enqueued_at == first.enqueued_at
    assert running.lateness and all(s < EPS for _, s in running.lateness)

    # Too late to accept: the item is back in its queue.
    with pytest.raises(DomainError) as late:
        await node.accept("w1", "alice")
    assert late.value.code is ErrorCode.INVALID_STATE

    # The next agent gets w1 first: it kept its place ahead of w2.
    await node.login("bob", None)
    await running.settle()
    assert node.work_view("w1").agent_id == "bob"
    assert node.work_view("w2").state == "queued"
    accepted = await node.accept("w1", "bob")
    assert accepted.state == "active"
    (event,) = running.of("work.accepted", work_id="w1")
    assert event.wait_s == pytest.approx(expires + MS - first.enqueued_at, abs=EPS)


async def test_a_lone_agent_gets_a_declined_item_back_after_exactly_the_backoff(
    running: Running,
) -> None:
    node = running.node
    await node.login("alice", None)
    first = await node.submit("w1", "default")
    await running.sleep(3)
    await node.decline("w1", "wrong language")
    declined_at = running.now()
    await running.settle()
    view = node.work_view("w1")
    assert (view.state, view.enqueued_at) == ("queued", first.enqueued_at)
    alice = node.agent_view("alice")
    assert (alice.state, alice.status) == ("available", "available")  # on_decline_status

    # The backoff is per item: other work still reaches her at once.
    await node.submit("w2", "default")
    await running.settle()
    assert node.work_view("w2").agent_id == "alice"
    await node.accept("w2", "alice")
    await node.end("w2")
    await node.acw_force_end("w2")
    await running.settle()
    assert node.work_view("w1").state == "queued"

    await running.sleep_until(declined_at + 10 - MS)
    assert node.work_view("w1").state == "queued"
    await running.sleep_until(declined_at + 10 + MS)
    view = node.work_view("w1")
    assert (view.state, view.agent_id) == ("offered", "alice")
    again = running.of("work.offered", work_id="w1")[-1]
    assert again.at == pytest.approx(declined_at + 10, abs=EPS)
    assert [e.type for e in running.of("work.declined", work_id="w1")] == ["work.declined"]


@pytest.mark.parametrize("config", [{"defaults": {"reoffer_backoff_s": 4}}])
async def test_a_declined_item_goes_to_another_agent_at_once(running: Running) -> None:
    node = running.node
    await node.login("alice", None)
    await running.sleep(1)
    await node.login("bob", None)
    await node.submit("w1", "default")
    await running.settle()
    assert node.work_view("w1").agent_id == "alice"  # idle longest
    await node.decline("w1", None)
    await running.settle()
    assert node.work_view("w1").agent_id == "bob"
    await node.decline("w1", None)
    await running.settle()
    # Both are backing off: the item waits until the first backoff ends, then goes to alice.
    assert node.work_view("w1").state == "queued"
    await running.sleep(4)
    assert node.work_view("w1").agent_id == "alice"


@pytest.mark.parametrize("config", [{"channels": {"chat": {"offer_timeout_s": 0}}}])
async def test_offer_timeout_zero_auto_accepts(running: Running) -> None:
    node = running.node
    await node.login("alice", None)
    view = await node.submit("w1", "default")
    await running.settle()
    view = node.work_view("w1")
    assert (view.state, view.agent_id) == ("active", "alice")
    await running.sleep(3600)  # no timeout can fire
    assert node.work_view("w1").state == "active"
    assert not running.of("work.offer_expired")


async def test_cancel_withdraws_an_offer_and_frees_the_agent(running: Running) -> None:
    node = running.node
    await node.login("alice", None)
    await node.submit("w1", "default")
    await running.sleep(1)
    await node.submit("w2", "default")
    cancelled = await node.cancel("w1", "abandoned")
    assert (cancelled.state, cancelled.cancel_reason) == ("cancelled", "abandoned")
    await running.settle()
    assert node.work_view("w2").agent_id == "alice"
    assert node.agent_view("alice").legs[0].work_id == "w2"
    await node.accept("w2", "alice")
    await running.sleep(30)  # the withdrawn offer's timer went with it
    assert not running.of("work.offer_expired")
    with pytest.raises(DomainError) as active:
        await node.cancel("w2")
    assert active.value.code is ErrorCode.INVALID_STATE
