"""Read-only snapshots handed across actor boundaries and onto the wire (PROTOCOL.md's views)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """Presence, chosen by the agent or a supervisor."""

    OFFLINE = "offline"
    AVAILABLE = "available"
    AWAY = "away"


class State(StrEnum):
    """What the agent is doing, derived in this order (SEMANTICS.md): what metrics count."""

    OFFLINE = "offline"
    BUSY = "busy"
    ACW = "acw"
    AWAY = "away"
    AVAILABLE = "available"


class LegState(StrEnum):
    OFFERED = "offered"
    ACTIVE = "active"
    WRAPPING = "wrapping"
    DONE = "done"


class ItemState(StrEnum):
    QUEUED = "queued"
    OFFERED = "offered"
    ACTIVE = "active"
    WRAPPING = "wrapping"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class AcwEndReason(StrEnum):
    COMPLETED = "completed"
    TIMEOUT = "timeout"
    FORCED = "forced"
    LOGOUT = "logout"


def to_plain(value: Any) -> Any:
    """Views, tuples and mappings as plain maps and lists, ready for msgpack."""
    if hasattr(value, "to_wire"):
        return value.to_wire()
    if isinstance(value, tuple | list):
        return [to_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    return value


class _Wire:
    """Mixin: a dataclass view becomes a plain map of its fields."""

    __slots__ = ()

    def to_wire(self) -> dict[str, Any]:
        return {f.name: to_plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class FollowUp(_Wire):
    title: str
    due_at: float | None = None
    assignee: str | None = None


@dataclass(frozen=True, slots=True)
class Wrapup(_Wire):
    """What the agent submitted with ``acw.complete``."""

    disposition: str | None = None
    notes: str = ""
    fields: Mapping[str, Any] | None = None
    follow_ups: tuple[FollowUp, ...] = ()


@dataclass(frozen=True, slots=True)
class WrapupRecord(_Wire):
    """The durable record of one leg's After Conversation Work."""

    work_id: str
    agent_id: str
    queue: str
    channel: str
    disposition: str
    notes: str
    fields: Mapping[str, Any]
    follow_ups: tuple[FollowUp, ...]
    talk_s: float
    acw_started_at: float
    acw_ended_at: float
    acw_seconds: float
    extensions: int
    reason: str


@dataclass(frozen=True, slots=True)
class AcwView(_Wire):
    mode: str
    started_at: float | None
    deadline: float | None
    extensions: int
    requested: bool


@dataclass(frozen=True, slots=True)
class LegView(_Wire):
    work_id: str
    agent_id: str
    queue: str
    channel: str
    state: str
    offered_at: float
    accepted_at: float | None
    ended_at: float | None
    acw: AcwView | None
    wrapup: Wrapup | None = None
    offer_expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class AgentView(_Wire):
    agent_id: str
    state: str
    status: str
    reason: str | None
    pending_status: str | None
    capacity: int
    used: int
    skills: Mapping[str, int]
    queues: tuple[str, ...] | None
    legs: tuple[LegView, ...]
    idle_since: float | None
    routable: bool
    connected: bool
    no_answer_count: int


@dataclass(frozen=True, slots=True)
class RoutingView:
    """What the router needs to know of an agent; the agent actor stays the authority."""

    agent_id: str
    routable: bool  # status, pending change, ACW scope and connection allow new work
    free: int  # capacity units not in use
    used: int
    idle_since: float
    skills: Mapping[str, int]
    queues: tuple[str, ...] | None  # None: every queue
    state: str


@dataclass(frozen=True, slots=True)
class WorkView(_Wire):
    work_id: str
    queue: str
    channel: str
    priority: int
    size: int
    skills: Mapping[str, int]
    attributes: Mapping[str, Any]
    state: str
    enqueued_at: float
    agent_id: str | None
    offer_expires_at: float | None
    legs: tuple[LegView, ...]
    cancel_reason: str | None = None
