"""The agent state machine: presence, offers, legs and their After Conversation Work.

One ``AgentMachine`` per agent. Every public method takes ``now`` and returns an ``Outcome``; an
illegal call raises ``DomainError`` before changing anything. The machine is the authority on its
agent: ``offer`` re-checks routability and refuses what the agent can no longer take.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from acwd.core.acw import Acw, acw_starts, check_disposition, make_record
from acwd.core.config import AcwScope, Settings, WorkSettings
from acwd.core.errors import DomainError, ErrorCode
from acwd.core.events import (
    AcwEnded,
    AcwExtended,
    AcwStarted,
    AgentChanged,
    AgentStateChanged,
    LegChanged,
    OfferTicket,
    Outcome,
    ReturnItem,
    StoreWrapup,
    TransferItem,
    WorkAccepted,
    WorkDeclined,
    WorkEnded,
    WorkOffered,
    WorkOfferExpired,
    WorkRefused,
    WorkTransferred,
    WrapupRecorded,
)
from acwd.core.views import (
    AcwEndReason,
    AgentView,
    LegState,
    LegView,
    RoutingView,
    State,
    Status,
    Wrapup,
    WrapupRecord,
)

NO_ANSWER = "no_answer"
DISCONNECTED = "disconnected"


@dataclass(slots=True)
class Leg:
    """One agent's part of a work item, from offer to the end of its ACW."""

    work_id: str
    agent_id: str
    queue: str
    channel: str
    size: int
    settings: (
        WorkSettings  # resolved when offered: agent/channel > agent > queue > channel > defaults
    )
    state: LegState
    offered_at: float
    offer_expires_at: float | None
    enqueued_at: float = 0.0
    accepted_at: float | None = None
    ended_at: float | None = None
    acw_requested: bool = False
    acw: Acw | None = None

    @property
    def holds_slot(self) -> bool:
        if self.state is LegState.WRAPPING:
            return self.settings.acw_scope is AcwScope.SLOT
        return self.state is not LegState.DONE

    def view(self) -> LegView:
        return LegView(
            work_id=self.work_id,
            agent_id=self.agent_id,
            queue=self.queue,
            channel=self.channel,
            state=self.state.value,
            offered_at=self.offered_at,
            accepted_at=self.accepted_at,
            ended_at=self.ended_at,
            acw=self.acw.view() if self.acw else None,
            wrapup=self.acw.wrapup if self.acw else None,
            offer_expires_at=self.offer_expires_at,
        )


class AgentMachine:
    """Presence and legs of one agent; see SEMANTICS.md for every rule enforced here."""

    def __init__(self, agent_id: str, settings: Settings) -> None:
        self.agent_id = agent_id
        self.settings = settings
        self.status = Status.OFFLINE
        self.reason: str | None = None
        self.pending: tuple[Status, str | None] | None = None
        self.capacity = 1
        self.skills: Mapping[str, int] = MappingProxyType({})
        self.queues: tuple[str, ...] | None = None
        self.legs: dict[str, Leg] = {}
        self.idle_since = 0.0
        self.connected = True
        self.grace_deadline: float | None = None
        self.no_answer_count = 0
        self._last_sent: RoutingView | None = None

    def clone(self) -> AgentMachine:
        """An independent copy, to roll back to if handling a message fails unexpectedly."""
        twin = copy.copy(self)
        twin.legs = {}
        for work_id, leg in self.legs.items():
            twin.legs[work_id] = copy.copy(leg)
            if leg.acw is not None:
                twin.legs[work_id].acw = copy.copy(leg.acw)
        return twin

    # -- derived -------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        if self.status is Status.OFFLINE:
            return State.OFFLINE
        if any(leg.state in (LegState.OFFERED, LegState.ACTIVE) for leg in self.legs.values()):
            return State.BUSY
        if any(leg.state is LegState.WRAPPING for leg in self.legs.values()):
            return State.ACW
        if self.status is Status.AWAY:
            return State.AWAY
        return State.AVAILABLE

    @property
    def used(self) -> int:
        return sum(leg.size for leg in self.legs.values() if leg.holds_slot)

    def _blocker(self) -> str | None:
        """Why no new work may be routed to this agent at all, or None."""
        if self.status is not Status.AVAILABLE:
            return f"status is {self.status.value}"
        if self.pending is not None:
            return f"a change to {self.pending[0].value} is pending"
        if not self.connected:
            return "the agent's connection is gone"
        for leg in self.legs.values():
            if leg.state is LegState.WRAPPING and leg.settings.acw_scope is AcwScope.AGENT:
                return "the agent is in ACW"
        return None

    def refusal(self, ticket: OfferTicket) -> str | None:
        """Why this agent cannot take ``ticket`` now, or None when it can."""
        blocker = self._blocker()
        if blocker:
            return blocker
        if ticket.work_id in self.legs:
            return "still holds a leg of this item"  # e.g. wrapping it up after a transfer
        if self.used + ticket.size > self.capacity:
            return "not enough free capacity"
        if self.queues is not None and ticket.queue not in self.queues:
            return f"not a member of queue {ticket.queue}"
        for skill, level in ticket.skills:
            if self.skills.get(skill, -1) < level:
                return f"lacks skill {skill} at level {level}"
        return None

    def routing_view(self) -> RoutingView:
        free = max(0, self.capacity - self.used)
        return RoutingView(
            agent_id=self.agent_id,
            routable=self._blocker() is None and free > 0,
            free=free,
            used=self.used,
            idle_since=self.idle_since,
            skills=self.skills,
            queues=self.queues,
            state=self.state.value,
        )

    def view(self) -> AgentView:
        routing = self.routing_view()
        return AgentView(
            agent_id=self.agent_id,
            state=self.state.value,
            status=self.status.value,
            reason=self.reason,
            pending_status=self.pending[0].value if self.pending else None,
            capacity=self.capacity,
            used=routing.used,
            skills=self.skills,
            queues=self.queues,
            legs=tuple(leg.view() for leg in self.legs.values()),
            idle_since=self.idle_since if self.status is not Status.OFFLINE else None,
            routable=routing.routable,
            connected=self.connected,
            no_answer_count=self.no_answer_count,
        )

    def next_deadline(self) -> float | None:
        """The earliest clock reading at which ``tick`` has something to do."""
        times = [self.grace_deadline] if self.grace_deadline is not None else []
        for leg in self.legs.values():
            if leg.state is LegState.OFFERED and leg.offer_expires_at is not None:
                times.append(leg.offer_expires_at)
            elif leg.state is LegState.WRAPPING and leg.acw is not None:
                deadline = leg.acw.deadline
                if deadline is not None:
                    times.append(deadline)
        return min(times) if times else None

    # -- presence ------------------------------------------------------------------------------

    def login(
        self,
        now: float,
        status: str = "available",
        reason: str | None = None,
        capacity: int | None = None,
        skills: Mapping[str, int] | None = None,
        queues: tuple[str, ...] | list[str] | None = None,
    ) -> Outcome:
        """Register or update the agent; login parameters beat ``[agents.ID]`` in the config."""
        new_status = self._parse_status(status, allow_offline=False)
        configured = self.settings.agents.get(self.agent_id)
        first = self.status is Status.OFFLINE
        if queues is None and configured is not None:
            queues = configured.queues
        if queues is not None:
            unknown = [q for q in queues if q not in self.settings.queues]
            if unknown:
                raise DomainError(
                    ErrorCode.INVALID_PARAMS,
                    f"queues: unknown queue {unknown[0]!r}.",
                    {"argument": "queues"},
                )
        out, before = Outcome(), self._snapshot()
        if capacity is None:
            capacity = configured.capacity if configured and configured.capacity else None
        if skills is None and configured is not None:
            skills = configured.skills
        self.capacity = capacity or (1 if first else self.capacity)
        if skills is not None or first:
            self.skills = MappingProxyType(dict(skills or {}))
        if queues is not None or first:
            self.queues = tuple(queues) if queues is not None else None
        self.connected = True
        self.grace_deadline = None
        if first:
            self.status, self.reason, self.idle_since = new_status, reason, now
            self.no_answer_count = 0
        else:
            self._set_status(now, new_status, reason)
        out.result = self.view()
        return self._finish(out, now, before)

    def set_status(self, now: float, status: str, reason: str | None = None) -> Outcome:
        """Change presence; during ACW a change to away/offline is held until the ACW ends."""
        new_status = self._parse_status(status, allow_offline=True)
        if self.status is Status.OFFLINE:
            raise DomainError(
                ErrorCode.INVALID_STATE,
                f"Agent {self.agent_id} is not logged in; call agent.login first.",
                {"state": State.OFFLINE.value},
            )
        if new_status is Status.OFFLINE and self.state is not State.ACW:
            return self.logout(now)
        out, before = Outcome(), self._snapshot()
        self._set_status(now, new_status, reason)
        out.result = self.view()
        return self._finish(out, now, before)

    def logout(self, now: float, force: bool = False) -> Outcome:
        """Log out; refused with active work unless forced. ACW in progress ends (reason logout)."""
        active = [leg for leg in self.legs.values() if leg.state is LegState.ACTIVE]
        if active and not force:
            raise DomainError(
                ErrorCode.HAS_ACTIVE_WORK,
                f"Agent {self.agent_id} has {len(active)} active item(s); end them or use force.",
                {"work_ids": [leg.work_id for leg in active]},
            )
        out, before = Outcome(), self._snapshot()
        for leg in list(self.legs.values()):
            if leg.state is LegState.OFFERED:
                self._return_offer(out, now, leg, "logout", backoff=False)
            elif leg.state is LegState.ACTIVE:
                self._end_leg(out, now, leg)
            if leg.state is LegState.WRAPPING:
                self._end_acw(out, now, leg, AcwEndReason.LOGOUT)
        self.status, self.reason, self.pending = Status.OFFLINE, None, None
        self.grace_deadline = None
        out.result = self.view()
        return self._finish(out, now, before)

    def connection_lost(self, now: float) -> Outcome:
        """The connection that logged the agent in closed: offers go back, grace starts."""
        if self.status is Status.OFFLINE:
            return Outcome()
        out, before = Outcome(), self._snapshot()
        self.connected = False
        for leg in list(self.legs.values()):
            if leg.state is LegState.OFFERED:
                self._return_offer(out, now, leg, DISCONNECTED, backoff=False)
        self.grace_deadline = now + self.disconnect_grace()
        return self._finish(out, now, before)

    # -- offers --------------------------------------------------------------------------------

    def offer(self, now: float, ticket: OfferTicket) -> Outcome:
        """Hold an item for this agent, or refuse it (it then goes back keeping its place)."""
        out, before = Outcome(), self._snapshot()
        self._last_sent = None  # the router counted this offer against us: always resend our view
        refusal = self.refusal(ticket)
        if refusal is not None:
            out.events.append(
                WorkRefused(now, ticket.work_id, self.agent_id, ticket.queue, refusal)
            )
            out.effects.append(ReturnItem(ticket.work_id, self.agent_id, "refused", None))
            return self._finish(out, now, before)
        settings = self.settings.resolve(ticket.queue, ticket.channel, self.agent_id)
        timeout = settings.offer_timeout_s
        leg = Leg(
            work_id=ticket.work_id,
            agent_id=self.agent_id,
            queue=ticket.queue,
            channel=ticket.channel,
            size=ticket.size,
            settings=settings,
            state=LegState.OFFERED,
            offered_at=now,
            offer_expires_at=now + timeout if timeout > 0 else None,
            enqueued_at=ticket.enqueued_at,
        )
        self.legs[ticket.work_id] = leg
        out.events.append(
            WorkOffered(now, leg.work_id, self.agent_id, leg.queue, leg.offer_expires_at)
        )
        if timeout <= 0:  # auto-accept
            self._accept(out, now, leg)
        else:
            out.effects.append(LegChanged(leg.view()))
        out.result = leg.view()
        return self._finish(out, now, before)

    def accept(self, now: float, work_id: str) -> Outcome:
        leg = self._leg(work_id, LegState.OFFERED, "accept")
        if leg.offer_expires_at is not None and now >= leg.offer_expires_at:
            raise DomainError(
                ErrorCode.INVALID_STATE,
                f"The offer of {work_id} expired.",
                {"state": "expired"},
            )
        out, before = Outcome(), self._snapshot()
        self._accept(out, now, leg)
        out.result = leg.view()
        return self._finish(out, now, before)

    def decline(self, now: float, work_id: str, reason: str | None = None) -> Outcome:
        leg = self._leg(work_id, LegState.OFFERED, "decline")
        out, before = Outcome(), self._snapshot()
        out.events.append(WorkDeclined(now, work_id, self.agent_id, leg.queue, reason))
        self._return_offer(out, now, leg, "declined", backoff=True)
        self._after_missed_offer(now, leg.settings.on_decline_status, "declined")
        out.result = leg.view()
        return self._finish(out, now, before)

    def withdraw(self, now: float, work_id: str) -> Outcome:
        """Take back an offer (the item was cancelled); refused once the agent has accepted."""
        leg = self._leg(work_id, LegState.OFFERED, "cancel")
        out, before = Outcome(), self._snapshot()
        del self.legs[leg.work_id]
        return self._finish(out, now, before)

    # -- legs and ACW --------------------------------------------------------------------------

    def end(self, now: float, work_id: str) -> Outcome:
        """End an active leg: ACW starts if its mode says so, else the leg is done."""
        leg = self._leg(work_id, LegState.ACTIVE, "end")
        out, before = Outcome(), self._snapshot()
        self._end_leg(out, now, leg)
        out.result = leg.view()
        return self._finish(out, now, before)

    def transfer(self, now: float, work_id: str, queue: str) -> Outcome:
        """Hand an active item to another queue; this agent's ACW uses the leg's own queue."""
        leg = self._leg(work_id, LegState.ACTIVE, "transfer")
        if queue not in self.settings.queues:
            raise DomainError(
                ErrorCode.NOT_FOUND, f"There is no queue {queue!r}.", {"queue": queue}
            )
        out, before = Outcome(), self._snapshot()
        out.events.append(WorkTransferred(now, work_id, self.agent_id, leg.queue, queue))
        self._end_leg(out, now, leg)
        out.result = leg.view()
        self._finish(out, now, before)
        # Last, so the router already has this agent's new view when it queues the item again.
        out.effects.append(TransferItem(work_id, self.agent_id, queue))
        return out

    def acw_request(self, now: float, work_id: str) -> Outcome:
        leg = self._leg(work_id, LegState.ACTIVE, "request ACW for")
        if not acw_starts(leg.settings, requested=True):
            raise DomainError(
                ErrorCode.INVALID_STATE,
                f"ACW is off for queue {leg.queue}.",
                {"mode": leg.settings.acw_mode.value},
            )
        out, before = Outcome(), self._snapshot()
        leg.acw_requested = True
        out.effects.append(LegChanged(leg.view()))
        out.result = leg.view()
        return self._finish(out, now, before)

    def acw_extend(self, now: float, work_id: str) -> Outcome:
        leg = self._leg(work_id, LegState.WRAPPING, "extend ACW of")
        acw = self._acw(leg)
        acw.extend()
        out, before = Outcome(), self._snapshot()
        out.events.append(
            AcwExtended(now, self.agent_id, work_id, leg.queue, acw.deadline, acw.extensions)
        )
        out.effects.append(LegChanged(leg.view()))
        out.result = leg.view()
        return self._finish(out, now, before)

    def acw_complete(self, now: float, work_id: str, wrapup: Wrapup) -> Outcome:
        """Submit the wrap-up; ends ACW except in forced mode, where it is kept until the timer."""
        leg = self._leg(work_id, LegState.WRAPPING, "complete ACW of")
        acw = self._acw(leg)
        check_disposition(leg.settings, wrapup.disposition)
        out, before = Outcome(), self._snapshot()
        if acw.ends_on_complete:
            out.result = self._end_acw(out, now, leg, AcwEndReason.COMPLETED, wrapup)
        else:
            acw.wrapup = wrapup
            out.effects.append(LegChanged(leg.view()))
            out.result = leg.view()
        return self._finish(out, now, before)

    def acw_force_end(self, now: float, work_id: str) -> Outcome:
        leg = self._leg(work_id, LegState.WRAPPING, "force the end of ACW of")
        out, before = Outcome(), self._snapshot()
        out.result = self._end_acw(out, now, leg, AcwEndReason.FORCED)
        return self._finish(out, now, before)

    def resync(self) -> Outcome:
        """Everything the router should know of this agent, sent again (it lost an update)."""
        out = Outcome(effects=[LegChanged(leg.view()) for leg in self.legs.values()])
        self._last_sent = self.routing_view()
        out.effects.append(AgentChanged(self._last_sent))
        return out

    def tick(self, now: float) -> Outcome:
        """Fire every timer due at ``now``: offer timeouts, ACW deadlines, disconnect grace."""
        out, before = Outcome(), self._snapshot()
        for leg in list(self.legs.values()):
            if leg.state is LegState.OFFERED:
                if leg.offer_expires_at is not None and now >= leg.offer_expires_at:
                    self.no_answer_count += 1
                    out.events.append(WorkOfferExpired(now, leg.work_id, self.agent_id, leg.queue))
                    self._return_offer(out, now, leg, "timeout", backoff=True)
                    self._after_missed_offer(now, leg.settings.on_timeout_status, NO_ANSWER)
            elif leg.state is LegState.WRAPPING and self._acw(leg).due(now):
                self._end_acw(out, now, leg, AcwEndReason.TIMEOUT)
        if self.grace_deadline is not None and now >= self.grace_deadline:
            self.grace_deadline = None
            if self.legs:
                self.pending = (Status.OFFLINE, DISCONNECTED)
            else:
                self.status, self.reason, self.pending = Status.OFFLINE, DISCONNECTED, None
        return self._finish(out, now, before)

    # -- internals -----------------------------------------------------------------------------

    def _snapshot(self) -> tuple[State, Status, str | None, tuple[Status, str | None] | None]:
        return (self.state, self.status, self.reason, self.pending)

    def _finish(self, out: Outcome, now: float, before: tuple[Any, ...]) -> Outcome:
        """Emit state and routing changes by comparing with the snapshot taken before the step."""
        after = self._snapshot()
        if after != before:
            out.events.append(
                AgentStateChanged(
                    now,
                    self.agent_id,
                    before[0].value,
                    after[0].value,
                    self.status.value,
                    self.reason,
                    self.pending[0].value if self.pending else None,
                )
            )
        view = self.routing_view()
        if view != self._last_sent:
            self._last_sent = view
            out.effects.append(AgentChanged(view))
        return out

    def _parse_status(self, status: str, allow_offline: bool) -> Status:
        try:
            parsed = Status(status)
        except ValueError:
            parsed = None
        if parsed is None or (parsed is Status.OFFLINE and not allow_offline):
            allowed = "available, away, offline" if allow_offline else "available, away"
            raise DomainError(
                ErrorCode.INVALID_PARAMS,
                f"status: must be one of {allowed}, not {status!r}.",
                {"argument": "status"},
            )
        return parsed

    def _set_status(self, now: float, status: Status, reason: str | None) -> None:
        if status is Status.AVAILABLE:
            if self.status is not Status.AVAILABLE:
                self.idle_since = max(self.idle_since, now)
            self.status, self.reason, self.pending = status, reason, None
        elif self.state is State.ACW or (status is Status.OFFLINE and self.legs):
            # Offline with legs held (on_*_status = "offline" after a missed offer) waits for
            # them, as at the end of disconnect grace: an offline agent never holds work.
            self.pending = (status, reason)
        else:
            self.status, self.reason, self.pending = status, reason, None

    def _after_missed_offer(self, now: float, status: str, reason: str) -> None:
        if status != Status.AVAILABLE.value:
            self._set_status(now, Status(status), reason)

    def disconnect_grace(self) -> float:
        return self._agent_setting("disconnect_grace_s")

    def sent(self, view: RoutingView) -> None:
        """The router was given ``view`` by someone else (recovery): do not send it again."""
        self._last_sent = view

    def _agent_setting(self, name: str) -> float:
        configured = self.settings.agents.get(self.agent_id)
        if configured is not None and name in configured.overrides:
            return float(configured.overrides[name])
        return float(getattr(self.settings.defaults, name))

    def _leg(self, work_id: str, expected: LegState, action: str) -> Leg:
        leg = self.legs.get(work_id)
        if leg is None:
            raise DomainError(
                ErrorCode.NOT_FOUND,
                f"Agent {self.agent_id} has no item {work_id}.",
                {"work_id": work_id},
            )
        if leg.state is not expected:
            raise DomainError(
                ErrorCode.INVALID_STATE,
                f"Cannot {action} {work_id}: its leg is {leg.state.value}, not {expected.value}.",
                {"state": leg.state.value},
            )
        return leg

    @staticmethod
    def _acw(leg: Leg) -> Acw:
        assert leg.acw is not None, "a wrapping leg always has its ACW"
        return leg.acw

    def _accept(self, out: Outcome, now: float, leg: Leg) -> None:
        leg.state, leg.accepted_at, leg.offer_expires_at = LegState.ACTIVE, now, None
        self.no_answer_count = 0
        wait = now - leg.enqueued_at
        out.events.append(WorkAccepted(now, leg.work_id, self.agent_id, leg.queue, wait))
        out.effects.append(LegChanged(leg.view()))

    def _return_offer(self, out: Outcome, now: float, leg: Leg, reason: str, backoff: bool) -> None:
        del self.legs[leg.work_id]
        until = now + leg.settings.reoffer_backoff_s if backoff else None
        out.effects.append(ReturnItem(leg.work_id, self.agent_id, reason, until))

    def _end_leg(self, out: Outcome, now: float, leg: Leg) -> None:
        assert leg.accepted_at is not None
        leg.ended_at = now
        starts = acw_starts(leg.settings, leg.acw_requested)
        talk = now - leg.accepted_at
        out.events.append(WorkEnded(now, leg.work_id, self.agent_id, leg.queue, talk, starts))
        if starts:
            leg.state = LegState.WRAPPING
            leg.acw = Acw.start(leg.settings, now, leg.acw_requested)
            mode = leg.acw.mode.value
            out.events.append(
                AcwStarted(now, self.agent_id, leg.work_id, leg.queue, mode, leg.acw.deadline)
            )
            out.effects.append(LegChanged(leg.view()))
        else:
            self._leg_done(out, now, leg)

    def _end_acw(
        self,
        out: Outcome,
        now: float,
        leg: Leg,
        reason: AcwEndReason,
        wrapup: Wrapup | None = None,
    ) -> WrapupRecord:
        acw = self._acw(leg)
        assert leg.accepted_at is not None and leg.ended_at is not None
        # A timed-out ACW lasted exactly until its deadline, even when the timer fired late (or
        # the daemon was down then); timer lateness is measured and reported separately.
        deadline = acw.deadline
        ended = deadline if reason is AcwEndReason.TIMEOUT and deadline is not None else now
        record = make_record(
            work_id=leg.work_id,
            agent_id=self.agent_id,
            queue=leg.queue,
            channel=leg.channel,
            settings=leg.settings,
            acw=acw,
            wrapup=wrapup or acw.wrapup,
            talk_s=leg.ended_at - leg.accepted_at,
            now=ended,
            reason=reason.value,
        )
        out.events.append(
            AcwEnded(
                now,
                self.agent_id,
                leg.work_id,
                leg.queue,
                reason.value,
                record.acw_seconds,
                acw.deadline,
            )
        )
        out.events.append(WrapupRecorded(now, record))
        out.effects.append(StoreWrapup(record))
        self._leg_done(out, now, leg)
        return record

    def _leg_done(self, out: Outcome, now: float, leg: Leg) -> None:
        leg.state = LegState.DONE
        del self.legs[leg.work_id]
        out.effects.append(LegChanged(leg.view()))
        # Idle time runs from the end of the last leg including its ACW, never from an offer.
        self.idle_since = max(self.idle_since, now)
        if self.pending and not any(lg.state is LegState.WRAPPING for lg in self.legs.values()):
            status, reason = self.pending
            self.pending = None
            if status is Status.OFFLINE and not self.legs:
                self.status, self.reason = Status.OFFLINE, reason
            elif status is Status.OFFLINE:
                self.pending = (status, reason)  # still holds active work: wait for it
            else:
                self.status, self.reason = status, reason
