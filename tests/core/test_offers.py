"""Offers: accept, decline with re-offer backoff, timeout, auto-accept, refusal, cancel."""

from __future__ import annotations

import pytest

from acwd.core.errors import ErrorCode
from acwd.core.events import (
    AcwStarted,
    OfferTicket,
    ReturnItem,
    WorkAccepted,
    WorkCancelled,
    WorkDeclined,
    WorkOffered,
    WorkOfferExpired,
    WorkQueued,
    WorkRefused,
)

from .conftest import TICK, events, make_center, offers, refused, serve, transitions, types


def _ticket(work_id: str = "w9", queue: str = "default", **kw: object) -> OfferTicket:
    base: dict[str, object] = {
        "channel": "chat",
        "size": 1,
        "skills": (),
        "priority": 0,
        "enqueued_at": 0.0,
    }
    base.update(kw)
    return OfferTicket(work_id=work_id, queue=queue, **base)  # type: ignore[arg-type]


# -- accept -------------------------------------------------------------------------------------


def test_accept_makes_the_leg_and_item_active() -> None:
    c = make_center()
    c.login(0.0, "a")
    out = c.submit(1.0, "w1", "default")
    (offered,) = events(out, WorkOffered)
    assert (offered.agent_id, offered.expires_at) == ("a", 21.0)
    assert c.router.item("w1").view().offer_expires_at == 21.0
    accepted = c.accept(4.0, "w1")
    assert [(e.work_id, e.agent_id) for e in events(accepted, WorkAccepted)] == [("w1", "a")]
    assert accepted.result.state == "active" and accepted.result.accepted_at == 4.0
    view = c.router.item("w1").view()
    assert (view.state, view.agent_id, view.offer_expires_at) == ("active", "a", None)


def test_accept_one_tick_before_expiry_works_and_at_expiry_is_refused() -> None:
    c = make_center()
    c.login(0.0, "a")
    c.login(0.0, "b")
    c.submit(1.0, "w1", "default")
    c.submit(1.0, "w2", "default")
    c.accept(21.0 - TICK, "w1")
    with refused(ErrorCode.INVALID_STATE) as info:
        c.accept(21.0, "w2")
    assert info.value.data == {"state": "expired"}


def test_accept_needs_the_offered_agent_and_an_offered_item() -> None:
    c = make_center()
    c.login(0.0, "a")
    c.login(0.0, "b", status="away")
    with refused(ErrorCode.NOT_FOUND):
        c.accept(1.0, "nope")
    c.submit(1.0, "w1", "default")
    with refused(ErrorCode.NOT_FOUND):
        c.accept(2.0, "w1", agent_id="b")
    c.accept(2.0, "w1", agent_id="a")
    with refused(ErrorCode.INVALID_STATE):
        c.accept(3.0, "w1")
    c.logout(4.0, "a", force=True)
    c.submit(5.0, "w2", "default")
    with refused(ErrorCode.INVALID_STATE) as info:
        c.accept(6.0, "w2")  # queued: nobody holds an offer
    assert info.value.data == {"state": "queued"}


# -- decline ------------------------------------------------------------------------------------


def test_decline_returns_the_item_keeping_enqueue_time_and_priority() -> None:
    c = make_center()
    c.login(0.0, "a")
    c.login(0.0, "b", status="away")
    assert offers(c.submit(1.0, "w1", "default", priority=5)) == [("w1", "a")]
    c.submit(2.0, "w2", "default", priority=5)
    c.submit(3.0, "w3", "default", priority=5)
    out = c.decline(4.0, "w1", reason="wrong language")
    assert [(e.work_id, e.reason) for e in events(out, WorkDeclined)] == [("w1", "wrong language")]
    (queued,) = events(out, WorkQueued)
    assert (queued.work_id, queued.priority, queued.enqueued_at) == ("w1", 5, 1.0)
    assert offers(out) == [("w2", "a")]  # a may not have w1 back yet; w2 is next for a
    # w1 kept its place ahead of w3: the next agent gets it
    assert offers(c.set_status(5.0, "b", "available")) == [("w1", "b")]
    view = c.router.item("w1").view()
    assert (view.enqueued_at, view.priority) == (1.0, 5)


def test_decliner_is_not_reoffered_before_backoff_then_is() -> None:
    c = make_center({"defaults": {"reoffer_backoff_s": 10.0}})
    c.login(0.0, "a")
    c.submit(1.0, "w1", "default")
    out = c.decline(3.0, "w1")
    assert offers(out) == []
    assert transitions(out, "a") == [("busy", "available")]
    assert c.agents["a"].view().routable is True
    assert offers(c.advance(13.0 - TICK)) == []
    assert offers(c.advance(13.0)) == [("w1", "a")]  # a lone agent never strands the item


def test_backoff_default_is_ten_seconds() -> None:
    c = make_center()
    c.login(0.0, "a")
    c.submit(1.0, "w1", "default")
    c.decline(2.0, "w1")
    assert offers(c.advance(12.0 - TICK)) == []
    assert offers(c.advance(12.0)) == [("w1", "a")]


def test_on_decline_status_away() -> None:
    c = make_center({"defaults": {"on_decline_status": "away"}})
    c.login(0.0, "a")
    c.submit(1.0, "w1", "default")
    out = c.decline(2.0, "w1")
    assert transitions(out, "a") == [("busy", "away")]
    assert (c.agents["a"].status.value, c.agents["a"].reason) == ("away", "declined")
    assert offers(c.advance(100.0)) == []


def test_decline_of_an_item_that_is_not_offered() -> None:
    c = make_center({"defaults": {"offer_timeout_s": 0.0}})
    c.login(0.0, "a")
    serve(c, 1.0, "w1")
    with refused(ErrorCode.INVALID_STATE):
        c.decline(2.0, "w1")


# -- timeout ------------------------------------------------------------------------------------


def test_offer_timeout_boundary_status_away_no_answer() -> None:
    c = make_center({"defaults": {"offer_timeout_s": 15.0}})
    c.login(0.0, "a")
    c.submit(1.0, "w1", "default")
    before = c.advance(16.0 - TICK)
    assert events(before, WorkOfferExpired) == []
    assert events(c.agents["a"].tick(16.0 - TICK), WorkOfferExpired) == []
    assert c.router.item("w1").state.value == "offered"
    at = c.advance(16.0)
    assert [(e.work_id, e.agent_id) for e in events(at, WorkOfferExpired)] == [("w1", "a")]
    assert transitions(at, "a") == [("busy", "away")]
    view = c.agents["a"].view()
    assert (view.status, view.reason, view.no_answer_count) == ("away", "no_answer", 1)
    (queued,) = events(at, WorkQueued)
    assert queued.enqueued_at == 1.0
    assert c.router.item("w1").state.value == "queued"


def test_expired_offer_goes_to_another_agent_at_once() -> None:
    c = make_center({"defaults": {"offer_timeout_s": 5.0}})
    c.login(0.0, "a")
    c.login(1.0, "b")
    c.submit(2.0, "w1", "default")
    at = c.advance(7.0)
    assert offers(at) == [("w1", "b")]
    assert types(at).index("work.offer_expired") < types(at).index("work.offered")


def test_on_timeout_status_available_reoffers_after_backoff() -> None:
    c = make_center({"defaults": {"offer_timeout_s": 5.0, "on_timeout_status": "available"}})
    c.login(0.0, "a")
    c.submit(0.0, "w1", "default")
    at = c.advance(5.0)
    assert transitions(at, "a") == [("busy", "available")]
    assert offers(c.advance(15.0 - TICK)) == []
    assert offers(c.advance(15.0)) == [("w1", "a")]


# -- auto-accept --------------------------------------------------------------------------------


def test_auto_accept_with_offer_timeout_zero() -> None:
    c = make_center({"defaults": {"offer_timeout_s": 0.0}})
    c.login(0.0, "a")
    out = c.submit(1.0, "w1", "default")
    (offered,) = events(out, WorkOffered)
    assert offered.expires_at is None
    assert types(out).index("work.offered") < types(out).index("work.accepted")
    assert c.router.item("w1").state.value == "active"
    assert c.next_deadline() is None


def test_voice_channel_auto_accepts_by_default() -> None:
    c = make_center({"queues": {"calls": {"channel": "voice"}}})
    c.login(0.0, "a")
    c.submit(1.0, "w1", "calls")
    assert c.router.item("w1").state.value == "active"
    (started,) = events(c.end(5.0, "w1"), AcwStarted)
    assert started.deadline == 35.0  # voice: 30 s ACW


# -- refusal ------------------------------------------------------------------------------------


def test_refused_offer_goes_back_without_losing_its_place() -> None:
    """The agent actor re-checks every offer: a stale router view leads to a refusal."""
    c = make_center()
    c.login(0.0, "a")
    c.submit(0.5, "w0", "default")
    c.accept(0.6, "w0")
    c.end(0.7, "w0")
    c.acw_complete(0.8, "w0")
    c.login(0.9, "b", status="away")
    # a goes away behind the router's back: the router still believes a is routable
    c.agents["a"].set_status(1.0, "away")
    assert c.router.agents["a"].routable is True
    out = c.submit(2.0, "w1", "default", priority=3)
    (refusal,) = events(out, WorkRefused)
    assert (refusal.work_id, refusal.agent_id, refusal.reason) == ("w1", "a", "status is away")
    requeued = events(out, WorkQueued)[-1]
    assert (requeued.work_id, requeued.enqueued_at, requeued.priority) == ("w1", 2.0, 3)
    assert c.router.agents["a"].routable is False  # the refusal carried the agent's own view
    assert c.agents["a"].legs == {}
    assert c.router.item("w1").backoff == {}  # a refusal is no decline: no backoff
    assert offers(c.set_status(3.0, "b", "available")) == [("w1", "b")]


@pytest.mark.parametrize(
    ("setup", "ticket", "reason"),
    [
        ("member", _ticket(queue="third"), "not a member of queue third"),
        ("plain", _ticket(skills=(("fr", 2),)), "lacks skill fr at level 2"),
        ("skilled", _ticket(skills=(("fr", 4),)), "lacks skill fr at level 4"),
        ("plain", _ticket(size=2), "not enough free capacity"),
        ("away", _ticket(), "status is away"),
        ("pending", _ticket(), "a change to away is pending"),
        ("gone", _ticket(), "the agent's connection is gone"),
        ("acw", _ticket(), "the agent is in ACW"),
        ("holds", _ticket(work_id="w1"), "still holds a leg of this item"),
    ],
)
def test_agent_refusal_reasons(setup: str, ticket: OfferTicket, reason: str) -> None:
    c = make_center(
        {
            "defaults": {"offer_timeout_s": 0.0, "acw_scope": "slot"},
            "queues": {"default": {"acw_scope": "agent"}, "other": {}, "third": {}},
        }
    )
    holds = setup == "holds"  # wrapping w1 of the slot-scope queue "other"
    c.login(
        0.0, "a", capacity=3 if holds else 1, queues=["default", "other"] if holds else ["default"]
    )
    machine = c.agents["a"]
    if holds:
        serve(c, 0.0, "w1", "other")
        c.end(1.0, "w1")
    if setup == "skilled":
        c.login(0.0, "a", skills={"fr": 3})
    elif setup == "away":
        c.set_status(0.0, "a", "away")
    elif setup == "gone":
        c.disconnect(0.0, "a")
    elif setup in ("acw", "pending"):
        serve(c, 0.0, "w1")
        c.end(1.0, "w1")
        if setup == "pending":
            c.set_status(1.0, "a", "away")
    assert machine.refusal(ticket) == reason
    out = machine.offer(2.0, ticket)
    assert [e.reason for e in events(out, WorkRefused)] == [reason]
    assert [e for e in out.effects if isinstance(e, ReturnItem)] == [
        ReturnItem(ticket.work_id, "a", "refused", None)
    ]
    assert ticket.work_id not in machine.legs or machine.legs[ticket.work_id].state.value != (
        "offered"
    )


def test_refusal_passes_an_eligible_ticket() -> None:
    c = make_center()
    c.login(0.0, "a", skills={"fr": 3})
    assert c.agents["a"].refusal(_ticket(skills=(("fr", 3),))) is None
    assert c.agents["a"].refusal(_ticket(skills=(("fr", 0),))) is None


# -- cancel -------------------------------------------------------------------------------------


def test_cancel_queued_item() -> None:
    c = make_center()
    c.submit(1.0, "w1", "default")
    out = c.cancel(2.0, "w1", reason="abandoned")
    assert [(e.work_id, e.reason) for e in events(out, WorkCancelled)] == [("w1", "abandoned")]
    assert (out.result.state, out.result.cancel_reason) == ("cancelled", "abandoned")
    assert offers(c.login(3.0, "a")) == []
    with refused(ErrorCode.INVALID_STATE) as info:
        c.cancel(4.0, "w1")
    assert info.value.data == {"state": "cancelled"}


def test_cancel_offered_item_withdraws_the_offer_and_frees_the_agent() -> None:
    c = make_center()
    c.login(0.0, "a")
    c.submit(1.0, "w1", "default")
    c.submit(2.0, "w2", "default")
    out = c.cancel(3.0, "w1")
    assert out.result.state == "cancelled" and out.result.cancel_reason == "cancelled"
    assert "w1" not in c.agents["a"].legs
    assert offers(out) == [("w2", "a")]
    assert types(out).index("work.cancelled") < types(out).index("work.offered")
    # the withdrawn offer's timer firing later does nothing
    assert events(c.advance(21.0), WorkOfferExpired) == []


@pytest.mark.parametrize("stage", ["active", "wrapping", "completed"])
def test_cancel_is_invalid_state_once_accepted(stage: str) -> None:
    c = make_center({"defaults": {"offer_timeout_s": 0.0, "acw_seconds": 5.0}})
    c.login(0.0, "a")
    serve(c, 1.0, "w1")
    if stage != "active":
        c.end(2.0, "w1")
    if stage == "completed":
        c.advance(7.0)
    with refused(ErrorCode.INVALID_STATE) as info:
        c.cancel(8.0, "w1")
    assert info.value.data == {"state": stage}
    assert c.router.item("w1").state.value == stage


def test_cancel_unknown_item() -> None:
    c = make_center()
    with refused(ErrorCode.NOT_FOUND):
        c.cancel(1.0, "nope")


# -- submit -------------------------------------------------------------------------------------


def test_submit_repeated_work_id_is_a_conflict_and_the_first_stays() -> None:
    c = make_center()
    c.submit(1.0, "w1", "default", priority=1, attributes={"from": "web"})
    with refused(ErrorCode.CONFLICT):
        c.submit(2.0, "w1", "default", priority=9)
    view = c.router.item("w1").view()
    assert (view.priority, view.enqueued_at, dict(view.attributes)) == (1, 1.0, {"from": "web"})


def test_submit_to_unknown_queue() -> None:
    c = make_center()
    with refused(ErrorCode.NOT_FOUND) as info:
        c.submit(1.0, "w1", "nope")
    assert info.value.data == {"queue": "nope"}
    assert "w1" not in c.router.items


def test_submit_view() -> None:
    c = make_center({"channels": {"email": {"size": 2}}})
    out = c.submit(1.0, "w1", "default", channel="email", skills={"fr": 2}, attributes={"k": 1})
    view = out.result
    assert (view.queue, view.channel, view.size, dict(view.skills)) == (
        "default",
        "email",
        2,
        {"fr": 2},
    )
    assert (view.state, view.agent_id, view.legs, view.enqueued_at) == ("queued", None, (), 1.0)
    assert view.to_wire()["attributes"] == {"k": 1}
