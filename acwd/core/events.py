"""What happened (events, published to subscribers) and what to do next (effects, for the runtime).

Events and effects are frozen, slotted dataclasses, as in h11: a transition returns them and the
caller decides how to deliver them. ``Event.to_wire()`` gives the protocol's event map.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from acwd.core.views import LegView, RoutingView, WrapupRecord


def _wire(value: Any) -> Any:
    to_wire = getattr(value, "to_wire", None)
    return to_wire() if to_wire is not None else value


@dataclass(frozen=True, slots=True)
class Event:
    """Base of all events: ``at`` is the clock reading when it happened."""

    type: ClassVar[str] = "event"
    at: float

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        for f in fields(self):
            out[f.name.removesuffix("_")] = _wire(getattr(self, f.name))
        return out


@dataclass(frozen=True, slots=True)
class AgentStateChanged(Event):
    type: ClassVar[str] = "agent.state_changed"
    agent_id: str
    from_: str
    to: str
    status: str
    reason: str | None
    pending_status: str | None = None


@dataclass(frozen=True, slots=True)
class WorkQueued(Event):
    type: ClassVar[str] = "work.queued"
    work_id: str
    queue: str
    priority: int
    enqueued_at: float


@dataclass(frozen=True, slots=True)
class WorkOffered(Event):
    type: ClassVar[str] = "work.offered"
    work_id: str
    agent_id: str
    queue: str
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class WorkOfferExpired(Event):
    type: ClassVar[str] = "work.offer_expired"
    work_id: str
    agent_id: str
    queue: str


@dataclass(frozen=True, slots=True)
class WorkDeclined(Event):
    type: ClassVar[str] = "work.declined"
    work_id: str
    agent_id: str
    queue: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class WorkRefused(Event):
    type: ClassVar[str] = "work.refused"
    work_id: str
    agent_id: str
    queue: str
    reason: str


@dataclass(frozen=True, slots=True)
class WorkAccepted(Event):
    type: ClassVar[str] = "work.accepted"
    work_id: str
    agent_id: str
    queue: str
    wait_s: float  # from the original enqueue time: what service level and ASA count


@dataclass(frozen=True, slots=True)
class WorkEnded(Event):
    type: ClassVar[str] = "work.ended"
    work_id: str
    agent_id: str
    queue: str
    talk_s: float
    acw: bool  # whether ACW follows (else the handle time is the talk time)


@dataclass(frozen=True, slots=True)
class WorkTransferred(Event):
    type: ClassVar[str] = "work.transferred"
    work_id: str
    agent_id: str
    from_queue: str
    to_queue: str


@dataclass(frozen=True, slots=True)
class WorkCancelled(Event):
    type: ClassVar[str] = "work.cancelled"
    work_id: str
    queue: str
    reason: str


@dataclass(frozen=True, slots=True)
class WorkOverflowed(Event):
    type: ClassVar[str] = "work.overflowed"
    work_id: str
    from_queue: str
    to_queue: str


@dataclass(frozen=True, slots=True)
class WorkCompleted(Event):
    type: ClassVar[str] = "work.completed"
    work_id: str
    agent_id: str
    queue: str


@dataclass(frozen=True, slots=True)
class AcwStarted(Event):
    type: ClassVar[str] = "acw.started"
    agent_id: str
    work_id: str
    queue: str
    mode: str
    deadline: float | None


@dataclass(frozen=True, slots=True)
class AcwExtended(Event):
    type: ClassVar[str] = "acw.extended"
    agent_id: str
    work_id: str
    queue: str
    deadline: float | None
    extensions: int


@dataclass(frozen=True, slots=True)
class AcwEnded(Event):
    type: ClassVar[str] = "acw.ended"
    agent_id: str
    work_id: str
    queue: str
    reason: str
    acw_seconds: float
    deadline: float | None = None


@dataclass(frozen=True, slots=True)
class WrapupRecorded(Event):
    type: ClassVar[str] = "wrapup.recorded"
    record: WrapupRecord


# -- effects: instructions for whoever owns the other side -------------------------------------


@dataclass(frozen=True, slots=True)
class Effect:
    """Base of effects: something the caller must deliver to another component."""


@dataclass(frozen=True, slots=True)
class AgentChanged(Effect):
    """Agent → router: the agent's routing view changed (routability, load, idle-since, profile)."""

    view: RoutingView


@dataclass(frozen=True, slots=True)
class LegChanged(Effect):
    """Agent → router: a connected leg changed state (active, wrapping, done)."""

    leg: LegView


@dataclass(frozen=True, slots=True)
class ReturnItem(Effect):
    """Agent → router: an offer did not become a leg; the item goes back keeping its place."""

    work_id: str
    agent_id: str
    reason: str  # declined | timeout | refused | disconnected | logout
    backoff_until: float | None


@dataclass(frozen=True, slots=True)
class TransferItem(Effect):
    """Agent → router: the agent transferred an active item; queue it in ``queue``."""

    work_id: str
    agent_id: str
    queue: str


@dataclass(frozen=True, slots=True)
class StoreWrapup(Effect):
    """Agent → journal: a wrap-up record to keep durably."""

    record: WrapupRecord


@dataclass(frozen=True, slots=True)
class Offer(Effect):
    """Router → agent: offer this item; the agent may refuse it (then a ReturnItem comes back)."""

    agent_id: str
    ticket: OfferTicket


@dataclass(frozen=True, slots=True)
class OfferTicket:
    """What an agent needs to know to check and hold an offered item."""

    work_id: str
    queue: str
    channel: str
    size: int
    skills: tuple[tuple[str, int], ...]
    priority: int
    enqueued_at: float


@dataclass(slots=True)
class Outcome:
    """What one transition produced: events to publish and effects to deliver, in order."""

    events: list[Event] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)
    result: Any = None  # the view or record the request asked for

    def extend(self, other: Outcome) -> None:
        self.events.extend(other.events)
        self.effects.extend(other.effects)
