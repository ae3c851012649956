"""The core wired together synchronously: agent machines and the router in one object.

The daemon runs the same machines as actors and passes the same effects through mailboxes; this
object delivers them in-line instead. Tests, the property-based model and the virtual-time
simulator drive the core through it.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Mapping
from typing import Any

from acwd.core.agent import AgentMachine
from acwd.core.config import Settings
from acwd.core.errors import DomainError, ErrorCode
from acwd.core.events import Effect, Offer, Outcome, StoreWrapup
from acwd.core.routing import Router
from acwd.core.views import ItemState, LegState, Wrapup, WrapupRecord


class Center:
    """Every agent and the router of one contact centre, driven by explicit ``now`` readings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.router = Router(settings)
        self.agents: dict[str, AgentMachine] = {}
        self.records: list[WrapupRecord] = []
        self._timers: list[tuple[float, str]] = []
        self._clock = -math.inf  # the latest reading seen: timers due in the past fire now

    # -- lookups -------------------------------------------------------------------------------

    def agent(self, agent_id: str) -> AgentMachine:
        machine = self.agents.get(agent_id)
        if machine is None:
            raise DomainError(
                ErrorCode.NOT_FOUND, f"There is no agent {agent_id}.", {"agent_id": agent_id}
            )
        return machine

    def owner(self, work_id: str, state: LegState, agent_id: str | None = None) -> AgentMachine:
        """The agent holding ``work_id``'s leg in ``state`` (the newest one, unless named)."""
        if agent_id is not None and work_id not in self.agent(agent_id).legs:
            self.router.holder(work_id, state)  # invalid_state if no leg is in that state at all
        return self.agent(agent_id or self.router.holder(work_id, state))

    # -- requests ------------------------------------------------------------------------------

    def login(self, now: float, agent_id: str, **profile: Any) -> Outcome:
        machine = self.agents.get(agent_id) or AgentMachine(agent_id, self.settings)
        out = machine.login(now, **profile)
        self.agents[agent_id] = machine
        return self._run(now, out, machine)

    def logout(self, now: float, agent_id: str, force: bool = False) -> Outcome:
        machine = self.agent(agent_id)
        return self._run(now, machine.logout(now, force), machine)

    def set_status(
        self, now: float, agent_id: str, status: str, reason: str | None = None
    ) -> Outcome:
        machine = self.agent(agent_id)
        return self._run(now, machine.set_status(now, status, reason), machine)

    def disconnect(self, now: float, agent_id: str) -> Outcome:
        machine = self.agent(agent_id)
        return self._run(now, machine.connection_lost(now), machine)

    def submit(
        self,
        now: float,
        work_id: str,
        queue: str,
        channel: str | None = None,
        priority: int = 0,
        skills: Mapping[str, int] | None = None,
        size: int | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> Outcome:
        out = self.router.submit(now, work_id, queue, channel, priority, skills, size, attributes)
        return self._run(now, out)

    def cancel(self, now: float, work_id: str, reason: str = "cancelled") -> Outcome:
        item = self.router.check_cancel(work_id)
        out = Outcome()
        if item.state is ItemState.OFFERED and item.agent_id is not None:
            machine = self.agent(item.agent_id)
            out.extend(machine.withdraw(now, work_id))
            self._watch(machine)
        out.extend(self.router.cancel(now, work_id, reason))
        result = out.result = self.router.item(work_id).view()
        out = self._run(now, out)
        out.result = result
        return out

    def accept(self, now: float, work_id: str, agent_id: str | None = None) -> Outcome:
        machine = self.owner(work_id, LegState.OFFERED, agent_id)
        return self._run(now, machine.accept(now, work_id), machine)

    def decline(
        self, now: float, work_id: str, reason: str | None = None, agent_id: str | None = None
    ) -> Outcome:
        machine = self.owner(work_id, LegState.OFFERED, agent_id)
        return self._run(now, machine.decline(now, work_id, reason), machine)

    def end(self, now: float, work_id: str, agent_id: str | None = None) -> Outcome:
        machine = self.owner(work_id, LegState.ACTIVE, agent_id)
        return self._run(now, machine.end(now, work_id), machine)

    def transfer(
        self, now: float, work_id: str, queue: str, agent_id: str | None = None
    ) -> Outcome:
        machine = self.owner(work_id, LegState.ACTIVE, agent_id)
        return self._run(now, machine.transfer(now, work_id, queue), machine)

    def acw_request(self, now: float, work_id: str, agent_id: str | None = None) -> Outcome:
        machine = self.owner(work_id, LegState.ACTIVE, agent_id)
        return self._run(now, machine.acw_request(now, work_id), machine)

    def acw_extend(self, now: float, work_id: str, agent_id: str | None = None) -> Outcome:
        machine = self.owner(work_id, LegState.WRAPPING, agent_id)
        return self._run(now, machine.acw_extend(now, work_id), machine)

    def acw_complete(
        self, now: float, work_id: str, wrapup: Wrapup | None = None, agent_id: str | None = None
    ) -> Outcome:
        machine = self.owner(work_id, LegState.WRAPPING, agent_id)
        return self._run(now, machine.acw_complete(now, work_id, wrapup or Wrapup()), machine)

    def acw_force_end(self, now: float, work_id: str, agent_id: str | None = None) -> Outcome:
        machine = self.owner(work_id, LegState.WRAPPING, agent_id)
        return self._run(now, machine.acw_force_end(now, work_id), machine)

    # -- time ----------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        times = [t for t in (self.router.next_deadline(),) if t is not None]
        if self._timers:
            times.append(self._timers[0][0])
        return min(times) if times else None

    def tick(self, now: float) -> Outcome:
        """Fire every agent and router timer due at ``now``, then route what that freed."""
        out = Outcome()
        due: set[str] = set()
        while self._timers and self._timers[0][0] <= now:
            due.add(heapq.heappop(self._timers)[1])
        for agent_id in sorted(due):
            machine = self.agents[agent_id]
            out.extend(machine.tick(now))
            self._watch(machine)
        out.extend(self.router.tick(now))
        return self._run(now, out)

    def advance(self, now: float) -> Outcome:
        """Fire timers in deadline order up to and including ``now`` (a fake clock's jump)."""
        out = Outcome()
        while (deadline := self.next_deadline()) is not None and deadline <= now:
            out.extend(self.tick(max(deadline, self._clock)))
        out.extend(self.tick(now))
        return out

    # -- delivery ------------------------------------------------------------------------------

    def _watch(self, machine: AgentMachine) -> None:
        deadline = machine.next_deadline()
        if deadline is not None:
            heapq.heappush(self._timers, (deadline, machine.agent_id))

    def _run(self, now: float, out: Outcome, machine: AgentMachine | None = None) -> Outcome:
        """Deliver effects until nothing is left to route; events accumulate in ``out``."""
        self._clock = max(self._clock, now)
        if machine is not None:
            self._watch(machine)
        pending: deque[Effect] = deque(out.effects)
        out.effects = []
        while True:
            while pending:
                effect = pending.popleft()
                out.effects.append(effect)
                if isinstance(effect, Offer):
                    target = self.agents[effect.agent_id]
                    step = target.offer(now, effect.ticket)
                    self._watch(target)
                elif isinstance(effect, StoreWrapup):
                    self.records.append(effect.record)
                    continue
                else:
                    step = self.router.apply(now, effect)
                out.events.extend(step.events)
                pending.extend(step.effects)
            offers = self.router.dispatch(now)
            if not offers:
                self.router.changed.clear()  # no journal here to take it
                return out
            pending.extend(offers)
