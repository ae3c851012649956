"""The core's supporting modules: journal records (dump/load), queue statistics, the invariant
checker used by recovery, machine cloning, and the wire shapes of errors and events."""

from __future__ import annotations

import json
from typing import Any

from acwd.core.center import Center
from acwd.core.config import Settings
from acwd.core.errors import DomainError, ErrorCode
from acwd.core.events import (
    AgentChanged,
    AgentStateChanged,
    LegChanged,
    WorkCancelled,
    WorkOffered,
)
from acwd.core.invariants import check_invariants
from acwd.core.records import (
    dump_agent,
    dump_item,
    load_agent,
    load_item,
    load_record,
)
from acwd.core.routing import Router
from acwd.core.stats import CentreStats
from acwd.core.views import FollowUp, ItemState, LegState, LegView, Wrapup

from .conftest import make_center, offers, serve

CONFIG: dict[str, Any] = {
    "defaults": {"offer_timeout_s": 30.0},
    "queues": {
        "forced": {"acw_mode": "forced", "acw_seconds": 60.0, "acw_scope": "slot"},
        "plain": {"acw_seconds": 20.0},
    },
}


def _busy_center() -> Center:
    """Agent ``a`` holds one leg in each state; ``b`` is in ACW, pending away, disconnected."""
    c = make_center(CONFIG)
    c.login(0.0, "a", capacity=3, skills={"fr": 2}, queues=["forced", "plain"])
    c.submit(1.0, "wrap", "forced", attributes={"crm": {"id": 7}})
    c.accept(2.0, "wrap")
    c.end(3.0, "wrap")
    c.acw_extend(3.5, "wrap")
    c.acw_complete(4.0, "wrap", Wrapup("sold", "n", {"k": 1}, (FollowUp("call", 9.0, "a"),)))
    c.submit(5.0, "act", "plain", priority=2, skills={"fr": 1})
    c.accept(6.0, "act")
    c.submit(7.0, "off", "plain")
    assert c.agents["a"].legs["off"].state is LegState.OFFERED
    c.login(8.0, "b", queues=["plain"])
    c.submit(8.0, "bw", "plain")
    c.accept(8.5, "bw")
    c.end(9.0, "bw")
    c.set_status(9.5, "b", "away", reason="break")
    c.disconnect(10.0, "b")
    c.submit(11.0, "waiting", "plain")
    return c


# -- records ------------------------------------------------------------------------------------


def test_agents_round_trip_through_plain_data() -> None:
    c = _busy_center()
    for agent_id, machine in c.agents.items():
        data = json.loads(json.dumps(dump_agent(machine)))
        again = load_agent(data, c.settings)
        assert again.view() == machine.view(), agent_id
        assert again.next_deadline() == machine.next_deadline()
        assert again.routing_view() == machine.routing_view()
    b = load_agent(json.loads(json.dumps(dump_agent(c.agents["b"]))), c.settings)
    assert (b.pending, b.connected, b.grace_deadline) == (
        c.agents["b"].pending,
        False,
        40.0,
    )
    wrapping = load_agent(dump_agent(c.agents["a"]), c.settings).legs["wrap"]
    assert wrapping.acw is not None and wrapping.acw.wrapup is not None
    assert wrapping.acw.deadline == 93.0
    assert wrapping.acw.wrapup.follow_ups == (FollowUp("call", 9.0, "a"),)


def test_a_loaded_machine_finishes_its_acw_with_the_stored_wrapup() -> None:
    c = _busy_center()
    machine = load_agent(dump_agent(c.agents["a"]), c.settings)
    out = machine.tick(93.0)
    (record,) = [e.record for e in out.events if e.type == "wrapup.recorded"]
    assert (record.disposition, record.extensions, record.acw_seconds) == ("sold", 1, 90.0)


def test_leg_of_a_removed_queue_finishes_under_the_remaining_settings() -> None:
    c = _busy_center()
    smaller = Settings.from_dict({"queues": {"forced": {"acw_mode": "forced"}}})
    machine = load_agent(dump_agent(c.agents["a"]), smaller)
    assert machine.legs["act"].queue == "plain"
    assert machine.legs["act"].settings == smaller.resolve("forced", "chat", "a")


def test_items_round_trip_through_plain_data() -> None:
    c = _busy_center()
    c.advance(29.5)  # b's ACW is over: "bw" completed
    c.cancel(29.5, "waiting")
    states = {i.state for i in c.router.items.values()}
    assert states == set(ItemState) - {ItemState.QUEUED}
    for item in c.router.items.values():
        data = json.loads(json.dumps(dump_item(item)))
        again = load_item(data)
        assert again.view() == item.view()
        assert (again.seq, again.queue_since, again.backoff) == (
            item.seq,
            item.queue_since,
            item.backoff,
        )


def test_records_round_trip_through_the_wire_shape() -> None:
    c = _busy_center()
    c.advance(29.5)
    c.acw_force_end(30.0, "wrap")
    assert [r.reason for r in c.records] == ["timeout", "forced"]
    for record in c.records:
        assert load_record(json.loads(json.dumps(record.to_wire()))) == record


def test_router_restore_requeues_offers_keeping_their_place() -> None:
    c = _busy_center()
    items = [load_item(dump_item(i)) for i in c.router.items.values()]
    router = Router(c.settings)
    returned = router.restore(items)
    assert returned == 1  # "off" was offered: the offer is gone with the old process
    assert router.item("off").state is ItemState.QUEUED
    assert {i.work_id for i in router.waiting("plain")} == {"off", "waiting"}
    assert router.item("act").state is ItemState.ACTIVE
    router.submit(20.0, "new", "plain")
    assert router.item("new").seq > max(i.seq for i in items)


# -- statistics ---------------------------------------------------------------------------------


def test_queue_stats_from_the_event_stream() -> None:
    c = make_center(
        {
            "defaults": {"offer_timeout_s": 60.0},
            "queues": {"q": {"acw_seconds": 30.0, "sla_target_s": 10.0}, "other": {}},
        }
    )
    stats = CentreStats()
    q = stats.configure("q", 10.0, 1000.0)
    assert stats.configure("q", 10.0, 1000.0) is q
    events = []
    events += c.login(0.0, "a", queues=["q"]).events
    events += c.submit(0.0, "w1", "q").events
    events += c.accept(5.0, "w1").events  # waited 5: within target
    events += c.end(15.0, "w1").events
    events += c.advance(45.0).events  # ACW 30, handle 10 + 30
    events += c.submit(45.0, "w2", "q").events
    events += c.accept(75.0, "w2").events  # waited 30: outside target
    events += c.logout(80.0, "a", force=True).events  # talk 5, ACW 0 (logout)
    events += c.submit(81.0, "w3", "q").events
    events += c.cancel(82.0, "w3").events
    events += c.submit(83.0, "x", "other").events
    events += c.cancel(84.0, "x").events
    for event in events:
        stats.observe(event)
    view = q.view(100.0)
    assert view == {
        "offered": 2,
        "handled": 2,
        "abandoned": 1,
        "service_level": 0.5,
        "asa_s": 17.5,
        "aht_s": 22.5,
        "acw_avg_s": 15.0,
    }
    empty = q.view(5000.0)  # everything fell out of the window
    assert empty["offered"] == 0 and empty["asa_s"] is None and empty["aht_s"] is None
    assert stats.configure("q", 20.0, 1000.0) is not q


def test_handle_time_without_acw_is_the_talk_time() -> None:
    c = make_center({"defaults": {"offer_timeout_s": 0.0, "acw_mode": "off"}})
    stats = CentreStats()
    q = stats.configure("default", 20.0, 100.0)
    for event in c.login(0.0, "a").events + c.submit(1.0, "w1", "default").events:
        stats.observe(event)
    for event in c.end(8.0, "w1").events:
        stats.observe(event)
    view = q.view(10.0)
    assert (view["handled"], view["aht_s"], view["acw_avg_s"]) == (1, 7.0, None)
    assert view["service_level"] == 1.0


# -- the invariant checker ----------------------------------------------------------------------


def test_check_invariants_passes_a_healthy_centre() -> None:
    c = _busy_center()
    assert check_invariants(c.router, c.agents.values()) == []


def test_check_invariants_names_each_broken_rule() -> None:
    c = _busy_center()
    a = c.agents["a"]
    a.capacity = 1
    twin = a.legs["act"]
    c.agents["b"].legs["act"] = twin
    ghost = a.clone().legs["off"]
    ghost.work_id = "ghost"
    a.legs["ghost"] = ghost
    c.router.item("waiting").state = ItemState.OFFERED
    c.router.item("bw").state = ItemState.QUEUED
    c.agents["b"].legs["bw"] = a.clone().legs["off"]
    c.agents["b"].legs["bw"].work_id = "bw"
    problems = check_invariants(c.router, c.agents.values())
    assert "agent a uses 4 of capacity 1" in problems
    assert "item act is held by a and b" in problems
    assert "agent a holds unknown item ghost" in problems
    assert "item waiting is offered but no agent holds it" in problems
    assert "item bw is queued and held by b" in problems
    assert any(p.startswith("item act is active for a, but agent b holds it") for p in problems)


# -- cloning, views on the wire -----------------------------------------------------------------


def test_clone_is_independent_of_the_original() -> None:
    c = _busy_center()
    a = c.agents["a"]
    twin = a.clone()
    c.acw_extend(20.0, "wrap")
    c.end(21.0, "act")
    assert twin.legs["wrap"].acw is not None and twin.legs["wrap"].acw.extensions == 1
    assert twin.legs["act"].state is LegState.ACTIVE
    assert a.legs["wrap"].acw is not None and a.legs["wrap"].acw.extensions == 2


def test_sent_view_is_not_sent_again() -> None:
    c = make_center()
    c.login(0.0, "a")
    machine = c.agents["a"]
    machine.sent(machine.routing_view())
    out = machine.set_status(1.0, "available")
    assert not any(isinstance(e, AgentChanged) for e in out.effects)


def test_domain_error_and_event_wire_shapes() -> None:
    err = DomainError(ErrorCode.INVALID_STATE, "No.", {"state": "queued"})
    assert err.to_wire() == {"code": "invalid_state", "message": "No.", "data": {"state": "queued"}}
    assert DomainError(ErrorCode.CONFLICT, "Again.").to_wire() == {
        "code": "conflict",
        "message": "Again.",
    }
    changed = AgentStateChanged(1.0, "a", "available", "busy", "available", None)
    assert changed.to_wire() == {
        "type": "agent.state_changed",
        "at": 1.0,
        "agent_id": "a",
        "from": "available",
        "to": "busy",
        "status": "available",
        "reason": None,
        "pending_status": None,
    }
    c = make_center()
    c.login(0.0, "a")
    out = c.submit(1.0, "w1", "default")
    offered = next(e for e in out.events if isinstance(e, WorkOffered))
    assert offered.to_wire()["expires_at"] == 21.0
    (cancelled,) = [e for e in c.cancel(2.0, "w1").events if isinstance(e, WorkCancelled)]
    assert cancelled.to_wire() == {
        "type": "work.cancelled",
        "at": 2.0,
        "work_id": "w1",
        "queue": "default",
        "reason": "cancelled",
    }


# -- corners of the machines and the router -----------------------------------------------------


def test_transfer_to_an_unknown_queue_is_not_found_and_changes_nothing() -> None:
    c = make_center({"defaults": {"offer_timeout_s": 0.0}})
    c.login(0.0, "a")
    serve(c, 1.0, "w1")
    try:
        c.transfer(2.0, "w1", "nope")
    except DomainError as err:
        assert err.code is ErrorCode.NOT_FOUND
    else:
        raise AssertionError("transfer to an unknown queue was accepted")
    assert c.router.item("w1").state is ItemState.ACTIVE


def test_pending_offline_waits_for_the_last_leg() -> None:
    c = make_center({"defaults": {"offer_timeout_s": 0.0, "acw_seconds": 10.0}})
    c.login(0.0, "a", capacity=2)
    serve(c, 1.0, "w1")
    serve(c, 1.0, "w2")
    c.disconnect(2.0, "a")
    c.advance(32.0)
    c.end(33.0, "w1")
    c.advance(43.0)  # w1's ACW is over; w2 still active: not offline yet
    view = c.agents["a"].view()
    assert (view.state, view.pending_status) == ("busy", "offline")
    c.end(44.0, "w2")
    c.advance(54.0)
    assert c.agents["a"].view().state == "offline"


def test_leg_change_for_an_unknown_item_is_ignored() -> None:
    router = Router(Settings.from_dict({}))
    leg = LegView("nope", "a", "default", "chat", "active", 0.0, 0.0, None, None)
    assert router.apply(1.0, LegChanged(leg)).events == []


def test_reload_keeps_routable_agents_indexed() -> None:
    c = make_center({"queues": {"q": {}, "r": {}}})
    c.login(0.0, "a")
    c.router.reconfigure(Settings.from_dict({"queues": {"q": {}, "r": {}, "s": {}}}))
    assert c.router.queues["s"].members == {"a"}
    c.router.submit(1.0, "w1", "s")
    assert [o.agent_id for o in c.router.dispatch(1.0)] == ["a"]


def test_agent_heaps_are_compacted_and_routing_still_works() -> None:
    c = make_center({"queues": {"q": {"policy": "least_active"}}})
    c.login(0.0, "a")
    c.login(0.0, "b")
    for i in range(80):
        c.set_status(float(i), "a", "away")
        c.set_status(float(i), "a", "available")
    assert len(c.router.queues["q"].agents) <= 2 * len(c.router.queues["q"].members) + 65
    assert offers(c.submit(100.0, "w1", "q")) == [("w1", "b")]  # b idle since 0, a since 79


def test_a_late_leg_update_never_completes_an_item_twice() -> None:
    c = make_center({"defaults": {"offer_timeout_s": 0.0, "acw_mode": "off"}})
    c.login(0.0, "a")
    serve(c, 1.0, "w1")
    out = c.end(2.0, "w1")
    (done,) = [e for e in out.effects if isinstance(e, LegChanged) and e.leg.state == "done"]
    again = c.router.apply(3.0, done)
    assert again.events == []
    assert c.router.item("w1").state is ItemState.COMPLETED


def test_resync_rebuilds_what_a_router_knows_of_an_agent() -> None:
    c = _busy_center()
    a = c.agents["a"]
    out = a.resync()
    legs = [e.leg for e in out.effects if isinstance(e, LegChanged)]
    assert sorted(leg.work_id for leg in legs) == sorted(a.legs)
    views = [e.view for e in out.effects if isinstance(e, AgentChanged)]
    assert views == [a.routing_view()]
    assert out.events == []
    # nothing changed since: the next step sends no routing view again
    assert not any(isinstance(e, AgentChanged) for e in a.tick(12.0).effects)


def test_work_item_clone_is_independent() -> None:
    c = _busy_center()
    item = c.router.item("off")
    twin = item.clone()
    c.decline(12.0, "off")
    assert twin.state is ItemState.OFFERED and twin.backoff == {}
    assert item.state is ItemState.QUEUED and "a" in item.backoff
    assert twin.legs is not item.legs
