"""The work and ACW lifecycle through a real daemon: every ACW mode, offers, presence, sessions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from e2e_support import DISCONNECT_GRACE_S, MODES, eventually, wait_event

from acwd.client import Client, RpcError

pytestmark = pytest.mark.anyio

Connect = Callable[..., Awaitable[Client]]


async def login(connect: Connect, agent_id: str, queue: str, **profile: Any) -> Client:
    """An agent's own connection (it receives the agent's events), logged in to ``queue``."""
    client = await connect()
    view = await client.agent_login(agent_id, queues=[queue], **profile)
    assert view["agent_id"] == agent_id
    return client


async def offered(agent: Client, admin: Client, queue: str, work_id: str) -> dict[str, Any]:
    """Submit ``work_id`` and wait for its offer on the agent's connection."""
    await admin.work_submit(queue, work_id=work_id)
    return await wait_event(agent, "work.offered", work_id=work_id)


async def active(agent: Client, admin: Client, queue: str, work_id: str) -> dict[str, Any]:
    await offered(agent, admin, queue, work_id)
    view = await agent.work_accept(work_id)
    assert view["state"] == "active"
    return view


async def records(admin: Client, work_id: str) -> list[dict[str, Any]]:
    """The wrap-up records of an item whose ACW ended without a request (timeout, logout).

    Those are written by the journal's next group commit (a few ms), not before the event.
    """

    async def written() -> list[dict[str, Any]]:
        return await admin.wrapup_get(work_id)

    found: list[dict[str, Any]] = await eventually(written, timeout=1.0, interval=0.005)
    return found


async def test_full_lifecycle(connect: Connect, admin: Client, new_queue: Any, uid: Any) -> None:
    queue, alice, w1 = new_queue("long"), uid("alice"), uid("w")
    agent = await login(connect, alice, queue, capacity=1, skills={"english": 5})
    assert (await admin.agent_get(alice))["state"] == "available"

    view = await admin.work_submit(
        queue, work_id=w1, priority=2, skills={"english": 3}, attributes={"customer": "c-9"}
    )
    assert view["work_id"] == w1 and view["attributes"] == {"customer": "c-9"}
    offer = await wait_event(agent, "work.offered", work_id=w1)
    assert offer["agent_id"] == alice and offer["expires_at"] > offer["at"]
    assert (await admin.agent_get(alice))["state"] == "busy"

    accepted = await agent.work_accept(w1)
    assert accepted["state"] == "active" and accepted["agent_id"] == alice
    leg = await agent.work_end(w1)
    assert leg["state"] == "wrapping"
    acw = leg["acw"]
    assert acw["mode"] == "timed" and acw["deadline"] == pytest.approx(acw["started_at"] + 60)
    started = await wait_event(agent, "acw.started", work_id=w1)
    assert started["deadline"] == pytest.approx(acw["deadline"])
    seen = await admin.agent_get(alice)
    assert seen["state"] == "acw" and not seen["routable"]

    record = await agent.acw_complete(
        w1,
        disposition="resolved",
        notes="refund issued",
        fields={"case": "C-1", "refund": 12.5},
        follow_ups=[{"title": "call back", "due_at": 1.0e9, "assignee": alice}],
    )
    assert record["reason"] == "completed" and record["disposition"] == "resolved"
    assert record["notes"] == "refund issued" and record["fields"]["refund"] == 12.5
    assert record["follow_ups"][0]["title"] == "call back"
    assert record["acw_seconds"] >= 0 and record["talk_s"] >= 0
    ended = await wait_event(agent, "acw.ended", work_id=w1)
    assert ended["reason"] == "completed"
    assert (await admin.agent_get(alice))["state"] == "available"
    assert (await admin.work_get(w1))["state"] == "completed"
    assert await admin.wrapup_get(w1) == [record]
    assert record in await admin.wrapup_list(agent_id=alice, queue=queue, limit=10)
    ended_at = record["acw_ended_at"]
    assert await admin.wrapup_list(since=ended_at - 1, until=ended_at + 1, agent_id=alice) == [
        record
    ]
    assert await admin.wrapup_list(since=ended_at + 1, agent_id=alice) == []
    stats = await admin.queue_stats(queue)
    assert stats["handled"] == 1 and stats["waiting"] == 0 and stats["agents"]["available"] == 1


async def test_waiting_item_is_not_offered_during_timed_acw(
    connect: Connect, admin: Client, new_queue: Any, uid: Any
) -> None:
    queue, alice, w1, w2 = new_queue("timed"), uid("alice"), uid("w"), uid("w")
    agent = await login(connect, alice, queue)
    await active(agent, admin, queue, w1)
    deadline = (await agent.work_end(w1))["acw"]["deadline"]
    waiting = await admin.work_submit(queue, work_id=w2)
    assert waiting["state"] == "queued" and waiting["agent_id"] is None

    offer = await wait_event(agent, "work.offered", work_id=w2)  # ACW is 0.5 s
    assert offer["at"] >= deadline, "offered before the ACW deadline"
    ended = (await records(admin, w1))[0]
    assert ended["reason"] == "timeout" and ended["disposition"] == "timeout"
    assert ended["acw_ended_at"] >= deadline and ended["acw_ended_at"] <= offer["at"]


async def test_early_exit_frees_the_agent_before_the_deadline(
    connect: Connect, admin: Client, new_queue: Any, uid: Any
) -> None:
    queue, alice, w1, w2 = new_queue("long"), uid("alice"), uid("w"), uid("w")
    agent = await login(connect, alice, queue)
    await active(agent, admin, queue, w1)
    deadline = (await agent.work_end(w1))["acw"]["deadline"]
    assert (await admin.work_submit(queue, work_id=w2))["state"] == "queued"
    await agent.acw_complete(w1, disposition="done")
    offer = await wait_event(agent, "work.offered", work_id=w2)
    assert offer["at"] < deadline


async def test_forced_acw_keeps_the_agent_until_the_deadline(
    connect: Connect, admin: Client, new_queue: Any, uid: Any
) -> None:
    queue, alice, w1, w2 = new_queue("forced"), uid("alice"), uid("w"), uid("w")
    agent = await login(connect, alice, queue)
    await active(agent, admin, queue, w1)
    deadline = (await agent.work_end(w1))["acw"]["deadline"]
    await admin.work_submit(queue, work_id=w2)

    stored = await agent.acw_complete(w1, disposition="resolved", notes="early")
    assert stored["state"] == "wrapping" and stored["wrapup"]["disposition"] == "resolved"
    assert (await admin.agent_get(alice))["state"] == "acw"
    assert (await admin.work_get(w2))["state"] == "queued"

    ended = await wait_event(agent, "acw.ended", work_id=w1)
    assert ended["reason"] == "timeout" and ended["at"] >= deadline
    record = (await records(admin, w1))[0]
    assert record["disposition"] == "resolved" and record["notes"] == "early"
    offer = await wait_event(agent, "work.offered", work_id=w2)
    assert offer["at"] >= deadline


async def test_manual_acw_has_no_deadline(
    connect: Connect, admin: Client, new_queue: Any, uid: Any
) -> None:
    queue, alice, w1 = new_queue("manual"), uid("alice"), uid("w")
    agent = await login(connect, alice, queue)
    await active(agent, admin, queue, w1)
    leg = await agent.work_end(w1)
    assert leg["acw"]["mode"] == "manual" and leg["acw"]["deadline"] is None
    assert (await admin.agent_get(alice))["state"] == "acw"
    record = await agent.acw_complete(w1)
    assert record["reason"] == "completed"
    assert (await admin.agent_get(alice))["state"] == "available"


async def test_on_request_acw_only_when_requested(
    connect: Connect, admin: Client, new_queue: Any, uid: Any
) -> None:
    queue, alice, w1, w2 = new_queue("onreq"), uid("alice"), uid("w"), uid("w")
    agent = await login(connect, alice, queue)
    await active(agent, admin, queue, w1)
    leg = await agent.work_end(w1)
    assert leg["acw"] is None and leg["state"] == "done"
    assert (await admin.work_get(w1))["state"] == "completed"
    assert (await admin.agent_get(alice))["state"] == "available"

    await active(agent, admin, queue, w2)
    await agent.acw_request(w2)
    leg = await agent.work_end(w2)
    assert leg["acw"]["mode"] == "on_request" and leg["acw"]["requested"] is True
    assert leg["acw"]["deadline"] == pytest.approx(leg["acw"]["started_at"] + 60)
    assert (await admin.agent_get(alice))["state"] == "acw"


async def test_acw_off_completes_at_work_end(
    connect: Connect, admin: Client, new_queue: Any, uid: Any
) -> None:
    queue, alice, w1 = new_queue("off"), uid("alice"), uid("w")
    agent = await login(connect, alice, queue)
    await active(agent, admin, queue, w1)
    leg = await agent.work_end(w1)
    assert leg["acw"] is None
    assert (await admin.agent_get(alice))["state"] == "available"
    assert await admin.wrapup_get(w1) == []


async def test_auto_accept_makes_the_leg_active(
    connect: Connect, admin: Client, new_queue: Any, uid: Any
) -> None:
    queue, alice, w1 = new_queue("auto"), uid("alice"), uid("w")
    agent = await login(connect, alice, queue)
    await admin.work_submit(queue, work_id=w1)
    await wait_event(agent, "work.accepted", work_id=w1)
    assert (await admin.work_get(w1))["state"] == "active"


async def test_extensions_up_to_the_limit(
    connect: Connect, admin: Client, new_queue: Any, uid: Any
) -> None:
    queue, alice, w1 = new_queue("long"), uid("alice"), uid("w")
    agent = await login(connect, alice, queue)
    await active(agent, admin, queue, w1)
    deadline = (await agent.work_end(w1))["acw"]["deadline"]
    for n in (1, 2):
        leg = await agent.acw_extend(w1)
        assert leg["acw"]["extensions"] == n
        assert leg["acw"]["deadline"] == pytest.approx(deadline + 30 * n)
        event = await wait_event(agent, "acw.extended", work_id=w1)
        assert event["extensions"] == n
    with pytest.raises(RpcError) as refused:
        await agent.acw_extend(w1)
    assert refused.value.code == "extension_limit"
    assert (await admin.agent_get(alice))["legs"][0]["acw"]["extensions"] == 2
    record = await agent.acw_complete(w1)
    assert record["extensions"] == 2


async def test_dispositions(connect: Connect, admin: Client, new_queue: Any, uid: Any) -> None:
    queue, alice, w1 = new_queue("disp"), uid("alice"), uid("w")
    agent = await login(connect, alice, queue)
    await active(agent, admin, queue, w1)
    await agent.work_end(w1)
    with pytest.raises(RpcError) as missing:
        await agent.acw_complete(w1, notes="forgot")
    assert missing.value.code == "disposition_required"
    with pytest.raises(RpcError) as unknown:
        await agent.acw_complete(w1, disposition="whatever")
    assert unknown.value.code == "invalid_disposition"
    assert (await admin.agent_get(alice))["state"] == "acw"  # refusals changed nothing
    record = await agent.acw_complete(w1, disposition="escalated")
    assert record["disposition"] == "escalated"


async def test_decline_requeues_in_place_and_reoffers_after_the_backoff(
    connect: Connect, admin: Client, new_queue: Any, uid: Any
) -> None:
    queue, alice, w1 = new_queue("offer"), uid("alice"), uid("w")
    agent = await login(connect, alice, queue)
    first = await offered(agent, admin, queue, w1)
    enqueued_at = (await admin.work_get(w1))["enqueued_at"]
    view = await agent.work_decline(w1, reason="wrong language")
    assert view["state"] == "queued" and view["enqueued_at"] == enqueued_at
    declined = await wait_event(agent, "work.declined", work_id=w1)
    assert declined["reason"] == "wrong language"
    seen = await admin.agent_get(alice)
    assert seen["status"] == "available" and seen["legs"] == []
    # A lone agent gets the item again, but only after reoffer_backoff_s (0.3 s).
    again = await wait_event(agent, "work.offered", work_id=w1)
    assert again["at"] - declined["at"] >= MODES["offer"]["reoffer_backoff_s"] - 0.01
    assert again["at"] > first["at"]
    await agent.work_accept(w1)
    await agent.work_end(w1)
    assert [r["work_id"] for r in await admin.wrapup_get(w1)] == []  # ACW is running, not done


async def test_offer_timeout_requeues_and_sets_the_agent_away(
    connect: Connect, admin: Client, new_queue: Any, uid: Any
) -> None:
    queue, alice, w1 = new_queue("offer"), uid("alice"), uid("w")
    agent = await login(connect, alice, queue)
    offer = await offered(agent, admin, queue, w1)
    enqueued_at = (await admin.work_get(w1))["enqueued_at"]
    expired = await wait_event(agent, "work.offer_expired", work_id=w1)
    assert expired["at"] >= offer["expires_at"]
    view = await admin.work_get(w1)
    assert view["state"] == "queued" and view["enqueued_at"] == enqueued_at
    seen = await admin.agent_get(alice)
    assert (seen["status"], seen["reason"], seen["state"]) == ("away", "no_answer", "away")
    assert seen["legs"] == []  # an offer that was never accepted starts no ACW
    with pytest.raises(RpcError) as late:
        await agent.work_accept(w1)
    assert late.value.code in ("invalid_state", "not_found")


async def test_status_change_during_acw_waits_for_its_end(
    connect: Connect, admin: Client, new_queue: Any, uid: Any
) -> None:
    queue, alice, w1, w2 = new_queue("long"), uid("alice"), uid("w"), uid("w")
    agent = await login(connect, alice, queue)
    await active(agent, admin, queue, w1)
    await agent.work_end(w1)
    view = await agent.agent_set_status(alice, "away", reason="lunch")
    assert view["state"] == "acw" and view["pending_status"] == "away"
    await admin.work_submit(queue, work_id=w2)
    await agent.acw_complete(w1)
    seen = await admin.agent_get(alice)
    assert (seen["state"], seen["status"], seen["reason"]) == ("away", "away", "lunch")
    assert seen["pending_status"] is None
    assert (await admin.work_get(w2))["state"] == "queued"  # never back to available between


async def test_login_into_away_gets_no_offer_until_available(
    connect: Connect, admin: Client, new_queue: Any, uid: Any
) -> None:
    queue, alice, w1 = new_queue("long"), uid("alice"), uid("w")
    await admin.work_submit(queue, work_id=w1)
    agent = await login(connect, alice, queue, status="away", reason="briefing")
    seen = await admin.agent_get(alice)
    assert (seen["state"], seen["reason"], seen["legs"]) == ("away", "briefing", [])
    assert (await admin.work_get(w1))["state"] == "queued"
    await agent.agent_set_status(alice, "available")
    offer = await wait_event(agent, "work.offered", work_id=w1)
    assert offer["agent_id"] == alice


async def test_logout_with_active_work(
    connect: Connect, admin: Client, new_queue: Any, uid: Any
) -> None:
    queue, alice, w1 = new_queue("long"), uid("alice"), uid("w")
    agent = await login(connect, alice, queue)
    await active(agent, admin, queue, w1)
    with pytest.raises(RpcError) as refused:
        await agent.agent_logout(alice)
    assert refused.value.code == "has_active_work"
    assert (await admin.agent_get(alice))["state"] == "busy"
    view = await agent.agent_logout(alice, force=True)
    assert view["state"] == "offline"


async def test_logout_ends_acw_with_reason_logout(
    connect: Connect, admin: Client, new_queue: Any, uid: Any
) -> None:
    queue, alice, w1 = new_queue("long"), uid("alice"), uid("w")
    agent = await login(connect, alice, queue)
    await active(agent, admin, queue, w1)
    await agent.work_end(w1)
    assert (await agent.agent_logout(alice))["state"] == "offline"
    record = (await records(admin, w1))[0]
    assert (record["reason"], record["disposition"]) == ("logout", "timeout")


async def test_transfer_puts_the_transferring_agent_in_acw(
    connect: Connect, admin: Client, new_queue: Any, uid: Any
) -> None:
    first, second = new_queue("long"), new_queue("long")
    alice, bob, w1 = uid("alice"), uid("bob"), uid("w")
    a = await login(connect, alice, first)
    b = await login(connect, bob, second)
    await active(a, admin, first, w1)
    view = await a.work_transfer(w1, second)
    assert view["queue"] == second
    assert (await admin.agent_get(alice))["state"] == "acw"
    offer = await wait_event(b, "work.offered", work_id=w1)
    assert offer["agent_id"] == bob
    await b.work_accept(w1)
    legs = (await admin.work_get(w1))["legs"]
    assert [(leg["agent_id"], leg["state"]) for leg in legs] == [
        (alice, "wrapping"),
        (bob, "active"),
    ]


async def test_force_end_acw(connect: Connect, admin: Client, new_queue: Any, uid: Any) -> None:
    queue, alice, w1 = new_queue("long"), uid("alice"), uid("w")
    agent = await login(connect, alice, queue)
    await active(agent, admin, queue, w1)
    await agent.work_end(w1)
    record = await admin.acw_force_end(w1)
    assert record["reason"] == "forced"
    assert (await admin.agent_get(alice))["state"] == "available"


async def test_cancel(connect: Connect, admin: Client, new_queue: Any, uid: Any) -> None:
    queue, alice, w1, w2 = new_queue("long"), uid("alice"), uid("w"), uid("w")
    queued = await admin.work_submit(queue, work_id=w1)
    assert queued["state"] == "queued"
    view = await admin.work_cancel(w1, reason="customer hung up")
    assert view["state"] == "cancelled"

    agent = await login(connect, alice, queue)
    await offered(agent, admin, queue, w2)
    assert (await admin.work_cancel(w2))["state"] == "cancelled"
    assert (await admin.agent_get(alice))["state"] == "available"
    with pytest.raises(RpcError) as refused:
        await agent.work_accept(w2)
    assert refused.value.code in ("invalid_state", "not_found")


async def test_disconnect_and_reconnect_within_the_grace(
    connect: Connect, admin: Client, new_queue: Any, uid: Any
) -> None:
    queue, alice, bob = new_queue("long"), uid("alice"), uid("bob")
    w1, w2 = uid("w"), uid("w")
    first = await login(connect, alice, queue, capacity=2)
    await active(first, admin, queue, w1)
    await offered(first, admin, queue, w2)
    gone = await login(connect, bob, new_queue("long"))

    await first.aclose()
    await gone.aclose()

    async def requeued() -> bool:
        return (await admin.work_get(w2))["state"] == "queued"

    await eventually(requeued, timeout=1.0)  # an open offer goes back at once
    assert (await admin.agent_get(bob))["state"] == "available"  # the grace has begun
    seen = await admin.agent_get(alice)
    assert seen["state"] != "offline" and not seen["connected"]
    assert [(leg["work_id"], leg["state"]) for leg in seen["legs"]] == [(w1, "active")]

    again = await connect()
    view = await again.agent_login(alice, queues=[queue], capacity=2)
    assert view["connected"] and any(leg["work_id"] == w1 for leg in view["legs"])

    async def bob_offline() -> bool:
        return (await admin.agent_get(bob))["state"] == "offline"

    # Bob did not come back: offline after the grace; alice, back in time, stays.
    await eventually(bob_offline, timeout=DISCONNECT_GRACE_S + 1.5)
    assert (await admin.agent_get(alice))["state"] != "offline"
    leg = await again.work_end(w1)
    assert leg["state"] == "wrapping"
