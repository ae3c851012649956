"""Regression tests: one per reported bug, each docstring naming the bug it pins down.

The first group are bugs reported against other implementations (peer bugs); the second group
are bugs found in acwd's own core while writing this suite, and fixed with it.
"""

from __future__ import annotations

import pytest

from acwd.core.config import Settings
from acwd.core.errors import ErrorCode
from acwd.core.events import AcwEnded, AcwStarted, AgentChanged, Outcome, WorkOffered
from acwd.core.routing import Router
from acwd.core.views import RoutingView

from .conftest import TICK, acw_ends, events, make_center, offers, refused, serve, types

AUTO = {"offer_timeout_s": 0.0}

# -- peer bugs ----------------------------------------------------------------------------------


def test_agent_in_two_queues_gets_nothing_from_either_until_its_acw_deadline() -> None:
    """Peer bug: an agent serving two queues was offered work by the second queue during the
    ACW of a leg from the first."""
    c = make_center(
        {
            "defaults": AUTO,
            "queues": {"q1": {"acw_seconds": 30.0}, "q2": {"acw_seconds": 5.0, "priority": 9}},
        }
    )
    c.login(0.0, "a", queues=["q1", "q2"])
    serve(c, 1.0, "w1", "q1", agent_id="a")
    c.end(10.0, "w1")
    assert offers(c.submit(11.0, "w2", "q2")) == []
    assert offers(c.submit(12.0, "w3", "q1")) == []
    assert offers(c.advance(40.0 - TICK)) == []
    at = c.advance(40.0)
    assert offers(at) == [("w2", "a")]  # q2's higher priority wins, at the deadline


def test_agent_override_of_acw_duration_beats_the_queue() -> None:
    """Peer bug: the queue's acw_seconds was applied although the agent had its own."""
    c = make_center(
        {
            "defaults": AUTO,
            "queues": {"q": {"acw_seconds": 60.0}},
            "agents": {"a": {"acw_seconds": 5.0}, "b": {"channels": {"chat": {"acw_seconds": 2}}}},
        }
    )
    c.login(0.0, "a")
    c.login(0.0, "b")
    c.login(0.0, "c")
    for work_id in ("w1", "w2", "w3"):
        c.submit(1.0, work_id, "q")
    deadlines = {}
    for work_id in ("w1", "w2", "w3"):
        (started,) = events(c.end(10.0, work_id), AcwStarted)
        deadlines[started.agent_id] = started.deadline
    assert deadlines == {"a": 15.0, "b": 12.0, "c": 70.0}


@pytest.mark.parametrize("mode", ["timed", "off", "manual"])
@pytest.mark.parametrize("named", [False, True])
def test_ending_a_leg_twice_starts_acw_once_and_counts_once(mode: str, named: bool) -> None:
    """Peer bug: a repeated work.end started a second ACW and counted the item twice; the second
    work.end must be ``invalid_state`` (also once the ACW is over and the item completed)."""
    c = make_center({"defaults": {**AUTO, "acw_mode": mode, "acw_seconds": 5.0}})
    c.login(0.0, "a")
    serve(c, 1.0, "w1")
    agent = "a" if named else None
    first = c.end(2.0, "w1", agent_id=agent)
    assert types(first).count("work.ended") == 1
    with refused(ErrorCode.INVALID_STATE):
        c.end(3.0, "w1", agent_id=agent)
    if mode == "manual":
        c.acw_complete(4.0, "w1")
    c.advance(100.0)
    with refused(ErrorCode.INVALID_STATE) as info:
        c.end(101.0, "w1", agent_id=agent)
    assert info.value.data == {"state": "completed"}
    assert len(c.records) == (0 if mode == "off" else 1)
    assert c.router.item("w1").state.value == "completed"


@pytest.mark.parametrize("miss", ["decline", "timeout", "cancel", "disconnect", "logout"])
def test_declined_or_expired_offer_starts_no_acw(miss: str) -> None:
    """Peer bug: a declined or expired offer put the agent into ACW (ACW follows connected work
    only); the same holds for offers withdrawn by cancel, disconnect and logout."""
    c = make_center({"defaults": {"offer_timeout_s": 5.0, "on_timeout_status": "available"}})
    c.login(0.0, "a")
    c.submit(1.0, "w1", "default")
    outs: list[Outcome] = []
    if miss == "decline":
        outs.append(c.decline(2.0, "w1"))
    elif miss == "timeout":
        outs.append(c.advance(6.0))
    elif miss == "cancel":
        outs.append(c.cancel(2.0, "w1"))
    elif miss == "disconnect":
        outs.append(c.disconnect(2.0, "a"))
    else:
        outs.append(c.logout(2.0, "a"))
    outs.append(c.advance(200.0))
    assert not any(t.startswith("acw.") for out in outs for t in types(out))
    assert c.records == []
    assert c.agents["a"].state.value != "acw"
    assert c.router.item("w1").view().legs == ()


@pytest.mark.parametrize("offer_timeout", [0.0, 20.0])
def test_four_simultaneous_items_for_capacity_three_give_three_legs(offer_timeout: float) -> None:
    """Peer bug: items dispatched together all went to one agent before its load was counted,
    exceeding its capacity."""
    c = make_center({"defaults": {"offer_timeout_s": offer_timeout}})
    c.login(0.0, "a", capacity=3, status="away")
    for i in range(4):
        c.submit(1.0, f"w{i}", "default")
    out = c.set_status(2.0, "a", "available")
    assert offers(out) == [("w0", "a"), ("w1", "a"), ("w2", "a")]
    assert c.agents["a"].used == 3 and len(c.agents["a"].legs) == 3
    assert c.router.item("w3").state.value == "queued"

    router = Router(Settings.from_dict({}))
    for i in range(4):
        router.submit(1.0, f"w{i}", "default")
    view = RoutingView("a", True, 3, 0, 0.0, {}, None, "available")
    router.apply(2.0, AgentChanged(view))
    assert len(router.dispatch(2.0)) == 3


def test_one_item_is_never_given_to_two_agents() -> None:
    """Peer bug: two agents becoming available together were both offered the same item."""
    c = make_center()
    c.login(0.0, "a", status="away")
    c.login(0.0, "b", status="away")
    c.submit(1.0, "w1", "default")
    got = offers(c.set_status(2.0, "a", "available")) + offers(c.set_status(2.0, "b", "available"))
    assert got == [("w1", "a")]
    back = c.decline(3.0, "w1")
    assert offers(back) == [("w1", "b")]
    assert "w1" not in c.agents["a"].legs

    router = Router(Settings.from_dict({}))
    router.submit(1.0, "w1", "default")
    for agent_id in ("a", "b", "c"):
        router.apply(2.0, AgentChanged(RoutingView(agent_id, True, 1, 0, 0.0, {}, None, "x")))
    assert len(router.dispatch(2.0)) == 1


def test_agent_back_from_a_break_is_not_flooded_under_least_active() -> None:
    """Peer bug: under least_active an agent returning from a break (low lifetime count, or a
    load the router did not update between offers) was given every new item."""
    c = make_center({"defaults": AUTO, "queues": {"q": {"policy": "least_active"}}})
    c.login(0.0, "b", capacity=3)
    c.login(1.0, "c", capacity=3)
    c.login(2.0, "a", capacity=3)
    serve(c, 3.0, "x1", "q")
    serve(c, 3.0, "x2", "q")
    c.set_status(4.0, "a", "away")
    c.set_status(100.0, "a", "available")
    got = [offers(c.submit(101.0 + i, f"w{i}", "q"))[0][1] for i in range(3)]
    assert got == ["a", "b", "c"]
    assert [c.agents[x].used for x in "abc"] == [1, 2, 2]


def test_longest_idle_is_measured_from_the_end_of_the_last_acw_not_the_last_offer() -> None:
    """Peer bug: idle time was measured from the last offer, so an agent with a long ACW was
    considered idle longest and got the next item straight after wrapping up."""
    c = make_center({"defaults": {**AUTO, "acw_seconds": 30.0}})
    c.login(0.0, "a")
    c.login(5.0, "b")
    serve(c, 10.0, "w1", agent_id="a")  # a's last offer: 10
    serve(c, 12.0, "w2", agent_id="b")  # b's last offer: 12
    c.end(12.5, "w2")  # b's ACW ends at 42.5
    c.end(20.0, "w1")  # a's ACW ends at 50
    c.advance(55.0)
    assert (c.agents["a"].idle_since, c.agents["b"].idle_since) == (50.0, 42.5)
    assert offers(c.submit(60.0, "w3", "default")) == [("w3", "b")]


# -- bugs found in acwd's core by this suite ----------------------------------------------------


def test_overflow_queue_item_returned_once_does_not_crash_the_router() -> None:
    """Core bug (routing.py, Router.tick): an item returned to an overflow queue (decline,
    timeout) got a second overflow timer; after the first moved it, the second fired against
    the new queue, which has no overflow, and ``channel_of("")`` raised KeyError."""
    c = make_center(
        {
            "queues": {
                "q1": {
                    "overflow_after_s": 30.0,
                    "overflow_queue": "q2",
                    "on_decline_status": "away",
                },
                "q2": {},
            }
        }
    )
    c.login(0.0, "a", queues=["q1"])
    c.submit(0.0, "w1", "q1")
    c.decline(5.0, "w1")
    out = c.advance(31.0)
    assert [(e.type, e.at) for e in out.events] == [("work.overflowed", 30.0)]
    assert c.router.item("w1").queue == "q2"
    assert c.advance(1000.0).events == []


def test_max_wait_timer_of_an_earlier_queue_does_not_cancel_after_overflow() -> None:
    """Core bug (routing.py, Router.tick): q1's max_wait timer fired after the item overflowed
    into q2, whose max_wait_s = 0 ("wait forever") was read as "0 seconds": cancelled."""
    c = make_center(
        {
            "queues": {
                "q1": {"max_wait_s": 60.0, "overflow_after_s": 30.0, "overflow_queue": "q2"},
                "q2": {},
            }
        }
    )
    c.submit(0.0, "w1", "q1")
    out = c.advance(1000.0)
    assert types(out) == ["work.overflowed"]
    assert c.router.item("w1").state.value == "queued"


def test_item_transferred_back_is_not_offered_while_the_agent_wraps_it_up() -> None:
    """Core bug (agent.py refusal, routing.py _eligible): with acw_scope = "slot" an agent that
    transferred an item into another queue it serves was offered the item again at once; the
    new offer replaced the wrapping leg (legs are keyed by work_id), so that ACW never ended
    and its wrap-up record was lost. (The router now also backs the item off from the agent
    for reoffer_backoff_s; the ACW here outlasts that.)"""
    c = make_center(
        {
            "defaults": {"acw_scope": "slot", "acw_seconds": 30.0, "offer_timeout_s": 50.0},
            "queues": {"q1": {}, "q2": {}},
        }
    )
    c.login(0.0, "a", capacity=3)
    c.submit(1.0, "w1", "q1")
    c.accept(2.0, "w1")
    out = c.transfer(3.0, "w1", "q2")
    assert offers(out) == []
    assert c.agents["a"].legs["w1"].state.value == "wrapping"
    assert offers(c.submit(4.0, "w2", "q1")) == [("w2", "a")]  # the free slot still works
    c.accept(5.0, "w2")
    c.end(6.0, "w2")  # a now wraps w1 and w2, one slot each, and has one slot free
    assert c.agents["a"].view().routable is True
    assert offers(c.advance(13.0)) == []  # the backoff is over, but a still wraps w1
    at = c.advance(33.0)
    assert acw_ends(at) == [("a", "w1", "timeout")]
    assert offers(at) == [("w1", "a")]  # only now may it come back to a
    assert [(r.work_id, r.queue, r.reason) for r in c.records] == [("w1", "q1", "timeout")]
    c.accept(34.0, "w1")
    c.end(35.0, "w1")
    c.advance(65.0)
    assert [(r.work_id, r.queue) for r in c.records] == [("w1", "q1"), ("w2", "q1"), ("w1", "q2")]
    assert [lg.queue for lg in c.router.item("w1").view().legs] == ["q1", "q2"]


def test_missed_offer_with_on_timeout_status_offline_waits_for_held_legs() -> None:
    """Core bug (agent.py _set_status): on_timeout_status = "offline" put an agent holding an
    active leg straight to status offline: state "offline" while busy with work."""
    c = make_center({"defaults": {"offer_timeout_s": 5.0, "on_timeout_status": "offline"}})
    c.login(0.0, "a", capacity=2)
    c.submit(0.0, "w1", "default")
    c.accept(1.0, "w1")
    c.submit(2.0, "w2", "default")
    c.advance(7.0)
    view = c.agents["a"].view()
    assert (view.state, view.pending_status, view.routable) == ("busy", "offline", False)
    c.end(8.0, "w1")
    out = c.advance(98.0)
    assert acw_ends(out) == [("a", "w1", "timeout")]
    assert c.agents["a"].view().state == "offline"
    assert c.agents["a"].legs == {}


def test_missed_offer_with_on_timeout_status_offline_and_nothing_held_is_offline_at_once() -> None:
    """Companion of the bug above: with no legs held the agent goes offline at once."""
    c = make_center({"defaults": {"offer_timeout_s": 5.0, "on_timeout_status": "offline"}})
    c.login(0.0, "a")
    c.submit(0.0, "w1", "default")
    c.advance(5.0)
    assert (c.agents["a"].view().state, c.agents["a"].reason) == ("offline", "no_answer")


def _readings(outs: list[Outcome]) -> list[float]:
    return [e.at for out in outs for e in out.events]


def test_advance_never_fires_a_timer_before_the_latest_clock_reading() -> None:
    """Core bug (center.py, Center.advance): a timer re-armed in the past (max_wait or overflow
    of an item returned late) was fired at its old deadline, behind the clock: events went back
    in time and an offer made there expired early (shorter than offer_timeout_s)."""
    c = make_center(
        {
            "defaults": {"offer_timeout_s": 40.0},
            "queues": {"q1": {"overflow_after_s": 30.0, "overflow_queue": "q2"}, "q2": {}},
        }
    )
    outs = [c.login(0.0, "a", queues=["q1"]), c.login(0.0, "b", queues=["q2"], status="away")]
    outs.append(c.submit(0.0, "w1", "q1"))
    outs.append(c.decline(35.0, "w1"))
    outs.append(c.set_status(35.5, "b", "available"))
    outs.append(c.advance(36.0))
    readings = _readings(outs)
    assert readings == sorted(readings)
    (offered,) = [e for e in events(outs[-1], WorkOffered) if e.work_id == "w1"]
    assert offered.agent_id == "b"
    assert offered.expires_at == offered.at + 40.0


def test_acw_timeouts_fire_exactly_at_their_deadlines_in_order() -> None:
    """Invariant 4 with a fake clock: one big jump fires every ACW at its own deadline, in
    deadline order, each freeing its agent at that reading."""
    seconds = {"a0": 30.0, "a1": 10.0, "a2": 20.0}
    c = make_center(
        {"defaults": AUTO, "agents": {a: {"acw_seconds": s} for a, s in seconds.items()}}
    )
    for i, agent in enumerate(seconds):
        c.login(0.0, agent)
        serve(c, 1.0, f"w{i}", agent_id=agent)
    for i in range(3):
        c.end(5.0, f"w{i}")
    jump = c.advance(1000.0)
    fired = [(e.agent_id, e.at, e.deadline) for e in events(jump, AcwEnded)]
    assert fired == [("a1", 15.0, 15.0), ("a2", 25.0, 25.0), ("a0", 35.0, 35.0)]
    assert [c.agents[a].idle_since for a in seconds] == [35.0, 15.0, 25.0]


def test_agents_freed_together_take_the_best_items_first() -> None:
    """Core bug (routing.py, Router.dispatch): when several agents became routable at once, they
    all sought the same best item; each re-queued item of the batch then went to its queue's
    best agent although that agent had a better item waiting (invariant 6)."""
    c = make_center(
        {
            "queues": {
                "low": {"offer_timeout_s": 8.0, "on_timeout_status": "available"},
                "high": {"priority": 1},
            }
        }
    )
    for agent in ("a1", "a2", "a3"):
        c.login(0.0, agent)
    for work_id in ("low0", "low1", "low2"):
        c.submit(0.0, work_id, "low")
    c.submit(0.0, "high0", "high")
    c.submit(0.0, "high1", "high")
    at = c.advance(8.0)  # the three offers expire together: three agents free at once
    got = {w for w, _ in offers(at)}
    assert {"high0", "high1"} <= got
    assert len(got) == 3
