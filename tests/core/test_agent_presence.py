"""Presence and sessions: login, status changes (pending during ACW), logout, disconnect grace."""

from __future__ import annotations

from acwd.core.errors import ErrorCode
from acwd.core.events import AgentStateChanged, WorkQueued
from acwd.core.views import AgentView

from .conftest import (
    TICK,
    acw_ends,
    events,
    make_center,
    offers,
    refused,
    serve,
    transitions,
    types,
)

AUTO = {"defaults": {"offer_timeout_s": 0.0, "acw_seconds": 30.0}}


# -- login --------------------------------------------------------------------------------------


def test_login_defaults_to_available_and_serves_every_queue() -> None:
    c = make_center({"queues": {"q1": {}, "q2": {}}})
    out = c.login(5.0, "a")
    view = out.result
    assert isinstance(view, AgentView)
    assert (view.state, view.status, view.capacity, view.used) == ("available", "available", 1, 0)
    assert (view.queues, view.idle_since, view.routable, view.connected) == (None, 5.0, True, True)
    assert transitions(out, "a") == [("offline", "available")]
    assert offers(c.submit(6.0, "w2", "q2")) == [("w2", "a")]


def test_login_into_away_offers_nothing_until_available() -> None:
    c = make_center()
    out = c.login(0.0, "a", status="away", reason="briefing")
    assert (out.result.state, out.result.reason, out.result.routable) == ("away", "briefing", False)
    assert offers(c.submit(1.0, "w1", "default")) == []
    assert offers(c.advance(500.0)) == []
    back = c.set_status(600.0, "a", "available")
    assert offers(back) == [("w1", "a")]
    assert transitions(back, "a") == [("away", "available"), ("available", "busy")]


def test_login_rejects_bad_status_and_unknown_queue_and_changes_nothing() -> None:
    c = make_center()
    for status in ("offline", "busy", "acw"):
        with refused(ErrorCode.INVALID_PARAMS) as info:
            c.login(0.0, "a", status=status)
        assert info.value.data == {"argument": "status"}
    with refused(ErrorCode.INVALID_PARAMS) as info:
        c.login(0.0, "a", queues=["default", "nope"])
    assert info.value.data == {"argument": "queues"}
    assert "a" not in c.agents
    with refused(ErrorCode.NOT_FOUND):
        c.set_status(0.0, "a", "away")


def test_login_parameters_beat_the_config_file() -> None:
    config = {
        "queues": {"q1": {}, "q2": {}},
        "agents": {"a": {"capacity": 3, "skills": {"fr": 4}, "queues": ["q1"]}},
    }
    c = make_center(config)
    view = c.login(0.0, "a").result
    assert (view.capacity, dict(view.skills), view.queues) == (3, {"fr": 4}, ("q1",))
    d = make_center(config)
    view = d.login(0.0, "a", capacity=2, skills={"de": 1}, queues=["q2"]).result
    assert (view.capacity, dict(view.skills), view.queues) == (2, {"de": 1}, ("q2",))
    assert offers(d.submit(1.0, "w1", "q1")) == []
    assert offers(d.submit(1.0, "w2", "q2")) == [("w2", "a")]


def test_relogin_updates_the_profile_and_keeps_legs() -> None:
    c = make_center({**AUTO, "queues": {"q1": {}, "q2": {}}})
    c.login(0.0, "a", queues=["q1"])
    serve(c, 1.0, "w1", "q1")
    view = c.login(2.0, "a", capacity=2, skills={"x": 1}, queues=["q1", "q2"]).result
    assert (view.capacity, dict(view.skills), view.queues) == (2, {"x": 1}, ("q1", "q2"))
    assert [lg.work_id for lg in view.legs] == ["w1"]
    assert offers(c.submit(3.0, "w2", "q2")) == [("w2", "a")]
    # a re-login that names nothing keeps what the agent had
    view = c.login(4.0, "a").result
    assert (view.capacity, dict(view.skills), view.queues) == (2, {"x": 1}, ("q1", "q2"))


def test_relogin_below_used_capacity_keeps_the_legs_and_routes_nothing_new() -> None:
    """A decision: lowering capacity at re-login never drops work; no new work until below."""
    c = make_center(AUTO)
    c.login(0.0, "a", capacity=2)
    serve(c, 1.0, "w1")
    serve(c, 1.0, "w2")
    view = c.login(2.0, "a", capacity=1).result
    assert (view.used, view.capacity, view.routable) == (2, 1, False)
    assert offers(c.submit(3.0, "w3", "default")) == []
    c.end(4.0, "w1")
    c.end(5.0, "w2")
    assert offers(c.advance(35.0)) == [("w3", "a")]


# -- status changes -----------------------------------------------------------------------------


def test_status_change_during_acw_is_pending_and_never_drops_to_available() -> None:
    c = make_center(AUTO)
    c.login(0.0, "a")
    serve(c, 1.0, "w1")
    c.end(10.0, "w1")
    c.submit(11.0, "w2", "default")
    out = c.set_status(12.0, "a", "away", reason="lunch")
    view = out.result
    assert (view.state, view.status, view.pending_status) == ("acw", "available", "away")
    (changed,) = events(out, AgentStateChanged)
    assert (changed.from_, changed.to, changed.pending_status) == ("acw", "acw", "away")
    at = c.advance(40.0)
    assert acw_ends(at) == [("a", "w1", "timeout")]
    assert transitions(at, "a") == [("acw", "away")]
    assert offers(at) == []
    view = c.agents["a"].view()
    assert (view.status, view.reason, view.pending_status) == ("away", "lunch", None)


def test_pending_change_is_cancelled_by_available() -> None:
    c = make_center(AUTO)
    c.login(0.0, "a")
    serve(c, 1.0, "w1")
    c.end(10.0, "w1")
    c.set_status(11.0, "a", "away")
    view = c.set_status(12.0, "a", "available").result
    assert (view.state, view.pending_status) == ("acw", None)
    c.submit(13.0, "w2", "default")
    assert offers(c.advance(40.0)) == [("w2", "a")]


def test_pending_away_makes_a_slot_scope_agent_unroutable() -> None:
    c = make_center({"defaults": {"offer_timeout_s": 0.0, "acw_scope": "slot"}})
    c.login(0.0, "a", capacity=2)
    serve(c, 1.0, "w1")
    c.end(10.0, "w1")
    assert c.agents["a"].view().routable is True
    c.set_status(11.0, "a", "away")
    assert c.agents["a"].view().routable is False
    assert offers(c.submit(12.0, "w2", "default")) == []


def test_offline_during_acw_is_pending_and_applies_at_the_end() -> None:
    c = make_center(AUTO)
    c.login(0.0, "a")
    serve(c, 1.0, "w1")
    c.end(10.0, "w1")
    view = c.set_status(12.0, "a", "offline").result
    assert (view.state, view.pending_status) == ("acw", "offline")
    at = c.advance(40.0)
    assert acw_ends(at) == [("a", "w1", "timeout")]  # not cut short: it is not a logout
    assert transitions(at, "a") == [("acw", "offline")]
    assert c.agents["a"].view().idle_since is None


def test_status_change_while_busy_applies_at_once() -> None:
    c = make_center({"defaults": {"offer_timeout_s": 0.0, "acw_mode": "off"}})
    c.login(0.0, "a", capacity=2)
    serve(c, 1.0, "w1")
    out = c.set_status(2.0, "a", "away", reason="after this one")
    view = out.result
    assert (view.state, view.status, view.pending_status) == ("busy", "away", None)
    assert offers(c.submit(3.0, "w2", "default")) == []  # a free slot, but away
    done = c.end(4.0, "w1")
    assert transitions(done, "a") == [("busy", "away")]


def test_set_status_offline_outside_acw_is_a_logout() -> None:
    c = make_center()
    c.login(0.0, "a")
    out = c.set_status(1.0, "a", "offline")
    assert transitions(out, "a") == [("available", "offline")]
    assert out.result.state == "offline"
    with refused(ErrorCode.INVALID_STATE) as info:
        c.set_status(2.0, "a", "available")
    assert info.value.data == {"state": "offline"}


def test_set_status_offline_with_active_work_is_refused() -> None:
    c = make_center(AUTO)
    c.login(0.0, "a")
    serve(c, 1.0, "w1")
    with refused(ErrorCode.HAS_ACTIVE_WORK) as info:
        c.set_status(2.0, "a", "offline")
    assert info.value.data == {"work_ids": ["w1"]}
    assert c.agents["a"].view().state == "busy"


def test_set_status_rejects_unknown_status() -> None:
    c = make_center()
    c.login(0.0, "a")
    with refused(ErrorCode.INVALID_PARAMS):
        c.set_status(1.0, "a", "lunch")


def test_idle_since_on_return_to_available_is_the_later_reading() -> None:
    c = make_center({"defaults": {"offer_timeout_s": 0.0, "acw_mode": "off"}})
    c.login(0.0, "a")
    c.set_status(10.0, "a", "away")
    assert c.agents["a"].idle_since == 0.0
    c.set_status(20.0, "a", "available")
    assert c.agents["a"].idle_since == 20.0
    c.set_status(30.0, "a", "available")  # already available: unchanged
    assert c.agents["a"].idle_since == 20.0
    serve(c, 40.0, "w1")
    assert c.agents["a"].idle_since == 20.0  # an offer is not the end of idleness ...
    c.end(50.0, "w1")
    assert c.agents["a"].idle_since == 50.0  # ... the end of the leg is


# -- logout -------------------------------------------------------------------------------------


def test_logout_with_active_work_needs_force() -> None:
    c = make_center(AUTO)
    c.login(0.0, "a")
    serve(c, 1.0, "w1")
    with refused(ErrorCode.HAS_ACTIVE_WORK):
        c.logout(2.0, "a")
    assert c.agents["a"].legs["w1"].state.value == "active"
    out = c.logout(3.0, "a", force=True)
    assert types(out).count("work.ended") == 1
    assert acw_ends(out) == [("a", "w1", "logout")]
    (record,) = c.records
    assert (record.reason, record.talk_s, record.acw_seconds) == ("logout", 2.0, 0.0)
    assert c.router.item("w1").state.value == "completed"
    assert out.result.state == "offline" and out.result.legs == ()


def test_forced_logout_with_acw_off_completes_without_record() -> None:
    c = make_center({"defaults": {"offer_timeout_s": 0.0, "acw_mode": "off"}})
    c.login(0.0, "a")
    serve(c, 1.0, "w1")
    out = c.logout(2.0, "a", force=True)
    assert "work.completed" in types(out)
    assert acw_ends(out) == [] and c.records == []


def test_logout_returns_offered_items_without_backoff() -> None:
    c = make_center()
    c.login(0.0, "a")
    c.submit(1.0, "w1", "default")
    out = c.logout(2.0, "a")
    (queued,) = events(out, WorkQueued)
    assert (queued.work_id, queued.enqueued_at) == ("w1", 1.0)
    assert c.router.item("w1").backoff == {}
    assert offers(c.login(3.0, "a")) == [("w1", "a")]


def test_logout_of_an_offline_agent_changes_nothing() -> None:
    c = make_center()
    c.login(0.0, "a")
    c.logout(1.0, "a")
    out = c.logout(2.0, "a")
    assert out.events == [] and out.result.state == "offline"


# -- disconnect ---------------------------------------------------------------------------------


def test_disconnect_requeues_offers_at_once_and_goes_offline_after_grace() -> None:
    c = make_center()
    c.login(0.0, "a")
    c.login(0.0, "b", status="away")
    assert offers(c.submit(1.0, "w1", "default")) == [("w1", "a")]
    out = c.disconnect(5.0, "a")
    (queued,) = events(out, WorkQueued)
    assert (queued.work_id, queued.enqueued_at) == ("w1", 1.0)
    view = c.agents["a"].view()
    assert (view.connected, view.routable, view.legs) == (False, False, ())
    assert offers(c.set_status(6.0, "b", "available")) == [("w1", "b")]
    assert offers(c.submit(7.0, "w2", "default")) == []  # a is disconnected: not routable

    before = c.advance(35.0 - TICK)
    assert transitions(before, "a") == []
    assert transitions(c.agents["a"].tick(35.0 - TICK), "a") == []
    assert c.agents["a"].view().status == "available"
    at = c.advance(35.0)
    assert transitions(at, "a") == [("available", "offline")]
    assert (c.agents["a"].status.value, c.agents["a"].reason) == ("offline", "disconnected")


def test_relogin_within_grace_keeps_the_agent() -> None:
    c = make_center()
    c.login(0.0, "a")
    c.disconnect(5.0, "a")
    out = c.login(20.0, "a")
    assert out.result.connected is True
    assert transitions(c.advance(1000.0), "a") == []
    assert c.agents["a"].status.value == "available"
    assert offers(c.submit(1001.0, "w1", "default")) == [("w1", "a")]


def test_disconnect_grace_keeps_active_legs_and_acw_timers_running() -> None:
    c = make_center(AUTO)
    c.login(0.0, "a")
    serve(c, 1.0, "w1")
    c.disconnect(5.0, "a")
    at_grace = c.advance(35.0)
    assert c.agents["a"].view().pending_status == "offline"
    assert transitions(at_grace, "a") == [("busy", "busy")]
    assert c.agents["a"].legs["w1"].state.value == "active"
    c.end(40.0, "w1")
    before = c.advance(70.0 - TICK)
    assert acw_ends(before) == []
    at = c.advance(70.0)
    assert acw_ends(at) == [("a", "w1", "timeout")]
    assert transitions(at, "a") == [("acw", "offline")]
    assert c.agents["a"].reason == "disconnected"


def test_relogin_after_grace_with_legs_clears_the_pending_offline() -> None:
    c = make_center(AUTO)
    c.login(0.0, "a")
    serve(c, 1.0, "w1")
    c.disconnect(5.0, "a")
    c.advance(35.0)
    view = c.login(36.0, "a").result
    assert (view.pending_status, view.connected, view.state) == (None, True, "busy")


def test_disconnect_grace_per_agent_and_disconnect_when_offline() -> None:
    c = make_center({"agents": {"a": {"disconnect_grace_s": 5.0}}})
    c.login(0.0, "a")
    c.disconnect(1.0, "a")
    assert transitions(c.advance(6.0 - TICK), "a") == []
    assert transitions(c.advance(6.0), "a") == [("available", "offline")]
    assert c.disconnect(7.0, "a").events == []


# -- no_answer_count ----------------------------------------------------------------------------


def test_no_answer_count_counts_consecutive_expired_offers_and_resets_on_accept() -> None:
    c = make_center(
        {
            "defaults": {
                "offer_timeout_s": 5.0,
                "reoffer_backoff_s": 0.0,
                "on_timeout_status": "available",
            }
        }
    )
    c.login(0.0, "a")
    c.submit(0.0, "w1", "default")
    assert offers(c.advance(5.0)) == [("w1", "a")]  # expired and, with no backoff, re-offered
    assert c.agents["a"].view().no_answer_count == 1
    c.advance(10.0)
    assert c.agents["a"].view().no_answer_count == 2
    c.decline(11.0, "w1")  # a decline is an answer, but not an accept: the count stays
    assert c.agents["a"].view().no_answer_count == 2
    c.accept(12.0, "w1")
    assert c.agents["a"].view().no_answer_count == 0


def test_relogin_during_acw_sets_status_like_set_status() -> None:
    """A decision: the status given at a re-login is applied as by set_status (pending in ACW),
    so a re-login with the default "available" cancels a pending away."""
    c = make_center(AUTO)
    c.login(0.0, "a")
    serve(c, 1.0, "w1")
    c.end(10.0, "w1")
    assert c.login(11.0, "a", status="away").result.pending_status == "away"
    assert c.login(12.0, "a").result.pending_status is None
    c.submit(13.0, "w2", "default")
    assert offers(c.advance(40.0)) == [("w2", "a")]


def test_disconnect_grace_is_an_agent_setting_not_a_queue_one() -> None:
    """A decision: grace belongs to the agent; [agents.ID] or [defaults] set it, queues do not."""
    c = make_center({"queues": {"default": {"disconnect_grace_s": 5.0}}})
    c.login(0.0, "a")
    c.disconnect(1.0, "a")
    assert transitions(c.advance(30.0), "a") == []
    assert transitions(c.advance(31.0), "a") == [("available", "offline")]
