"""The event bus: delivers each event to the connections that subscribed to it, never waiting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from acwd.core.events import Event

TOPICS = ("agent", "work", "acw", "queue")
# Events that change what is waiting in a queue also go to the "queue" topic.
_QUEUE_EVENTS = frozenset({"work.queued", "work.overflowed", "work.cancelled", "work.offered"})

Sink = Callable[[dict[str, Any]], None]


def topics_of(event: Event) -> tuple[str, ...]:
    family = event.type.split(".", 1)[0]
    topic = "acw" if family == "wrapup" else family
    return (topic, "queue") if event.type in _QUEUE_EVENTS else (topic,)


@dataclass(slots=True)
class Subscription:
    topics: frozenset[str]
    queue: str | None = None
    agent_id: str | None = None

    def matches(self, event: Event, topics: tuple[str, ...]) -> bool:
        if not self.topics.intersection(topics):
            return False
        if self.agent_id is not None and getattr(event, "agent_id", None) != self.agent_id:
            return False
        # The queue filter applies to events that name a queue.
        queue = getattr(event, "queue", None)
        return self.queue is None or queue is None or queue == self.queue


class EventBus:
    """Subscriptions per connection, plus each logged-in agent's own events to its connection."""

    def __init__(self) -> None:
        self._sinks: dict[int, Sink] = {}
        self._subs: dict[int, Subscription] = {}
        self._agent_conn: dict[str, int] = {}

    def attach(self, conn_id: int, sink: Sink) -> None:
        self._sinks[conn_id] = sink

    def detach(self, conn_id: int) -> list[str]:
        """Forget a connection; returns the agents that were bound to it."""
        self._sinks.pop(conn_id, None)
        self._subs.pop(conn_id, None)
        agents = [a for a, c in self._agent_conn.items() if c == conn_id]
        for agent_id in agents:
            del self._agent_conn[agent_id]
        return agents

    def bind_agent(self, agent_id: str, conn_id: int | None) -> None:
        if conn_id is None:
            self._agent_conn.pop(agent_id, None)
        else:
            self._agent_conn[agent_id] = conn_id

    def bound_conn(self, agent_id: str) -> int | None:
        return self._agent_conn.get(agent_id)

    def subscribe(self, conn_id: int, sub: Subscription) -> Subscription:
        old = self._subs.get(conn_id)
        if old is not None and (old.queue, old.agent_id) == (sub.queue, sub.agent_id):
            sub.topics = old.topics | sub.topics
        self._subs[conn_id] = sub
        return sub

    def unsubscribe(self, conn_id: int, topics: frozenset[str]) -> frozenset[str]:
        sub = self._subs.get(conn_id)
        if sub is None:
            return frozenset()
        sub.topics = sub.topics - topics
        if not sub.topics:
            del self._subs[conn_id]
        return sub.topics

    def publish(self, event: Event) -> None:
        if not self._sinks:
            return
        topics = topics_of(event)
        wire: dict[str, Any] | None = None
        sent: set[int] = set()
        for conn_id, sub in self._subs.items():
            if sub.matches(event, topics):
                wire = wire or event.to_wire()
                self._sinks[conn_id](wire)
                sent.add(conn_id)
        agent_id = getattr(event, "agent_id", None) or getattr(
            getattr(event, "record", None), "agent_id", None
        )
        if agent_id is not None and topics[0] in ("work", "acw", "agent"):
            own = self._agent_conn.get(agent_id)
            if own is not None and own not in sent and own in self._sinks:
                self._sinks[own](wire or event.to_wire())
