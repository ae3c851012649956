"""One simulated hour under trio's MockClock: 50 agents, three queues, Poisson traffic.

Simulated agents hear of their offers on their own connection (the event bus), as a desktop
would, and answer through the node's API after random delays: most accept, some decline, some let
the offer time out; they talk for an exponential time, sometimes transfer, end, and sometimes
complete or extend their ACW. Customers abandon after a random patience. While it runs, every
published event is checked against SEMANTICS.md's invariants; at the end of the hour the whole
centre is checked at a quiescent instant, then traffic stops, the backlog drains, and every item
must have finished with exactly one wrap-up record per leg that had ACW.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any

import anyio
import pytest
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream
from runtime_harness import EPS, Running, start_node

from acwd.core.config import AcwScope
from acwd.core.errors import DomainError, ErrorCode
from acwd.core.events import (
    AcwEnded,
    AcwStarted,
    AgentStateChanged,
    Event,
    WorkOffered,
    WorkQueued,
)
from acwd.core.invariants import check_invariants
from acwd.core.views import ItemState, LegState, Wrapup

pytestmark = pytest.mark.anyio

HOUR = 3600.0
SEED = 20240611
AGENTS = 50
CONFIG: dict[str, Any] = {
    "channels": {"email": {"offer_timeout_s": 60}},
    "queues": {
        "sales": {
            "policy": "longest_idle",
            "acw_mode": "timed",
            "acw_seconds": 30,
            "offer_timeout_s": 15,
            "reoffer_backoff_s": 5,
        },
        "support": {
            "policy": "least_active",
            "acw_mode": "forced",
            "acw_seconds": 20,
            "priority": 1,
            "aging_step_s": 60,
            "offer_timeout_s": 15,
        },
        "email": {
            "channel": "email",
            "policy": "skills_best",
            "acw_mode": "manual",
            "max_acw_seconds": 120,
            "acw_scope": "slot",
            "dispositions": ["answered", "escalated", "timeout"],
        },
    },
}
ARRIVALS_PER_S = {"sales": 0.12, "support": 0.09, "email": 0.04}  # ~900 items an hour
MEAN_TALK_S = {"sales": 80.0, "support": 100.0, "email": 120.0}
# What a simulated agent may legitimately be told when it acts a moment too late: the offer was
# withdrawn or expired, the ACW already timed out, an extension is over the limit.
EXPECTED = {ErrorCode.NOT_FOUND, ErrorCode.INVALID_STATE, ErrorCode.EXTENSION_LIMIT}


class Checker:
    """Checks every published event, in order, against the invariants that can be seen there."""

    def __init__(self, run: Running) -> None:
        self.run = run
        node = run.node
        self.scope = {q: node.settings.resolve(q).acw_scope for q in node.settings.queues}
        self.status: dict[str, str] = {}
        self.pending: dict[str, str | None] = {}
        self.state: dict[str, str] = {}
        self.wrapping: dict[str, dict[str, str]] = {}  # agent -> work_id -> queue
        self.enqueued: dict[str, float] = {}
        self.counts: Counter[str] = Counter()
        self.problems: list[str] = []
        self.timeout_endings: list[Any] = []
        node.observers.append(self.observe)

    def fail(self, problem: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(problem)

    def observe(self, event: Event) -> None:
        self.counts[event.type] += 1
        agent_id = getattr(event, "agent_id", None)
        kind = event.type
        if kind == "work.queued":
            first = self.enqueued.setdefault(event.work_id, event.enqueued_at)
            if event.enqueued_at != first:
                self.fail(f"{event.work_id} re-queued with a new enqueue time")
        elif kind == "work.offered":
            self.check_offer(event)
        elif kind == "agent.state_changed":
            self.status[agent_id] = event.status
            self.pending[agent_id] = event.pending_status
            self.state[agent_id] = event.to
        elif kind == "acw.started":
            self.wrapping.setdefault(agent_id, {})[event.work_id] = event.queue
        elif kind == "acw.ended":
            self.wrapping.get(agent_id, {}).pop(event.work_id, None)
            if event.reason == "timeout":
                self.timeout_endings.append(event)
                if event.deadline is None or event.at < event.deadline - EPS:
                    self.fail(f"ACW of {event.work_id} timed out at {event.at} before deadline")
        if agent_id is not None and agent_id in self.run.node.actors:
            machine = self.run.node.actors[agent_id].state
            if machine.used > machine.capacity:
                self.fail(f"{agent_id} uses {machine.used} of {machine.capacity}")

    def check_offer(self, event: Any) -> None:
        agent_id, work_id = event.agent_id, event.work_id
        # What the agent's own events said it was just before this offer.
        if self.status.get(agent_id) != "available" or self.pending.get(agent_id) is not None:
            self.fail(f"{work_id} offered to {agent_id}, status {self.status.get(agent_id)}")
        if self.state.get(agent_id) in ("offline", "away"):
            self.fail(f"{work_id} offered to {agent_id} in state {self.state[agent_id]}")
        wrapping = self.wrapping.get(agent_id, {})
        blocking = [w for w, q in wrapping.items() if self.scope[q] is AcwScope.AGENT]
        if blocking:
            self.fail(f"{work_id} offered to {agent_id} during agent-scope ACW of {blocking}")
        if self.state.get(agent_id) == "acw" and not wrapping:
            self.fail(f"{work_id} offered to {agent_id} in state acw with no leg wrapping")
        holders = [
            a
            for a, actor in self.run.node.actors.items()
            if (leg := actor.state.legs.get(work_id)) is not None
            and leg.state in (LegState.OFFERED, LegState.ACTIVE)
        ]
        if holders != [agent_id]:
            self.fail(f"{work_id} held by {holders} when offered to {agent_id}")


class Simulation:
    def __init__(self, run: Running, rng: random.Random) -> None:
        self.run = run
        self.node = run.node
        self.rng = rng
        self.submitted: list[str] = []
        self.unexpected: list[str] = []
        self.draining = False
        self.actions: Counter[str] = Counter()

    async def call(self, what: str, fn: Any, *args: Any) -> Any:
        """Call the node as a client would; too-late answers are part of life, others are not."""
        try:
            result = await fn(*args)
        except DomainError as exc:
            if exc.code not in EXPECTED:
                self.unexpected.append(f"{what}{args}: {exc.code.value}: {exc.message}")
            return None
        self.actions[what] += 1
        return result

    # -- agents --------------------------------------------------------------------------------

    async def start_agent(self, tg: TaskGroup, i: int) -> None:
        rng = self.rng
        agent_id = f"agent{i:02d}"
        queues = [["sales", "support"], ["support", "email"], ["sales", "support", "email"]][i % 3]
        skills = {"english": rng.randint(1, 5), "spanish": 1 + i % 3 if i % 4 == 0 else 0}
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](math.inf)
        self.node.bus.attach(1000 + i, send.send_nowait)
        await self.node.login(agent_id, 1000 + i, capacity=1 + i % 3, skills=skills, queues=queues)
        tg.start_soon(self.desktop, tg, agent_id, receive)

    async def desktop(
        self, tg: TaskGroup, agent_id: str, inbox: MemoryObjectReceiveStream[dict[str, Any]]
    ) -> None:
        async for message in inbox:
            if message["type"] == "work.offered" and message["agent_id"] == agent_id:
                tg.start_soon(self.handle, tg, agent_id, message["work_id"], message["queue"])
            elif message["type"] == "agent.state_changed" and message["reason"] == "no_answer":
                tg.start_soon(self.back_after, agent_id, self.rng.uniform(5, 40))

    async def back_after(self, agent_id: str, delay: float) -> None:
        await anyio.sleep(delay)
        await self.call("available", self.node.set_status, agent_id, "available", None)

    async def handle(self, tg: TaskGroup, agent_id: str, work_id: str, queue: str) -> None:
        rng, node = self.rng, self.node
        choice = 1.0 if self.draining else rng.random()
        if choice < 0.07:
            await anyio.sleep(rng.uniform(0.5, 5))
            await self.call("decline", node.decline, work_id, "busy", agent_id)
            return
        if choice < 0.11:
            return  # let it time out
        await anyio.sleep(rng.uniform(0.3, 8))
        if await self.call("accept", node.accept, work_id, agent_id) is None:
            return
        await anyio.sleep(rng.expovariate(1 / MEAN_TALK_S[queue]))
        if queue != "email" and rng.random() < 0.05:
            other = "support" if queue == "sales" else "sales"
            leg = await self.call("transfer", node.transfer, work_id, other, agent_id)
        else:
            leg = await self.call("end", node.end, work_id, agent_id)
        if leg is None:
            return
        await self.wrap_up(agent_id, work_id, queue)
        if not self.draining and rng.random() < 0.03:
            await self.call("break", node.set_status, agent_id, "away", "break")
            await self.back_after(agent_id, rng.uniform(60, 300))

    async def wrap_up(self, agent_id: str, work_id: str, queue: str) -> None:
        rng, node = self.rng, self.node
        if queue == "sales":
            if rng.random() < 0.15:
                await anyio.sleep(rng.uniform(5, 25))
                await self.call("extend", node.acw_extend, work_id, agent_id)
            if rng.random() < 0.5:
                await anyio.sleep(rng.uniform(3, 50))
                await self.call("complete", node.acw_complete, work_id, Wrapup("sold"), agent_id)
        elif queue == "support":
            if rng.random() < 0.6:  # forced: stored, but the ACW runs its full 20 s
                await anyio.sleep(rng.uniform(2, 15))
                await self.call("complete", node.acw_complete, work_id, Wrapup("fixed"), agent_id)
        else:
            await anyio.sleep(rng.uniform(10, 150))  # past 120 s the safety cap ends it first
            await self.call("complete", node.acw_complete, work_id, Wrapup("answered"), agent_id)

    # -- customers -----------------------------------------------------------------------------

    async def arrivals(self, tg: TaskGroup, queue: str, rate: float, until: float) -> None:
        n = 0
        while True:
            await anyio.sleep(self.rng.expovariate(rate))
            if self.run.now() >= until:
                return
            n += 1
            work_id = f"{queue}-{n}"
            skills = {"english": self.rng.randint(1, 3)} if queue == "email" else {}
            if queue == "email" and self.rng.random() < 0.2:
                skills = {"spanish": 1}
            priority = 1 if self.rng.random() < 0.1 else 0
            await self.node.submit(work_id, queue, priority=priority, skills=skills)
            self.submitted.append(work_id)
            tg.start_soon(self.abandon_after, work_id, self.rng.expovariate(1 / 240))

    async def abandon_after(self, work_id: str, patience: float) -> None:
        await anyio.sleep(patience)
        if self.node.router.items[work_id].state in (ItemState.QUEUED, ItemState.OFFERED):
            try:
                await self.node.cancel(work_id, "abandoned")
            except DomainError as exc:
                # The customer was connected meanwhile, or the offer kept moving.
                if exc.code not in (ErrorCode.INVALID_STATE, ErrorCode.CONFLICT):
                    self.unexpected.append(f"cancel {work_id}: {exc.code.value}")


def check_centre(run: Running, submitted: list[str]) -> Counter[str]:
    """The whole centre at a quiescent instant; returns how many items are in each state."""
    node = run.node
    machines = {a: actor.state for a, actor in node.actors.items()}
    assert check_invariants(node.router, machines.values()) == []
    for machine in machines.values():
        assert machine.used <= machine.capacity
    waiting = {item.work_id for q in node.router.queues for item in node.router.waiting(q)}
    states: Counter[str] = Counter()
    for work_id in submitted:
        item = node.router.items[work_id]
        states[item.state.value] += 1
        if item.state is ItemState.QUEUED:
            assert work_id in waiting
        elif item.state in (ItemState.OFFERED, ItemState.ACTIVE):
            leg = machines[item.agent_id].legs[work_id]
            assert leg.state.value == item.state.value
        elif item.state is ItemState.WRAPPING:
            assert any(
                (leg := m.legs.get(work_id)) is not None and leg.state is LegState.WRAPPING
                for m in machines.values()
            )
        else:
            assert item.state in (ItemState.COMPLETED, ItemState.CANCELLED)
            assert work_id not in waiting
    return states


async def test_one_simulated_hour_keeps_every_invariant() -> None:
    rng = random.Random(SEED)
    async with start_node(CONFIG) as run:
        checker = Checker(run)
        sim = Simulation(run, rng)
        start = run.now()
        async with anyio.create_task_group() as tg:
            for i in range(AGENTS):
                await sim.start_agent(tg, i)
            for queue, rate in ARRIVALS_PER_S.items():
                tg.start_soon(sim.arrivals, tg, queue, rate, start + HOUR)

            # The end of the hour: every actor is idle at this instant (the mock clock only jumps
            # when no task can run), so the centre can be checked as a whole.
            await anyio.sleep(HOUR)
            at_hour = check_centre(run, sim.submitted)

            sim.draining = True  # no more declines, missed offers or breaks
            for agent_id in list(run.node.actors):
                if run.node.actors[agent_id].state.status.value == "away":
                    tg.start_soon(sim.back_after, agent_id, 1.0)
            for _ in range(120):
                await anyio.sleep(30)
                if all(run.node.router.items[w].finished for w in sim.submitted):
                    break
            tg.cancel_scope.cancel()
        await run.settle()

        assert checker.problems == []
        assert sim.unexpected == []
        drained = check_centre(run, sim.submitted)
        assert set(drained) <= {"completed", "cancelled"}, drained
        assert all(not actor.state.legs for actor in run.node.actors.values())

        # One wrap-up record per leg that ended with ACW, and only those.
        legs_with_acw = Counter((e.work_id, e.agent_id) for e in run.of("work.ended") if e.acw)
        records = await run.node.journal.wrapup_list()
        assert Counter((r.work_id, r.agent_id) for r in records) == legs_with_acw
        assert len(records) == checker.counts["acw.started"] == checker.counts["acw.ended"]
        assert len({(r.work_id, r.agent_id, r.acw_started_at) for r in records}) == len(records)
        # Every timeout at or after its deadline, and no later than the lateness reported.
        latest = max((s for _, s in run.lateness), default=0.0)
        assert latest < 1e-3
        for ended in checker.timeout_endings:
            assert ended.deadline - EPS <= ended.at <= ended.deadline + latest + EPS

        # The hour really exercised what it claims to.
        assert len(sim.submitted) > 700
        assert at_hour["completed"] > 600
        counts = checker.counts
        for kind in (
            "work.declined",
            "work.offer_expired",
            "work.transferred",
            "work.cancelled",
            "acw.extended",
        ):
            assert counts[kind] > 0, kind
        reasons = Counter(e.reason for e in run.of("acw.ended"))
        assert reasons["timeout"] > 0 and reasons["completed"] > 0
        assert sim.actions["break"] > 0 and sim.actions["complete"] > 0


async def test_the_checker_flags_what_it_is_meant_to_catch() -> None:
    """The simulation's event checks are not vacuous: fed bad events, each one complains."""
    async with start_node(CONFIG) as run:
        checker = Checker(run)
        now = run.now()
        checker.observe(AgentStateChanged(now, "x", "offline", "available", "available", None))
        checker.observe(AcwStarted(now, "x", "w0", "sales", "timed", now + 30))
        checker.observe(WorkOffered(now, "w1", "x", "sales", None))  # during agent-scope ACW
        checker.observe(AcwEnded(now + 1, "x", "w0", "sales", "timeout", 1.0, now + 30))
        checker.observe(WorkQueued(now, "w2", "sales", 0, now))
        checker.observe(WorkQueued(now + 5, "w2", "sales", 0, now + 5))
        checker.observe(AgentStateChanged(now, "y", "offline", "away", "away", "lunch"))
        checker.observe(WorkOffered(now, "w3", "y", "sales", None))
    problems = "\n".join(checker.problems)
    assert "w1 offered to x during agent-scope ACW of ['w0']" in problems
    assert "w1 held by [] when offered to x" in problems
    assert "ACW of w0 timed out" in problems
    assert "w2 re-queued with a new enqueue time" in problems
    assert "w3 offered to y, status away" in problems
