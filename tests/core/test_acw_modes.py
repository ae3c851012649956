"""After Conversation Work: every row of SEMANTICS.md's ACW table at its boundaries, duration
resolution, extensions, dispositions, end reasons, scope and the wrap-up record."""

from __future__ import annotations

from typing import Any

import pytest

from acwd.core.errors import ErrorCode
from acwd.core.events import (
    AcwEnded,
    AcwExtended,
    AcwStarted,
    WorkCompleted,
    WorkEnded,
    WrapupRecorded,
)
from acwd.core.views import FollowUp, LegView, Wrapup, WrapupRecord

from .conftest import TICK, acw_ends, events, make_center, offers, refused, serve, types

AUTO = {"offer_timeout_s": 0.0}  # auto-accept keeps these tests about ACW, not offers


def _center(**defaults: Any) -> Any:
    return make_center({"defaults": {**AUTO, **defaults}})


def _wrapping_center(mode: str, **defaults: Any) -> tuple[Any, float | None]:
    """Agent ``a`` ended ``w1`` at t=10 (ACW started); ``w2`` waits since t=11."""
    c = _center(acw_mode=mode, acw_seconds=30.0, max_acw_seconds=45.0, **defaults)
    c.login(0.0, "a")
    serve(c, 1.0, "w1", agent_id="a")
    if mode == "on_request":
        c.acw_request(2.0, "w1")
    out = c.end(10.0, "w1")
    (started,) = events(out, AcwStarted)
    assert started.mode == mode
    assert offers(c.submit(11.0, "w2", "default")) == []
    return c, started.deadline


# -- the table, row by row ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "deadline"),
    [("timed", 40.0), ("forced", 40.0), ("manual", 55.0), ("on_request", 40.0)],
)
def test_timer_boundary_no_offer_before_and_offer_at_deadline(mode: str, deadline: float) -> None:
    c, got = _wrapping_center(mode)
    assert got == deadline

    before = c.advance(deadline - TICK)
    assert acw_ends(before) == []
    assert offers(before) == []
    # a timer firing early (any wake-up of the agent's actor) must not end it either
    assert acw_ends(c.agents["a"].tick(deadline - TICK)) == []
    view = c.agents["a"].view()
    assert (view.state, view.routable) == ("acw", False)
    assert c.router.agents["a"].routable is False
    assert c.router.item("w2").state.value == "queued"

    at = c.advance(deadline)
    assert acw_ends(at) == [("a", "w1", "timeout")]
    assert offers(at) == [("w2", "a")], "routable and offered in the same step as the ACW end"
    assert types(at).index("acw.ended") < types(at).index("work.offered")
    (ended,) = events(at, AcwEnded)
    assert ended.at == deadline and ended.deadline == deadline
    assert ended.acw_seconds == pytest.approx(deadline - 10.0)
    assert c.router.item("w1").state.value == "completed"


@pytest.mark.parametrize("mode", ["off", "on_request"])
def test_no_acw_leg_completes_at_end_and_next_item_follows_at_once(mode: str) -> None:
    """``off``, and ``on_request`` without ``acw.request``: the leg completes at ``work.end``."""
    c = _center(acw_mode=mode)
    c.login(0.0, "a")
    serve(c, 1.0, "w1")
    c.submit(2.0, "w2", "default")
    out = c.end(10.0, "w1")
    assert events(out, AcwStarted) == []
    (ended,) = events(out, WorkEnded)
    assert ended.talk_s == 9.0
    assert [e.work_id for e in events(out, WorkCompleted)] == ["w1"]
    assert offers(out) == [("w2", "a")]
    assert isinstance(out.result, LegView) and out.result.acw is None
    assert out.result.state == "done"
    assert c.records == []
    assert c.router.item("w1").state.value == "completed"


def test_manual_without_cap_has_no_timer_and_ends_only_on_complete() -> None:
    c = _center(acw_mode="manual")
    c.login(0.0, "a")
    serve(c, 1.0, "w1")
    out = c.end(10.0, "w1")
    assert events(out, AcwStarted)[0].deadline is None
    c.submit(11.0, "w2", "default")
    assert c.next_deadline() is None
    assert offers(c.advance(100_000.0)) == []
    assert c.agents["a"].state.value == "acw"
    done = c.acw_complete(100_001.0, "w1", Wrapup(disposition="ok"))
    assert acw_ends(done) == [("a", "w1", "completed")]
    assert offers(done) == [("w2", "a")]
    assert isinstance(done.result, WrapupRecord)
    assert done.result.acw_seconds == pytest.approx(99_991.0)


@pytest.mark.parametrize("mode", ["timed", "manual", "on_request"])
def test_complete_exits_early(mode: str) -> None:
    c, deadline = _wrapping_center(mode)
    assert deadline is not None
    out = c.acw_complete(20.0, "w1", Wrapup(disposition="sold"))
    assert acw_ends(out) == [("a", "w1", "completed")]
    assert offers(out) == [("w2", "a")]
    assert out.result.disposition == "sold" and out.result.reason == "completed"
    assert c.records == [out.result]
    # the old deadline passing later changes nothing
    assert acw_ends(c.advance(deadline)) == []
    assert len(c.records) == 1


def test_forced_complete_stores_wrapup_and_acw_lasts_the_full_time() -> None:
    c, deadline = _wrapping_center("forced")
    assert deadline == 40.0
    first = c.acw_complete(20.0, "w1", Wrapup(disposition="first", notes="n1"))
    assert acw_ends(first) == []
    assert isinstance(first.result, LegView)
    assert first.result.state == "wrapping" and first.result.wrapup is not None
    assert first.result.wrapup.disposition == "first"
    assert c.agents["a"].state.value == "acw"
    # Called again, the stored wrap-up is replaced.
    second = c.acw_complete(25.0, "w1", Wrapup(disposition="second", notes="n2"))
    assert second.result.wrapup.disposition == "second"
    assert offers(c.advance(deadline - TICK)) == []
    at = c.advance(deadline)
    assert acw_ends(at) == [("a", "w1", "timeout")]
    assert offers(at) == [("w2", "a")]
    (record,) = c.records
    assert (record.disposition, record.notes, record.reason) == ("second", "n2", "timeout")
    assert record.acw_seconds == 30.0


def test_forced_force_end_keeps_the_stored_disposition() -> None:
    c, _ = _wrapping_center("forced")
    c.acw_complete(20.0, "w1", Wrapup(disposition="kept"))
    out = c.acw_force_end(21.0, "w1")
    assert acw_ends(out) == [("a", "w1", "forced")]
    assert out.result.disposition == "kept"
    assert offers(out) == [("w2", "a")]


# -- duration resolution ------------------------------------------------------------------------

RESOLUTION = {
    "defaults": {**AUTO},
    "channels": {"chat": {"acw_seconds": 40.0}, "email": {"acw_seconds": 50.0}, "plain": {}},
    "queues": {
        "q_queue": {"channel": "chat", "acw_seconds": 20.0},
        "q_chat": {"channel": "chat"},
        "q_email": {"channel": "email"},
        "q_plain": {"channel": "plain"},
    },
    "agents": {"ov": {"acw_seconds": 7.0, "channels": {"email": {"acw_seconds": 3.0}}}},
}


@pytest.mark.parametrize(
    ("agent", "queue", "seconds"),
    [
        ("someone", "q_plain", 90.0),  # [defaults] (the built-in 90 s)
        ("someone", "q_chat", 40.0),  # channel beats defaults
        ("someone", "q_queue", 20.0),  # queue beats channel
        ("ov", "q_queue", 7.0),  # agent beats queue
        ("ov", "q_chat", 7.0),
        ("ov", "q_email", 3.0),  # agent per channel beats agent
    ],
)
def test_duration_resolution_order(agent: str, queue: str, seconds: float) -> None:
    c = make_center(RESOLUTION)
    c.login(0.0, agent, queues=[queue])
    serve(c, 1.0, "w1", queue)
    (started,) = events(c.end(10.0, "w1"), AcwStarted)
    assert started.deadline == 10.0 + seconds


def test_item_channel_override_uses_that_channels_acw() -> None:
    c = make_center(RESOLUTION)
    c.login(0.0, "someone", queues=["q_chat"])
    out = c.submit(1.0, "w1", "q_chat", channel="email")
    assert offers(out) == [("w1", "someone")]
    (started,) = events(c.end(10.0, "w1"), AcwStarted)
    assert started.deadline == 60.0


def test_global_default_is_90_seconds_timed() -> None:
    c = make_center()
    c.login(0.0, "a")
    c.submit(1.0, "w1", "default")
    c.accept(2.0, "w1")
    (started,) = events(c.end(10.0, "w1"), AcwStarted)
    assert (started.mode, started.deadline) == ("timed", 100.0)


def test_transferred_leg_uses_the_queue_it_was_handled_in() -> None:
    c = make_center(
        {
            "defaults": {**AUTO},
            "queues": {"q1": {"acw_seconds": 10.0}, "q2": {"acw_seconds": 50.0}},
        }
    )
    c.login(0.0, "a", queues=["q1"])
    c.login(0.0, "b", queues=["q2"])
    serve(c, 1.0, "w1", "q1", agent_id="a")
    out = c.transfer(5.0, "w1", "q2")
    (a_acw,) = [e for e in events(out, AcwStarted) if e.agent_id == "a"]
    assert a_acw.deadline == 15.0
    assert offers(out) == [("w1", "b")]
    (b_acw,) = events(c.end(8.0, "w1"), AcwStarted)
    assert (b_acw.agent_id, b_acw.deadline) == ("b", 58.0)
    c.advance(58.0)
    assert [(r.agent_id, r.queue, r.acw_seconds) for r in c.records] == [
        ("a", "q1", 10.0),
        ("b", "q2", 50.0),
    ]


# -- extensions ---------------------------------------------------------------------------------


def test_extensions_move_the_deadline_and_are_limited() -> None:
    c, deadline = _wrapping_center("timed", extension_seconds=15.0, max_extensions=2)
    assert deadline == 40.0
    one = c.acw_extend(20.0, "w1")
    assert [(e.deadline, e.extensions) for e in events(one, AcwExtended)] == [(55.0, 1)]
    assert one.result.acw.deadline == 55.0
    two = c.acw_extend(21.0, "w1")
    assert [(e.deadline, e.extensions) for e in events(two, AcwExtended)] == [(70.0, 2)]
    with refused(ErrorCode.EXTENSION_LIMIT) as info:
        c.acw_extend(22.0, "w1")
    assert info.value.data == {"extensions": 2, "max_extensions": 2}
    assert c.agents["a"].legs["w1"].acw.deadline == 70.0  # unchanged by the refusal

    assert acw_ends(c.advance(55.0)) == []  # the old deadlines pass quietly
    assert offers(c.advance(70.0 - TICK)) == []
    at = c.advance(70.0)
    assert acw_ends(at) == [("a", "w1", "timeout")]
    assert offers(at) == [("w2", "a")]
    (record,) = c.records
    assert (record.extensions, record.acw_seconds) == (2, 60.0)


def test_extension_defaults_are_30_seconds_twice() -> None:
    c = _center(acw_seconds=10.0)
    c.login(0.0, "a")
    serve(c, 1.0, "w1")
    c.end(10.0, "w1")
    c.acw_extend(11.0, "w1")
    c.acw_extend(12.0, "w1")
    assert c.agents["a"].legs["w1"].acw.deadline == 80.0
    with refused(ErrorCode.EXTENSION_LIMIT):
        c.acw_extend(13.0, "w1")


def test_max_extensions_zero_refuses_the_first() -> None:
    c, _ = _wrapping_center("timed", max_extensions=0)
    with refused(ErrorCode.EXTENSION_LIMIT):
        c.acw_extend(12.0, "w1")


def test_extend_untimed_manual_is_invalid_state_but_a_cap_is_extended() -> None:
    c = _center(acw_mode="manual")
    c.login(0.0, "a")
    serve(c, 1.0, "w1")
    c.end(10.0, "w1")
    with refused(ErrorCode.INVALID_STATE) as info:
        c.acw_extend(11.0, "w1")
    assert info.value.data == {"mode": "manual"}

    capped, deadline = _wrapping_center("manual", extension_seconds=5.0)
    assert deadline == 55.0
    out = capped.acw_extend(12.0, "w1")
    assert events(out, AcwExtended)[0].deadline == 60.0
    assert acw_ends(capped.advance(60.0 - TICK)) == []
    assert acw_ends(capped.advance(60.0)) == [("a", "w1", "timeout")]


def test_extend_requires_a_wrapping_leg() -> None:
    c = _center()
    c.login(0.0, "a")
    serve(c, 1.0, "w1")
    with refused(ErrorCode.INVALID_STATE):
        c.acw_extend(2.0, "w1")
    with refused(ErrorCode.INVALID_STATE):
        c.acw_complete(2.0, "w1")
    with refused(ErrorCode.INVALID_STATE):
        c.acw_force_end(2.0, "w1")


# -- acw.request --------------------------------------------------------------------------------


def test_acw_request_is_invalid_state_when_mode_is_off() -> None:
    c = _center(acw_mode="off")
    c.login(0.0, "a")
    serve(c, 1.0, "w1")
    with refused(ErrorCode.INVALID_STATE) as info:
        c.acw_request(2.0, "w1")
    assert info.value.data == {"mode": "off"}
    assert events(c.end(3.0, "w1"), AcwStarted) == []


def test_acw_request_needs_an_active_leg_and_is_recorded_on_the_view() -> None:
    c = make_center({"defaults": {"acw_mode": "on_request"}})
    c.login(0.0, "a")
    c.submit(1.0, "w1", "default")
    with refused(ErrorCode.INVALID_STATE):
        c.acw_request(1.5, "w1")  # still only offered
    c.accept(2.0, "w1")
    out = c.acw_request(3.0, "w1")
    assert out.result.state == "active"
    ended = c.end(4.0, "w1")
    assert ended.result.acw.requested is True
    assert ended.result.acw.deadline == 94.0


def test_acw_request_in_timed_mode_is_accepted_and_changes_nothing() -> None:
    c = _center(acw_seconds=5.0)
    c.login(0.0, "a")
    serve(c, 1.0, "w1")
    c.acw_request(2.0, "w1")
    assert events(c.end(3.0, "w1"), AcwStarted)[0].deadline == 8.0


# -- dispositions -------------------------------------------------------------------------------


def test_required_disposition_and_allowed_list() -> None:
    c, _ = _wrapping_center("timed", require_disposition=True, dispositions=["sale", "no_sale"])
    with refused(ErrorCode.DISPOSITION_REQUIRED) as info:
        c.acw_complete(20.0, "w1", Wrapup(notes="forgot"))
    assert info.value.data == {"allowed": ["sale", "no_sale"]}
    with refused(ErrorCode.INVALID_DISPOSITION):
        c.acw_complete(20.0, "w1", Wrapup(disposition="bogus"))
    assert c.agents["a"].state.value == "acw"  # refusals change nothing
    assert c.records == []
    out = c.acw_complete(21.0, "w1", Wrapup(disposition="no_sale"))
    assert out.result.disposition == "no_sale"


def test_allowed_list_without_requirement_accepts_no_disposition() -> None:
    c, _ = _wrapping_center("timed", dispositions=["sale"], timeout_disposition="none_given")
    with refused(ErrorCode.INVALID_DISPOSITION):
        c.acw_complete(20.0, "w1", Wrapup(disposition="other"))
    out = c.acw_complete(20.0, "w1")
    assert out.result.disposition == "none_given"
    assert out.result.reason == "completed"


def test_empty_list_is_free_text() -> None:
    c, _ = _wrapping_center("timed", require_disposition=True)
    out = c.acw_complete(20.0, "w1", Wrapup(disposition="anything at all"))
    assert out.result.disposition == "anything at all"


def test_timeout_records_the_timeout_disposition() -> None:
    c, deadline = _wrapping_center(
        "timed", require_disposition=True, dispositions=["sale"], timeout_disposition="wrap_lapsed"
    )
    assert deadline is not None
    c.advance(deadline)
    (record,) = c.records
    assert (record.disposition, record.reason) == ("wrap_lapsed", "timeout")


def test_forced_mode_checks_the_disposition_when_it_is_submitted() -> None:
    c, _ = _wrapping_center("forced", require_disposition=True)
    with refused(ErrorCode.DISPOSITION_REQUIRED):
        c.acw_complete(20.0, "w1")


def test_force_end_records_reason_forced_and_frees_the_agent() -> None:
    c, _ = _wrapping_center("manual")
    out = c.acw_force_end(20.0, "w1")
    assert acw_ends(out) == [("a", "w1", "forced")]
    assert out.result.reason == "forced" and out.result.disposition == "timeout"
    assert offers(out) == [("w2", "a")]


@pytest.mark.parametrize("mode", ["timed", "forced", "manual", "on_request"])
def test_logout_during_acw_ends_it_with_reason_logout_and_keeps_the_record(mode: str) -> None:
    c, _ = _wrapping_center(mode)
    out = c.logout(20.0, "a")
    assert acw_ends(out) == [("a", "w1", "logout")]
    (record,) = c.records
    assert (record.reason, record.disposition, record.acw_seconds) == ("logout", "timeout", 10.0)
    assert c.agents["a"].state.value == "offline"
    assert c.router.item("w1").state.value == "completed"
    assert offers(out) == []


# -- scope --------------------------------------------------------------------------------------


def test_scope_slot_wrapping_leg_holds_its_slot_and_the_other_is_offered() -> None:
    c = _center(acw_scope="slot", acw_seconds=30.0)
    c.login(0.0, "a", capacity=2)
    serve(c, 1.0, "w1")
    c.end(10.0, "w1")
    assert c.agents["a"].used == 1
    assert c.agents["a"].view().routable is True
    assert offers(c.submit(11.0, "w2", "default")) == [("w2", "a")]
    assert c.agents["a"].used == 2
    assert offers(c.submit(12.0, "w3", "default")) == []
    assert offers(c.advance(40.0 - TICK)) == []
    at = c.advance(40.0)
    assert acw_ends(at) == [("a", "w1", "timeout")]
    assert offers(at) == [("w3", "a")]


def test_scope_agent_blocks_every_slot_during_acw() -> None:
    c = _center(acw_scope="agent", acw_seconds=30.0)
    c.login(0.0, "a", capacity=2)
    serve(c, 1.0, "w1")
    c.end(10.0, "w1")
    assert c.agents["a"].used == 0  # the slot is free ...
    assert c.agents["a"].view().routable is False  # ... but the agent is in ACW
    assert offers(c.submit(11.0, "w2", "default")) == []
    assert offers(c.advance(40.0 - TICK)) == []
    assert offers(c.advance(40.0)) == [("w2", "a")]


def test_scope_agent_leg_blocks_even_while_another_leg_is_active() -> None:
    c = _center(acw_scope="agent", acw_seconds=30.0)
    c.login(0.0, "a", capacity=3)
    serve(c, 1.0, "w1")
    serve(c, 1.0, "w2")
    c.end(10.0, "w1")
    assert c.agents["a"].state.value == "busy"
    assert offers(c.submit(11.0, "w3", "default")) == []
    c.end(12.0, "w2")
    assert offers(c.advance(40.0)) == []  # w2's ACW still runs until 42
    assert offers(c.advance(42.0)) == [("w3", "a")]


# -- the wrap-up record -------------------------------------------------------------------------


def test_wrapup_record_fields() -> None:
    c = make_center({"defaults": {"acw_seconds": 60.0}, "queues": {"sales": {"channel": "chat"}}})
    c.login(0.0, "a")
    c.submit(1.0, "w1", "sales")
    c.accept(3.0, "w1")
    c.end(33.0, "w1")
    c.acw_extend(40.0, "w1")
    wrapup = Wrapup(
        disposition="sale",
        notes="customer upgraded",
        fields={"plan": "gold", "seats": 3, "renew": True, "discount": 0.1},
        follow_ups=(FollowUp("call back", due_at=500.0, assignee="b"), FollowUp("email")),
    )
    out = c.acw_complete(48.0, "w1", wrapup)
    record = out.result
    assert record == WrapupRecord(
        work_id="w1",
        agent_id="a",
        queue="sales",
        channel="chat",
        disposition="sale",
        notes="customer upgraded",
        fields={"plan": "gold", "seats": 3, "renew": True, "discount": 0.1},
        follow_ups=(FollowUp("call back", 500.0, "b"), FollowUp("email", None, None)),
        talk_s=30.0,
        acw_started_at=33.0,
        acw_ended_at=48.0,
        acw_seconds=15.0,
        extensions=1,
        reason="completed",
    )
    assert [e.record for e in events(out, WrapupRecorded)] == [record]
    assert c.records == [record]
    wire = record.to_wire()
    assert wire["follow_ups"] == [
        {"title": "call back", "due_at": 500.0, "assignee": "b"},
        {"title": "email", "due_at": None, "assignee": None},
    ]
    assert wire["fields"] == {"plan": "gold", "seats": 3, "renew": True, "discount": 0.1}
    # handle time = talk time + ACW time
    assert record.talk_s + record.acw_seconds == 45.0
    # the item's own view keeps the finished leg
    (leg_view,) = c.router.item("w1").view().legs
    assert (leg_view.state, leg_view.accepted_at, leg_view.ended_at) == ("done", 3.0, 33.0)


def test_record_without_wrapup_has_empty_notes_fields_and_follow_ups() -> None:
    c, deadline = _wrapping_center("timed")
    assert deadline is not None
    c.advance(deadline)
    (record,) = c.records
    assert (record.notes, dict(record.fields), record.follow_ups) == ("", {}, ())
    assert record.talk_s == 9.0


def test_logout_during_forced_acw_keeps_the_stored_disposition() -> None:
    """A decision: what the agent already submitted is kept, as at the timer."""
    c, _ = _wrapping_center("forced")
    c.acw_complete(20.0, "w1", Wrapup(disposition="sold", notes="kept"))
    c.logout(25.0, "a")
    (record,) = c.records
    assert (record.reason, record.disposition, record.notes) == ("logout", "sold", "kept")


def test_status_after_a_missed_offer_is_pending_while_another_leg_wraps() -> None:
    """on_timeout_status follows the rule for any status change: pending during ACW."""
    c = make_center(
        {"defaults": {"acw_scope": "slot", "acw_seconds": 30.0, "offer_timeout_s": 5.0}}
    )
    c.login(0.0, "a", capacity=2)
    c.submit(0.0, "w1", "default")
    c.accept(1.0, "w1")
    c.end(2.0, "w1")
    c.submit(3.0, "w2", "default")
    c.advance(8.0)  # the offer of w2 expires while w1 wraps
    view = c.agents["a"].view()
    assert (view.state, view.status, view.pending_status) == ("acw", "available", "away")
    at = c.advance(32.0)
    assert acw_ends(at) == [("a", "w1", "timeout")]
    assert (c.agents["a"].status.value, c.agents["a"].reason) == ("away", "no_answer")
