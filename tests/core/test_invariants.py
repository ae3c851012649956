"""SEMANTICS.md's six invariants, checked after every step of random traffic.

A hypothesis ``RuleBasedStateMachine`` drives one ``Center`` (several agents of varying capacity,
queues and skills; queues of every ACW mode, scope and policy) through presence changes, work
requests, ACW requests and jumps of a fake clock that land before, on and after deadlines.

Invariant 1 and 6 are checked at the moment of each offer, by a spy on the agent machines'
``offer`` that judges routability and item order from the spec's rules (not the core's own
``refusal``); the others are checked on every outcome and after every step.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from acwd.core.agent import AgentMachine, Leg
from acwd.core.center import Center
from acwd.core.config import AcwScope, Settings
from acwd.core.errors import DomainError
from acwd.core.events import (
    AcwEnded,
    AcwStarted,
    Event,
    OfferTicket,
    Outcome,
    WorkEnded,
    WorkOffered,
    WrapupRecorded,
)
from acwd.core.views import ItemState, LegState, Status, Wrapup

from .conftest import TICK

CONFIG: dict[str, Any] = {
    "channels": {"email": {"size": 2}},
    "queues": {
        "q_timed": {
            "acw_mode": "timed",
            "acw_seconds": 20.0,
            "offer_timeout_s": 10.0,
            "reoffer_backoff_s": 5.0,
            "require_disposition": True,
            "dispositions": ["ok", "bad"],
            "max_extensions": 1,
            "extension_seconds": 7.0,
        },
        "q_forced": {
            "policy": "least_active",
            "acw_mode": "forced",
            "acw_seconds": 15.0,
            "offer_timeout_s": 0.0,
            "acw_scope": "slot",
            "priority": 1,
            "aging_step_s": 30.0,
        },
        "q_manual_cap": {
            "policy": "skills_best",
            "acw_mode": "manual",
            "max_acw_seconds": 40.0,
            "offer_timeout_s": 8.0,
            "on_timeout_status": "available",
            "overflow_after_s": 25.0,
            "overflow_queue": "q_request",
        },
        "q_manual": {
            "policy": "least_active",
            "acw_mode": "manual",
            "offer_timeout_s": 6.0,
            "on_decline_status": "away",
            "acw_scope": "slot",
            "reoffer_backoff_s": 0.0,
        },
        "q_request": {
            "channel": "voice",
            "acw_mode": "on_request",
            "acw_seconds": 10.0,
            "acw_scope": "slot",
            "max_wait_s": 120.0,
            "offer_timeout_s": 12.0,
            "aging_step_s": 20.0,
        },
        "q_off": {
            "policy": "skills_best",
            "acw_mode": "off",
            "offer_timeout_s": 5.0,
            "on_timeout_status": "offline",
            "priority": -1,
        },
    },
    "agents": {
        "a0": {"acw_seconds": 12.0},
        "a1": {"channels": {"chat": {"acw_seconds": 3.0}}, "disconnect_grace_s": 5.0},
    },
}
SETTINGS = Settings.from_dict(CONFIG)
QUEUES = sorted(SETTINGS.queues)
AGENTS = ["a0", "a1", "a2", "a3"]
TARGETED = st.sampled_from([True, True, True, False])  # mostly an item in the right state
EARLY_EXIT = {"timed", "manual", "on_request"}  # modes where acw.complete ends the ACW

skills_st = st.dictionaries(st.sampled_from(["fr", "de"]), st.integers(0, 3), max_size=2)
queues_st = st.none() | st.lists(st.sampled_from(QUEUES), min_size=1, max_size=3, unique=True)
wrapup_st = st.builds(
    Wrapup,
    disposition=st.sampled_from([None, "ok", "bad", "zzz"]),
    notes=st.sampled_from(["", "note"]),
    fields=st.none() | st.just({"k": 1}),
)


def held_units(machine: AgentMachine) -> int:
    """``used`` as SEMANTICS.md defines it, computed from the legs."""
    return sum(
        leg.size
        for leg in machine.legs.values()
        if leg.state in (LegState.OFFERED, LegState.ACTIVE)
        or (leg.state is LegState.WRAPPING and leg.settings.acw_scope is AcwScope.SLOT)
    )


def spec_routable(machine: AgentMachine, ticket: OfferTicket) -> bool:
    """SEMANTICS.md's "Routable" for an item of ``ticket``, read off the agent's state."""
    if machine.status is not Status.AVAILABLE or machine.pending is not None:
        return False
    if not machine.connected:  # decision: disconnected agents are not routable
        return False
    if any(
        leg.state is LegState.WRAPPING and leg.settings.acw_scope is AcwScope.AGENT
        for leg in machine.legs.values()
    ):
        return False
    if held_units(machine) + ticket.size > machine.capacity:
        return False
    if machine.queues is not None and ticket.queue not in machine.queues:
        return False
    if ticket.work_id in machine.legs:  # still wrapping up its own earlier leg of this item
        return False
    return all(machine.skills.get(skill, -1) >= level for skill, level in ticket.skills)


class CenterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.c = Center(SETTINGS)
        self.now = 0.0
        self.submitted: list[str] = []
        self.open_acw: dict[tuple[str, str], AcwStarted] = {}
        self.acw_ended: Counter[tuple[str, str]] = Counter()
        self.legs_ended: Counter[tuple[str, str]] = Counter()
        self.acw_started: Counter[tuple[str, str]] = Counter()
        self.recorded: list[Any] = []
        self.lowered: dict[str, set[str]] = {}
        self.offers_checked = 0
        self.offers_seen = 0
        self.previous_now = 0.0

    # -- the spy: invariants 1, 2 and 6 at the moment of each offer ----------------------------

    def _spy(self, machine: AgentMachine) -> None:
        original = machine.offer

        def offer(now: float, ticket: OfferTicket) -> Outcome:
            routable = spec_routable(machine, ticket)
            if routable:
                self._check_item_order(machine, ticket, now)
            out = original(now, ticket)
            offered = [e for e in out.events if isinstance(e, WorkOffered)]
            if offered:
                self.offers_checked += 1
                assert routable, f"invariant 1: offer of {ticket.work_id} to {machine.agent_id}"
                assert machine.used <= machine.capacity, "invariant 2 at the offer"
            else:
                # The router and the agent share every view in a Center: no refusal is expected.
                raise AssertionError(f"refused {ticket.work_id}: {machine.refusal(ticket)}")
            return out

        machine.offer = offer  # type: ignore[method-assign]

    def _effective(self, work_id: str, now: float) -> tuple[int, float]:
        item = self.c.router.item(work_id)
        cfg = SETTINGS.queues[item.queue]
        aging = 0
        if cfg.aging_step_s > 0:
            aging = math.floor(max(0.0, now - item.enqueued_at) / cfg.aging_step_s)
        return (-(item.priority + cfg.priority + aging), item.enqueued_at)

    def _check_item_order(self, machine: AgentMachine, ticket: OfferTicket, now: float) -> None:
        """Invariant 6: no eligible waiting item of the agent's queues was strictly better."""
        mine = self._effective(ticket.work_id, now)
        free = machine.capacity - held_units(machine)
        for item in self.c.router.items.values():
            if item.state is not ItemState.QUEUED or item.work_id == ticket.work_id:
                continue
            if machine.queues is not None and item.queue not in machine.queues:
                continue
            if item.size > free or item.backoff.get(machine.agent_id, -math.inf) > now:
                continue
            if item.work_id in machine.legs:
                continue
            if any(machine.skills.get(s, -1) < lvl for s, lvl in item.skills):
                continue
            other = self._effective(item.work_id, now)
            assert not other < mine, (
                f"invariant 6: {ticket.work_id} {mine} offered to {machine.agent_id} while "
                f"{item.work_id} {other} waited"
            )

    # -- running a request ---------------------------------------------------------------------

    def _fingerprint(self) -> Any:
        agents = tuple((a, m.view()) for a, m in sorted(self.c.agents.items()))
        items = tuple(i.view() for _, i in sorted(self.c.router.items.items()))
        return (agents, items, len(self.c.records))

    def _do(self, action: str, work_id: str | None, call: Callable[[], Outcome]) -> None:
        before = self._fingerprint()
        try:
            out = call()
        except DomainError:
            assert self._fingerprint() == before, f"{action} refused but changed state"
            return
        self._check_outcome(action, work_id, out)

    def _check_outcome(self, action: str, work_id: str | None, out: Outcome) -> None:
        last = -math.inf
        ended_here: set[tuple[str, str]] = set()
        self.offers_seen += sum(isinstance(e, WorkOffered) for e in out.events)
        for event in out.events:
            self._check_time(action, event, last)
            last = event.at
            if isinstance(event, WorkEnded):
                key = (event.agent_id, event.work_id)
                self.legs_ended[key] += 1
                ended_here.add(key)
            elif isinstance(event, AcwStarted):
                key = (event.agent_id, event.work_id)
                # invariant 5: ACW starts only as its leg ends, and at most once per leg
                assert key in ended_here, f"ACW of {key} started without its leg ending"
                assert key not in self.open_acw, f"second ACW for {key}"
                self.acw_started[key] += 1
                assert self.acw_started[key] <= self.legs_ended[key]
                self.open_acw[key] = event
            elif isinstance(event, AcwEnded):
                self._check_acw_end(action, work_id, event)
            elif isinstance(event, WrapupRecorded):
                record = event.record
                key = (record.agent_id, record.work_id)
                self.recorded.append(record)
                # exactly one record per ended ACW, matching it
                assert (
                    Counter((r.agent_id, r.work_id) for r in self.recorded)[key]
                    == (self.acw_ended[key])
                )
                assert record.acw_ended_at == event.at

    def _check_time(self, action: str, event: Event, last: float) -> None:
        if action == "advance":
            assert event.at >= last, "events of one jump go forward in time"
            assert self.previous_now <= event.at <= self.now
        else:
            assert event.at == self.now

    def _check_acw_end(self, action: str, work_id: str | None, event: AcwEnded) -> None:
        key = (event.agent_id, event.work_id)
        started = self.open_acw.pop(key, None)
        assert started is not None, f"ACW of {key} ended without having started"
        self.acw_ended[key] += 1
        if event.reason == "timeout":
            # invariant 4: never before the deadline, and a fake clock is never late
            assert action == "advance"
            assert event.deadline is not None and event.at == event.deadline
        elif event.reason == "completed":
            assert (action, work_id) == ("acw_complete", event.work_id)
            assert started.mode in EARLY_EXIT
        elif event.reason == "forced":
            assert (action, work_id) == ("acw_force_end", event.work_id)
        else:
            assert event.reason == "logout" and action in ("logout", "set_status")

    def _pick(self, index: int, targeted: bool, *states: ItemState) -> str:
        """A submitted item, mostly one in ``states`` (else any: error paths matter too)."""
        items = self.c.router.items
        fits = [w for w in self.submitted if items[w].state in states] if targeted else []
        if targeted and ItemState.WRAPPING in states:  # also legs wrapping after a transfer
            fits += sorted(
                {
                    w
                    for m in self.c.agents.values()
                    for w, lg in m.legs.items()
                    if lg.state is LegState.WRAPPING
                }
                - set(fits)
            )
        pool = fits or self.submitted
        return pool[index % len(pool)]

    # -- rules: presence -----------------------------------------------------------------------

    @initialize(
        profiles=st.lists(
            st.tuples(st.integers(1, 3), skills_st, queues_st), min_size=4, max_size=4
        )
    )
    def everyone_logs_in(self, profiles: list[tuple[int, dict[str, int], Any]]) -> None:
        for agent, (capacity, skills, queues) in zip(AGENTS, profiles, strict=True):
            self._login(agent, "available", capacity, skills, queues)

    @rule(
        agent=st.sampled_from(AGENTS),
        action=st.sampled_from(
            [
                *("login", "login_away", "available", "available", "available"),
                *("away", "offline", "logout", "force", "disconnect"),
            ]
        ),
        capacity=st.none() | st.integers(1, 3),
        skills=st.none() | skills_st,
        queues=queues_st,
    )
    def presence(
        self,
        agent: str,
        action: str,
        capacity: int | None,
        skills: dict[str, int] | None,
        queues: list[str] | None,
    ) -> None:
        if action.startswith("login"):
            status = "away" if action == "login_away" else "available"
            self._login(agent, status, capacity, skills, queues)
        elif action in ("available", "away", "offline"):
            self._do("set_status", None, lambda: self.c.set_status(self.now, agent, action, "r"))
        elif action == "disconnect":
            self._do("disconnect", None, lambda: self.c.disconnect(self.now, agent))
        else:
            self._do("logout", None, lambda: self.c.logout(self.now, agent, action == "force"))

    def _login(
        self,
        agent: str,
        status: str,
        capacity: int | None,
        skills: dict[str, int] | None,
        queues: list[str] | None,
    ) -> None:
        before = self._fingerprint()
        fresh = agent not in self.c.agents
        if fresh:  # the Center takes a machine it already knows: spy on it from the start
            machine = AgentMachine(agent, SETTINGS)
            self._spy(machine)
            self.c.agents[agent] = machine
        try:
            out = self.c.login(
                self.now, agent, status=status, capacity=capacity, skills=skills, queues=queues
            )
        except DomainError:
            if fresh:
                del self.c.agents[agent]
            assert self._fingerprint() == before
            return
        self._check_outcome("login", None, out)
        machine = self.c.agents[agent]
        if machine.used > machine.capacity:  # lowered below its load by this re-login
            self.lowered[agent] = set(machine.legs)

    # -- rules: work ---------------------------------------------------------------------------

    @rule(
        queue=st.sampled_from(QUEUES),
        priority=st.integers(-1, 2),
        skills=skills_st,
        channel=st.sampled_from([None, None, "email", "chat"]),
        count=st.integers(1, 3),
    )
    def submit(
        self, queue: str, priority: int, skills: dict[str, int], channel: str | None, count: int
    ) -> None:
        for _ in range(count):
            work_id = f"w{len(self.submitted)}"
            self.submitted.append(work_id)

            def call(work_id: str = work_id) -> Outcome:
                return self.c.submit(self.now, work_id, queue, channel, priority, skills)

            self._do("submit", work_id, call)

    @precondition(lambda self: self.submitted)
    @rule(
        index=st.integers(0, 200),
        action=st.sampled_from(["accept", "accept", "end"]),
        targeted=TARGETED,
    )
    def handle(self, index: int, action: str, targeted: bool) -> None:
        self._handle(index, action, targeted)

    @precondition(lambda self: self.submitted)
    @rule(
        index=st.integers(0, 200),
        action=st.sampled_from(["cancel", "decline", "decline", "end", "end"]),
        targeted=TARGETED,
    )
    def handle_otherwise(self, index: int, action: str, targeted: bool) -> None:
        self._handle(index, action, targeted)

    @rule(index=st.integers(0, 200))
    def serve_a_cycle(self, index: int) -> None:
        """Accept every offer, then end one active item: keeps legs flowing into ACW."""
        for agent_id, machine in sorted(self.c.agents.items()):
            for work_id in [w for w, lg in machine.legs.items() if lg.state is LegState.OFFERED]:
                self._do(
                    "accept",
                    work_id,
                    lambda w=work_id, a=agent_id: self.c.accept(self.now, w, a),  # type: ignore[misc]
                )
        active = [w for w in self.submitted if self.c.router.items[w].state is ItemState.ACTIVE]
        if active:
            work_id = active[index % len(active)]
            self._do("end", work_id, lambda: self.c.end(self.now, work_id))

    @rule()
    def spurious_wakeup(self) -> None:
        """The runtime may wake agents' actors at any moment: a tick with nothing due must do
        nothing (in particular, end no ACW before its deadline)."""
        for machine in list(self.c.agents.values()):
            self._do(
                "advance",
                None,
                lambda m=machine: self.c._run(self.now, m.tick(self.now), m),  # type: ignore[misc]
            )

    def _handle(self, index: int, action: str, targeted: bool) -> None:
        states = {
            "cancel": (ItemState.QUEUED, ItemState.OFFERED),
            "accept": (ItemState.OFFERED,),
            "decline": (ItemState.OFFERED,),
            "end": (ItemState.ACTIVE,),
        }[action]
        work_id = self._pick(index, targeted, *states)
        call = {
            "cancel": lambda: self.c.cancel(self.now, work_id),
            "accept": lambda: self.c.accept(self.now, work_id),
            "decline": lambda: self.c.decline(self.now, work_id),
            "end": lambda: self.c.end(self.now, work_id),
        }[action]
        self._do(action, work_id, call)

    @precondition(lambda self: self.submitted)
    @rule(index=st.integers(0, 200), queue=st.sampled_from(QUEUES), targeted=TARGETED)
    def transfer(self, index: int, queue: str, targeted: bool) -> None:
        work_id = self._pick(index, targeted, ItemState.ACTIVE)
        self._do("transfer", work_id, lambda: self.c.transfer(self.now, work_id, queue))

    @precondition(lambda self: self.submitted)
    @rule(
        index=st.integers(0, 200),
        action=st.sampled_from(["request", "extend", "force_end"]),
        targeted=TARGETED,
    )
    def acw(self, index: int, action: str, targeted: bool) -> None:
        state = ItemState.ACTIVE if action == "request" else ItemState.WRAPPING
        work_id = self._pick(index, targeted, state)
        call = {
            "request": lambda: self.c.acw_request(self.now, work_id),
            "extend": lambda: self.c.acw_extend(self.now, work_id),
            "force_end": lambda: self.c.acw_force_end(self.now, work_id),
        }[action]
        self._do(f"acw_{action}", work_id, call)

    @precondition(lambda self: self.submitted)
    @rule(index=st.integers(0, 200), wrapup=wrapup_st, targeted=TARGETED)
    def acw_complete(self, index: int, wrapup: Wrapup, targeted: bool) -> None:
        work_id = self._pick(index, targeted, ItemState.WRAPPING)
        self._do("acw_complete", work_id, lambda: self.c.acw_complete(self.now, work_id, wrapup))

    # -- rules: time ---------------------------------------------------------------------------

    @rule(step=st.sampled_from([0.0, TICK, 0.5, 1.0, 3.0, 10.0, 45.0]))
    def advance_by(self, step: float) -> None:
        self._advance("step", step)

    @rule(how=st.sampled_from(["deadline", "deadline", "before"]))
    def advance_to_deadline(self, how: str) -> None:
        self._advance(how, 1.0)

    def _advance(self, how: str, step: float) -> None:
        self.previous_now = self.now
        target = self.now + step
        deadline = self.c.next_deadline()
        if how != "step" and deadline is not None and deadline > self.now:
            target = deadline if how == "deadline" else max(self.now, deadline - TICK)
        self.now = target
        self._do("advance", None, lambda: self.c.advance(self.now))

    # -- invariants after every step -----------------------------------------------------------

    @invariant()
    def capacity_is_never_exceeded(self) -> None:
        """Invariant 2 (a re-login may lower capacity below the load: no new work until under)."""
        for agent_id, machine in self.c.agents.items():
            assert machine.used == held_units(machine)
            if machine.used > machine.capacity:
                assert set(machine.legs) <= self.lowered.get(agent_id, set())
            else:
                self.lowered.pop(agent_id, None)

    @invariant()
    def items_are_held_once_and_never_lost(self) -> None:
        """Invariant 3."""
        holders: dict[str, list[Leg]] = {}
        for machine in self.c.agents.values():
            if machine.status is Status.OFFLINE:
                assert machine.legs == {}, "an offline agent holds no work"
            for leg in machine.legs.values():
                assert leg.work_id in self.c.router.items
                if leg.state in (LegState.OFFERED, LegState.ACTIVE):
                    holders.setdefault(leg.work_id, []).append(leg)
        assert sorted(self.c.router.items) == sorted(self.submitted)
        for work_id, item in self.c.router.items.items():
            held = holders.get(work_id, [])
            assert len(held) <= 1, f"{work_id} held by {[lg.agent_id for lg in held]}"
            if item.state in (ItemState.OFFERED, ItemState.ACTIVE):
                assert [(lg.agent_id, lg.state.value) for lg in held] == [
                    (item.agent_id, item.state.value)
                ]
            else:
                assert held == []
            if item.state is ItemState.WRAPPING:
                assert item.agent_id is not None
                assert self.c.agents[item.agent_id].legs[work_id].state is LegState.WRAPPING
            waiting = {i.work_id for i in self.c.router.waiting(item.queue)}
            assert (work_id in waiting) == (item.state is ItemState.QUEUED)

    @invariant()
    def acw_ends_on_time_and_records_match(self) -> None:
        """Invariants 4 and 5: nothing is left past its deadline; one record per ended ACW."""
        wrapping = set()
        for machine in self.c.agents.values():
            for leg in machine.legs.values():
                if leg.state is LegState.WRAPPING:
                    assert leg.acw is not None
                    wrapping.add((machine.agent_id, leg.work_id))
                    deadline = leg.acw.deadline
                    assert deadline is None or deadline > self.now, "ACW past its deadline"
                elif leg.state is LegState.OFFERED and leg.offer_expires_at is not None:
                    assert leg.offer_expires_at > self.now, "offer past its expiry"
        assert wrapping == set(self.open_acw)
        assert self.c.records == self.recorded
        assert Counter((r.agent_id, r.work_id) for r in self.c.records) == self.acw_ended

    @invariant()
    def router_and_agents_agree(self) -> None:
        for agent_id, machine in self.c.agents.items():
            assert self.c.router.agents[agent_id] == machine.routing_view()
        assert self.offers_checked == self.offers_seen, "every offer passed through the spy"


CenterMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCenterInvariants = CenterMachine.TestCase
