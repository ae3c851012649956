"""Per-queue service figures over a sliding window, computed from the event stream alone."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from acwd.core.events import (
    AcwEnded,
    Event,
    WorkAccepted,
    WorkCancelled,
    WorkEnded,
    WorkOffered,
    WrapupRecorded,
)


@dataclass(slots=True)
class _Window:
    """Samples ``(at, value)`` kept for ``span`` seconds."""

    span: float
    samples: deque[tuple[float, float]] = field(default_factory=deque)

    def add(self, at: float, value: float) -> None:
        self.samples.append((at, value))

    def trim(self, now: float) -> None:
        while self.samples and self.samples[0][0] < now - self.span:
            self.samples.popleft()

    def values(self, now: float) -> list[float]:
        self.trim(now)
        return [v for _, v in self.samples]


@dataclass(slots=True)
class QueueStats:
    """Counts and averages of one queue over its SLA window (``sla_window_s``)."""

    sla_target_s: float
    window_s: float
    offered: _Window = field(init=False)
    waits: _Window = field(init=False)  # accepted: wait from enqueue to accept
    handles: _Window = field(init=False)  # handled: talk (+ ACW when it follows)
    acws: _Window = field(init=False)
    abandoned: _Window = field(init=False)

    def __post_init__(self) -> None:
        for name in ("offered", "waits", "handles", "acws", "abandoned"):
            setattr(self, name, _Window(self.window_s))

    def observe(self, event: Event) -> None:
        if isinstance(event, WorkOffered):
            self.offered.add(event.at, 1.0)
        elif isinstance(event, WorkAccepted):
            self.waits.add(event.at, event.wait_s)
        elif isinstance(event, WorkEnded) and not event.acw:
            self.handles.add(event.at, event.talk_s)
        elif isinstance(event, AcwEnded):
            self.acws.add(event.at, event.acw_seconds)
        elif isinstance(event, WrapupRecorded):
            self.handles.add(event.at, event.record.talk_s + event.record.acw_seconds)
        elif isinstance(event, WorkCancelled):
            self.abandoned.add(event.at, 1.0)

    def view(self, now: float) -> dict[str, float | int | None]:
        waits = self.waits.values(now)
        handles = self.handles.values(now)
        acws = self.acws.values(now)
        within = sum(1 for w in waits if w <= self.sla_target_s)
        return {
            "offered": len(self.offered.values(now)),
            "handled": len(handles),
            "abandoned": len(self.abandoned.values(now)),
            "service_level": within / len(waits) if waits else None,
            "asa_s": sum(waits) / len(waits) if waits else None,
            "aht_s": sum(handles) / len(handles) if handles else None,
            "acw_avg_s": sum(acws) / len(acws) if acws else None,
        }


class CentreStats:
    """QueueStats for every queue, fed one event at a time."""

    def __init__(self) -> None:
        self.queues: dict[str, QueueStats] = {}

    def configure(self, queue: str, sla_target_s: float, window_s: float) -> QueueStats:
        stats = self.queues.get(queue)
        if stats is None or (stats.sla_target_s, stats.window_s) != (sla_target_s, window_s):
            stats = self.queues[queue] = QueueStats(sla_target_s, window_s)
        return stats

    def observe(self, event: Event) -> None:
        queue = getattr(event, "queue", None)
        if queue is None and isinstance(event, WrapupRecorded):
            queue = event.record.queue
        stats = self.queues.get(queue) if isinstance(queue, str) else None
        if stats is not None:
            stats.observe(event)
