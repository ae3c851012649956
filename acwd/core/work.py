"""Work items: one customer interaction from submit to completed or cancelled."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from acwd.core.events import OfferTicket
from acwd.core.views import ItemState, LegView, WorkView


def required_skills(skills: Mapping[str, Any] | None) -> tuple[tuple[str, int], ...]:
    """Required skills as a sorted, hashable tuple, as items and offer tickets hold them."""
    return tuple(sorted((str(k), int(v)) for k, v in (skills or {}).items()))


@dataclass(slots=True)
class WorkItem:
    """A work item as the router sees it. Re-queueing keeps ``enqueued_at`` and ``priority``."""

    work_id: str
    queue: str
    channel: str
    priority: int
    size: int
    skills: tuple[tuple[str, int], ...]
    attributes: Mapping[str, Any]
    enqueued_at: float
    seq: int  # submit order: the last tie-break, so equal enqueue times stay first-come
    queue_since: float  # when it entered its current queue (overflow is timed from here)
    state: ItemState = ItemState.QUEUED
    agent_id: str | None = None
    offer_expires_at: float | None = None
    legs: list[LegView] = field(default_factory=list)
    backoff: dict[str, float] = field(default_factory=dict)  # agent_id -> no re-offer before
    token: int = 0  # changes whenever the item is (re)indexed: older index entries are stale
    cancel_reason: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in (ItemState.COMPLETED, ItemState.CANCELLED)

    def clone(self) -> WorkItem:
        """An independent copy (legs and backoff too), to roll back to after a failure."""
        twin = copy.copy(self)
        twin.legs, twin.backoff = list(self.legs), dict(self.backoff)
        return twin

    def ticket(self) -> OfferTicket:
        return OfferTicket(
            work_id=self.work_id,
            queue=self.queue,
            channel=self.channel,
            size=self.size,
            skills=self.skills,
            priority=self.priority,
            enqueued_at=self.enqueued_at,
        )

    def record_leg(self, leg: LegView) -> None:
        """Keep the latest view of each connected leg (offers that never connected are not legs)."""
        if leg.state == "offered":
            return
        for i, known in enumerate(self.legs):
            if known.agent_id == leg.agent_id and known.offered_at == leg.offered_at:
                self.legs[i] = leg
                return
        self.legs.append(leg)

    def view(self) -> WorkView:
        return WorkView(
            work_id=self.work_id,
            queue=self.queue,
            channel=self.channel,
            priority=self.priority,
            size=self.size,
            skills=dict(self.skills),
            attributes=self.attributes,
            state=self.state.value,
            enqueued_at=self.enqueued_at,
            agent_id=self.agent_id,
            offer_expires_at=self.offer_expires_at,
            legs=tuple(self.legs),
            cancel_reason=self.cancel_reason,
        )
