"""Routing: which agent (per policy), which item (priority, aging, across queues), overflow,
max_wait, waiting with no agents, and the router's own index on its own."""

from __future__ import annotations

from typing import Any

import pytest

from acwd.core.config import Settings
from acwd.core.errors import ErrorCode
from acwd.core.events import AgentChanged, Offer, ReturnItem, WorkCancelled, WorkOverflowed
from acwd.core.routing import UNDELIVERED, Router
from acwd.core.views import RoutingView

from .conftest import TICK, events, make_center, offers, refused, serve, types

AUTO_OFF = {"offer_timeout_s": 0.0, "acw_mode": "off"}  # legs start at once and end at once


def _center(queues: dict[str, Any] | None = None, **defaults: Any) -> Any:
    return make_center({"defaults": {**AUTO_OFF, **defaults}, "queues": queues or {"q": {}}})


def _who(c: Any, now: float, work_id: str, queue: str = "q", **kw: Any) -> str | None:
    got = offers(c.submit(now, work_id, queue, **kw))
    assert len(got) <= 1
    return got[0][1] if got else None


# -- which agent --------------------------------------------------------------------------------


def test_longest_idle_counts_from_the_end_of_the_last_acw() -> None:
    c = _center(acw_mode="timed", acw_seconds=30.0)
    c.login(0.0, "a")
    c.login(5.0, "b")
    assert _who(c, 10.0, "w1") == "a"
    c.end(20.0, "w1")
    assert _who(c, 30.0, "w2") == "b"  # a is in ACW
    c.end(31.0, "w2")
    c.advance(61.0)  # a idle since 50, b since 61
    assert (c.agents["a"].idle_since, c.agents["b"].idle_since) == (50.0, 61.0)
    assert _who(c, 70.0, "w3") == "a"


def test_least_active_uses_current_load_then_longest_idle() -> None:
    c = _center({"q": {"policy": "least_active"}})
    for at, agent in enumerate("abc"):
        c.login(float(at), agent, capacity=3)
    got = [_who(c, 10.0 + i, f"w{i}") for i in range(5)]
    assert got == ["a", "b", "c", "a", "b"]
    assert [c.agents[x].used for x in "abc"] == [2, 2, 1]
    # a handled the most, but load counts now, not in a lifetime
    c.end(20.0, "w0")
    c.end(20.0, "w3")
    assert _who(c, 21.0, "w5") == "a"


def test_skills_best_sums_levels_over_required_skills() -> None:
    c = _center({"q": {"policy": "skills_best"}})
    c.login(0.0, "a", skills={"fr": 5, "de": 1}, capacity=5)
    c.login(1.0, "b", skills={"fr": 3, "de": 4}, capacity=5)
    c.login(2.0, "c", skills={"fr": 5}, capacity=5)
    assert _who(c, 3.0, "w1", skills={"fr": 1, "de": 0}) == "b"  # 7 > 6; c lacks de
    assert _who(c, 4.0, "w2", skills={"fr": 1}) == "a"  # 5 = 5: a idle longer than c
    assert _who(c, 5.0, "w3", skills={"de": 2}) == "b"  # only b qualifies
    assert _who(c, 6.0, "w4") == "a"  # no skills required: longest idle


def test_skills_best_with_nobody_eligible_waits() -> None:
    c = _center({"q": {"policy": "skills_best"}})
    c.login(0.0, "a", skills={"fr": 1})
    assert _who(c, 1.0, "w1", skills={"fr": 2}) is None
    assert offers(c.login(2.0, "b", skills={"fr": 2})) == [("w1", "b")]


@pytest.mark.parametrize("policy", ["longest_idle", "least_active", "skills_best"])
def test_required_skills_are_minimum_levels(policy: str) -> None:
    c = _center({"q": {"policy": policy}})
    c.login(0.0, "none")
    c.login(1.0, "low", skills={"fr": 2})
    assert _who(c, 2.0, "w1", skills={"fr": 3}) is None
    assert offers(c.login(3.0, "exact", skills={"fr": 3})) == [("w1", "exact")]


def test_item_larger_than_capacity_waits_for_room() -> None:
    c = make_center({"defaults": AUTO_OFF, "channels": {"video": {"size": 2}}})
    c.login(0.0, "a", capacity=1)
    assert _who(c, 1.0, "w1", "default", channel="video") is None
    assert offers(c.login(2.0, "b", capacity=3)) == [("w1", "b")]
    assert c.agents["b"].used == 2
    assert _who(c, 3.0, "w2", "default", size=2) is None
    assert _who(c, 3.0, "w3", "default", size=1) == "a"


def test_agents_routable_at_the_same_instant_are_settled_by_policy_not_message_order() -> None:
    settings = Settings.from_dict({"queues": {"q": {}}})

    def view(agent_id: str, idle: float, used: int = 0) -> RoutingView:
        return RoutingView(agent_id, True, 3 - used, used, idle, {}, None, "available")

    for order in (["late", "early"], ["early", "late"]):
        router = Router(settings)
        router.submit(0.0, "w1", "q")
        idle = {"early": 1.0, "late": 2.0}
        for agent_id in order:
            router.apply(10.0, AgentChanged(view(agent_id, idle[agent_id])))
        (offer,) = router.dispatch(10.0)
        assert offer.agent_id == "early"


# -- which item ---------------------------------------------------------------------------------


def _drain(c: Any, now: float, agent: str = "a") -> list[str]:
    """Let ``agent`` take every waiting item in turn; the order it got them."""
    got = [w for w, _ in offers(c.set_status(now, agent, "available"))]
    while got and c.router.item(got[-1]).state.value == "active":
        nxt = offers(c.end(now, got[-1]))
        if not nxt:
            break
        got.extend(w for w, _ in nxt)
    return got


def test_highest_priority_then_longest_waiting() -> None:
    c = _center()
    c.login(0.0, "a", status="away")
    for at, (work_id, prio) in enumerate([("p0", 0), ("p5a", 5), ("p5b", 5), ("p1", 1)]):
        c.submit(1.0 + at, work_id, "q", priority=prio)
    assert _drain(c, 10.0) == ["p5a", "p5b", "p1", "p0"]


def test_queue_priority_counts_and_waiting_is_compared_across_queues() -> None:
    c = _center({"low": {"priority": 0}, "high": {"priority": 2}})
    c.login(0.0, "a", status="away")
    c.submit(1.0, "low_p1", "low", priority=1)  # effective 1
    c.submit(2.0, "high_p0", "high")  # effective 2, waiting since 2
    c.submit(3.0, "low_p2", "low", priority=2)  # effective 2, waiting since 3
    c.submit(4.0, "low_p0", "low")  # effective 0
    assert _drain(c, 10.0) == ["high_p0", "low_p2", "low_p1", "low_p0"]


@pytest.mark.parametrize(("at", "first"), [(30.0 - TICK, "urgent"), (30.0, "old")])
def test_aging_adds_one_per_step_waited(at: float, first: str) -> None:
    c = _center({"q": {"aging_step_s": 10.0}})
    c.login(0.0, "a", status="away")
    c.submit(0.0, "old", "q")  # effective 0 + floor(waited / 10)
    c.submit(25.0, "urgent", "q", priority=3)  # effective 3 (+0 until 35)
    assert c.router.effective_priority(c.router.item("old"), at) == (2 if at < 30.0 else 3)
    assert _drain(c, at)[0] == first


def test_aging_off_by_default() -> None:
    c = _center()
    c.submit(0.0, "w1", "q")
    assert c.router.effective_priority(c.router.item("w1"), 10_000.0) == 0


# -- overflow and max_wait ----------------------------------------------------------------------


def test_overflow_boundary_keeps_enqueue_time_and_priority() -> None:
    c = make_center(
        {
            "defaults": AUTO_OFF,
            "channels": {"email": {}},
            "queues": {
                "q1": {"overflow_after_s": 30.0, "overflow_queue": "q2"},
                "q2": {"channel": "email"},
            },
        }
    )
    c.login(0.0, "b", queues=["q2"])
    c.submit(5.0, "w1", "q1", priority=4)
    assert events(c.advance(35.0 - TICK), WorkOverflowed) == []
    at = c.advance(35.0)
    (moved,) = events(at, WorkOverflowed)
    assert (moved.work_id, moved.from_queue, moved.to_queue, moved.at) == ("w1", "q1", "q2", 35.0)
    assert offers(at) == [("w1", "b")]
    view = c.router.item("w1").view()
    assert (view.queue, view.channel, view.enqueued_at, view.priority) == ("q2", "email", 5.0, 4)


def test_overflowed_item_keeps_its_place_in_the_new_queue() -> None:
    c = _center({"q1": {"overflow_after_s": 30.0, "overflow_queue": "q2"}, "q2": {}})
    c.login(0.0, "b", queues=["q2"], status="away")
    c.submit(5.0, "old", "q1")
    c.submit(10.0, "native", "q2")
    c.advance(35.0)
    assert _drain(c, 40.0, "b") == ["old", "native"]


def test_overflow_is_timed_from_entering_each_queue() -> None:
    c = _center(
        {
            "q1": {"overflow_after_s": 20.0, "overflow_queue": "q2"},
            "q2": {"overflow_after_s": 20.0, "overflow_queue": "q3"},
            "q3": {},
        }
    )
    c.submit(0.0, "w1", "q1")
    out = c.advance(100.0)
    assert [(e.to_queue, e.at) for e in events(out, WorkOverflowed)] == [("q2", 20.0), ("q3", 40.0)]


def test_max_wait_cancels_a_queued_item_at_the_boundary() -> None:
    c = _center({"q": {"max_wait_s": 60.0}})
    c.submit(0.0, "w1", "q")
    assert events(c.advance(60.0 - TICK), WorkCancelled) == []
    at = c.advance(60.0)
    assert [(e.work_id, e.reason, e.at) for e in events(at, WorkCancelled)] == [
        ("w1", "max_wait", 60.0)
    ]
    view = c.router.item("w1").view()
    assert (view.state, view.cancel_reason) == ("cancelled", "max_wait")


def test_max_wait_spares_an_offered_item_and_checks_it_again_when_it_returns() -> None:
    c = make_center({"queues": {"q": {"max_wait_s": 60.0}}})
    c.login(0.0, "a", status="away")
    c.submit(0.0, "w1", "q")
    c.set_status(50.0, "a", "available")
    assert events(c.advance(60.0), WorkCancelled) == []
    assert c.router.item("w1").state.value == "offered"
    c.decline(65.0, "w1")
    out = c.advance(65.0)
    assert [(e.reason, e.at) for e in events(out, WorkCancelled)] == [("max_wait", 65.0)]


def test_max_wait_counts_from_the_original_enqueue_time_across_overflow() -> None:
    c = _center(
        {"q1": {"overflow_after_s": 30.0, "overflow_queue": "q2"}, "q2": {"max_wait_s": 50.0}}
    )
    c.submit(0.0, "w1", "q1")
    out = c.advance(100.0)
    assert types(out) == ["work.overflowed", "work.cancelled"]
    assert [e.at for e in out.events] == [30.0, 50.0]


def test_an_item_with_no_agents_waits() -> None:
    c = _center()
    out = c.submit(0.0, "w1", "q")
    assert types(out) == ["work.queued"]
    assert c.advance(100_000.0).events == []
    assert c.router.item("w1").state.value == "queued"
    assert [i.work_id for i in c.router.waiting("q")] == ["w1"]
    assert offers(c.login(100_001.0, "a")) == [("w1", "a")]
    assert list(c.router.waiting("q")) == []


# -- configuration reload -----------------------------------------------------------------------


def test_reload_removing_a_queue_that_holds_work_is_refused() -> None:
    c = _center({"q": {}, "spare": {}})
    c.submit(0.0, "w1", "q")
    smaller = Settings.from_dict({"defaults": AUTO_OFF, "queues": {"spare": {}}})
    with refused(ErrorCode.INVALID_STATE) as info:
        c.router.reconfigure(smaller)
    assert info.value.data == {"queues": ["q"]}
    assert set(c.router.queues) == {"q", "spare"}


def test_reload_keeps_waiting_items_in_their_places() -> None:
    c = _center({"q": {}, "spare": {}})
    c.submit(0.0, "w1", "q")
    c.submit(1.0, "w2", "q", priority=1)
    c.submit(2.0, "w3", "q")
    c.router.reconfigure(Settings.from_dict({"defaults": AUTO_OFF, "queues": {"q": {}}}))
    assert set(c.router.queues) == {"q"}
    c.login(3.0, "a", status="away")
    assert _drain(c, 4.0) == ["w2", "w1", "w3"]


# -- the router on its own: the runtime's undelivered offers ------------------------------------


def test_undelivered_offer_is_uncounted_and_the_item_keeps_its_place() -> None:
    router = Router(Settings.from_dict({}))
    view = RoutingView("a", True, 1, 0, 0.0, {}, None, "available")
    router.apply(0.0, AgentChanged(view))
    router.submit(1.0, "w1", "default", priority=2)
    (offer,) = router.dispatch(1.0)
    assert isinstance(offer, Offer) and offer.ticket.enqueued_at == 1.0
    assert router.agents["a"].free == 0 and router.agents["a"].routable is False
    out = router.apply(2.0, ReturnItem("w1", "a", UNDELIVERED, None))
    assert types(out) == ["work.queued"]
    assert (router.agents["a"].free, router.agents["a"].used) == (1, 0)
    assert router.item("w1").backoff == {}
    assert [o.agent_id for o in router.dispatch(2.0)] == ["a"]


def test_stale_return_and_transfer_effects_are_ignored() -> None:
    c = _center()
    c.login(0.0, "a")
    serve(c, 1.0, "w1", "q")
    before = c.router.item("w1").view()
    assert c.router.apply(2.0, ReturnItem("w1", "b", "declined", 5.0)).events == []
    assert c.router.apply(2.0, ReturnItem("nope", "a", "declined", None)).events == []
    assert c.router.item("w1").view() == before


def test_finished_items_beyond_the_kept_number_are_forgotten() -> None:
    """Memory does not grow with traffic: the oldest finished items leave the router."""
    from acwd.core.center import Center
    from acwd.core.config import Settings

    center = Center(Settings.from_dict({"defaults": {"acw_mode": "off", "offer_timeout_s": 0.0}}))
    center.router.keep_finished = 3
    center.login(0.0, "alice")
    for i in range(5):
        center.submit(float(i), f"w{i}", "default")
        center.end(float(i), f"w{i}")
    assert sorted(center.router.items) == ["w2", "w3", "w4"]
    center.submit(9.0, "w9", "default")
    assert "w2" in center.router.items  # w9 is active: nothing more has finished
